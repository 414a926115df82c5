//! Exact rendered commands, and the same commands run by a real `sh` on a temp dir.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::*;

fn sh(script: &str, stdin: &[u8]) -> (i32, String) {
    sh_path(script, stdin, None)
}

/// [`sh`] with `PATH` set to `path` only.
fn sh_path(script: &str, stdin: &[u8], path: Option<&Path>) -> (i32, String) {
    use std::io::Write;
    let mut cmd = Command::new("/bin/sh");
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let mut child = cmd
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sh starts");
    if let Some(mut input) = child.stdin.take() {
        // A script may end without reading its input (a switch with nothing to stage).
        match input.write_all(stdin) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("stdin: {e}"),
            _ => {}
        }
    }
    let out = child.wait_with_output().expect("sh ends");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Run every prepare step of `plan` in a real shell; each must succeed.
fn run_prepare(plan: &ReleasePlan, payload: &[u8]) {
    for step in prepare(plan) {
        let input: &[u8] = if step.takes_payload { payload } else { b"" };
        let (rc, out) = sh(&step.script, input);
        assert_eq!(rc, 0, "step {} failed: {out}", step.name);
    }
}

/// The tarball of `dir`'s contents, made by tar with `create` (`-cf`, `-czf`).
fn tar_of(dir: &Path, create: &str) -> Vec<u8> {
    Command::new("tar")
        .args([create, "-", "-C"])
        .arg(dir)
        .arg(".")
        .output()
        .expect("tar")
        .stdout
}

fn plan<'a>(deploy_to: &'a str, delivery: &'a Delivery, env: &'a [EnvVar]) -> ReleasePlan<'a> {
    static FILES: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| vec![".env".into(), "config/app.ini".into()]);
    static DIRS: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| vec!["storage".into()]);
    static BUILD: std::sync::LazyLock<Vec<StepSpec>> =
        std::sync::LazyLock::new(|| vec![StepSpec::plain("echo \"built $APP_ENV\" > built.txt")]);
    ReleasePlan {
        deploy_to,
        release_id: "20261122103000",
        revision: "abc123",
        delivery,
        shared_files: &FILES,
        shared_dirs: &DIRS,
        copy_from_previous: &[],
        build: &BUILD,
        writable: None,
        env,
        inline_payload: None,
    }
}

#[test]
fn renders_exact_commands() {
    let env = [EnvVar {
        name: "APP_ENV".into(),
        value: "prod $(x)".into(),
        secret: false,
        from_command: None,
    }];
    let d = Delivery::Tarball {
        compression: Compression::Gzip,
    };
    let steps = prepare(&plan("/var/www/my app", &d, &env));
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "upload",
            "link",
            "build: echo \"built $APP_ENV\" > built.txt",
            "complete",
        ]
    );
    assert_eq!(
        steps[0].script,
        "cd '/var/www/my app' && mkdir releases/20261122103000 && \
         tar -xzf - -C releases/20261122103000"
    );
    assert!(steps[0].takes_payload && !steps[0].quick);
    // Ship's own links (a path the release brought is removed first; else no `rm` runs), and
    // the link the switch will rename, staged before the build.
    let link = &steps[1].script;
    assert!(link.starts_with("cd '/var/www/my app' && "), "{link}");
    assert!(
        link.contains(
            "{ { [ ! -e releases/20261122103000/.env ] && [ ! -L releases/20261122103000/.env ]; } \
             || rm -rf releases/20261122103000/.env; } && "
        ),
        "{link}"
    );
    // One `ln -s` per directory the links go in.
    assert!(
        link.ends_with(
            " && ln -s ../../shared/.env ../../shared/storage releases/20261122103000/ && \
             ln -s ../../../shared/config/app.ini releases/20261122103000/config/"
        ),
        "{link}"
    );
    assert!(steps[1].quick);
    // A link the release brought on the way to a shared path stops the step.
    assert!(
        link.contains("{ for p in releases/20261122103000/config; do p=\"$p\"; if [ -L \"$p\" ]"),
        "{link}"
    );
    // REVISION last, once everything else is done: it marks the release complete.
    assert_eq!(
        steps[3].script,
        "cd '/var/www/my app' && { [ ! -L releases/20261122103000/REVISION ] || \
         rm -f releases/20261122103000/REVISION; } && \
         printf '%s\\n' abc123 > releases/20261122103000/REVISION"
    );
    assert!(steps[3].quick);
    assert_eq!(
        steps[2].script,
        "cd '/var/www/my app/releases/20261122103000' && \
         export SHIP_RELEASE_ID=20261122103000 && \
         export SHIP_RELEASE_PATH='/var/www/my app/releases/20261122103000' && \
         export SHIP_DEPLOY_TO='/var/www/my app' && export SHIP_REVISION=abc123 && \
         export APP_ENV='prod $(x)' && echo \"built $APP_ENV\" > built.txt"
    );
    assert!(!steps[2].quick);
    let armed = armed_switch("/srv/app", "20261122103000");
    assert!(
        armed.starts_with(
            "cd /srv/app || exit 77; if command -v perl >/dev/null 2>&1; then exec perl -e '"
        ),
        "{armed}"
    );
    assert!(
        armed.ends_with(
            "' .ship/stage-20261122103000 releases/20261122103000; fi; \
             [ -L .ship/stage-20261122103000/current ] || { [ -d releases/20261122103000 ] && \
             mkdir -p .ship/stage-20261122103000 && \
             ln -s releases/20261122103000 .ship/stage-20261122103000/current; } || exit 76; \
             echo ship-switch-ready; \
             read -r go && [ \"$go\" = go ] || { rm -f .ship/stage-20261122103000/current; \
             rmdir .ship/stage-20261122103000; exit 76; }; \
             mv -f .ship/stage-20261122103000/current . || exit 77; date +%s%N; \
             rmdir .ship/stage-20261122103000; exit 0"
        ),
        "{armed}"
    );
    assert_eq!(
        lock("/srv/app", "{\"a\":1}"),
        "{ { [ -d /srv/app/releases ] && [ -d /srv/app/shared ] && [ -d /srv/app/.ship ]; } || \
         mkdir -p /srv/app/releases /srv/app/shared /srv/app/.ship; } && cd /srv/app && \
         if mkdir .ship/lock 2>/dev/null; then printf '%s\\n' '{\"a\":1}' > .ship/lock/owner; \
         else echo \"lock held: $(head -c 4000 .ship/lock/owner 2>/dev/null)\"; exit 75; fi && \
         for f in .ship/stage-* .ship/*.tar .ship/work-* .ship/revert; do \
         if [ -e \"$f\" ] || [ -L \"$f\" ]; then rm -rf \"$f\" && echo \"removed=$f\"; fi; done && \
         for r in releases/*; do [ -d \"$r\" ] && echo \"release=${r#releases/}\"; done; true"
    );
    assert_eq!(
        unlock("/srv/app", "tok-1"),
        "cd /srv/app && o= && { [ ! -f .ship/lock/owner ] || read -r o < .ship/lock/owner; }; \
         case $o in *tok-1*) rm -rf .ship/lock;; esac"
    );
    assert_eq!(
        revert("/srv/app", "2", Some("releases/1")),
        "cd /srv/app && rm -rf .ship/revert && mkdir -p .ship/revert && \
         ln -s releases/1 .ship/revert/current && mv -f .ship/revert/current . && rmdir .ship/revert"
    );
}

