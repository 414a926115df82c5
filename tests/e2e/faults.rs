//! The fault suite: hosts that die, hang or drop off the network during prepare and during the
//! switch, a full disk, two deploys at once, operator interruption, and a controller killed
//! outright. After each: where `current` points on every host, which releases exist, that
//! `shared/` is byte-identical, the lock state, the exit code and the message.
//! docs/reliability.md lists these scenarios with their guarantees.

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use crate::support::scenario::{DuringBuild, Fault, Ran, Scenario};
use crate::support::{Fleet, Run, TestHost, wait_until};

/// A build that marks the release and then takes long enough for a fault to land in it.
const SLOW_BUILD: &str = "    build: [\"sh build.sh\", \"touch building; sleep 20\"]\n";

type Snapshots = Vec<BTreeMap<String, String>>;

/// A fleet of `n` with one release deployed; returns it, the live id and shared/ snapshots.
fn deployed(n: usize) -> (Fleet, String, Snapshots) {
    deployed_with(Fleet::start(n))
}

fn deployed_with(fleet: Fleet) -> (Fleet, String, Snapshots) {
    fleet.inventory("", "");
    let live = fleet.deploy_first();
    let snaps = fleet.hosts.iter().map(|h| h.shared_snapshot()).collect();
    (fleet, live, snaps)
}

/// The host could not be cleaned up: still on `live`, shared intact, but our lock and the
/// staged release are left for `ship lock release`.
fn assert_left_locked(h: &TestHost, live: &str, snap: &BTreeMap<String, String>) -> String {
    assert_eq!(h.current_id().as_deref(), Some(live), "{}: current", h.name);
    assert!(
        h.locked(),
        "{}: our lock is left (it could not be reached)",
        h.name
    );
    assert_eq!(&h.shared_snapshot(), snap, "{}: shared/ intact", h.name);
    let staged: Vec<String> = h.releases().into_iter().filter(|r| r != live).collect();
    assert_eq!(
        staged.len(),
        1,
        "{}: one staged release left: {staged:?}",
        h.name
    );
    staged[0].clone()
}

fn building_everywhere(fleet: &Fleet) -> bool {
    fleet.hosts.iter().all(|h| {
        h.releases()
            .iter()
            .any(|r| h.path(&format!("releases/{r}/building")).exists())
    })
}

/// Processes of the host still running the slow build step.
fn builds_running(h: &TestHost) -> usize {
    h.running("sleep 20")
}

/// Start a deploy with the slow build and wait until every host is inside it.
fn deploy_until_building(fleet: &Fleet) -> crate::support::Running {
    fleet.inventory("", SLOW_BUILD);
    let run = fleet.spawn_ship(&["deploy", "production"]);
    wait_until(
        "every host running the build",
        Duration::from_secs(20),
        || building_everywhere(fleet),
    );
    run
}

