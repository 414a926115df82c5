//! End-to-end tests: the ship binary against real OpenSSH servers (see `support`).
//! Every scenario asserts the state of every host afterwards: where `current` points, which
//! releases exist, that `shared/` is intact, and the lock state.

mod support;

#[path = "e2e/chaos.rs"]
mod chaos;
#[path = "e2e/ci.rs"]
mod ci;
#[path = "e2e/faults.rs"]
mod faults;
#[path = "e2e/hostile.rs"]
mod hostile;
#[path = "e2e/rollout.rs"]
mod rollout;
#[path = "e2e/servers.rs"]
mod servers;
#[path = "e2e/soak.rs"]
mod soak;
#[path = "e2e/trust.rs"]
mod trust;
#[path = "e2e/url.rs"]
mod url;
#[path = "e2e/zero.rs"]
mod zero;

use std::fs;
use std::path::Path;

use support::scenario::{Fault, Scenario};
use support::{Fleet, git};

fn sha256_revision() -> String {
    // The artifact digest ship writes to REVISION: packed the same way as ship packs it.
    let bytes = ship::source::pack_dir(&Fleet::example_app()).expect("pack");
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)))
}

#[test]
fn first_deploy_switches_every_host_with_shared_links_and_revision() {
    let fleet = Fleet::start(3);
    fleet.inventory("", "");
    let run = fleet.deploy();
    assert_eq!(run.code, 0, "{}", run.all());
    let id = fleet.host(0).current_id().expect("current on web-1");
    assert_eq!(id.len(), 14, "release id is YYYYMMDDHHMMSS: {id}");
    for h in &fleet.hosts {
        assert_eq!(
            h.current_id().as_deref(),
            Some(id.as_str()),
            "{} current",
            h.name
        );
        assert_eq!(h.releases(), vec![id.clone()], "{} releases", h.name);
        assert!(!h.locked(), "{} lock released", h.name);
        let rel = h.path(&format!("releases/{id}"));
        assert_eq!(
            fs::read_to_string(rel.join("REVISION"))
                .expect("REVISION")
                .trim(),
            sha256_revision()
        );
        assert_eq!(
            fs::read_link(rel.join(".env")).expect(".env link"),
            Path::new("../../shared/.env")
        );
        assert_eq!(
            fs::read_link(rel.join("storage")).expect("storage link"),
            Path::new("../../shared/storage")
        );
        assert!(h.path("shared/.env").is_file() && h.path("shared/storage").is_dir());
        // The build ran in the release, on the host.
        assert_eq!(
            fs::read_to_string(h.path("current/public/release.txt"))
                .expect("built")
                .trim(),
            id
        );
        let journal = h.journal();
        assert_eq!(journal.len(), 1);
        assert_eq!(journal[0]["outcome"], "deployed");
        assert_eq!(journal[0]["release"], id.as_str());
        // One SSH connection per host per deploy.
        assert_eq!(
            fleet.connections(
                fleet
                    .hosts
                    .iter()
                    .position(|x| x.name == h.name)
                    .unwrap_or(0)
            ),
            1
        );
    }
    assert!(
        run.stdout
            .contains(&format!("deployed {id} to production: 3/3 hosts switched")),
        "{}",
        run.stdout
    );
    // The flip skew is the spread of the per-host "switched" column, on this machine's clock,
    // with the error bound of the clock offsets it was measured with.
    let skew: f64 = run
        .stdout
        .split("flip skew ")
        .nth(1)
        .and_then(|r| r.split(" ms").next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a flip skew: {}", run.stdout));
    let latest = run
        .stdout
        .lines()
        .filter(|l| l.contains(" switched ") && l.trim_end().ends_with("ms"))
        .filter_map(|l| {
            l.split_whitespace()
                .last()?
                .strip_prefix('+')?
                .strip_suffix("ms")
        })
        .filter_map(|v| v.parse::<f64>().ok())
        .collect::<Vec<f64>>();
    assert_eq!(
        latest.len(),
        3,
        "a switched column per host: {}",
        run.stdout
    );
    let latest = latest.into_iter().fold(f64::MIN, f64::max);
    assert!(
        (latest - skew).abs() < 0.011,
        "{latest} vs {skew}: {}",
        run.stdout
    );
    assert!(run.stdout.contains("each within ±"), "{}", run.stdout);
}

#[test]
fn later_deploys_keep_shared_content_and_clean_up_old_releases() {
    let fleet = Fleet::start(2);
    fleet.inventory("", "");
    let mut ids = Vec::new();
    for n in 0..4 {
        let run = fleet.deploy();
        assert_eq!(run.code, 0, "deploy {n}: {}", run.all());
        ids.push(fleet.host(0).current_id().expect("current"));
        if n == 0 {
            // The operator puts real content in shared/ after the first deploy.
            for h in &fleet.hosts {
                fs::write(
                    h.path("shared/.env"),
                    format!("APP_KEY=secret-of-{}\n", h.name),
                )
                .expect("write");
                fs::write(h.path("shared/storage/uploaded.jpg"), [0u8, 1, 2, 255]).expect("write");
            }
        }
    }
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, ids, "each deploy gets a new, later id");
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_ref(), ids.last());
        // keep_releases: 3 → the oldest went; current and previous are among the kept.
        assert_eq!(h.releases(), ids[1..].to_vec(), "{}", h.name);
        assert_eq!(
            fs::read_to_string(h.path("shared/.env")).expect("env"),
            format!("APP_KEY=secret-of-{}\n", h.name)
        );
        assert_eq!(
            fs::read(h.path("current/storage/uploaded.jpg")).expect("upload"),
            [0u8, 1, 2, 255]
        );
        assert!(!h.locked());
        let outcomes: Vec<String> = h
            .journal()
            .iter()
            .map(|j| j["outcome"].to_string())
            .collect();
        assert_eq!(outcomes, vec!["\"deployed\""; 4]);
        assert_eq!(h.journal()[3]["previous"], ids[2].as_str());
    }
}

