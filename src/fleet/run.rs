//! The tokio runner: drives [`Protocol`] over real connections, one host per task.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::clock;
use super::lock::HeldLock;
use super::protocol::{Action, Event as P, Options, Outcome, Protocol, SwitchState};
use crate::inventory::{Host, OnFailure, Stage};
use crate::mask::Masker;
use crate::remote::{
    self, CLEANUP_STATUS, LOCK_HELD, LockOwner, Preflight, RELEASE_MISSING, SWITCH_CANCELLED,
    SWITCH_RENAME_FAILED, Step,
};
use crate::report::{
    Event, Failure, HostResult, HostSummary, Phase, PhaseTiming, Reporter, Summary,
};
use crate::source::Prepared;
use crate::transport::{
    CONNECT_CONCURRENCY, ConnectOptions, Connection, OnLine, Output, Process, Stream,
    TransportError, within,
};
use crate::util;

/// Upper bound for commands that do little (lock, unlock, discard, cleanup).
const SHORT_COMMAND: Duration = Duration::from_secs(120);
/// How often a held lock is tried again under `--lock-wait`.
const LOCK_POLL: Duration = Duration::from_secs(2);
/// Lines of output kept in a failure.
const TAIL_LINES: usize = 15;

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
    /// Hosts (indices into the stage) switched first, verified and observed before the rest.
    pub canary: Vec<usize>,
    /// How long to hold with the canary switched before switching the rest.
    pub observe: Duration,
    /// Keep a failed release's directory on the hosts for inspection instead of removing it.
    pub keep_failed: bool,
    /// How long to wait for a lock held by another run (zero: fail at once).
    pub lock_wait: Duration,
}

/// The masker for every secret of a stage's hosts: their secret `env` values and the
/// credentials in their git and health-check URLs.
pub fn masker_for(stage: &Stage) -> Masker {
    let mut secrets = Vec::new();
    for h in &stage.hosts {
        let c = &h.config;
        secrets.extend(c.secrets().map(str::to_owned));
        if let crate::inventory::Source::Git { url, .. } = &c.source {
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
            unlocked: false,
            warnings: Vec::new(),
        }
    }

    /// Report a failure and keep it (the first one wins: it is the cause, later ones follow).
    fn fail(&mut self, ctx: &Ctx, f: Failure) {
        ctx.failed(&self.host.name, &f);
        if self.failure.is_none() {
            self.failure = Some(f);
        }
    }
}

struct Ctx {
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
    /// The operator's interruption: long remote steps watch it and stop on the host.
    cancel: CancellationToken,
}

