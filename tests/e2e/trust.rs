//! Trust: what an ops lead reading `ps` on a host, a security reviewer with hostile inventory
//! values or repository content, and an on-call engineer clearing a stale lock would try (see
//! docs/security.md). Each test failed before the fix it covers.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{Fleet, wait_until};

/// A secret with every character a quoting bug would trip on.
const SECRET: &str = "tok-7Qx'$(id)\"`b`\\n;|&*~ end";
/// A part of it that no other text in a test run has.
const SECRET_CORE: &str = "tok-7Qx";

/// Every process's arguments on this machine (the hosts are namespaces on it), joined.
fn all_cmdlines() -> Vec<String> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .collect()
}

/// Watch every process's arguments while `run` runs; the lines that held `needle`.
pub(crate) fn scan_while<T>(
    needle: &'static str,
    run: impl FnOnce() -> T,
) -> (T, Vec<String>, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let found = Arc::new(Mutex::new(Vec::new()));
    let scans = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watcher = {
        let (stop, found, scans) = (stop.clone(), found.clone(), scans.clone());
        std::thread::spawn(move || {
            loop {
                let last = stop.load(Ordering::SeqCst);
                for line in all_cmdlines() {
                    if line.contains(needle) {
                        if let Ok(mut f) = found.lock() {
                            f.push(line);
                        }
                    }
                }
                scans.fetch_add(1, Ordering::SeqCst);
                if last {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let out = run();
    stop.store(true, Ordering::SeqCst);
    watcher.join().expect("watcher");
    let mut found = found.lock().map(|f| f.clone()).unwrap_or_default();
    found.sort();
    found.dedup();
    (out, found, scans.load(Ordering::SeqCst))
}

#[test]
fn a_secret_never_appears_in_any_process_arguments_on_the_hosts_nor_in_any_output() {
    let fleet = Fleet::start(2);
    let yaml_secret = serde_json::to_string(SECRET).expect("json is yaml");
    fleet.inventory(
        &format!(
            "  env:\n    API_TOKEN: {{ value: {yaml_secret}, secret: true }}\n  \
             run_once: [\"sleep 1\"]\n  after_switch: [\"sleep 1\"]\n  \
             health_check: {{ command: \"sleep 1\", retries: 1 }}\n"
        ),
        "",
    );
    // The step proves the secret reached it, literally, and runs long enough to be seen.
    fleet.edit_inventory(|t| {
        t.replace(
            "build: [\"sh build.sh\"]",
            "build: [\"sh build.sh\", \"printf %s \\\"$API_TOKEN\\\" > token.txt; sleep 1\"]",
        )
    });
    let (run, seen, scans) = scan_while(SECRET_CORE, || {
        fleet.ship(&["deploy", "production", "-v", "--json"])
    });
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        scans > 20,
        "the scan ran all along the deploy ({scans} scans)"
    );
    assert!(
        seen.is_empty(),
        "the secret was in process arguments: {seen:?}"
    );
    assert!(!run.all().contains(SECRET_CORE), "{}", run.all());
    let id = fleet.host(0).current_id().expect("current");
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(id.as_str()), "{}", h.name);
        assert_eq!(
            fs::read_to_string(h.path("current/token.txt")).expect("token"),
            SECRET,
            "{}: the step got the value as it is",
            h.name
        );
        assert!(!h.locked());
        let journal = fs::read_to_string(h.path(".ship/history")).expect("journal");
        assert!(!journal.contains(SECRET_CORE), "{journal}");
    }
    // Plain and verbose output, plan (text and JSON), config (YAML and JSON): masked in every
    // form, quoted or not.
    for args in [
        &["deploy", "production", "-v"][..],
        &["plan", "production"],
        &["plan", "production", "--json"],
        &["config", "production"],
        &["config", "production", "--json"],
        &["status", "production", "--json"],
        &["releases", "production", "--json"],
    ] {
        let (run, seen, _) = scan_while(SECRET_CORE, || fleet.ship(args));
        assert!(matches!(run.code, 0), "{args:?}: {}", run.all());
        assert!(!run.all().contains(SECRET_CORE), "{args:?}: {}", run.all());
        assert!(!run.all().contains("7Qx"), "{args:?}: {}", run.all());
        assert!(seen.is_empty(), "{args:?}: in process arguments: {seen:?}");
    }
    let plan = fleet.ship(&["plan", "production"]);
    assert!(plan.stdout.contains("****"), "{}", plan.stdout);
}

#[test]
fn credentials_in_a_git_url_are_masked_in_config_and_errors() {
    let fleet = Fleet::start(1);
    fleet.inventory("", "");
    // Nothing listens on port 9: resolving the ref fails on the controller.
    fleet.set_source("{ git: \"https://deploy:hunter2-pw@127.0.0.1:9/app.git\", ref: main }");
    for args in [
        &["config", "production"][..],
        &["config", "production", "--json"],
        &["deploy", "production"],
        &["plan", "production"],
    ] {
        let run = fleet.ship(args);
        let all = run.all();
        assert!(!all.contains("hunter2"), "{args:?}: {all}");
        if args[0] == "config" {
            assert_eq!(run.code, 0, "{all}");
            assert!(
                all.contains("https://deploy:****@127.0.0.1:9/app.git"),
                "{all}"
            );
        } else {
            assert_ne!(run.code, 0, "{all}");
            assert!(
                all.contains("https://deploy:****@127.0.0.1:9/app.git"),
                "{all}"
            );
        }
    }
    let h = fleet.host(0);
    assert!(h.releases().is_empty() && !h.locked() && h.current().is_none());
}

/// Point the inventory's source at `source` (a YAML flow mapping), whatever it was.
fn set_source(fleet: &Fleet, source: &str) {
    let text = fs::read_to_string(fleet.dir().join("inventory.yaml")).expect("inventory");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("source: "))
        .expect("a source line")
        .to_owned();
    let new = format!("  source: {source}");
    // The same source again (a rebuilt tarball at the same path) is no edit.
    if line != new {
        fleet.edit_inventory(|t| t.replace(&line, &new));
    }
}

/// A tarball of the example app plus `extra` (paths and link targets), as an artifact source.
fn artifact_with_links(fleet: &Fleet, links: &[(&str, &str)]) -> std::path::PathBuf {
    let src = fleet.copy_example_app("app-src");
    for (path, target) in links {
        let p = src.join(path);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, &p).expect("symlink");
    }
    let tarball = fleet.dir().join("app.tar.gz");
    let packed = Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .expect("tar");
    assert!(packed.success());
    tarball
}

