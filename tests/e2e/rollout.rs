//! Rollout operations against real sshd hosts: rollback, canary, health checks, run-once and
//! after-switch steps, local hooks, `ship releases`, `ship check`, `--dry-run`. Every test
//! asserts where `current` points on every host afterwards, which releases exist, the marks,
//! the locks, the exit code and the message.

use std::fs;
use std::time::Duration;

use crate::support::{DEPLOY_TO, Fleet, wait_until};

/// Deploy and return the release id every host is now on.
fn deploy_ok(fleet: &Fleet, args: &[&str]) -> String {
    let mut a = vec!["deploy", "production"];
    a.extend_from_slice(args);
    let run = fleet.ship(&a);
    assert_eq!(run.code, 0, "{}", run.all());
    let id = fleet.host(0).current_id().expect("current");
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(id.as_str()), "{}", h.name);
        assert!(!h.locked(), "{} lock", h.name);
    }
    id
}

fn bad_marks(h: &crate::support::TestHost) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(h.path(".ship/bad"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn rollback_returns_the_fleet_to_the_previous_release_and_marks_the_bad_one() {
    let fleet = Fleet::start(3);
    fleet.inventory("", "");
    let a = deploy_ok(&fleet, &[]);
    let b = deploy_ok(&fleet, &[]);
    assert_ne!(a, b);

    let run = fleet.ship(&["rollback", "production"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains(&format!(
            "rolled production back to {a}: 3/3 hosts switched"
        )),
        "{}",
        run.stdout
    );
    fleet.assert_on(&a, &[&a, &b]);
    for h in &fleet.hosts {
        assert_eq!(bad_marks(h), vec![b.clone()], "{}: marks", h.name);
        let j = h.journal();
        let last = j.last().expect("journal");
        assert_eq!(last["kind"], "rollback");
        assert_eq!(last["release"], a.as_str());
        assert_eq!(last["previous"], b.as_str());
        assert_eq!(last["outcome"], "deployed");
    }
    assert!(run.stdout.contains("flip skew"), "{}", run.stdout);

    // `ship releases` shows it all, and that the fleet agrees.
    let rel = fleet.ship(&["releases", "production"]);
    assert_eq!(rel.code, 0, "{}", rel.all());
    assert!(
        rel.stdout
            .contains(&format!("the fleet agrees: every host is on {a}")),
        "{}",
        rel.stdout
    );
    assert_eq!(rel.stdout.matches("bad (rolled back from)").count(), 3);
    assert_eq!(rel.stdout.matches("current").count(), 3, "{}", rel.stdout);
    assert!(rel.stdout.contains("sha256:"), "{}", rel.stdout);

    // A rollback from A has nothing good before it: refused, nothing changes.
    let run = fleet.ship(&["rollback", "production"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all()
            .contains(&format!("{a} was the first release deployed here")),
        "{}",
        run.all()
    );
    fleet.assert_on(&a, &[&a, &b]);

    // A new deploy C; its default rollback target is A (the release current before C), never
    // the bad B, though B is newer.
    let c = deploy_ok(&fleet, &[]);
    let run = fleet.ship(&["rollback", "production"]);
    assert_eq!(run.code, 0, "{}", run.all());
    fleet.assert_on(&a, &[&a, &b, &c]);
    for h in &fleet.hosts {
        assert_eq!(bad_marks(h), vec![b.clone(), c.clone()], "{}", h.name);
    }

    // Named on purpose, a bad release can be switched to; the mark is then cleared. B is newer
    // than A: that is a move forward, not a rollback, and A is not marked bad for it.
    let run = fleet.ship(&["rollback", "production", "--to", &b]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains(&format!(
            "switched production forward to {b}: 3/3 hosts switched (a newer release: nothing \
             was marked bad)"
        )),
        "{}",
        run.stdout
    );
    fleet.assert_on(&b, &[&a, &b, &c]);
    for h in &fleet.hosts {
        assert_eq!(bad_marks(h), vec![c.clone()], "{}", h.name);
    }
}

#[test]
fn rollback_to_a_release_missing_on_one_host_changes_nothing() {
    let fleet = Fleet::start(3);
    fleet.inventory("", "");
    let a = deploy_ok(&fleet, &[]);
    let b = deploy_ok(&fleet, &[]);
    fs::remove_dir_all(fleet.host(1).path(&format!("releases/{a}"))).expect("remove on web-2");
    let before: Vec<_> = fleet.hosts.iter().map(|h| h.journal().len()).collect();

    let run = fleet.ship(&["rollback", "production", "--to", &a]);
    assert_eq!(run.code, 1, "{}", run.all());
    let text = run.all();
    assert!(
        text.contains(&format!(
            "[web-2] FAILED at connect (rollback target): releases/{a} does not exist on this host"
        )) || text.contains(&format!(
            "web-2: failed at connect (rollback target): releases/{a} does not exist"
        )),
        "{text}"
    );
    assert!(!text.contains("[web-1] FAILED"), "{text}");
    for (i, h) in fleet.hosts.iter().enumerate() {
        assert_eq!(h.current_id().as_deref(), Some(b.as_str()), "{}", h.name);
        assert!(!h.locked(), "{}", h.name);
        assert!(bad_marks(h).is_empty(), "{}", h.name);
        assert_eq!(h.journal().len(), before[i], "{}: nothing recorded", h.name);
    }
    // Not a release id at all: a usage error before any host is contacted.
    let run = fleet.ship(&["rollback", "production", "--to", "../etc"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("is not a release id"), "{}", run.stderr);
}

/// One release id with two revisions (two deploys to different hosts in the same second would
/// make it): `ship status` does not call the fleet consistent, and a rollback to that id is
/// refused with nothing changed.
#[test]
fn one_release_id_with_two_revisions_is_not_one_release() {
    let fleet = Fleet::start(2);
    fleet.inventory("", "");
    let a = deploy_ok(&fleet, &[]);
    let other = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    fs::write(
        fleet.host(1).path(&format!("releases/{a}/REVISION")),
        format!("{other}\n"),
    )
    .expect("REVISION");
    let revision = fs::read_to_string(fleet.host(0).path(&format!("releases/{a}/REVISION")))
        .expect("REVISION")
        .trim()
        .to_owned();
    let status = fleet.ship(&["status", "production"]);
    assert_eq!(status.code, 3, "{}", status.all());
    assert!(
        status.stdout.contains(&format!(
            "production: NOT consistent: every host is on {a}, but not on the same revision of it"
        )) && status
            .stdout
            .contains(&format!("web-1: {a} is revision {revision}"))
            && status
                .stdout
                .contains(&format!("web-2: {a} is revision {other}")),
        "{}",
        status.all()
    );
    let json = fleet.ship(&["status", "production", "--json"]);
    let v: serde_json::Value = serde_json::from_str(json.stdout.trim()).expect("json");
    assert_eq!(
        (&v["consistent"], &v["revision_mismatch"]),
        (&false.into(), &true.into())
    );

    let b = deploy_ok(&fleet, &[]);
    let before: Vec<_> = fleet.hosts.iter().map(|h| h.journal().len()).collect();
    let run = fleet.ship(&["rollback", "production", "--to", &a]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all().contains(&format!(
            "releases/{a} here is revision {other}, but on web-1 it is {revision}"
        )),
        "{}",
        run.all()
    );
    for (i, h) in fleet.hosts.iter().enumerate() {
        assert_eq!(h.current_id().as_deref(), Some(b.as_str()), "{}", h.name);
        assert_eq!(h.releases(), vec![a.clone(), b.clone()], "{}", h.name);
        assert!(!h.locked(), "{}", h.name);
        assert_eq!(h.journal().len(), before[i], "{}: nothing recorded", h.name);
    }
}

/// Every host gets an HTTP health check on its own web server.
fn http_health(fleet: &Fleet, port: u16) {
    for i in 0..fleet.hosts.len() {
        let addr = fleet.host(i).address.clone();
        fleet.host_settings(
            i,
            &format!(
                "health_check: {{ url: \"http://{addr}:{port}/release.txt\", retries: 2, \
                 interval: 200ms, timeout: 2s }}"
            ),
        );
    }
}

#[test]
fn canary_switches_first_passes_its_http_check_then_the_rest_follow() {
    let fleet = Fleet::start(3);
    let hooks = fleet.dir().join("hooks.log");
    fleet.inventory(
        &format!(
            "  hooks:\n    before_deploy: [\"echo before $SHIP_STAGE $SHIP_KIND >> {l}\"]\n    \
             after_deploy: [\"echo after $SHIP_RELEASE_ID $SHIP_RESULT >> {l}\"]\n    \
             on_failure: [\"echo failure $SHIP_RESULT >> {l}\"]\n",
            l = hooks.display()
        ),
        "",
    );
    let a = deploy_ok(&fleet, &[]);
    let _servers: Vec<_> = fleet.hosts.iter().map(|h| h.serve_http(18080)).collect();
    http_health(&fleet, 18080);

    let run = fleet.ship(&[
        "deploy",
        "production",
        "--canary",
        "1",
        "--observe",
        "2s",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let events: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let observing = events
        .iter()
        .find(|e| e["event"] == "observing")
        .expect("an observing event");
    assert_eq!(observing["hosts"], serde_json::json!(["web-1"]));
    let summary = &events.last().expect("events")["summary"];
    assert_eq!(summary["outcome"], "deployed");
    assert_eq!(summary["canary"], serde_json::json!(["web-1"]));
    let b = fleet.host(0).current_id().expect("current");
    fleet.assert_on(&b, &[&a, &b]);
    // The canary switched, was checked, was watched for 2 s; then the rest switched together.
    let at = |i: usize| {
        summary["hosts"][i]["switched_at_unix_ns"]
            .as_u64()
            .map(u128::from)
            .or_else(|| {
                summary["hosts"][i]["switched_at_unix_ns"]
                    .as_f64()
                    .map(|f| f as u128)
            })
            .expect("switch time")
    };
    assert!(at(1) > at(0) + 2_000_000_000, "{summary}");
    // The rest switched in one wave, at one instant (no clock bound: the wave says it).
    assert_eq!(
        summary["waves"],
        serde_json::json!([
            {"hosts": ["web-1"], "flip_skew_ms": summary["waves"][0]["flip_skew_ms"]},
            {"hosts": ["web-2", "web-3"], "flip_skew_ms": summary["waves"][1]["flip_skew_ms"]}
        ]),
        "{summary}"
    );
    assert!(at(2) > at(0) + 2_000_000_000, "{summary}");
    // Every host's check passed (the verify phase ran on all three).
    let health_ok = events
        .iter()
        .filter(|e| e["event"] == "step_finished" && e["step"] == "health check" && e["ok"] == true)
        .count();
    assert_eq!(health_ok, 3, "{}", run.stdout);
    // Local hooks ran on the controller with the run's details.
    let log = fs::read_to_string(&hooks).expect("hooks ran");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines[lines.len() - 2..],
        [
            "before production deploy".to_owned(),
            format!("after {b} deployed")
        ]
    );
}

#[test]
fn a_failing_canary_is_switched_back_and_the_release_removed_everywhere() {
    let fleet = Fleet::start(3);
    let hooks = fleet.dir().join("hooks.log");
    fleet.inventory(
        &format!(
            "  hooks:\n    on_failure: [\"echo failure $SHIP_RESULT >> {}\"]\n",
            hooks.display()
        ),
        "",
    );
    let a = deploy_ok(&fleet, &[]);
    // web-1 (the canary) has no web server: its check fails. The others would pass.
    let _servers: Vec<_> = fleet.hosts[1..]
        .iter()
        .map(|h| h.serve_http(18081))
        .collect();
    http_health(&fleet, 18081);

    let run = fleet.ship(&["deploy", "production", "--canary", "web-1"]);
    assert_eq!(run.code, 1, "{}", run.all());
    let text = run.all();
    assert!(text.contains("failed its checks"), "{text}");
    assert!(
        text.contains("[web-1] FAILED at verify (health check)"),
        "{text}"
    );
    assert!(text.contains("status 000 (expected 200)"), "{text}");
    // Nobody else ever switched; the canary is back; the release is gone everywhere.
    fleet.assert_on(&a, &[&a]);
    assert!(!text.contains("[web-2] switched"), "{text}");
    for h in &fleet.hosts {
        assert!(bad_marks(h).is_empty(), "{}", h.name);
        assert_eq!(
            h.journal().last().expect("journal")["outcome"],
            "rolled_back"
        );
    }
    assert_eq!(
        fs::read_to_string(&hooks).expect("on_failure ran").trim(),
        "failure rolled_back"
    );
}

#[test]
fn interrupting_the_canary_hold_switches_the_canary_back() {
    let fleet = Fleet::start(2);
    fleet.inventory("", "");
    let a = deploy_ok(&fleet, &[]);
    let running = fleet.spawn_ship(&["deploy", "production", "--canary", "1", "--observe", "60s"]);
    crate::support::wait_until(
        "the canary is switched",
        std::time::Duration::from_secs(60),
        || fleet.host(0).current_id().as_deref() != Some(a.as_str()),
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    running.signal("-INT");
    let run = running.finish();
    assert_eq!(run.code, 130, "{}", run.all());
    assert!(
        run.stderr.contains("interrupted during the canary"),
        "{}",
        run.stderr
    );
    fleet.assert_on(&a, &[&a]);
}

#[test]
fn a_failed_health_check_after_the_switch_rolls_the_fleet_back_and_keeps_the_release_as_bad() {
    let fleet = Fleet::start(3);
    fleet.inventory(
        "  health_check: { command: \"test ! -e $SHIP_DEPLOY_TO/shared/UNHEALTHY\", retries: 2, interval: 100ms }\n",
        "",
    );
    let a = deploy_ok(&fleet, &[]);
    fs::write(fleet.host(1).path("shared/UNHEALTHY"), "").expect("marker");
    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    let text = run.all();
    assert!(
        text.contains("failed its checks after the switch; the whole fleet was switched back"),
        "{text}"
    );
    assert!(
        text.contains("[web-2] FAILED at verify (health check)")
            && text.contains("the command exited with status 1"),
        "{text}"
    );
    let b = fleet
        .host(0)
        .releases()
        .into_iter()
        .find(|r| *r != a)
        .expect("the new release is kept");
    fleet.assert_on(&a, &[&a, &b]);
    for h in &fleet.hosts {
        assert_eq!(bad_marks(h), vec![b.clone()], "{}", h.name);
        assert_eq!(h.journal().last().expect("j")["outcome"], "rolled_back");
    }
    fs::remove_file(fleet.host(1).path("shared/UNHEALTHY")).expect("rm");
    fs::write(fleet.host(0).path("shared/.env"), "KEEP=1\n").expect("env");
    // The next deploy works, and the bad release does not count towards keep_releases.
    let c = deploy_ok(&fleet, &[]);
    fleet.assert_on(&c, &[&a, &b, &c]);
    assert_eq!(
        fs::read_to_string(fleet.host(0).path("shared/.env")).expect("env"),
        "KEEP=1\n"
    );
}

#[test]
fn run_once_steps_run_on_the_primary_host_only_and_their_failure_aborts() {
    let fleet = Fleet::start(3);
    fleet.inventory(
        "  run_once: [\"echo $SHIP_RELEASE_ID >> $SHIP_DEPLOY_TO/shared/migrations.log\"]\n",
        "",
    );
    fleet.host_settings(1, "roles: [web, primary]");
    let a = deploy_ok(&fleet, &[]);
    for (i, h) in fleet.hosts.iter().enumerate() {
        let log = fs::read_to_string(h.path("shared/migrations.log")).ok();
        if i == 1 {
            assert_eq!(
                log.as_deref().map(str::trim),
                Some(a.as_str()),
                "{}",
                h.name
            );
        } else {
            assert_eq!(log, None, "{}: run-once ran here", h.name);
        }
    }
    // A failing run-once step: no host switches, the staged release is removed everywhere.
    fleet.edit_inventory(|t| {
        t.replace(
            "run_once: [\"echo $SHIP_RELEASE_ID >> $SHIP_DEPLOY_TO/shared/migrations.log\"]",
            "run_once: [\"echo migration failed >&2; exit 5\"]",
        )
    });
    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    let text = run.all();
    assert!(
        text.contains("[web-2] FAILED at run once (run once: echo migration failed >&2; exit 5): exited with status 5"),
        "{text}"
    );
    assert!(text.contains("aborted: no host was switched"), "{text}");
    fleet.assert_on(&a, &[&a]);
}

#[test]
fn after_switch_failures_with_on_failure_warn_are_reported_and_the_release_stays() {
    let fleet = Fleet::start(3);
    fleet.inventory(
        "  after_switch: [\"echo restarted > $SHIP_RELEASE_PATH/restarted\", \"test ! -e $SHIP_DEPLOY_TO/shared/HOOK_FAILS\"]\n  \
         health_check: { on_failure: warn }\n",
        "",
    );
    fs::create_dir_all(fleet.host(2).path("shared")).expect("mkdir");
    fs::write(fleet.host(2).path("shared/HOOK_FAILS"), "").expect("marker");
    let run = fleet.ship(&["deploy", "production", "--json"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let id = fleet.host(0).current_id().expect("current");
    fleet.assert_on(&id, &[&id]);
    for h in &fleet.hosts {
        assert!(
            h.path("current/restarted").is_file(),
            "{}: hook ran",
            h.name
        );
    }
    let summary: serde_json::Value = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "finished")
        .map(|e| e["summary"].clone())
        .expect("summary");
    assert_eq!(summary["outcome"], "deployed");
    let w = &summary["hosts"][2]["warnings"][0];
    assert_eq!(w["phase"], "verify");
    assert!(
        w["step"]
            .as_str()
            .is_some_and(|s| s.starts_with("after switch: test ! -e")),
        "{summary}"
    );
    assert_eq!(summary["hosts"][0]["warnings"], serde_json::json!([]));
}

#[test]
fn check_passes_a_healthy_fleet_and_names_what_is_wrong_on_a_broken_host() {
    let fleet = Fleet::start(2);
    fleet.inventory("", "");
    let run = fleet.ship(&["check", "production"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout
            .contains("production: all 2 host(s) ready to deploy"),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.stdout.matches("switch     PASS").count(),
        2,
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("not in shared/ yet: .env, storage"),
        "{}",
        run.stdout
    );
    // Nothing that matters was made: no releases, no current, no lock, no scratch left.
    fleet.assert_untouched();
    for h in &fleet.hosts {
        let scratch: Vec<_> = fs::read_dir(h.path(".ship"))
            .expect(".ship")
            .flatten()
            .collect();
        assert!(scratch.is_empty(), "{}: {scratch:?}", h.name);
    }
    // web-2: `current` is a directory set up by hand; web-1: mv does not rename (a new inode).
    fs::create_dir_all(fleet.host(1).path("current")).expect("hand-made current");
    fleet.host(0).fault(
        "mv",
        "src=\"$2\"; dst=\"$3\"; [ -d \"$dst\" ] && dst=\"$dst/$(basename \"$src\")\"; \
         rm -f \"$dst\"; ln -s \"$(readlink \"$src\")\" \"$dst\"; rm -f \"$src\"",
    );
    let run = fleet.ship(&["check", "production"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout
            .contains("production: 2 of 2 host(s) FAILED a check"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("web-1  switch     FAIL    the rename test failed: not-atomic"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "web-2  deploy_to  FAIL    {DEPLOY_TO}/current is not a symlink"
        )),
        "{}",
        run.stdout
    );
    assert!(fleet.host(1).path("current").is_dir(), "left untouched");
}

#[test]
fn dry_run_changes_nothing_and_prints_what_a_real_run_then_does() {
    let fleet = Fleet::start(2);
    fleet.inventory(
        "  run_once: [\"true\"]\n  env:\n    API_TOKEN: { value: \"tok-plan-secret-42\", secret: true }\n",
        "",
    );
    let a = deploy_ok(&fleet, &[]);
    let journals: Vec<usize> = fleet.hosts.iter().map(|h| h.journal().len()).collect();
    let shared: Vec<_> = fleet.hosts.iter().map(|h| h.shared_snapshot()).collect();

    // The readable plan: per host (web-2 has no run-once step, so it is not grouped with
    // web-1), where `current` goes, what cleanup removes, the environment, the steps by name.
    let run = fleet.ship(&["deploy", "production", "--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let readable = run.stdout.clone();
    assert!(readable.contains("dry run: deploy"), "{readable}");
    assert!(readable.contains("\nweb-1:\n"), "{readable}");
    assert!(readable.contains("\nweb-2:\n"), "{readable}");
    assert!(
        readable.contains(&format!("  current {a} → ")),
        "{readable}"
    );
    assert!(
        readable.contains("(the same revision as current: sha256:"),
        "{readable}"
    );
    assert!(
        readable.contains("  cleanup removes no release\n"),
        "{readable}"
    );
    assert!(readable.contains("  env: API_TOKEN=****\n"), "{readable}");
    assert!(
        readable.contains("  prepare   upload (")
            && readable.contains("artifact), link, build: sh build.sh, complete\n"),
        "{readable}"
    );
    assert_eq!(
        readable.matches("  run once  run once: true\n").count(),
        1,
        "{readable}"
    );
    let run = fleet.ship(&["deploy", "production", "--dry-run", "--full"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let plan = run.stdout.clone();
    assert!(plan.contains("dry run: deploy"), "{plan}");
    assert!(plan.contains("run-once steps run on web-1 only"), "{plan}");
    assert_eq!(
        plan.matches("# run once · run once: true").count(),
        1,
        "{plan}"
    );
    // The small example artifact goes inside its upload command: --full shows its size, not
    // its bytes.
    let upload = plan
        .split("# prepare · upload\n")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("an upload step: {plan}"));
    assert!(
        upload.contains("&& printf <the artifact, ") && upload.contains("as octal escapes>"),
        "{upload}"
    );
    assert!(upload.contains(" | tar -xzf - -C releases/"), "{upload}");
    // Secrets are masked in the plan as everywhere.
    assert!(!plan.contains("tok-plan-secret-42"), "{plan}");
    assert!(
        plan.contains("API_TOKEN=****") || plan.contains("API_TOKEN='****'"),
        "{plan}"
    );
    for (i, h) in fleet.hosts.iter().enumerate() {
        assert_fleet_host_unchanged(h, &a, journals[i]);
        assert_eq!(h.shared_snapshot(), shared[i]);
    }
    // `ship plan` is the same thing, as JSON here.
    let json = fleet.ship(&["plan", "production", "--json"]);
    assert_eq!(json.code, 0, "{}", json.all());
    let p: serde_json::Value = serde_json::from_str(json.stdout.trim()).expect("one JSON plan");
    let planned: Vec<String> = p["hosts"][0]["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .filter(|c| c["phase"] == "prepare")
        .map(|c| c["name"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        planned,
        ["upload", "link", "build: sh build.sh", "complete"]
    );
    assert!(
        p["hosts"][0]["commands"]
            .as_array()
            .expect("commands")
            .iter()
            .any(|c| c["phase"] == "switch"
                && c["script"].as_str().is_some_and(|s| s.contains("mv -f"))),
        "{p}"
    );
    // The real run does exactly those prepare steps, in that order, on every host.
    let real = fleet.ship(&["deploy", "production", "--json"]);
    assert_eq!(real.code, 0, "{}", real.all());
    for h in &fleet.hosts {
        let ran: Vec<String> = real
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| {
                e["event"] == "step_started"
                    && e["host"] == h.name.as_str()
                    && !e["step"].as_str().unwrap_or("").starts_with("run once")
            })
            .map(|e| e["step"].as_str().unwrap_or("").to_owned())
            .collect();
        assert_eq!(ran, planned, "{}", h.name);
    }
}

fn assert_fleet_host_unchanged(h: &crate::support::TestHost, current: &str, journal: usize) {
    assert_eq!(h.current_id().as_deref(), Some(current), "{}", h.name);
    assert_eq!(h.releases(), vec![current.to_owned()], "{}", h.name);
    assert!(!h.locked(), "{}", h.name);
    assert_eq!(h.journal().len(), journal, "{}", h.name);
    assert!(
        fs::read_dir(h.path(".ship"))
            .expect(".ship")
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with("stage-")),
        "{}: staged link",
        h.name
    );
}

#[test]
fn copy_from_previous_gives_the_new_release_the_files_and_never_touches_the_current_one() {
    let fleet = Fleet::start(2);
    // The "dependency install" appends to a file in place, as composer does with its autoload
    // files: through a hard link it would change the live release.
    fleet.inventory("  copy_from_previous: [vendor, cache/deps]\n", "");
    fleet.edit_inventory(|t| {
        t.replace(
            "build: [\"sh build.sh\"]",
            "build: [\"sh build.sh\", \"mkdir -p vendor cache/deps && echo $SHIP_RELEASE_ID >> vendor/installed.txt && touch cache/deps/x\"]",
        )
    });
    let a = deploy_ok(&fleet, &[]);
    let b = deploy_ok(&fleet, &["--json"]);
    for h in &fleet.hosts {
        let old = h.path(&format!("releases/{a}/vendor/installed.txt"));
        let new = h.path(&format!("releases/{b}/vendor/installed.txt"));
        assert_eq!(
            fs::read_to_string(&old).expect("old"),
            format!("{a}\n"),
            "{}",
            h.name
        );
        assert_eq!(
            fs::read_to_string(&new).expect("new"),
            format!("{a}\n{b}\n"),
            "{}: the new release started from the previous one's files",
            h.name
        );
        use std::os::unix::fs::MetadataExt;
        assert_ne!(
            fs::metadata(&old).expect("old").ino(),
            fs::metadata(&new).expect("new").ino(),
            "{}: a copy, not a hard link",
            h.name
        );
        assert!(h.path(&format!("releases/{b}/cache/deps/x")).is_file());
        assert_eq!(h.current_id().as_deref(), Some(b.as_str()));
    }
}

#[test]
fn hosts_and_roles_limit_a_run_and_leave_the_rest_untouched() {
    let fleet = Fleet::start(3);
    fleet.inventory("", "");
    fleet.host_settings(2, "roles: [worker]");
    let a = deploy_ok(&fleet, &[]);
    let conns_web3 = fleet.connections(2);

    let run = fleet.ship(&["deploy", "production", "--hosts", "web-1,web-2"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("2/2 hosts switched")
            && run
                .stdout
                .contains("not selected by --hosts/--roles, untouched: web-3"),
        "{}",
        run.stdout
    );
    let b = fleet.host(0).current_id().expect("current");
    assert_ne!(a, b);
    assert_eq!(fleet.host(1).current_id().as_deref(), Some(b.as_str()));
    assert_eq!(fleet.host(2).current_id().as_deref(), Some(a.as_str()));
    assert_eq!(fleet.host(2).releases(), vec![a.clone()]);
    assert_eq!(
        fleet.connections(2),
        conns_web3,
        "web-3 was not even contacted"
    );
    // The whole stage is now on two releases, and status says so.
    let st = fleet.ship(&["status", "production"]);
    assert_eq!(st.code, 3, "{}", st.all());
    assert!(st.stdout.contains("NOT consistent"), "{}", st.stdout);

    // --roles picks the worker; then the whole stage is on one release again.
    let run = fleet.ship(&[
        "rollback",
        "production",
        "--roles",
        "web,worker",
        "--to",
        &b,
    ]);
    assert_eq!(run.code, 1, "web-3 lacks {b}: {}", run.all());
    // Release ids are the start second; a run that contacts only web-3 cannot see that web-1
    // and web-2 have `b`, so it must start in a later second to get a new id.
    wait_until("the next second", Duration::from_secs(3), || {
        ship::util::release_id_at(ship::util::unix_now()) > b
    });
    let run = fleet.ship(&["deploy", "production", "--roles", "worker"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("untouched: web-1, web-2"),
        "{}",
        run.stdout
    );
    let c = fleet.host(2).current_id().expect("current");
    assert_eq!(fleet.host(0).current_id().as_deref(), Some(b.as_str()));
    assert_ne!(c, b);

    // Unknown names and empty selections are usage errors that say what exists.
    let run = fleet.ship(&["deploy", "production", "--hosts", "web-9"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr
            .contains("`web-9` is not a host of stage `production`")
            && run.stderr.contains("hosts here: web-1, web-2, web-3"),
        "{}",
        run.stderr
    );
    let run = fleet.ship(&["deploy", "production", "--roles", "db"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("roles here: worker"), "{}", run.stderr);
    for h in &fleet.hosts {
        assert!(!h.locked(), "{}", h.name);
    }
}

#[test]
fn exec_runs_a_command_on_every_host_and_groups_the_output() {
    let fleet = Fleet::start(3);
    fleet.inventory("", "");
    let id = deploy_ok(&fleet, &[]);
    fs::write(fleet.host(1).path("shared/EXEC_FAILS"), "").expect("marker");
    let run = fleet.ship(&[
        "exec",
        "production",
        "--",
        "cat public/release.txt; echo to-stderr >&2; test ! -e ../../shared/EXEC_FAILS || exit 4",
    ]);
    assert_eq!(run.code, 1, "{}", run.all());
    let out = &run.stdout;
    for h in ["web-1", "web-3"] {
        assert!(out.contains(&format!("== {h} (ok, ")), "{out}");
    }
    assert!(out.contains("== web-2 (exit 4, "), "{out}");
    // Grouped: each host's block holds its own lines, in order.
    let blocks: Vec<&str> = out.split("== ").skip(1).collect();
    assert_eq!(blocks.len(), 3, "{out}");
    for b in &blocks {
        let lines: Vec<&str> = b.lines().collect();
        assert_eq!(lines[1], id, "{out}");
        assert_eq!(lines[2], "! to-stderr", "{out}");
    }
    assert!(out.contains("production: ok on 2 of 3 host(s)"), "{out}");

    // JSON, a subset of hosts, and a timeout that stops the command on the host.
    let run = fleet.ship(&[
        "exec",
        "production",
        "--hosts",
        "web-3",
        "--json",
        "--timeout",
        "1s",
        "--",
        "sleep 30",
    ]);
    assert_eq!(run.code, 3, "{}", run.all());
    let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("JSON");
    assert_eq!(v["hosts"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["hosts"][0]["host"], "web-3");
    assert!(
        v["hosts"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out")),
        "{v}"
    );
    assert!(
        !fleet.host(2).pids().is_empty(),
        "the host's processes are visible"
    );
    crate::support::wait_until(
        "the remote sleep is stopped",
        std::time::Duration::from_secs(15),
        || fleet.host(2).running("sleep 30") == 0,
    );
    // At most 10,000 lines per host are kept; the rest are counted.
    let run = fleet.ship(&[
        "exec",
        "production",
        "--hosts",
        "web-1",
        "--",
        "seq 1 12000",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let kept: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    assert_eq!(kept.len(), 10_000);
    assert_eq!((kept[0], kept[9_999]), ("1", "10000"));
    assert!(
        run.stdout.contains("(… 2000 more lines not kept)"),
        "{}",
        run.stdout
    );
    // Ctrl-C: exit 130, and the command is stopped on every host.
    let started = format!("{DEPLOY_TO}/exec-started");
    let running = fleet.spawn_ship(&[
        "exec",
        "production",
        "--",
        &format!("touch {started}; sleep 30"),
    ]);
    wait_until("exec running everywhere", Duration::from_secs(30), || {
        fleet.hosts.iter().all(|h| h.path("exec-started").exists())
    });
    running.signal("-INT");
    let run = running.finish();
    assert_eq!(run.code, 130, "{}", run.all());
    for h in &fleet.hosts {
        wait_until(
            "the remote sleep is stopped",
            Duration::from_secs(15),
            || h.running("sleep 30") == 0,
        );
    }
    // Nothing about the deploy changed.
    fleet.assert_on(&id, &[&id]);
}

#[test]
fn under_github_actions_failures_become_annotations_and_the_summary_goes_to_the_job_summary() {
    let fleet = Fleet::start(2);
    fleet.inventory("", "");
    let a = deploy_ok(&fleet, &[]);
    fs::write(fleet.host(1).path("shared/FAIL_BUILD"), "").expect("marker");
    let job_summary = fleet.dir().join("step-summary.md");
    let run = fleet.ship_env(
        &["deploy", "production"],
        &[
            ("GITHUB_ACTIONS", std::path::Path::new("true")),
            ("GITHUB_STEP_SUMMARY", job_summary.as_path()),
        ],
    );
    assert_eq!(run.code, 1, "{}", run.all());
    let annotation = run
        .stdout
        .lines()
        .find(|l| l.starts_with("::error "))
        .expect("an error annotation");
    assert!(
        annotation.starts_with(
            "::error title=ship production%3A web-2 error at prepare (build%3A sh build.sh)::exited with status 3"
        ),
        "{annotation}"
    );
    assert!(annotation.contains("%0Abuild failed: "), "{annotation}");
    let md = fs::read_to_string(&job_summary).expect("job summary written");
    assert!(md.starts_with("### deploy of "), "{md}");
    assert!(md.contains("| web-2 | unchanged | "), "{md}");
    assert!(
        md.contains("**web-2** failed at prepare (build: sh build.sh)"),
        "{md}"
    );
    // Outside GitHub Actions: no annotations. Plain progress lines carry the UTC time.
    let run = fleet.deploy();
    assert_eq!(run.code, 1);
    assert!(!run.stdout.contains("::error"), "{}", run.stdout);
    for line in run.stderr.lines() {
        let b = line.as_bytes();
        let timed = b.len() > 13
            && b[2] == b':'
            && b[5] == b':'
            && b[8] == b'.'
            && b[12] == b' '
            && [0, 1, 3, 4, 6, 7, 9, 10, 11]
                .iter()
                .all(|&i| b[i].is_ascii_digit());
        assert!(timed, "not a timed line: {line:?}");
    }
    // web-2's build failed twice: nothing switched; web-1 may keep the release prepared.
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(a.as_str()), "{}", h.name);
        assert_eq!(h.releases_but_prepared(), vec![a.clone()], "{}", h.name);
        assert!(!h.locked(), "{}", h.name);
    }
    assert_eq!(fleet.host(1).releases(), vec![a.clone()]);
}

/// Run ship under a pseudo-terminal (util-linux `script`) and render what it draws with a
/// terminal emulator, so the test sees the screen a user would.
pub(crate) struct Screen {
    parser: std::sync::Arc<std::sync::Mutex<vt100::Parser>>,
    rows: u16,
    pub(crate) child: std::process::Child,
    /// What is written here is typed at the terminal.
    pub(crate) keyboard: Option<std::process::ChildStdin>,
}

impl Screen {
    pub(crate) fn start(fleet: &Fleet, args: &str, no_color: bool) -> Screen {
        Self::start_rows(fleet, args, no_color, 40)
    }

    /// The same on a terminal `rows` rows high.
    pub(crate) fn start_rows(fleet: &Fleet, args: &str, no_color: bool, rows: u16) -> Screen {
        use std::io::Read;
        let ship = env!("CARGO_BIN_EXE_ship");
        let mut cmd = std::process::Command::new("script");
        cmd.args([
            "-qfec",
            &format!("stty cols 120 rows {rows}; exec {ship} {args}"),
            "/dev/null",
        ])
        .current_dir(fleet.dir())
        .env_remove("SSH_AUTH_SOCK")
        .env("TERM", "xterm-256color")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
        if no_color {
            cmd.env("NO_COLOR", "1");
        } else {
            cmd.env_remove("NO_COLOR");
        }
        let mut child = cmd.spawn().expect("script");
        let keyboard = child.stdin.take();
        let mut out = child.stdout.take().expect("stdout");
        let parser = std::sync::Arc::new(std::sync::Mutex::new(vt100::Parser::new(rows, 120, 0)));
        let feed = parser.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut p) = feed.lock() {
                    p.process(&buf[..n]);
                }
            }
        });
        Screen {
            parser,
            rows,
            child,
            keyboard,
        }
    }

    /// Type `text` at the terminal.
    pub(crate) fn type_text(&mut self, text: &str) {
        use std::io::Write;
        if let Some(k) = &mut self.keyboard {
            k.write_all(text.as_bytes()).expect("type");
            k.flush().expect("flush");
        }
    }

    /// The screen, row by row (a row the program filled to the edge is still its own row).
    pub(crate) fn contents(&self) -> String {
        self.parser
            .lock()
            .map(|p| p.screen().rows(0, 120).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    fn any_bold(&self) -> bool {
        self.parser.lock().is_ok_and(|p| {
            let s = p.screen();
            (0..self.rows).any(|r| (0..120).any(|c| s.cell(r, c).is_some_and(|x| x.bold())))
        })
    }
}

#[test]
fn the_live_view_draws_a_row_per_host_on_a_terminal() {
    let fleet = Fleet::start(3);
    fleet.inventory("  env:\n    BUILD_SECONDS: 3\n", "");
    let mut screen = Screen::start(&fleet, "deploy production", false);
    // While the builds run: one row per host, each with its current step and a clock.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = screen.contents();
        let drawn = fleet.hosts.iter().all(|h| {
            text.lines()
                .any(|l| l.starts_with(&h.name) && l.contains("build: sh build.sh"))
        });
        if drawn {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "every host's row should show its build step; the screen:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let during = screen.contents();
    let rows: Vec<&str> = during
        .lines()
        .filter(|l| fleet.hosts.iter().any(|h| l.starts_with(&h.name)))
        .collect();
    assert_eq!(rows.len(), 3, "{during}");
    // Above them, the fleet line: the stage, the release, how far the fleet is.
    assert!(
        during
            .lines()
            .any(|l| l.starts_with("production: deploying 2")
                && l.contains("/3 prepared · 0/3 switched")),
        "{during}"
    );
    assert!(
        rows.iter().all(|r| r.trim_end().ends_with('s')),
        "elapsed column: {during}"
    );
    assert!(
        screen.any_bold(),
        "host names are bold on a colour terminal"
    );
    let status = screen.child.wait().expect("ship ends");
    assert!(status.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    // At the end, the rows make way for the summary table.
    let after = screen.contents();
    assert!(
        after.contains("deployed ") && after.contains("3/3 hosts switched"),
        "{after}"
    );
    assert!(after.contains("flip skew"), "{after}");
    assert!(
        !after.contains("build: sh build.sh"),
        "the live rows were cleared: {after}"
    );

    // NO_COLOR: the same view, without styling.
    let mut screen = Screen::start(&fleet, "deploy production", true);
    crate::support::wait_until(
        "the rows are drawn",
        std::time::Duration::from_secs(60),
        || screen.contents().contains("build: sh build.sh"),
    );
    assert!(!screen.any_bold(), "{}", screen.contents());
    assert!(screen.child.wait().expect("ship ends").success());
}

/// The JSON event table of docs/cli.md: event name → its top-level fields, and the fields of a
/// summary and of a host summary.
fn documented_events() -> (
    std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    std::collections::BTreeSet<String>,
    std::collections::BTreeSet<String>,
) {
    let doc =
        fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md"))
            .expect("docs/cli.md");
    let section = doc.split("## JSON events").nth(1).expect("JSON section");
    // Backticked names in `cell` at nesting depth `want` of (), [], {}.
    let names_at = |cell: &str, want: i32| {
        let mut out = std::collections::BTreeSet::new();
        let (mut depth, mut inside, mut word) = (0, false, String::new());
        for ch in cell.chars() {
            match ch {
                '`' if inside => {
                    inside = false;
                    if depth == want {
                        out.insert(std::mem::take(&mut word));
                    }
                    word.clear();
                }
                '`' => inside = true,
                c if inside => word.push(c),
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth -= 1,
                _ => {}
            }
        }
        out
    };
    let mut events = std::collections::BTreeMap::new();
    let (mut summary, mut host) = (Default::default(), Default::default());
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let name = cells[0]
            .trim_start_matches("| ")
            .trim_matches('`')
            .to_owned();
        let fields = cells[1].trim_end_matches(" |");
        events.insert(name.clone(), names_at(fields, 0));
        if name == "finished" {
            summary = names_at(fields, 1);
            let hosts = fields
                .split("`hosts`[{")
                .nth(1)
                .and_then(|r| r.split("}]").next())
                .expect("host summary fields");
            host = names_at(hosts, 0);
        }
    }
    (events, summary, host)
}

#[test]
fn the_json_event_stream_matches_its_documented_schema() {
    let (events, summary_keys, host_keys) = documented_events();
    assert!(events.len() >= 12, "{events:?}");
    let fleet = Fleet::start(3);
    fleet.inventory(
        "  after_switch: [\"test ! -e $SHIP_DEPLOY_TO/shared/HOOK_FAILS\"]\n  \
         health_check: { on_failure: warn }\n",
        "",
    );
    fs::create_dir_all(fleet.host(2).path("shared")).expect("mkdir");
    fs::write(fleet.host(2).path("shared/HOOK_FAILS"), "").expect("marker");
    // A canary deploy with a warning, then one that fails on a host.
    let ok = fleet.ship(&[
        "deploy",
        "production",
        "--json",
        "--canary",
        "1",
        "--observe",
        "1s",
    ]);
    assert_eq!(ok.code, 0, "{}", ok.all());
    fs::write(fleet.host(1).path("shared/FAIL_BUILD"), "").expect("marker");
    let failed = fleet.ship(&["deploy", "production", "--json"]);
    assert_eq!(failed.code, 1, "{}", failed.all());
    let mut seen = std::collections::BTreeSet::new();
    for line in ok.stdout.lines().chain(failed.stdout.lines()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("every line is JSON");
        let obj = v.as_object().expect("an object");
        assert_eq!(obj.get("schema"), Some(&serde_json::json!(1)), "{line}");
        let name = obj["event"].as_str().expect("event").to_owned();
        let documented = events
            .get(&name)
            .unwrap_or_else(|| panic!("`{name}` is not documented in docs/cli.md"));
        let keys: std::collections::BTreeSet<String> = obj
            .keys()
            .filter(|k| *k != "event" && *k != "schema")
            .cloned()
            .collect();
        assert_eq!(&keys, documented, "fields of `{name}`");
        if name == "finished" {
            let s = obj["summary"].as_object().expect("summary");
            let keys: std::collections::BTreeSet<String> = s.keys().cloned().collect();
            assert_eq!(keys, summary_keys, "summary fields");
            for h in s["hosts"].as_array().expect("hosts") {
                let keys: std::collections::BTreeSet<String> =
                    h.as_object().expect("host").keys().cloned().collect();
                assert_eq!(keys, host_keys, "host summary fields");
            }
        }
        seen.insert(name);
    }
    for expected in [
        "started",
        "phase",
        "step_started",
        "step_finished",
        "output",
        "host_failed",
        "switched",
        "host_warning",
        "observing",
        "finished",
    ] {
        assert!(
            seen.contains(expected),
            "no `{expected}` event was seen: {seen:?}"
        );
    }
}

#[test]
fn history_merges_the_journals_and_a_maintenance_lock_stops_deploys_until_released() {
    let fleet = Fleet::start(3);
    fleet.inventory("", "");
    let a = deploy_ok(&fleet, &[]);
    let b = deploy_ok(&fleet, &[]);
    let back = fleet.ship(&["rollback", "production"]);
    assert_eq!(back.code, 0, "{}", back.all());
    let run = fleet.ship(&["history", "production"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let rows: Vec<&str> = run
        .stdout
        .lines()
        .skip(2)
        .filter(|l| l.starts_with("  2"))
        .collect();
    assert_eq!(rows.len(), 3, "{}", run.stdout);
    let cols =
        |r: &str| -> Vec<String> { r.split_whitespace().take(3).map(str::to_owned).collect() };
    assert_eq!(
        cols(rows[0]),
        [a.as_str(), "rollback", "deployed"],
        "{}",
        run.stdout
    );
    assert_eq!(
        cols(rows[1]),
        [b.as_str(), "deploy", "deployed"],
        "{}",
        run.stdout
    );
    assert_eq!(
        cols(rows[2]),
        [a.as_str(), "deploy", "deployed"],
        "{}",
        run.stdout
    );
    assert!(rows.iter().all(|r| r.contains("  3/3  ")), "{}", run.stdout);
    // The switch instants the hosts recorded give the skew.
    assert!(rows[1].trim_end().ends_with("ms"), "{}", run.stdout);
    let json = fleet.ship(&["history", "production", "--json", "-n", "2"]);
    let v: serde_json::Value = serde_json::from_str(json.stdout.trim()).expect("json");
    assert_eq!(v["runs"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["runs"][0]["kind"], "rollback");

    let lock = fleet.ship(&["lock", "acquire", "production", "-m", "reindexing by hand"]);
    assert_eq!(lock.code, 0, "{}", lock.all());
    for h in &fleet.hosts {
        assert!(h.locked(), "{}", h.name);
    }
    let refused = fleet.ship(&["deploy", "production", "--lock-wait", "5m"]);
    assert_eq!(refused.code, 4, "{}", refused.all());
    assert!(
        !refused.all().contains("waiting up to"),
        "it waited: {}",
        refused.all()
    );
    assert!(
        refused.all().contains("\"reindexing by hand\""),
        "{}",
        refused.all()
    );
    assert!(
        refused.all().contains("all 3 hosts: failed at lock"),
        "{}",
        refused.all()
    );
    let status = fleet.ship(&["status", "production"]);
    assert!(
        status.stdout.contains("locked for maintenance on purpose"),
        "{}",
        status.stdout
    );
    let released = fleet.ship(&["lock", "release", "production", "--yes"]);
    assert_eq!(released.code, 0, "{}", released.all());
    let c = deploy_ok(&fleet, &[]);
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(c.as_str()), "{}", h.name);
        assert!(!h.locked(), "{}", h.name);
    }
}

#[test]
fn ssh_opens_a_shell_in_current_on_the_host_named_with_the_inventorys_keys() {
    let fleet = Fleet::start(2);
    fleet.inventory("", "");
    let a = deploy_ok(&fleet, &[]);
    let inventory = fleet.dir().join("inventory.yaml");
    // A terminal, as an operator has: `script` gives ship (and the ssh it runs) a pty.
    let line = format!(
        "{} ssh production web-2 -i {}",
        env!("CARGO_BIN_EXE_ship"),
        inventory.display()
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        std::thread::sleep(std::time::Duration::from_secs(2));
        stdin
            .write_all(b"echo \"where=$(pwd -P) host=$(cat /etc/hostname 2>/dev/null)\"; exit\n")
            .expect("type");
    }
    let out = child.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("where={DEPLOY_TO}/releases/{a}")),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An unknown host is refused with the hosts there.
    let run = fleet.ship(&["ssh", "production", "web-9"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("hosts here: web-1, web-2"),
        "{}",
        run.stderr
    );
}

#[test]
fn check_reads_what_the_steps_need_and_what_this_machine_must_have() {
    let fleet = Fleet::start(2);
    fleet.inventory("  health_check: { url: \"http://127.0.0.1:9/up\" }\n", "");
    fleet.edit_inventory(|t| {
        t.replace(
            "build: [\"sh build.sh\"]",
            "build: [\"sh build.sh\", \"composer-xyz install --no-dev\", \"cd public && true\", \
             { run: \"true\", sudo: true }]",
        )
    });
    let run = fleet.ship(&[
        "check",
        "production",
        "--connect-timeout",
        "7s",
        "--accept-new-host-keys",
    ]);
    assert_eq!(run.code, 1, "{}", run.all());
    let out = &run.stdout;
    for (line, why) in [
        ("  this machine  source     PASS    ", "the artifact"),
        ("  this machine  key        PASS    ", "the key file"),
        (
            "web-1  commands   FAIL    not found on the PATH of `root`: composer-xyz",
            "a program no host has",
        ),
        (
            "web-1  commands   WARN    cannot tell what these start before they run: cd public && true",
            "a command that starts with a builtin",
        ),
        (
            "web-2  sudo       PASS    `sudo -n` works",
            "sudo for the sudo step",
        ),
        (
            "web-2  health     PASS    curl for the HTTP health check",
            "curl",
        ),
        (
            "web-1  space      PASS    the release needs about 1 MB unpacked",
            "the artifact's size",
        ),
    ] {
        assert!(out.contains(line), "{why}: {out}");
    }
    // What this machine lacks is the operator's to fix first: exit 2.
    fleet.edit_inventory(|t| t.replace("identity_file: ", "identity_file: /nonexistent"));
    fleet.set_source("{ artifact: ./no-such-build }");
    let run = fleet.ship(&["check", "production"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stdout
            .contains("  this machine  source     FAIL    artifact "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("  this machine  key        FAIL    /nonexistent"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("this machine is not ready to deploy"),
        "{}",
        run.stdout
    );
    fleet.assert_untouched();
}

#[test]
fn waves_switch_the_fleet_in_turn_and_the_plan_and_summary_show_them() {
    let fleet = Fleet::start(3);
    fleet.inventory("", "");
    let a = deploy_ok(&fleet, &[]);
    let plan = fleet.ship(&["plan", "production", "--waves", "1,2,100%"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    assert!(
        plan.stdout.contains("  waves: web-1 → web-2 → web-3\n"),
        "{}",
        plan.stdout
    );
    let run = fleet.ship(&["deploy", "production", "--waves", "1,2,100%", "--json"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let finished: serde_json::Value = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "finished")
        .expect("finished");
    let waves = finished["summary"]["waves"].as_array().expect("waves");
    assert_eq!(waves.len(), 3, "{finished}");
    for (w, h) in waves.iter().zip(["web-1", "web-2", "web-3"]) {
        assert_eq!(w["hosts"], serde_json::json!([h]));
        assert!(w["flip_skew_ms"].is_number(), "{w}");
    }
    let b = finished["summary"]["release"]
        .as_str()
        .expect("release")
        .to_owned();
    assert_ne!(a, b);
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(b.as_str()), "{}", h.name);
        assert_eq!(h.releases(), vec![a.clone(), b.clone()], "{}", h.name);
        assert!(!h.locked(), "{}", h.name);
    }
    // Waves and a canary at once: one or the other.
    let both = fleet.ship(&["deploy", "production", "--waves", "1,100%", "--canary", "1"]);
    assert_eq!(both.code, 2, "{}", both.all());
}

#[test]
fn a_failure_in_the_last_wave_or_ctrl_c_in_a_hold_puts_every_wave_back() {
    let fleet = Fleet::start(3);
    fleet.inventory(
        "  health_check: { command: \"test ! -e $SHIP_DEPLOY_TO/shared/UNHEALTHY\", retries: 1 }\n",
        "",
    );
    let a = deploy_ok(&fleet, &[]);
    // The last of three waves fails its check: the first two waves go back too.
    fs::write(fleet.host(2).path("shared/UNHEALTHY"), "").expect("marker");
    let run = fleet.ship(&["deploy", "production", "--waves", "1,2,100%"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all()
            .contains("[web-3] FAILED at verify (health check)"),
        "{}",
        run.all()
    );
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(a.as_str()), "{}", h.name);
        assert!(!h.locked(), "{}", h.name);
    }
    fs::remove_file(fleet.host(2).path("shared/UNHEALTHY")).expect("healthy again");
    // Ctrl-C while the first wave is held: it goes back, the others never switch.
    let before: Vec<Vec<String>> = fleet.hosts.iter().map(|h| h.releases()).collect();
    let running = fleet.spawn_ship(&[
        "deploy",
        "production",
        "--waves",
        "1,2,100%",
        "--observe",
        "60s",
    ]);
    crate::support::wait_until(
        "the first wave is switched",
        std::time::Duration::from_secs(60),
        || fleet.host(0).current_id().as_deref() != Some(a.as_str()),
    );
    // Whether it lands in the first wave's check or its hold, the switched wave goes back.
    running.signal("-INT");
    let run = running.finish();
    assert_eq!(run.code, 130, "{}", run.all());
    for (h, releases) in fleet.hosts.iter().zip(&before) {
        assert_eq!(h.current_id().as_deref(), Some(a.as_str()), "{}", h.name);
        assert_eq!(
            &h.releases(),
            releases,
            "{}: the new release is removed",
            h.name
        );
        assert!(!h.locked(), "{}", h.name);
    }
}

#[test]
fn a_step_with_parallel_1_runs_on_one_host_at_a_time() {
    let fleet = Fleet::start(3);
    fleet.inventory("", "");
    fleet.edit_inventory(|t| {
        t.replace(
            "build: [\"sh build.sh\"]",
            "build: [\"sh build.sh\", { run: \"date +%s%N >> $SHIP_DEPLOY_TO/shared/turns; \
             sleep 0.3; date +%s%N >> $SHIP_DEPLOY_TO/shared/turns\", parallel: 1 }]",
        )
    });
    let id = deploy_ok(&fleet, &[]);
    let mut spans: Vec<(u128, u128, String)> = fleet
        .hosts
        .iter()
        .map(|h| {
            let text = fs::read_to_string(h.path("shared/turns")).expect("turns");
            let v: Vec<u128> = text.lines().filter_map(|x| x.trim().parse().ok()).collect();
            assert_eq!(v.len(), 2, "{}: {text}", h.name);
            (v[0], v[1], h.name.clone())
        })
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "{} and {} overlapped: {spans:?}",
            w[0].2,
            w[1].2
        );
    }
    // Every host still switched together, after every turn.
    let last_end = spans.iter().map(|s| s.1).max().expect("spans");
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(id.as_str()), "{}", h.name);
        let switched = h
            .journal()
            .last()
            .and_then(|j| j["switched_at_ns"].as_u64())
            .expect("stamp");
        assert!(
            u128::from(switched) > last_end,
            "{} switched before every turn ended",
            h.name
        );
    }
}

#[test]
fn a_failing_before_deploy_hook_stops_everything_and_later_hooks_only_warn() {
    let fleet = Fleet::start(2);
    let log = fleet.dir().join("hooks.log");
    fleet.inventory(
        &format!(
            "  hooks:\n    before_deploy: [\"test ! -e {gate}\"]\n    \
             after_deploy: [\"echo after >> {l}; exit 3\"]\n",
            gate = fleet.dir().join("closed").display(),
            l = log.display()
        ),
        "",
    );
    let a = deploy_ok(&fleet, &[]);
    // The after_deploy hook failed: a warning, the deploy stands (exit 0).
    assert_eq!(fs::read_to_string(&log).expect("log"), "after\n");
    // before_deploy fails: exit 1, nothing contacted, nothing changed.
    fs::write(fleet.dir().join("closed"), "").expect("gate");
    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("before_deploy"), "{}", run.stderr);
    assert!(
        run.stderr.contains("nothing was changed on any host"),
        "{}",
        run.stderr
    );
    fleet.assert_on(&a, &[&a]);
    fs::remove_file(fleet.dir().join("closed")).expect("open");
    let run = fleet.deploy();
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains("warning:") && run.stderr.contains("after_deploy"),
        "{}",
        run.all()
    );
}

#[test]
fn lock_status_and_dry_run_exit_codes_say_what_they_found() {
    let mut fleet = Fleet::start(2);
    fleet.inventory("", "");
    let a = deploy_ok(&fleet, &[]);
    let status = fleet.ship(&["lock", "status", "production"]);
    assert_eq!(status.code, 0, "{}", status.all());
    assert!(
        status.stdout.contains("web-1: not locked"),
        "{}",
        status.stdout
    );
    fs::create_dir(fleet.host(1).path(".ship/lock")).expect("lock");
    fs::write(
        fleet.host(1).path(".ship/lock/owner"),
        r#"{"token":"t","kind":"deploy","user":"dan","controller":"ci","pid":3}"#,
    )
    .expect("owner");
    let status = fleet.ship(&["lock", "status", "production"]);
    assert_eq!(status.code, 4, "exit 4: locked: {}", status.all());
    assert!(
        status
            .stdout
            .contains("web-2: locked by deploy by dan on ci"),
        "{}",
        status.stdout
    );
    fs::remove_dir_all(fleet.host(1).path(".ship/lock")).expect("unlock");
    // A dry run that can read every host: 0; one that cannot: 1, saying where it would stop.
    let plan = fleet.ship(&["deploy", "production", "--dry-run"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    fleet.hosts[1].kill();
    let plan = fleet.ship(&["deploy", "production", "--dry-run"]);
    assert_eq!(plan.code, 1, "{}", plan.all());
    assert!(
        plan.stdout.contains("the run would stop here"),
        "{}",
        plan.stdout
    );
    let status = fleet.ship(&["lock", "status", "production"]);
    assert_eq!(
        status.code,
        3,
        "exit 3: a host could not be read: {}",
        status.all()
    );
    fleet.hosts[1].restart();
    assert_eq!(fleet.host(0).current_id().as_deref(), Some(a.as_str()));
    assert_eq!(fleet.host(1).current_id().as_deref(), Some(a.as_str()));
}

#[test]
fn step_timeout_on_the_command_line_stops_a_long_step() {
    let fleet = Fleet::start(2);
    fleet.inventory("", "");
    fleet.edit_inventory(|t| {
        t.replace(
            "build: [\"sh build.sh\"]",
            "build: [\"sh build.sh\", \"sleep 30\"]",
        )
    });
    let run = fleet.ship(&["deploy", "production", "--step-timeout", "1s"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all().contains("timed out after 1.0s (step_timeout)"),
        "{}",
        run.all()
    );
    fleet.assert_untouched();
}

#[test]
fn a_retry_after_one_host_failed_builds_only_on_that_host() {
    let fleet = Fleet::start(3);
    fleet.inventory("", "");
    fleet.edit_inventory(|t| {
        t.replace(
            "build: [\"sh build.sh\"]",
            "build: [\"sh build.sh\", \"echo built >> $SHIP_DEPLOY_TO/shared/builds\", \
             \"if [ -e $SHIP_DEPLOY_TO/shared/FAIL ]; then sleep 1; echo broken >&2; exit 1; fi\"]",
        )
    });
    let builds = |i: usize| {
        fs::read_to_string(fleet.host(i).path("shared/builds"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let a = deploy_ok(&fleet, &[]);
    // web-3's last step fails, after web-1 and web-2 have built completely.
    fs::write(fleet.host(2).path("shared/FAIL"), "").expect("marker");
    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("broken"), "{}", run.stderr);
    let x = fleet
        .host(0)
        .releases()
        .into_iter()
        .find(|r| *r != a)
        .expect("web-1 kept its release");
    for (i, h) in fleet.hosts.iter().enumerate() {
        assert_eq!(h.current_id().as_deref(), Some(a.as_str()), "{}", h.name);
        assert!(!h.locked(), "{}", h.name);
        let prepared = h.path(&format!(".ship/prepared/{x}")).exists();
        if i < 2 {
            assert_eq!(h.releases(), vec![a.clone(), x.clone()], "{}", h.name);
            assert!(prepared, "{}", h.name);
        } else {
            assert_eq!(h.releases(), vec![a.clone()], "{}", h.name);
            assert!(!prepared, "{}", h.name);
        }
    }
    assert_eq!((builds(0), builds(1), builds(2)), (2, 2, 2));
    // `ship releases` says what x is; a rollback to it is refused: it never went live.
    let rel = fleet.ship(&["releases", "production"]);
    assert_eq!(rel.code, 0, "{}", rel.all());
    assert!(rel.stdout.contains("prepared"), "{}", rel.stdout);
    let back = fleet.ship(&["rollback", "production", "--to", &x]);
    assert_ne!(back.code, 0, "{}", back.all());
    assert!(back.stderr.contains("never went live"), "{}", back.all());
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(a.as_str()), "{}", h.name);
        assert!(!h.locked(), "{}", h.name);
    }
    // The retry, web-3 fixed: the same release, built on web-3 alone.
    fs::remove_file(fleet.host(2).path("shared/FAIL")).expect("marker");
    let retry = deploy_ok(&fleet, &[]);
    assert_eq!(retry, x);
    assert_eq!((builds(0), builds(1), builds(2)), (2, 2, 3));
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(x.as_str()), "{}", h.name);
        assert_eq!(h.releases(), vec![a.clone(), x.clone()], "{}", h.name);
        assert!(
            !h.path(&format!(".ship/prepared/{x}")).exists(),
            "{}",
            h.name
        );
        assert!(!h.locked(), "{}", h.name);
    }
    // --rebuild builds everywhere, under a new id.
    let again = deploy_ok(&fleet, &["--rebuild"]);
    assert_ne!(again, x);
    assert_eq!((builds(0), builds(1), builds(2)), (3, 3, 4));
    fleet.assert_on(&again, &[&a, &x, &again]);
}

#[test]
fn check_names_a_host_short_of_disk_the_tools_found_and_a_held_lock() {
    // web-2's deploy directory is on a 3 MB disk.
    let fleet = Fleet::start_with(2, Some((1, "3m")));
    fleet.inventory("", "");
    let run = fleet.ship(&["check", "production"]);
    assert_eq!(run.code, 1, "{}", run.all());
    let out = &run.stdout;
    for (line, why) in [
        ("web-1  disk       PASS    ", "web-1 has room"),
        (
            "web-2  disk       FAIL    only 3 MB free under /var/www/app",
            "web-2 has not",
        ),
        (
            "web-1  tools      PASS    tar, gzip",
            "what the artifact needs",
        ),
        ("web-1  lock       PASS    not locked", "no lock"),
    ] {
        assert!(out.contains(line), "{why}: {out}");
    }
    // A held lock is a warning that names its holder; check changes nothing.
    let lock = fleet.ship(&["lock", "acquire", "production", "-m", "reindexing by hand"]);
    assert_eq!(lock.code, 0, "{}", lock.all());
    let run = fleet.ship(&["check", "production"]);
    assert!(
        run.stdout.contains("web-1  lock       WARN    locked by "),
        "{}",
        run.stdout
    );
    for h in &fleet.hosts {
        assert!(h.locked(), "{}: the lock is left as it was", h.name);
        assert!(
            h.releases().is_empty() && h.current().is_none(),
            "{}",
            h.name
        );
    }
    let released = fleet.ship(&["lock", "release", "production", "--yes"]);
    assert_eq!(released.code, 0, "{}", released.all());
    assert!(fleet.hosts.iter().all(|h| !h.locked()));
}

#[test]
fn expect_body_fails_a_check_whose_body_lacks_the_text_and_the_fleet_goes_back() {
    let fleet = Fleet::start(2);
    // Each release writes its health page after the switch: "ok", or "degraded" where
    // shared/DEGRADED exists.
    fleet.inventory(
        "  after_switch: [\"if [ -e $SHIP_DEPLOY_TO/shared/DEGRADED ]; then echo degraded; \
         else echo ok $SHIP_RELEASE_ID; fi > $SHIP_RELEASE_PATH/public/health.txt\"]\n",
        "",
    );
    let a = deploy_ok(&fleet, &[]);
    let _servers: Vec<_> = fleet.hosts.iter().map(|h| h.serve_http(18081)).collect();
    for i in 0..fleet.hosts.len() {
        let addr = fleet.host(i).address.clone();
        fleet.host_settings(
            i,
            &format!(
                "health_check: {{ url: \"http://{addr}:18081/health.txt\", expect_body: \"ok \", \
                 retries: 2, interval: 100ms, timeout: 2s }}"
            ),
        );
    }
    let b = deploy_ok(&fleet, &[]);
    // 200 on web-2, but the body is not what was expected: the whole fleet goes back.
    fs::write(fleet.host(1).path("shared/DEGRADED"), "").expect("marker");
    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    let text = run.all();
    assert!(
        text.contains("[web-2] FAILED at verify (health check)")
            && text.contains("status 200 but the body does not contain 'ok '"),
        "{text}"
    );
    let c = fleet
        .host(0)
        .releases()
        .into_iter()
        .find(|r| *r != a && *r != b)
        .expect("the failed release is kept, marked bad");
    fleet.assert_on(&b, &[&a, &b, &c]);
    for h in &fleet.hosts {
        assert_eq!(bad_marks(h), vec![c.clone()], "{}", h.name);
    }
}

#[test]
fn check_warns_when_nginx_hands_php_the_path_through_current() {
    let fleet = Fleet::start(2);
    fleet.inventory("", "");
    // Each host gets its own /etc/nginx/sites-enabled (a tmpfs in its mount namespace): web-1
    // as Debian's snippet writes it ($document_root), web-2 with $realpath_root.
    for (i, fastcgi) in [
        "include snippets/fastcgi-php.conf;",
        "include fastcgi_params; fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;",
    ]
    .iter()
    .enumerate()
    {
        let out = fleet.host(i).run_on_host(&format!(
            "mkdir -p /etc/nginx/sites-enabled && mount -t tmpfs tmpfs /etc/nginx/sites-enabled && \
             printf '%s\\n' 'server {{ root {DEPLOY_TO}/current/public; location ~ \\.php$ {{ {fastcgi} \
             fastcgi_pass unix:/run/php/php-fpm.sock; }} }}' > /etc/nginx/sites-enabled/app"
        ));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let run = fleet.ship(&["check", "production"]);
    let out = &run.stdout;
    assert!(
        out.contains(
            "web-1  web        WARN    /etc/nginx/sites-enabled/app serves /var/www/app/current \
             to PHP without $realpath_root"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "web-2  web        PASS    /etc/nginx/sites-enabled/app hands PHP the release's real \
             path ($realpath_root)"
        ),
        "{out}"
    );
    // A warning, not a failure: the check passes otherwise.
    assert_eq!(run.code, 0, "{}", run.all());
}

#[test]
fn a_fleet_taller_than_the_terminal_shows_the_rows_that_fit_and_counts_the_rest() {
    let fleet = Fleet::start(8);
    fleet.inventory("  env:\n    BUILD_SECONDS: 3\n", "");
    // 8 rows: the fleet line, 4 host rows, the line for the other 4, a row to spare.
    let screen = Screen::start_rows(&fleet, "deploy production", true, 8);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let during = loop {
        let text = screen.contents();
        if text.contains("… 4 more host(s): 4 prepare")
            && text
                .lines()
                .filter(|l| l.contains("build: sh build.sh"))
                .count()
                == 4
        {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "4 rows building and a line for the other 4; the screen:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // The fleet line counts all 8; the first 4 hosts have rows, the others none.
    assert!(during.contains("/8 prepared · 0/8 switched"), "{during}");
    for h in &fleet.hosts[..4] {
        assert!(during.lines().any(|l| l.starts_with(&h.name)), "{during}");
    }
    for h in &fleet.hosts[4..] {
        assert!(!during.lines().any(|l| l.starts_with(&h.name)), "{during}");
    }
    let mut child = screen.child;
    assert!(child.wait().expect("ship ends").success());
    let id = fleet.host(0).current_id().expect("current");
    fleet.assert_all_on(&id);
}
