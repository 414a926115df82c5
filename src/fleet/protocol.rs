//! The deploy protocol as a pure state machine: results in, next action out, no I/O.
//!
//! connect (+ preflight) → lock → prepare → **barrier** → switch → [revert] → cleanup/discard →
//! unlock. The barrier is a write-once gate: the first failure or an interruption before the
//! switch closes it, and then no host switches. Once the switch has begun, an interruption no
//! longer stops it: the fleet ends all-new, or all-old by compensation, never mixed unless a host
//! cannot be reached (and then the outcome says so).

/// What the runner must do next, on which hosts (indices into the stage's host list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Connect(Vec<usize>),
    Lock(Vec<usize>),
    Prepare(Vec<usize>),
    /// Arm the switch on every host, then fire it on all of them at once.
    Switch(Vec<usize>),
    /// Switch these hosts back to their previous release.
    Revert(Vec<usize>),
    /// Remove the staged release on these hosts.
    Discard(Vec<usize>),
    /// Remove old releases on these hosts.
    Cleanup(Vec<usize>),
    /// Record the outcome in the journal and release our lock on these hosts.
    Unlock(Vec<usize>),
    Finish(Outcome),
}

/// How a deploy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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
}

/// Where a host's `current` stands after the switch phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SwitchState {
    /// The switch was not attempted, or is known not to have happened.
    #[default]
    NotSwitched,
    Switched,
    /// The host did not answer: it may or may not have switched.
    Unknown,
    /// It switched and was switched back.
    Reverted,
}

/// Everything the protocol knows about one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostState {
    pub connected: bool,
    pub locked: bool,
    /// A release directory may exist on the host (prepare began).
    pub staged: bool,
    pub prepared: bool,
    pub switch: SwitchState,
    pub failed: bool,
}

/// A result reported by the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Connected(usize),
    ConnectFailed(usize),
    Locked(usize),
    LockFailed(usize),
    /// Prepare began on the host (a release directory may now exist).
    Staging(usize),
    Prepared(usize),
    PrepareFailed(usize),
    Switched(usize),
    /// The switch definitely did not happen on this host.
    SwitchRefused(usize),
    /// The host did not confirm; it may have switched.
    SwitchUnknown(usize),
    Reverted(usize),
    RevertFailed(usize),
    /// Operator interruption (Ctrl-C, SIGTERM, SIGHUP).
    Interrupted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Start,
    Connecting,
    Locking,
    Preparing,
    Switching,
    Reverting,
    Discarding,
    CleaningUp,
    Unlocking,
    Done,
}

/// The protocol for one deploy over `n` hosts.
#[derive(Debug, Clone)]
pub struct Protocol {
    pub hosts: Vec<HostState>,
    stage: Stage,
    interrupted: bool,
    outcome: Option<Outcome>,
}

impl Protocol {
    pub fn new(n: usize) -> Self {
        Protocol {
            hosts: vec![HostState::default(); n],
            stage: Stage::Start,
            interrupted: false,
            outcome: None,
        }
    }

    /// How the deploy ends, once that is decided (before cleanup and unlock run).
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    pub fn interrupted(&self) -> bool {
        self.interrupted
    }

    /// True once the fleet may have started switching: from here on, interruptions wait.
    pub fn past_barrier(&self) -> bool {
        matches!(
            self.stage,
            Stage::Switching
                | Stage::Reverting
                | Stage::CleaningUp
                | Stage::Unlocking
                | Stage::Done
        )
    }

    pub fn on(&mut self, event: Event) {
        let (i, apply): (usize, fn(&mut HostState)) = match event {
            Event::Interrupted => {
                self.interrupted = true;
                return;
            }
            Event::Connected(i) => (i, |h| h.connected = true),
            Event::Locked(i) => (i, |h| h.locked = true),
            Event::Staging(i) => (i, |h| h.staged = true),
            Event::Prepared(i) => (i, |h| h.prepared = true),
            Event::Switched(i) => (i, |h| h.switch = SwitchState::Switched),
            Event::SwitchUnknown(i) => (i, |h| {
                h.switch = SwitchState::Unknown;
                h.failed = true;
            }),
            Event::Reverted(i) => (i, |h| h.switch = SwitchState::Reverted),
            Event::ConnectFailed(i)
            | Event::LockFailed(i)
            | Event::PrepareFailed(i)
            | Event::SwitchRefused(i)
            | Event::RevertFailed(i) => (i, |h| h.failed = true),
        };
        if let Some(h) = self.hosts.get_mut(i) {
            apply(h);
        }
    }

