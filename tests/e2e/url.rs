//! Artifacts the hosts pull: `source: { url, sha256 }` and `--artifact-url URL --sha256 HEX`.
//! Each host downloads the tarball from a real HTTP server (Python's http.server on this
//! machine), checks its digest, and only then unpacks it; the controller sends no payload.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::{Fleet, Run, serve_files};

/// The example app packed as `name` in `dir`, and its SHA-256.
fn tarball(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let flag = if name.ends_with(".tar.gz") {
        "-czf"
    } else {
        "-cf"
    };
    let status = std::process::Command::new("tar")
        .arg(flag)
        .arg(&path)
        .arg("-C")
        .arg(Fleet::example_app())
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success());
    let out = std::process::Command::new("sha256sum")
        .arg(&path)
        .output()
        .expect("sha256sum");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().next().expect("digest").to_owned();
    (path, hex)
}

/// Every host is on `current` with no other release and holds no lock; nothing of a download
/// is left in `.ship/`.
fn assert_fleet_on(fleet: &Fleet, current: &str) {
    fleet.assert_all_on(current);
    for h in &fleet.hosts {
        let left: Vec<String> = fs::read_dir(h.path(".ship"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".tar") || n.ends_with(".raw"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(left.is_empty(), "{}: left in .ship: {left:?}", h.name);
    }
}

/// Every host's current release is the tarball with digest `hex`, unpacked.
fn assert_revision(fleet: &Fleet, hex: &str) {
    for h in &fleet.hosts {
        assert_eq!(
            fs::read_to_string(h.path("current/REVISION"))
                .expect("REVISION")
                .trim(),
            format!("sha256:{hex}"),
            "{}",
            h.name
        );
        assert!(h.path("current/build.sh").is_file(), "{}: unpacked", h.name);
    }
}

/// `ship deploy production --artifact-url URL --sha256 DIGEST` and `extra`.
fn deploy_from(fleet: &Fleet, url: &str, digest: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "deploy",
        "production",
        "--artifact-url",
        url,
        "--sha256",
        digest,
    ];
    args.extend(extra);
    fleet.ship(&args)
}

/// The run failed saying `says`, switched no host, and left every host on `id` with no other
/// release and nothing of the download.
fn assert_failed_on(fleet: &Fleet, run: &Run, id: &str, url: &str, says: &str) {
    assert_eq!(run.code, 1, "{url}: {}", run.all());
    let all = run.all();
    assert!(all.contains(says), "{url}: expected {says:?} in {all}");
    assert!(all.contains("aborted: no host was switched"), "{all}");
    assert_fleet_on(fleet, id);
}

#[test]
fn each_host_downloads_the_tarball_checks_its_digest_and_unpacks_it() {
    let fleet = Fleet::start(3);
    let files = fleet.dir().join("files");
    fs::create_dir_all(&files).expect("files");
    let (_, hex) = tarball(&files, "app-1.2.3.tar.gz");
    let (_server, port) = serve_files(&files);
    // A presigned-style URL: its signature is a secret and must show nowhere.
    let url = format!("http://127.0.0.1:{port}/app-1.2.3.tar.gz?X-Amz-Signature=s3cr3tSig0123");
    fleet.inventory("", "");
    fleet.set_source(&format!("{{ url: \"{url}\", sha256: {hex} }}"));

    let run = fleet.ship(&["deploy", "production", "-v"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let id = fleet.host(0).current_id().expect("current");
    assert_fleet_on(&fleet, &id);
    assert_revision(&fleet, &hex);
    let all = run.all();
    assert!(all.contains("download … ok"), "{all}");
    assert!(
        !all.contains("upload"),
        "the controller sent no payload: {all}"
    );
    // The URL's secret is in no output: the run, the plan, the config, check.
    for args in [
        &["plan", "production", "--full"][..],
        &["config", "production"][..],
        &["check", "production"][..],
    ] {
        let out = fleet.ship(args);
        assert!(
            out.all().contains("X-Amz-Signature="),
            "{args:?} shows the URL: {}",
            out.all()
        );
        assert!(
            !out.all().contains("s3cr3tSig0123"),
            "{args:?}: {}",
            out.all()
        );
    }
    assert!(!all.contains("s3cr3tSig0123"), "{all}");

    // The same tarball under another digest, a missing file, a server that is not there, a
    // download that stalls: that host's prepare fails, nothing switches, nothing is left
    // behind.
    let wrong = "0".repeat(64);
    let cases = [
        (
            format!("http://127.0.0.1:{port}/app-1.2.3.tar.gz"),
            wrong.clone(),
            vec![],
            format!("the download's SHA-256 is {hex}, not {wrong} as the inventory says"),
        ),
        (
            format!("http://127.0.0.1:{port}/missing.tar.gz"),
            hex.clone(),
            vec![],
            "404".to_owned(),
        ),
        // Nothing listens there: curl cannot connect (its exit status 7).
        (
            "http://127.0.0.1:1/app-1.2.3.tar.gz".to_owned(),
            hex.clone(),
            vec![],
            "failed (exit status 7)".to_owned(),
        ),
        (
            format!("http://127.0.0.1:{port}/stall.tar.gz"),
            hex.clone(),
            vec!["--step-timeout", "2s"],
            "timed out after 2.0s (step_timeout)".to_owned(),
        ),
    ];
    for (url, digest, extra, says) in cases {
        let run = deploy_from(&fleet, &url, &digest, &extra);
        let all = run.all();
        assert!(all.contains("FAILED at prepare (download)"), "{url}: {all}");
        assert_failed_on(&fleet, &run, &id, &url, &says);
    }
}

#[test]
fn a_bad_url_or_digest_is_refused_before_any_host_is_contacted() {
    let fleet = Fleet::start(1);
    fleet.inventory("", "");
    let hex = "a".repeat(64);
    for (args, says) in [
        (
            vec![
                "--artifact-url",
                "ftp://example.org/app.tar.gz",
                "--sha256",
                &hex,
            ],
            "not an http(s) URL",
        ),
        (
            vec![
                "--artifact-url",
                "https://example.org/app.zip",
                "--sha256",
                &hex,
            ],
            "does not end in .tar.gz",
        ),
        (
            vec![
                "--artifact-url",
                "https://example.org/app.tar.gz",
                "--sha256",
                "abc",
            ],
            "`abc` is not a SHA-256 digest",
        ),
        (
            vec!["--artifact-url", "https://example.org/app.tar.gz"],
            "--sha256",
        ),
    ] {
        let mut a = vec!["deploy", "production"];
        a.extend(args);
        let run = fleet.ship(&a);
        assert_eq!(run.code, 2, "{a:?}: {}", run.all());
        assert!(run.stderr.contains(says), "{a:?}: {}", run.stderr);
    }
    // In the inventory: a url without its digest, named by file, line and key.
    fleet.set_source("{ url: \"https://example.org/app.tar.gz\" }");
    let run = fleet.ship(&["deploy", "production"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("inventory.yaml:") && run.stderr.contains("needs `sha256:`"),
        "{}",
        run.stderr
    );
    fleet.assert_untouched();
}

#[test]
fn a_host_without_curl_downloads_with_wget_and_one_with_neither_fails_saying_so() {
    let fleet = Fleet::start(2);
    let files = fleet.dir().join("files");
    fs::create_dir_all(&files).expect("files");
    let (_, hex) = tarball(&files, "app-2.0.0.tar.gz");
    let (_server, port) = serve_files(&files);
    fleet.inventory("", "");
    // web-2 has no curl: only its namespace sees /dev/null (not executable) in curl's place.
    let hide = |h: usize, program: &str| {
        let out = fleet.host(h).run_on_host(&format!(
            "p=$(command -v {program}) && mount --bind /dev/null \"$p\" && ! command -v {program}"
        ));
        assert!(out.status.success(), "hide {program}: {out:?}");
    };
    hide(1, "curl");
    let url = format!("http://127.0.0.1:{port}/app-2.0.0.tar.gz");
    let run = deploy_from(&fleet, &url, &hex, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let id = fleet.host(0).current_id().expect("current");
    assert_fleet_on(&fleet, &id);
    assert_revision(&fleet, &hex);
    // Through wget too: a wrong digest and a 404 (wget's exit status 8; curl's is 22) fail
    // that host's prepare, nothing switches.
    let wrong = "0".repeat(64);
    let missing = format!("http://127.0.0.1:{port}/missing.tar.gz");
    let wrong_says = format!("the download's SHA-256 is {hex}, not {wrong}");
    for (url, digest, says) in [
        (&url, &wrong, wrong_says.as_str()),
        (&missing, &hex, "failed (exit status 8)"),
    ] {
        let run = deploy_from(&fleet, url, digest, &[]);
        assert!(run.all().contains("web-2"), "{}", run.all());
        assert_failed_on(&fleet, &run, &id, url, says);
    }
    // Neither program: the host says so, with the fix.
    hide(1, "wget");
    let run = deploy_from(&fleet, &url, &hex, &[]);
    let says = "neither curl nor wget is installed on this host (hint: install curl)";
    assert_failed_on(&fleet, &run, &id, &url, says);
}