#[test]
fn zstd_tarballs_go_through_a_file_so_failures_count() {
    let d = Delivery::Tarball {
        compression: Compression::Zstd,
    };
    let steps = prepare(&plan("/srv/app", &d, &[]));
    assert_eq!(
        steps[0].script,
        "cd /srv/app && mkdir releases/20261122103000 && zstd -q -d -c > .ship/20261122103000.tar && \
         tar -xf .ship/20261122103000.tar -C releases/20261122103000; rc=$?; \
         rm -f .ship/20261122103000.tar; exit $rc"
    );
}

#[test]
fn git_steps_check_the_server_key_never_prompt_and_check_out_submodules() {
    let d = Delivery::Git {
        url: "git@example.com:acme/app.git".into(),
        commit: "0123abcd".into(),
        known_hosts: Some("example.com ssh-ed25519 AAAA".into()),
        parallel: None,
    };
    let steps = prepare(&plan("/srv/app", &d, &[]));
    assert_eq!(
        (steps[1].name.as_str(), steps[1].reaches_git),
        ("fetch", true)
    );
    assert_eq!(
        (steps[2].name.as_str(), steps[2].reaches_git),
        ("checkout", true)
    );
    assert!(!steps[3].reaches_git);
    assert!(
        steps[1].script.starts_with(
            "cd /srv/app && mkdir -p .ship && printf '%s\\n' 'example.com ssh-ed25519 AAAA' > \
             .ship/git_known_hosts && export GIT_TERMINAL_PROMPT=0 GIT_SSH_COMMAND='ssh -o \
             BatchMode=yes -o StrictHostKeyChecking=yes -o \
             UserKnownHostsFile=/srv/app/.ship/git_known_hosts' && "
        ),
        "{}",
        steps[1].script
    );

    // For real: a repository with a submodule (relative URL, as on GitHub), through both steps.
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    let git = |dir: &Path, args: &[&str]| {
        let out = Command::new("git")
            .args([
                "-c",
                "protocol.file.allow=always",
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    for name in ["lib", "app"] {
        let w = t.join(format!("{name}-work"));
        fs::create_dir_all(&w).expect("mkdir");
        git(&w, &["init", "-q", "-b", "main"]);
        fs::write(w.join(format!("{name}.txt")), name).expect("write");
        if name == "app" {
            git(&w, &["submodule", "add", "-q", "../lib.git", "vendor/lib"]);
        }
        git(&w, &["add", "-A"]);
        git(&w, &["commit", "-q", "-m", name]);
        git(
            t,
            &[
                "clone",
                "-q",
                "--bare",
                &format!("{name}-work"),
                &format!("{name}.git"),
            ],
        );
    }
    let commit = git(&t.join("app-work"), &["rev-parse", "HEAD"]);
    let deploy_to = t.join("deploy");
    fs::create_dir_all(deploy_to.join("releases/20261122103000")).expect("mkdir");
    let d = Delivery::Git {
        url: t.join("app.git").display().to_string(),
        commit,
        known_hosts: None,
        parallel: None,
    };
    let dt = deploy_to.display().to_string();
    let steps = prepare(&plan(&dt, &d, &[]));
    for step in &steps[1..3] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(&step.script)
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "protocol.file.allow")
            .env("GIT_CONFIG_VALUE_0", "always")
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{}: {}",
            step.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rel = deploy_to.join("releases/20261122103000");
    assert_eq!(fs::read_to_string(rel.join("app.txt")).expect("app"), "app");
    assert_eq!(
        fs::read_to_string(rel.join("vendor/lib/lib.txt")).expect("submodule checked out"),
        "lib"
    );
    assert!(!rel.join(".git").exists() && !rel.join("vendor/lib/.git").exists());
    assert!(
        !deploy_to.join(".ship/work-20261122103000").exists(),
        "work tree removed"
    );
}

#[test]
fn shared_links_are_relative_to_the_release() {
    assert_eq!(shared_link_target(".env"), "../../shared/.env");
    assert_eq!(
        shared_link_target("storage/app"),
        "../../../shared/storage/app"
    );
}

#[test]
fn preflight_output_is_parsed() {
    let p = Preflight::parse(
        "writable=yes\ncurrent=releases/20261122103000\nrelease=20261122103000\n\
         release=20261121000000\nlock=alice at 12:00 \ndisk_free_kb=1234\ntool=tar\nnoise\n",
    );
    assert!(p.writable);
    assert_eq!(p.current_release(), Some("20261122103000"));
    assert_eq!(p.releases, ["20261121000000", "20261122103000"]);
    assert_eq!(p.lock.as_deref(), Some("alice at 12:00"));
    assert_eq!(p.tools, ["tar"]);
    assert_eq!(p.disk_free_kb, Some(1234));
    let q = Preflight::parse(
        "release=20261122103000\nincomplete=20261122103000\nstaged=20261122103000\n\
         history={\"kind\":\"deploy\"}\nhistory= \n",
    );
    assert_eq!(q.incomplete, ["20261122103000"]);
    assert_eq!(q.staged, ["20261122103000"]);
    assert_eq!(q.last_journal.as_deref(), Some("{\"kind\":\"deploy\"}"));
    let abs = Preflight::parse("current=/var/www/app/releases/1/\n");
    assert_eq!(abs.current_release(), Some("1"));
    assert_eq!(
        Preflight::parse("current=/opt/other\n").current_release(),
        None
    );
}

#[test]
fn cleanup_keeps_the_newest_and_never_current_or_previous() {
    let r = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let all = r(&[
        "20260101000000",
        "20260102000000",
        "20260103000000",
        "20260104000000",
        "20260105000000",
        "notes",
    ]);
    assert_eq!(
        releases_to_remove(&all, 2, "20260105000000", Some("20260104000000"), &[]),
        r(&["20260101000000", "20260102000000", "20260103000000"])
    );
    // A rollback made an old release current: it survives even though it is among the oldest.
    assert_eq!(
        releases_to_remove(&all, 2, "20260101000000", Some("20260105000000"), &[]),
        r(&["20260102000000", "20260103000000"])
    );
    assert!(releases_to_remove(&all, 10, "20260105000000", None, &[]).is_empty());
    assert!(is_release_id("20261122103000-2"));
    assert!(!is_release_id("2026112210300"));
    assert!(!is_release_id("20261122103000-"));
    assert!(!is_release_id("../x"));
}

/// Runs the whole sequence with a real shell: prepare twice (so that existing shared content
/// must survive), armed switch, revert, discard.
#[test]
fn scripts_behave_on_a_real_shell() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("app dir");
    let deploy_to = root.to_str().expect("utf-8 path");
    // A tarball with a build-time .env and storage/ content that must seed shared/ once.
    let payload = {
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("storage/logs")).expect("mkdir");
        fs::write(src.join(".env"), "FROM_RELEASE=1\n").expect("write");
        fs::write(src.join("storage/logs/seed.log"), "seed\n").expect("write");
        fs::write(src.join("index.html"), "v1\n").expect("write");
        tar_of(&src, "-cf")
    };
    let delivery = Delivery::Tarball {
        compression: Compression::None,
    };
    let env = [EnvVar {
        name: "APP_ENV".into(),
        value: "it's $(prod)".into(),
        secret: false,
        from_command: None,
    }];
    let (rc, out) = sh(&lock(deploy_to, "{\"token\":\"t1\"}"), b"");
    assert_eq!(rc, 0, "{out}");
    let (rc, out) = sh(&lock(deploy_to, "{\"token\":\"t2\"}"), b"");
    assert_eq!(rc, LOCK_HELD as i32, "second lock must be refused: {out}");
    assert!(out.contains("lock held: {\"token\":\"t1\"}"), "{out}");

    let p = plan(deploy_to, &delivery, &env);
    run_prepare(&p, &payload);
    let rel = root.join("releases/20261122103000");
    assert_eq!(
        fs::read_to_string(rel.join("REVISION")).expect("REVISION"),
        "abc123\n"
    );
    assert_eq!(
        fs::read_to_string(rel.join("built.txt")).expect("built"),
        "built it's $(prod)\n"
    );
    assert_eq!(
        fs::read_link(rel.join(".env")).expect("link"),
        Path::new("../../shared/.env")
    );
    assert_eq!(
        fs::read_to_string(rel.join(".env")).expect("env"),
        "FROM_RELEASE=1\n"
    );
    assert_eq!(
        fs::read_to_string(rel.join("storage/logs/seed.log")).expect("seeded"),
        "seed\n"
    );
    assert_eq!(
        fs::read_to_string(rel.join("config/app.ini")).expect("ini"),
        ""
    );
    assert!(
        !root.join("current").exists(),
        "prepare must not touch current"
    );

    // Cancelled switch (EOF): nothing changes.
    let (rc, _) = sh(&armed_switch(deploy_to, "20261122103000"), b"");
    assert_eq!(rc, SWITCH_CANCELLED as i32);
    assert!(fs::symlink_metadata(root.join("current")).is_err());
    // Armed switch fired.
    let (rc, out) = sh(&armed_switch(deploy_to, "20261122103000"), b"go\n");
    assert_eq!(rc, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with(SWITCH_READY), "{out}");
    assert!(lines[1].parse::<u128>().is_ok(), "a timestamp: {out}");
    assert_eq!(
        fs::read_link(root.join("current")).expect("current"),
        Path::new("releases/20261122103000")
    );
    assert_eq!(
        fs::read_to_string(root.join("current/index.html")).expect("read"),
        "v1\n"
    );

    // The operator edits shared content; a second release must not overwrite it.
    fs::write(root.join("shared/.env"), "EDITED=1\n").expect("write");
    fs::write(root.join("shared/storage/logs/app.log"), "live\n").expect("write");
    let p2 = ReleasePlan {
        release_id: "20261122110000",
        ..p.clone()
    };
    run_prepare(&p2, &payload);
    assert_eq!(
        fs::read_to_string(root.join("shared/.env")).expect("env"),
        "EDITED=1\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("shared/storage/logs/app.log")).expect("log"),
        "live\n"
    );
    let (rc, _) = sh(&armed_switch(deploy_to, "20261122110000"), b"go\n");
    assert_eq!(rc, 0);
    // Compensation: back to the previous release.
    let (rc, out) = sh(
        &revert(deploy_to, "20261122110000", Some("releases/20261122103000")),
        b"",
    );
    assert_eq!(rc, 0, "{out}");
    assert_eq!(
        fs::read_link(root.join("current")).expect("current"),
        Path::new("releases/20261122103000")
    );
    // Discard never removes the live release, and removes a staged one.
    let (rc, _) = sh(&discard(deploy_to, "20261122103000"), b"");
    assert_eq!(rc, 0);
    assert!(root.join("releases/20261122103000").is_dir());
    let (rc, _) = sh(&discard(deploy_to, "20261122110000"), b"");
    assert_eq!(rc, 0);
    assert!(!root.join("releases/20261122110000").exists());
    assert_eq!(
        fs::read_to_string(root.join("shared/.env")).expect("env"),
        "EDITED=1\n"
    );
    // Our unlock leaves someone else's lock alone; our own token removes it.
    let (rc, _) = sh(&unlock(deploy_to, "t2"), b"");
    assert_eq!(rc, 0);
    assert!(root.join(".ship/lock").is_dir());
    let (rc, _) = sh(&unlock(deploy_to, "t1"), b"");
    assert_eq!(rc, 0);
    assert!(!root.join(".ship/lock").exists());
    // An existing release directory is never written into.
    let (rc, _) = sh(&prepare(&p)[0].script, b"");
    assert_ne!(rc, 0);
    // Preflight sees it all.
    let (rc, out) = sh(&preflight(deploy_to, &["tar", "no-such-tool"], false), b"");
    assert_eq!(rc, 0);
    let pf = Preflight::parse(&out);
    assert_eq!(pf.current_release(), Some("20261122103000"));
    assert_eq!(pf.releases, ["20261122103000"]);
    assert_eq!(pf.tools, ["tar"]);
    assert!(pf.writable && pf.lock.is_none());
    assert!(pf.disk_free_kb.is_some_and(|kb| kb > 0), "{out}");
    assert!(pf.incomplete.is_empty() && pf.staged.is_empty(), "{out}");
    // A staged release that lost its REVISION and the journal's last line are seen too.
    fs::create_dir_all(root.join(".ship/stage-20261122120000")).expect("mkdir");
    fs::create_dir_all(root.join("releases/20261122120000")).expect("mkdir");
    fs::write(root.join(".ship/history"), "{\"n\":1}\n{\"n\":2}\n").expect("history");
    let (_, out) = sh(&preflight(deploy_to, &[], true), b"");
    let pf = Preflight::parse(&out);
    assert_eq!(pf.incomplete, ["20261122120000"]);
    assert_eq!(pf.staged, ["20261122120000"]);
    assert_eq!(pf.last_journal.as_deref(), Some("{\"n\":2}"));
    // A journal whose last line lost its newline: still read, and what follows still parsed.
    fs::write(root.join(".ship/history"), "{\"n\":2}\n{\"n\":3}").expect("history");
    let (_, out) = sh(&preflight(deploy_to, &[], true), b"");
    let pf = Preflight::parse(&out);
    assert_eq!(pf.last_journal.as_deref(), Some("{\"n\":3}"));
    assert_eq!(pf.history, ["{\"n\":2}", "{\"n\":3}"]);
    assert!(pf.disk_free_kb.is_some(), "{out}");
    // A deploy's preflight does not read the journal at all.
    let (_, out) = sh(&preflight(deploy_to, &[], false), b"");
    assert_eq!(Preflight::parse(&out).last_journal, None, "{out}");
}

