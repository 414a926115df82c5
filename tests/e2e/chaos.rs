//! What a randomized fault soak found (see `chaos_soak` and docs/reliability.md): a host lost
//! right after logging in, a host lost while taking the lock, an interrupted checkout's
//! leftovers, and a stale lock of git's in the mirror. Each test reproduces its fault at the
//! exact point and checks every host afterwards.

use std::fs;
use std::time::Duration;

use crate::support::{Fleet, TestHost, wait_until};

/// A fault script line that freezes the whole host (every process in its mount namespace is
/// stopped, the calling one last): it stops answering, as a host that hangs does.
const FREEZE: &str = "me=$(readlink /proc/self/ns/mnt); l=; for p in /proc/[0-9]*; do \
    p=${p#/proc/}; [ \"$p\" = \"$$\" ] && continue; \
    [ \"$(readlink /proc/$p/ns/mnt 2>/dev/null)\" = \"$me\" ] && l=\"$l $p\"; done; \
    kill -STOP $l 2>/dev/null; kill -STOP $$";

/// A fleet whose inventory deploys `main` of a git repository of the example app.
fn git_fleet(n: usize) -> Fleet {
    let fleet = Fleet::start(n);
    let repo = fleet.example_repository();
    fleet.inventory("", "");
    fleet.set_source(&format!("{{ git: {}, ref: main }}", repo.display()));
    fleet
}

#[test]
fn a_host_lost_right_after_logging_in_fails_at_connect_within_the_connect_timeout() {
    let fleet = Fleet::start(2);
    // Keepalives so rare that only the connect timeout (5 s) can end the wait.
    fleet.inventory("", "    keepalive_interval: 60s\n");
    // web-2 logs ship in, then freezes as the session's shell starts: no command ever answers.
    fleet.host(1).fault("sh", FREEZE);
    let mut running = fleet.spawn_ship(&["deploy", "production"]);
    // Connect timeout 5 s in the test inventory: far less than this bound, and the step
    // timeout (30 min) is what it waited for before.
    wait_until(
        "ship gives up on the frozen host",
        Duration::from_secs(60),
        || running.child.try_wait().ok().flatten().is_some(),
    );
    let run = running.finish();
    fleet.host(1).thaw();
    fs::remove_file(fleet.host(1).faults.join("sh")).expect("fault");
    assert_eq!(run.code, 1, "{}", run.all());
    let all = run.all();
    assert!(
        all.contains(
            "[web-2] FAILED at connect (preflight): logged in, but the host did not answer its \
             first command within 5.0s (connect_timeout)"
        ),
        "{all}"
    );
    for h in &fleet.hosts {
        assert!(h.releases().is_empty(), "{}", h.name);
        assert!(h.current().is_none(), "{}", h.name);
        assert!(!h.locked(), "{}", h.name);
    }
    // The host is back: the next deploy goes through.
    let again = fleet.deploy();
    assert_eq!(again.code, 0, "{}", again.all());
}

#[test]
fn a_host_lost_while_taking_the_lock_is_named_as_lost_with_its_lock_not_as_held() {
    let mut fleet = Fleet::start(3);
    fleet.inventory("", "");
    let first = fleet.deploy();
    assert_eq!(first.code, 0, "{}", first.all());
    let live = fleet.host(0).current_id().expect("current");
    // web-2 takes the lock, then crashes before it can say so.
    fleet.host(1).fault(
        "mkdir",
        &format!(
            "/bin/mkdir \"$@\"; rc=$?; case \"$*\" in *.ship/lock*) {} ;; esac; exit $rc",
            TestHost::CRASH
        ),
    );
    let run = fleet.deploy();
    let all = run.all();
    assert_eq!(
        run.code, 3,
        "a lost host needs attention; no one else holds a lock: {all}"
    );
    assert!(all.contains("[web-2] FAILED at lock"), "{all}");
    assert!(!all.contains("is locked by"), "{all}");
    assert!(
        all.contains("web-2: still locked"),
        "the summary says its lock may be left: {all}"
    );
    for i in [0, 2] {
        let h = fleet.host(i);
        assert_eq!(h.current_id().as_deref(), Some(live.as_str()), "{}", h.name);
        assert_eq!(h.releases(), vec![live.clone()], "{}", h.name);
        assert!(!h.locked(), "{}: our lock given back", h.name);
    }
    let lost = fleet.host(1);
    assert_eq!(lost.current_id().as_deref(), Some(live.as_str()));
    assert!(
        lost.locked(),
        "web-2 kept our lock: it took it before it crashed"
    );
    fs::remove_file(fleet.host(1).faults.join("mkdir")).expect("fault");
    fleet.hosts[1].restart();
    // It crashed between taking the lock and writing who holds it: status says so, and how
    // to clear it.
    let status = fleet.ship(&["status", "production"]);
    assert_eq!(status.code, 3, "{}", status.all());
    assert!(
        status.stdout.contains(
            "web-2: locked by a run that left no owner record (it died while taking the lock)"
        ) && status
            .stdout
            .contains("`ship lock release production` removes its lock"),
        "{}",
        status.all()
    );
    let released = fleet.ship(&["lock", "release", "production", "--yes"]);
    assert_eq!(released.code, 0, "{}", released.all());
    assert!(!fleet.host(1).locked());
    let again = fleet.deploy();
    assert_eq!(again.code, 0, "{}", again.all());
}

