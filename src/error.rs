//! The command line's errors: what failed, what caused it, what to do about it, and the exit
//! status, in one type, rendered in one place ([`Error::render`]):
//!
//! ```text
//! error: cannot read the inventory ./inventory.yaml
//!   caused by: No such file or directory (os error 2)
//!   nothing was changed on any host
//!   hint: run `ship init` to write one
//! ```
//!
//! A host's failure during a run is not an `Error`: it is part of the run's summary
//! ([`crate::report::Failure`]), and the summary decides the exit status.

use std::fmt;

/// Exit statuses, as the documentation lists them.
pub mod exit {
    /// Every host is on the new release.
    pub const OK: u8 = 0;
    /// The deploy failed and the fleet is as it was (nothing switched, or everything reverted).
    pub const FAILED: u8 = 1;
    /// Bad command line or inventory.
    pub const USAGE: u8 = 2;
    /// Hosts may be on different releases, or a lock may be left: needs an operator.
    pub const ATTENTION: u8 = 3;
    /// Another deploy holds the lock; nothing was changed.
    pub const LOCKED: u8 = 4;
    /// Interrupted (Ctrl-C, SIGTERM); the fleet is as it was.
    pub const INTERRUPTED: u8 = 130;
}

/// Why a command could not do its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What failed, where (file, line, key, host, step): one sentence, maybe followed by
    /// lines that show the place (an inventory line with a caret).
    pub what: String,
    /// What caused it, outermost first.
    pub causes: Vec<String>,
    /// What the operator should know besides (e.g. that nothing was changed).
    pub notes: Vec<String>,
    /// What the operator can do about it.
    pub hint: Option<String>,
    /// The exit status (see [`exit`]).
    pub status: u8,
}

/// The command line's result: an exit status, or an error to render.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(status: u8, what: impl Into<String>) -> Self {
        Error {
            what: what.into(),
            causes: Vec::new(),
            notes: Vec::new(),
            hint: None,
            status,
        }
    }

    /// Bad command line or inventory (exit 2).
    pub fn usage(what: impl Into<String>) -> Self {
        Error::new(exit::USAGE, what)
    }

    /// The command failed (exit 1).
    pub fn failed(what: impl Into<String>) -> Self {
        Error::new(exit::FAILED, what)
    }

    /// What to do about it.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Something the operator should know besides.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// What caused it (called again for a deeper cause).
    pub fn because(mut self, cause: impl fmt::Display) -> Self {
        self.causes.push(cause.to_string());
        self
    }

    /// The whole error as printed on stderr, ending in a newline.
    pub fn render(&self) -> String {
        let mut s = format!("error: {}\n", self.what);
        for c in &self.causes {
            s.push_str(&format!("  caused by: {c}\n"));
        }
        for n in &self.notes {
            s.push_str(&format!("  {n}\n"));
        }
        if let Some(h) = &self.hint {
            s.push_str(&format!("  hint: {h}\n"));
        }
        s
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.render().trim_end())
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_then_each_cause_then_the_hint() {
        let e = Error::failed("cannot read the inventory ./inventory.yaml")
            .because("No such file or directory (os error 2)")
            .hint("run `ship init` to write one");
        assert_eq!(
            e.render(),
            "error: cannot read the inventory ./inventory.yaml\n  caused by: No such file or \
             directory (os error 2)\n  hint: run `ship init` to write one\n"
        );
        assert_eq!(e.status, exit::FAILED);
        assert_eq!(Error::usage("x").render(), "error: x\n");
        let e = Error::failed("a hook failed").note("nothing was changed on any host");
        assert_eq!(
            e.render(),
            "error: a hook failed\n  nothing was changed on any host\n"
        );
    }
}