impl Ctx {
    /// The context of one run of `d`, started at `started_unix`. The release id is
    /// provisional until the hosts were inspected (a rollback's comes from them).
    fn new(
        d: &Deploy,
        reporter: Arc<dyn Reporter>,
        cancel: CancellationToken,
        started_unix: u64,
    ) -> Self {
        Ctx {
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
            cancel,
        }
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
            reporter.report(&Event::Output {
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

fn transport_failure(ctx: &Ctx, phase: Phase, step: Option<&str>, e: &TransportError) -> Failure {
    ctx.failure(phase, step, None, e.to_string())
}

fn command_failure(ctx: &Ctx, phase: Phase, step: Option<&str>, out: &Output) -> Failure {
    let message = match (out.status, &out.signal) {
        (_, Some(sig)) => format!("killed by {sig}"),
        (Some(code), None) => format!("exited with status {code}"),
        (None, None) => "ended without an exit status".to_owned(),
    };
    ctx.failure(phase, step, Some(out), message)
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
fn started_event(d: &Deploy, ctx: &Ctx, hosts: &[HostRun]) -> Event {
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

pub(crate) fn controller_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

fn ci_job() -> Option<String> {
    [
        "GITHUB_RUN_ID",
        "CI_JOB_ID",
        "BUILD_ID",
        "BUILDKITE_JOB_ID",
        "CIRCLE_WORKFLOW_JOB_ID",
    ]
    .iter()
    .find_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}")))
}

pub(crate) fn operator() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Run a deploy to the end and return its summary. `cancel` is the operator's interruption:
/// before the barrier it aborts cleanly (staged releases removed, locks released); after it, the
/// switch and any compensation run to completion.
pub async fn deploy(d: Deploy, reporter: Arc<dyn Reporter>, cancel: CancellationToken) -> Summary {
    let started = Instant::now();
    let started_unix = util::unix_now();
    let mut hosts: Vec<HostRun> = d.stage.hosts.iter().map(HostRun::new).collect();
    let mut ctx = Ctx::new(&d, reporter, cancel.clone(), started_unix);
    let mut proto = Protocol::with(hosts.len(), protocol_options(&d));
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
            Action::Observe => Phase::Observe,
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
            let work = run_action(&action, &mut hosts, &ctx, &d, &steps_stop);
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
                        vec![P::Interrupted]
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
            proto.on(P::Interrupted);
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
                    Ok((target, revision)) => {
                        ctx.release = target;
                        ctx.revision = revision;
                    }
                    Err(problems) => {
                        for (i, msg) in problems {
                            let f = ctx.failure(Phase::Connect, Some("rollback target"), None, msg);
                            hosts[i].fail(&ctx, f);
                            proto.on(P::ConnectFailed(i));
                        }
                    }
                }
            } else {
                // The id is chosen once every host has been inspected, so it is free everywhere.
                ctx.release = free_release_id(started_unix, &hosts);
            }
            ctx.token = format!(
                "ship-{}-{}-{}",
                ctx.release,
                std::process::id(),
                started.elapsed().as_nanos() % 1_000_000_007
            );
        }
        if phase == Phase::Lock && matches!(d.job, Job::Deploy(_)) {
            // Under the lock, look again: a deploy that held it meanwhile may have taken the id.
            let fresh = free_release_id(started_unix, &hosts);
            if fresh != ctx.release {
                ctx.release = fresh;
                let owner = owner_record(&ctx);
                let locked: Vec<usize> = (0..hosts.len())
                    .filter(|&i| proto.hosts[i].locked)
                    .collect();
                simple(&locked, &mut hosts, &ctx, Phase::Lock, |h, c| {
                    remote::relock(&h.host.config.deploy_to, &c.token, &owner)
                })
                .await;
            }
        }
        // The id is final once the hosts are locked.
        if phase == Phase::Lock && !announced {
            announced = true;
            ctx.reporter.report(&started_event(&d, &ctx, &hosts));
        }
    };
    // Nothing is left armed (the protocol disarms every host it discards or unlocks; this is
    // the backstop).
    disarm(&(0..hosts.len()).collect::<Vec<_>>(), &mut hosts).await;
    if !announced {
        // The run ended before the lock phase (a host could not be reached or inspected).
        ctx.reporter.report(&started_event(&d, &ctx, &hosts));
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
                warnings: h.warnings.clone(),
            }
        })
        .collect::<Vec<_>>();
    // Each host's instant on our clock: its own, corrected by its measured offset.
    let stamps: Vec<i128> = host_summaries
        .iter()
        .filter_map(HostSummary::switched_at_controller_ns)
        .collect();
    let flip_skew_ms = match (stamps.iter().min(), stamps.iter().max()) {
        (Some(a), Some(b)) if outcome == Outcome::Deployed => Some((b - a) as f64 / 1e6),
        _ => None,
    };
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
        stage: d.stage.name.clone(),
        release: ctx.release.clone(),
        revision: ctx.revision.clone(),
        outcome,
        hosts: host_summaries,
        flip_skew_ms,
        clock_error_ms,
        canary: canary_names(&d),
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
    ctx: &Ctx,
    d: &Deploy,
    stop: &CancellationToken,
) -> Vec<P> {
    // Hosts armed at the end of their prepare wait for their word; anything else done to them
    // (discard, revert, unlock…) means their switch is off.
    match action {
        Action::Switch(_)
        | Action::Verify(_)
        | Action::Observe
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
        Action::Observe => observe(ctx, d).await,
        Action::Revert(ids) => revert(ids, hosts, ctx).await,
        Action::MarkBad(ids) => {
            simple(ids, hosts, ctx, Phase::Cleanup, |h, c| {
                remote::mark_bad(&h.host.config.deploy_to, &[&c.release], None)
            })
            .await;
            Vec::new()
        }
        Action::Discard(ids) => {
            match &d.job {
                Job::Deploy(_) if d.keep_failed => {
                    simple(ids, hosts, ctx, Phase::Discard, |h, c| {
                        remote::discard_scratch(&h.host.config.deploy_to, &c.release)
                    })
                    .await
                }
                Job::Deploy(_) => {
                    simple(ids, hosts, ctx, Phase::Discard, |h, c| {
                        remote::discard(&h.host.config.deploy_to, &c.release)
                    })
                    .await
                }
                // The target release stays: only its staged link goes.
                Job::Rollback { .. } => {
                    simple(ids, hosts, ctx, Phase::Discard, |h, c| {
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
                        let from: Vec<&str> = h.preflight.current_release().into_iter().collect();
                        let d = &h.host.config.deploy_to;
                        format!(
                            "({})\necho {CLEANUP_STATUS}$?\n{}",
                            remote::mark_bad(d, &from, Some(c.release.as_str())),
                            unlock_script(h, c)
                        )
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
            simple(&still, hosts, ctx, Phase::Unlock, unlock_script).await;
            Vec::new()
        }
        Action::Finish(_) => Vec::new(),
    }
}

/// The names of the canary hosts.
fn canary_names(d: &Deploy) -> Vec<String> {
    d.canary
        .iter()
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
        canary: d.canary.clone(),
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
fn plan_for<'a>(h: &'a HostRun, ctx: &'a Ctx, delivery: &'a remote::Delivery) -> remote::Plan<'a> {
    remote::Plan {
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

/// Run steps one after the other on one host; the first failure ends it. `Ok(false)`: stopped
/// by `stop` (not this host's failure).
async fn run_steps(
    conn: &Connection,
    host: &Host,
    steps: &[Step],
    payload: Option<&[u8]>,
    phase: Phase,
    ctx: &Ctx,
    stop: &CancellationToken,
) -> Result<bool, Failure> {
    // The git steps that use the operator's agent run on a connection of their own, closed
    // as soon as they are done: no other step can reach the agent (see `Connection::for_agent`).
    let mut agent_conn: Option<Connection> = None;
    let refused_before = conn.agent_refusals();
    for (n, step) in steps.iter().enumerate() {
        let s0 = Instant::now();
        ctx.reporter.report(&Event::StepStarted {
            host: host.name.clone(),
            step: step.name.clone(),
        });
        let stdin = if step.takes_payload { payload } else { None };
        let on_line = Some(ctx.on_line(&host.name));
        let agent = step.reaches_git && host.config.forward_agent;
        if agent && agent_conn.is_none() {
            match conn.for_agent().await {
                Ok(Some(c)) => agent_conn = Some(c),
                Ok(None) => {}
                Err(e) => {
                    return Err(transport_failure(ctx, phase, Some(&step.name), &e));
                }
            }
        }
        let on = match (&agent_conn, agent) {
            (Some(c), true) => c,
            _ => conn,
        };
        let result = if step.quick {
            on.run(&step.script, stdin, on_line, host.config.timeouts.step)
                .await
        } else {
            on.run_step(
                &step.script,
                stdin,
                on_line,
                host.config.timeouts.step,
                stop,
                agent,
            )
            .await
        };
        let agent_done = !steps
            .get(n + 1)
            .is_some_and(|s| s.reaches_git && host.config.forward_agent);
        if agent_done || result.as_ref().map_or(true, |o| !o.success()) {
            if let Some(c) = agent_conn.take() {
                report_refused_agent(ctx, host, c.agent_refusals());
                c.close().await;
            }
        }
        let ok = matches!(&result, Ok(o) if o.success());
        ctx.reporter.report(&Event::StepFinished {
            host: host.name.clone(),
            step: step.name.clone(),
            ok,
            elapsed_ms: s0.elapsed().as_millis() as u64,
        });
        match result {
            Ok(o) if o.success() => continue,
            Err(TransportError::Stopped { .. }) if stop.is_cancelled() => return Ok(false),
            Ok(o) => {
                let mut f = command_failure(ctx, phase, Some(&step.name), &o);
                if o.last_lines(TAIL_LINES)
                    .iter()
                    .any(|l| l.contains("No space left on device"))
                {
                    f.message = format!("{}: the disk is full on this host", f.message);
                }
                if let Some(hint) = sudo_problem(&o.last_lines(TAIL_LINES)) {
                    f.message = format!("{}: {hint}", f.message);
                }
                if step.reaches_git {
                    if let Some(hint) = git_problem(&o.last_lines(TAIL_LINES), host) {
                        f.message = format!("{}: {hint}", f.message);
                    }
                }
                return Err(f);
            }
            Err(e) => return Err(transport_failure(ctx, phase, Some(&step.name), &e)),
        }
    }
    report_refused_agent(ctx, host, conn.agent_refusals() - refused_before);
    Ok(true)
}

/// Say (as the host's output, shown with `-v`) that the host opened agent channels ship
/// refused: something on it tried to use the operator's agent outside a git step.
fn report_refused_agent(ctx: &Ctx, host: &Host, refused: usize) {
    if refused > 0 {
        ctx.reporter.report(&Event::Output {
            host: host.name.clone(),
            stream: "stderr",
            line: format!(
                "ship: refused {refused} ssh-agent channel(s) the host opened outside a git step"
            ),
        });
    }
}

/// What went wrong reaching the git server, from a git step's output, with what to do.
fn git_problem(tail: &[String], host: &Host) -> Option<String> {
    let any = |needle: &str| tail.iter().any(|l| l.contains(needle));
    if any("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || any("has changed and you have requested strict checking")
    {
        Some(
            "the git server's host key is not the one recorded; refusing to fetch (hint: if the \
             server's key really changed, update git_known_hosts or the host's known_hosts after \
             checking the new fingerprint)"
                .into(),
        )
    } else if any("Host key verification failed") || any("No ED25519 host key is known") {
        Some(
            "the git server's host key is not trusted on this host (hint: set `git_known_hosts` \
             to a file with its key, e.g. from `ssh-keyscan`, after checking the fingerprint)"
                .into(),
        )
    } else if any("Permission denied (publickey") {
        Some(if host.config.forward_agent {
            "the git server refused the key: none of the keys in your ssh-agent is allowed \
             there (hint: `ssh-add -l` lists them; add the deploy key with `ssh-add`)"
                .into()
        } else {
            format!(
                "the git server refused the host's key (hint: give `{}` on this host a deploy key \
                 the repository accepts, or set `forward_agent: true` to use your ssh-agent)",
                host.config.user
            )
        })
    } else {
        None
    }
}

/// What went wrong with `sudo`, from a step's output, with what to do about it.
fn sudo_problem(tail: &[String]) -> Option<&'static str> {
    let any = |needle: &str| tail.iter().any(|l| l.contains(needle));
    if any("sudo: a password is required") || any("sudo: a terminal is required") {
        Some(
            "sudo asked for a password; ship runs sudo non-interactively (hint: allow the deploy \
             user this command without a password, e.g. in /etc/sudoers.d/deploy: \
             `deploy ALL=(root) NOPASSWD: /usr/bin/systemctl reload php8.3-fpm`)",
        )
    } else if any("sudo: not found") || any("sudo: command not found") {
        Some("sudo is not installed on this host (hint: install it, or drop `sudo: true`)")
    } else if any("is not in the sudoers file") || any("is not allowed to execute") {
        Some("the deploy user may not run this with sudo (hint: add a sudoers rule for it)")
    } else {
        None
    }
}

/// A host's run-once steps (migrations), rendered for this release.
fn run_once_steps(plan: &remote::Plan, host: &Host) -> Vec<Step> {
    host.config
        .run_once
        .iter()
        .map(|c| remote::release_step(plan, "run once", c))
        .collect()
}

/// A host's after-switch steps, then its health check, rendered for this release.
fn verify_steps(plan: &remote::Plan, host: &Host) -> Vec<Step> {
    let mut steps: Vec<Step> = host
        .config
        .after_switch
        .iter()
        .map(|c| remote::release_step(plan, "after switch", c))
        .collect();
    steps.extend(remote::health_step(plan, &host.config.health_check));
    steps
}

/// The end of a deploy on a host: the journal line, the releases beyond `keep_releases`
/// removed now that this release is current, and the lock released (see [`remote::finish`]).
fn finish_script(h: &HostRun, ctx: &Ctx) -> String {
    let mut releases = h.preflight.releases.clone();
    releases.push(ctx.release.clone());
    let old = remote::releases_to_remove(
        &releases,
        h.host.config.keep_releases,
        &ctx.release,
        h.preflight.current_release(),
        &h.preflight.bad,
    );
    let d = &h.host.config.deploy_to;
    remote::finish(d, &ctx.token, &journal_line(h, ctx), &old)
}

/// Clean up, write the journal line and release the lock, in one command per host (`script`,
/// which prints [`CLEANUP_STATUS`] and the status when its cleanup failed, and exits non-zero
/// only when the lock could not be released): the unlock always follows a cleanup, so it need
/// not wait for another round trip. A failed cleanup is reported as such and does not stop the
/// unlock; the hosts unlocked here are skipped by the unlock that follows.
async fn cleanup_and_unlock(
    ids: &[usize],
    hosts: &mut [HostRun],
    ctx: &Ctx,
    script: impl Fn(&HostRun, &Ctx) -> String,
) {
    // The script always has the unlock: every host has a result.
    let results = run_short(ids, hosts, ctx, Phase::Cleanup, script).await;
    for (i, r) in results.into_iter().filter_map(|(i, r)| Some((i, r?))) {
        match r {
            Ok(o) => {
                let stdout = o.stdout_text();
                let cleanup_status = stdout
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(CLEANUP_STATUS))
                    .filter(|rc| *rc != "0");
                if let Some(rc) = cleanup_status {
                    let message = format!("exited with status {rc}");
                    let mut f = ctx.failure(Phase::Cleanup, None, Some(&o), message);
                    f.exit_status = rc.parse().ok();
                    hosts[i].fail(ctx, f);
                }
                if o.success() {
                    hosts[i].unlocked = true;
                } else {
                    hosts[i].left_behind = true;
                    let f = command_failure(ctx, Phase::Unlock, None, &o);
                    hosts[i].fail(ctx, f);
                }
            }
            // Nothing is known: the unlock that follows tries again.
            Err(e) => {
                let f = transport_failure(ctx, Phase::Cleanup, None, &e);
                hosts[i].fail(ctx, f);
            }
        }
    }
}

/// The journal line for this run, then our lock released.
fn unlock_script(h: &HostRun, ctx: &Ctx) -> String {
    let d = &h.host.config.deploy_to;
    format!(
        "{}; {}",
        remote::journal(d, &journal_line(h, ctx)),
        remote::unlock(d, &ctx.token)
    )
}

/// The run-once steps (migrations) on one host, after every host prepared and before any
/// switches. An interruption does not stop a step half-way (a half-run migration is worse than
/// a finished one); the deploy aborts after it.
async fn run_once(i: usize, hosts: &mut [HostRun], ctx: &Ctx, d: &Deploy) -> Vec<P> {
    let Job::Deploy(source) = &d.job else {
        return vec![P::RanOnce];
    };
    let Some(h) = hosts.get(i) else {
        return vec![P::RunOnceFailed];
    };
    let Some(conn) = h.conn.clone() else {
        return vec![P::RunOnceFailed];
    };
    ctx.phase(&h.host.name, Phase::RunOnce);
    let plan = plan_for(h, ctx, &source.delivery);
    let steps = run_once_steps(&plan, &h.host);
    let host = h.host.clone();
    let never = CancellationToken::new();
    match run_steps(&conn, &host, &steps, None, Phase::RunOnce, ctx, &never).await {
        Ok(_) => vec![P::RanOnce],
        Err(f) => {
            hosts[i].fail(ctx, f);
            vec![P::RunOnceFailed]
        }
    }
}

/// After-switch steps, then the health check, on every host of a wave that switched.
async fn verify(
    ids: &[usize],
    hosts: &mut [HostRun],
    ctx: &Ctx,
    d: &Deploy,
    stop: &CancellationToken,
) -> Vec<P> {
    let delivery = match &d.job {
        Job::Deploy(s) => s.delivery.clone(),
        Job::Rollback { .. } => remote::Delivery::Tarball {
            compression: remote::Compression::None,
        },
    };
    let results = join_all(ids.iter().map(|&i| {
        let h = &hosts[i];
        let conn = h.conn.clone();
        let host = h.host.clone();
        let plan = plan_for(h, ctx, &delivery);
        let steps = verify_steps(&plan, &host);
        async move {
            ctx.phase(&host.name, Phase::Verify);
            let Some(conn) = conn else {
                return (
                    i,
                    Err(ctx.failure(Phase::Verify, None, None, "not connected".into())),
                );
            };
            (
                i,
                run_steps(&conn, &host, &steps, None, Phase::Verify, ctx, stop).await,
            )
        }
    }))
    .await;
    let warn = d
        .stage
        .hosts
        .first()
        .is_some_and(|h| h.config.health_check.on_failure == OnFailure::Warn)
        || matches!(d.job, Job::Rollback { .. });
    let mut events = Vec::new();
    for (i, r) in results {
        match r {
            Ok(_) => events.push(P::Verified(i)),
            Err(f) if warn => {
                ctx.reporter.report(&Event::HostWarning {
                    host: hosts[i].host.name.clone(),
                    failure: f.clone(),
                });
                hosts[i].warnings.push(f);
                events.push(P::Verified(i));
            }
            Err(f) => {
                hosts[i].fail(ctx, f);
                events.push(P::VerifyFailed(i));
            }
        }
    }
    events
}

/// Hold with the canary switched, for `observe`, unless interrupted.
async fn observe(ctx: &Ctx, d: &Deploy) -> Vec<P> {
    ctx.reporter.report(&Event::Observing {
        hosts: canary_names(d),
        for_ms: d.observe.as_millis() as u64,
    });
    tokio::select! {
        _ = tokio::time::sleep(d.observe) => {}
        _ = ctx.cancel.cancelled() => {}
    }
    vec![P::Observed]
}

/// The release a rollback switches to, and its revision; or, per host, why it cannot.
fn rollback_target(
    hosts: &[HostRun],
    to: Option<&str>,
) -> Result<(String, String), Vec<(usize, String)>> {
    let target = match to {
        Some(t) => t.to_owned(),
        None => {
            let mut found: Vec<(usize, Result<String, String>)> = Vec::new();
            for (i, h) in hosts.iter().enumerate() {
                found.push((i, journal_target(&h.preflight)));
            }
            let errors: Vec<(usize, String)> = found
                .iter()
                .filter_map(|(i, r)| r.as_ref().err().map(|e| (*i, e.clone())))
                .collect();
            if !errors.is_empty() {
                return Err(errors);
            }
            let targets: Vec<(usize, String)> = found
                .into_iter()
                .filter_map(|(i, r)| r.ok().map(|t| (i, t)))
                .collect();
            let first = targets.first().map(|(_, t)| t.clone()).unwrap_or_default();
            let disagree: Vec<(usize, String)> = targets
                .iter()
                .filter(|(_, t)| *t != first)
                .map(|(i, t)| {
                    (
                        *i,
                        format!(
                            "this host's previous release is {t}, but {} has {first}; the fleet \
                             does not agree on what to roll back to (hint: name it with --to)",
                            hosts[0].host.name
                        ),
                    )
                })
                .collect();
            if !disagree.is_empty() {
                return Err(disagree);
            }
            first
        }
    };
    if !remote::is_release_id(&target) {
        return Err(vec![(
            0,
            format!("`{target}` is not a release id (they look like 20261122153000)"),
        )]);
    }
    let missing: Vec<(usize, String)> = hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| !h.preflight.has_complete(&target))
        .map(|(i, h)| {
            let why = if h.preflight.releases.contains(&target) {
                "is incomplete (its deploy never finished)"
            } else {
                "does not exist"
            };
            (
                i,
                format!(
                    "releases/{target} {why} on this host; nothing was changed on any host \
                     (hint: `ship releases` lists what every host has)"
                ),
            )
        })
        .collect();
    if !missing.is_empty() {
        return Err(missing);
    }
    if hosts
        .iter()
        .all(|h| h.preflight.current_release() == Some(target.as_str()))
    {
        return Err(vec![(
            0,
            format!("every host is already on {target}; nothing to roll back"),
        )]);
    }
    // One release id on every host, but is it one release? Two deploys to different hosts in
    // the same second can give one id to two revisions.
    let revisions: Vec<(usize, String)> = hosts
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            h.preflight
                .revisions
                .iter()
                .find(|(id, _)| *id == target)
                .map(|(_, r)| (i, r.clone()))
        })
        .collect();
    let revision = revisions
        .first()
        .map(|(_, r)| r.clone())
        .unwrap_or_default();
    let differ: Vec<(usize, String)> = revisions
        .iter()
        .filter(|(_, r)| *r != revision)
        .map(|(i, r)| {
            (
                *i,
                format!(
                    "releases/{target} here is revision {r}, but on {} it is {revision}: the \
                     fleet does not agree on what {target} is, and nothing was changed on any \
                     host (hint: deploy the revision you want instead)",
                    hosts[revisions[0].0].host.name
                ),
            )
        })
        .collect();
    if !differ.is_empty() {
        return Err(differ);
    }
    Ok((target, revision))
}

/// From a host's journal: the release that was current before the deploy that made the
/// current release current, skipping releases marked bad.
fn journal_target(pf: &Preflight) -> Result<String, String> {
    let Some(mut cur) = pf.current_release().map(str::to_owned) else {
        return Err("current does not point at a release here; nothing to roll back from".into());
    };
    let entries: Vec<serde_json::Value> = pf
        .history
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for _ in 0..entries.len().max(1) {
        let deployed = entries.iter().rev().find(|e| {
            e["kind"] == "deploy" && e["outcome"] == "deployed" && e["release"] == cur.as_str()
        });
        let Some(e) = deployed else {
            return Err(format!(
                "the journal (.ship/history) does not say what was current before {cur} \
                 (hint: name the release with --to; `ship releases` lists them)"
            ));
        };
        let Some(prev) = e["previous"].as_str().map(str::to_owned) else {
            return Err(format!(
                "{cur} was the first release deployed here; there is nothing before it"
            ));
        };
        if pf.bad.contains(&prev) {
            cur = prev;
            continue;
        }
        return Ok(prev);
    }
    Err("no earlier good release in the journal (hint: name one with --to)".into())
}

/// Rollback's prepare: check the target on every host (under the lock) and stage its link.
async fn stage_target(ids: &[usize], hosts: &mut [HostRun], ctx: &Ctx) -> Vec<P> {
    let mut events: Vec<P> = ids.iter().map(|&i| P::Staging(i)).collect();
    let results = join_all(ids.iter().map(|&i| {
        let h = &hosts[i];
        let conn = h.conn.clone();
        let script = remote::stage_existing(&h.host.config.deploy_to, &ctx.release);
        let name = h.host.name.clone();
        let t = h.host.config.timeouts.step.min(SHORT_COMMAND);
        async move {
            ctx.phase(&name, Phase::Prepare);
            let t0 = Instant::now();
            let r = match conn {
                Some(c) => c.run(&script, None, None, t).await,
                None => Err(TransportError::Other("not connected".into())),
            };
            if matches!(&r, Ok(o) if o.success()) {
                ctx.reporter.report(&Event::Prepared {
                    host: name,
                    elapsed_ms: t0.elapsed().as_millis() as u64,
                });
            }
            (i, r)
        }
    }))
    .await;
    for (i, r) in results {
        match r {
            Ok(o) if o.success() => events.push(P::Prepared(i)),
            Ok(o) => {
                let mut f = command_failure(ctx, Phase::Prepare, Some("stage"), &o);
                if o.status == Some(RELEASE_MISSING) {
                    f.message = o.stdout_text().trim().to_owned();
                }
                hosts[i].fail(ctx, f);
                events.push(P::PrepareFailed(i));
            }
            Err(e) => {
                let f = transport_failure(ctx, Phase::Prepare, Some("stage"), &e);
                hosts[i].fail(ctx, f);
                events.push(P::PrepareFailed(i));
            }
        }
    }
    events
}

/// One line of the host's `.ship/history`.
fn journal_line(h: &HostRun, ctx: &Ctx) -> String {
    serde_json::json!({
        "kind": ctx.kind,
        "release": ctx.release,
        "revision": ctx.revision,
        "outcome": ctx.outcome,
        "previous": h.preflight.current_release(),
        "host": h.host.name,
        "user": ctx.user,
        "controller": ctx.controller,
        "ci_job": ctx.ci_job,
        "started": ctx.started,
        "finished": util::rfc3339(util::unix_now()),
    })
    .to_string()
}

async fn connect(ids: &[usize], hosts: &mut [HostRun], ctx: &Ctx, d: &Deploy) -> Vec<P> {
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let (tools, detail) = match &d.job {
        Job::Deploy(source) => (source.tools.clone(), false),
        Job::Rollback { .. } => (Vec::new(), true),
    };
    let work = ids.iter().map(|&i| {
        let host = hosts[i].host.clone();
        let gate = gate.clone();
        let options = d.connect.clone();
        let tools = tools.clone();
        async move {
            ctx.phase(&host.name, Phase::Connect);
            if host.config.forward_agent
                && tools.contains(&"git")
                && std::env::var_os("SSH_AUTH_SOCK").is_none()
            {
                return (
                    i,
                    None,
                    Err(ctx.failure(
                        Phase::Connect,
                        None,
                        None,
                        "forward_agent is set, but no ssh-agent runs here (SSH_AUTH_SOCK is not \
                         set) (hint: `eval $(ssh-agent)` and `ssh-add` the key the git server \
                         accepts; in CI, load it into an agent first)"
                            .into(),
                    )),
                );
            }
            let conn = {
                let _permit = gate.acquire().await;
                match Connection::open(&host, &options).await {
                    Ok(c) => Arc::new(c),
                    Err(e) => {
                        return (
                            i,
                            None,
                            Err(transport_failure(ctx, Phase::Connect, None, &e)),
                        );
                    }
                }
            };
            // The first command also opens the host's session: like everything at connect, it
            // waits at most the connect timeout (a host lost right after logging in must not
            // hold the deploy for the step timeout).
            let script = remote::preflight(&host.config.deploy_to, &tools, detail);
            let out = match conn
                .run(&script, None, None, host.config.timeouts.connect)
                .await
            {
                Ok(o) if o.success() => o,
                Ok(o) => {
                    return (
                        i,
                        Some(conn),
                        Err(command_failure(ctx, Phase::Connect, Some("preflight"), &o)),
                    );
                }
                Err(TransportError::Timeout { after, .. }) => {
                    let message = format!(
                        "logged in, but the host did not answer its first command within {} \
                         (connect_timeout)",
                        util::human_duration(after)
                    );
                    return (
                        i,
                        Some(conn),
                        Err(ctx.failure(Phase::Connect, Some("preflight"), None, message)),
                    );
                }
                Err(e) => {
                    return (
                        i,
                        Some(conn),
                        Err(transport_failure(
                            ctx,
                            Phase::Connect,
                            Some("preflight"),
                            &e,
                        )),
                    );
                }
            };
            let pf = Preflight::parse(&out.stdout_text());
            if let Some(msg) = preflight_problem(&host, &pf, &tools) {
                return (
                    i,
                    Some(conn),
                    Err(ctx.failure(Phase::Connect, Some("preflight"), None, msg)),
                );
            }
            // A lock held by another run stops everything at once (exit 4), before the lock
            // phase, unless we were asked to wait for it.
            match &pf.lock {
                Some(raw) if d.lock_wait.is_zero() => {
                    let f = held_lock_failure(ctx, &host, raw, Duration::ZERO);
                    (i, Some(conn), Err(f))
                }
                _ => (i, Some(conn), Ok(pf)),
            }
        }
    });
    let results = join_all(work).await;
    let mut events = Vec::new();
    for (i, conn, result) in results {
        hosts[i].conn = conn;
        match result {
            Ok(pf) => {
                hosts[i].preflight = pf;
                events.push(P::Connected(i));
            }
            Err(f) => {
                // The one failure at connect that belongs to the lock: another run holds it.
                hosts[i].locked_by_other = f.phase == Phase::Lock;
                hosts[i].fail(ctx, f);
                events.push(P::ConnectFailed(i));
            }
        }
    }
    events
}

/// Why a host that answered cannot take this deploy, if it cannot.
fn preflight_problem(host: &Host, pf: &Preflight, tools: &[&str]) -> Option<String> {
    let d = &host.config.deploy_to;
    if !pf.writable {
        return Some(format!(
            "{d} is not writable by `{}` (hint: create it and chown it to the deploy user)",
            host.config.user
        ));
    }
    if pf.current_not_a_link {
        return Some(format!(
            "{d}/current exists but is not a symlink (a directory set up by hand?); ship will not \
             touch it (hint: move it aside, e.g. into releases/, and link current to it)"
        ));
    }
    let missing: Vec<&str> = tools
        .iter()
        .filter(|t| !pf.tools.iter().any(|x| x == *t))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "missing on the host: {} (hint: install it, e.g. `apt-get install {}`)",
            missing.join(", "),
            missing.join(" ")
        ));
    }
    None
}

