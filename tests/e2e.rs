//! End-to-end tests: the ship binary against real OpenSSH servers (see `support`).
//! Every scenario asserts the state of every host afterwards: where `current` points, which
//! releases exist, that `shared/` is intact, and the lock state.

mod support;

use std::fs;
use std::path::Path;

use support::Fleet;

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
    assert!(run.stdout.contains("flip skew"), "{}", run.stdout);
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
fn a_failed_build_on_one_host_changes_no_host() {
    let fleet = Fleet::start(3);
    fleet.inventory("", "");
    let first = fleet.deploy();
    assert_eq!(first.code, 0, "{}", first.all());
    let live = fleet.host(0).current_id().expect("current");
    fs::write(fleet.host(1).path("shared/FAIL_BUILD"), "").expect("marker");
    let before: Vec<_> = fleet.hosts.iter().map(|h| h.shared_snapshot()).collect();

    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    for (h, snap) in fleet.hosts.iter().zip(&before) {
        assert_eq!(
            h.current_id().as_deref(),
            Some(live.as_str()),
            "{} still on the old release",
            h.name
        );
        assert_eq!(
            h.releases(),
            vec![live.clone()],
            "{}: staged release removed",
            h.name
        );
        assert_eq!(
            &h.shared_snapshot(),
            snap,
            "{}: shared/ byte-identical",
            h.name
        );
        assert!(!h.locked(), "{}: lock released", h.name);
        assert!(!h.path(".ship").read_dir().expect("ship dir").any(|e| {
            e.map(|e| e.file_name().to_string_lossy().starts_with("stage-"))
                .unwrap_or(false)
        }));
        assert_eq!(h.journal().last().expect("journal")["outcome"], "aborted");
    }
    // The message names the host, the step, the exit status and the build's own output.
    let all = run.all();
    assert!(
        all.contains("[web-2] FAILED at prepare (build: sh build.sh): exited with status 3"),
        "{all}"
    );
    assert!(
        all.contains("build failed: /var/www/app/shared/FAIL_BUILD exists on this host"),
        "{all}"
    );
    assert!(
        all.contains("aborted: no host was switched; the fleet is unchanged"),
        "{all}"
    );
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
    fs::write(&fleet.known_hosts, kept.join("\n") + "\n").expect("write");

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
    assert!(
        fs::read_to_string(&fleet.known_hosts)
            .expect("kh")
            .contains(&fleet.host(2).address)
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
    std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .expect("keygen");
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
        for h in &fleet.hosts {
            assert_eq!(h.current_id().as_deref(), Some(live.as_str()));
            assert_eq!(h.releases(), vec![live.clone()]);
            assert!(!h.locked());
        }
    }
}

#[test]
#[ignore = "diagnostic"]
fn print_one_deploy() {
    let fleet = Fleet::start(3);
    fleet.inventory("", "");
    let t = std::time::Instant::now();
    let run = fleet.deploy();
    eprintln!("{}\n{}\nwall {:?}", run.stdout, run.stderr, t.elapsed());
}
