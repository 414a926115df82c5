//! Read-only views of a stage (`ship status`, `ship lock status`) and clearing what a dead run
//! left behind (`ship lock release`).

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::lock::{HeldLock, Holder};
use crate::inventory::{Host, Stage};
use crate::remote::{self, Preflight};
use crate::transport::{ConnectOptions, Connection, Purpose};

/// Upper bound for the inspection command itself.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(60);

/// What one host looks like right now.
#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    pub host: String,
    /// Why the host could not be inspected.
    pub error: Option<String>,
    /// The release `current` points to.
    pub current: Option<String>,
    /// `current` exists but is not a release ship made (a hand-made directory, a foreign link).
    pub current_other: Option<String>,
    pub releases: Vec<String>,
    /// Releases a run started and did not finish: named by a leftover lock, staged but never
    /// switched, or never completed.
    pub unfinished: Vec<String>,
    pub lock: Option<LockStatus>,
    /// The last line of the host's journal (`.ship/history`), parsed.
    pub last: Option<serde_json::Value>,
    /// The journal's last lines, oldest first, parsed (for `ship history`).
    #[serde(skip)]
    pub journal: Vec<serde_json::Value>,
    /// Every release on the host, oldest first, with what is known of it.
    pub release_details: Vec<ReleaseInfo>,
}

/// One release on one host.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReleaseInfo {
    pub id: String,
    /// From its `REVISION` file (none: its deploy never got that far).
    pub revision: Option<String>,
    /// From the journal: who deployed it, and when the deploy finished.
    pub deployed_by: Option<String>,
    /// The CI run that deployed it, when the CI gave its page.
    pub ci_url: Option<String>,
    pub deployed_at: Option<String>,
    pub current: bool,
    /// Rolled back from: kept for inspection, never a rollback target.
    pub bad: bool,
    /// Built by a deploy that failed at the barrier and kept for a retry of the same build;
    /// never live, never a rollback target.
    pub prepared: bool,
}

/// A lock seen on a host.
#[derive(Debug, Clone, Serialize)]
pub struct LockStatus {
    /// One line: what, by whom, from where, since when, alive or not.
    pub holder: String,
    /// The run that holds it is known to be dead (it ran on this machine and is gone).
    pub dead: bool,
    pub release: Option<String>,
    pub owner: Option<remote::LockOwner>,
}

impl LockStatus {
    /// The run that holds it did not finish: its process is known to be gone, or it left no
    /// owner record (it died while taking the lock). `ship lock release` is what clears it.
    pub fn abandoned(&self) -> bool {
        self.dead || self.owner.is_none()
    }
}

/// The whole stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageStatus {
    pub stage: String,
    pub hosts: Vec<HostStatus>,
    /// Every host answered and all point `current` at the same release.
    pub consistent: bool,
    /// That release, when consistent.
    pub release: Option<String>,
    /// Every host is on one release id, but its `REVISION` is not the same everywhere.
    pub revision_mismatch: bool,
    /// Hosts of the stage not read: left out by `--hosts` / `--roles`.
    pub excluded: Vec<String>,
}

/// What the hosts read say about the fleet: one verdict, for `status` and `releases` alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every host read is on this release.
    Consistent(String),
    /// These hosts could not be read: whether the fleet agrees is not known.
    Unknown(Vec<String>),
    /// Every host is on this release id, but not on the same revision of it.
    RevisionMismatch(String),
    /// Hosts point `current` at different releases (or some at none).
    Different,
}

impl StageStatus {
    pub fn verdict(&self) -> Verdict {
        let unread: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| h.error.is_some())
            .map(|h| h.host.clone())
            .collect();
        match &self.release {
            Some(r) if self.consistent => Verdict::Consistent(r.clone()),
            _ if !unread.is_empty() => Verdict::Unknown(unread),
            _ if self.revision_mismatch => Verdict::RevisionMismatch(
                self.hosts
                    .first()
                    .and_then(|h| h.current.clone())
                    .unwrap_or_default(),
            ),
            _ => Verdict::Different,
        }
    }
}

impl HostStatus {
    /// A host that could not be inspected, and why.
    pub fn unreachable(host: &str, error: String) -> Self {
        HostStatus {
            host: host.to_owned(),
            error: Some(error),
            current: None,
            current_other: None,
            releases: Vec::new(),
            unfinished: Vec::new(),
            lock: None,
            last: None,
            journal: Vec::new(),
            release_details: Vec::new(),
        }
    }
}