/// The lock's owner record for this run.
fn owner_record(ctx: &Ctx) -> String {
    serde_json::to_string(&LockOwner {
        token: ctx.token.clone(),
        kind: ctx.kind.into(),
        user: ctx.user.clone(),
        controller: ctx.controller.clone(),
        pid: std::process::id(),
        release: ctx.release.clone(),
        started: ctx.started.clone(),
        ci_job: ctx.ci_job.clone(),
    })
    .unwrap_or_default()
}

/// What happened when one host's lock was tried.
enum LockTry {
    /// Ours now; the host's releases as seen under the lock.
    Taken(Vec<String>),
    /// Another run holds it (its owner record, raw).
    Held(String),
    /// Not taken: the command said so.
    Failed(Failure),
    /// Unknown: the host was lost while it took the lock (it may hold ours now).
    Lost(Failure),
}

async fn try_lock(
    ids: &[usize],
    hosts: &[HostRun],
    ctx: &Ctx,
    owner: &str,
) -> Vec<(usize, LockTry)> {
    join_all(ids.iter().map(|&i| {
        let h = &hosts[i];
        let conn = h.conn.clone();
        let script = remote::lock(&h.host.config.deploy_to, owner);
        let name = h.host.name.clone();
        let t = h.host.config.timeouts.step.min(SHORT_COMMAND);
        async move {
            ctx.phase(&name, Phase::Lock);
            let Some(conn) = conn else {
                return (
                    i,
                    LockTry::Failed(ctx.failure(Phase::Lock, None, None, "not connected".into())),
                );
            };
            let r = match conn.run(&script, None, None, t).await {
                Ok(o) if o.success() => LockTry::Taken(Preflight::parse(&o.stdout_text()).releases),
                Ok(o) if o.status == Some(LOCK_HELD) => {
                    let text = o.stdout_text();
                    LockTry::Held(
                        text.trim()
                            .trim_start_matches("lock held:")
                            .trim()
                            .to_owned(),
                    )
                }
                Ok(o) => LockTry::Failed(command_failure(ctx, Phase::Lock, None, &o)),
                Err(e) => LockTry::Lost(transport_failure(ctx, Phase::Lock, None, &e)),
            };
            (i, r)
        }
    }))
    .await
}

