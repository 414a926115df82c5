//! The chaos soak: many deploys, rollbacks, canaries and run-once deploys on a fleet of five
//! real sshd hosts, each with a random fault at a random moment — a signal to ship, a host that
//! freezes, crashes or drops off the network, a build that fails on one host — fired on ship's
//! own events (the k-th host prepared, the first switch…). After each run: what the exit code
//! promises, then the follow-up docs/reliability.md tells an operator to do, then the promises
//! that must hold on every host.
//!
//! `SHIP_CHAOS_ITERATIONS` (default 20: the CI run), `SHIP_CHAOS_SEED` (default: from the
//! clock, printed), `SHIP_CHAOS_REPLAY=N` (run only iteration N of that seed),
//! `SHIP_CHAOS_MINUTES` (no new iteration after this long; default 30). `bench/chaos.sh` runs
//! it long. Prints a table of the faults fired and every violation found.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{Fleet, Run};

/// splitmix64: small, seedable, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len() as u64) as usize]
    }
}

const HOSTS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Deploy,
    Rollback,
    Canary,
    RunOnce,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    None,
    Sigint,
    Sigterm,
    Sigkill,
    Freeze(usize),
    Crash(usize),
    Cut(usize),
    FailBuild(usize),
}

impl Fault {
    fn kind(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Sigint => "SIGINT to ship",
            Fault::Sigterm => "SIGTERM to ship",
            Fault::Sigkill => "SIGKILL to ship",
            Fault::Freeze(_) => "host frozen",
            Fault::Crash(_) => "host crashed",
            Fault::Cut(_) => "host cut off",
            Fault::FailBuild(_) => "build fails on a host",
        }
    }

    /// A fault on a host rather than on ship.
    fn host(self) -> Option<usize> {
        match self {
            Fault::Freeze(h) | Fault::Crash(h) | Fault::Cut(h) => Some(h),
            _ => None,
        }
    }
}

/// When a fault fires, on ship's own `--json` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// This long after the run started.
    After(u64),
    /// When host `i` starts taking the lock.
    Locking(usize),
    /// Right after the k-th host reported prepared (inside the switch window when k is the
    /// last).
    Prepared(usize),
    /// At the first `switched` event.
    FirstSwitch,
    /// When the cleanup starts on some host.
    Cleanup,
}

impl Trigger {
    fn fires(self, event: &serde_json::Value, prepared: &mut usize, started: Instant) -> bool {
        let kind = event["event"].as_str().unwrap_or("");
        match self {
            Trigger::After(ms) => started.elapsed() >= Duration::from_millis(ms),
            Trigger::Locking(i) => {
                kind == "phase"
                    && event["phase"] == "lock"
                    && event["host"] == format!("web-{}", i + 1).as_str()
            }
            Trigger::Prepared(k) => {
                if kind == "prepared" {
                    *prepared += 1;
                }
                kind == "prepared" && *prepared == k
            }
            Trigger::FirstSwitch => kind == "switched",
            Trigger::Cleanup => kind == "phase" && event["phase"] == "cleanup",
        }
    }
}

/// One iteration's plan, all drawn from the seed.
#[derive(Debug, Clone, Copy)]
struct Plan {
    action: Action,
    /// From a git repository (each host's mirror) rather than an artifact.
    git: bool,
    fault: Fault,
    trigger: Trigger,
}