impl StageStatus {
    pub fn locked(&self) -> impl Iterator<Item = &HostStatus> {
        self.hosts.iter().filter(|h| h.lock.is_some())
    }
}

fn host_status(host: &Host, pf: &Preflight, controller: &str) -> HostStatus {
    let lock = pf.lock.as_deref().map(|raw| {
        let l = HeldLock::read(raw, controller);
        LockStatus {
            holder: l.who(),
            dead: l.holder == Holder::Dead,
            release: l.release().map(str::to_owned),
            owner: l.owner.clone(),
        }
    });
    let current = pf.current_release().map(str::to_owned);
    let current_other = match (&current, &pf.current) {
        (None, Some(target)) => Some(target.clone()),
        (None, None) if pf.current_not_a_link => Some("(not a symlink)".to_owned()),
        _ => None,
    };
    let mut unfinished: Vec<String> = pf
        .staged
        .iter()
        .chain(pf.incomplete.iter())
        .chain(
            lock.as_ref()
                .and_then(|l| l.release.as_ref())
                .filter(|r| pf.releases.contains(r)),
        )
        .filter(|r| Some(r.as_str()) != current.as_deref())
        .cloned()
        .collect();
    unfinished.sort();
    unfinished.dedup();
    let entries: Vec<serde_json::Value> = pf
        .history
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let release_details: Vec<ReleaseInfo> = pf
        .releases
        .iter()
        .map(|id| {
            let deployed = entries.iter().rev().find(|e| {
                e["release"] == id.as_str() && e["kind"] == "deploy" && e["outcome"] == "deployed"
            });
            let field = |k: &str| deployed.and_then(|e| e[k].as_str()).map(str::to_owned);
            ReleaseInfo {
                id: id.clone(),
                revision: pf
                    .revisions
                    .iter()
                    .find(|(r, _)| r == id)
                    .map(|(_, v)| v.clone()),
                deployed_by: field("user"),
                ci_url: field("ci_url"),
                deployed_at: field("finished"),
                current: current.as_deref() == Some(id.as_str()),
                bad: pf.bad.contains(id),
                prepared: pf.prepared.iter().any(|(p, _)| p == id),
            }
        })
        .collect();
    HostStatus {
        host: host.name.clone(),
        error: None,
        release_details,
        current,
        current_other,
        releases: pf.releases.clone(),
        unfinished,
        lock,
        last: pf
            .last_journal
            .as_deref()
            .and_then(|l| serde_json::from_str(l).ok()),
        journal: entries,
    }
}

/// Connect to every host of the stage and run `f` with its connection.
pub(crate) async fn each_host<T, F, Fut>(stage: &Stage, options: &ConnectOptions, f: F) -> Vec<T>
where
    F: Fn(Host, Result<Connection, String>) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let gate = Arc::new(Semaphore::new(stage.connect_concurrency.max(1)));
    join_all(stage.hosts.iter().map(|host| {
        let gate = gate.clone();
        let f = &f;
        async move {
            let conn = {
                let _permit = gate.acquire().await;
                // Boxed, as at a deploy's connect: only the handshakes in flight hold its state.
                Box::pin(Connection::open(host, options))
                    .await
                    .map_err(|e| e.to_string())
            };
            f(host.clone(), conn).await
        }
    }))
    .await
}

async fn inspect_one(host: &Host, conn: &Connection, controller: &str) -> HostStatus {
    let script = remote::preflight(&host.config.deploy_to, &[], true);
    let failed = |error: String| HostStatus::unreachable(&host.name, error);
    match conn
        .run(
            Purpose::reads("status", "inspect"),
            &script,
            None,
            None,
            // The first command on the connection (it opens the session): the connect timeout.
            host.config.timeouts.connect,
        )
        .await
    {
        Ok(o) if o.success() => host_status(host, &Preflight::parse(&o.stdout_text()), controller),
        Ok(o) => failed(format!(
            "inspecting {} failed ({}): {}",
            host.config.deploy_to,
            o.status
                .map_or("no exit status".into(), |c| format!("exit {c}")),
            o.last_lines(3).join(" / ")
        )),
        Err(e) => failed(e.to_string()),
    }
}