/// `ship status`, `ship lock release --yes` and a fresh deploy put a fleet that a failed run
/// left locked back in order.
fn recover(fleet: &Fleet, live: &str, snaps: &Snapshots, left: &[(usize, String)]) {
    let status = fleet.ship(&["status", "production"]);
    assert_eq!(status.code, 3, "status needs attention: {}", status.all());
    assert!(
        status
            .stdout
            .contains(&format!("production: consistent: every host is on {live}")),
        "{}",
        status.all()
    );
    for (i, staged) in left {
        let row = status
            .stdout
            .lines()
            .find(|l| {
                l.trim_start()
                    .starts_with(&format!("{} ", fleet.host(*i).name))
            })
            .unwrap_or_default();
        assert!(
            row.contains("HELD (dead)") && row.contains(staged.as_str()),
            "{row}\n{}",
            status.stdout
        );
    }
    assert!(
        status.stdout.contains("`ship lock release production`"),
        "{}",
        status.stdout
    );

    let refused = fleet.ship(&["lock", "release", "production"]);
    assert_eq!(
        refused.code,
        2,
        "not a terminal and no --yes: {}",
        refused.all()
    );
    assert!(refused.stderr.contains("pass --yes"), "{}", refused.all());
    assert!(
        left.iter().all(|(i, _)| fleet.host(*i).locked()),
        "nothing changed without --yes"
    );

    // A staged release that was prepared to the end (its REVISION written) is complete: lock
    // release keeps it (ship deletes no complete release the operator did not name); one whose
    // prepare never finished goes.
    let complete: Vec<(usize, String)> = left
        .iter()
        .filter(|(i, staged)| {
            fleet
                .host(*i)
                .path(&format!("releases/{staged}/REVISION"))
                .exists()
        })
        .cloned()
        .collect();
    let released = fleet.ship(&["lock", "release", "production", "--yes"]);
    assert_eq!(released.code, 0, "{}", released.all());
    for (i, staged) in left {
        let h = fleet.host(*i);
        let said = if complete.iter().any(|(c, _)| c == i) {
            format!("kept releases/{staged} (complete: ")
        } else {
            format!("releases/{staged}")
        };
        assert!(
            released.stdout.contains(&format!("{}: removed", h.name))
                && released.stdout.contains(&said),
            "{}",
            released.all()
        );
        let last = h.journal().pop().expect("journal line");
        assert_eq!(last["kind"], "lock-release", "{last}");
    }
    for (i, (h, snap)) in fleet.hosts.iter().zip(snaps).enumerate() {
        match complete.iter().find(|(c, _)| *c == i) {
            Some((_, staged)) => {
                assert_eq!(h.current_id().as_deref(), Some(live), "{}: current", h.name);
                assert_eq!(
                    h.releases(),
                    vec![live.to_owned(), staged.clone()],
                    "{}: the complete release is kept",
                    h.name
                );
                assert!(!h.locked(), "{}: no lock left", h.name);
                assert_eq!(&h.shared_snapshot(), snap, "{}: shared/ intact", h.name);
            }
            None => h.assert_as_before(live, snap, false),
        }
    }
    let status = fleet.ship(&["status", "production"]);
    assert_eq!(status.code, 0, "{}", status.all());

    fleet.inventory("", "");
    let again = fleet.deploy();
    assert_eq!(again.code, 0, "{}", again.all());
    let new = fleet.host(0).current_id().expect("current");
    assert_ne!(new, live);
    for (i, (h, snap)) in fleet.hosts.iter().zip(snaps).enumerate() {
        assert_eq!(h.current_id().as_deref(), Some(new.as_str()), "{}", h.name);
        let mut expected = vec![live.to_owned()];
        expected.extend(
            complete
                .iter()
                .filter(|(c, _)| *c == i)
                .map(|(_, s)| s.clone()),
        );
        expected.push(new.clone());
        assert_eq!(h.releases(), expected, "{}", h.name);
        assert!(!h.locked());
        assert_eq!(&h.shared_snapshot(), snap, "{}: shared/ intact", h.name);
    }
}

/// A host lost during prepare: the deploy aborts at once, the others are cleaned up, the lost
/// one is named with what it keeps, and the run ended long before the build would have.
fn assert_lost_during_prepare(ran: &Ran) -> String {
    let (run, fleet, snaps) = (&ran.run, &ran.fleet, &ran.snaps);
    let live = ran.live();
    assert_eq!(
        run.code,
        3,
        "a lock is left on the lost host: {}",
        run.all()
    );
    // The others' builds were stopped when web-2 was lost, not left to run out (an event, not
    // a clock: their build steps say so).
    let all = run.all();
    assert!(
        all.contains("[web-1] build: touch building; sleep 20 … cancelled"),
        "the other hosts' builds were stopped: {all}"
    );
    assert!(
        all.contains("[web-2] FAILED at prepare (build: touch building; sleep 20)"),
        "{all}"
    );
    assert!(all.contains("aborted: no host was switched"), "{all}");
    assert!(
        all.contains("web-2: still locked") && all.contains("`ship lock release production`"),
        "{all}"
    );
    for i in [0, 2] {
        fleet.host(i).assert_as_before(live, &snaps[i], false);
        assert_eq!(
            builds_running(fleet.host(i)),
            0,
            "{}: build stopped",
            fleet.host(i).name
        );
    }
    assert_left_locked(fleet.host(1), live, &snaps[1])
}

