//! What a deploy tells the outside world. The library never prints: it sends [`Event`]s to a
//! [`Reporter`], and the CLI decides how to show them (live rows, plain lines, JSON).

use serde::Serialize;

/// How a deploy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every host switched to the new release.
    Deployed,
    /// No host switched; the fleet is as it was.
    Aborted,
    /// Some hosts switched, the switch failed elsewhere, and every switched host was reverted:
    /// the fleet is as it was.
    RolledBack,
    /// Some host may be on the new release while others are not (a host could not be reached to
    /// be reverted). Needs an operator.
    Mixed,
    /// Every host already was where the run would have put it (a rollback to the release that
    /// is current everywhere): nothing was locked or changed.
    NothingToDo,
}

/// The phases a host goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Connect,
    Lock,
    Prepare,
    RunOnce,
    Switch,
    Verify,
    Observe,
    Revert,
    Discard,
    Cleanup,
    Unlock,
}

impl Phase {
    /// Its name as shown to the operator.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Lock => "lock",
            Phase::Prepare => "prepare",
            Phase::RunOnce => "run once",
            Phase::Switch => "switch",
            Phase::Verify => "verify",
            Phase::Observe => "observe",
            Phase::Revert => "revert",
            Phase::Discard => "discard",
            Phase::Cleanup => "cleanup",
            Phase::Unlock => "unlock",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a host failed: where, what, and the end of what it printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub phase: Phase,
    /// The step that failed, for prepare (`upload`, `build: composer install`…).
    pub step: Option<String>,
    pub exit_status: Option<u32>,
    pub message: String,
    /// Last lines of the step's output (secrets masked).
    pub output_tail: Vec<String>,
}

/// Where a host ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostResult {
    /// `current` is the new release.
    Switched,
    /// `current` was switched and then switched back.
    Reverted,
    /// `current` was never changed.
    #[default]
    Unchanged,
    /// The host did not confirm; `current` may be either release.
    Unknown,
}

/// One host's line in the summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostSummary {
    pub host: String,
    pub result: HostResult,
    /// The release `current` points to after the deploy, when known.
    pub current: Option<String>,
    pub prepare_ms: Option<u64>,
    /// The host's clock right after its rename, in Unix nanoseconds.
    pub switched_at_unix_ns: Option<u128>,
    /// The host's clock minus the controller's, in µs, as measured before the switch (hosts
    /// with perl and Time::HiRes).
    pub clock_offset_us: Option<i64>,
    /// The most that offset can be wrong by (half the round trip it was measured with), µs.
    pub clock_error_us: Option<i64>,
    pub failure: Option<Failure>,
    /// A command an operator should run on this host to finish what ship could not.
    pub remedy: Option<String>,
    /// The host still holds this deploy's lock (and maybe its staged release): it could not be
    /// reached to remove them. `ship lock release` does, once it is back.
    pub lock_left: bool,
    /// Another run holds this host's lock: the deploy stopped there (exit 4).
    pub locked_by_other: bool,
    /// Its steps were stopped by ship (another host failed first, or the operator interrupted):
    /// not a failure of this host.
    pub cancelled: bool,
    /// It could not be reached at connect and was left out of the run (within
    /// `max_unreachable`): it is on its old release; the next deploy brings it along.
    pub left_out: bool,
    /// It built this release completely before another host's build failed, and keeps it,
    /// prepared: a deploy of the same build reuses it here.
    pub kept_prepared: bool,
    /// It took up the release a failed deploy of the same build had left prepared, and built
    /// nothing.
    pub reused: bool,
    /// Failures that did not change the outcome (after-switch steps or the health check with
    /// `on_failure: warn`).
    pub warnings: Vec<Failure>,
}

impl HostSummary {
    /// When this host switched, on the controller's clock (its own stamp corrected by its
    /// measured clock offset; as is when no offset was measured), in Unix nanoseconds.
    pub fn switched_at_controller_ns(&self) -> Option<i128> {
        let own = self.switched_at_unix_ns? as i128;
        Some(own - self.clock_offset_us.map_or(0, |us| i128::from(us) * 1000))
    }
}

