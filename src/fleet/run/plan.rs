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

/// Everything a run would send to one host, in order, and what it would change there.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostPlan {
    pub host: String,
    /// The release `current` points to now, and its revision.
    pub current: Option<String>,
    pub current_revision: Option<String>,
    /// The releases the run's cleanup would remove (beyond `keep_releases`).
    pub removes: Vec<String>,
    /// The environment its steps get, secrets masked.
    pub env: Vec<(String, String)>,
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
    /// The waves the hosts switch in, in order (one: all at once).
    pub waves: Vec<Vec<String>>,
    /// How long the canary is held before the rest switch.
    pub observe_ms: u64,
    /// The artifact's size in bytes as sent (an artifact source).
    pub artifact_bytes: Option<usize>,
    pub run_once_host: Option<String>,
    pub hosts: Vec<HostPlan>,
}

/// Rehearse `d` on its hosts: connect and read them for real, answer everything that would
/// change them, and return every command the run sent, per host, secrets masked.
pub async fn plan(d: Deploy) -> RunPlan {
    let (recording, rehearsal, summary, d) = rehearse(d).await;
    let found = rehearsal
        .found
        .lock()
        .map(|f| f.clone())
        .unwrap_or_default();
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
            let pf = found.get(&host.name);
            let removes = match (pf, summary.outcome, &d.job) {
                (Some(pf), Outcome::Deployed, Job::Deploy(_)) => {
                    let mut all = pf.releases.clone();
                    all.push(summary.release.clone());
                    remote::releases_to_remove(
                        &all,
                        host.config.keep_releases,
                        &summary.release,
                        pf.current_release(),
                        &pf.bad,
                    )
                }
                _ => Vec::new(),
            };
            HostPlan {
                host: host.name.clone(),
                current: pf.and_then(|p| p.current_release().map(str::to_owned)),
                current_revision: pf.and_then(|p| p.current_revision.clone()),
                removes,
                env: host
                    .config
                    .env
                    .iter()
                    .map(|v| {
                        let shown = match v.secret {
                            true => crate::inventory::show::MASK.to_owned(),
                            false => masker.mask(&v.value),
                        };
                        (v.name.clone(), shown)
                    })
                    .collect(),
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
        waves: summary.waves.iter().map(|w| w.hosts.clone()).collect(),
        observe_ms: d.observe.as_millis() as u64,
        artifact_bytes: match &d.job {
            Job::Deploy(p) if !p.payload.is_empty() => Some(p.payload.len()),
            _ => None,
        },
        run_once_host: protocol_options(&d)
            .run_once
            .and_then(|i| d.stage.hosts.get(i).map(|h| h.name.clone())),
        hosts,
    }
}

/// Run `d` through the rehearsal: what it sent (unmasked), what it read, its summary, and `d`
/// back.
async fn rehearse(mut d: Deploy) -> (Arc<Recording>, Arc<Rehearsal>, Summary, Deploy) {
    let rehearsal = Arc::new(Rehearsal::default());
    let recording = Arc::new(Recording::new(Some(rehearsal.clone())));
    let run = Deploy {
        stage: d.stage.clone(),
        job: std::mem::replace(&mut d.job, Job::Rollback { to: None }),
        connect: ConnectOptions {
            interposer: Some(recording.clone()),
            ..d.connect.clone()
        },
        waves: d.waves.clone(),
        // Holds change nothing on a host: a rehearsal does not wait them out, nor for a lock.
        observe: Duration::ZERO,
        keep_failed: d.keep_failed,
        lock_wait: Duration::ZERO,
        max_unreachable: d.max_unreachable,
        rebuild: d.rebuild,
        identity: d.identity.clone(),
    };
    let summary = run_deploy(
        &run,
        Arc::new(crate::report::Recorder::default()),
        CancellationToken::new(),
    )
    .await;
    d.job = run.job;
    (recording, rehearsal, summary, d)
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
