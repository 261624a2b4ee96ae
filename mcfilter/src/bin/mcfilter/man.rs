//! The manual pages, generated from the command-line model so they cannot drift from it:
//! mcfilter(1), one page per subcommand (mcfilter-attach(1), mcfilter-allow-add(1), ...), each
//! with its exit status, and mcfilter.toml(5), the annotated example config.

use std::{fs, io, path::Path};

use clap::CommandFactory as _;

use crate::cli::Cli;

/// The example config, every key documented in its comments.
const EXAMPLE_CONFIG: &str = include_str!("../../../../packaging/mcfilter.toml");

/// mcfilter(1) alone, as `mcfilter man` prints it.
pub(crate) fn main_page() -> io::Result<Vec<u8>> {
    let mut command = Cli::command();
    command.build();
    page(command)
}

/// Every page, by file name (`mcfilter.1`, `mcfilter-attach.1`, ..., `mcfilter.toml.5`).
pub(crate) fn pages() -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    let mut pages = Vec::new();
    collect(&command, &mut pages)?;
    pages.push(("mcfilter.toml.5".to_owned(), config_page().into_bytes()));
    Ok(pages)
}

/// Writes every page into `dir` (made if missing); the files written.
pub(crate) fn write_pages(dir: &Path) -> io::Result<Vec<String>> {
    fs::create_dir_all(dir)?;
    let mut names = Vec::new();
    for (name, text) in pages()? {
        fs::write(dir.join(&name), text)?;
        names.push(name);
    }
    Ok(names)
}

fn collect(command: &clap::Command, pages: &mut Vec<(String, Vec<u8>)>) -> io::Result<()> {
    let man = clap_mangen::Man::new(command.clone());
    pages.push((man.get_filename(), page(command.clone())?));
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        collect(sub, pages)?;
    }
    Ok(())
}

/// One command's page: clap_mangen's sections, then EXIT STATUS and SEE ALSO.
fn page(command: clap::Command) -> io::Result<Vec<u8>> {
    let name = command
        .get_display_name()
        .unwrap_or_else(|| command.get_name())
        .to_owned();
    let mut out = Vec::new();
    clap_mangen::Man::new(command).render(&mut out)?;
    let audit = name == "mcfilter-audit";
    out.extend_from_slice(exit_status(audit).as_bytes());
    let see_also = if name == "mcfilter" {
        "mcfilter.toml(5), bpftool(8), ip(8)".to_owned()
    } else {
        "mcfilter(1), mcfilter.toml(5)".to_owned()
    };
    out.extend_from_slice(format!(".SH \"SEE ALSO\"\n{see_also}\n").as_bytes());
    Ok(out)
}

fn exit_status(audit: bool) -> String {
    let mut text = String::from(
        ".SH \"EXIT STATUS\"\n.TP\n0\nSuccess (also when standard output is a closed pipe).\n\
         .TP\n1\nThe command failed: one line on standard error says why and how to fix it \
         (with \\fB\\-\\-json\\fR, also {\"error\": ...} on standard output); the state is as \
         it was.\n.TP\n2\nA usage error: the command line did not parse.\n",
    );
    if audit {
        text.push_str(
            ".TP\n3\nThe audit found warnings.\n.TP\n4\nThe audit found a high finding.\n",
        );
    }
    text
}

/// mcfilter.toml(5): what the service reads, and the annotated example as the key reference.
fn config_page() -> String {
    let example: String = EXAMPLE_CONFIG
        .lines()
        .map(|line| {
            // Roff: backslashes are escapes, and a leading dot or quote a request.
            let line = line.replace('\\', "\\e");
            if line.starts_with('.') || line.starts_with('\'') {
                format!("\\&{line}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    format!(
        ".TH mcfilter.toml 5 \"\" \"mcfilter {version}\"\n\
         .SH NAME\nmcfilter.toml \\- the configuration of the mcfilter service\n\
         .SH SYNOPSIS\n/etc/mcfilter/mcfilter.toml\n\
         .SH DESCRIPTION\n\\fBmcfilter run\\fR reads this TOML file at start, on SIGHUP and \
         whenever it or one of its allow files changes. Unknown keys are errors that name the \
         key; a file that does not validate is refused whole and the running policy stays. \
         \\fBmcfilter run \\-\\-check \\-\\-config\\fR \\fIPATH\\fR checks a file without \
         touching any state.\n.PP\nEvery key, with its default, in the shipped example:\n\
         .PP\n.nf\n{example}.fi\n\
         .SH FILES\n.TP\n/etc/mcfilter/mcfilter.toml\nThe default path.\n\
         .SH \"SEE ALSO\"\nmcfilter(1), mcfilter\\-run(1)\n",
        version = env!("CARGO_PKG_VERSION"),
    )
}