/// One switch wave.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WaveSummary {
    pub hosts: Vec<String>,
    /// Spread of this wave's switch instants on the controller's clock, in milliseconds.
    pub flip_skew_ms: Option<f64>,
}

/// Time spent in one phase across the fleet.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseTiming {
    pub phase: Phase,
    pub ms: u64,
}

/// The result of a deploy.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `deploy` or `rollback`.
    pub kind: String,
    /// A rollback to a release newer than every host's: a move forward, nothing marked bad.
    pub forward: bool,
    pub stage: String,
    pub release: String,
    pub revision: String,
    pub outcome: Outcome,
    pub hosts: Vec<HostSummary>,
    /// Spread between the first and the last host's switch, in milliseconds: how long the
    /// fleet served two versions. Each host's instant is taken on its own clock and put on the
    /// controller's with the offset measured before the switch (hosts without one: as is).
    pub flip_skew_ms: Option<f64>,
    /// The largest error bound of those offsets, in milliseconds.
    pub clock_error_ms: Option<f64>,
    /// The hosts that switched first (`--canary`, or the first of several waves).
    pub canary: Vec<String>,
    /// The waves the fleet switched in, in order (one: the whole fleet at once), each with its
    /// own flip skew.
    pub waves: Vec<WaveSummary>,
    /// Hosts of the stage left out by `--hosts` / `--roles`: not contacted, untouched.
    pub untouched: Vec<String>,
    pub phases: Vec<PhaseTiming>,
    pub elapsed_ms: u64,
}

/// Something that happened during a deploy.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Started {
        /// `deploy` or `rollback`.
        kind: String,
        stage: String,
        release: String,
        revision: String,
        hosts: Vec<String>,
    },
    Phase {
        host: String,
        phase: Phase,
    },
    StepStarted {
        host: String,
        step: String,
    },
    StepFinished {
        host: String,
        step: String,
        ok: bool,
        /// Stopped by ship, not failed: another host failed first, or the operator interrupted.
        cancelled: bool,
        elapsed_ms: u64,
    },
    /// Every prepare step of this host succeeded: it is ready to switch.
    Prepared {
        host: String,
        elapsed_ms: u64,
    },
    /// A line a host's command printed.
    #[serde(rename = "output")]
    Line {
        host: String,
        stream: &'static str,
        line: String,
    },
    HostFailed {
        host: String,
        failure: Failure,
    },
    Switched {
        host: String,
        at_unix_ns: Option<u128>,
    },
    /// Ship is waiting for something outside its control (a lock held by another run).
    Waiting {
        host: String,
        message: String,
    },
    /// A failure that does not change the outcome (`on_failure: warn`).
    HostWarning {
        host: String,
        failure: Failure,
    },
    /// The canary switched and passed what was checked; the rest of the fleet waits this long.
    Observing {
        hosts: Vec<String>,
        for_ms: u64,
        /// What the canary passed: `health check`, `N after-switch step(s)`; empty when nothing
        /// is configured to check it.
        checked: Vec<String>,
        /// Which wave this is (from 1), of how many.
        wave: usize,
        waves: usize,
    },
    /// An interruption was received; what ship does about it.
    Interrupted {
        message: String,
    },
    Finished {
        summary: Summary,
    },
}

/// Receives events. Called from many tasks at once, so implementations synchronise internally.
pub trait Reporter: Send + Sync {
    fn report(&self, event: &Event);
}

/// A reporter that keeps every event (for tests and for callers that render at the end).
#[derive(Default)]
pub struct Recorder(pub std::sync::Mutex<Vec<Event>>);

impl Reporter for Recorder {
    fn report(&self, event: &Event) {
        if let Ok(mut v) = self.0.lock() {
            v.push(event.clone());
        }
    }
}
