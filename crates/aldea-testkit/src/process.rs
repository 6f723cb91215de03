//! Child processes that die with the test that started them: a test that panics (an assertion,
//! a timeout) must not leave servers running for the next test or the next run.

use std::ops::{Deref, DerefMut};
use std::process::Child;

/// One child, killed and reaped when dropped unless it has already exited.
#[derive(Debug)]
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard(Some(child))
    }

    /// The child, no longer guarded (for a test that waits for its own exit).
    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("a guarded child")
    }
}

impl Deref for ChildGuard {
    type Target = Child;

    fn deref(&self) -> &Child {
        self.0.as_ref().expect("a guarded child")
    }
}

impl DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("a guarded child")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl From<Child> for ChildGuard {
    fn from(child: Child) -> ChildGuard {
        ChildGuard::new(child)
    }
}

/// Several children, each killed when the set is dropped.
#[derive(Debug, Default)]
pub struct Children(pub Vec<ChildGuard>);

impl Children {
    pub fn push(&mut self, child: impl Into<ChildGuard>) {
        self.0.push(child.into());
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn a_dropped_guard_kills_its_child() {
        let child = Command::new("sleep").arg("600").spawn().unwrap();
        let pid = child.id();
        drop(ChildGuard::new(child));
        // Reaped by the guard: no such process any more (kill -0 fails).
        let alive = Command::new("kill").args(["-0", &pid.to_string()]).status().unwrap().success();
        assert!(!alive, "the child {pid} outlived its guard");
    }

    #[test]
    fn a_guard_dropped_while_panicking_kills_its_child() {
        let child = Command::new("sleep").arg("600").spawn().unwrap();
        let pid = child.id();
        let result = std::panic::catch_unwind(move || {
            let _guard = ChildGuard::new(child);
            panic!("a failing test");
        });
        assert!(result.is_err());
        let alive = Command::new("kill").args(["-0", &pid.to_string()]).status().unwrap().success();
        assert!(!alive, "the child {pid} outlived the panicking test");
    }
}
