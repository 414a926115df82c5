//! Remote commands as data.
//!
//! Every command ship runs on a host is rendered here, by pure functions from typed inputs, so
//! the exact shell text is reviewable and unit-tested without SSH, and `--dry-run` can print the
//! same commands a real run sends. Values are quoted in one place ([`quote`]). Paths inside
//! `deploy_to` are relative to it (every script starts with `cd`), and every link ship makes is
//! relative, so a deploy directory can be inspected or moved without dangling links.

mod check;
mod cleanup;
mod git;
mod health;
mod lock;
mod preflight;
mod quote;
mod release;
mod script;
mod switch;

pub use check::*;
pub use cleanup::*;
pub use git::*;
pub use health::*;
pub use lock::*;
pub use preflight::*;
pub use quote::quote;
pub use release::*;
pub use script::{
    READ_SCRIPT, SCRIPT_CUT, channel_command, on_stdin, session_command, session_driver, supervised,
};
pub use switch::*;

use crate::inventory::{EnvVar, HealthCheck, Probe, StepSpec, Writable, WritableMode};

/// A step of the prepare phase: a name for progress and errors, and the script to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub script: String,
    /// The step reads the release payload on stdin.
    pub takes_payload: bool,
    /// The step talks to the git server: with `forward_agent`, it gets the controller's agent.
    pub reaches_git: bool,
    /// One of ship's own short steps (a few `mkdir`/`ln`): it runs as it is, not supervised as a
    /// stoppable build step is, and an interruption waits the milliseconds it takes.
    pub quick: bool,
    /// At most this many hosts run this step at once (`parallel:`); the others wait their turn.
    pub parallel: Option<usize>,
}

fn cd(deploy_to: &str) -> String {
    format!("cd {}", quote(deploy_to))
}

fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(p, _)| p)
}

#[cfg(test)]
mod tests;