#[test]
fn a_link_the_release_brought_is_never_written_or_chmodded_through() {
    let fleet = Fleet::start(2);
    fleet.inventory("", "");
    let first = fleet.deploy();
    assert_eq!(first.code, 0, "{}", first.all());
    let live = fleet.host(0).current_id().expect("current");
    let snaps: Vec<_> = fleet.hosts.iter().map(|h| h.shared_snapshot()).collect();
    // Outside deploy_to on every host: a file the link would lead ship to, a private
    // directory and a private key.
    let outside = Path::new("/var/www/outside");
    for h in &fleet.hosts {
        let o = h.path("../outside");
        fs::create_dir_all(o.join("private")).expect("mkdir");
        fs::write(o.join("secret.txt"), "keep me\n").expect("write");
        fs::set_permissions(o.join("private"), fs::Permissions::from_mode(0o700)).expect("chmod");
        fs::write(o.join("id_key"), "KEY\n").expect("write");
        fs::set_permissions(o.join("id_key"), fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let untouched = |why: &str| {
        for h in &fleet.hosts {
            let o = h.path("../outside");
            assert_eq!(
                fs::read_to_string(o.join("secret.txt")).expect("secret.txt"),
                "keep me\n",
                "{}: {why}",
                h.name
            );
            assert!(!o.join("secret.txt").is_symlink(), "{}: {why}", h.name);
            let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode(&o.join("private")), 0o700, "{}: {why}", h.name);
            assert_eq!(mode(&o.join("id_key")), 0o600, "{}: {why}", h.name);
        }
    };

    // 1. A shared file under a directory the release made a link: refused before the barrier.
    let tarball = artifact_with_links(&fleet, &[("conf", &outside.display().to_string())]);
    set_source(&fleet, &format!("{{ artifact: {} }}", tarball.display()));
    fleet.edit_inventory(|t| t.replace("files: [.env]", "files: [.env, conf/secret.txt]"));
    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    let all = run.all();
    assert!(
        all.contains("releases/") && all.contains("/conf is a symlink in the release"),
        "{all}"
    );
    assert!(all.contains("shared.files: conf/secret.txt"), "{all}");
    assert!(all.contains("FAILED at prepare (link)"), "{all}");
    untouched("no write through the release's link");
    for (h, snap) in fleet.hosts.iter().zip(&snaps) {
        assert_eq!(h.current_id().as_deref(), Some(live.as_str()), "{}", h.name);
        assert_eq!(h.releases(), vec![live.clone()], "{}", h.name);
        assert!(!h.locked(), "{}", h.name);
        // shared/ gained nothing (the refusal came before any shared path was made).
        assert_eq!(&h.shared_snapshot(), snap, "{}", h.name);
    }

    // 2. A writable path that is a link in the release: refused, its target's mode unchanged.
    fleet.edit_inventory(|t| t.replace("files: [.env, conf/secret.txt]", "files: [.env]"));
    let tarball = artifact_with_links(&fleet, &[("cache", "/var/www/outside/private")]);
    set_source(&fleet, &format!("{{ artifact: {} }}", tarball.display()));
    fleet.edit_inventory(|t| {
        t.replace(
            "  build: [\"sh build.sh\"]\n",
            "  build: [\"sh build.sh\"]\n  writable: { paths: [cache, storage], mode: chmod, chmod: a+rwX }\n",
        )
    });
    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all()
            .contains("/cache is a symlink in the release (writable: cache)"),
        "{}",
        run.all()
    );
    untouched("no chmod through the release's link");
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(live.as_str()), "{}", h.name);
        assert_eq!(h.releases(), vec![live.clone()], "{}", h.name);
        assert!(!h.locked(), "{}", h.name);
    }

    // 3. Links inside a writable directory are neither followed nor changed: the deploy goes
    // on, and the key keeps its mode.
    let tarball = artifact_with_links(
        &fleet,
        &[
            ("cache/key", "/var/www/outside/id_key"),
            ("cache/dir", "/var/www/outside/private"),
        ],
    );
    set_source(&fleet, &format!("{{ artifact: {} }}", tarball.display()));
    let run = fleet.deploy();
    assert_eq!(run.code, 0, "{}", run.all());
    untouched("links inside a writable path are skipped");
    let new = fleet.host(0).current_id().expect("current");
    assert_ne!(new, live);
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(new.as_str()), "{}", h.name);
        let mode = fs::metadata(h.path("current/cache"))
            .expect("cache")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o777,
            "{}: the release's own directory",
            h.name
        );
        assert!(!h.locked());
    }
}