#[test]
fn a_host_killed_during_prepare_aborts_everywhere_and_can_be_recovered() {
    let mut ran = Scenario::new(3)
        .deployed()
        .during_build(DuringBuild::Kill(1))
        .run(&["deploy", "production"]);
    let staged = assert_lost_during_prepare(&ran);
    ran.fleet.hosts[1].restart();
    recover(&ran.fleet, ran.live(), &ran.snaps, &[(1, staged)]);
}

#[test]
fn a_host_frozen_during_prepare_aborts_within_the_keepalive_timeout() {
    let ran = Scenario::new(3)
        .deployed()
        .during_build(DuringBuild::Freeze(1))
        .run(&["deploy", "production"]);
    // The frozen host is detected by keepalives.
    ran.says("keepalive");
    let staged = assert_lost_during_prepare(&ran);
    // Thawed, the host finds its controller gone and its supervised build stops itself.
    ran.host(1).thaw();
    wait_until(
        "web-2's abandoned build stops",
        Duration::from_secs(15),
        || builds_running(ran.host(1)) == 0,
    );
    recover(&ran.fleet, ran.live(), &ran.snaps, &[(1, staged)]);
}

#[test]
fn a_host_cut_off_during_prepare_aborts_within_the_keepalive_timeout() {
    let mut ran = Scenario::new(3)
        .deployed()
        .during_build(DuringBuild::Cut(1))
        .run(&["deploy", "production"]);
    let staged = assert_lost_during_prepare(&ran);
    ran.fleet.hosts[1].reconnect();
    recover(&ran.fleet, ran.live(), &ran.snaps, &[(1, staged)]);
}

/// A `mv` on one host that does `action` instead of (or around) the switch's rename; renames
/// that are not the switch pass through.
fn switch_fault(h: &TestHost, action: &str) {
    h.switch_through_mv();
    h.fault(
        "mv",
        &format!("case \"$2\" in .ship/stage-*) {action} ;; esac\nexec /bin/mv \"$@\""),
    );
}

#[test]
fn a_failed_rename_on_one_host_switches_the_others_back() {
    let ran = Scenario::new(3)
        .deployed()
        .fault(
            1,
            Fault::Switch("echo 'mv: cannot move: Read-only file system' >&2; exit 1"),
        )
        .run(&["deploy", "production"]);
    ran.exits(1)
        .says("every switched host was switched back")
        .says("[web-2] FAILED at switch: the rename failed; current is unchanged")
        .says("Read-only file system")
        .says("reverted")
        .unchanged();
    for h in &ran.fleet.hosts {
        let last = h.journal().pop().expect("journal");
        assert_eq!(last["outcome"], "rolled_back", "{}: {last}", h.name);
    }
}

#[test]
fn a_host_killed_during_the_switch_is_named_and_the_others_are_switched_back() {
    let (mut fleet, live, snaps) = deployed(3);
    switch_fault(fleet.host(1), TestHost::CRASH);
    let run = fleet.deploy();
    assert_eq!(run.code, 3, "needs attention: {}", run.all());
    let all = run.all();
    assert!(all.contains("NEEDS ATTENTION"), "{all}");
    assert!(all.contains("[web-2] FAILED at switch"), "{all}");
    assert!(
        all.contains(
            "web-2: could not be switched back; run this on the host: cd /var/www/app && "
        ),
        "{all}"
    );
    for i in [0, 2] {
        fleet.host(i).assert_as_before(&live, &snaps[i], false);
    }
    // web-2 died before its rename: it is on the old release, with our lock and the new one.
    let staged = assert_left_locked(fleet.host(1), &live, &snaps[1]);
    fleet.hosts[1].restart();
    fleet.host(1).fault("mv", "exec /bin/mv \"$@\"");
    recover(&fleet, &live, &snaps, &[(1, staged)]);
}

