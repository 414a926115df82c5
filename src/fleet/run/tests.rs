//! The runner driven in-process: whole deploys and rollbacks on local hosts (temp dirs, real
//! `sh`), with faults injected per host and command through an interposer — a refused
//! connection, a failing build, a rename that fails, a host lost after its word, a lock whose
//! answer never came. Each test asserts the protocol's outcome, what every host holds
//! afterwards, and which commands were sent. No sshd and no root: milliseconds per deploy. The
//! end-to-end suite (tests/e2e) covers the same ground against real OpenSSH servers.

use std::path::PathBuf;
use std::sync::Mutex;

use super::*;
use crate::report::Recorder;
use crate::transport::interpose::{Dialog, Recorded, Recording, Sent, Turn};
use crate::transport::{Answer, Interposer};

/// A fleet of `n` local hosts (`h1`…) under a temp dir, deploying `app/`.
struct Local {
    dir: tempfile::TempDir,
    stage: Stage,
}

impl Local {
    fn new(n: usize, extra: &str) -> Self {
        Self::with(n, extra, "")
    }

    /// [`Local::new`], with `stage_extra` lines in the stage (indented by four spaces).
    fn with(n: usize, extra: &str, stage_extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = dir.path().join("app");
        std::fs::create_dir_all(&app).expect("app dir");
        std::fs::write(app.join("index.php"), "<?php echo 'hello';\n").expect("app file");
        std::fs::write(app.join("build.sh"), "echo building; mkdir -p public\n").expect("build");
        let mut hosts = String::new();
        for i in 1..=n {
            let d = dir.path().join(format!("h{i}"));
            hosts.push_str(&format!("      h{i}: {{ deploy_to: {} }}\n", d.display()));
        }
        let text = format!(
            "defaults:\n  source:\n    artifact: {}\n  shared:\n    files: [.env]\n    dirs: \
             [storage]\n  build:\n    - sh build.sh\n  keep_releases: 3\n{extra}stages:\n  \
             local:\n    connection: local\n{stage_extra}    hosts:\n{hosts}",
            app.display()
        );
        let file = dir.path().join("inventory.yaml");
        let inv = crate::inventory::parse_inventory(&file, &text)
            .unwrap_or_else(|e| panic!("inventory: {e}\n{text}"));
        let stage = inv.stage("local").expect("stage").clone();
        Local { dir, stage }
    }

    /// A fleet that has one release deployed already, and the clock moved to the next second
    /// (release ids are timestamps): the release's id.
    fn deployed(n: usize, extra: &str) -> (Self, String) {
        let l = Local::new(n, extra);
        let run = l.deploy(None);
        assert_eq!(run.summary.outcome, Outcome::Deployed);
        std::thread::sleep(Duration::from_millis(1100));
        (l, run.summary.release)
    }

