//! The tokio runner: drives [`Protocol`] over real connections, one host per task.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::clock;
use super::lock::HeldLock;
use super::protocol::{Action, Fact, Options, Outcome, Protocol, SwitchState};
use crate::inventory::{Host, OnFailure, Stage};
use crate::mask::Masker;
use crate::remote::{
    self, LOCK_HELD, LockOwner, Preflight, RELEASE_MISSING, SWITCH_CANCELLED, SWITCH_RENAME_FAILED,
    Step,
};
use crate::report::{
    Event, Failure, HostResult, HostSummary, Phase, PhaseTiming, Reporter, Summary, WaveSummary,
};
use crate::source::Prepared;
use crate::transport::{
    ConnectOptions, Connection, OnLine, Output, Process, Purpose, Stream, TransportError, within,
};
use crate::util;

mod armed;
mod connect;
mod finish;
mod locking;
mod plan;
mod prepare;
mod prepared;
mod rollback;
mod steps;
mod switch;
mod verify;
mod who;

pub use self::plan::{HostPlan, PlannedCommand, RunPlan, plan};
use armed::*;
use connect::*;
use finish::*;
use locking::*;
use prepare::*;
use prepared::*;
use rollback::*;
use steps::*;
use switch::*;
use verify::*;
use who::*;
pub(crate) use who::{controller_name, operator};

/// Upper bound for commands that do little (lock, unlock, discard, cleanup).
const SHORT_COMMAND: Duration = Duration::from_secs(120);
/// How often a held lock is tried again under `--lock-wait`.
const LOCK_POLL: Duration = Duration::from_secs(2);
/// Lines of output kept in a failure.
const TAIL_LINES: usize = 15;

/// The commands an interposer tells apart (the dry run answers them as a host would).
const PREFLIGHT: Purpose<'static> = Purpose::reads("connect", "preflight");
const LOCK: Purpose<'static> = Purpose::changes("lock", "lock");
const SWITCH: Purpose<'static> = Purpose::changes("switch", "switch");

/// What a run switches the fleet to.
pub enum Job {
    /// A new release, built on every host from this source.
    Deploy(Prepared),
    /// A release the hosts already have: the one named, or by default the release that was
    /// current before the last deploy (from the hosts' journals).
    Rollback { to: Option<String> },
}

impl Job {
    fn kind(&self) -> &'static str {
        match self {
            Job::Deploy(_) => "deploy",
            Job::Rollback { .. } => "rollback",
        }
    }
}

/// What to deploy where.
pub struct Deploy {
    pub stage: Stage,
    pub job: Job,
    pub connect: ConnectOptions,
    /// The waves (host indices into the stage) switched one after the other before the rest,
    /// each verified and observed before the next; the hosts in none are the last wave. Empty:
    /// the whole fleet at once. A canary is one such wave.
    pub waves: Vec<Vec<usize>>,
    /// How long to hold after each wave but the last before switching the next.
    pub observe: Duration,
    /// Keep a failed release's directory on the hosts for inspection instead of removing it.
    pub keep_failed: bool,
    /// How long to wait for a lock held by another run (zero: fail at once).
    pub lock_wait: Duration,
    /// How many hosts may be unreachable at connect and be left out of the run (the others go
    /// on as the whole fleet). Zero: any unreachable host stops the run.
    pub max_unreachable: usize,
    /// Build afresh everywhere, even where a failed deploy of the same build left its release
    /// prepared.
    pub rebuild: bool,
    /// This run's identity, when it is given rather than chosen (a dry run and the real run it
    /// shows can then be compared command for command).
    pub identity: Option<Identity>,
}

/// What names a run on the hosts: its release id, its lock token, when it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The release id (a deploy's; a rollback's comes from the hosts).
    pub release: String,
    pub token: String,
    pub started_unix: u64,
}

/// The masker for every secret of a stage's hosts: their secret `env` values and the
/// credentials in their git and health-check URLs.
pub fn masker_for(stage: &Stage) -> Masker {
    let mut secrets = Vec::new();
    for h in &stage.hosts {
        let c = &h.config;
        secrets.extend(c.secrets().map(str::to_owned));
        if let crate::inventory::Source::Git { url, .. }
        | crate::inventory::Source::Url { url, .. } = &c.source
        {
            secrets.extend(crate::mask::url_secrets(url));
        }
        if let Some(crate::inventory::Probe::Http { url, .. }) = &c.health_check.probe {
            secrets.extend(crate::mask::url_secrets(url));
        }
    }
    Masker::new(secrets)
}