#[test]
fn a_failed_cleanup_is_reported_and_the_host_is_still_unlocked_and_journaled() {
    let fleet = Fleet::start(2);
    fleet.inventory("", "");
    fleet.edit_inventory(|t| t.replace("keep_releases: 3", "keep_releases: 1"));
    let mut ids = Vec::new();
    for _ in 0..2 {
        let run = fleet.deploy();
        assert_eq!(run.code, 0, "{}", run.all());
        ids.push(fleet.host(0).current_id().expect("current"));
    }
    // web-2 cannot remove releases (a read-only mount, say).
    fleet.host(1).fault(
        "rm",
        "case \"$*\" in *releases/*) echo 'rm: cannot remove: Read-only file system' >&2; \
         exit 1;; esac; exec /bin/rm \"$@\"",
    );
    let run = fleet.deploy();
    let all = run.all();
    let live = fleet.host(0).current_id().expect("current");
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(live.as_str()), "{}", h.name);
        assert!(!h.locked(), "{}: unlocked", h.name);
        assert_eq!(h.journal().last().expect("journal")["outcome"], "deployed");
    }
    // keep_releases 1 (and the previous release always kept): web-1 removed the oldest;
    // web-2 could not.
    assert_eq!(fleet.host(0).releases(), vec![ids[1].clone(), live.clone()]);
    assert_eq!(
        fleet.host(1).releases(),
        vec![ids[0].clone(), ids[1].clone(), live.clone()]
    );
    assert!(
        all.contains("[web-2] FAILED at cleanup: exited with status 1"),
        "{all}"
    );
    assert!(all.contains("Read-only file system"), "{all}");
    assert_eq!(
        run.code, 0,
        "deployed, with a cleanup failure reported: {all}"
    );
}

#[test]
fn a_failed_build_on_one_host_changes_no_host() {
    let ran = Scenario::new(3)
        .deployed()
        .fault(1, Fault::FailBuild)
        .run(&["deploy", "production"]);
    // The message names the host, the step, the exit status and the build's own output.
    ran.exits(1)
        .says("[web-2] FAILED at prepare (build: sh build.sh): exited with status 3")
        .says("build failed: /var/www/app/shared/FAIL_BUILD exists on this host")
        .says("aborted: no host was switched; the fleet is unchanged")
        // Removed, unless the host had built it completely before web-2 failed: then it is
        // kept, prepared for a retry.
        .unchanged_but_prepared(&[1]);
    for h in &ran.fleet.hosts {
        assert!(!h.path(".ship").read_dir().expect("ship dir").any(|e| {
            e.map(|e| e.file_name().to_string_lossy().starts_with("stage-"))
                .unwrap_or(false)
        }));
        assert_eq!(h.journal().last().expect("journal")["outcome"], "aborted");
    }
}

#[test]
fn hosts_ready_and_armed_are_told_not_to_switch_when_another_fails_later() {
    let fleet = Fleet::start(3);
    fleet.inventory("", "");
    let first = fleet.deploy();
    assert_eq!(first.code, 0, "{}", first.all());
    let live = fleet.host(0).current_id().expect("current");
    // web-1 and web-3 are prepared (and their switches armed) long before web-2 fails.
    fleet.host_settings(1, "build: [\"sh build.sh\", \"sleep 2; exit 4\"]");
    let channels: Vec<usize> = (0..3).map(|i| fleet.command_channels(i)).collect();

    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    let all = run.all();
    for ready in ["web-1", "web-3"] {
        assert!(all.contains(&format!("[{ready}] prepared in")), "{all}");
    }
    assert!(
        all.contains("[web-2] FAILED at prepare (build: sleep 2; exit 4): exited with status 4"),
        "{all}"
    );
    // web-1 and web-3 had built completely: they keep the release, prepared; web-2's is gone.
    assert!(
        all.contains("prepared, whole, on: web-1, web-3; a deploy of the same build"),
        "{all}"
    );
    for (i, h) in fleet.hosts.iter().enumerate() {
        assert_eq!(h.current_id().as_deref(), Some(live.as_str()), "{}", h.name);
        assert_eq!(h.releases_but_prepared(), vec![live.clone()], "{}", h.name);
        assert_eq!(h.releases().len(), if i == 1 { 1 } else { 2 }, "{}", h.name);
        assert!(!h.locked(), "{}: lock released", h.name);
        // The waiting switches were ended before the discard: it, and the unlock, ran in the
        // host's one shell, like everything else (the small artifact rides in it too).
        assert_eq!(
            fleet.command_channels(i) - channels[i],
            1,
            "{}: {all}",
            h.name
        );
        assert_eq!(h.running("perl"), 0, "{}", h.name);
        assert_eq!(h.journal().last().expect("journal")["outcome"], "aborted");
    }
}