    fn host(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("h{i}"))
    }

    /// Where `current` points on host `i` (the release id), if anywhere.
    fn current(&self, i: usize) -> Option<String> {
        let target = std::fs::read_link(self.host(i).join("current")).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    }

    fn releases(&self, i: usize) -> Vec<String> {
        names_in(&self.host(i).join("releases"))
    }

    fn locked(&self, i: usize) -> bool {
        self.host(i).join(".ship/lock").exists()
    }

    fn journal_lines(&self, i: usize) -> usize {
        std::fs::read_to_string(self.host(i).join(".ship/history"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    /// Leftovers of a run in `.ship/` (staged links, scratch files).
    fn scratch(&self, i: usize) -> Vec<String> {
        names_in(&self.host(i).join(".ship"))
            .into_iter()
            .filter(|n| n.starts_with("stage-") || n.starts_with("work-") || n.ends_with(".tar"))
            .collect()
    }

    /// A deploy of the stage through `faults` (if any), every command recorded.
    fn deploy(&self, faults: Option<Arc<dyn Interposer>>) -> Run {
        self.run(self.deploy_job(), faults, Vec::new(), None)
    }

    fn deploy_job(&self) -> Job {
        let source = self.stage.source().expect("a source").clone();
        Job::Deploy(crate::source::prepare(&source).expect("artifact"))
    }

    /// A run of `job` on this fleet with the defaults (no waves, no hold, no wait), through
    /// `interposer` if any.
    fn spec(&self, job: Job, interposer: Option<Arc<dyn Interposer>>) -> Deploy {
        Deploy {
            stage: self.stage.clone(),
            job,
            connect: ConnectOptions {
                interposer,
                ..ConnectOptions::default()
            },
            waves: Vec::new(),
            observe: Duration::ZERO,
            keep_failed: false,
            lock_wait: Duration::ZERO,
            max_unreachable: 0,
            rebuild: false,
            identity: None,
        }
    }

    fn run(
        &self,
        job: Job,
        faults: Option<Arc<dyn Interposer>>,
        waves: Vec<Vec<usize>>,
        cancel: Option<CancellationToken>,
    ) -> Run {
        self.run_with(job, faults, cancel, |d| Deploy { waves, ..d })
    }

    /// A run of `job` with the defaults as `with` changes them, through `faults` (if any),
    /// every command recorded.
    fn run_with(
        &self,
        job: Job,
        faults: Option<Arc<dyn Interposer>>,
        cancel: Option<CancellationToken>,
        with: impl FnOnce(Deploy) -> Deploy,
    ) -> Run {
        let recording = Arc::new(Recording::new(faults));
        let d = with(self.spec(job, Some(recording.clone())));
        let cancel = cancel.unwrap_or_default();
        let summary = block_on(deploy(d, Arc::new(Recorder::default()), cancel));
        Run {
            summary,
            sent: recording.commands(),
        }
    }
}

/// The names in a directory, sorted (none when it does not exist).
fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A run's summary and every command it sent.
struct Run {
    summary: Summary,
    sent: Vec<Recorded>,
}

impl Run {
    /// The names of the commands sent to `host` in `phase`.
    fn sent(&self, host: &str, phase: &str) -> Vec<String> {
        self.sent
            .iter()
            .filter(|c| c.host == host && c.phase == phase)
            .map(|c| c.name.clone())
            .collect()
    }

    fn host(&self, host: &str) -> &HostSummary {
        self.summary
            .hosts
            .iter()
            .find(|h| h.host == host)
            .unwrap_or_else(|| panic!("no summary for {host}"))
    }

    fn failure(&self, host: &str) -> Option<&Failure> {
        self.host(host).failure.as_ref()
    }

    fn result(&self, host: &str) -> HostResult {
        self.host(host).result
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

type Make = Box<dyn Fn() -> Answer + Send + Sync>;

/// Faults by host and command: the first rule that matches a command answers it (a rule
/// matches a command whose phase is its phase and whose name starts with its name).
#[derive(Default)]
struct Faults {
    refuse: Vec<&'static str>,
    rules: Vec<(&'static str, &'static str, &'static str, Make)>,
    fired: Mutex<Vec<String>>,
}

impl Faults {
    fn refuse(mut self, host: &'static str) -> Self {
        self.refuse.push(host);
        self
    }

    fn on(
        mut self,
        host: &'static str,
        phase: &'static str,
        name: &'static str,
        answer: impl Fn() -> Answer + Send + Sync + 'static,
    ) -> Self {
        self.rules.push((host, phase, name, Box::new(answer)));
        self
    }

    fn into_arc(self) -> (Arc<Faults>, Option<Arc<dyn Interposer>>) {
        let a = Arc::new(self);
        let dynamic: Arc<dyn Interposer> = a.clone();
        (a, Some(dynamic))
    }

    fn fired(&self) -> Vec<String> {
        self.fired.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

impl Interposer for Faults {
    fn connect(&self, host: &Host) -> Result<(), TransportError> {
        if self.refuse.contains(&host.name.as_str()) {
            return Err(TransportError::Connect {
                addr: format!("{}:22", host.name),
                reason: "Connection refused (os error 111)".into(),
            });
        }
        Ok(())
    }

    fn command(&self, sent: &Sent<'_>) -> Answer {
        for (host, phase, name, make) in &self.rules {
            if *host == sent.host
                && *phase == sent.purpose.phase
                && sent.purpose.name.starts_with(name)
            {
                if let Ok(mut f) = self.fired.lock() {
                    f.push(format!("{host} {phase} {}", sent.purpose.name));
                }
                return make();
            }
        }
        Answer::Pass
    }
}

/// An armed switch that is ready, and on its word does `then` instead of renaming.
struct SwitchThen(fn() -> Turn);

impl Dialog for SwitchThen {
    fn opening(&mut self) -> Vec<String> {
        vec![remote::SWITCH_READY.to_owned()]
    }
    fn answer(&mut self, line: &str) -> Turn {
        match line.trim() {
            "go" => (self.0)(),
            w if w.starts_with("at ") => (self.0)(),
            _ => Turn::Print(Vec::new()),
        }
    }
    fn closed(&mut self) -> Turn {
        Turn::Exit(Vec::new(), SWITCH_CANCELLED)
    }
}

/// Every host on `release`, unlocked, with nothing left in `.ship/` by the run.
fn assert_fleet_on(l: &Local, release: Option<&str>) {
    for i in 1..=l.stage.hosts.len() {
        assert_eq!(l.current(i).as_deref(), release, "h{i}: current");
        assert!(!l.locked(i), "h{i}: still locked");
        assert!(l.scratch(i).is_empty(), "h{i}: left {:?}", l.scratch(i));
        assert!(
            l.host(i).join("shared/storage").is_dir() || release.is_none(),
            "h{i}: shared"
        );
    }
}

/// A health check (a command that succeeds unless a fault answers for it), tried once.
const HEALTH: &str = "  health_check:\n    command: \"true\"\n    retries: 1\n";

/// No host was told to switch: each is unchanged, and nothing had to be switched back (a host's
/// switch is armed at the end of its prepare, so an armed switch is no evidence).
fn assert_no_host_switched(run: &Run) {
    for h in &run.summary.hosts {
        assert_eq!(h.result, HostResult::Unchanged, "{}", h.host);
    }
    assert!(
        run.sent.iter().all(|c| c.phase != "revert"),
        "{:?}",
        run.sent
    );
}

#[test]
fn every_host_switches_to_the_new_release_and_the_commands_follow_the_protocol() {
    let l = Local::new(3, "");
    let run = l.deploy(None);
    assert_eq!(run.summary.outcome, Outcome::Deployed);
    let release = run.summary.release.clone();
    assert_fleet_on(&l, Some(&release));
    for (i, h) in ["h1", "h2", "h3"].iter().enumerate() {
        assert_eq!(run.result(h), HostResult::Switched);
        assert_eq!(l.releases(i + 1), vec![release.clone()]);
        assert_eq!(l.journal_lines(i + 1), 1);
        let phases: Vec<&str> = run
            .sent
            .iter()
            .filter(|c| c.host == *h)
            .map(|c| c.phase.as_str())
            .collect();
        assert_eq!(
            phases,
            [
                "connect", "lock", "prepare", "prepare", "prepare", "prepare", "switch", "cleanup"
            ],
            "{h}"
        );
        assert_eq!(
            run.sent(h, "prepare"),
            ["upload", "link", "build: sh build.sh", "complete"]
        );
    }
    // Only the preflight reads; everything else changes the host.
    assert!(
        run.sent
            .iter()
            .all(|c| c.changes == (c.name != "preflight"))
    );
}

#[test]
fn a_refused_connection_stops_the_deploy_before_any_host_is_changed() {
    let l = Local::new(3, "");
    let (_, faults) = Faults::default().refuse("h2").into_arc();
    let run = l.deploy(faults);
    assert_eq!(run.summary.outcome, Outcome::Aborted);
    let f = run.failure("h2").expect("h2 failed");
    assert_eq!(f.phase, Phase::Connect);
    assert!(f.message.contains("Connection refused"), "{}", f.message);
    // Nothing but reads reached any host, and no host has anything of the run.
    assert!(run.sent.iter().all(|c| !c.changes), "{:?}", run.sent);
    for i in 1..=3 {
        assert!(!l.host(i).join("releases").exists(), "h{i}");
        assert!(!l.locked(i), "h{i}");
    }
}

#[test]
fn a_failing_build_on_one_host_switches_no_host_and_keeps_only_whole_releases_prepared() {
    let (l, a) = Local::deployed(3, "");
    let (_, faults) = Faults::default()
        .on("h3", "prepare", "build", || {
            Answer::failed(127, "sh: composer: not found\n")
        })
        .into_arc();
    let run = l.deploy(faults);
    assert_eq!(run.summary.outcome, Outcome::Aborted);
    let f = run.failure("h3").expect("h3 failed");
    assert_eq!(f.phase, Phase::Prepare);
    assert_eq!(f.step.as_deref(), Some("build: sh build.sh"));
    assert_eq!(f.exit_status, Some(127));
    assert!(
        f.output_tail
            .iter()
            .any(|l| l.contains("composer: not found"))
    );
    assert_no_host_switched(&run);
    assert_fleet_on(&l, Some(&a));
    let x = &run.summary.release;
    assert_eq!(
        l.releases(3),
        vec![a.clone()],
        "h3: its failed release is gone"
    );
    for i in 1..=3 {
        // A host that was stopped mid-build has nothing left; one that had finished keeps
        // its release, whole and marked prepared.
        let prepared = l.host(i).join(format!(".ship/prepared/{x}")).exists();
        if prepared {
            assert_eq!(l.releases(i), vec![a.clone(), x.clone()], "h{i}");
            assert!(l.host(i).join(format!("releases/{x}/REVISION")).is_file());
        } else {
            assert_eq!(
                l.releases(i),
                vec![a.clone()],
                "h{i}: the stopped release stays"
            );
        }
        assert!(l.scratch(i).is_empty(), "h{i}");
        assert_eq!(l.journal_lines(i), 2, "h{i}: the abort is journaled");
    }
}

#[test]
fn a_rename_that_fails_on_one_host_switches_every_other_host_back() {
    let (l, a) = Local::deployed(3, "");
    let (_, faults) = Faults::default()
        .on("h2", "switch", "switch", || {
            Answer::Dialog(Box::new(SwitchThen(|| {
                Turn::Exit(Vec::new(), SWITCH_RENAME_FAILED)
            })))
        })
        .into_arc();
    let run = l.deploy(faults);
    assert_eq!(run.summary.outcome, Outcome::RolledBack);
    assert_eq!(run.failure("h2").map(|f| f.phase), Some(Phase::Switch));
    assert_eq!(run.result("h1"), HostResult::Reverted);
    assert_eq!(run.result("h3"), HostResult::Reverted);
    assert_eq!(run.sent("h1", "revert"), ["revert"]);
    assert_eq!(run.sent("h3", "revert"), ["revert"]);
    assert_fleet_on(&l, Some(&a));
    for i in 1..=3 {
        assert_eq!(l.releases(i), vec![a.clone()], "h{i}");
    }
}

#[test]
fn a_host_lost_after_its_word_is_switched_back_with_the_rest() {
    let (l, a) = Local::deployed(3, "");
    let (_, faults) = Faults::default()
        .on("h1", "switch", "switch", || {
            Answer::Dialog(Box::new(SwitchThen(|| {
                Turn::Lost("connection reset by peer".into())
            })))
        })
        .into_arc();
    let run = l.deploy(faults);
    // Whether h1 switched is unknown: every host is switched back, h1 included.
    assert_eq!(run.summary.outcome, Outcome::RolledBack);
    assert_eq!(run.sent("h1", "revert"), ["revert"]);
    assert_fleet_on(&l, Some(&a));
}

#[test]
fn a_lock_held_by_another_run_stops_the_deploy_and_is_left_to_its_owner() {
    let l = Local::new(2, "");
    let a = l.deploy(None).summary.release;
    let lock = l.host(2).join(".ship/lock");
    std::fs::create_dir_all(&lock).expect("lock");
    let owner = r#"{"token":"ship-other-1","kind":"deploy","user":"alice","controller":"laptop","pid":1,"release":"20990101000000","started":"2026-12-04T10:00:00Z"}"#;
    std::fs::write(lock.join("owner"), format!("{owner}\n")).expect("owner");
    let run = l.deploy(None);
    assert_eq!(run.summary.outcome, Outcome::Aborted);
    let h2 = run.host("h2");
    assert!(h2.locked_by_other);
    assert!(
        h2.failure
            .as_ref()
            .is_some_and(|f| f.message.contains("alice"))
    );
    assert!(run.sent.iter().all(|c| !c.changes), "{:?}", run.sent);
    // The other run's lock is untouched; h1 was never locked.
    assert_eq!(
        std::fs::read_to_string(lock.join("owner")).expect("owner"),
        format!("{owner}\n")
    );
    assert!(!l.locked(1));
    assert_eq!(l.current(1).as_deref(), Some(a.as_str()));
    assert_eq!(l.current(2).as_deref(), Some(a.as_str()));
}

#[test]
fn a_lock_whose_answer_was_lost_is_released_on_every_host_that_took_it() {
    let l = Local::new(3, "");
    let (_, faults) = Faults::default()
        .on("h3", "lock", "lock", || {
            Answer::Fail(TransportError::Lost("connection reset".into()))
        })
        .into_arc();
    let run = l.deploy(faults);
    assert_eq!(run.summary.outcome, Outcome::Aborted);
    assert_eq!(run.failure("h3").map(|f| f.phase), Some(Phase::Lock));
    assert!(run.sent.iter().all(|c| c.phase != "prepare"));
    // h1 and h2 took their locks and gave them back; h3's command never ran here.
    for i in 1..=3 {
        assert!(!l.locked(i), "h{i}");
        assert!(l.releases(i).is_empty(), "h{i}");
    }
    assert!(!run.sent("h1", "unlock").is_empty() || !run.sent("h1", "cleanup").is_empty());
}

#[test]
fn a_build_that_never_ends_is_stopped_at_the_step_timeout() {
    let l = Local::new(2, "  step_timeout: 400ms\n");
    let (_, faults) = Faults::default()
        .on("h2", "prepare", "build", || Answer::Hang)
        .into_arc();
    let run = l.deploy(faults);
    assert_eq!(run.summary.outcome, Outcome::Aborted);
    let f = run.failure("h2").expect("h2 failed");
    assert!(f.message.contains("timed out after"), "{}", f.message);
    assert!(f.message.contains("step_timeout"), "{}", f.message);
    assert!(
        f.message.contains("it was stopped on the host"),
        "{}",
        f.message
    );
    assert_fleet_on(&l, None);
    // h1 built completely: its release stays, prepared for a retry; h2's is gone.
    assert_eq!(l.releases(1), vec![run.summary.release.clone()]);
    assert!(
        l.host(1)
            .join(format!(".ship/prepared/{}", run.summary.release))
            .exists()
    );
    assert!(l.releases(2).is_empty());
}

#[test]
fn an_interruption_during_the_build_leaves_every_host_as_it_was() {
    let (l, a) = Local::deployed(3, "");
    let cancel = CancellationToken::new();
    let trip = cancel.clone();
    let (_, faults) = Faults::default()
        .on("h2", "prepare", "build", move || {
            trip.cancel();
            Answer::Hang
        })
        .into_arc();
    let run = l.run(l.deploy_job(), faults, Vec::new(), Some(cancel));
    assert_eq!(run.summary.outcome, Outcome::Aborted);
    assert_no_host_switched(&run);
    assert_fleet_on(&l, Some(&a));
    for i in 1..=3 {
        assert_eq!(l.releases(i), vec![a.clone()], "h{i}");
    }
}

#[test]
fn a_failed_health_check_switches_the_whole_fleet_back() {
    let (l, a) = Local::deployed(3, HEALTH);
    let (faults, dynamic) = Faults::default()
        .on("h2", "verify", "health", || Answer::failed(1, "HTTP 502\n"))
        .into_arc();
    let run = l.deploy(dynamic);
    assert!(!faults.fired().is_empty(), "the health check was never run");
    assert_eq!(run.summary.outcome, Outcome::RolledBack);
    assert_eq!(run.failure("h2").map(|f| f.phase), Some(Phase::Verify));
    for h in ["h1", "h2", "h3"] {
        assert_eq!(run.result(h), HostResult::Reverted, "{h}");
    }
    assert_fleet_on(&l, Some(&a));
}

#[test]
fn a_canary_that_fails_its_check_is_switched_back_and_the_rest_never_switch() {
    let (l, a) = Local::deployed(3, HEALTH);
    let (_, faults) = Faults::default()
        .on("h1", "verify", "health", || Answer::failed(1, "HTTP 500\n"))
        .into_arc();
    let run = l.run(l.deploy_job(), faults, vec![vec![0]], None);
    assert_eq!(run.summary.outcome, Outcome::RolledBack);
    assert_eq!(run.result("h1"), HostResult::Reverted);
    assert_eq!(run.result("h2"), HostResult::Unchanged);
    assert_eq!(run.result("h3"), HostResult::Unchanged);
    // Their switches were armed at the end of their prepare, and never told to go.
    assert!(run.sent("h2", "revert").is_empty() && run.sent("h3", "revert").is_empty());
    assert_fleet_on(&l, Some(&a));
}

#[test]
fn a_failing_run_once_step_stops_the_deploy_before_any_switch() {
    let l = Local::new(2, "  run_once:\n    - php artisan migrate --force\n");
    let (_, faults) = Faults::default()
        .on("h1", "run once", "run once", || {
            Answer::failed(1, "SQLSTATE[HY000] [2002] Connection refused\n")
        })
        .into_arc();
    let run = l.deploy(faults);
    assert_eq!(run.summary.outcome, Outcome::Aborted);
    assert_eq!(run.failure("h1").map(|f| f.phase), Some(Phase::RunOnce));
    assert!(
        run.sent("h2", "run once").is_empty(),
        "run-once runs on one host"
    );
    assert_no_host_switched(&run);
    assert_fleet_on(&l, None);
}

#[test]
fn a_lock_that_cannot_be_given_back_is_reported_and_the_deploy_still_stands() {
    let l = Local::new(2, "");
    let (_, faults) = Faults::default()
        .on("h2", "cleanup", "journal", || {
            Answer::failed(1, "rm: Permission denied\n")
        })
        .on("h2", "unlock", "unlock", || {
            Answer::failed(1, "rm: Permission denied\n")
        })
        .into_arc();
    let run = l.deploy(faults);
    assert_eq!(run.summary.outcome, Outcome::Deployed);
    let h2 = run.host("h2");
    assert!(h2.lock_left, "the summary must say the lock stayed");
    // The answers were faked, so the lock really is still there, and the summary says so.
    assert!(l.locked(2));
    assert!(!l.locked(1));
    assert_eq!(l.current(1), l.current(2));
}

#[test]
fn a_rollback_switches_every_host_to_the_release_before_and_marks_the_one_left_bad() {
    let (l, a) = Local::deployed(2, "");
    let b = l.deploy(None).summary.release;
    assert_ne!(a, b);
    let run = l.run(Job::Rollback { to: None }, None, Vec::new(), None);
    assert_eq!(run.summary.outcome, Outcome::Deployed);
    assert_eq!(run.summary.release, a);
    assert_fleet_on(&l, Some(&a));
    for i in 1..=2 {
        assert_eq!(l.releases(i), vec![a.clone(), b.clone()], "h{i}");
        assert!(l.host(i).join(format!(".ship/bad/{b}")).exists(), "h{i}");
    }
    assert!(
        run.sent
            .iter()
            .all(|c| c.phase != "prepare" || c.name == "stage the target")
    );
}

#[test]
fn the_dry_run_sends_exactly_the_commands_of_the_real_run() {
    let l = Local::new(
        3,
        "  run_once:\n    - echo migrate\n  after_switch:\n    - echo warm\n",
    );
    let first = l.deploy(None);
    assert_eq!(first.summary.outcome, Outcome::Deployed);
    let identity = Identity {
        release: "20991231235959".into(),
        token: "ship-20991231235959-test".into(),
        started_unix: util::unix_now(),
    };
    let make = |interposer: Option<Arc<dyn Interposer>>| Deploy {
        identity: Some(identity.clone()),
        ..l.spec(l.deploy_job(), interposer)
    };
    let planned = block_on(plan(make(None)));
    assert!(planned.hosts.iter().all(|h| h.error.is_none()));
    // Nothing changed on any host.
    for i in 1..=3 {
        assert_eq!(l.releases(i), vec![first.summary.release.clone()]);
        assert!(!l.locked(i));
    }
    let recording = Arc::new(Recording::new(None));
    let summary = block_on(deploy(
        make(Some(recording.clone())),
        Arc::new(Recorder::default()),
        CancellationToken::new(),
    ));
    assert_eq!(summary.outcome, Outcome::Deployed);
    assert_eq!(summary.release, identity.release);
    // The journal line says when the run finished and when the host switched: the times are
    // the one thing that differs.
    let finished = |s: &str| {
        let mut s = s.to_owned();
        while let Some(i) = s.find("\"finished\":\"") {
            let end = s[i + 12..].find('"').map_or(s.len(), |e| i + 12 + e + 1);
            s.replace_range(i..end, "FINISHED");
        }
        while let Some(i) = s.find("\"switched_at_ns\":") {
            let from = i + "\"switched_at_ns\":".len();
            let end = s[from..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(s.len(), |e| from + e);
            s.replace_range(i..end, "SWITCHED");
        }
        s
    };
    let real: Vec<(String, String, String, String)> = recording
        .commands()
        .into_iter()
        .map(|c| {
            (
                c.host,
                c.phase.replace(' ', "_"),
                c.name,
                finished(&c.script),
            )
        })
        .collect();
    let shown: Vec<(String, String, String, String)> = planned
        .hosts
        .iter()
        .flat_map(|h| {
            h.commands.iter().map(|c| {
                (
                    h.host.clone(),
                    c.phase.clone(),
                    c.name.clone(),
                    finished(&c.script),
                )
            })
        })
        .collect();
    let by_host = |v: &[(String, String, String, String)], h: &str| -> Vec<_> {
        v.iter().filter(|c| c.0 == h).cloned().collect()
    };
    for h in ["h1", "h2", "h3"] {
        let (r, s) = (by_host(&real, h), by_host(&shown, h));
        assert!(r.len() >= 8, "{h}: {r:?}");
        assert_eq!(r, s, "{h}: the plan differs from the real run");
    }
    assert_fleet_on(&l, Some(&identity.release));
}

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
fn clock_questions_slow_down_past_250_hosts_and_their_answers_stay_usable_as_long() {
    // Up to 250 hosts: every half second each, answers kept 2 s.
    for n in [2, 20, 250] {
        assert_eq!(clock_period(n), Duration::from_millis(500), "{n}");
        assert_eq!(clock_fresh(n), Duration::from_secs(2), "{n}");
    }
    // Beyond, at most CLOCK_RATE questions a second across the fleet, and an answer outlives
    // two periods (so a host always has one at the switch).
    for n in [251, 500, 1000, 5000] {
        let period = clock_period(n);
        assert!(
            n as f64 / period.as_secs_f64() <= f64::from(CLOCK_RATE) + 1e-9,
            "{n}"
        );
        assert!(clock_fresh(n) > period * 2, "{n}");
    }
    assert_eq!(clock_period(1000), Duration::from_secs(2));
    assert_eq!(clock_fresh(1000), Duration::from_secs(5));
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

#[test]
fn who_deployed_is_the_ci_actor_then_the_user_then_gits_name() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    let none = || None;
    let github = env(&[("GITHUB_ACTOR", "alice"), ("USER", "runner")]);
    assert_eq!(operator_from(&github, none), "alice");
    let gitlab = env(&[("GITLAB_USER_LOGIN", "bob"), ("USER", "root")]);
    assert_eq!(operator_from(&gitlab, none), "bob");
    let laptop = env(&[("USER", "carol")]);
    assert_eq!(operator_from(&laptop, || Some("Git Name".into())), "carol");
    let bare = env(&[("USER", " ")]);
    assert_eq!(operator_from(&bare, || Some("Dan Dev".into())), "Dan Dev");
    assert_eq!(operator_from(&env(&[]), none), "unknown");
    let gh_run = env(&[
        ("GITHUB_SERVER_URL", "https://github.com"),
        ("GITHUB_REPOSITORY", "acme/shop"),
        ("GITHUB_RUN_ID", "42"),
    ]);
    assert_eq!(
        ci_url_from(&gh_run).as_deref(),
        Some("https://github.com/acme/shop/actions/runs/42")
    );
    let gl = env(&[("CI_JOB_URL", "https://gitlab.example/acme/shop/-/jobs/7")]);
    assert_eq!(
        ci_url_from(&gl).as_deref(),
        Some("https://gitlab.example/acme/shop/-/jobs/7")
    );
    assert_eq!(ci_url_from(&env(&[])), None);
}

#[test]
fn hosts_whose_builds_were_stopped_by_another_hosts_failure_are_cancelled_not_failed() {
    let l = Local::new(3, "");
    let (_, faults) = Faults::default()
        .on("h1", "prepare", "build", || Answer::Hang)
        .on("h2", "prepare", "build", || Answer::Hang)
        .on("h3", "prepare", "build", || Answer::failed(1, "npm ERR!\n"))
        .into_arc();
    let run = l.deploy(faults);
    assert_eq!(run.summary.outcome, Outcome::Aborted);
    for h in ["h1", "h2"] {
        assert!(run.host(h).cancelled, "{h}");
        assert!(run.failure(h).is_none(), "{h}: {:?}", run.failure(h));
    }
    assert!(!run.host("h3").cancelled);
    assert_eq!(run.failure("h3").map(|f| f.phase), Some(Phase::Prepare));
    assert_fleet_on(&l, None);
}

#[test]
fn a_rollback_to_where_every_host_already_is_does_nothing_and_locks_nothing() {
    let (l, a) = Local::deployed(2, "");
    let run = l.run(
        Job::Rollback {
            to: Some(a.clone()),
        },
        None,
        Vec::new(),
        None,
    );
    assert_eq!(run.summary.outcome, Outcome::NothingToDo);
    assert_eq!(run.summary.release, a);
    assert!(run.sent.iter().all(|c| !c.changes), "{:?}", run.sent);
    assert!(run.summary.hosts.iter().all(|h| h.failure.is_none()));
    assert_fleet_on(&l, Some(&a));
    for i in 1..=2 {
        assert_eq!(l.journal_lines(i), 1, "h{i}: nothing journaled");
    }
}

#[test]
fn a_rollback_to_a_newer_release_moves_forward_and_marks_nothing_bad() {
    let (l, a) = Local::deployed(2, "");
    let b = l.deploy(None).summary.release;
    // Back to A (B marked bad), then --to B: forward.
    let back = l.run(Job::Rollback { to: None }, None, Vec::new(), None);
    assert_eq!(back.summary.release, a);
    assert!(!back.summary.forward);
    let fwd = l.run(
        Job::Rollback {
            to: Some(b.clone()),
        },
        None,
        Vec::new(),
        None,
    );
    assert_eq!(fwd.summary.outcome, Outcome::Deployed);
    assert!(fwd.summary.forward);
    assert_fleet_on(&l, Some(&b));
    for i in 1..=2 {
        assert!(
            !l.host(i).join(format!(".ship/bad/{a}")).exists(),
            "h{i}: {a} marked bad"
        );
        assert!(
            !l.host(i).join(format!(".ship/bad/{b}")).exists(),
            "h{i}: {b} still bad"
        );
    }
}

#[test]
fn a_maintenance_lock_takes_every_host_or_none_and_deploys_refuse_it_without_waiting() {
    use crate::fleet::maintenance;
    let (l, a) = Local::deployed(3, "");
    // Another run holds h3: nothing is taken, the hosts taken first are given back.
    let lock3 = l.host(3).join(".ship/lock");
    std::fs::create_dir_all(&lock3).expect("lock");
    let other = r#"{"token":"ship-x","kind":"deploy","user":"bob","controller":"ci","pid":1,"release":"20990101000000","started":"2026-12-04T10:00:00Z"}"#;
    std::fs::write(lock3.join("owner"), format!("{other}\n")).expect("owner");
    let owner = maintenance::owner("migrating orders by hand");
    let (res, all) = block_on(maintenance::acquire(
        &l.stage,
        &ConnectOptions::default(),
        &owner,
    ));
    assert!(!all);
    assert!(res.iter().all(|r| !r.locked), "{res:?}");
    assert!(
        res[2]
            .held_by
            .as_deref()
            .is_some_and(|w| w.contains("by bob")),
        "{res:?}"
    );
    assert!(!l.locked(1) && !l.locked(2));
    std::fs::remove_dir_all(&lock3).expect("unlock h3");

    let (res, all) = block_on(maintenance::acquire(
        &l.stage,
        &ConnectOptions::default(),
        &owner,
    ));
    assert!(all, "{res:?}");
    for i in 1..=3 {
        assert!(l.locked(i), "h{i}");
    }
    // A deploy that would wait a minute for a run's lock refuses this one at once.
    let d = Deploy {
        lock_wait: Duration::from_secs(60),
        ..l.spec(l.deploy_job(), None)
    };
    let events = Arc::new(Recorder::default());
    let summary = block_on(deploy(d, events.clone(), CancellationToken::new()));
    // Refused at connect: it never waited for the lock (no waiting event, no lock phase).
    let seen = events.0.lock().map(|e| e.clone()).unwrap_or_default();
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Waiting { .. })),
        "it waited: {seen:?}"
    );
    assert!(
        summary.phases.iter().all(|p| p.phase == Phase::Connect),
        "{:?}",
        summary.phases
    );
    assert_eq!(summary.outcome, Outcome::Aborted);
    for h in &summary.hosts {
        assert!(h.locked_by_other, "{}", h.host);
        assert_eq!(
            h.current.as_deref(),
            Some(a.as_str()),
            "{}: current is known",
            h.host
        );
        let f = h.failure.as_ref().expect("a failure");
        assert!(f.message.contains("a maintenance lock by"), "{}", f.message);
        assert!(
            f.message.contains("\"migrating orders by hand\""),
            "{}",
            f.message
        );
        assert!(
            f.message.contains("`ship lock release local`"),
            "{}",
            f.message
        );
    }
    for i in 1..=3 {
        assert!(l.locked(i), "h{i}: the maintenance lock stays");
        assert_eq!(l.current(i).as_deref(), Some(a.as_str()));
        assert_eq!(l.releases(i), vec![a.clone()]);
    }
}

#[test]
fn waves_switch_one_after_the_other_and_a_failure_in_any_switches_every_switched_host_back() {
    let (l, a) = Local::deployed(3, HEALTH);
    // Three waves of one host: each switched at its own instant, checked, then the next.
    let run = l.run(l.deploy_job(), None, vec![vec![0], vec![1]], None);
    assert_eq!(run.summary.outcome, Outcome::Deployed);
    let b = run.summary.release.clone();
    let waves: Vec<Vec<String>> = run.summary.waves.iter().map(|w| w.hosts.clone()).collect();
    assert_eq!(waves, [["h1"], ["h2"], ["h3"]]);
    assert!(run.summary.waves.iter().all(|w| w.flip_skew_ms.is_some()));
    assert_fleet_on(&l, Some(&b));
    let order: Vec<&str> = run
        .sent
        .iter()
        .filter(|c| c.phase == "verify")
        .map(|c| c.host.as_str())
        .collect();
    assert_eq!(
        order,
        ["h1", "h2", "h3"],
        "each wave is checked before the next"
    );
    std::thread::sleep(Duration::from_millis(1100));

    // The second wave's check fails: the first two waves go back, the third never switched.
    let (_, faults) = Faults::default()
        .on("h2", "verify", "health", || Answer::failed(1, "HTTP 503\n"))
        .into_arc();
    let run = l.run(l.deploy_job(), faults, vec![vec![0], vec![1]], None);
    assert_eq!(run.summary.outcome, Outcome::RolledBack);
    assert_eq!(run.result("h1"), HostResult::Reverted);
    assert_eq!(run.result("h2"), HostResult::Reverted);
    assert_eq!(run.result("h3"), HostResult::Unchanged);
    assert!(run.sent("h3", "revert").is_empty());
    assert!(run.sent("h3", "verify").is_empty());
    assert_fleet_on(&l, Some(&b));
    for i in 1..=3 {
        // The failed release is removed everywhere: it never went live on the whole fleet.
        assert_eq!(l.releases(i), vec![a.clone(), b.clone()], "h{i}");
    }
}

#[test]
fn unreachable_hosts_within_the_budget_are_left_out_and_the_rest_deploy_as_the_fleet() {
    let (l, a) = Local::deployed(3, "");
    let budget = |n: usize, faults: Option<Arc<dyn Interposer>>| {
        l.run_with(l.deploy_job(), faults, None, |d| Deploy {
            max_unreachable: n,
            ..d
        })
    };
    // Over the budget (0): the run stops at connect, as always.
    let (_, faults) = Faults::default().refuse("h3").into_arc();
    let run = budget(0, faults);
    assert_eq!(run.summary.outcome, Outcome::Aborted);
    assert_fleet_on(&l, Some(&a));
    std::thread::sleep(Duration::from_millis(1100));
    // Within it: h3 is left out, h1 and h2 deploy as the whole fleet.
    let (_, faults) = Faults::default().refuse("h3").into_arc();
    let run = budget(1, faults);
    assert_eq!(run.summary.outcome, Outcome::Deployed);
    let b = run.summary.release.clone();
    assert!(run.host("h3").left_out);
    assert!(!run.host("h1").left_out);
    assert_eq!(run.result("h3"), HostResult::Unchanged);
    assert!(
        run.sent.iter().all(|c| c.host != "h3"),
        "nothing was sent to h3"
    );
    assert_eq!(l.current(1).as_deref(), Some(b.as_str()));
    assert_eq!(l.current(2).as_deref(), Some(b.as_str()));
    assert_eq!(l.current(3).as_deref(), Some(a.as_str()), "h3 stays behind");
    assert!(!l.locked(1) && !l.locked(2) && !l.locked(3));
    // Two unreachable with a budget of one: over it, nothing changes.
    std::thread::sleep(Duration::from_millis(1100));
    let (_, faults) = Faults::default().refuse("h2").refuse("h3").into_arc();
    let run = budget(1, faults);
    assert_eq!(run.summary.outcome, Outcome::Aborted);
    // The next deploy, everyone reachable, brings h3 along.
    let run = budget(1, None);
    assert_eq!(run.summary.outcome, Outcome::Deployed);
    let c = run.summary.release.clone();
    assert_fleet_on(&l, Some(&c));
}

/// A deploy of `l` with these settings, every command recorded.
fn deploy_with(
    l: &Local,
    lock_wait: Duration,
    keep_failed: bool,
    faults: Option<Arc<dyn Interposer>>,
) -> Run {
    l.run_with(l.deploy_job(), faults, None, |d| Deploy {
        keep_failed,
        lock_wait,
        ..d
    })
}

#[test]
fn a_lock_wait_that_runs_out_gives_back_every_lock_it_took() {
    let (l, a) = Local::deployed(3, "");
    let lock3 = l.host(3).join(".ship/lock");
    std::fs::create_dir_all(&lock3).expect("lock");
    let other = r#"{"token":"ship-y","kind":"deploy","user":"carol","controller":"elsewhere","pid":7,"release":"20990101000000","started":"2026-12-04T10:00:00Z"}"#;
    std::fs::write(lock3.join("owner"), format!("{other}\n")).expect("owner");
    let run = deploy_with(&l, Duration::from_millis(1500), false, None);
    assert_eq!(run.summary.outcome, Outcome::Aborted);
    assert!(run.host("h3").locked_by_other);
    // It tried, took h1 (and maybe h2), gave them back, tried again, then gave up.
    assert!(
        run.sent
            .iter()
            .filter(|c| c.host == "h1" && c.name == "lock")
            .count()
            >= 2,
        "{:?}",
        run.sent
    );
    assert!(!run.sent("h1", "lock").is_empty());
    assert!(
        run.sent
            .iter()
            .any(|c| c.host == "h1" && c.name == "give back")
    );
    assert!(!l.locked(1) && !l.locked(2), "nothing of ours is left");
    assert_eq!(
        std::fs::read_to_string(lock3.join("owner")).expect("owner"),
        format!("{other}\n"),
        "the other run's lock is untouched"
    );
    for i in 1..=3 {
        assert_eq!(l.current(i).as_deref(), Some(a.as_str()));
        assert_eq!(l.releases(i), vec![a.clone()]);
    }
}

#[test]
fn keep_failed_leaves_the_failed_release_for_inspection_and_nothing_else() {
    let (l, a) = Local::deployed(2, "");
    let (_, faults) = Faults::default()
        .on("h2", "prepare", "build", || {
            Answer::failed(2, "make: *** [all] Error 2\n")
        })
        .into_arc();
    let run = deploy_with(&l, Duration::ZERO, true, faults);
    assert_eq!(run.summary.outcome, Outcome::Aborted);
    let b = run.summary.release.clone();
    assert!(
        run.sent.iter().any(|c| c.name == "discard scratch"),
        "{:?}",
        run.sent
    );
    assert!(!run.sent.iter().any(|c| c.name == "discard"));
    assert_fleet_on(&l, Some(&a));
    for i in 1..=2 {
        assert_eq!(
            l.releases(i),
            vec![a.clone(), b.clone()],
            "h{i}: kept for inspection"
        );
    }
}

#[test]
fn a_rollback_runs_no_run_once_step_and_builds_nothing() {
    let (l, a) = Local::deployed(2, "  run_once:\n    - echo migrate >> migrations.log\n");
    let b = l.deploy(None).summary.release;
    let run = l.run(Job::Rollback { to: None }, None, Vec::new(), None);
    assert_eq!(run.summary.outcome, Outcome::Deployed);
    assert_eq!(run.summary.release, a);
    assert!(
        run.sent.iter().all(|c| c.phase != "run once"),
        "{:?}",
        run.sent
    );
    assert!(
        run.sent.iter().all(|c| !c.name.starts_with("build")),
        "{:?}",
        run.sent
    );
    assert_fleet_on(&l, Some(&a));
    assert_ne!(a, b);
}

#[test]
fn a_step_with_parallel_1_runs_on_one_host_at_a_time_and_the_others_wait_their_turn() {
    let l = Local::with(
        3,
        "",
        "    build:\n      - sh build.sh\n      - { run: \"date +%s%N >> ../../turns.log; sleep 0.2; \
         date +%s%N >> ../../turns.log\", parallel: 1 }\n",
    );
    let run = l.deploy(None);
    assert_eq!(run.summary.outcome, Outcome::Deployed);
    // Each host wrote its start and end: no two hosts were in the step at once.
    let mut spans: Vec<(u128, u128)> = (1..=3)
        .map(|i| {
            let text = std::fs::read_to_string(l.host(i).join("turns.log")).expect("turns");
            let v: Vec<u128> = text.lines().filter_map(|x| x.trim().parse().ok()).collect();
            assert_eq!(v.len(), 2, "h{i}: {text}");
            (v[0], v[1])
        })
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "two hosts in the step at once: {spans:?}");
    }
}

/// `n` local hosts whose build notes each run in `builds.log` and whose last step fails where
/// `shared/FAIL` exists (after a short pause, so that the other hosts finish first).
fn counting_builds(n: usize) -> Local {
    Local::with(
        n,
        "",
        "    build:\n      - sh build.sh\n      - echo built >> ../../builds.log\n      - \
         if [ -e ../../shared/FAIL ]; then sleep 0.5; exit 1; fi\n",
    )
}

impl Local {
    /// How many builds ran on host `i` (see [`counting_builds`]).
    fn builds(&self, i: usize) -> usize {
        std::fs::read_to_string(self.host(i).join("builds.log"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }
}

#[test]
fn a_retry_of_the_same_build_rebuilds_only_on_the_host_that_failed() {
    let l = counting_builds(3);
    let builds = |i: usize| l.builds(i);
    // h3's last step fails after the others have finished theirs.
    std::fs::create_dir_all(l.host(3).join("shared")).expect("shared");
    std::fs::write(l.host(3).join("shared/FAIL"), "").expect("marker");
    let failed = l.deploy(None);
    assert_eq!(failed.summary.outcome, Outcome::Aborted);
    let x = failed.summary.release.clone();
    // h1 and h2 built it completely: kept, prepared; h3's is gone.
    for i in 1..=2 {
        assert_eq!(l.releases(i), vec![x.clone()], "h{i}");
        assert!(
            l.host(i).join(format!(".ship/prepared/{x}")).exists(),
            "h{i}"
        );
        assert_eq!(l.current(i), None);
        assert!(!l.locked(i));
        assert!(l.scratch(i).is_empty(), "h{i}: {:?}", l.scratch(i));
    }
    assert!(l.releases(3).is_empty());
    assert_eq!((builds(1), builds(2), builds(3)), (1, 1, 1));
    std::fs::remove_file(l.host(3).join("shared/FAIL")).expect("marker");
    // A retry interrupted while h3 builds: h1 and h2 took x up, and keep it whatever happens.
    let cancel = CancellationToken::new();
    let trip = cancel.clone();
    let (_, faults) = Faults::default()
        .on("h3", "prepare", "build: sh build.sh", move || {
            trip.cancel();
            Answer::Hang
        })
        .into_arc();
    let stopped = l.run(l.deploy_job(), faults, Vec::new(), Some(cancel));
    assert_eq!(stopped.summary.outcome, Outcome::Aborted);
    assert_eq!(stopped.summary.release, x);
    for i in 1..=2 {
        assert_eq!(
            l.releases(i),
            vec![x.clone()],
            "h{i}: a whole release is never lost"
        );
        assert!(
            l.host(i).join(format!(".ship/prepared/{x}")).exists(),
            "h{i}"
        );
        assert!(!l.locked(i));
        assert_eq!(l.current(i), None);
    }
    assert!(l.releases(3).is_empty());
    // The retry takes the same id: h1 and h2 reuse their release, h3 builds it.
    let retry = l.deploy(None);
    assert_eq!(retry.summary.outcome, Outcome::Deployed);
    assert_eq!(retry.summary.release, x);
    assert_eq!(
        (builds(1), builds(2), builds(3)),
        (1, 1, 2),
        "only h3 built again"
    );
    assert_eq!(retry.sent("h1", "prepare"), ["reuse the prepared release"]);
    assert_fleet_on(&l, Some(&x));
    for i in 1..=3 {
        assert!(
            !l.host(i).join(format!(".ship/prepared/{x}")).exists(),
            "h{i}: mark gone"
        );
    }
}

#[test]
fn rebuild_builds_everywhere_and_a_changed_build_is_never_reused() {
    let l = counting_builds(2);
    let builds = |i: usize| l.builds(i);
    // h2's last step fails after h1 has finished its build.
    let fail_h2 = || {
        std::fs::create_dir_all(l.host(2).join("shared")).expect("shared");
        std::fs::write(l.host(2).join("shared/FAIL"), "").expect("marker");
        let r = l.deploy(None).summary;
        std::fs::remove_file(l.host(2).join("shared/FAIL")).expect("marker");
        assert_eq!(r.outcome, Outcome::Aborted);
        r.release
    };
    let x = fail_h2();
    assert!(l.host(1).join(format!(".ship/prepared/{x}")).exists());
    // --rebuild: a fresh id, built everywhere.
    let recording = Arc::new(Recording::new(None));
    let d = Deploy {
        rebuild: true,
        ..l.spec(l.deploy_job(), Some(recording.clone()))
    };
    let summary = block_on(deploy(
        d,
        Arc::new(Recorder::default()),
        CancellationToken::new(),
    ));
    assert_eq!(summary.outcome, Outcome::Deployed);
    assert_ne!(summary.release, x);
    assert_eq!((builds(1), builds(2)), (2, 2));
    // x is still prepared on h1, but older than its current release: not taken up.
    std::thread::sleep(Duration::from_millis(1100));
    let y = fail_h2();
    assert_ne!(y, x, "a prepared release behind current is not taken up");
    assert_eq!((builds(1), builds(2)), (3, 3));
    // A prepared release of another build (another artifact here) is not taken up.
    std::fs::write(
        l.dir.path().join("app/index.php"),
        "<?php echo 'changed';\n",
    )
    .expect("edit");
    std::thread::sleep(Duration::from_millis(1100));
    let z = l.deploy(None);
    assert_eq!(z.summary.outcome, Outcome::Deployed);
    assert_ne!(z.summary.release, x, "another build: another release");
    assert_eq!((builds(1), builds(2)), (4, 4), "both built the new build");
    assert_fleet_on(&l, Some(&z.summary.release));
    // Prepared releases count towards keep_releases like any other (keep 3: x goes, with its
    // mark; y stays, still prepared).
    assert!(!l.releases(1).contains(&x));
    assert!(!l.host(1).join(format!(".ship/prepared/{x}")).exists());
    assert!(l.releases(1).contains(&y));
    assert!(l.host(1).join(format!(".ship/prepared/{y}")).exists());
}

#[test]
fn the_build_key_changes_with_anything_that_goes_into_the_build_and_hides_secrets() {
    let key = |defaults: &str| {
        let l = Local::new(1, defaults);
        let Job::Deploy(source) = l.deploy_job() else {
            panic!("a deploy job")
        };
        build_key(&l.stage.hosts[0].config, &source)
    };
    let base = "  env:\n    MODE: prod\n    API_TOKEN: { value: s3cr3t-value, secret: true }\n";
    let k = key(base);
    assert_eq!(k, key(base), "stable");
    assert!(
        k.starts_with("build-") && k.len() == "build-".len() + 24,
        "{k}"
    );
    for (what, changed) in [
        ("a non-secret value", base.replace("prod", "staging")),
        ("a secret value", base.replace("s3cr3t-value", "rotated")),
        ("a secret's name", base.replace("API_TOKEN", "API_KEY")),
        (
            "copied paths",
            format!("{base}  copy_from_previous: [vendor]\n"),
        ),
    ] {
        assert_ne!(key(&changed), k, "{what} changes the key");
    }
    assert!(!k.contains("s3cr3t"));
}