#[test]
fn a_supervised_step_runs_while_stdin_is_open_and_stops_when_it_closes() {
    use std::io::Write;
    use std::process::Stdio;
    let start = |script: &str| {
        Command::new("sh")
            .args(["-c", &supervised(script)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh")
    };
    // Held open: the step runs to its end, and its status and output come through.
    let mut child = start("echo out; exit 7");
    let stdin = child.stdin.take();
    let out = child.wait_with_output().expect("wait");
    drop(stdin);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");

    // Closed early: the whole process group is stopped (the grandchild `sleep` too).
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("survived");
    let mut child = start(&format!(
        "sh -c 'sleep 3; touch {}' ; echo unreachable",
        marker.display()
    ));
    let mut stdin = child.stdin.take().expect("stdin");
    let _ = stdin.write_all(b"");
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(143), "stopped by SIGTERM");
    std::thread::sleep(std::time::Duration::from_millis(3500));
    assert!(
        !marker.exists(),
        "the grandchild was stopped with its group"
    );

    // A process that ignores SIGTERM is killed 5 s later, before the step is reported ended.
    let pid_file = dir.path().join("pid");
    let marker = dir.path().join("outlived");
    let mut child = start(&format!(
        "sh -c 'trap \"\" TERM; echo $$ > {}; sleep 6; touch {}'",
        pid_file.display(),
        marker.display()
    ));
    let stdin = child.stdin.take().expect("stdin");
    let t0 = std::time::Instant::now();
    while !pid_file.exists() && t0.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(143));
    let pid = std::fs::read_to_string(&pid_file).expect("pid");
    let alive = || {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        !matches!(state, None | Some("Z"))
    };
    let t0 = std::time::Instant::now();
    while alive() && t0.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!alive(), "the SIGTERM-ignoring process was never killed");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(!marker.exists(), "it was killed, not left to finish");
}

