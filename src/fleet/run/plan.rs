//! The dry run: the real run, recorded. [`plan`] drives the same phases as [`deploy`] through
//! an interposer that lets the commands that only read go to the hosts and answers the ones
//! that would change them as a host where they succeed would: what it prints is what a run
//! sends, by construction, from the hosts' real state.

use std::collections::HashMap;
use std::sync::Mutex;

use super::*;
use crate::transport::interpose::{Dialog, Recording, Sent, Turn};
use crate::transport::{Answer, Interposer};

/// One command a run would send to a host.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlannedCommand {
    /// The phase it belongs to (`connect`, `lock`, `prepare`, `run_once`, `switch`…).
    pub phase: String,
    pub name: String,
    /// Whether it changes the host (a dry run sent only the others).
    pub changes: bool,
    pub script: String,
    /// Bytes that follow the script on its stdin (an artifact streamed to the host).
    pub stdin_bytes: Option<usize>,
}

/// Everything a run would send to one host, in order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostPlan {
    pub host: String,
    /// Why the run would stop at this host (its later commands are then not known).
    pub error: Option<String>,
    pub commands: Vec<PlannedCommand>,
}

/// What `ship plan` (and `deploy --dry-run`, `rollback --dry-run`) prints: every command of a
/// run, rendered by the run itself from the hosts' actual state (read, never changed).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunPlan {
    /// `deploy` or `rollback`.
    pub kind: String,
    pub stage: String,
    pub release: String,
    pub revision: String,
    pub canary: Vec<String>,
    /// How long the canary is held before the rest switch.
    pub observe_ms: u64,
    pub run_once_host: Option<String>,
    pub hosts: Vec<HostPlan>,
}

/// Rehearse `d` on its hosts: connect and read them for real, answer everything that would
/// change them, and return every command the run sent, per host, secrets masked.
pub async fn plan(d: Deploy) -> RunPlan {
    let (recording, summary, d) = rehearse(d).await;
    let masker = masker_for(&d.stage);
    let sent = recording.commands();
    let hosts = d
        .stage
        .hosts
        .iter()
        .map(|host| {
            let failure = summary
                .hosts
                .iter()
                .find(|s| s.host == host.name)
                .and_then(|s| s.failure.as_ref());
            HostPlan {
                host: host.name.clone(),
                error: failure.map(|f| match &f.step {
                    Some(step) => format!("{} ({step}): {}", f.phase, f.message),
                    None => format!("{}: {}", f.phase, f.message),
                }),
                commands: sent
                    .iter()
                    .filter(|c| c.host == host.name)
                    .map(|c| PlannedCommand {
                        phase: c.phase.replace(' ', "_"),
                        name: masker.mask(&c.name),
                        changes: c.changes,
                        script: masker.mask(&c.script),
                        stdin_bytes: c.stdin_bytes,
                    })
                    .collect(),
            }
        })
        .collect();
    RunPlan {
        kind: summary.kind.clone(),
        stage: summary.stage.clone(),
        release: summary.release.clone(),
        revision: summary.revision.clone(),
        canary: summary.canary.clone(),
        observe_ms: d.observe.as_millis() as u64,
        run_once_host: protocol_options(&d)
            .run_once
            .and_then(|i| d.stage.hosts.get(i).map(|h| h.name.clone())),
        hosts,
    }
}

/// Run `d` through the rehearsal: what it sent (unmasked), its summary, and `d` back.
async fn rehearse(mut d: Deploy) -> (Arc<Recording>, Summary, Deploy) {
    let recording = Arc::new(Recording::new(Some(Arc::new(Rehearsal::default()))));
    let run = Deploy {
        stage: d.stage.clone(),
        job: std::mem::replace(&mut d.job, Job::Rollback { to: None }),
        connect: ConnectOptions {
            interposer: Some(recording.clone()),
            ..d.connect.clone()
        },
        canary: d.canary.clone(),
        // Holds change nothing on a host: a rehearsal does not wait them out, nor for a lock.
        observe: Duration::ZERO,
        keep_failed: d.keep_failed,
        lock_wait: Duration::ZERO,
        identity: d.identity.clone(),
    };
    let summary = run_deploy(
        &run,
        Arc::new(crate::report::Recorder::default()),
        CancellationToken::new(),
    )
    .await;
    d.job = run.job;
    (recording, summary, d)
}

/// Answers for a rehearsal: reads go to the host; what would change it is answered as a host
/// where it succeeded answers, from what the reads found there.
#[derive(Default)]
struct Rehearsal {
    /// Each host's preflight, as it answered.
    found: Mutex<HashMap<String, Preflight>>,
}

impl Interposer for Rehearsal {
    fn command(&self, sent: &Sent<'_>) -> Answer {
        if !sent.purpose.changes {
            return Answer::Pass;
        }
        if sent.purpose == LOCK {
            let found = self.found.lock().ok();
            let pf = found.as_ref().and_then(|f| f.get(sent.host));
            return match pf.and_then(|p| p.lock.as_deref()) {
                Some(owner) => Answer::exit(LOCK_HELD, &remote::lock_held_reply(owner)),
                None => Answer::ok(&remote::lock_taken_reply(
                    pf.map(|p| p.releases.as_slice()).unwrap_or_default(),
                )),
            };
        }
        if sent.purpose == SWITCH {
            return Answer::Dialog(Box::new(SwitchRehearsal));
        }
        Answer::ok("")
    }

    fn replied(&self, sent: &Sent<'_>, out: &Output) {
        if sent.purpose == PREFLIGHT && out.success() {
            if let Ok(mut f) = self.found.lock() {
                f.insert(sent.host.to_owned(), Preflight::parse(&out.stdout_text()));
            }
        }
    }
}

/// The armed switch of a host where everything works: ready at once, switched on its word.
struct SwitchRehearsal;

impl Dialog for SwitchRehearsal {
    fn opening(&mut self) -> Vec<String> {
        vec![remote::SWITCH_READY.to_owned()]
    }

    fn answer(&mut self, line: &str) -> Turn {
        let now_ns = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
                .to_string()
        };
        match line.trim() {
            "t" => Turn::Print(vec![format!("t {}", clock::now_us())]),
            "go" => Turn::Exit(vec![now_ns()], 0),
            w if w.starts_with("at ") => Turn::Exit(vec![now_ns()], 0),
            _ => Turn::Exit(Vec::new(), SWITCH_CANCELLED),
        }
    }

    fn closed(&mut self) -> Turn {
        Turn::Exit(Vec::new(), SWITCH_CANCELLED)
    }
}
