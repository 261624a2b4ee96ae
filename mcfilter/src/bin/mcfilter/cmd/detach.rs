//! `mcfilter detach IFACE | --all [--if-attached]`

use serde::Serialize;

use mcfilter::{
    Error, StateDir,
    filter::{self, HandBack},
    status::NextStatus,
};

use crate::{cli::DetachArgs, output};

/// What one interface runs after its detach.
#[derive(Debug, Serialize)]
struct DetachedIface {
    iface: String,
    /// The program mcfilter ran in front of (`attach --then`), back in mcfilter's place.
    now_runs: Option<NextStatus>,
    /// Another tool had replaced mcfilter's program: the interface was left as it was.
    left_alone: bool,
}

/// `detach --json`: every interface detached (none when there was nothing to do).
#[derive(Debug, Serialize)]
struct Report {
    detached: Vec<DetachedIface>,
    /// The last interface went, and the state dir with it.
    state_removed: bool,
}

pub(super) fn run(state: &StateDir, args: &DetachArgs, json: bool) -> anyhow::Result<()> {
    let names = match &args.iface {
        Some(iface) => vec![iface.clone()],
        None => attached_names(state)?,
    };
    let mut report = Report {
        detached: Vec::new(),
        state_removed: false,
    };
    for name in names {
        let detached = match mcfilter::detach(state, &name) {
            Ok(detached) => detached,
            Err(
                Error::NotAttached { .. }
                | Error::NotAttachedTo { .. }
                | Error::UnknownInterface { .. },
            ) if args.if_attached => continue,
            Err(err) => return Err(err.into()),
        };
        let (now_runs, left_alone) = match detached.hand_back {
            HandBack::Nothing => (None, false),
            HandBack::Next(program_id) => (
                Some(NextStatus {
                    program_id,
                    name: filter::program_name(program_id),
                }),
                false,
            ),
            HandBack::LeftAlone => (None, true),
            HandBack::Dispatcher(program_id) => (
                Some(NextStatus {
                    program_id,
                    name: filter::program_name(program_id),
                }),
                false,
            ),
        };
        report.state_removed = detached.state_removed;
        report.detached.push(DetachedIface {
            iface: detached.iface,
            now_runs,
            left_alone,
        });
    }
    if json {
        output::print_json(&report)?;
        return Ok(());
    }
    let mut lines: Vec<String> = report
        .detached
        .iter()
        .map(|iface| {
            let now = match (&iface.now_runs, iface.left_alone) {
                (Some(next), _) => format!(
                    "; program {}{} runs there again",
                    next.program_id,
                    next.name
                        .as_ref()
                        .map_or_else(String::new, |name| format!(" ({name})"))
                ),
                (None, true) => "; mcfilter's program was no longer there (another tool replaced it), so the interface was left as it is".to_owned(),
                (None, false) => String::new(),
            };
            format!("detached from {}{now}", iface.iface)
        })
        .collect();
    match lines.last_mut() {
        Some(last) if report.state_removed => last.push_str(&format!(
            "; no interface left, removed {}",
            state.path().display()
        )),
        Some(_) => {}
        None => lines.push("nothing to detach: mcfilter is not attached there".to_owned()),
    }
    output::print(
        &lines
            .iter()
            .map(|line| format!("{line}\n"))
            .collect::<String>(),
    )?;
    Ok(())
}

/// The interfaces the filter is attached to, by the names `detach` takes (none without state).
fn attached_names(state: &StateDir) -> anyhow::Result<Vec<String>> {
    match mcfilter::status(state) {
        Ok(status) => Ok(status.interfaces.into_iter().map(|i| i.name).collect()),
        Err(Error::NotAttached { .. }) => Ok(Vec::new()),
        Err(err) => Err(err.into()),
    }
}