/// Where every host of the stage stands.
pub async fn status(stage: &Stage, options: &ConnectOptions) -> StageStatus {
    let controller = super::run::controller_name();
    let hosts = each_host(stage, options, |host, conn| {
        let controller = controller.clone();
        async move {
            match conn {
                Ok(c) => {
                    let s = inspect_one(&host, &c, &controller).await;
                    c.close().await;
                    s
                }
                Err(e) => HostStatus::unreachable(&host.name, e),
            }
        }
    })
    .await;
    judge(&stage.name, hosts, stage.excluded.clone())
}

/// The stage's status from what each host said: whether the fleet is consistent.
pub fn judge(stage: &str, hosts: Vec<HostStatus>, excluded: Vec<String>) -> StageStatus {
    let first = hosts.first().and_then(|h| h.current.clone());
    let same_id = first.is_some()
        && hosts
            .iter()
            .all(|h| h.error.is_none() && h.current == first && h.current_other.is_none());
    // One release id everywhere is one release only if its REVISION is the same everywhere (two
    // deploys to different hosts in the same second can give one id to two revisions).
    let revision = |h: &HostStatus| {
        h.release_details
            .iter()
            .find(|r| r.current)
            .and_then(|r| r.revision.clone())
    };
    let first_revision = hosts.first().and_then(revision);
    let revision_mismatch = same_id && hosts.iter().any(|h| revision(h) != first_revision);
    let consistent = same_id && !revision_mismatch;
    StageStatus {
        stage: stage.to_owned(),
        consistent,
        release: if consistent { first } else { None },
        revision_mismatch,
        excluded,
        hosts,
    }
}

/// What `ship lock release` did on one host.
#[derive(Debug, Clone, Serialize)]
pub struct Released {
    pub host: String,
    /// Paths removed (relative to deploy_to); releases kept, each with why (current there, or
    /// complete).
    pub removed: Vec<String>,
    pub kept: Vec<String>,
    /// The lock was gone by the time ship got there (its holder ended on its own): nothing was
    /// removed.
    pub gone: bool,
    pub error: Option<String>,
}

/// A lock as the operator was shown it: the host, and its owner's token (`None`: the lock had
/// no owner record ship could read).
pub type ShownLock = (String, Option<String>);

/// Remove the locks in `shown` (and nothing else), each with the release its holder was
/// staging (unless it became `current` there), and record it in the host's journal. A host
/// whose lock is no longer the one shown (another run holds it now) is left alone and
/// reported with an error.
pub async fn release_locks(
    stage: &Stage,
    options: &ConnectOptions,
    shown: &[ShownLock],
) -> Vec<Released> {
    let controller = super::run::controller_name();
    let user = super::run::operator();
    let mut stage = stage.clone();
    stage
        .hosts
        .retain(|h| shown.iter().any(|(name, _)| *name == h.name));
    each_host(&stage, options, |host, conn| {
        let controller = controller.clone();
        let user = user.clone();
        let token = shown
            .iter()
            .find(|(name, _)| *name == host.name)
            .and_then(|(_, t)| t.clone());
        async move {
            let mut r = Released {
                host: host.name.clone(),
                removed: Vec::new(),
                kept: Vec::new(),
                gone: false,
                error: None,
            };
            let conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    r.error = Some(e);
                    return r;
                }
            };
            let before = inspect_one(&host, &conn, &controller).await;
            match (&before.error, &before.lock) {
                (Some(e), _) => r.error = Some(e.clone()),
                (None, None) => r.gone = true,
                (None, Some(lock)) if lock.owner.as_ref().map(|o| &o.token) != token.as_ref() => {
                    r.error = Some(lock_changed(&lock.holder));
                }
                (None, Some(lock)) => {
                    let d = &host.config.deploy_to;
                    let staged = lock
                        .owner
                        .as_ref()
                        .is_some_and(|o| o.staged_release().is_some());
                    let line = serde_json::json!({
                        "kind": "lock-release",
                        "release": lock.release,
                        "holder": lock.owner,
                        "user": user,
                        "controller": controller,
                        "host": host.name,
                        "finished": crate::util::rfc3339(crate::util::unix_now()),
                    })
                    .to_string();
                    let script = remote::release_lock_journaled(
                        d,
                        lock.release.as_deref(),
                        staged,
                        token.as_deref(),
                        &line,
                    );
                    match conn
                        .run(
                            Purpose::changes("unlock", "release lock"),
                            &script,
                            None,
                            None,
                            INSPECT_TIMEOUT,
                        )
                        .await
                    {
                        Ok(o) if o.success() => {
                            let answer = remote::Released::parse(&o.stdout_text());
                            r.removed = answer.removed;
                            r.gone = answer.gone;
                            for p in answer.kept_current {
                                r.kept.push(format!("{p} (it is current there)"));
                            }
                            for p in answer.kept_complete {
                                r.kept.push(format!(
                                    "{p} (complete: a finished release is removed only when \
                                     named, e.g. by cleanup or `ship rollback`)"
                                ));
                            }
                        }
                        Ok(o) if o.status == Some(remote::LOCK_CHANGED) => {
                            let now = remote::Released::parse(&o.stdout_text())
                                .changed_to
                                .map(|raw| HeldLock::read(&raw, &controller).who())
                                .unwrap_or_else(|| "another run".to_owned());
                            r.error = Some(lock_changed(&now));
                        }
                        Ok(o) => r.error = Some(o.last_lines(3).join(" / ")),
                        Err(e) => r.error = Some(e.to_string()),
                    }
                }
            }
            conn.close().await;
            r
        }
    })
    .await
}