#[test]
fn lock_release_after_a_killed_rollback_keeps_the_rollback_target() {
    let fleet = Fleet::start(2);
    fleet.inventory("", "");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let run = fleet.deploy();
        assert_eq!(run.code, 0, "{}", run.all());
        ids.push(fleet.host(0).current_id().expect("current"));
    }
    let snaps: Vec<_> = fleet.hosts.iter().map(|h| h.shared_snapshot()).collect();
    // The rollback stalls while it stages its target's link (after it took the locks), and
    // the controller is killed there.
    for h in &fleet.hosts {
        h.fault(
            "ln",
            "touch /var/www/app/.ln-called; sleep 60; exec /bin/ln \"$@\"",
        );
    }
    let running = fleet.spawn_ship(&["rollback", "production"]);
    wait_until("the rollback stages", Duration::from_secs(30), || {
        fleet.hosts.iter().all(|h| h.path(".ln-called").exists())
    });
    running.signal("-KILL");
    let killed = running.finish();
    assert_ne!(killed.code, 0);
    for h in &fleet.hosts {
        fs::remove_file(h.faults.join("ln")).expect("remove the fault");
        fs::remove_file(h.path(".ln-called")).expect("marker");
        assert!(h.locked(), "{}: the killed run's lock", h.name);
        let owner: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(h.path(".ship/lock/owner")).expect("owner"))
                .expect("json");
        assert_eq!(owner["kind"], "rollback", "{owner}");
        assert_eq!(owner["release"], ids[0].as_str(), "{owner}");
    }
    let status = fleet.ship(&["status", "production"]);
    assert!(
        status.stdout.contains(&format!("rollback of {}", ids[0])),
        "{}",
        status.all()
    );
    let released = fleet.ship(&["lock", "release", "production", "--yes"]);
    assert_eq!(released.code, 0, "{}", released.all());
    for (h, snap) in fleet.hosts.iter().zip(&snaps) {
        // Both complete releases are still there: the rollback target was never "staged".
        assert_eq!(h.releases(), ids, "{}", h.name);
        assert_eq!(
            h.current_id().as_deref(),
            Some(ids[1].as_str()),
            "{}",
            h.name
        );
        assert!(h.path(&format!("releases/{}/REVISION", ids[0])).exists());
        assert!(!h.locked(), "{}", h.name);
        assert!(!h.path(&format!(".ship/stage-{}", ids[0])).exists());
        assert_eq!(&h.shared_snapshot(), snap, "{}", h.name);
        assert!(
            released.stdout.contains(&format!("{}: removed", h.name)),
            "{}",
            released.all()
        );
    }
    // And the fleet can still roll back to it.
    let back = fleet.ship(&["rollback", "production"]);
    assert_eq!(back.code, 0, "{}", back.all());
    for h in &fleet.hosts {
        assert_eq!(
            h.current_id().as_deref(),
            Some(ids[0].as_str()),
            "{}",
            h.name
        );
    }
}