struct HostRun {
    host: Host,
    conn: Option<Arc<Connection>>,
    preflight: Preflight,
    failure: Option<Failure>,
    prepare_time: Option<Duration>,
    switched_at: Option<u128>,
    /// Its clock against ours, measured while the switch was armed.
    clock: Option<clock::Offset>,
    /// Its switch command, started at the end of its prepare and waiting for the word.
    armed: Option<Armed>,
    remedy: Option<String>,
    /// Our lock (and maybe the staged release) could not be removed from this host.
    left_behind: bool,
    /// Another run holds this host's lock.
    locked_by_other: bool,
    /// Its steps were stopped by ship, not failed.
    cancelled: bool,
    /// It could not be reached or logged in to at connect.
    unreachable: bool,
    /// Every prepare step succeeded on it (its release is whole).
    prepared_ok: bool,
    /// A prepare step failed on it (not stopped because another host failed).
    build_failed: bool,
    /// Its whole release was kept, prepared, when the deploy failed at the barrier.
    kept_prepared: bool,
    /// It takes up the release a failed deploy of the same build left prepared, and builds
    /// nothing.
    reuse: bool,
    /// Left out of this run (unreachable, within `max_unreachable`).
    left_out: bool,
    /// Its journal line is written and our lock released (with the cleanup).
    unlocked: bool,
    warnings: Vec<Failure>,
}

impl HostRun {
    fn new(host: &Host) -> Self {
        HostRun {
            host: host.clone(),
            conn: None,
            preflight: Preflight::default(),
            failure: None,
            prepare_time: None,
            switched_at: None,
            clock: None,
            armed: None,
            remedy: None,
            left_behind: false,
            locked_by_other: false,
            cancelled: false,
            unreachable: false,
            prepared_ok: false,
            build_failed: false,
            kept_prepared: false,
            reuse: false,
            left_out: false,
            unlocked: false,
            warnings: Vec::new(),
        }
    }

    /// Its connection, or the error of a host that has none (it failed at connect).
    fn connection(&self) -> Result<Arc<Connection>, TransportError> {
        self.conn
            .clone()
            .ok_or_else(|| TransportError::Other("not connected".into()))
    }

    /// Report a failure and keep it (the first one wins: it is the cause, later ones follow).
    fn fail(&mut self, ctx: &RunCtx, f: Failure) {
        ctx.failed(&self.host.name, &f);
        if self.failure.is_none() {
            self.failure = Some(f);
        }
    }
}

struct RunCtx {
    kind: &'static str,
    reporter: Arc<dyn Reporter>,
    stage: String,
    masker: Masker,
    release: String,
    token: String,
    revision: String,
    started: String,
    /// Decided before cleanup and unlock, for the journal.
    outcome: Option<Outcome>,
    /// Who runs this deploy, from where: read once, written to the lock and the journal.
    user: String,
    controller: String,
    ci_job: Option<String>,
    ci_url: Option<String>,
    /// The operator's interruption: long remote steps watch it and stop on the host.
    cancel: CancellationToken,
    /// A rollback to a release newer than every host's: a move forward, nothing marked bad.
    forward: bool,
    /// The turns of steps that only so many hosts run at once (`parallel:`), by step name.
    turns: std::sync::Mutex<std::collections::HashMap<String, Arc<Semaphore>>>,
}

impl RunCtx {
    /// The context of one run of `d`, started at `started_unix`. The release id is
    /// provisional until the hosts were inspected (a rollback's comes from them).
    fn new(
        d: &Deploy,
        reporter: Arc<dyn Reporter>,
        cancel: CancellationToken,
        started_unix: u64,
    ) -> Self {
        RunCtx {
            kind: d.job.kind(),
            reporter,
            stage: d.stage.name.clone(),
            masker: masker_for(&d.stage),
            release: util::release_id_at(started_unix),
            token: String::new(),
            revision: match &d.job {
                Job::Deploy(p) => p.revision.clone(),
                Job::Rollback { .. } => String::new(),
            },
            started: util::rfc3339(started_unix),
            outcome: None,
            user: operator(),
            controller: controller_name(),
            ci_job: ci_job(),
            ci_url: ci_url(),
            cancel,
            forward: false,
            turns: Default::default(),
        }
    }