#[test]
fn a_host_cut_off_during_the_switch_is_named_with_the_command_that_reverts_it() {
    let (mut fleet, live, snaps) = deployed(3);
    // web-2 switches, then drops off the network before it can say so.
    let cut = fleet.host(1).cut_commands();
    switch_fault(
        fleet.host(1),
        &format!("/bin/mv \"$@\"; {cut}; sleep 30; exit 0"),
    );
    let run = fleet.deploy();
    assert_eq!(run.code, 3, "needs attention: {}", run.all());
    let all = run.all();
    assert!(all.contains("[web-2] FAILED at switch"), "{all}");
    let remedy = all
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("web-2: could not be switched back; run this on the host: ")
        })
        .unwrap_or_else(|| panic!("a remedy for web-2: {all}"))
        .to_owned();
    for i in [0, 2] {
        fleet.host(i).assert_as_before(&live, &snaps[i], false);
    }
    let h = fleet.host(1);
    let new = h.current_id().expect("current");
    assert_ne!(new, live, "web-2 did switch before it was cut off");
    assert!(h.locked());
    fleet.hosts[1].reconnect();

    assert_not_consistent(&fleet);

    // The printed command puts web-2 back, by rename.
    let out = fleet.host(1).run_on_host(&remedy);
    assert!(
        out.status.success(),
        "{remedy}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fleet.host(1).current_id().as_deref(), Some(live.as_str()));
    fleet.host(1).fault("mv", "exec /bin/mv \"$@\"");
    recover(&fleet, &live, &snaps, &[(1, new)]);
}

#[test]
fn a_full_disk_on_one_host_aborts_everywhere_and_says_so() {
    Scenario::new(3)
        .small_disk(1, "3m")
        .deployed()
        .stage("    build: [\"sh build.sh\", \"head -c 8000000 /dev/zero > public/big.bin\"]\n")
        .run(&["deploy", "production"])
        .exits(1)
        .says("[web-2] FAILED at prepare (build: head -c 8000000 /dev/zero > public/big.bin)")
        .says("the disk is full on this host")
        // web-2's release is gone; a host that had built completely keeps it, prepared.
        .unchanged_but_prepared(&[1]);
}

#[test]
fn of_two_deploys_started_together_exactly_one_proceeds() {
    let (fleet, live, snaps) = deployed(3);
    // Builds of 3 s, so the two runs overlap however slowly either one connects.
    fleet.inventory("  env:\n    BUILD_SECONDS: \"3\"\n", "");
    let a = fleet.spawn_ship(&["deploy", "production"]);
    let b = fleet.spawn_ship(&["deploy", "production"]);
    let (a, b) = (a.finish(), b.finish());
    let mut codes = [a.code, b.code];
    codes.sort();
    assert_eq!(
        codes,
        [0, 4],
        "one deploys, the other stops at the lock:\n{}\n{}",
        a.all(),
        b.all()
    );
    let loser = if a.code == 4 { &a } else { &b };
    assert!(
        loser.all().contains("FAILED at lock") && loser.all().contains("is locked by deploy"),
        "{}",
        loser.all()
    );
    let new = fleet.host(0).current_id().expect("current");
    assert_ne!(new, live);
    for (h, snap) in fleet.hosts.iter().zip(&snaps) {
        assert_eq!(h.current_id().as_deref(), Some(new.as_str()), "{}", h.name);
        assert_eq!(
            h.releases(),
            vec![live.clone(), new.clone()],
            "{}: no trace of the loser",
            h.name
        );
        assert!(!h.locked());
        assert_eq!(&h.shared_snapshot(), snap);
    }

    // With --lock-wait, the second waits for the first and then deploys too.
    let a = fleet.spawn_ship(&["deploy", "production", "--lock-wait", "60s"]);
    let b = fleet.spawn_ship(&["deploy", "production", "--lock-wait", "60s"]);
    let (a, b) = (a.finish(), b.finish());
    assert_eq!((a.code, b.code), (0, 0), "\n{}\n{}", a.all(), b.all());
    assert!(
        a.all().contains("waiting up to") || b.all().contains("waiting up to"),
        "one of them waited:\n{}\n{}",
        a.all(),
        b.all()
    );
    for (h, snap) in fleet.hosts.iter().zip(&snaps) {
        let releases = h.releases();
        assert_eq!(
            releases.len(),
            3,
            "{}: keep_releases 3: {releases:?}",
            h.name
        );
        assert_eq!(
            h.current_id().as_ref(),
            releases.last(),
            "{}: the later deploy is current",
            h.name
        );
        assert!(!h.locked());
        assert_eq!(&h.shared_snapshot(), snap);
    }
}