/// What a build step finds when it tries every ssh-agent socket of its host: the keys each
/// lists. (The test hosts share this machine's /tmp; a socket belongs to the host whose sshd
/// process, `agent.<pid>`, is in the step's mount namespace, as it would be alone in a real
/// server's /tmp.)
const TRY_EVERY_AGENT: &str = "me=$(readlink /proc/self/ns/mnt); \
     for s in /tmp/ssh-*/agent.* \"$SSH_AUTH_SOCK\"; do [ -S \"$s\" ] || continue; \
     p=${s##*.}; [ \"$(readlink /proc/$p/ns/mnt 2>/dev/null)\" = \"$me\" ] || continue; \
     echo \"socket $s\"; SSH_AUTH_SOCK=\"$s\" ssh-add -l 2>&1; \
     done > agent-scan.txt; cat agent-scan.txt";

#[test]
fn the_operators_agent_is_reachable_only_from_the_git_steps() {
    let fleet = Fleet::start(2);
    let (server, key) = fleet.forwarding_to_git_server();
    let work = server.dir.join("work");
    fs::create_dir_all(work.join("public")).expect("mkdir");
    fs::write(work.join("public/index.html"), "v1\n").expect("write");
    crate::support::git(&work, &["init", "-q", "-b", "main"]);
    crate::support::git(&work, &["add", "-A"]);
    crate::support::git(&work, &["commit", "-q", "-m", "v1"]);
    crate::support::git(&server.dir, &["clone", "-q", "--bare", "work", "app.git"]);
    fleet.set_source(&format!(
        "{{ git: \"{}\", ref: main }}",
        server.url("app.git")
    ));
    fleet.edit_inventory(|t| {
        t.replace(
            "build: [\"sh build.sh\"]",
            &format!(
                "build: [{}]",
                serde_json::to_string(TRY_EVERY_AGENT).expect("json")
            ),
        )
    });
    let agent = fleet.agent(&[&key]);
    let listed = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(key.with_extension("pub"))
        .output()
        .expect("ssh-keygen");
    let fingerprint = String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_owned();
    let run = fleet.ship_env(
        &["deploy", "production", "-v"],
        &[("SSH_AUTH_SOCK", agent.socket.as_path())],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    let id = fleet.host(0).current_id().expect("current");
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(id.as_str()), "{}", h.name);
        assert_eq!(
            fs::read_to_string(h.path("current/public/index.html")).expect("index"),
            "v1\n",
            "{}: fetched through the agent",
            h.name
        );
        let scan = fs::read_to_string(h.path("current/agent-scan.txt")).expect("scan");
        // (Other tests' agents may be visible in the shared /tmp of this machine: only this
        // test's key counts.)
        assert!(
            !scan.contains(&fingerprint),
            "{}: a build step reached the operator's agent: {scan}",
            h.name
        );
        assert!(!h.locked());
    }
}