#[test]
fn releasing_a_dead_runs_lock_keeps_current_and_shared() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let d = root.to_str().expect("utf-8");
    for p in [
        "releases/20261122100000",
        "releases/20261122110000",
        ".ship/lock",
        ".ship/stage-20261122110000",
        "shared/storage",
    ] {
        fs::create_dir_all(root.join(p)).expect("mkdir");
    }
    std::os::unix::fs::symlink("releases/20261122100000", root.join("current")).expect("link");
    let owner = |token: &str| {
        fs::write(
            root.join(".ship/lock/owner"),
            format!("{{\"token\":\"{token}\",\"kind\":\"deploy\"}}\n"),
        )
        .expect("owner")
    };
    owner("ship-20261122110000-41");
    // Another run's lock now: nothing goes, and it says whose it is.
    let (rc, out) = sh(
        &release_lock(
            d,
            Some("20261122110000"),
            true,
            Some("ship-20261122090000-7"),
        ),
        b"",
    );
    assert_eq!(rc, LOCK_CHANGED as i32, "{out}");
    assert_eq!(
        out,
        "lock-changed={\"token\":\"ship-20261122110000-41\",\"kind\":\"deploy\"}\n"
    );
    // Shown without an owner record, but one has appeared since: another run's.
    let (rc, _) = sh(&release_lock(d, Some("20261122110000"), true, None), b"");
    assert_eq!(rc, LOCK_CHANGED as i32);
    for p in [
        ".ship/lock/owner",
        "releases/20261122110000",
        ".ship/stage-20261122110000",
    ] {
        assert!(root.join(p).exists(), "{p} is left alone");
    }
    // The dead run was staging 20261122110000: it goes, with its staged link and the lock.
    let (rc, out) = sh(
        &release_lock(
            d,
            Some("20261122110000"),
            true,
            Some("ship-20261122110000-41"),
        ),
        b"",
    );
    assert_eq!(rc, 0, "{out}");
    assert_eq!(
        out,
        "removed=.ship/stage-20261122110000\nremoved=releases/20261122110000\n\
         removed=.ship/lock\n"
    );
    assert!(root.join("releases/20261122100000").is_dir());
    assert!(root.join("shared/storage").is_dir());
    // The lock is gone by now (its holder ended): nothing is removed.
    fs::create_dir_all(root.join("releases/20261122110000")).expect("mkdir");
    let (rc, out) = sh(
        &release_lock(
            d,
            Some("20261122110000"),
            true,
            Some("ship-20261122110000-41"),
        ),
        b"",
    );
    assert_eq!((rc, out.as_str()), (0, "gone=.ship/lock\n"));
    assert!(root.join("releases/20261122110000").is_dir());
    fs::remove_dir(root.join("releases/20261122110000")).expect("rmdir");
    // A release that became current is kept (a lock made by hand, no owner record).
    fs::create_dir_all(root.join(".ship/lock")).expect("mkdir");
    let (rc, out) = sh(&release_lock(d, Some("20261122100000"), true, None), b"");
    assert_eq!(rc, 0);
    assert_eq!(out, "kept=releases/20261122100000\nremoved=.ship/lock\n");
    assert!(root.join("releases/20261122100000").is_dir());
    // A record naming something that is not a release id removes only the lock.
    fs::create_dir_all(root.join(".ship/lock")).expect("mkdir");
    let (_, out) = sh(&release_lock(d, Some("../shared"), true, None), b"");
    assert_eq!(out, "removed=.ship/lock\n");
    assert!(root.join("shared/storage").is_dir());
    // A complete release (its REVISION written: prepared to the end) is kept, even the one a
    // deploy was staging.
    let done = root.join("releases/20261122120000");
    fs::create_dir_all(&done).expect("mkdir");
    fs::write(done.join("REVISION"), "abc\n").expect("write");
    fs::create_dir_all(root.join(".ship/lock")).expect("mkdir");
    let (rc, out) = sh(&release_lock(d, Some("20261122120000"), true, None), b"");
    assert_eq!(rc, 0);
    assert_eq!(
        out,
        "complete=releases/20261122120000\nremoved=.ship/lock\n"
    );
    assert!(done.join("REVISION").is_file());
    // A rollback's target is never removed, complete or not; only the link it staged goes.
    fs::remove_file(done.join("REVISION")).expect("rm");
    fs::create_dir_all(root.join(".ship/stage-20261122120000")).expect("mkdir");
    fs::create_dir_all(root.join(".ship/lock")).expect("mkdir");
    let (rc, out) = sh(&release_lock(d, Some("20261122120000"), false, None), b"");
    assert_eq!(rc, 0);
    assert_eq!(
        out,
        "removed=.ship/stage-20261122120000\nremoved=.ship/lock\n"
    );
    assert!(done.is_dir());
}