#[test]
fn an_unknown_host_key_stops_everything_before_any_change() {
    let fleet = Fleet::start(3);
    fleet.inventory("", "");
    // Forget web-3's key.
    let known = fs::read_to_string(&fleet.known_hosts).expect("known_hosts");
    let kept: Vec<&str> = known
        .lines()
        .filter(|l| !l.starts_with(&fleet.host(2).address))
        .collect();
    let forgotten: Vec<&str> = known
        .lines()
        .filter(|l| l.starts_with(&fleet.host(2).address))
        .collect();
    assert_eq!(forgotten.len(), 1, "{known}");
    fs::write(&fleet.known_hosts, kept.join("\n") + "\n").expect("write");
    // The fingerprint the operator is shown must be the key's, as ssh-keygen computes it.
    let line_file = fleet.dir().join("forgotten_key");
    fs::write(&line_file, format!("{}\n", forgotten[0])).expect("write");
    let listed = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&line_file)
        .output()
        .expect("ssh-keygen");
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let fingerprint = listed
        .split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .unwrap_or_else(|| panic!("a fingerprint from ssh-keygen: {listed}"))
        .to_owned();

    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all().contains(&format!(
            "host key of {} is not known",
            fleet.host(2).address
        )),
        "{}",
        run.all()
    );
    assert!(
        run.all().contains(&fingerprint),
        "the fingerprint {fingerprint}: {}",
        run.all()
    );
    assert!(
        run.all().contains("--accept-new-host-keys"),
        "{}",
        run.all()
    );
    for h in &fleet.hosts {
        assert!(
            !h.path("").exists(),
            "{}: nothing created on any host",
            h.name
        );
    }

    // With --accept-new-host-keys the key is recorded and the deploy goes through.
    let run = fleet.ship(&["deploy", "production", "--accept-new-host-keys"]);
    assert_eq!(run.code, 0, "{}", run.all());
    // The line recorded is the host's key: same address, same key type and key.
    let recorded = fs::read_to_string(&fleet.known_hosts).expect("kh");
    let key_of = |l: &str| {
        l.split_whitespace()
            .skip(1)
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(
        recorded
            .lines()
            .any(|l| l.contains(&fleet.host(2).address) && key_of(l) == key_of(forgotten[0])),
        "recorded: {recorded}\nforgotten: {}",
        forgotten[0]
    );
    let id = fleet.host(0).current_id().expect("current");
    assert!(
        fleet
            .hosts
            .iter()
            .all(|h| h.current_id().as_deref() == Some(id.as_str()))
    );
}

#[test]
fn a_changed_host_key_is_refused_even_with_accept_new() {
    let fleet = Fleet::start(2);
    fleet.inventory("", "");
    let ok = fleet.deploy();
    assert_eq!(ok.code, 0, "{}", ok.all());
    let live = fleet.host(0).current_id().expect("current");
    // Record a different key for web-2, as after a reinstall or an attack.
    let other = fleet.dir.path().join("other_key");
    support::keygen(&other);
    let other_pub = fs::read_to_string(other.with_extension("pub")).expect("pub");
    let fields: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    let known = fs::read_to_string(&fleet.known_hosts).expect("kh");
    let replaced: String = known
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{} ", fleet.host(1).address)) {
                format!("{} {}\n", fleet.host(1).address, fields.join(" "))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    fs::write(&fleet.known_hosts, replaced).expect("write");

    for args in [
        &["deploy", "production"][..],
        &["deploy", "production", "--accept-new-host-keys"],
    ] {
        let run = fleet.ship(args);
        assert_eq!(run.code, 1, "{}", run.all());
        let all = run.all();
        assert!(
            all.contains(&format!("HOST KEY CHANGED for {}", fleet.host(1).address)),
            "{all}"
        );
        assert!(
            all.contains(&format!(
                "{}:2 records SHA256:",
                fleet.known_hosts.display()
            )),
            "{all}"
        );
        fleet.assert_all_on(&live);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).expect("copy");
        }
    }
}

#[test]
fn git_source_exports_exactly_the_resolved_commit_on_every_host() {
    let fleet = Fleet::start(2);
    // A repository the hosts can reach (same filesystem, outside their /var/www).
    let work = fleet.dir.path().join("app-src");
    copy_dir(&Fleet::example_app(), &work);
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "first"]);
    git(&work, &["tag", "-a", "v1", "-m", "release 1"]);
    let v1 = git(&work, &["rev-parse", "HEAD"]);
    fs::write(work.join("public/index.html"), "second\n").expect("write");
    git(&work, &["commit", "-q", "-am", "second"]);
    let main = git(&work, &["rev-parse", "HEAD"]);
    let url = work.display().to_string();
    let use_ref = |reference: &str| {
        fleet.inventory("", "");
        fleet.set_source(&format!("{{ git: {url}, ref: {reference} }}"));
    };
    use_ref("v1");
    let run = fleet.deploy();
    assert_eq!(run.code, 0, "{}", run.all());
    for h in &fleet.hosts {
        let id = h.current_id().expect("current");
        assert_eq!(
            fs::read_to_string(h.path(&format!("releases/{id}/REVISION")))
                .expect("rev")
                .trim(),
            v1
        );
        assert!(
            fs::read_to_string(h.path("current/public/index.html"))
                .expect("index")
                .contains("Hello")
        );
        assert!(h.path("repo").is_dir(), "bare mirror kept on the host");
    }

    // A branch: the mirror is fetched again and the new commit exported.
    use_ref("main");
    let run = fleet.deploy();
    assert_eq!(run.code, 0, "{}", run.all());
    for h in &fleet.hosts {
        assert_eq!(
            fs::read_to_string(h.path("current/REVISION"))
                .expect("rev")
                .trim(),
            main
        );
        assert_eq!(
            fs::read_to_string(h.path("current/public/index.html")).expect("index"),
            "second\n"
        );
        assert_eq!(h.releases().len(), 2);
        assert!(!h.locked());
    }

    // A ref that does not exist stops before anything is touched.
    use_ref("nope");
    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains("cannot resolve `nope`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("nothing was changed on any host"),
        "{}",
        run.stderr
    );
    for h in &fleet.hosts {
        assert_eq!(h.releases().len(), 2);
    }
}

/// Reads `current/public/index.html` from the host's directory as fast as it can until told to
/// stop; returns (reads, failed reads).
fn probe(
    index: std::path::PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let (mut reads, mut failed) = (0u64, 0u64);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            reads += 1;
            if fs::read(&index).is_err() {
                failed += 1;
            }
        }
        (reads, failed)
    })
}