/// Lock every host. Hosts are locked in a fixed order — the first host by name alone, then
/// the rest at once — so of two runs started together exactly one gets past the first host and
/// the other stops there, having changed nothing. A held lock stops the run at once, or, with
/// `--lock-wait`, releases whatever this run took and tries again until the wait is over.
async fn lock(ids: &[usize], hosts: &mut [HostRun], ctx: &Ctx, d: &Deploy) -> Vec<P> {
    let owner = owner_record(ctx);
    let mut order = ids.to_vec();
    order.sort_by(|a, b| hosts[*a].host.name.cmp(&hosts[*b].host.name));
    let deadline = Instant::now() + d.lock_wait;
    let mut announced = false;
    loop {
        let Some((first, rest)) = order.split_first() else {
            return Vec::new();
        };
        let mut results = try_lock(&[*first], hosts, ctx, &owner).await;
        if matches!(results.first(), Some((_, LockTry::Taken(_)))) {
            results.extend(try_lock(rest, hosts, ctx, &owner).await);
        }
        let held = results.iter().find_map(|(i, r)| match r {
            LockTry::Held(raw) => Some((*i, raw.clone())),
            _ => None,
        });
        let other_failure = results
            .iter()
            .any(|(_, r)| matches!(r, LockTry::Failed(_) | LockTry::Lost(_)));
        let remaining = deadline.saturating_duration_since(Instant::now());
        if let Some((i, raw)) =
            held.filter(|_| !other_failure && !remaining.is_zero() && !ctx.cancel.is_cancelled())
        {
            // Give back what we took, so the holder (or a run waiting like us) can finish.
            let taken: Vec<usize> = results
                .iter()
                .filter(|(_, r)| matches!(r, LockTry::Taken(_)))
                .map(|(i, _)| *i)
                .collect();
            simple(&taken, hosts, ctx, Phase::Lock, |h, c| {
                remote::unlock(&h.host.config.deploy_to, &c.token)
            })
            .await;
            if !announced {
                announced = true;
                let lock = HeldLock::read(&raw, &ctx.controller);
                ctx.reporter.report(&Event::Waiting {
                    host: hosts[i].host.name.clone(),
                    message: format!(
                        "locked by {}; waiting up to {} for it (--lock-wait)",
                        lock.who(),
                        util::human_duration(remaining)
                    ),
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(remaining.min(LOCK_POLL)) => continue,
                _ = ctx.cancel.cancelled() => {}
            }
        }
        let mut events = Vec::new();
        for (i, r) in results {
            match r {
                LockTry::Taken(releases) => {
                    hosts[i].preflight.releases = releases;
                    events.push(P::Locked(i));
                }
                LockTry::Held(raw) => {
                    let f = held_lock_failure(ctx, &hosts[i].host, &raw, d.lock_wait);
                    hosts[i].locked_by_other = true;
                    hosts[i].fail(ctx, f);
                    events.push(P::LockFailed(i));
                }
                LockTry::Failed(f) => {
                    hosts[i].fail(ctx, f);
                    events.push(P::LockFailed(i));
                }
                // It may hold our lock: counted as locked, so that the unlock tries it (a
                // token-checked unlock is safe either way) and, if the host stays lost, the
                // summary says its lock may be left.
                LockTry::Lost(f) => {
                    hosts[i].fail(ctx, f);
                    events.push(P::Locked(i));
                    events.push(P::LockFailed(i));
                }
            }
        }
        return events;
    }
}

/// The failure for a lock held by another run: who, since when, alive or not, what to do.
fn held_lock_failure(ctx: &Ctx, host: &Host, raw: &str, waited: Duration) -> Failure {
    let lock = HeldLock::read(raw, &ctx.controller);
    let mut msg = format!("{} is locked by {}", host.config.deploy_to, lock.who());
    if let Some(r) = lock.staged_release() {
        msg.push_str(&format!(" (it may have left releases/{r} unfinished)"));
    }
    if !waited.is_zero() {
        msg.push_str(&format!(
            "; still held after waiting {}",
            util::human_duration(waited)
        ));
    }
    msg.push_str(&format!("\n  {}", lock.hint(&ctx.stage)));
    ctx.failure(Phase::Lock, None, None, msg)
}

/// Prepare the release on every host. A host whose steps all succeeded arms its switch at once
/// (perl's start-up is paid while other hosts still build), but for `run_once`: the run-once
/// steps need its session first.
async fn prepare(
    ids: &[usize],
    hosts: &mut [HostRun],
    ctx: &Ctx,
    source: &Prepared,
    run_once: Option<usize>,
) -> Vec<P> {
    // Recorded before any work starts: an interruption mid-prepare must still discard.
    let mut events: Vec<P> = ids.iter().map(|&i| P::Staging(i)).collect();
    // The first failure closes the barrier: the other hosts' steps are stopped at once rather
    // than left to finish a build nobody will switch to. An interruption does the same.
    let stop = ctx.cancel.child_token();
    // Hosts armed early keep answering clock questions until every host is prepared (see
    // `keep_time`); this is cancelled when the last one is.
    let all_prepared = CancellationToken::new();
    let unprepared = std::sync::atomic::AtomicUsize::new(ids.len());
    let few = Semaphore::new(CLOCK_CONCURRENCY);
    let together = ids.len() > 1;
    let results = join_all(ids.iter().map(|&i| {
        let h = &hosts[i];
        let conn = h.conn.clone();
        let host = h.host.clone();
        let steps = remote::prepare(&remote::Plan {
            inline_payload: Some(&source.payload),
            ..plan_for(h, ctx, &source.delivery)
        });
        let stop = &stop;
        let (all_prepared, unprepared, few) = (&all_prepared, &unprepared, &few);
        async move {
            ctx.phase(&host.name, Phase::Prepare);
            let t0 = Instant::now();
            // However this host's prepare ends, it is one fewer to wait for.
            let done = Countdown(unprepared, all_prepared);
            let Some(conn) = conn else {
                return (
                    i,
                    t0.elapsed(),
                    Err(ctx.failure(Phase::Prepare, None, None, "not connected".into())),
                );
            };
            let payload = Some(source.payload.as_slice());
            let mut r = run_steps(&conn, &host, &steps, payload, Phase::Prepare, ctx, stop)
                .await
                .map(|done| (done, None));
            if matches!(r, Ok((true, _))) && run_once != Some(i) && !stop.is_cancelled() {
                r = match arm(h, ctx).await {
                    Ok(a) => Ok((true, Some(a))),
                    Err(e) => Err(transport_failure(
                        ctx,
                        Phase::Prepare,
                        Some("arm switch"),
                        &e,
                    )),
                };
            }
            match &r {
                Ok((true, _)) => ctx.reporter.report(&Event::Prepared {
                    host: host.name.clone(),
                    elapsed_ms: t0.elapsed().as_millis() as u64,
                }),
                Ok((false, _)) => {}
                Err(_) => stop.cancel(),
            }
            let took = t0.elapsed();
            drop(done);
            if let Ok((true, Some(a))) = &mut r {
                if together && a.scheduled {
                    let waiting = async {
                        tokio::select! {
                            _ = all_prepared.cancelled() => {}
                            _ = stop.cancelled() => {}
                        }
                    };
                    if let Err(e) = keep_time(a, few, host.config.timeouts.switch, waiting).await {
                        r = Err(transport_failure(
                            ctx,
                            Phase::Prepare,
                            Some("arm switch"),
                            &e,
                        ));
                        stop.cancel();
                    }
                }
            }
            (i, took, r)
        }
    }))
    .await;
    for (i, took, r) in results {
        hosts[i].prepare_time = Some(took);
        match r {
            Ok((true, armed)) => {
                hosts[i].armed = armed;
                events.push(P::Prepared(i));
            }
            Ok((false, _)) => events.push(P::PrepareFailed(i)),
            Err(f) => {
                hosts[i].fail(ctx, f);
                events.push(P::PrepareFailed(i));
            }
        }
    }
    events
}

/// The host's clock after its rename: the first line of the switch's output that is neither the
/// ready line nor a clock answer, from `date +%s%N` (BusyBox prints a literal `%N`: seconds
/// precision then).
fn switch_stamp(stdout: &str) -> Option<u128> {
    let line = stdout
        .lines()
        .map(str::trim)
        .find(|l| !l.starts_with(remote::SWITCH_READY) && !l.starts_with("t "))?;
    if let Ok(ns) = line.parse::<u128>() {
        return Some(ns);
    }
    let secs = line.strip_suffix("%N").or_else(|| line.strip_suffix('N'))?;
    secs.parse::<u128>().ok().map(|s| s * 1_000_000_000)
}

/// A host whose switch command waits for its word.
struct Armed {
    p: Process,
    /// Its stdout lines as they arrive, each with the controller's clock then (µs).
    lines: tokio::sync::mpsc::UnboundedReceiver<(String, i64)>,
    /// It can be given an instant (`at`), not only `go`.
    scheduled: bool,
    /// Its answers to our clock questions.
    samples: Vec<clock::Sample>,
}

impl Armed {
    /// Its clock against ours, from its answers (none: it is not scheduled).
    fn clock(&self) -> Option<clock::Offset> {
        clock::estimate(&self.samples)
    }

    /// Tell the host not to switch (end of input), and wait up to `t` for its command to end.
    async fn disarm(mut self, t: Duration) {
        let _ = self.p.close_stdin().await;
        let _ = tokio::time::timeout(t, self.p.wait()).await;
    }

    /// The next stdout line that satisfies `want`, with when it arrived.
    async fn line(&mut self, want: impl Fn(&str) -> bool) -> Result<(String, i64), TransportError> {
        while let Some((line, at)) = self.lines.recv().await {
            if want(&line) {
                return Ok((line, at));
            }
        }
        Err(TransportError::Lost(
            "the switch command ended before it answered".into(),
        ))
    }

    /// Ask the host for its clock `n` times (holding a permit of `turn`, if given, meanwhile),
    /// adding to its answers; all of it given up after `t`.
    async fn ask_clock_times(
        &mut self,
        n: usize,
        turn: Option<&Semaphore>,
        t: Duration,
    ) -> Result<(), TransportError> {
        let ask = async {
            let _permit = match turn {
                Some(s) => s.acquire().await.ok(),
                None => None,
            };
            for _ in 0..n {
                let sample = self.ask_clock().await?;
                self.samples.push(sample);
            }
            Ok(())
        };
        within(t, "reading the host's clock", ask).await
    }

    /// Give the word (`go`, or `at …`) and end the input.
    async fn tell(&mut self, word: &str) -> Result<(), TransportError> {
        self.p.write(format!("{word}\n").as_bytes()).await?;
        self.p.close_stdin().await
    }

    /// Forget answers older than [`CLOCK_FRESH`] at `now` (µs).
    fn keep_fresh(&mut self, now: i64) {
        let oldest = now - CLOCK_FRESH.as_micros() as i64;
        self.samples.retain(|s| s.received >= oldest);
    }

    /// Ask the host for its clock once.
    async fn ask_clock(&mut self) -> Result<clock::Sample, TransportError> {
        let sent = clock::now_us();
        self.p.write(b"t\n").await?;
        let (line, received) = self.line(|l| l.starts_with("t ")).await?;
        let host = line[2..].trim().parse::<i64>().map_err(|_| {
            TransportError::Other(format!(
                "the switch command answered {line:?} for its clock"
            ))
        })?;
        Ok(clock::Sample {
            sent,
            host,
            received,
        })
    }
}

/// Ask every armed host that can be scheduled for its clock as many times as `n` says for it
/// (holding a permit of `turn`, if given, meanwhile), adding to its answers so far.
/// Nothing is asked once any host failed: the switch will not happen.
async fn ask_clocks(
    ids: &[usize],
    hosts: &[HostRun],
    armed: Vec<Result<Armed, TransportError>>,
    turn: Option<&Semaphore>,
    n: impl Fn(&Armed) -> usize,
) -> Vec<Result<Armed, TransportError>> {
    // One host has no one to switch together with.
    if ids.len() < 2 || armed.iter().any(|a| a.is_err()) {
        return armed;
    }
    join_all(ids.iter().zip(armed).map(|(&i, a)| {
        let t = hosts[i].host.config.timeouts.switch;
        let n = &n;
        async move {
            let mut a = a?;
            let n = n(&a);
            if !a.scheduled || n == 0 {
                return Ok(a);
            }
            a.ask_clock_times(n, turn, t).await?;
            Ok(a)
        }
    }))
    .await
}

/// Start the switch command on the host and wait until it is ready for its word.
async fn arm(h: &HostRun, ctx: &Ctx) -> Result<Armed, TransportError> {
    let conn = h
        .conn
        .clone()
        .ok_or_else(|| TransportError::Other("not connected".into()))?;
    let script = remote::armed_switch(&h.host.config.deploy_to, &ctx.release);
    let t = h.host.config.timeouts.switch;
    let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
    let on_line: OnLine = Arc::new(move |stream, line: &str| {
        if stream == Stream::Stdout {
            let _ = tx.send((line.trim().to_owned(), clock::now_us()));
        }
    });
    within(t, "arming the switch", async {
        let p = conn.spawn(&script, Some(on_line)).await?;
        let mut a = Armed {
            p,
            lines,
            scheduled: false,
            samples: Vec::new(),
        };
        let (ready, _) = a.line(|l| l.starts_with(remote::SWITCH_READY)).await?;
        a.scheduled = ready == remote::SWITCH_READY_AT;
        Ok(a)
    })
    .await
}

/// Counts a host's prepare as ended when dropped; the last one cancels the token.
struct Countdown<'a>(&'a std::sync::atomic::AtomicUsize, &'a CancellationToken);

impl Drop for Countdown<'_> {
    fn drop(&mut self) {
        if self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            self.1.cancel();
        }
    }
}