#[test]
fn bad_releases_do_not_count_and_go_with_their_time() {
    let r = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let all = r(&[
        "20260101000000",
        "20260102000000",
        "20260103000000",
        "20260104000000",
        "20260105000000",
    ]);
    // 04 is bad: keep 2 good ones (05 and 03); 04 is newer than the oldest kept, so it stays.
    assert_eq!(
        releases_to_remove(&all, 2, "20260105000000", None, &r(&["20260104000000"])),
        r(&["20260101000000", "20260102000000"])
    );
    // 01 is bad and older than every kept release: it goes, though 4 good ones fit.
    assert_eq!(
        releases_to_remove(&all, 4, "20260105000000", None, &r(&["20260101000000"])),
        r(&["20260101000000"])
    );
}

fn release_plan<'a>(deploy_to: &'a str, delivery: &'a Delivery) -> ReleasePlan<'a> {
    ReleasePlan {
        deploy_to,
        release_id: "20260101000000",
        revision: "abc",
        delivery,
        shared_files: &[],
        shared_dirs: &[],
        copy_from_previous: &[],
        build: &[],
        writable: None,
        env: &[],
        inline_payload: None,
    }
}

#[test]
fn printf_bytes_prints_every_byte_back_in_every_shell() {
    let all: Vec<u8> = (0..=255u8).chain(*b"0123\\'%%s\n9").collect();
    let script = format!("printf {}", printf_bytes(&all));
    for shell in [
        &["sh"][..],
        &["bash", "--posix"],
        &["dash"],
        &["busybox", "sh"],
    ] {
        let out = Command::new(shell[0])
            .args(&shell[1..])
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "{} is needed for this test (scripts/test.sh installs it): {e}",
                    shell[0]
                )
            });
        assert_eq!(out.stdout, all, "{shell:?}");
    }
}

#[test]
fn a_small_tarball_travels_inside_its_upload_command() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("public")).expect("mkdir");
    fs::write(src.join("public/index.html"), "small\n").expect("write");
    let gz = tar_of(&src, "-czf");
    let root = tmp.path().join("app");
    let d = root.to_str().expect("utf-8");
    let delivery = Delivery::Tarball {
        compression: Compression::Gzip,
    };
    let small = ReleasePlan {
        inline_payload: Some(&gz),
        ..plan(d, &delivery, &[])
    };
    let steps = prepare(&small);
    assert_eq!(steps[0].name, "upload");
    assert!(steps[0].quick && !steps[0].takes_payload, "{:?}", steps[0]);
    assert!(steps[0].script.contains("printf '"), "{}", steps[0].script);
    let (rc, out) = sh(&lock(d, "{}"), b"");
    assert_eq!(rc, 0, "{out}");
    run_prepare(&small, b"");
    assert_eq!(
        fs::read_to_string(root.join("releases/20261122103000/public/index.html")).expect("read"),
        "small\n"
    );
    // A big one streams, as before.
    let big = vec![7u8; INLINE_MAX + 1];
    let steps = prepare(&ReleasePlan {
        inline_payload: Some(&big),
        ..plan(d, &delivery, &[])
    });
    assert!(steps[0].takes_payload && !steps[0].quick);
    assert!(!steps[0].script.contains("printf"));
}

#[test]
fn health_check_retries_then_passes_or_fails_with_reasons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8 path");
    fs::create_dir_all(dir.path().join("releases/20260101000000")).expect("mkdir");
    let delivery = Delivery::Tarball {
        compression: Compression::None,
    };
    let plan = release_plan(d, &delivery);
    // Healthy on the third attempt: a counter file in the release.
    let check = HealthCheck {
        probe: Some(Probe::Command(
            "n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; [ $n -ge 3 ]".into(),
        )),
        retries: 5,
        interval: std::time::Duration::from_millis(10),
        timeout: std::time::Duration::from_secs(5),
        on_failure: crate::inventory::OnFailure::Rollback,
    };
    let step = health_step(&plan, &check).expect("a probe");
    let (rc, out) = sh(&step.script, b"");
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.contains("health: attempt 2: the command exited with status 1"),
        "{out}"
    );
    assert!(out.contains("health: ok (attempt 3)"), "{out}");
    // An HTTP check against a port nothing listens on: every attempt says why, then it fails.
    let check = HealthCheck {
        probe: Some(Probe::Http {
            url: "http://127.0.0.1:9/up".into(),
            expect_status: 200,
            expect_body: None,
        }),
        retries: 2,
        interval: std::time::Duration::from_millis(10),
        timeout: std::time::Duration::from_secs(2),
        on_failure: crate::inventory::OnFailure::Rollback,
    };
    let step = health_step(&plan, &check).expect("a probe");
    let (rc, out) = sh(&step.script, b"");
    assert_eq!(rc, 1, "{out}");
    assert!(
        out.contains("attempt 2: status 000 (expected 200)"),
        "{out}"
    );
    assert!(out.contains("health: failed after 2 attempts"), "{out}");
    // No probe: no step.
    assert!(health_step(&plan, &HealthCheck::default()).is_none());
}