/// Run `command` on the host through its real sshd (the test's own ssh client), with `stdin`.
fn ssh_stdin(fleet: &Fleet, host: usize, command: &str, stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = fleet
        .openssh("root", host)
        .arg(command)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ssh");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin).expect("ssh stdin");
    }
    child.wait_with_output().expect("ssh")
}

#[test]
fn the_switch_never_leaves_current_missing_under_read_load() {
    let fleet = Fleet::start(1);
    fleet.inventory("", "");
    let h = fleet.host(0);
    let run = fleet.deploy();
    assert_eq!(run.code, 0, "{}", run.all());
    let index = h.path("current/public/index.html");
    // Real deploys and rollbacks, one after the other, while a reader hammers a file through
    // `current`: not one read may fail.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = probe(index.clone(), stop.clone());
    let mut switches = 0;
    for _ in 0..5 {
        let before = h.current_id();
        let run = fleet.deploy();
        assert_eq!(run.code, 0, "{}", run.all());
        let deployed = h.current_id();
        assert_ne!(deployed, before);
        let run = fleet.ship(&["rollback", "production"]);
        assert_eq!(run.code, 0, "{}", run.all());
        assert_eq!(h.current_id(), before, "rolled back");
        let id = deployed.expect("deployed");
        let run = fleet.ship(&["rollback", "production", "--to", &id]);
        assert_eq!(run.code, 0, "{}", run.all());
        assert_eq!(
            h.current_id().as_deref(),
            Some(id.as_str()),
            "forward again"
        );
        switches += 3;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, failed) = reader.join().expect("probe");
    assert!(
        reads > 1000,
        "the probe must actually hammer: {reads} reads"
    );
    assert_eq!(
        failed, 0,
        "{failed} of {reads} reads failed during {switches} switches by ship"
    );

    // 200 more switches back and forth, each made of exactly the commands ship sends (stage the
    // link, then the armed switch fed `go`), to press the rename harder than whole runs can.
    let ids = h.releases();
    let ids = &ids[ids.len() - 2..];
    let mut script = String::new();
    for n in 0..200 {
        let id = &ids[n % 2];
        script.push_str(&ship::remote::stage_switch(support::DEPLOY_TO, id));
        script.push_str(" && echo go | sh -c ");
        script.push_str(&ship::remote::quote(&ship::remote::armed_switch(
            support::DEPLOY_TO,
            id,
        )));
        script.push_str(" >/dev/null || exit 1\n");
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = probe(index.clone(), stop.clone());
    // The script goes on stdin: 200 armed switches are too long for one argument.
    let out = ssh_stdin(&fleet, 0, "sh -s", script.as_bytes());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, failed) = reader.join().expect("probe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(reads > 1000, "{reads} reads");
    assert_eq!(
        failed, 0,
        "{failed} of {reads} reads failed during 200 renames"
    );
    assert_eq!(h.current_id().as_deref(), Some(ids[1].as_str()));

    // Control, through a real deploy: the same probe catches a deploy whose after-switch step
    // unlinks and relinks `current` (what `ln -nfs` does), so a zero above means something.
    fleet.edit_inventory(|t| {
        t.replace(
            "build: [\"sh build.sh\"]",
            "build: [\"sh build.sh\"]\n  after_switch: [\"cd $SHIP_DEPLOY_TO && i=0; while \
             [ $i -lt 300 ]; do rm -f current && ln -s releases/$SHIP_RELEASE_ID current; \
             i=$((i+1)); done\"]",
        )
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = probe(index, stop.clone());
    let run = fleet.deploy();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (_, failed) = reader.join().expect("probe");
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(failed > 0, "the probe must detect a non-atomic switch");
}

#[test]
fn the_example_inventory_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory.example.yaml");
    let inv = ship::inventory::Inventory::load(&path).expect("inventory.example.yaml parses");
    let prod = inv.stage("production").expect("production");
    assert_eq!(prod.hosts.len(), 3);
    assert_eq!(prod.hosts[1].config.port, 2222);
    assert_eq!(prod.hosts[2].config.user, "deployer");
    assert_eq!(
        inv.stage("staging").expect("staging").hosts[0]
            .config
            .keep_releases,
        2
    );
}

#[test]
fn the_inventory_reference_documents_every_key_the_parser_accepts() {
    let doc = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/inventory.md"))
        .expect("docs/inventory.md");
    let keys = ship::inventory::LAYER_KEYS
        .iter()
        .chain(ship::inventory::HOST_KEYS)
        .chain(ship::inventory::STAGE_KEYS)
        .chain(ship::inventory::HEALTH_KEYS)
        .chain(ship::inventory::HOOK_KEYS)
        .chain(ship::inventory::WRITABLE_KEYS)
        .chain(ship::inventory::STEP_KEYS)
        .chain(["artifact", "git", "ref", "files", "dirs"].iter());
    for key in keys {
        assert!(
            doc.contains(&format!("| `{key}` |")),
            "docs/inventory.md does not document `{key}`"
        );
    }
}

#[test]
fn hostile_values_stay_inert_and_secrets_are_masked() {
    let fleet = Fleet::start(2);
    let inv = fleet.inventory(
        "  env:\n    \
         EVIL: \"$(touch /var/www/pwned-dollar) `touch /var/www/pwned-tick` it's \\\"q\\\"\\nline2\"\n    \
         API_TOKEN: { value: \"tok-7c1d-very-secret\", secret: true }\n",
        "",
    );
    // A deploy path with a space, a quote and a command substitution in it.
    let weird = "/var/www/my app's $(touch /var/www/pwned-path)";
    let text = fs::read_to_string(&inv).expect("inv");
    let text = text
        .replace(
            &format!("deploy_to: {}", support::DEPLOY_TO),
            &format!("deploy_to: \"{weird}\""),
        )
        .replace(
            "build: [\"sh build.sh\"]",
            "build: [\"sh build.sh\", \"printf '%s' \\\"$EVIL\\\" > evil.txt\", \"echo token=$API_TOKEN\"]",
        );
    fs::write(&inv, text).expect("write");
    let run = fleet.ship(&["deploy", "production", "-v"]);
    assert_eq!(run.code, 0, "{}", run.all());
    for h in &fleet.hosts {
        assert!(!h.www.join("pwned-dollar").exists() && !h.www.join("pwned-tick").exists());
        assert!(!h.www.join("pwned-path").exists());
        let base = h.www.join("my app's $(touch /var/www/pwned-path)");
        let current = fs::read_link(base.join("current")).expect("current in the weird path");
        assert_eq!(
            fs::read_to_string(base.join(&current).join("evil.txt")).expect("evil.txt"),
            "$(touch /var/www/pwned-dollar) `touch /var/www/pwned-tick` it's \"q\"\nline2"
        );
    }
    let all = run.all();
    assert!(all.contains("token=****"), "{all}");
    assert!(
        !all.contains("tok-7c1d-very-secret"),
        "secret leaked: {all}"
    );
}

#[test]
fn a_host_down_at_start_or_refusing_auth_changes_nothing_anywhere() {
    let mut fleet = Fleet::start(3);
    fleet.inventory("", "");
    fleet.hosts[1].kill();
    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all()
            .contains("[web-2] FAILED at connect: cannot connect to"),
        "{}",
        run.all()
    );
    for h in &fleet.hosts {
        assert!(!h.path("").exists(), "{}: nothing created", h.name);
    }

    // A key the hosts do not accept.
    let fleet = Fleet::start(2);
    let inv = fleet.inventory("", "");
    let stranger = fleet.dir.path().join("stranger");
    support::keygen(&stranger);
    let text = fs::read_to_string(&inv).expect("inv");
    fs::write(
        &inv,
        text.replace(
            &fleet.client_key.display().to_string(),
            &stranger.display().to_string(),
        ),
    )
    .expect("write");
    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all().contains("authentication as `root` failed"),
        "{}",
        run.all()
    );
    for h in &fleet.hosts {
        assert!(!h.path("").exists(), "{}: nothing created", h.name);
    }
}