/// While a host that is armed early waits for the rest of the fleet, keep its clock measured:
/// [`CLOCK_QUESTIONS`] questions at once (holding a permit of `few`), then one every
/// [`CLOCK_PERIOD`] until `waiting` ends. So when the switch comes, the host has fresh answers
/// and it need not be asked again a few hosts at a time (a round trip per question that grows
/// with the fleet), but only once with every host at once.
async fn keep_time(
    a: &mut Armed,
    few: &Semaphore,
    t: Duration,
    waiting: impl std::future::Future<Output = ()>,
) -> Result<(), TransportError> {
    a.ask_clock_times(CLOCK_QUESTIONS, Some(few), t).await?;
    tokio::pin!(waiting);
    loop {
        tokio::select! {
            _ = &mut waiting => return Ok(()),
            _ = tokio::time::sleep(CLOCK_PERIOD) => {
                a.keep_fresh(clock::now_us());
                a.ask_clock_times(1, None, t).await?;
            }
        }
    }
}

/// Tell armed hosts among `ids` not to switch (end of input), and wait for their switch
/// commands to end: the switch is not going to happen there, and their sessions are needed.
async fn disarm(ids: &[usize], hosts: &mut [HostRun]) {
    let armed: Vec<(Armed, Duration)> = ids
        .iter()
        .filter_map(|&i| {
            let t = hosts[i].host.config.timeouts.switch;
            hosts[i].armed.take().map(|a| (a, t))
        })
        .collect();
    join_all(armed.into_iter().map(|(a, t)| a.disarm(t))).await;
}