fn interrupted_during_prepare(sig: &'static str) {
    let ran = Scenario::new(3)
        .deployed()
        .during_build(DuringBuild::Signal(sig))
        .run(&["deploy", "production"]);
    ran.exits(130)
        .says("interrupted during prepare: no host has switched")
        .says("aborted: no host was switched")
        .unchanged();
    for h in &ran.fleet.hosts {
        assert_eq!(
            builds_running(h),
            0,
            "{}: the remote build was stopped",
            h.name
        );
        let last = h.journal().pop().expect("journal");
        assert_eq!(last["outcome"], "aborted", "{last}");
    }
}

#[test]
fn sigint_during_prepare_stops_the_builds_and_leaves_every_host_as_it_was() {
    interrupted_during_prepare("-INT");
}

#[test]
fn sigterm_during_prepare_stops_the_builds_and_leaves_every_host_as_it_was() {
    interrupted_during_prepare("-TERM");
}

#[test]
fn sighup_during_prepare_stops_the_builds_and_leaves_every_host_as_it_was() {
    // The terminal went away (a closed SSH session to a jump box running ship).
    interrupted_during_prepare("-HUP");
}

fn interrupted_during_switch(sig: &str) {
    let (fleet, live, snaps) = deployed(3);
    // web-2 is slow to rename: the signal lands while the switch is in flight.
    switch_fault(fleet.host(1), "touch /var/www/app/.ship/switching; sleep 2");
    let run = fleet.spawn_ship(&["deploy", "production"]);
    wait_until("web-2 inside its switch", Duration::from_secs(30), || {
        fleet.host(1).path(".ship/switching").exists()
    });
    run.signal(sig);
    let run = run.finish();
    assert_eq!(run.code, 0, "the switch was finished: {}", run.all());
    assert!(
        run.all()
            .contains("interrupted after the switch began: finishing it"),
        "{}",
        run.all()
    );
    let new = fleet.host(0).current_id().expect("current");
    assert_ne!(new, live);
    for (h, snap) in fleet.hosts.iter().zip(&snaps) {
        assert_eq!(
            h.current_id().as_deref(),
            Some(new.as_str()),
            "{}: switched",
            h.name
        );
        assert!(!h.locked(), "{}", h.name);
        assert_eq!(&h.shared_snapshot(), snap);
    }
}

#[test]
fn sigint_during_the_switch_finishes_it_on_every_host() {
    interrupted_during_switch("-INT");
}

#[test]
fn sigterm_during_the_switch_finishes_it_on_every_host() {
    interrupted_during_switch("-TERM");
}

#[test]
fn sighup_during_the_switch_finishes_it_on_every_host() {
    // The terminal went away while the fleet was switching: the switch is finished, as for
    // Ctrl-C, never left half-done.
    interrupted_during_switch("-HUP");
}

#[test]
fn ctrl_c_during_a_run_once_step_lets_it_finish_then_switches_no_host() {
    let (fleet, live, snaps) = deployed(3);
    // A migration is not stopped half-way: it finishes, then the deploy aborts.
    fleet.inventory(
        "  run_once: [\"touch $SHIP_DEPLOY_TO/migrating; sleep 2; touch $SHIP_DEPLOY_TO/migrated\"]\n",
        "",
    );
    let run = fleet.spawn_ship(&["deploy", "production"]);
    wait_until("the run-once step running", Duration::from_secs(30), || {
        fleet.hosts.iter().any(|h| h.path("migrating").exists())
    });
    run.signal("-INT");
    let run = run.finish();
    assert_eq!(run.code, 130, "{}", run.all());
    let all = run.all();
    assert!(
        all.contains("interrupted during run once: no host has switched"),
        "{all}"
    );
    assert!(all.contains("aborted: no host was switched"), "{all}");
    let ran: Vec<&str> = fleet
        .hosts
        .iter()
        .filter(|h| h.path("migrating").exists())
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(ran, ["web-1"], "run once, on the first host");
    assert!(
        fleet.host(0).path("migrated").exists(),
        "the migration ran to its end"
    );
    for (h, snap) in fleet.hosts.iter().zip(&snaps) {
        h.assert_as_before(&live, snap, false);
    }
}