#[test]
fn tarball_artifacts_gzip_and_zstd_and_a_corrupt_one() {
    let fleet = Fleet::start(2);
    let app = Fleet::example_app().display().to_string();
    let tar = fleet.dir.path().join("app.tar");
    let status = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&app)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success());
    let zst = fleet.dir.path().join("app.tar.zst");
    let status = std::process::Command::new("zstd")
        .args(["-q", "-f"])
        .arg(&tar)
        .arg("-o")
        .arg(&zst)
        .status()
        .expect("zstd (apt-get install zstd)");
    assert!(status.success());
    let tar_gz = fleet.dir.path().join("app.tar.gz");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -c {} > {}", tar.display(), tar_gz.display()))
        .status()
        .expect("gzip");
    assert!(status.success());
    let tgz = fleet.dir.path().join("app.tgz");
    fs::copy(&tar_gz, &tgz).expect("tgz");
    let use_artifact = |path: &Path| {
        fleet.inventory("", "");
        fleet.set_source(&format!("{{ artifact: {} }}", path.display()));
    };
    // Every kind of tarball ship takes, each deployed in turn: each is unpacked on every host
    // and its own digest is the revision.
    let mut live = String::new();
    for artifact in [&tar, &tar_gz, &tgz, &zst] {
        use_artifact(artifact);
        let run = fleet.deploy();
        assert_eq!(run.code, 0, "{}: {}", artifact.display(), run.all());
        let digest = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(fs::read(artifact).expect("read")))
        };
        let id = fleet.host(0).current_id().expect("current");
        assert_ne!(id, live, "{}: a new release", artifact.display());
        live = id;
        for h in &fleet.hosts {
            assert_eq!(h.current_id().as_deref(), Some(live.as_str()));
            assert_eq!(
                fs::read_to_string(h.path("current/REVISION"))
                    .expect("rev")
                    .trim(),
                format!("sha256:{digest}"),
                "{}",
                artifact.display()
            );
            assert!(
                h.path("current/public/release.txt").is_file(),
                "built from {}",
                artifact.display()
            );
        }
    }

    // A corrupt tarball fails the upload step everywhere and changes nothing.
    let bad = fleet.dir.path().join("bad.tar.zst");
    fs::write(&bad, b"this is not zstd").expect("write");
    use_artifact(&bad);
    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all().contains("FAILED at prepare (upload)"),
        "{}",
        run.all()
    );
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(live.as_str()), "{}", h.name);
        assert!(!h.locked(), "{}", h.name);
        // The failed release and the file its zstd was unpacked through are gone.
        assert_eq!(h.releases().len(), 3, "{}: keep_releases 3", h.name);
        let left: Vec<String> = fs::read_dir(h.path(".ship"))
            .expect(".ship")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tar") || n.starts_with("stage-"))
            .collect();
        assert!(left.is_empty(), "{}: {left:?}", h.name);
    }
}

