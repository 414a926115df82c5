//! The deploy protocol as a pure state machine: results in, next action out, no I/O.
//!
//! connect (+ preflight) → lock → prepare → **barrier** → [run once] → switch (the canary first,
//! verified and observed, then the rest) → [verify] → [revert] → cleanup/discard → unlock.
//! The barrier is a write-once gate: the first failure or an interruption before the switch
//! closes it, and then no host switches. Once the switch has begun, an interruption no
//! longer stops it: the fleet ends all-new, or all-old by compensation, never mixed unless a host
//! cannot be reached (and then the outcome says so).

pub use crate::report::Outcome;

/// What the runner must do next, on which hosts (indices into the stage's host list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Connect(Vec<usize>),
    Lock(Vec<usize>),
    Prepare(Vec<usize>),
    /// Run the run-once steps (migrations) on this one host, before any host switches.
    RunOnce(usize),
    /// Arm the switch on every host, then fire it on all of them at once.
    Switch(Vec<usize>),
    /// Run the after-switch steps and the health check on these (switched) hosts.
    Verify(Vec<usize>),
    /// Hold with the canary switched, watching for an interruption, before the rest switch.
    Observe(usize),
    /// Mark the release bad on these hosts: it went live everywhere and was rolled back, so it
    /// is kept for inspection rather than removed.
    MarkBad(Vec<usize>),
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
    /// Not part of this run: it could not be reached at connect, within the budget for that
    /// (`max_unreachable`). Nothing is done on it.
    pub left_out: bool,
}

/// What the runner learned and tells the protocol: a host's result, or the operator's interruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
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
    RanOnce,
    RunOnceFailed,
    Verified(usize),
    /// After-switch steps or the health check failed on this host.
    VerifyFailed(usize),
    /// The observation time is over (or was cut short by an interruption).
    Observed,
    /// Operator interruption (Ctrl-C, SIGTERM, SIGHUP).
    Interrupted,
    /// Every host already is where the run would put it: there is nothing to do.
    NothingToDo,
    /// This host could not be reached at connect and is left out of the run (within the
    /// budget for unreachable hosts): the others go on as the whole fleet.
    LeftOut(usize),
}

/// The shape of one deploy beyond the basic protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// The waves switched (each verified, and observed) before the rest, in order; the hosts in
    /// none of them are the last wave. None: the whole fleet is one wave. A canary is one leading
    /// wave.
    pub waves: Vec<Vec<usize>>,
    /// The host that runs the run-once steps, if there are any.
    pub run_once: Option<usize>,
    /// Run the verify action (after-switch steps, health check) after each switch.
    pub verify: bool,
    /// A failed verification switches the whole fleet back (else it is only reported).
    pub rollback_on_verify_failure: bool,
    /// Hold after the canary was verified.
    pub observe: bool,
}

/// A switch wave, by its index in [`Protocol::waves`].
type Wave = usize;

/// How far the protocol has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Start,
    Connecting,
    Locking,
    Preparing,
    RunningOnce,
    /// Switching a wave.
    Switching(Wave),
    /// Verifying the wave just switched.
    Verifying(Wave),
    /// Holding after a wave that is not the last passed its checks.
    Observing(Wave),
    Reverting,
    MarkingBad,
    Discarding,
    CleaningUp,
    Unlocking,
    Done,
}

/// The protocol for one deploy over `n` hosts.
#[derive(Debug, Clone)]
pub struct Protocol {
    pub hosts: Vec<HostState>,
    /// Every wave, the last one included: each host is in exactly one.
    waves: Vec<Vec<usize>>,
    options: Options,
    progress: Progress,
    interrupted: bool,
    outcome: Option<Outcome>,
    run_once_failed: bool,
    /// Verification failed on a host (and the policy is to roll back).
    verify_failed: bool,
    /// The release went live on the whole fleet before it was rolled back: keep it, marked bad.
    keep_as_bad: bool,
    /// Every host already is where the run would put it.
    nothing_to_do: bool,
}

impl Protocol {
    pub fn new(n: usize) -> Self {
        Self::with(n, Options::default())
    }

    pub fn with(n: usize, options: Options) -> Self {
        // Each host in its first wave only; what no wave names is the last one; empty waves
        // are none (so a "canary" that is the whole fleet is no canary).
        let mut waves: Vec<Vec<usize>> = Vec::new();
        let mut seen = vec![false; n];
        for w in &options.waves {
            let hosts: Vec<usize> = w
                .iter()
                .copied()
                .filter(|&i| i < n && !std::mem::replace(&mut seen[i], true))
                .collect();
            if !hosts.is_empty() {
                waves.push(hosts);
            }
        }
        let rest: Vec<usize> = (0..n).filter(|&i| !seen[i]).collect();
        if !rest.is_empty() || waves.is_empty() {
            waves.push(rest);
        }
        Protocol {
            hosts: vec![HostState::default(); n],
            waves,
            options,
            progress: Progress::Start,
            interrupted: false,
            outcome: None,
            run_once_failed: false,
            verify_failed: false,
            keep_as_bad: false,
            nothing_to_do: false,
        }
    }