#[test]
fn rollback_scripts_stage_existing_releases_and_mark_bad_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8 path");
    fs::create_dir_all(dir.path().join("releases/20260101000000")).expect("mkdir");
    fs::create_dir_all(dir.path().join("releases/20260102000000")).expect("mkdir");
    fs::create_dir_all(dir.path().join(".ship")).expect("mkdir");
    fs::write(dir.path().join("releases/20260101000000/REVISION"), "abc\n").expect("write");
    // Complete: staged, and its revision printed.
    let (rc, out) = sh(&stage_existing(d, "20260101000000"), b"");
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("revision=abc"), "{out}");
    assert_eq!(
        fs::read_link(dir.path().join(".ship/stage-20260101000000/current")).expect("staged"),
        Path::new("releases/20260101000000")
    );
    // Incomplete and missing: refused with the reason.
    let (rc, out) = sh(&stage_existing(d, "20260102000000"), b"");
    assert_eq!(rc as u32, RELEASE_MISSING, "{out}");
    assert!(out.contains("incomplete"), "{out}");
    let (rc, out) = sh(&stage_existing(d, "20260103000000"), b"");
    assert_eq!(rc as u32, RELEASE_MISSING, "{out}");
    assert!(out.contains("does not exist"), "{out}");
    // Unstage removes only the staged link.
    let (rc, _) = sh(&unstage(d, "20260101000000"), b"");
    assert_eq!(rc, 0);
    assert!(!dir.path().join(".ship/stage-20260101000000").exists());
    assert!(dir.path().join("releases/20260101000000").exists());
    // Marks: bad set, and cleared on the release switched to on purpose.
    let (rc, _) = sh(&mark_bad(d, &["20260102000000"], None), b"");
    assert_eq!(rc, 0);
    let (_, out) = sh(&preflight(d, &[], true), b"");
    let pf = Preflight::parse(&out);
    assert_eq!(pf.bad, vec!["20260102000000"]);
    assert_eq!(
        pf.revisions,
        vec![("20260101000000".to_owned(), "abc".to_owned())]
    );
    let (rc, _) = sh(
        &mark_bad(d, &["20260101000000"], Some("20260102000000")),
        b"",
    );
    assert_eq!(rc, 0);
    let (_, out) = sh(&preflight(d, &[], false), b"");
    assert_eq!(Preflight::parse(&out).bad, vec!["20260101000000"]);
}

#[test]
fn check_proves_the_rename_and_finds_missing_shared_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8 path");
    fs::create_dir_all(dir.path().join(".ship")).expect("mkdir");
    fs::create_dir_all(dir.path().join("shared/storage")).expect("mkdir");
    let (rc, out) = sh(&check(d, &[".env".into()], &["storage".into()]), b"");
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("rename=atomic"), "{out}");
    assert!(out.contains("shared_missing=.env"), "{out}");
    assert!(out.contains("shared_ok=storage"), "{out}");
    // The scratch directory is gone.
    let left: Vec<_> = fs::read_dir(dir.path().join(".ship"))
        .expect("read")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn writable_uses_chmod_or_acls_on_the_shared_target_and_creates_missing_paths() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8 path");
    let rel = dir.path().join("releases/20260101000000");
    fs::create_dir_all(&rel).expect("mkdir");
    fs::create_dir_all(dir.path().join("shared/storage/logs")).expect("mkdir");
    std::os::unix::fs::symlink("../../shared/storage", rel.join("storage")).expect("link");
    let w = Writable {
        paths: vec!["storage".into(), "bootstrap/cache".into()],
        mode: WritableMode::Chmod("a+rwX".into()),
    };
    let step = writable(d, "20260101000000", &w, &["storage".into()]);
    let (rc, out) = sh(&step.script, b"");
    assert_eq!(rc, 0, "{out}");
    let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("shared/storage")), 0o777);
    assert_eq!(mode(&dir.path().join("shared/storage/logs")), 0o777);
    assert_eq!(mode(&rel.join("bootstrap/cache")), 0o777);
    // The link itself is still a link to shared/.
    assert!(
        fs::symlink_metadata(rel.join("storage"))
            .expect("link")
            .file_type()
            .is_symlink()
    );
    // Idempotent.
    assert_eq!(sh(&step.script, b"").0, 0);

    let acl = Writable {
        paths: vec!["storage".into()],
        mode: WritableMode::Acl("nobody".into()),
    };
    let (rc, out) = sh(
        &writable(d, "20260101000000", &acl, &["storage".into()]).script,
        b"",
    );
    if Command::new("setfacl").arg("--version").output().is_err() {
        assert_eq!(rc, 1);
        assert!(out.contains("setfacl is not installed"), "{out}");
        return;
    }
    assert_eq!(rc, 0, "{out}");
    let got = Command::new("getfacl")
        .arg("-p")
        .arg(dir.path().join("shared/storage/logs"))
        .output()
        .expect("getfacl");
    let text = String::from_utf8_lossy(&got.stdout);
    assert!(text.contains("user:nobody:rwx"), "{text}");
    assert!(text.contains("default:user:nobody:rwx"), "{text}");
}