#[test]
fn a_small_artifact_rides_in_the_hosts_shell_and_a_big_one_streams_in_a_channel() {
    let fleet = Fleet::start(2);
    fleet.inventory("", "");
    let channels = |f: &Fleet| -> Vec<usize> { (0..2).map(|i| f.command_channels(i)).collect() };
    // The example app packs to under a kilobyte: everything runs in each host's one shell.
    let before = channels(&fleet);
    let run = fleet.deploy();
    assert_eq!(run.code, 0, "{}", run.all());
    let after = channels(&fleet);
    assert_eq!(
        after,
        vec![before[0] + 1, before[1] + 1],
        "one channel per host"
    );
    // 200 KiB that do not compress: streamed through a channel of its own, byte for byte.
    let app = fleet.dir.path().join("big-app");
    copy_dir(&Fleet::example_app(), &app);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let noise: Vec<u8> = (0..200 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    fs::write(app.join("public/noise.bin"), &noise).expect("write");
    fleet.set_source(&format!("{{ artifact: {} }}", app.display()));
    let run = fleet.deploy();
    assert_eq!(run.code, 0, "{}", run.all());
    let live = fleet.host(0).current_id().expect("current");
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(live.as_str()), "{}", h.name);
        assert_eq!(h.releases().len(), 2, "{}", h.name);
        assert_eq!(
            fs::read(h.path("current/public/noise.bin")).expect("read"),
            noise
        );
    }
    assert_eq!(
        channels(&fleet),
        vec![after[0] + 2, after[1] + 2],
        "the shell's channel and the upload's"
    );
}

#[test]
fn a_lock_held_by_another_deploy_stops_everything_and_is_left_alone() {
    let fleet = Fleet::start(3);
    fleet.inventory("", "");
    let first = fleet.deploy();
    assert_eq!(first.code, 0, "{}", first.all());
    let live = fleet.host(0).current_id().expect("current");
    // Another deploy (from another machine) holds web-3's lock.
    let holder = r#"{"token":"someone-else","user":"alice","controller":"laptop","pid":4242}"#;
    fs::create_dir(fleet.host(2).path(".ship/lock")).expect("mkdir lock");
    fs::write(fleet.host(2).path(".ship/lock/owner"), holder).expect("owner");

    let run = fleet.deploy();
    assert_eq!(run.code, 4, "exit 4 = lock held: {}", run.all());
    let all = run.all();
    assert!(
        all.contains(
            "[web-3] FAILED at lock: /var/www/app is locked by deploy by alice on laptop (pid 4242)"
        ),
        "{all}"
    );
    assert!(
        all.contains("--lock-wait"),
        "the hint names --lock-wait: {all}"
    );
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(live.as_str()));
        assert_eq!(h.releases(), vec![live.clone()]);
    }
    assert!(
        !fleet.host(0).locked() && !fleet.host(1).locked(),
        "no lock of ours left"
    );
    assert_eq!(
        fs::read_to_string(fleet.host(2).path(".ship/lock/owner")).expect("owner"),
        holder,
        "the other deploy's lock is untouched"
    );

    // A holder that ran on this machine, with its start time: since when, how long ago, and
    // whether its process still runs.
    let here = fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_owned();
    let mut gone = std::process::Command::new("true")
        .spawn()
        .expect("a process");
    let gone_pid = gone.id();
    gone.wait().expect("it ends");
    for (pid, says) in [
        (gone_pid, "that process is no longer running"),
        (std::process::id(), "it is still running on this machine"),
    ] {
        let record = format!(
            r#"{{"token":"ship-x","kind":"deploy","user":"bob","controller":"{here}","pid":{pid},"release":"20261201100000","started":"2026-12-01T10:00:00Z"}}"#
        );
        fs::write(fleet.host(2).path(".ship/lock/owner"), &record).expect("owner");
        let run = fleet.deploy();
        assert_eq!(run.code, 4, "{}", run.all());
        let all = run.all();
        assert!(
            all.contains(&format!(
                "locked by deploy of 20261201100000 by bob on {here} (pid {pid}), since \
                 2026-12-01T10:00:00Z ("
            )),
            "{all}"
        );
        assert!(all.contains(" ago); "), "{all}");
        assert!(all.contains(says), "{says}: {all}");
        assert_eq!(
            fs::read_to_string(fleet.host(2).path(".ship/lock/owner")).expect("owner"),
            record
        );
        for h in &fleet.hosts {
            assert_eq!(h.current_id().as_deref(), Some(live.as_str()));
        }
    }
}