#[test]
fn an_interrupted_checkout_leaves_nothing_in_the_ship_directory() {
    let fleet = git_fleet(2);
    let first = fleet.deploy();
    assert_eq!(first.code, 0, "{}", first.all());
    let live = fleet.host(0).current_id().expect("current");
    // web-2's checkout hangs between `git archive -o .ship/<id>.tar` and its removal; web-1's
    // build fails once web-2 is there, and the deploy stops web-2's checkout at that point.
    let there = fleet.dir().join("web-2-in-tar");
    fleet.host(1).fault(
        "tar",
        &format!(
            "case \"$*\" in *.ship/*.tar*) touch {}; sleep 30;; esac; exec /bin/tar \"$@\"",
            there.display()
        ),
    );
    fs::write(fleet.host(0).path("shared/FAIL_BUILD"), "").expect("marker");
    fleet.edit_inventory(|t| {
        t.replace(
            "build: [\"sh build.sh\"]",
            &format!(
                "build: [\"while [ ! -e {} ]; do sleep 0.1; done; sh build.sh\"]",
                there.display()
            ),
        )
    });
    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    fs::remove_file(fleet.host(1).faults.join("tar")).expect("fault");
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(live.as_str()), "{}", h.name);
        assert_eq!(h.releases(), vec![live.clone()], "{}", h.name);
        assert!(!h.locked(), "{}", h.name);
        let left: Vec<String> = fs::read_dir(h.path(".ship"))
            .expect(".ship")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tar") || n.starts_with("work-") || n.starts_with("stage-"))
            .collect();
        assert!(left.is_empty(), "{}: left in .ship/: {left:?}", h.name);
    }
}

#[test]
fn a_stale_git_lock_in_the_mirror_is_cleared_and_a_running_git_is_waited_for() {
    let fleet = git_fleet(2);
    let first = fleet.deploy();
    assert_eq!(first.code, 0, "{}", first.all());
    let config = fleet.host(0).path("repo/config");
    let written = fs::metadata(&config)
        .expect("config")
        .modified()
        .expect("mtime");
    // A fetch stopped by a signal left git's lock on web-1.
    fs::write(fleet.host(0).path("repo/config.lock"), "").expect("lock");
    std::thread::sleep(Duration::from_millis(20));
    let run = fleet.ship(&["deploy", "production", "-v"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.all()
            .contains("removed git's lock files in repo/ left by a git that was stopped"),
        "{}",
        run.all()
    );
    assert!(!fleet.host(0).path("repo/config.lock").exists());
    // The URL did not change: the mirror's config was not written again.
    assert_eq!(
        fs::metadata(&config)
            .expect("config")
            .modified()
            .expect("mtime"),
        written
    );
    let live = fleet.host(0).current_id().expect("current");
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(live.as_str()), "{}", h.name);
        assert!(!h.locked());
    }

    // A git that still runs in deploy_to: its lock is not taken from it.
    fs::write(fleet.host(0).path("repo/config.lock"), "").expect("lock");
    let web1 = fleet.host(0);
    let pid = web1.sshd_pid().expect("running");
    let mut git_running = std::process::Command::new("nsenter")
        .arg(format!("--mount=/proc/{pid}/ns/mnt"))
        .args([
            "sh",
            "-c",
            "cd /var/www/app && exec git --git-dir=repo cat-file --batch",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("git");
    wait_until("git runs", Duration::from_secs(10), || {
        fs::read_link(format!("/proc/{}/exe", git_running.id()))
            .is_ok_and(|e| e.to_string_lossy().ends_with("/git"))
    });
    let refused = fleet.deploy();
    let _ = git_running.kill();
    let _ = git_running.wait();
    assert_eq!(refused.code, 1, "{}", refused.all());
    let all = refused.all();
    assert!(
        all.contains("repo/config.lock exists and git (pid ")
            && all.contains("still runs in /var/www/app (hint: wait for it to end, or stop it"),
        "{all}"
    );
    assert!(
        web1.path("repo/config.lock").exists(),
        "a running git's lock is its own"
    );
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(live.as_str()), "{}", h.name);
        assert!(!h.locked());
    }
    fs::remove_file(web1.path("repo/config.lock")).expect("rm");
}