#[test]
fn a_step_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let (fleet, live, _) = deployed(2);
    // A build step that notes SIGTERM and goes on (perl, named so it can be found).
    let stubborn = "$0 = 'ship-test-stubborn';\n\
        $SIG{TERM} = sub { open(my $f, '>>', \"$ENV{SHIP_DEPLOY_TO}/got-term\"); print $f \"term\\n\"; close $f };\n\
        open(my $m, '>', \"$ENV{SHIP_DEPLOY_TO}/stubborn-started\"); close $m;\n\
        sleep 1 while 1;\n";
    for h in &fleet.hosts {
        fs::write(h.path("shared/stubborn.pl"), stubborn).expect("script");
    }
    let snaps: Vec<_> = fleet.hosts.iter().map(|h| h.shared_snapshot()).collect();
    fleet.inventory(
        "",
        "    build: [\"sh build.sh\", \"perl $SHIP_DEPLOY_TO/shared/stubborn.pl\"]\n",
    );
    let run = fleet.spawn_ship(&["deploy", "production"]);
    wait_until(
        "the stubborn step on every host",
        Duration::from_secs(30),
        || {
            fleet
                .hosts
                .iter()
                .all(|h| h.path("stubborn-started").exists() && h.running("ship-test-stubborn") > 0)
        },
    );
    run.signal("-INT");
    let run = run.finish();
    assert_eq!(run.code, 130, "{}", run.all());
    for (h, snap) in fleet.hosts.iter().zip(&snaps) {
        // It got SIGTERM and ignored it; only the SIGKILL that follows can end it.
        wait_until("the stubborn step killed", Duration::from_secs(30), || {
            h.running("ship-test-stubborn") == 0
        });
        let got = fs::read_to_string(h.path("got-term")).unwrap_or_default();
        assert!(
            got.starts_with("term"),
            "{}: no SIGTERM first ({got:?})",
            h.name
        );
        h.assert_as_before(&live, snap, false);
    }
}

#[test]
fn a_killed_controller_is_detected_by_status_and_the_next_deploy() {
    let (fleet, live, snaps) = deployed(3);
    let run = deploy_until_building(&fleet);
    run.signal("-KILL");
    let _ = run.finish();
    // The hosts see the connection close, and the supervised builds stop themselves.
    wait_until(
        "every abandoned build stops",
        Duration::from_secs(15),
        || fleet.hosts.iter().all(|h| builds_running(h) == 0),
    );
    let left: Vec<(usize, String)> = (0..3)
        .map(|i| (i, assert_left_locked(fleet.host(i), &live, &snaps[i])))
        .collect();

    let next = fleet.deploy();
    assert_eq!(next.code, 4, "{}", next.all());
    let all = next.all();
    assert!(
        all.contains("that process is no longer running: it was killed before it finished")
            && all.contains(&format!(
                "it may have left releases/{} unfinished",
                left[0].1
            ))
            && all.contains("`ship lock release production`"),
        "{all}"
    );
    recover(&fleet, &live, &snaps, &left);
}