/// The text of these source files (relative to the crate), for the checks that a document
/// names only tests that exist.
fn test_sources(files: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    files
        .iter()
        .map(|p| fs::read_to_string(root.join(p)).expect("test source"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `sources` define a test whose name starts with `prefix` (the whole name when
/// `whole`): a function marked `#[test]` (or `#[tokio::test…]`) right above it, not any
/// function of that name.
fn names_a_test(sources: &str, prefix: &str, whole: bool) -> bool {
    let lines: Vec<&str> = sources.lines().collect();
    lines.iter().enumerate().any(|(i, l)| {
        let Some(rest) = l.trim_start().strip_prefix(&format!("fn {prefix}")) else {
            return false;
        };
        if whole && !rest.starts_with('(') {
            return false;
        }
        lines[i.saturating_sub(3)..i]
            .iter()
            .any(|a| a.trim() == "#[test]" || a.trim().starts_with("#[tokio::test"))
    })
}

#[test]
fn every_test_the_security_guide_names_is_a_real_test() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = fs::read_to_string(root.join("docs/security.md")).expect("docs/security.md");
    let sources = test_sources(&[
        "tests/e2e/trust.rs",
        "tests/e2e/ci.rs",
        "src/remote/tests.rs",
        "src/remote/script.rs",
        "src/mask.rs",
    ]);
    // Test names: snake_case words of four or more parts, in backticks.
    let names: Vec<&str> = doc
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .filter(|w| w.matches('_').count() >= 3)
        .collect();
    for name in &names {
        assert!(
            names_a_test(&sources, name, true),
            "docs/security.md names `{name}`, which is not a test"
        );
    }
    assert!(names.len() >= 5, "the guide names its tests ({names:?})");
}

#[test]
fn every_promise_in_the_testing_guide_names_a_real_test() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = fs::read_to_string(root.join("docs/testing.md")).expect("docs/testing.md");
    let table = doc
        .split("## Promises and their tests")
        .nth(1)
        .expect("the promises table");
    let sources = test_sources(&[
        "tests/e2e.rs",
        "tests/e2e/faults.rs",
        "tests/e2e/rollout.rs",
        "tests/e2e/trust.rs",
        "tests/e2e/ci.rs",
        "tests/e2e/servers.rs",
        "src/fleet/run/tests.rs",
        "src/fleet/protocol_tests.rs",
        "src/remote/tests.rs",
        "tests/e2e/url.rs",
        "tests/e2e/zero.rs",
    ]);
    let mut named = 0;
    for row in table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| promise"))
    {
        let test_cell = row.rsplit('|').nth(1).unwrap_or_default();
        for name in test_cell.split('`').skip(1).step_by(2) {
            assert!(
                names_a_test(&sources, name, true),
                "docs/testing.md names `{name}`, which is not a test"
            );
            named += 1;
        }
    }
    assert!(named >= 25, "the table names its tests ({named})");
}

#[test]
fn every_scenario_in_the_reliability_guide_names_a_real_test() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = fs::read_to_string(root.join("docs/reliability.md")).expect("docs/reliability.md");
    let sources = test_sources(&[
        "tests/e2e.rs",
        "tests/e2e/faults.rs",
        "tests/e2e/rollout.rs",
        "tests/e2e/trust.rs",
        "tests/e2e/chaos.rs",
        "src/remote/tests.rs",
        "src/fleet/protocol_tests.rs",
    ]);
    let mut named = 0;
    for line in doc.lines().filter(|l| l.starts_with('|')) {
        let Some(cell) = line.trim_end_matches('|').rsplit('|').next() else {
            continue;
        };
        for name in cell.split('`').skip(1).step_by(2) {
            // `prefix_…` names every test that starts with the prefix.
            let prefix = name.trim_end_matches('…');
            if prefix.is_empty() || prefix.contains(' ') {
                continue;
            }
            named += 1;
            assert!(
                names_a_test(&sources, prefix, prefix == name),
                "docs/reliability.md names `{name}`, which is not a test"
            );
        }
    }
    assert!(named >= 20, "the guide names its tests ({named} found)");
    // A helper of the same sources (not a test) does not count as one.
    assert!(!names_a_test(&sources, "recover", true));
    assert!(names_a_test(
        &sources,
        "a_killed_controller_is_detected_by_status_and_the_next_deploy",
        true
    ));
}

#[test]
fn config_prints_the_effective_settings_per_host_with_secrets_masked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = dir.path().join("inventory.yaml");
    fs::write(
        &inv,
        "defaults:\n  deploy_to: /var/www/app\n  recipe: laravel\n  source: { artifact: ./build }\n  \
         env:\n    APP_ENV: production\n    DB_PASSWORD: { value: \"pw-93x-secret\", secret: true }\n  \
         build: [\"echo pw-93x-secret | ./configure\"]\nstages:\n  production:\n    \
         step_timeout: 90s\n    hosts:\n      web-1: { address: 10.0.0.1 }\n      \
         web-2: { address: 10.0.0.2, port: 2222, deploy_to: /srv/app, env: { APP_ENV: canary } }\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ship"))
        .args(["config", "production", "-i"])
        .arg(&inv)
        .output()
        .expect("ship config");
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{yaml}");
    assert!(!yaml.contains("pw-93x-secret"), "{yaml}");
    assert!(yaml.contains("DB_PASSWORD: \"****\""), "{yaml}");
    assert!(yaml.contains("echo **** | ./configure"), "{yaml}");
    let json = std::process::Command::new(env!("CARGO_BIN_EXE_ship"))
        .args(["config", "production", "--json", "-i"])
        .arg(&inv)
        .output()
        .expect("ship config --json");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    let (w1, w2) = (&v["hosts"][0], &v["hosts"][1]);
    assert_eq!(w1["deploy_to"], "/var/www/app");
    assert_eq!(w2["deploy_to"], "/srv/app");
    assert_eq!(w2["port"], 2222);
    assert_eq!(w1["env"]["APP_ENV"], "production");
    assert_eq!(w2["env"]["APP_ENV"], "canary");
    assert_eq!(w2["env"]["DB_PASSWORD"], "****");
    assert_eq!(w1["step_timeout"], "90s");
    // The recipe's values, and the inventory's own build list instead of the recipe's.
    assert_eq!(w1["recipe"], "laravel");
    assert_eq!(
        w1["run_once"],
        serde_json::json!(["php artisan migrate --force"])
    );
    assert_eq!(w1["shared"]["files"], serde_json::json!([".env"]));
    assert_eq!(w1["build"], serde_json::json!(["echo **** | ./configure"]));
    assert!(!String::from_utf8_lossy(&json.stdout).contains("pw-93x-secret"));
}