#[test]
fn the_armed_switch_renames_only_on_its_word_with_and_without_perl() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A PATH without perl: only what the shell fallback uses.
    let bin = tmp.path().join("bin");
    fs::create_dir_all(&bin).expect("bin");
    for tool in ["mv", "date", "rmdir", "mkdir", "ln", "rm"] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .expect("coreutils");
        std::os::unix::fs::symlink(found, bin.join(tool)).expect("link");
    }
    let has_perl = Command::new("perl").arg("-e1").status().is_ok();
    let paths: Vec<Option<&Path>> = if has_perl {
        vec![None, Some(&bin)]
    } else {
        vec![Some(&bin)]
    };
    for path in paths {
        let root = tmp.path().join("app");
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("releases/1")).expect("release 1");
        fs::create_dir_all(root.join("releases/2")).expect("release 2");
        std::os::unix::fs::symlink("releases/1", root.join("current")).expect("current");
        let d = root.display().to_string();
        let stage = |id: &str| {
            let (rc, out) = sh(&stage_switch(&d, id), b"");
            assert_eq!(rc, 0, "{out}");
        };
        let current = || fs::read_link(root.join("current")).expect("current");
        // EOF, or any other word: nothing changes, and the staged link goes (a switch command
        // that reached its host after the controller was gone leaves nothing behind).
        for input in [&b""[..], b"no\n", b"\n", b"gone\n"] {
            stage("2");
            let (rc, out) = sh_path(&armed_switch(&d, "2"), input, path);
            assert_eq!(rc, SWITCH_CANCELLED as i32, "{path:?} {input:?}: {out}");
            assert!(out.starts_with(SWITCH_READY), "{out}");
            assert_eq!(current(), Path::new("releases/1"), "{path:?}");
            assert!(!root.join(stage_dir("2")).exists(), "{path:?} {input:?}");
        }
        stage("2");
        // The word: one rename, a timestamp, the staging dir gone; what follows the word on
        // stdin is not read.
        let (rc, out) = sh_path(&armed_switch(&d, "2"), b"go\nleft for the shell\n", path);
        assert_eq!(rc, 0, "{path:?}: {out}");
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with(SWITCH_READY), "{out}");
        let ns: u128 = lines[1].parse().expect("a timestamp in ns");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos();
        assert!(now - ns < 10_000_000_000, "{path:?}: {ns} is now-ish");
        assert_eq!(current(), Path::new("releases/2"), "{path:?}");
        assert!(!root.join(stage_dir("2")).exists(), "{path:?}");
        // A missing release: nothing to stage, so no switch.
        let (rc, out) = sh_path(&armed_switch(&d, "9"), b"go\n", path);
        assert_eq!(rc, SWITCH_CANCELLED as i32, "{path:?}: {out}");
        assert!(!out.contains(SWITCH_READY), "{out}");
        assert_eq!(current(), Path::new("releases/2"));
        assert!(!root.join(stage_dir("9")).exists());
        // A release nobody staged: the switch stages it.
        std::os::unix::fs::symlink("releases/2", root.join("current.new")).expect("link");
        fs::rename(root.join("current.new"), root.join("current")).expect("reset");
        let (rc, out) = sh_path(&armed_switch(&d, "1"), b"go\n", path);
        assert_eq!(rc, 0, "{path:?}: {out}");
        assert_eq!(current(), Path::new("releases/1"));
        std::os::unix::fs::symlink("releases/2", root.join("current.new")).expect("link");
        fs::rename(root.join("current.new"), root.join("current")).expect("reset");
        if path.is_some() {
            // The shell knows only `go`: a clock question cancels it.
            stage("1");
            let (rc, out) = sh_path(&armed_switch(&d, "1"), b"t\ngo\n", path);
            assert_eq!(rc, SWITCH_CANCELLED as i32, "{out}");
            assert_eq!(current(), Path::new("releases/2"));
            continue;
        }
        // perl: it answers clock questions, and renames at the instant it is given.
        let now_us = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_micros()
        };
        let scheduled = |input: String| {
            stage("1");
            let sent = now_us();
            let (rc, out) = sh_path(&armed_switch(&d, "1"), input.as_bytes(), path);
            assert_eq!(rc, 0, "{input}: {out}");
            assert_eq!(current(), Path::new("releases/1"));
            fs::remove_file(root.join("current")).expect("rm");
            std::os::unix::fs::symlink("releases/2", root.join("current")).expect("current");
            let lines: Vec<String> = out.lines().map(str::to_owned).collect();
            assert_eq!(lines[0], SWITCH_READY_AT, "{out}");
            let at: u128 = lines.last().and_then(|l| l.parse().ok()).expect("stamp");
            (sent, lines, at / 1000)
        };
        let (sent, lines, _) = scheduled("t\nt\ngo\n".into());
        for l in &lines[1..3] {
            let us: u128 = l
                .strip_prefix("t ")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("a clock answer: {l}"));
            assert!(us >= sent && us - sent < 5_000_000, "{us} is now-ish");
        }
        // An instant 300 ms ahead: not before it, and soon after.
        let target = now_us() + 300_000;
        let (_, _, at) = scheduled(format!("at {target}\n"));
        assert!(at >= target && at - target < 200_000, "{at} vs {target}");
        // With a settle time: the rename at once, the report that much later.
        let t0 = std::time::Instant::now();
        let (sent, _, at) = scheduled(format!("at {} 300000\n", now_us()));
        assert!(at - sent < 200_000, "{at} vs {sent}");
        assert!(t0.elapsed() >= std::time::Duration::from_millis(300));
        // An instant already past: at once. One absurdly far: at most the longest wait.
        let (sent, _, at) = scheduled(format!("at {}\n", now_us() - 10_000_000));
        assert!(at - sent < 200_000, "{at} vs {sent}");
        let (sent, _, at) = scheduled(format!("at {}\n", now_us() + 3_600_000_000));
        let waited = at - sent;
        assert!(
            waited >= u128::from(SWITCH_MAX_WAIT_MS) * 1000 && waited < 3_000_000,
            "{waited}"
        );
        // A malformed instant is not the word.
        stage("1");
        let (rc, _) = sh_path(&armed_switch(&d, "1"), b"at soon\n", path);
        assert_eq!(rc, SWITCH_CANCELLED as i32);
        assert_eq!(current(), Path::new("releases/2"));
    }
}

#[test]
fn finish_journals_removes_old_releases_and_only_our_lock_in_one_rm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("app");
    let d = root.display().to_string();
    // A fake `rm` that refuses release paths (a read-only mount, say); the real one otherwise.
    let bin = tmp.path().join("bin");
    fs::create_dir_all(&bin).expect("bin");
    let fake = bin.join("rm");
    fs::write(
        &fake,
        "#!/bin/sh\nrc=0\nfor a in \"$@\"; do case $a in -*) ;; releases/*) \
         echo \"rm: cannot remove '$a': Read-only file system\" >&2; rc=1;; \
         *) /bin/rm -rf \"$a\";; esac; done\nexit $rc\n",
    )
    .expect("fake rm");
    fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let old = vec!["1".to_owned(), "2".to_owned()];
    let setup = |owner: &str| {
        let _ = fs::remove_dir_all(&root);
        for id in ["1", "2", "3"] {
            fs::create_dir_all(root.join("releases").join(id).join("sub")).expect("release");
        }
        fs::create_dir_all(root.join("shared/storage")).expect("shared");
        // A release's shared link: removing the release never follows it.
        std::os::unix::fs::symlink("../../shared/storage", root.join("releases/1/storage"))
            .expect("link");
        fs::create_dir_all(root.join(".ship/lock")).expect("lock");
        fs::write(
            root.join(".ship/lock/owner"),
            format!("{{\"token\":\"{owner}\"}}\n"),
        )
        .expect("owner");
    };
    let exists = |p: &str| root.join(p).exists();
    let journal = || fs::read_to_string(root.join(".ship/history")).unwrap_or_default();

    // Ours: the old releases and the lock go, the journal has the line, shared/ is intact.
    setup("tok-1");
    let (rc, out) = sh(
        &finish(&d, "20260101000000", "tok-1", "{\"n\":1}", &old),
        b"",
    );
    assert_eq!(rc, 0, "{out}");
    assert!(!out.contains(CLEANUP_STATUS), "{out}");
    assert!(!exists("releases/1") && !exists("releases/2") && exists("releases/3"));
    assert!(!exists(".ship/lock"));
    assert!(exists("shared/storage"));
    assert_eq!(journal(), "{\"n\":1}\n");

    // Another run's lock stays; the old releases still go.
    setup("tok-2");
    let (rc, out) = sh(
        &finish(&d, "20260101000000", "tok-1", "{\"n\":1}", &old),
        b"",
    );
    assert_eq!(rc, 0, "{out}");
    assert!(!exists("releases/1") && exists(".ship/lock/owner"));

    // Nothing to remove: only the lock goes.
    setup("tok-1");
    let (rc, out) = sh(
        &finish(&d, "20260101000000", "tok-1", "{\"n\":2}", &[]),
        b"",
    );
    assert_eq!(rc, 0, "{out}");
    assert!(exists("releases/1") && !exists(".ship/lock"));

    // The releases cannot be removed: reported with rm's status, and the lock still goes.
    setup("tok-1");
    let (rc, out) = sh_path(
        &finish(&d, "20260101000000", "tok-1", "{\"n\":3}", &old),
        b"",
        Some(Path::new(&path)),
    );
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains(&format!("{CLEANUP_STATUS}1")), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(exists("releases/1") && !exists(".ship/lock"), "{out}");
    assert!(exists("shared/storage"));
    assert_eq!(journal(), "{\"n\":3}\n");

    // `deploy_to` gone: it fails, and removes nothing relative to wherever the shell is.
    let decoy = tmp.path().join("elsewhere");
    fs::create_dir_all(decoy.join("releases/1")).expect("decoy");
    fs::create_dir_all(decoy.join(".ship/lock")).expect("decoy lock");
    fs::write(decoy.join(".ship/lock/owner"), "{\"token\":\"tok-1\"}\n").expect("owner");
    let gone = tmp.path().join("gone").display().to_string();
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(finish(&gone, "20260101000000", "tok-1", "{}", &old))
        .current_dir(&decoy)
        .status()
        .expect("sh");
    assert!(!status.success());
    assert!(decoy.join("releases/1").exists() && decoy.join(".ship/lock").exists());
}