    /// True while some waves are switched and the last one is not: an interruption now
    /// switches the fleet back.
    pub fn in_canary(&self) -> bool {
        match self.progress {
            Progress::Switching(w) | Progress::Verifying(w) | Progress::Observing(w) => {
                !self.is_last(w)
            }
            _ => false,
        }
    }

    /// The waves, in order, the last one included.
    pub fn waves(&self) -> &[Vec<usize>] {
        &self.waves
    }

    fn is_last(&self, w: Wave) -> bool {
        w + 1 >= self.waves.len()
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
            self.progress,
            Progress::Switching(_)
                | Progress::Verifying(_)
                | Progress::Observing(_)
                | Progress::Reverting
                | Progress::MarkingBad
                | Progress::CleaningUp
                | Progress::Unlocking
                | Progress::Done
        )
    }

    pub fn on(&mut self, event: Fact) {
        let (i, apply): (usize, fn(&mut HostState)) = match event {
            Fact::Interrupted => {
                self.interrupted = true;
                return;
            }
            Fact::RanOnce | Fact::Observed => return,
            Fact::NothingToDo => {
                self.nothing_to_do = true;
                return;
            }
            Fact::LeftOut(i) => {
                if let Some(h) = self.hosts.get_mut(i) {
                    h.left_out = true;
                    h.failed = false;
                }
                for w in &mut self.waves {
                    w.retain(|&x| x != i);
                }
                self.waves.retain(|w| !w.is_empty());
                if self.waves.is_empty() {
                    self.waves.push(Vec::new());
                }
                return;
            }
            Fact::RunOnceFailed => {
                self.run_once_failed = true;
                return;
            }
            Fact::Verified(_) => return,
            Fact::VerifyFailed(_) => {
                if self.options.rollback_on_verify_failure {
                    self.verify_failed = true;
                }
                return;
            }
            Fact::Connected(i) => (i, |h| h.connected = true),
            Fact::Locked(i) => (i, |h| h.locked = true),
            Fact::Staging(i) => (i, |h| h.staged = true),
            Fact::Prepared(i) => (i, |h| h.prepared = true),
            Fact::Switched(i) => (i, |h| h.switch = SwitchState::Switched),
            Fact::SwitchUnknown(i) => (i, |h| {
                h.switch = SwitchState::Unknown;
                h.failed = true;
            }),
            Fact::Reverted(i) => (i, |h| h.switch = SwitchState::Reverted),
            Fact::ConnectFailed(i)
            | Fact::LockFailed(i)
            | Fact::PrepareFailed(i)
            | Fact::SwitchRefused(i)
            | Fact::RevertFailed(i) => (i, |h| h.failed = true),
        };
        if let Some(h) = self.hosts.get_mut(i) {
            apply(h);
        }
    }

    /// Every host of the run (not the ones left out).
    fn all(&self) -> Vec<usize> {
        self.which(|_| true)
    }

    fn which(&self, f: impl Fn(&HostState) -> bool) -> Vec<usize> {
        self.hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.left_out && f(h))
            .map(|(i, _)| i)
            .collect()
    }

    /// The barrier is open only if every host is ready for this stage and nobody interrupted.
    fn gate(&self, ready: impl Fn(&HostState) -> bool) -> bool {
        !self.interrupted
            && self
                .hosts
                .iter()
                .filter(|h| !h.left_out)
                .all(|h| ready(h) && !h.failed)
            && self.hosts.iter().any(|h| !h.left_out)
    }

    /// After the previous action's results are in: what to do next.
    pub fn next_action(&mut self) -> Action {
        loop {
            let (next, action) = match self.progress {
                Progress::Start => (Progress::Connecting, Action::Connect(self.all())),
                // Nothing is locked, so nothing is to be undone or unlocked.
                Progress::Connecting if self.nothing_to_do && self.gate(|h| h.connected) => {
                    self.outcome = Some(Outcome::NothingToDo);
                    (Progress::Done, Action::Finish(Outcome::NothingToDo))
                }
                Progress::Connecting if self.gate(|h| h.connected) => {
                    (Progress::Locking, Action::Lock(self.all()))
                }
                Progress::Connecting => {
                    self.outcome = Some(Outcome::Aborted);
                    (Progress::Done, Action::Finish(Outcome::Aborted))
                }
                Progress::Locking if self.gate(|h| h.locked) => {
                    (Progress::Preparing, Action::Prepare(self.all()))
                }
                // The barrier: every host prepared, nothing failed, nobody interrupted.
                Progress::Preparing if self.gate(|h| h.prepared) => match self.options.run_once {
                    Some(host) => (Progress::RunningOnce, Action::RunOnce(host)),
                    None => self.first_wave(),
                },
                Progress::RunningOnce if !self.run_once_failed && !self.interrupted => {
                    self.first_wave()
                }
                Progress::Locking | Progress::Preparing | Progress::RunningOnce => {
                    self.outcome = Some(Outcome::Aborted);
                    (
                        Progress::Discarding,
                        Action::Discard(self.which(|h| h.staged)),
                    )
                }
                Progress::Switching(w) => {
                    let wave = self.waves[w].clone();
                    if wave
                        .iter()
                        .all(|&i| self.hosts[i].switch == SwitchState::Switched)
                    {
                        if self.options.verify {
                            (Progress::Verifying(w), Action::Verify(wave))
                        } else {
                            self.after_verified(w)
                        }
                    } else {
                        self.switch_back()
                    }
                }
                Progress::Verifying(w) => {
                    let last = self.is_last(w);
                    if self.verify_failed || (!last && self.interrupted) {
                        // Live on the whole fleet and then found bad: keep it for inspection.
                        self.keep_as_bad = last && self.verify_failed;
                        self.switch_back()
                    } else {
                        self.after_verified(w)
                    }
                }
                Progress::Observing(w) => {
                    if self.interrupted {
                        self.switch_back()
                    } else {
                        (
                            Progress::Switching(w + 1),
                            Action::Switch(self.waves[w + 1].clone()),
                        )
                    }
                }
                Progress::Reverting => {
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
                    if self.keep_as_bad {
                        (
                            Progress::MarkingBad,
                            Action::MarkBad(self.which(|h| h.staged)),
                        )
                    } else {
                        // Discard only where `current` is surely not the new release.
                        let discard = self.which(|h| {
                            h.staged
                                && matches!(
                                    h.switch,
                                    SwitchState::NotSwitched | SwitchState::Reverted
                                )
                        });
                        (Progress::Discarding, Action::Discard(discard))
                    }
                }
                Progress::MarkingBad => (
                    Progress::Unlocking,
                    Action::Unlock(self.which(|h| h.locked)),
                ),
                Progress::Discarding | Progress::CleaningUp => (
                    Progress::Unlocking,
                    Action::Unlock(self.which(|h| h.locked)),
                ),
                Progress::Unlocking | Progress::Done => {
                    let outcome = self.outcome.unwrap_or(Outcome::Aborted);
                    (Progress::Done, Action::Finish(outcome))
                }
            };
            self.progress = next;
            // Skip actions with nothing to do, so the runner only sees real work.
            match &action {
                Action::Discard(v)
                | Action::Unlock(v)
                | Action::Revert(v)
                | Action::MarkBad(v)
                | Action::Verify(v)
                    if v.is_empty() =>
                {
                    continue;
                }
                _ => return action,
            }
        }
    }
}

impl Protocol {
    fn first_wave(&self) -> (Progress, Action) {
        (
            Progress::Switching(0),
            Action::Switch(self.waves[0].clone()),
        )
    }

    /// A wave switched and passed verification (or had none).
    fn after_verified(&mut self, w: Wave) -> (Progress, Action) {
        if self.is_last(w) {
            self.outcome = Some(Outcome::Deployed);
            return (Progress::CleaningUp, Action::Cleanup(self.all()));
        }
        if self.interrupted {
            return self.switch_back();
        }
        if self.options.observe {
            (Progress::Observing(w), Action::Observe(w))
        } else {
            (
                Progress::Switching(w + 1),
                Action::Switch(self.waves[w + 1].clone()),
            )
        }
    }

    /// Put every host that switched (or may have) back on its previous release; with none,
    /// abort.
    fn switch_back(&mut self) -> (Progress, Action) {
        let back = self.which(|h| matches!(h.switch, SwitchState::Switched | SwitchState::Unknown));
        if back.is_empty() {
            self.outcome = Some(Outcome::Aborted);
            (
                Progress::Discarding,
                Action::Discard(self.which(|h| h.staged)),
            )
        } else {
            (Progress::Reverting, Action::Revert(back))
        }
    }
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
