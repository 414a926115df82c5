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
    /// Where in a file it is, when it is in one (an inventory error).
    pub at: Option<Box<Location>>,
}

/// A place in a file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    pub file: String,
    pub line: u64,
    pub column: u64,
    /// The dotted key path there, e.g. `stages.production.hosts.web-2.port`.
    pub key: String,
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
            at: None,
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

impl Error {
    /// The error as one JSON object, for `--json` (stdout stays JSON).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "event": "error",
            // The first line: the lines after it show the place (a caret under a line).
            "message": self.what.lines().next().unwrap_or_default(),
            "causes": self.causes,
            "notes": self.notes,
            "hint": self.hint,
            "exit_status": self.status,
            "at": self.at,
        })
    }

    /// The error as a GitHub Actions annotation (`::error file=…,line=…::…`), which puts it on
    /// the line of the file it is about.
    pub fn github_annotation(&self) -> String {
        let esc = |s: &str| {
            s.replace('%', "%25")
                .replace('\r', "%0D")
                .replace('\n', "%0A")
        };
        let prop = |s: &str| esc(s).replace(':', "%3A").replace(',', "%2C");
        let mut props = vec!["title=ship".to_owned()];
        if let Some(at) = &self.at {
            props.push(format!("file={}", prop(&at.file)));
            if at.line > 0 {
                props.push(format!("line={}", at.line));
                props.push(format!("col={}", at.column));
            }
        }
        let mut msg = self.what.lines().next().unwrap_or_default().to_owned();
        if let Some(h) = &self.hint {
            msg.push_str(&format!("\nhint: {h}"));
        }
        format!("::error {}::{}\n", props.join(","), esc(&msg))
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

    #[test]
    fn as_json_and_as_a_github_annotation() {
        let mut e = Error::usage("inventory.yaml:3:5: defaults.port: not a number").hint("1–65535");
        e.at = Some(Box::new(Location {
            file: "deploy/inventory.yaml".into(),
            line: 3,
            column: 5,
            key: "defaults.port".into(),
        }));
        let j = e.to_json();
        assert_eq!(j["event"], "error");
        assert_eq!(j["exit_status"], 2);
        assert_eq!(j["at"]["line"], 3);
        assert_eq!(j["hint"], "1–65535");
        assert_eq!(
            e.github_annotation(),
            "::error title=ship,file=deploy/inventory.yaml,line=3,col=5::inventory.yaml:3:5: \
             defaults.port: not a number%0Ahint: 1–65535\n"
        );
    }
}