#[test]
fn git_credentials_never_reach_gits_arguments() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path().join("app");
    fs::create_dir_all(d.join("releases")).expect("mkdir");
    let bin = tmp.path().join("bin");
    fs::create_dir_all(&bin).expect("bin");
    // A git that records its arguments, and asks the credential helper it was given for the
    // credentials the way git does (`<helper> get`, run by the shell).
    let log = tmp.path().join("argv.txt");
    let creds = tmp.path().join("creds.txt");
    fs::write(
        bin.join("git"),
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> {log}\n\
             for a; do case $a in credential.helper=!*) h=${{a#credential.helper=!}};; esac; done\n\
             [ -z \"$h\" ] || sh -c \"$h get\" > {creds}\nexit 0\n",
            log = log.display(),
            creds = creds.display()
        ),
    )
    .expect("fake git");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(bin.join("git"), fs::Permissions::from_mode(0o755)).expect("chmod");
    let delivery = Delivery::Git {
        url: "https://deploy:pw-S3cret%21@git.example.com/app.git".into(),
        commit: "0123456789012345678901234567890123456789".into(),
        known_hosts: None,
        parallel: None,
    };
    let root = d.to_str().expect("utf-8");
    let steps = prepare(&release_plan(root, &delivery));
    let fetch = steps.iter().find(|s| s.name == "fetch").expect("fetch");
    assert!(!fetch.script.contains("pw-S3cret%21"), "{}", fetch.script);
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let (rc, out) = sh_path(&fetch.script, b"", Some(Path::new(&path)));
    assert_eq!(rc, 0, "{out}");
    let argv = fs::read_to_string(&log).expect("git ran");
    assert!(!argv.contains("pw-S3cret"), "{argv}");
    assert!(
        argv.contains("clone --quiet --mirror https://git.example.com/app.git repo"),
        "{argv}"
    );
    // The helper answers from the step's environment, the password decoded.
    assert_eq!(
        fs::read_to_string(&creds).expect("helper ran"),
        "username=deploy\npassword=pw-S3cret!\n"
    );
    // Without credentials in the URL: no helper, the URL as it is.
    let plain = Delivery::Git {
        url: "git@git.example.com:app.git".into(),
        commit: "0123456789012345678901234567890123456789".into(),
        known_hosts: None,
        parallel: None,
    };
    let steps = prepare(&release_plan(root, &plain));
    let fetch = steps.iter().find(|s| s.name == "fetch").expect("fetch");
    assert!(
        !fetch.script.contains("credential.helper"),
        "{}",
        fetch.script
    );
    assert!(fetch.script.contains("git@git.example.com:app.git"));
}

#[test]
fn taking_the_lock_sweeps_what_dead_runs_left_in_the_ship_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let d = root.to_str().expect("utf-8");
    for dir in [
        ".ship/stage-20261122100000",
        ".ship/work-20261122100000",
        "shared/storage",
    ] {
        fs::create_dir_all(root.join(dir)).expect("mkdir");
    }
    std::os::unix::fs::symlink(
        "releases/20261122100000",
        root.join(".ship/stage-20261122100000/current"),
    )
    .expect("link");
    fs::write(root.join(".ship/20261122100000.tar"), "x").expect("tar");
    fs::write(root.join(".ship/history"), "{}\n").expect("journal");
    let (rc, out) = sh(&lock(d, "{\"token\":\"t\"}"), b"");
    assert_eq!(rc, 0, "{out}");
    assert_eq!(
        out,
        "removed=.ship/stage-20261122100000\nremoved=.ship/20261122100000.tar\n\
         removed=.ship/work-20261122100000\n"
    );
    let left: Vec<String> = fs::read_dir(root.join(".ship"))
        .expect("read")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(left, ["history", "lock"]);
    assert!(root.join("shared/storage").is_dir());
    // Nothing to sweep: no output, no process started for it.
    fs::remove_dir_all(root.join(".ship/lock")).expect("unlock");
    let (rc, out) = sh(&lock(d, "{\"token\":\"t\"}"), b"");
    assert_eq!((rc, out.as_str()), (0, ""));
}

#[test]
fn the_programs_a_step_starts_are_found_or_not_on_the_hosts_path() {
    assert_eq!(
        program_of("composer install --no-dev").as_deref(),
        Some("composer")
    );
    assert_eq!(
        program_of("APP_ENV=prod php artisan migrate").as_deref(),
        Some("php")
    );
    assert_eq!(
        program_of("/usr/bin/npm ci").as_deref(),
        Some("/usr/bin/npm")
    );
    assert_eq!(program_of("cd public && npm ci"), None);
    assert_eq!(program_of("./vendor/bin/phpunit"), None);
    assert_eq!(program_of("$TOOL run"), None);
    assert_eq!(program_of("'unterminated"), None);
    let (rc, out) = sh(
        &needs(
            &["sh".into(), "no-such-tool-xyz".into(), "it's".into()],
            false,
            true,
        ),
        b"",
    );
    assert_eq!(rc, 0, "{out}");
    let r = NeedsReply::parse(&out);
    assert_eq!(r.found, ["sh"]);
    assert_eq!(r.missing, ["no-such-tool-xyz", "it's"]);
    assert!(r.health_tool.is_some());
    assert_eq!(r.sudo, None);
}

#[test]
fn the_fetch_takes_the_sources_parallel_and_nothing_else_does() {
    let d = Delivery::Git {
        url: "git@git.example.com:acme/shop.git".into(),
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
        known_hosts: None,
        parallel: Some(2),
    };
    let steps = prepare(&plan("/srv/app", &d, &[]));
    let with: Vec<(&str, Option<usize>)> = steps
        .iter()
        .filter(|s| s.parallel.is_some())
        .map(|s| (s.name.as_str(), s.parallel))
        .collect();
    assert_eq!(with, [("fetch", Some(2))]);
}