/// Clock questions per host before a scheduled switch, asked of a few hosts at a time (short
/// round trips, so small error bounds)...
const CLOCK_QUESTIONS: usize = 3;
const CLOCK_CONCURRENCY: usize = 8;
/// How often a host armed early is asked for its clock while it waits for the rest.
const CLOCK_PERIOD: Duration = Duration::from_millis(500);
/// Answers older than this are not used for the switch: clocks drift apart (by a few µs per
/// second between NTP-disciplined hosts, by up to 0.5 ms per second while NTP slews one).
const CLOCK_FRESH: Duration = Duration::from_secs(2);
/// After its rename, a scheduled host waits this long per scheduled host before it reports, at
/// most `SETTLE_MOST` (see [`remote::armed_switch`]).
const SETTLE_PER_HOST: Duration = Duration::from_micros(100);
const SETTLE_MOST: Duration = Duration::from_millis(20);
/// The switch is scheduled at least this far ahead, and at most this far.
const LEAD_FLOOR: Duration = Duration::from_millis(3);
const LEAD_CEILING: Duration = Duration::from_millis(250);

async fn switch(ids: &[usize], hosts: &mut [HostRun], ctx: &Ctx) -> Vec<P> {
    // 1. Arm: start the switch command on every host not armed at the end of its prepare, and
    //    wait until each one says it is waiting for our word. Until we fire, nothing has
    //    changed anywhere.
    let early: Vec<Option<Armed>> = ids.iter().map(|&i| hosts[i].armed.take()).collect();
    let armed = join_all(ids.iter().zip(early).map(|(&i, early)| {
        let h = &hosts[i];
        async move {
            ctx.phase(&h.host.name, Phase::Switch);
            match early {
                Some(a) => Ok(a),
                None => arm(h, ctx).await,
            }
        }
    }))
    .await;
    // 2. Measure each host's clock against ours, once every host is armed: a few hosts at a
    //    time, for short round trips and so small error bounds (hosts armed early were asked
    //    while they waited: only those without enough fresh answers are asked now); then once
    //    more every host at once, the way the words will go out, for how long they take to
    //    arrive.
    let now = clock::now_us();
    let armed: Vec<_> = armed
        .into_iter()
        .map(|a| {
            a.map(|mut a| {
                a.keep_fresh(now);
                a
            })
        })
        .collect();
    let few = Semaphore::new(CLOCK_CONCURRENCY);
    let armed = ask_clocks(ids, hosts, armed, Some(&few), |a| {
        CLOCK_QUESTIONS.saturating_sub(a.samples.len())
    })
    .await;
    let armed = ask_clocks(ids, hosts, armed, None, |_| 1).await;
    let mut events = Vec::new();
    if armed.iter().any(|a| a.is_err()) {
        // Some host cannot be armed: tell every armed host not to switch (EOF). Nothing changes.
        for (&i, a) in ids.iter().zip(armed) {
            match a {
                Ok(a) => a.disarm(hosts[i].host.config.timeouts.switch).await,
                Err(e) => {
                    let f = transport_failure(ctx, Phase::Switch, None, &e);
                    hosts[i].fail(ctx, f);
                }
            }
            events.push(P::SwitchRefused(i));
        }
        return events;
    }
    let mut armed: Vec<Armed> = armed.into_iter().flatten().collect();
    // 3. Fire: one short write per host, back to back, before waiting for any answer. A host
    //    whose clock we know is given an instant a little ahead (time for every word to
    //    arrive), on its own clock: all of them rename at that instant. The others get `go`
    //    at that instant.
    let clocks: Vec<Option<clock::Offset>> = armed.iter().map(Armed::clock).collect();
    // The round trip of each scheduled host's last question, asked of every host at once.
    let trips: Vec<i64> = armed
        .iter()
        .zip(&clocks)
        .filter(|(_, c)| c.is_some())
        .filter_map(|(a, _)| a.samples.last().map(clock::Sample::round_trip))
        .collect();
    let at = if trips.is_empty() {
        clock::now_us()
    } else {
        clock::now_us() + clock::lead(&trips, LEAD_FLOOR, LEAD_CEILING).as_micros() as i64
    };
    let settle =
        (SETTLE_PER_HOST.as_micros() as usize * trips.len()).min(SETTLE_MOST.as_micros() as usize);
    let mut fire: Vec<Result<(), TransportError>> =
        join_all(armed.iter_mut().zip(&clocks).map(|(a, c)| async move {
            match c {
                Some(c) => a.tell(&format!("at {} {settle}", c.to_host(at))).await,
                None => Ok(()),
            }
        }))
        .await;
    if clocks.iter().any(Option::is_none) {
        let wait = at - clock::now_us();
        if wait > 0 {
            tokio::time::sleep(Duration::from_micros(wait as u64)).await;
        }
        let go = join_all(armed.iter_mut().zip(&clocks).map(|(a, c)| async move {
            match c {
                None => a.tell("go").await,
                Some(_) => Ok(()),
            }
        }))
        .await;
        for (f, g) in fire.iter_mut().zip(go) {
            if f.is_ok() {
                *f = g;
            }
        }
    }
    // 4. Collect the confirmations.
    let results = join_all(ids.iter().zip(armed).zip(fire).zip(clocks).map(
        |(((&i, mut a), fired), offset)| {
            let t = hosts[i].host.config.timeouts.switch;
            async move {
                let r = match fired {
                    Err(e) => Err(e),
                    Ok(()) => within(t, "waiting for the switch", a.p.wait()).await,
                };
                (i, offset, r)
            }
        },
    ))
    .await;
    for (i, offset, r) in results {
        let name = hosts[i].host.name.clone();
        hosts[i].clock = offset;
        match r {
            Ok(o) if o.success() => {
                let at = switch_stamp(&o.stdout_text());
                hosts[i].switched_at = at;
                ctx.reporter.report(&Event::Switched {
                    host: name,
                    at_unix_ns: at,
                });
                events.push(P::Switched(i));
            }
            Ok(o) if matches!(o.status, Some(SWITCH_CANCELLED | SWITCH_RENAME_FAILED)) => {
                // The rename failed or was cancelled: `current` is unchanged there.
                let mut f = command_failure(ctx, Phase::Switch, None, &o);
                f.message = if o.status == Some(SWITCH_CANCELLED) {
                    "the switch was cancelled before it ran; current is unchanged".into()
                } else {
                    "the rename failed; current is unchanged".into()
                };
                hosts[i].fail(ctx, f);
                events.push(P::SwitchRefused(i));
            }
            Ok(o) => {
                // Killed mid-way (the host crashed?): the rename may or may not have run.
                let mut f = command_failure(ctx, Phase::Switch, None, &o);
                f.message = format!(
                    "the switch command {}; whether current changed is unknown",
                    f.message
                );
                hosts[i].fail(ctx, f);
                events.push(P::SwitchUnknown(i));
            }
            Err(e) => {
                let f = transport_failure(ctx, Phase::Switch, None, &e);
                hosts[i].fail(ctx, f);
                events.push(P::SwitchUnknown(i));
            }
        }
    }
    events
}

