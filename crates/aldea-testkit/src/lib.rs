//! Test support shared by the workspace's tests, examples and benchmarks: the speech fixtures the
//! repository carries or makes (`fixtures/`), WAV files of samples (`wav`), children that are killed however a test ends, and
//! polling instead of sleeping.
//!
//! Invariant: a dev-dependency only (xtask tidy); never reads a path outside the repository except
//! the build cache it generates fixtures into; depends on no aldea crate and no async runtime.

#![forbid(unsafe_code)]

pub mod fixtures;
pub mod noise;
mod process;
pub mod wav;

pub use process::{ChildGuard, Children};

use std::time::{Duration, Instant};

/// Polls `check` every 20 ms until it holds; panics with `what` after `timeout`.
pub fn poll_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what} did not happen within {} s", timeout.as_secs_f64());
        std::thread::sleep(Duration::from_millis(20));
    }
}