    /// The turns of the step named `name`, of which `n` hosts may hold one at a time.
    fn turns(&self, name: &str, n: usize) -> Arc<Semaphore> {
        let mut t = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        t.entry(name.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(n.max(1))))
            .clone()
    }

    fn phase(&self, host: &str, phase: Phase) {
        self.reporter.report(&Event::Phase {
            host: host.to_owned(),
            phase,
        });
    }

    fn on_line(&self, host: &str) -> OnLine {
        let reporter = self.reporter.clone();
        let masker = self.masker.clone();
        let host = host.to_owned();
        Arc::new(move |stream: Stream, line: &str| {
            reporter.report(&Event::Line {
                host: host.clone(),
                stream: match stream {
                    Stream::Stdout => "stdout",
                    Stream::Stderr => "stderr",
                },
                line: masker.mask(line),
            });
        })
    }

    fn failure(
        &self,
        phase: Phase,
        step: Option<&str>,
        out: Option<&Output>,
        message: String,
    ) -> Failure {
        Failure {
            phase,
            step: step.map(str::to_owned),
            exit_status: out.and_then(|o| o.status),
            message: self.masker.mask(&message),
            output_tail: out
                .map(|o| {
                    o.last_lines(TAIL_LINES)
                        .iter()
                        .map(|l| self.masker.mask(l))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    fn failed(&self, host: &str, failure: &Failure) {
        self.reporter.report(&Event::HostFailed {
            host: host.to_owned(),
            failure: failure.clone(),
        });
    }
}

fn transport_failure(
    ctx: &RunCtx,
    phase: Phase,
    step: Option<&str>,
    e: &TransportError,
) -> Failure {
    ctx.failure(phase, step, None, e.to_string())
}

fn command_failure(ctx: &RunCtx, phase: Phase, step: Option<&str>, out: &Output) -> Failure {
    let message = match (out.status, &out.signal) {
        (_, Some(sig)) => format!("killed by {sig}"),
        (Some(code), None) => format!("exited with status {code}"),
        (None, None) => "ended without an exit status".to_owned(),
    };
    ctx.failure(phase, step, Some(out), message)
}

/// Run a short command on a host's connection (`conn`, from [`HostRun::connection`]).
async fn run_short(
    conn: Result<Arc<Connection>, TransportError>,
    what: Purpose<'_>,
    script: &str,
    t: Duration,
) -> Result<Output, TransportError> {
    conn?.run(what, script, None, None, t).await
}

/// Choose the release id: UTC `YYYYMMDDHHMMSS` of `start`, moved forward a second at a time
/// while any host already has a release of that name, so ids stay plain timestamps that sort by
/// name (a `-N` suffix would sort `-10` before `-2`).
pub fn choose_release_id(start: u64, existing: &[&[String]]) -> String {
    let taken = |id: &str| existing.iter().any(|r| r.iter().any(|x| x == id));
    (start..)
        .map(util::release_id_at)
        .find(|id| !taken(id))
        .unwrap_or_else(|| util::release_id_at(start))
}

/// The `started` event: what this run deploys, where, under which release id.
fn started_event(d: &Deploy, ctx: &RunCtx, hosts: &[HostRun]) -> Event {
    Event::Started {
        kind: ctx.kind.to_owned(),
        stage: d.stage.name.clone(),
        release: ctx.release.clone(),
        revision: ctx.revision.clone(),
        hosts: hosts.iter().map(|h| h.host.name.clone()).collect(),
    }
}

/// A release id that no host has yet.
fn free_release_id(start: u64, hosts: &[HostRun]) -> String {
    let existing: Vec<&[String]> = hosts
        .iter()
        .map(|h| h.preflight.releases.as_slice())
        .collect();
    choose_release_id(start, &existing)
}

/// Run a deploy to the end and return its summary. `cancel` is the operator's interruption:
/// before the barrier it aborts cleanly (staged releases removed, locks released); after it, the
/// switch and any compensation run to completion.
pub async fn deploy(d: Deploy, reporter: Arc<dyn Reporter>, cancel: CancellationToken) -> Summary {
    run_deploy(&d, reporter, cancel).await
}

async fn run_deploy(d: &Deploy, reporter: Arc<dyn Reporter>, cancel: CancellationToken) -> Summary {
    let started = Instant::now();
    let started_unix = d
        .identity
        .as_ref()
        .map_or_else(util::unix_now, |i| i.started_unix);
    let mut hosts: Vec<HostRun> = d.stage.hosts.iter().map(HostRun::new).collect();
    let mut ctx = RunCtx::new(d, reporter, cancel.clone(), started_unix);
    let mut proto = Protocol::with(hosts.len(), protocol_options(d));
    let waves = proto.waves().to_vec();
    let mut phases: Vec<PhaseTiming> = Vec::new();
    let mut announced = false;

    let outcome = loop {
        let action = proto.next_action();
        ctx.outcome = proto.outcome();
        let t0 = Instant::now();
        let phase = match &action {
            Action::Connect(_) => Phase::Connect,
            Action::Lock(_) => Phase::Lock,
            Action::Prepare(_) => Phase::Prepare,
            Action::RunOnce(_) => Phase::RunOnce,
            Action::Switch(_) => Phase::Switch,
            Action::Verify(_) => Phase::Verify,
            Action::Observe(_) => Phase::Observe,
            Action::MarkBad(_) => Phase::Cleanup,
            Action::Revert(_) => Phase::Revert,
            Action::Discard(_) => Phase::Discard,
            Action::Cleanup(_) => Phase::Cleanup,
            Action::Unlock(_) => Phase::Unlock,
            Action::Finish(o) => break *o,
        };
        // Connecting changes nothing on the hosts, so an interruption abandons it. Later
        // phases see the interruption themselves (a running step is stopped on its host) and
        // report what they did, so the protocol knows what to undo.
        let interruptible = phase == Phase::Connect;
        // Steps stop on an interruption before the switch, and during the canary; once the
        // whole fleet switches, its after-switch steps and health checks run to the end.
        let steps_stop = if proto.in_canary() || !proto.past_barrier() {
            cancel.child_token()
        } else {
            CancellationToken::new()
        };
        // An unlock with nothing left to do (the cleanup's command unlocked every host) is not
        // a phase of its own in the timings.
        let nothing_to_do =
            matches!(&action, Action::Unlock(ids) if ids.iter().all(|&i| hosts[i].unlocked));
        let events = {
            let work = run_action(&action, &mut hosts, &ctx, d, &waves, &steps_stop);
            if interruptible {
                tokio::select! {
                    ev = work => ev,
                    _ = cancel.cancelled() => {
                        ctx.reporter.report(&Event::Interrupted {
                            message: format!(
                                "interrupted during {phase}: no host has switched; removing the \
                                 staged release and releasing locks"
                            ),
                        });
                        vec![Fact::Interrupted]
                    }
                }
            } else {
                work.await
            }
        };
        for e in events {
            proto.on(e);
        }
        if cancel.is_cancelled() && !proto.interrupted() {
            proto.on(Fact::Interrupted);
            let message = if proto.in_canary() {
                "interrupted during the canary: switching the canary back; the rest of the fleet \
                 never switched"
                    .to_owned()
            } else if proto.past_barrier() {
                "interrupted after the switch began: finishing it so that no host is left on a \
                 different release"
                    .to_owned()
            } else {
                format!(
                    "interrupted during {phase}: no host has switched; removing the staged release \
                     and releasing locks"
                )
            };
            ctx.reporter.report(&Event::Interrupted { message });
        }
        if !nothing_to_do {
            phases.push(PhaseTiming {
                phase,
                ms: t0.elapsed().as_millis() as u64,
            });
        }
        if phase == Phase::Connect {
            if let Job::Rollback { to } = &d.job {
                // The target must be on every host before anything is locked.
                match rollback_target(&hosts, to.as_deref()) {
                    Ok(target) => {
                        ctx.release = target.release;
                        ctx.revision = target.revision;
                        ctx.forward = target.forward;
                    }
                    Err(Refusal::AlreadyThere(target)) => {
                        ctx.release = target;
                        proto.on(Fact::NothingToDo);
                    }
                    Err(Refusal::Hosts { target, problems }) => {
                        // The target when it is known, else none (not a made-up id).
                        ctx.release = target.unwrap_or_default();
                        for (i, msg) in problems {
                            let f = ctx.failure(Phase::Connect, Some("rollback target"), None, msg);
                            hosts[i].fail(&ctx, f);
                            proto.on(Fact::ConnectFailed(i));
                        }
                    }
                }
            } else if let Some(given) = &d.identity {
                ctx.release = given.release.clone();
            } else if let Some(prepared) = reusable(&mut hosts, d) {
                // A failed deploy of this same build left its release prepared on some hosts:
                // this run takes that id, they reuse it, the others build it.
                ctx.release = prepared;
            } else {
                // The id is chosen once every host has been inspected, so it is free everywhere.
                ctx.release = free_release_id(started_unix, &hosts);
            }
            ctx.token = match &d.identity {
                Some(given) => given.token.clone(),
                None => format!(
                    "ship-{}-{}-{}",
                    ctx.release,
                    std::process::id(),
                    started.elapsed().as_nanos() % 1_000_000_007
                ),
            };
        }
        let reusing = hosts.iter().any(|h| h.reuse);
        if phase == Phase::Lock
            && matches!(d.job, Job::Deploy(_))
            && d.identity.is_none()
            && !reusing
        {
            // Under the lock, look again: a deploy that held it meanwhile may have taken the id.
            let fresh = free_release_id(started_unix, &hosts);
            if fresh != ctx.release {
                ctx.release = fresh;
                let owner = owner_record(&ctx);
                let locked: Vec<usize> = (0..hosts.len())
                    .filter(|&i| proto.hosts[i].locked)
                    .collect();
                on_each(
                    &locked,
                    &mut hosts,
                    &ctx,
                    (Phase::Lock, "relock"),
                    |h, c| remote::relock(&h.host.config.deploy_to, &c.token, &owner),
                )
                .await;
            }
        }
        // The id is final once the hosts are locked.
        if phase == Phase::Lock && !announced {
            announced = true;
            ctx.reporter.report(&started_event(d, &ctx, &hosts));
        }
    };
    // Nothing is left armed (the protocol disarms every host it discards or unlocks; this is
    // the backstop).
    disarm(&(0..hosts.len()).collect::<Vec<_>>(), &mut hosts).await;
    if !announced {
        // The run ended before the lock phase (a host could not be reached or inspected).
        ctx.reporter.report(&started_event(d, &ctx, &hosts));
    }

    let states = proto.hosts.clone();
    let host_summaries = hosts
        .iter()
        .zip(states.iter())
        .map(|(h, s)| {
            let previous = h.preflight.current_release().map(str::to_owned);
            let (result, current) = match s.switch {
                SwitchState::Switched => (HostResult::Switched, Some(ctx.release.clone())),
                SwitchState::Reverted => (HostResult::Reverted, previous),
                SwitchState::NotSwitched => (HostResult::Unchanged, previous),
                SwitchState::Unknown => (HostResult::Unknown, None),
            };
            HostSummary {
                host: h.host.name.clone(),
                result,
                current,
                prepare_ms: h.prepare_time.map(|t| t.as_millis() as u64),
                switched_at_unix_ns: h.switched_at,
                clock_offset_us: h.clock.map(|c| c.offset_us),
                clock_error_us: h.clock.map(|c| c.error_us),
                failure: h.failure.clone(),
                remedy: h.remedy.clone(),
                lock_left: h.left_behind,
                locked_by_other: h.locked_by_other,
                cancelled: h.cancelled && h.failure.is_none(),
                left_out: h.left_out,
                kept_prepared: h.kept_prepared,
                reused: h.reuse,
                warnings: h.warnings.clone(),
            }
        })
        .collect::<Vec<_>>();
    // Each host's instant on our clock: its own, corrected by its measured offset. Each wave
    // switches at one instant; the fleet's flip skew is the largest of its waves'.
    let wave_summaries: Vec<WaveSummary> = waves
        .iter()
        .map(|w| {
            let stamps: Vec<i128> = w
                .iter()
                .filter_map(|&i| host_summaries.get(i))
                .filter_map(HostSummary::switched_at_controller_ns)
                .collect();
            WaveSummary {
                hosts: w.iter().map(|&i| hosts[i].host.name.clone()).collect(),
                flip_skew_ms: match (stamps.iter().min(), stamps.iter().max()) {
                    (Some(a), Some(b)) if outcome == Outcome::Deployed => {
                        Some((b - a) as f64 / 1e6)
                    }
                    _ => None,
                },
            }
        })
        .collect();
    let flip_skew_ms = wave_summaries
        .iter()
        .filter_map(|w| w.flip_skew_ms)
        .reduce(f64::max);
    let clock_error_ms = flip_skew_ms.and_then(|_| {
        host_summaries
            .iter()
            .filter(|h| h.switched_at_unix_ns.is_some())
            .filter_map(|h| h.clock_error_us)
            .max()
            .map(|us| us as f64 / 1e3)
    });
    for h in &hosts {
        if let Some(c) = &h.conn {
            c.close().await;
        }
    }
    let summary = Summary {
        kind: ctx.kind.to_owned(),
        forward: ctx.forward,
        stage: d.stage.name.clone(),
        release: ctx.release.clone(),
        revision: ctx.revision.clone(),
        outcome,
        hosts: host_summaries,
        flip_skew_ms,
        clock_error_ms,
        canary: canary_names(d),
        waves: wave_summaries,
        untouched: d.stage.excluded.clone(),
        phases,
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    ctx.reporter.report(&Event::Finished {
        summary: summary.clone(),
    });
    summary
}

async fn run_action(
    action: &Action,
    hosts: &mut [HostRun],
    ctx: &RunCtx,
    d: &Deploy,
    waves: &[Vec<usize>],
    stop: &CancellationToken,
) -> Vec<Fact> {
    // Hosts armed at the end of their prepare wait for their word; anything else done to them
    // (discard, revert, unlock…) means their switch is off.
    match action {
        Action::Switch(_)
        | Action::Verify(_)
        | Action::Observe(_)
        | Action::RunOnce(_)
        | Action::Finish(_) => {}
        Action::Connect(ids)
        | Action::Lock(ids)
        | Action::Prepare(ids)
        | Action::MarkBad(ids)
        | Action::Revert(ids)
        | Action::Discard(ids)
        | Action::Cleanup(ids)
        | Action::Unlock(ids) => disarm(ids, hosts).await,
    }
    match action {
        Action::Connect(ids) => connect(ids, hosts, ctx, d).await,
        Action::Lock(ids) => lock(ids, hosts, ctx, d).await,
        Action::Prepare(ids) => match &d.job {
            Job::Deploy(source) => {
                prepare(ids, hosts, ctx, source, protocol_options(d).run_once).await
            }
            Job::Rollback { .. } => stage_target(ids, hosts, ctx).await,
        },
        Action::RunOnce(i) => run_once(*i, hosts, ctx, d).await,
        Action::Switch(ids) => switch(ids, hosts, ctx).await,
        Action::Verify(ids) => verify(ids, hosts, ctx, d, stop).await,
        Action::Observe(w) => observe(ctx, d, waves, *w).await,
        Action::Revert(ids) => revert(ids, hosts, ctx).await,
        Action::MarkBad(ids) => {
            on_each(ids, hosts, ctx, (Phase::Cleanup, "mark bad"), |h, c| {
                remote::mark_bad(&h.host.config.deploy_to, &[&c.release], None)
            })
            .await;
            Vec::new()
        }
        Action::Discard(ids) => {
            match &d.job {
                Job::Deploy(_) if d.keep_failed => {
                    on_each(
                        ids,
                        hosts,
                        ctx,
                        (Phase::Discard, "discard scratch"),
                        |h, c| remote::discard_scratch(&h.host.config.deploy_to, &c.release),
                    )
                    .await
                }
                Job::Deploy(source) => {
                    // A host's build failed and no host switched: a host whose release is whole
                    // keeps it, prepared, for a retry of the same build. A host that took up a
                    // prepared release never loses it, whatever happened: it was whole before
                    // this run (kept prepared again, or left alone when it was not whole).
                    let keep = ctx.outcome == Some(Outcome::Aborted)
                        && hosts.iter().any(|h| h.build_failed);
                    for &i in ids {
                        let h = &mut hosts[i];
                        h.kept_prepared = h.prepared_ok && (keep || h.reuse);
                    }
                    on_each(ids, hosts, ctx, (Phase::Discard, "discard"), |h, c| {
                        let d = &h.host.config.deploy_to;
                        if h.kept_prepared {
                            remote::keep_prepared(d, &c.release, &build_key(&h.host.config, source))
                        } else if h.reuse {
                            remote::unstage(d, &c.release)
                        } else {
                            remote::discard(d, &c.release)
                        }
                    })
                    .await
                }
                // The target release stays: only its staged link goes.
                Job::Rollback { .. } => {
                    on_each(ids, hosts, ctx, (Phase::Discard, "unstage"), |h, c| {
                        remote::unstage(&h.host.config.deploy_to, &c.release)
                    })
                    .await
                }
            }
            Vec::new()
        }
        // The journal line and the unlock that always follow go in the same command.
        Action::Cleanup(ids) => {
            match &d.job {
                Job::Deploy(_) => cleanup_and_unlock(ids, hosts, ctx, finish_script).await,
                // Rolled back from: kept for inspection, marked bad.
                Job::Rollback { .. } => {
                    cleanup_and_unlock(ids, hosts, ctx, |h, c| {
                        // Moving forward leaves no release behind as bad.
                        let from: Vec<&str> = match c.forward {
                            true => Vec::new(),
                            false => h.preflight.current_release().into_iter().collect(),
                        };
                        let d = &h.host.config.deploy_to;
                        remote::finish_rollback(d, &from, &c.release, &c.token, &journal_line(h, c))
                    })
                    .await
                }
            }
            Vec::new()
        }
        Action::Unlock(ids) => {
            let still: Vec<usize> = ids
                .iter()
                .copied()
                .filter(|&i| !hosts[i].unlocked)
                .collect();
            on_each(&still, hosts, ctx, (Phase::Unlock, "unlock"), unlock_script).await;
            Vec::new()
        }
        Action::Finish(_) => Vec::new(),
    }
}

/// The names of the hosts of the first wave, when there are several (the canary).
fn canary_names(d: &Deploy) -> Vec<String> {
    d.waves
        .first()
        .into_iter()
        .flatten()
        .filter_map(|&i| d.stage.hosts.get(i).map(|h| h.name.clone()))
        .collect()
}

/// What the stage's settings and the command line ask of the protocol.
fn protocol_options(d: &Deploy) -> Options {
    let first = d.stage.hosts.first().map(|h| &h.config);
    let verify = d
        .stage
        .hosts
        .iter()
        .any(|h| !h.config.after_switch.is_empty() || h.config.health_check.probe.is_some());
    let deploying = matches!(d.job, Job::Deploy(_));
    Options {
        waves: d.waves.clone(),
        run_once: (deploying && d.stage.hosts.iter().any(|h| !h.config.run_once.is_empty()))
            .then(|| d.stage.primary()),
        verify,
        // Switching back a rollback would return to the release just rolled back from.
        rollback_on_verify_failure: deploying
            && first.is_some_and(|c| c.health_check.on_failure == OnFailure::Rollback),
        observe: !d.observe.is_zero(),
    }
}

/// The plan of a release on one host, as the commands that build it are rendered from.
fn plan_for<'a>(
    h: &'a HostRun,
    ctx: &'a RunCtx,
    delivery: &'a remote::Delivery,
) -> remote::ReleasePlan<'a> {
    remote::ReleasePlan {
        deploy_to: &h.host.config.deploy_to,
        release_id: &ctx.release,
        revision: &ctx.revision,
        delivery,
        shared_files: &h.host.config.shared.files,
        shared_dirs: &h.host.config.shared.dirs,
        copy_from_previous: &h.host.config.copy_from_previous,
        build: &h.host.config.build,
        writable: h.host.config.writable.as_ref(),
        env: &h.host.config.env,
        inline_payload: None,
    }
}

#[cfg(test)]
mod tests;
