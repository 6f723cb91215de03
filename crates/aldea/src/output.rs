//! The one place that writes results to stdout; diagnostics go to stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;

/// One line of results on stdout.
pub(crate) fn result_line(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// A message for the person at the terminal, on stderr.
pub(crate) fn info(line: &str) {
    eprintln!("{line}");
}

pub(crate) fn error(line: &str) {
    eprintln!("{line}");
}