    fn all(&self) -> Vec<usize> {
        (0..self.hosts.len()).collect()
    }

    fn which(&self, f: impl Fn(&HostState) -> bool) -> Vec<usize> {
        self.hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| f(h))
            .map(|(i, _)| i)
            .collect()
    }

    /// The barrier is open only if every host is ready for this stage and nobody interrupted.
    fn gate(&self, ready: impl Fn(&HostState) -> bool) -> bool {
        !self.interrupted && self.hosts.iter().all(|h| ready(h) && !h.failed)
    }

    /// After the previous action's results are in: what to do next.
    pub fn next_action(&mut self) -> Action {
        loop {
            let (stage, action) = match self.stage {
                Stage::Start => (Stage::Connecting, Action::Connect(self.all())),
                Stage::Connecting if self.gate(|h| h.connected) => {
                    (Stage::Locking, Action::Lock(self.all()))
                }
                Stage::Connecting => {
                    self.outcome = Some(Outcome::Aborted);
                    (Stage::Done, Action::Finish(Outcome::Aborted))
                }
                Stage::Locking if self.gate(|h| h.locked) => {
                    (Stage::Preparing, Action::Prepare(self.all()))
                }
                // The barrier: every host prepared, nothing failed, nobody interrupted.
                Stage::Preparing if self.gate(|h| h.prepared) => {
                    (Stage::Switching, Action::Switch(self.all()))
                }
                Stage::Locking | Stage::Preparing => {
                    self.outcome = Some(Outcome::Aborted);
                    (Stage::Discarding, Action::Discard(self.which(|h| h.staged)))
                }
                Stage::Switching => {
                    if self.hosts.iter().all(|h| h.switch == SwitchState::Switched) {
                        self.outcome = Some(Outcome::Deployed);
                        (Stage::CleaningUp, Action::Cleanup(self.all()))
                    } else {
                        let back = self.which(|h| {
                            matches!(h.switch, SwitchState::Switched | SwitchState::Unknown)
                        });
                        if back.is_empty() {
                            self.outcome = Some(Outcome::Aborted);
                            (Stage::Discarding, Action::Discard(self.which(|h| h.staged)))
                        } else {
                            (Stage::Reverting, Action::Revert(back))
                        }
                    }
                }
                Stage::Reverting => {
                    let stuck = self
                        .hosts
                        .iter()
                        .any(|h| matches!(h.switch, SwitchState::Switched | SwitchState::Unknown));
                    let outcome = if stuck {
                        Outcome::Mixed
                    } else {
                        Outcome::RolledBack
                    };
                    self.outcome = Some(outcome);
                    // Discard only where `current` is surely not the new release.
                    let discard = self.which(|h| {
                        h.staged
                            && matches!(h.switch, SwitchState::NotSwitched | SwitchState::Reverted)
                    });
                    (Stage::Discarding, Action::Discard(discard))
                }
                Stage::Discarding | Stage::CleaningUp => {
                    (Stage::Unlocking, Action::Unlock(self.which(|h| h.locked)))
                }
                Stage::Unlocking | Stage::Done => {
                    let outcome = self.outcome.unwrap_or(Outcome::Aborted);
                    (Stage::Done, Action::Finish(outcome))
                }
            };
            self.stage = stage;
            // Skip actions with nothing to do, so the runner only sees real work.
            match &action {
                Action::Discard(v) | Action::Unlock(v) | Action::Revert(v) if v.is_empty() => {
                    continue;
                }
                _ => return action,
            }
        }
    }
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