#[test]
fn completions_the_man_page_and_the_schema_come_with_the_binary() {
    let ship = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ship"))
            .args(args)
            .output()
            .expect("ship");
        assert!(out.status.success(), "ship {args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for shell in ["bash", "zsh", "fish"] {
        let script = ship(&["completions", shell]);
        for word in ["rollback", "releases", "exec", "canary", "lock-wait"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    // bash accepts the script and registers it for `ship`.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ship.bash");
    fs::write(&file, ship(&["completions", "bash"])).expect("write");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p ship", file.display()))
        .output()
        .expect("bash");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("-F _ship ship"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        ship(&["schema"]),
        fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/inventory.schema.json")
        )
        .expect("schema file")
    );
    let man = ship(&["man"]);
    assert!(man.contains(".TH ship 1"), "{man}");
    assert!(
        man.contains("rollback") && man.contains("SUBCOMMANDS"),
        "{man}"
    );
    // A bad shell name is a usage error.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ship"))
        .args(["completions", "tcsh"])
        .output()
        .expect("ship");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn init_writes_an_inventory_ship_accepts_and_never_overwrites_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ship = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ship"))
            .args(args)
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("ship")
    };
    // Not on a terminal and nothing given: says what to pass.
    let out = ship(&["init"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--host"));
    let out = ship(&[
        "init",
        "--host",
        "203.0.113.10,worker=203.0.113.11",
        "--deploy-to",
        "/var/www/shop",
        "--recipe",
        "laravel",
        "--source",
        "git@github.com:acme/shop.git",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inv = ship::inventory::Inventory::load(&dir.path().join("inventory.yaml"))
        .expect("the written inventory parses");
    let st = inv.stage("production").expect("stage");
    let names: Vec<&str> = st.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["web-1", "worker"]);
    let c = &st.hosts[1].config;
    assert_eq!(st.hosts[1].address, "203.0.113.11");
    assert_eq!(c.deploy_to, "/var/www/shop");
    assert_eq!(c.user, "deploy");
    assert_eq!(c.recipe.as_deref(), Some("laravel"));
    assert_eq!(c.run_once, vec!["php artisan migrate --force"]);
    assert!(
        matches!(&c.source, ship::inventory::Source::Git { url, .. } if url == "git@github.com:acme/shop.git")
    );
    // A second init does not overwrite it.
    let before = fs::read_to_string(dir.path().join("inventory.yaml")).expect("read");
    let out = ship(&["init", "--host", "10.0.0.1", "--deploy-to", "/srv/x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never overwrites"));
    assert_eq!(
        fs::read_to_string(dir.path().join("inventory.yaml")).expect("read"),
        before
    );
    // Without a recipe: the generic skeleton, also valid.
    let out = ship(&[
        "init",
        "-i",
        "plain.yaml",
        "--host",
        "10.0.0.1",
        "--deploy-to",
        "/srv/x",
    ]);
    assert!(out.status.success());
    let inv = ship::inventory::Inventory::load(&dir.path().join("plain.yaml")).expect("parses");
    let c = &inv.stage("production").expect("stage").hosts[0].config;
    assert_eq!(c.shared.files, vec![".env"]);
    // A bad host name is refused, naming it.
    let out = ship(&[
        "init",
        "-i",
        "bad.yaml",
        "--host",
        "we b=10.0.0.1",
        "--deploy-to",
        "/x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`we b` is not a valid host name"));
}

#[test]
fn without_an_ssh_program_the_ssh_config_is_read_by_ships_own_reader_which_says_its_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(
        dir.path().join("ssh_config"),
        "Host app-*\n  HostName 10.9.8.7\n  User deploy\n  Port 2200\nMatch all\n  User root\n",
    )
    .expect("write");
    fs::write(
        dir.path().join("inventory.yaml"),
        "defaults:\n  deploy_to: /var/www/app\n  source: { artifact: ./build }\n  \
         ssh_config: ./ssh_config\nstages:\n  production:\n    hosts:\n      \
         web-1: { address: app-1 }\n      web-2: { address: app-2, port: 22 }\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ship"))
        .args(["config", "production", "--json"])
        .current_dir(dir.path())
        .env("PATH", "/nonexistent")
        .output()
        .expect("ship");
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no `ssh` program here"), "{err}");
    assert!(
        err.contains("`match` cannot be evaluated without ssh"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["hosts"][0]["address"], "10.9.8.7");
    assert_eq!(v["hosts"][0]["user"], "deploy");
    assert_eq!(v["hosts"][0]["port"], 2200);
    // The inventory's own setting wins over the file.
    assert_eq!(v["hosts"][1]["port"], 22);
}

#[test]
fn connection_local_deploys_and_rolls_back_on_this_machine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = Fleet::example_app();
    let hosts: Vec<std::path::PathBuf> = (1..=2)
        .map(|i| dir.path().join(format!("host-{i}")))
        .collect();
    let inventory = dir.path().join("inventory.yaml");
    fs::write(
        &inventory,
        format!(
            "defaults:\n  source: {{ artifact: {} }}\n  shared:\n    files: [.env]\n    dirs: \
             [storage]\n  build: [\"sh build.sh\"]\nstages:\n  local:\n    connection: local\n    \
             hosts:\n      one: {{ deploy_to: {} }}\n      two: {{ deploy_to: {} }}\n",
            app.display(),
            hosts[0].display(),
            hosts[1].display()
        ),
    )
    .expect("inventory");
    let ship = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ship"))
            .args(args)
            .arg("-i")
            .arg(&inventory)
            .env("HOME", dir.path())
            .env("NO_COLOR", "1")
            .output()
            .expect("ship");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let current = |h: &Path| {
        fs::read_link(h.join("current"))
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
    };
    let (code, text) = ship(&["deploy", "local"]);
    assert_eq!(code, Some(0), "{text}");
    let a = current(&hosts[0]).expect("current");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code, text) = ship(&["deploy", "local"]);
    assert_eq!(code, Some(0), "{text}");
    let b = current(&hosts[0]).expect("current");
    assert_ne!(a, b);
    for h in &hosts {
        assert_eq!(current(h).as_deref(), Some(b.as_str()), "{}", h.display());
        assert!(h.join("shared/.env").is_file() && h.join("shared/storage").is_dir());
        assert!(!h.join(".ship/lock").exists());
    }
    let (code, text) = ship(&["rollback", "local"]);
    assert_eq!(code, Some(0), "{text}");
    for h in &hosts {
        assert_eq!(current(h).as_deref(), Some(a.as_str()), "{}", h.display());
        assert!(h.join(format!(".ship/bad/{b}")).exists());
        assert!(!h.join(".ship/lock").exists());
    }
}