#[test]
fn a_second_ctrl_c_exits_at_once_and_says_where_each_host_stood() {
    let (fleet, live, snaps) = deployed(3);
    let run = deploy_until_building(&fleet);
    // The cleanup the first Ctrl-C starts is held at its first `rm` on every host, so the
    // second one comes while it runs.
    for h in &fleet.hosts {
        fs::write(h.faults.join("hold"), "").expect("hold");
        h.fault(
            "rm",
            "while [ -e /usr/local/sbin/hold ]; do sleep 0.05; done; exec /bin/rm \"$@\"",
        );
    }
    run.signal("-INT");
    std::thread::sleep(Duration::from_millis(30));
    run.signal("-INT");
    let run = run.finish();
    assert_eq!(run.code, 130, "{}", run.all());
    let err = &run.stderr;
    assert!(
        err.contains("ship: exiting at once. Where each host stood:"),
        "{err}"
    );
    for h in &fleet.hosts {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("  {}: ", h.name))),
            "{} has a state line: {err}",
            h.name
        );
    }
    assert!(err.contains("`ship status`"), "{err}");
    // At once: ship ended while every host's cleanup was still held at its first `rm` (no
    // clock: the cleanup it would have waited for has not run), so every host keeps our lock.
    for h in &fleet.hosts {
        assert!(h.faults.join("hold").exists(), "{}: still held", h.name);
        assert!(
            h.locked(),
            "{}: the lock stays when ship exits at once",
            h.name
        );
    }
    // Whatever the cleanup got to before the exit, no host switched, and what is left is
    // exactly what `ship lock release` clears.
    for (h, snap) in fleet.hosts.iter().zip(&snaps) {
        assert_eq!(h.current_id().as_deref(), Some(live.as_str()), "{}", h.name);
        assert_eq!(&h.shared_snapshot(), snap);
    }
    for h in &fleet.hosts {
        fs::remove_file(h.faults.join("hold")).expect("release the held rm");
    }
    wait_until("the abandoned builds stop", Duration::from_secs(15), || {
        fleet.hosts.iter().all(|h| builds_running(h) == 0)
    });
    let released = fleet.ship(&["lock", "release", "production", "--yes"]);
    assert_eq!(released.code, 0, "{}", released.all());
    for (h, snap) in fleet.hosts.iter().zip(&snaps) {
        h.assert_as_before(&live, snap, false);
    }
}

/// An owner record as a run of ship writes it.
fn lock_owner(token: &str, release: &str) -> String {
    format!(
        "{{\"token\":\"{token}\",\"kind\":\"deploy\",\"user\":\"ci\",\"controller\":\"elsewhere\",\
         \"pid\":41,\"release\":\"{release}\",\"started\":\"2026-11-22T11:00:00Z\",\"ci_job\":null}}"
    )
}

#[test]
fn lock_release_removes_only_the_locks_it_showed() {
    let (fleet, live, snaps) = deployed(3);
    let left = "20261122110000";
    for h in &fleet.hosts {
        fs::create_dir_all(h.path(&format!("releases/{left}"))).expect("mkdir");
        fs::create_dir_all(h.path(".ship/lock")).expect("mkdir");
        fs::write(
            h.path(".ship/lock/owner"),
            lock_owner("ship-20261122110000-41", left) + "\n",
        )
        .expect("owner");
    }
    // Another run takes the lock of web-1 right after ship showed it (at the first `df`, which
    // comes after the lock is read), and that of web-2 while ship is about to remove it (at the
    // second, after ship looked again).
    let taken = lock_owner("ship-20261122120000-9", "20261122120000");
    for (i, at) in [(0, 1), (1, 2)] {
        fleet.host(i).fault(
            "df",
            &format!(
                "n=$(cat /var/www/.df 2>/dev/null || echo 0); n=$((n+1)); echo $n > /var/www/.df\n\
                 if [ $n = {at} ]; then printf '%s\\n' '{taken}' > /var/www/app/.ship/lock/owner; fi\n\
                 exec /usr/bin/df \"$@\""
            ),
        );
    }
    let run = fleet.ship(&["lock", "release", "production", "--yes"]);
    assert_eq!(run.code, 3, "{}", run.all());
    for h in &fleet.hosts[..2] {
        assert!(
            run.stderr.contains(&format!(
                "{}: FAILED: the lock changed after it was shown: it is now held by deploy of \
                 20261122120000",
                h.name
            )) && run.stderr.contains("nothing was removed here"),
            "{}",
            run.all()
        );
        assert!(h.locked(), "{}: the new holder keeps its lock", h.name);
        assert_eq!(
            fs::read_to_string(h.path(".ship/lock/owner")).expect("owner"),
            format!("{taken}\n")
        );
        assert!(h.path(&format!("releases/{left}")).is_dir(), "{}", h.name);
        assert!(
            !fs::read_to_string(h.path(".ship/history"))
                .expect("journal")
                .contains("lock-release"),
            "{}",
            h.name
        );
    }
    let web3 = fleet.host(2);
    assert!(!web3.locked());
    assert!(!web3.path(&format!("releases/{left}")).exists());
    assert!(
        run.stdout
            .contains(&format!("web-3: removed releases/{left}, .ship/lock")),
        "{}",
        run.all()
    );
    assert!(
        fs::read_to_string(web3.path(".ship/history"))
            .expect("journal")
            .contains("\"kind\":\"lock-release\"")
    );
    for (h, snap) in fleet.hosts.iter().zip(&snaps) {
        assert_eq!(h.current_id().as_deref(), Some(live.as_str()), "{}", h.name);
        assert_eq!(&h.shared_snapshot(), snap, "{}", h.name);
    }
}

