//! Output: aligned tables for people, one JSON document with stable snake_case keys and integer
//! counters for scripts. Data goes to stdout; diagnostics go to stderr (see main.rs).

use std::io::{self, Write as _};

/// Column alignment.
#[derive(Clone, Copy)]
pub(crate) enum Align {
    Left,
    Right,
}

/// A table, with a header row or without, padded to the widest cell of each column.
pub(crate) struct Table {
    columns: Vec<(String, Align)>,
    header: bool,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(columns: &[(&str, Align)]) -> Self {
        Table {
            columns: columns.iter().map(|(h, a)| (h.to_string(), *a)).collect(),
            header: true,
            rows: Vec::new(),
        }
    }

    /// A table of rows only (key-value summaries), its columns aligned as `aligns`.
    pub(crate) fn without_header(aligns: &[Align]) -> Self {
        Table {
            columns: aligns.iter().map(|a| (String::new(), *a)).collect(),
            header: false,
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn render(&self) -> String {
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (header, _))| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(i))
                    .map(|cell| cell.chars().count())
                    .chain([header.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let header: Vec<String> = self.columns.iter().map(|(h, _)| h.clone()).collect();
        let mut out = String::new();
        let header = self.header.then_some(&header);
        for row in header.into_iter().chain(&self.rows) {
            let cells: Vec<String> = row
                .iter()
                .zip(&self.columns)
                .zip(&widths)
                .map(|((cell, (_, align)), &width)| match align {
                    Align::Left => format!("{cell:<width$}"),
                    Align::Right => format!("{cell:>width$}"),
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

/// Writes `text` to stdout (a closed pipe surfaces as an io error main.rs treats as success).
pub(crate) fn print(text: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// Writes `value` as one line of JSON.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> io::Result<()> {
    let mut text = serde_json::to_string(value).map_err(io::Error::other)?;
    text.push('\n');
    print(&text)
}

/// `1234567` as `1.2M`-style short form for human tables.
pub(crate) fn human_count(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")];
    for (scale, unit) in UNITS {
        if n >= scale {
            return format!("{:.1}{unit}", n as f64 / scale as f64);
        }
    }
    n.to_string()
}

/// A duration in milliseconds as `3s ago`-style text.
pub(crate) fn ago(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms ago"),
        1_000..60_000 => format!("{}s ago", ms / 1_000),
        60_000..3_600_000 => format!("{}m ago", ms / 60_000),
        _ => format!("{}h ago", ms / 3_600_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&[("reason", Align::Left), ("packets", Align::Right)]);
        t.row(vec!["udp_port".into(), "12".into()]);
        t.row(vec!["tcp_not_allowed".into(), "1234567".into()]);
        assert_eq!(
            t.render(),
            "reason           packets\nudp_port              12\ntcp_not_allowed  1234567\n"
        );
    }

    #[test]
    fn a_table_without_header_has_only_its_rows() {
        let mut t = Table::without_header(&[Align::Left, Align::Left]);
        t.row(vec!["ports".into(), "11211".into()]);
        t.row(vec!["dry-run".into(), "off".into()]);
        assert_eq!(t.render(), "ports    11211\ndry-run  off\n");
    }

    #[test]
    fn short_forms() {
        assert_eq!(human_count(999), "999");
        assert_eq!(human_count(1_500), "1.5k");
        assert_eq!(human_count(2_000_000), "2.0M");
        assert_eq!(ago(12), "12ms ago");
        assert_eq!(ago(3_500), "3s ago");
        assert_eq!(ago(7_200_000), "2h ago");
    }
}