async fn revert(ids: &[usize], hosts: &mut [HostRun], ctx: &Ctx) -> Vec<P> {
    let results = join_all(ids.iter().map(|&i| {
        let h = &hosts[i];
        let conn = h.conn.clone();
        let script = remote::revert(
            &h.host.config.deploy_to,
            &ctx.release,
            h.preflight.current.as_deref(),
        );
        let t = h.host.config.timeouts.switch;
        let name = h.host.name.clone();
        async move {
            ctx.phase(&name, Phase::Revert);
            let r = match conn {
                Some(c) => c.run(&script, None, None, t).await,
                None => Err(TransportError::Other("not connected".into())),
            };
            (i, script, r)
        }
    }))
    .await;
    let mut events = Vec::new();
    for (i, script, r) in results {
        match r {
            Ok(o) if o.success() => events.push(P::Reverted(i)),
            other => {
                let f = match other {
                    Ok(o) => command_failure(ctx, Phase::Revert, None, &o),
                    Err(e) => transport_failure(ctx, Phase::Revert, None, &e),
                };
                hosts[i].remedy = Some(script);
                hosts[i].fail(ctx, f);
                events.push(P::RevertFailed(i));
            }
        }
    }
    events
}

/// Run one command per host; failures are reported but do not change the protocol's course
/// (discard, cleanup and unlock are best-effort and idempotent).
async fn simple(
    ids: &[usize],
    hosts: &mut [HostRun],
    ctx: &Ctx,
    phase: Phase,
    script: impl Fn(&HostRun, &Ctx) -> String,
) {
    // A host with nothing to run has nothing to report.
    for (i, r) in run_short(ids, hosts, ctx, phase, script).await {
        let f = match r {
            None => continue,
            Some(Ok(o)) if o.success() => continue,
            Some(Ok(o)) => command_failure(ctx, phase, None, &o),
            Some(Err(e)) => transport_failure(ctx, phase, None, &e),
        };
        if matches!(phase, Phase::Unlock | Phase::Discard) {
            hosts[i].left_behind = true;
        }
        hosts[i].fail(ctx, f);
    }
}