fn draw(seed: u64, i: u64) -> Plan {
    let mut r = Rng(seed ^ i.wrapping_mul(0xA076_1D64_78BD_642F));
    let action = r.pick(&[
        Action::Deploy,
        Action::Deploy,
        Action::Rollback,
        Action::Canary,
        Action::RunOnce,
    ]);
    let host = r.below(HOSTS as u64) as usize;
    let fault = r.pick(&[
        Fault::None,
        Fault::Sigint,
        Fault::Sigterm,
        Fault::Sigkill,
        Fault::Freeze(host),
        Fault::Crash(host),
        Fault::Cut(host),
        Fault::FailBuild(host),
    ]);
    let trigger = match r.below(5) {
        0 => Trigger::After(r.below(700)),
        1 => Trigger::Locking(host),
        2 => Trigger::Prepared(1 + r.below(HOSTS as u64) as usize),
        3 => Trigger::FirstSwitch,
        _ => Trigger::Cleanup,
    };
    let git = r.below(3) == 0;
    Plan {
        action,
        git,
        fault,
        trigger,
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Marker a build step checks: the build fails on a host whose fault directory has it.
const FAIL_BUILD: &str = "fail-build";

fn write_inventory(fleet: &Fleet, action: Action, git: Option<&std::path::Path>) {
    // keep_releases so high that cleanup never removes a release during the soak: any complete
    // release that disappears was lost.
    let run_once = if action == Action::RunOnce {
        "    run_once: [\"sleep 0.2\"]\n"
    } else {
        ""
    };
    fleet.inventory(
        "",
        &format!(
            "    keep_releases: 1000\n    build: [\"sh build.sh\", \
             \"[ ! -e /usr/local/sbin/{FAIL_BUILD} ]\", \"sleep 0.3\"]\n{run_once}"
        ),
    );
    if let Some(repo) = git {
        fleet.set_source(&format!("{{ git: {}, ref: main }}", repo.display()));
    }
}

/// A host's state as the invariants need it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostState {
    current: Option<String>,
    complete: BTreeSet<String>,
    locked: bool,
    leftovers: Vec<String>,
}

fn host_state(fleet: &Fleet, i: usize) -> HostState {
    let h = fleet.host(i);
    let complete = h
        .releases()
        .into_iter()
        .filter(|r| h.path(&format!("releases/{r}/REVISION")).is_file())
        .collect();
    let mut leftovers: Vec<String> = fs::read_dir(h.path(".ship"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !matches!(n.as_str(), "history" | "bad" | "lock" | "prepared"))
        .map(|n| format!(".ship/{n}"))
        .collect();
    // A release kept prepared (another host's build failed) must be whole; a mark without
    // its release is a leftover.
    let complete: BTreeSet<String> = complete;
    leftovers.extend(
        fs::read_dir(h.path(".ship/prepared"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|id| !complete.contains(id))
            .map(|id| format!(".ship/prepared/{id} (no such complete release)")),
    );
    // git's own lock files in the mirror, left by a git that was stopped.
    let found = std::process::Command::new("find")
        .arg(h.path("repo"))
        .args(["-name", "*.lock"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    leftovers.extend(found.lines().map(str::to_owned));
    HostState {
        current: h.current_id(),
        complete,
        locked: h.locked(),
        leftovers,
    }
}

/// Run ship with `--json`, firing `plan.fault` when its trigger is seen. The run, and the
/// release it announced.
fn run_with_fault(fleet: &mut Fleet, args: &[&str], plan: Plan, fired: &mut bool) -> (Run, String) {
    let mut full: Vec<&str> = args.to_vec();
    full.push("--json");
    let mut running = fleet.spawn_ship(&full);
    let pid = running.child.id() as libc::pid_t;
    let stdout = running.child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<Option<String>>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(Some(line)).is_err() {
                break;
            }
        }
        let _ = tx.send(None);
    });
    let started = Instant::now();
    let mut lines = Vec::new();
    let mut prepared = 0;
    let mut release = String::new();
    let deadline = started + Duration::from_secs(90);
    let mut ended = false;
    while !ended && Instant::now() < deadline {
        let line = match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(Some(l)) => Some(l),
            Ok(None) => {
                ended = true;
                None
            }
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                ended = true;
                None
            }
        };
        let event: serde_json::Value = line
            .as_deref()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or(serde_json::Value::Null);
        if event["event"] == "started" {
            release = event["release"].as_str().unwrap_or("").to_owned();
        }
        if let Some(l) = line {
            lines.push(l);
        }
        if !*fired
            && plan.fault != Fault::None
            && plan.trigger.fires(&event, &mut prepared, started)
        {
            *fired = true;
            fire(fleet, pid, plan.fault);
        }
    }
    if !ended {
        // A hang is a violation: the caller sees the kill and says so.
        // SAFETY: signals our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let _ = reader.join();
    let mut run = running.finish();
    run.stdout = lines.join("\n");
    if !ended {
        run.code = -2;
    }
    (run, release)
}

fn fire(fleet: &mut Fleet, pid: libc::pid_t, fault: Fault) {
    let signal = |sig| {
        // SAFETY: signals our own child.
        unsafe { libc::kill(pid, sig) };
    };
    match fault {
        Fault::None | Fault::FailBuild(_) => {}
        Fault::Sigint => signal(libc::SIGINT),
        Fault::Sigterm => signal(libc::SIGTERM),
        Fault::Sigkill => signal(libc::SIGKILL),
        Fault::Freeze(h) => fleet.host(h).freeze(),
        Fault::Crash(h) => fleet.hosts[h].kill(),
        Fault::Cut(h) => fleet.hosts[h].cut(),
    }
}

/// Undo a host fault, as an operator gets the server back.
fn recover_host(fleet: &mut Fleet, fault: Fault, fired: bool) {
    match fault {
        Fault::Freeze(h) if fired => fleet.host(h).thaw(),
        Fault::Crash(h) if fired => fleet.hosts[h].restart(),
        Fault::Cut(h) if fired => fleet.hosts[h].reconnect(),
        Fault::FailBuild(h) => {
            let _ = fs::remove_file(fleet.host(h).faults.join(FAIL_BUILD));
        }
        _ => {}
    }
}

/// What the exit code promises about the fleet right after the run (before any follow-up).
fn exit_code_holds(
    plan: Plan,
    fired: bool,
    code: i32,
    release: &str,
    before: &[HostState],
    after: &[HostState],
) -> Result<(), String> {
    let currents: BTreeSet<&Option<String>> = after.iter().map(|h| &h.current).collect();
    let unchanged = before
        .iter()
        .zip(after)
        .all(|(b, a)| b.current == a.current);
    let host_fault = fired && plan.fault.host().is_some();
    let killed = fired && plan.fault == Fault::Sigkill;
    match code {
        _ if killed => Ok(()),
        0 => {
            let on_new = after.iter().all(|h| h.current.as_deref() == Some(release));
            match plan.action {
                Action::Rollback if currents.len() == 1 => Ok(()),
                Action::Rollback => Err("exit 0 after a rollback, but the fleet is mixed".into()),
                _ if on_new => Ok(()),
                _ => Err(format!("exit 0, but not every host is on {release}")),
            }
        }
        1 => {
            if unchanged {
                Ok(())
            } else {
                Err("exit 1 (failed, nothing changed), but a host's current changed".into())
            }
        }
        3 if host_fault => Ok(()),
        3 => Err("exit 3 (needs attention) with no host lost".into()),
        130 if currents.len() == 1 => Ok(()),
        130 => Err("exit 130 (interrupted), but the fleet is mixed".into()),
        -2 => Err("ship did not end within 90 s".into()),
        other => Err(format!("exit {other} has no meaning here")),
    }
}

#[test]
fn chaos_soak() {
    let iterations = env_u64("SHIP_CHAOS_ITERATIONS").unwrap_or(20);
    let seed = env_u64("SHIP_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
    });
    let only = env_u64("SHIP_CHAOS_REPLAY");
    let budget = Duration::from_secs(60 * env_u64("SHIP_CHAOS_MINUTES").unwrap_or(30));
    println!(
        "chaos soak: seed {seed}, {iterations} iterations (replay one with SHIP_CHAOS_SEED={seed} SHIP_CHAOS_REPLAY=<n>)"
    );
    let mut fleet = Fleet::start(HOSTS);
    let repo = fleet.example_repository();
    write_inventory(&fleet, Action::Deploy, None);
    for _ in 0..2 {
        let first = fleet.deploy();
        assert_eq!(first.code, 0, "{}", first.all());
    }
    let shared: Vec<_> = fleet.hosts.iter().map(|h| h.shared_snapshot()).collect();
    // Each host's processes when nothing runs on it (the last deploy's sessions have ended).
    std::thread::sleep(Duration::from_millis(500));
    let idle = fleet.process_counts();
    let started = Instant::now();
    let mut faults: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
    let mut violations: Vec<String> = Vec::new();
    let mut ran = 0;
    for i in (0..iterations).filter(|i| only.is_none_or(|n| n == *i)) {
        if started.elapsed() > budget {
            println!("time budget spent after {ran} iterations");
            break;
        }
        let plan = draw(seed, i);
        ran += 1;
        if plan.git {
            fs::write(repo.join("public/iteration.txt"), format!("{i}\n")).expect("write");
            crate::support::git(&repo, &["add", "."]);
            crate::support::git(&repo, &["commit", "-q", "-m", &format!("iteration {i}")]);
        }
        write_inventory(&fleet, plan.action, plan.git.then_some(repo.as_path()));
        let before: Vec<HostState> = (0..HOSTS).map(|h| host_state(&fleet, h)).collect();
        if let Fault::FailBuild(h) = plan.fault {
            fs::write(fleet.host(h).faults.join(FAIL_BUILD), "").expect("marker");
        }
        let args: Vec<&str> = match plan.action {
            Action::Deploy | Action::RunOnce => vec!["deploy", "production"],
            Action::Rollback => vec!["rollback", "production"],
            Action::Canary => vec!["deploy", "production", "--canary", "1", "--observe", "1s"],
        };
        let mut fired = matches!(plan.fault, Fault::FailBuild(_));
        let (run, release) = run_with_fault(&mut fleet, &args, plan, &mut fired);
        let entry = faults.entry(plan.fault.kind()).or_default();
        entry.0 += 1;
        entry.1 += usize::from(fired);
        let mut problems = Vec::new();
        recover_host(&mut fleet, plan.fault, fired);
        // A host that was cut off or frozen may still receive, once it is back, what the dead
        // run had sent it (a packet held by the network is delivered when it heals): the
        // operator's follow-up comes once the hosts are quiet again.
        fleet.wait_idle(&idle, Duration::from_secs(30));
        let after: Vec<HostState> = (0..HOSTS).map(|h| host_state(&fleet, h)).collect();
        if let Err(e) = exit_code_holds(plan, fired, run.code, &release, &before, &after) {
            problems.push(e);
        }
        // A run that was not killed and lost no host gives back every lock it took.
        let lost = fired && (plan.fault == Fault::Sigkill || plan.fault.host().is_some());
        if !lost && after.iter().any(|h| h.locked) {
            problems
                .push("a lock is left after a run that was neither killed nor lost a host".into());
        }
        if run.stderr.contains("panicked") {
            problems.push("ship panicked".into());
        }
        // The operator's follow-up, as docs/reliability.md says: clear what a lost host or a
        // killed run left, then deploy again when the fleet is not on one release.
        if after.iter().any(|h| h.locked) {
            let status = fleet.ship(&["status", "production"]);
            if !status.stdout.contains("ship lock release production") {
                problems.push(format!(
                    "locks left, and `ship status` does not say how to clear them:\n{}",
                    status.all()
                ));
            }
            let released = fleet.ship(&["lock", "release", "production", "--yes"]);
            if released.code != 0 {
                problems.push(format!("`ship lock release` failed:\n{}", released.all()));
            }
        }
        let mid: Vec<HostState> = (0..HOSTS).map(|h| host_state(&fleet, h)).collect();
        if mid
            .iter()
            .map(|h| &h.current)
            .collect::<BTreeSet<_>>()
            .len()
            > 1
        {
            let again = fleet.deploy();
            if again.code != 0 {
                problems.push(format!("the follow-up deploy failed:\n{}", again.all()));
            }
        }
        // The promises, on every host.
        let end: Vec<HostState> = (0..HOSTS).map(|h| host_state(&fleet, h)).collect();
        let currents: BTreeSet<&Option<String>> = end.iter().map(|h| &h.current).collect();
        if currents.len() != 1 {
            problems.push(format!("the fleet is not on one release: {currents:?}"));
        }
        for (n, (b, e)) in before.iter().zip(&end).enumerate() {
            let name = &fleet.host(n).name;
            match &e.current {
                Some(c) if e.complete.contains(c) => {}
                other => problems.push(format!(
                    "{name}: current is {other:?}, not a complete release"
                )),
            }
            let lost: Vec<&String> = b.complete.difference(&e.complete).collect();
            if !lost.is_empty() {
                problems.push(format!("{name}: complete releases lost: {lost:?}"));
            }
            if e.locked {
                problems.push(format!("{name}: still locked after the follow-up"));
            }
            if !e.leftovers.is_empty() {
                problems.push(format!("{name}: left in .ship/: {:?}", e.leftovers));
            }
            if fleet.host(n).shared_snapshot() != shared[n] {
                problems.push(format!("{name}: shared/ changed"));
            }
        }
        let status = fleet.ship(&["status", "production", "--json"]);
        let s: serde_json::Value = serde_json::from_str(status.stdout.trim()).unwrap_or_default();
        let said = s["release"].as_str().map(str::to_owned);
        if s["consistent"] != true || said != end[0].current {
            problems.push(format!(
                "`ship status` says consistent={} release={said:?}; the hosts are on {:?}",
                s["consistent"], end[0].current
            ));
        }
        let line = format!(
            "#{i:<4} {:<8} {:<8} {:<22} {:<20} exit {:<4} {}",
            format!("{:?}", plan.action),
            if plan.git { "git" } else { "artifact" },
            plan.fault.kind(),
            format!("{:?}", plan.trigger),
            run.code,
            if fired { "fired" } else { "not fired" }
        );
        if problems.is_empty() {
            println!("{line}  ok");
        } else {
            println!("{line}  VIOLATION");
            for p in &problems {
                println!("      {p}");
            }
            println!("      ship said:\n{}\n{}", run.stdout, run.stderr);
            violations.push(format!("#{i} {plan:?}: {}", problems.join("; ")));
        }
    }
    println!("\nfault                   drawn  fired");
    for (kind, (drawn, fired)) in &faults {
        println!("{kind:<23} {drawn:>5}  {fired:>5}");
    }
    println!(
        "{ran} iterations in {:.0} s, seed {seed}: {} violations",
        started.elapsed().as_secs_f64(),
        violations.len()
    );
    assert!(
        violations.is_empty(),
        "violations:\n{}",
        violations.join("\n")
    );
}
