//! The closing line of `cargo xtask test`: libtest's summaries added up.

/// Sums libtest's `test result: ok. N passed; M failed; ...` lines.
#[derive(Default)]
pub(crate) struct Tally {
    pub passed: u64,
    pub failed: u64,
}

impl Tally {
    pub(crate) fn read(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            match (label, count.parse::<u64>()) {
                ("passed", Ok(n)) => self.passed += n,
                ("failed", Ok(n)) => self.failed += n,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn tally_sums_libtest_summaries() {
        let mut tally = Tally::default();
        tally.read("test result: ok. 14 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s");
        tally
            .read("test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out");
        tally.read("running 5 tests");
        assert_eq!((tally.passed, tally.failed), (17, 1));
    }
}