/// Run `script`'s short command on each host at once, in `phase`; `None` for a host whose
/// script is empty (nothing to run there).
async fn run_short(
    ids: &[usize],
    hosts: &[HostRun],
    ctx: &Ctx,
    phase: Phase,
    script: impl Fn(&HostRun, &Ctx) -> String,
) -> Vec<(usize, Option<Result<Output, TransportError>>)> {
    join_all(ids.iter().map(|&i| {
        let h = &hosts[i];
        let conn = h.conn.clone();
        let s = script(h, ctx);
        let t = h.host.config.timeouts.step.min(SHORT_COMMAND);
        let name = h.host.name.clone();
        async move {
            if s.is_empty() {
                return (i, None);
            }
            ctx.phase(&name, phase);
            let r = match conn {
                Some(c) => c.run(&s, None, None, t).await,
                None => Err(TransportError::Other("not connected".into())),
            };
            (i, Some(r))
        }
    }))
    .await
}

/// One command a run would send to a host.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlannedCommand {
    pub phase: Phase,
    pub name: String,
    pub script: String,
}

/// Everything a deploy would run on one host, in order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostPlan {
    pub host: String,
    /// Why the host could not be inspected (its commands are then not known).
    pub error: Option<String>,
    pub commands: Vec<PlannedCommand>,
}

/// What `ship deploy --dry-run` prints: the commands of a deploy, rendered by the same code a
/// real run uses, from the hosts' actual state (read, never changed).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunPlan {
    pub stage: String,
    pub release: String,
    pub revision: String,
    pub canary: Vec<String>,
    pub run_once_host: Option<String>,
    pub hosts: Vec<HostPlan>,
}

/// Inspect the hosts (read-only) and render every command a deploy would send to each.
pub async fn plan(d: Deploy) -> RunPlan {
    let Job::Deploy(source) = &d.job else {
        return RunPlan {
            stage: d.stage.name.clone(),
            release: String::new(),
            revision: String::new(),
            canary: Vec::new(),
            run_once_host: None,
            hosts: Vec::new(),
        };
    };
    let started_unix = util::unix_now();
    let mut hosts: Vec<HostRun> = d.stage.hosts.iter().map(HostRun::new).collect();
    let mut ctx = Ctx::new(
        &d,
        Arc::new(crate::report::Recorder::default()),
        CancellationToken::new(),
        started_unix,
    );
    let all: Vec<usize> = (0..hosts.len()).collect();
    connect(&all, &mut hosts, &ctx, &d).await;
    ctx.release = free_release_id(started_unix, &hosts);
    ctx.token = format!("ship-{}-{}", ctx.release, std::process::id());
    ctx.outcome = Some(Outcome::Deployed);
    let options = protocol_options(&d);
    let owner = owner_record(&ctx);
    let mut out = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        if let Some(f) = &h.failure {
            out.push(HostPlan {
                host: h.host.name.clone(),
                error: Some(f.message.clone()),
                commands: Vec::new(),
            });
            continue;
        }
        let d_to = &h.host.config.deploy_to;
        let plan = remote::Plan {
            inline_payload: Some(&source.payload),
            ..plan_for(h, &ctx, &source.delivery)
        };
        // Secrets are masked here as in every output.
        let cmd = |phase, name: &str, script: String| PlannedCommand {
            phase,
            name: ctx.masker.mask(name),
            script: ctx.masker.mask(&script),
        };
        let mut commands = vec![cmd(Phase::Lock, "lock", remote::lock(d_to, &owner))];
        for step in remote::prepare(&plan) {
            commands.push(cmd(Phase::Prepare, &step.name, step.script));
        }
        if options.run_once == Some(i) {
            for step in run_once_steps(&plan, &h.host) {
                commands.push(cmd(Phase::RunOnce, &step.name, step.script));
            }
        }
        commands.push(cmd(
            Phase::Switch,
            "switch",
            remote::armed_switch(d_to, &ctx.release),
        ));
        for step in verify_steps(&plan, &h.host) {
            commands.push(cmd(Phase::Verify, &step.name, step.script));
        }
        commands.push(cmd(
            Phase::Cleanup,
            "journal, old releases and unlock",
            finish_script(h, &ctx),
        ));
        out.push(HostPlan {
            host: h.host.name.clone(),
            error: None,
            commands,
        });
    }
    for h in &hosts {
        if let Some(c) = &h.conn {
            c.close().await;
        }
    }
    RunPlan {
        stage: d.stage.name.clone(),
        release: ctx.release.clone(),
        revision: ctx.revision.clone(),
        canary: canary_names(&d),
        run_once_host: options
            .run_once
            .and_then(|i| d.stage.hosts.get(i).map(|h| h.name.clone())),
        hosts: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_id_moves_forward_only_when_taken() {
        let t = 1_795_319_788; // 20261122035628
        let a = vec!["20261122035628".to_owned()];
        let b = vec!["20261122035629".to_owned()];
        assert_eq!(choose_release_id(t + 100, &[&a]), "20261122035808");
        assert_eq!(choose_release_id(t, &[&a]), "20261122035629");
        assert_eq!(choose_release_id(t, &[&a, &b]), "20261122035630");
    }

    #[test]
    fn stamps_from_gnu_and_busybox_date() {
        assert_eq!(
            switch_stamp("ship-switch-ready\n1795319788123456789\n"),
            Some(1_795_319_788_123_456_789)
        );
        assert_eq!(
            switch_stamp("ship-switch-ready\n1795319788%N\n"),
            Some(1_795_319_788_000_000_000)
        );
        assert_eq!(switch_stamp(""), None);
        assert_eq!(switch_stamp("ship-switch-ready\n"), None);
    }
}