fn lock_changed(holder: &str) -> String {
    format!(
        "the lock changed after it was shown: it is now held by {holder}; nothing was removed \
         here (hint: run `ship lock release` again to see it)"
    )
}

/// Lines of output kept per host by `ship exec` (the rest are counted, not kept).
pub const EXEC_LINES: usize = 10_000;

/// One line a host printed.
#[derive(Debug, Clone, Serialize)]
pub struct ExecLine {
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    pub line: String,
}

/// What `ship exec` got from one host.
#[derive(Debug, Clone, Serialize)]
pub struct ExecResult {
    pub host: String,
    /// The command's exit status (none: it did not run to the end).
    pub status: Option<u32>,
    /// What it printed, in order (the first [`EXEC_LINES`] lines).
    pub output: Vec<ExecLine>,
    /// Lines beyond [`EXEC_LINES`], not kept.
    pub dropped: usize,
    /// Why the command could not run or finish (unreachable, timed out, interrupted).
    pub error: Option<String>,
    pub elapsed_ms: u64,
}

/// Run an ad-hoc command on every host of the stage at once, in `deploy_to/current` (else
/// `deploy_to`, else the login directory). The command is supervised: a timeout or `cancel`
/// stops it on the host.
pub async fn exec(
    stage: &Stage,
    options: &ConnectOptions,
    command: &str,
    timeout: Duration,
    cancel: &tokio_util::sync::CancellationToken,
) -> Vec<ExecResult> {
    each_host(stage, options, |host, conn| async move {
        let t0 = std::time::Instant::now();
        let mut r = ExecResult {
            host: host.name.clone(),
            status: None,
            output: Vec::new(),
            dropped: 0,
            error: None,
            elapsed_ms: 0,
        };
        let lines: Arc<std::sync::Mutex<(Vec<ExecLine>, usize)>> = Arc::default();
        let sink = lines.clone();
        let on_line: crate::transport::OnLine = Arc::new(move |stream, line: &str| {
            if let Ok(mut l) = sink.lock() {
                if l.0.len() < EXEC_LINES {
                    l.0.push(ExecLine {
                        stream: match stream {
                            crate::transport::Stream::Stdout => "stdout",
                            crate::transport::Stream::Stderr => "stderr",
                        },
                        line: line.to_owned(),
                    });
                } else {
                    l.1 += 1;
                }
            }
        });
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                r.error = Some(e);
                return r;
            }
        };
        let script = remote::exec(&host.config.deploy_to, command);
        match conn
            .run_step(
                Purpose::changes("exec", command),
                &script,
                None,
                Some(on_line),
                timeout,
                cancel,
                false,
            )
            .await
        {
            Ok(o) => {
                r.status = o.status;
                if o.status.is_none() {
                    r.error = Some(match &o.signal {
                        Some(s) => format!("killed by {s}"),
                        None => "ended without an exit status".into(),
                    });
                }
            }
            Err(e) => r.error = Some(e.to_string()),
        }
        conn.close().await;
        if let Ok(mut l) = lines.lock() {
            r.output = std::mem::take(&mut l.0);
            r.dropped = l.1;
        }
        r.elapsed_ms = t0.elapsed().as_millis() as u64;
        r
    })
    .await
}