#[test]
fn a_dead_host_within_max_unreachable_is_left_out_and_brought_along_by_the_next_deploy() {
    let mut fleet = Fleet::start(3);
    fleet.inventory("", "");
    let a = ok_release(&fleet.deploy());
    fleet.hosts[2].kill();
    // Without a budget: stopped at connect, nothing changed.
    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    for h in &fleet.hosts[..2] {
        assert_eq!(h.current_id().as_deref(), Some(a.as_str()), "{}", h.name);
        assert!(!h.locked(), "{}", h.name);
    }
    // With one: web-3 is left out, the others deploy as the fleet.
    let run = fleet.ship(&["deploy", "production", "--max-unreachable", "1"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout
            .contains("left out, unreachable (within max_unreachable): web-3"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("  web-3  left out "), "{}", run.stdout);
    let b = fleet.hosts[0].current_id().expect("current");
    assert_ne!(a, b);
    assert_eq!(fleet.hosts[1].current_id().as_deref(), Some(b.as_str()));
    // Two hosts dead, a budget of one: over it, the deploy stops at connect, nothing changes.
    fleet.hosts[1].kill();
    let run = fleet.ship(&["deploy", "production", "--max-unreachable", "1"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all()
            .contains("2 hosts unreachable, more than max_unreachable (1)"),
        "{}",
        run.all()
    );
    assert_eq!(fleet.hosts[0].current_id().as_deref(), Some(b.as_str()));
    assert_eq!(fleet.hosts[0].releases().len(), 2);
    assert!(!fleet.hosts[0].locked());
    fleet.hosts[1].restart();
    fleet.hosts[2].restart();
    assert_eq!(
        fleet.hosts[2].current_id().as_deref(),
        Some(a.as_str()),
        "left behind"
    );
    assert_not_consistent(&fleet);
    // The next deploy brings it along.
    std::thread::sleep(Duration::from_millis(1100));
    let c = ok_release(&fleet.deploy());
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(c.as_str()), "{}", h.name);
        assert!(!h.locked(), "{}", h.name);
    }
}

/// The release a successful run deployed, from its summary line.
fn ok_release(run: &Run) -> String {
    assert_eq!(run.code, 0, "{}", run.all());
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix("deployed "))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no deployed line: {}", run.stdout))
}

/// `ship status` says the fleet is not on one release (exit 3).
fn assert_not_consistent(fleet: &Fleet) {
    let status = fleet.ship(&["status", "production"]);
    assert_eq!(status.code, 3, "{}", status.all());
    assert!(
        status.stdout.contains("production: NOT consistent"),
        "{}",
        status.stdout
    );
}

#[test]
fn connect_timeout_on_the_command_line_bounds_the_wait_for_a_silent_host() {
    let (mut fleet, live, snaps) = deployed(3);
    // web-2 drops every packet: its TCP handshake never completes.
    fleet.hosts[1].cut();
    let run = fleet.ship(&["deploy", "production", "--connect-timeout", "1s"]);
    fleet.hosts[1].reconnect();
    assert_eq!(run.code, 1, "{}", run.all());
    let all = run.all();
    assert!(
        all.contains(
            "[web-2] FAILED at connect: timed out after 1.0s while connecting and \
                      authenticating (connect_timeout; hint:"
        ),
        "{all}"
    );
    assert!(all.contains("aborted: no host was switched"), "{all}");
    for (h, snap) in fleet.hosts.iter().zip(&snaps) {
        h.assert_as_before(&live, snap, false);
    }
}
