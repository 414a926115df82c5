//! A CI job deploying: the command line chooses what ships (`--ref`, `--artifact`), the
//! inventory reads the environment (`${VAR}`), secrets come from the CI's store (`from_env`,
//! `from_command`, `env_file`), errors stay machine-readable, and the journal says who deployed.
//! Every refusal is checked to have left every host as it was.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::{Fleet, Run, git, run_ok};

/// The variables a CI runner sets that name who deployed, removed so a test chooses them.
const CI_VARS: &[&str] = &[
    "GITHUB_ACTOR",
    "GITHUB_SERVER_URL",
    "GITHUB_REPOSITORY",
    "GITHUB_RUN_ID",
    "GITHUB_ACTIONS",
    "GITLAB_USER_LOGIN",
    "CI_JOB_URL",
    "BUILDKITE_BUILD_CREATOR",
    "BUILDKITE_BUILD_URL",
    "CIRCLE_USERNAME",
    "CIRCLE_BUILD_URL",
    "BUILD_REQUESTEDFOR",
    "CHANGE_AUTHOR",
    "DRONE_COMMIT_AUTHOR",
    "CI_COMMIT_AUTHOR",
    "BUILD_URL",
];

/// Every host on `release` (or on nothing), holding exactly `releases`, unlocked.
fn assert_hosts(fleet: &Fleet, current: Option<&str>, releases: &[&str]) {
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), current, "{}: current", h.name);
        let mut want: Vec<String> = releases.iter().map(|r| (*r).to_owned()).collect();
        want.sort();
        assert_eq!(h.releases(), want, "{}: releases", h.name);
        assert!(!h.locked(), "{}: lock", h.name);
    }
}

/// The release id a successful run reports, from its `--json` events.
fn released(run: &Run) -> String {
    assert_eq!(run.code, 0, "{}", run.all());
    run.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "finished")
        .and_then(|e| e["summary"]["release"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no finished event: {}", run.all()))
}

fn revision_on(fleet: &Fleet, i: usize) -> String {
    fs::read_to_string(fleet.hosts[i].path("current/REVISION"))
        .expect("REVISION")
        .trim()
        .to_owned()
}

#[test]
fn ref_deploys_a_branch_a_tag_a_full_or_a_short_commit_instead_of_the_inventorys() {
    let fleet = Fleet::start(2);
    let repo = fleet.example_repository();
    let first = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    fs::write(repo.join("public/feature.txt"), "feature\n").expect("write");
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "feature"]);
    let feature = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["tag", "-a", "v2", "-m", "v2"]);
    git(&repo, &["checkout", "-q", "main"]);
    fleet.inventory("", "");
    fleet.set_source(&format!("{{ git: {}, ref: main }}", repo.display()));
    let dir = fleet.dir().to_path_buf();

    let a = released(&fleet.ship_in(
        &dir,
        &["deploy", "production", "--ref", "feature", "--json"],
        &[],
        &[],
    ));
    assert_eq!(revision_on(&fleet, 0), feature);
    assert!(
        fleet.hosts[1]
            .path(&format!("releases/{a}/public/feature.txt"))
            .exists()
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // An annotated tag deploys the commit it points at.
    released(&fleet.ship_in(
        &dir,
        &["deploy", "production", "--ref", "v2", "--json"],
        &[],
        &[],
    ));
    assert_eq!(revision_on(&fleet, 1), feature);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    released(&fleet.ship_in(
        &dir,
        &["deploy", "production", "--ref", &first, "--json"],
        &[],
        &[],
    ));
    assert_eq!(revision_on(&fleet, 0), first);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // A short commit id is resolved in the checkout ship runs in, as in a CI job's workspace.
    let short = &feature[..9];
    let run = fleet.ship_in(
        &repo,
        &["deploy", "production", "--ref", short, "--json"],
        &[],
        &[],
    );
    let last = released(&run);
    assert_eq!(revision_on(&fleet, 0), feature);
    assert_eq!(revision_on(&fleet, 1), feature);
    let before: Vec<String> = fleet.hosts[0].releases();

    // What does not resolve is refused before any host is contacted.
    for (args, says) in [
        (vec!["--ref", "no-such-branch"], "--ref: git"),
        (vec!["--ref", &short[..7]], "--ref: git"),
        (vec!["--ref=-x"], "is not a branch, tag or commit"),
    ] {
        let mut all = vec!["deploy", "production"];
        all.extend(args.iter().copied());
        let run = fleet.ship_in(&dir, &all, &[], &[]);
        assert_eq!(run.code, 2, "{args:?}: {}", run.all());
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("hint:"), "{args:?}: {}", run.stderr);
        let want: Vec<&str> = before.iter().map(String::as_str).collect();
        assert_hosts(&fleet, Some(&last), &want);
    }
    // --ref with --artifact: one or the other.
    let run = fleet.ship_in(
        &dir,
        &["deploy", "production", "--ref", "main", "--artifact", "."],
        &[],
        &[],
    );
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("cannot be used with"), "{}", run.stderr);
    // --ref with an artifact source.
    fleet.inventory("", "");
    let run = fleet.ship_in(&dir, &["deploy", "production", "--ref", "main"], &[], &[]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr
            .contains("deploys an artifact, not a git repository"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--artifact"), "{}", run.stderr);
    let want: Vec<&str> = before.iter().map(String::as_str).collect();
    assert_hosts(&fleet, Some(&last), &want);
}

#[test]
fn artifact_deploys_a_directory_or_any_tarball_given_on_the_command_line() {
    let fleet = Fleet::start(2);
    let repo = fleet.example_repository();
    // The inventory names a git source: --artifact replaces whatever kind it is.
    fleet.inventory("", "");
    fleet.set_source(&format!("{{ git: {}, ref: main }}", repo.display()));
    let work = fleet.dir().join("job");
    fs::create_dir_all(work.join("build/public")).expect("mkdir");
    fs::write(work.join("build/build.sh"), "mkdir -p public\n").expect("build.sh");
    fs::write(work.join("build/public/app.txt"), "from the job\n").expect("app");
    let mut releases = Vec::new();
    let tar = |args: &[&str]| run_ok(Command::new("tar").args(args).current_dir(&work));
    tar(&["-cf", "build.tar", "-C", "build", "."]);
    tar(&["-czf", "build.tar.gz", "-C", "build", "."]);
    tar(&["-czf", "build.tgz", "-C", "build", "."]);
    tar(&["--zstd", "-cf", "build.tar.zst", "-C", "build", "."]);
    for what in [
        "build",
        "./build.tar",
        "build.tar.gz",
        "build.tgz",
        "build.tar.zst",
    ] {
        let run = fleet.ship_in(
            &work,
            &["deploy", "production", "--artifact", what, "--json"],
            &[],
            &[],
        );
        let id = released(&run);
        for h in &fleet.hosts {
            assert_eq!(
                fs::read_to_string(h.path(&format!("releases/{id}/public/app.txt"))).expect("app"),
                "from the job\n",
                "{what} on {}",
                h.name
            );
        }
        assert!(revision_on(&fleet, 0).starts_with("sha256:"), "{what}");
        releases.push(id);
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let last = releases.last().cloned().expect("a release");
    let kept: Vec<&str> = releases[releases.len() - 3..]
        .iter()
        .map(String::as_str)
        .collect();
    assert_hosts(&fleet, Some(&last), &kept);
    // What cannot be an artifact is refused before any host is contacted.
    fs::write(work.join("build.zip"), "PK").expect("zip");
    for (what, says) in [
        ("missing.tar.gz", "--artifact:"),
        (
            "build.zip",
            "is not a directory, .tar, .tar.gz, .tgz or .tar.zst",
        ),
    ] {
        let run = fleet.ship_in(
            &work,
            &["deploy", "production", "--artifact", what],
            &[],
            &[],
        );
        assert_eq!(run.code, 2, "{what}: {}", run.all());
        assert!(run.stderr.contains(says), "{what}: {}", run.stderr);
        assert!(run.stderr.contains("hint:"), "{what}: {}", run.stderr);
        assert_hosts(&fleet, Some(&last), &kept);
    }
}

#[test]
fn variables_fill_any_value_at_load_and_their_errors_name_file_line_key_and_variable() {
    let fleet = Fleet::start(2);
    fleet.inventory(
        "  env:\n    REGION: ${SHIP_T_REGION}\n    TIER: ${SHIP_T_TIER:-standard}\n    \
         PRICE: \"$$5 and $HOME\"\n    NEEDED: \"${SHIP_T_NEEDED:?set it in the CI's variables}\"\n",
        "",
    );
    fleet.edit_inventory(|t| {
        t.replace(
            "build: [\"sh build.sh\"]",
            "build: [\"sh build.sh\", \"printf '%s|%s|%s|%s' \\\"$REGION\\\" \\\"$TIER\\\" \
             \\\"$PRICE\\\" \\\"$NEEDED\\\" > vars.txt\"]",
        )
    });
    let dir = fleet.dir().to_path_buf();
    let env = [("SHIP_T_REGION", "eu-west-1"), ("SHIP_T_NEEDED", "yes")];
    let id = released(&fleet.ship_in(&dir, &["deploy", "production", "--json"], &env, &[]));
    for h in &fleet.hosts {
        assert_eq!(
            fs::read_to_string(h.path(&format!("releases/{id}/vars.txt"))).expect("vars"),
            // `$HOME` is the host shell's: ship leaves it alone.
            "eu-west-1|standard|$5 and $HOME|yes",
            "{}",
            h.name
        );
    }
    // `ship config` says which values came from which variables.
    let config = fleet.ship_in(&dir, &["config", "production", "--json"], &env, &[]);
    assert_eq!(config.code, 0, "{}", config.all());
    let c: serde_json::Value = serde_json::from_str(config.stdout.trim()).expect("json");
    assert_eq!(
        c["from_environment"]["defaults.env.REGION"][0],
        "SHIP_T_REGION"
    );
    assert_eq!(c["from_environment"]["defaults.env.TIER"][0], "SHIP_T_TIER");
    assert_eq!(c["hosts"][0]["env"]["REGION"], "eu-west-1");

    // Unset: refused at load, before any host is contacted, naming file, line, key, variable.
    let run = fleet.ship_in(
        &dir,
        &["deploy", "production"],
        &[("SHIP_T_NEEDED", "yes")],
        &["SHIP_T_REGION"],
    );
    assert_eq!(run.code, 2, "{}", run.all());
    let inv = dir.join("inventory.yaml");
    let line = fs::read_to_string(&inv)
        .expect("inventory")
        .lines()
        .position(|l| l.contains("SHIP_T_REGION"))
        .expect("line")
        + 1;
    assert!(
        run.stderr.contains(&format!(
            "{}:{line}:13: defaults.env.REGION: `${{SHIP_T_REGION}}`: SHIP_T_REGION is not set in \
             the environment",
            inv.display()
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("hint: set SHIP_T_REGION"),
        "{}",
        run.stderr
    );
    // `:?` shows its message; --json makes the error a JSON object with the place.
    let run = fleet.ship_in(
        &dir,
        &["deploy", "production", "--json"],
        &[("SHIP_T_REGION", "x")],
        &["SHIP_T_NEEDED"],
    );
    assert_eq!(run.code, 2, "{}", run.all());
    let e: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("one JSON error");
    assert_eq!(e["event"], "error");
    assert_eq!(e["exit_status"], 2);
    assert_eq!(e["at"]["key"], "defaults.env.NEEDED");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("`${SHIP_T_NEEDED}`: set it in the CI's variables")),
        "{e}"
    );
    // Under GitHub Actions, the error is also an annotation on the inventory line.
    let run = fleet.ship_in(
        &dir,
        &["deploy", "production"],
        &[("SHIP_T_REGION", "x"), ("GITHUB_ACTIONS", "true")],
        &["SHIP_T_NEEDED"],
    );
    assert!(
        run.stdout
            .starts_with(&format!("::error title=ship,file={},line=", inv.display())),
        "{}",
        run.stdout
    );
    let want = [id.as_str()];
    assert_hosts(&fleet, Some(&id), &want);
}

#[test]
fn secrets_from_the_environment_a_command_and_a_dotenv_file_reach_the_steps_and_nothing_else() {
    let fleet = Fleet::start(2);
    let dir = fleet.dir().to_path_buf();
    fs::create_dir_all(dir.join("vault")).expect("vault");
    fs::write(dir.join("vault/stripe"), "Zq8-stripe\n").expect("stripe");
    fs::write(
        dir.join("secrets.env"),
        "# from the CI's secret store\nexport MAIL_PASSWORD=\"Zq8-mail\"\nOTHER='x y'\n",
    )
    .expect("dotenv");
    fleet.inventory(
        "  env:\n    DB_PASSWORD: { from_env: SHIP_T_DB, secret: true }\n    \
         STRIPE_KEY: { from_command: \"cat vault/stripe\", secret: true }\n  \
         env_file: ./secrets.env\n",
        "",
    );
    fleet.edit_inventory(|t| {
        t.replace(
            "build: [\"sh build.sh\"]",
            "build: [\"sh build.sh\", \"printf '%s|%s|%s|%s' \\\"$DB_PASSWORD\\\" \\\"$STRIPE_KEY\\\" \
             \\\"$MAIL_PASSWORD\\\" \\\"$OTHER\\\" > secrets.txt && echo \\\"db=$DB_PASSWORD\\\"\"]",
        )
    });
    let env = [("SHIP_T_DB", "Zq8-db")];
    let (run, seen, scans) = crate::trust::scan_while("Zq8", || {
        fleet.ship_in(&dir, &["deploy", "production", "-v"], &env, &[])
    });
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        seen.is_empty(),
        "a secret in some process's arguments: {seen:?}"
    );
    assert!(scans > 5, "the scan ran along the deploy ({scans})");
    for h in &fleet.hosts {
        assert_eq!(
            fs::read_to_string(h.path("current/secrets.txt")).expect("secrets"),
            "Zq8-db|Zq8-stripe|Zq8-mail|x y",
            "{}",
            h.name
        );
    }
    assert!(run.all().contains("db=****"), "{}", run.all());
    for args in [
        vec!["deploy", "production", "--json", "-v"],
        vec!["plan", "production"],
        vec!["plan", "production", "--json", "--full"],
        vec!["config", "production"],
        vec!["config", "production", "--json"],
        vec!["releases", "production"],
    ] {
        let out = fleet.ship_in(&dir, &args, &env, &[]);
        assert!(out.code == 0, "{args:?}: {}", out.all());
        assert!(
            !out.all().contains("Zq8"),
            "{args:?} shows a secret: {}",
            out.all()
        );
    }
    for h in &fleet.hosts {
        let journal = fs::read_to_string(h.path(".ship/history")).expect("journal");
        assert!(!journal.contains("Zq8"), "{}: {journal}", h.name);
    }
    let current = fleet.hosts[0].current_id().expect("current");
    let releases = fleet.hosts[0].releases();
    let kept: Vec<&str> = releases.iter().map(String::as_str).collect();

    // A command that fails, or prints nothing; a variable that is not set; a dotenv file that is
    // not there: each refused before any host is contacted, naming the variable and the place,
    // never what the command printed.
    fs::write(dir.join("vault/stripe"), "").expect("empty");
    let run = fleet.ship_in(&dir, &["deploy", "production"], &env, &[]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains(
            "defaults.env.STRIPE_KEY.from_command: the `from_command` of STRIPE_KEY printed nothing"
        ),
        "{}",
        run.stderr
    );
    fs::write(dir.join("vault/stripe"), "Zq8-leak").expect("no newline");
    fleet.edit_inventory(|t| t.replace("cat vault/stripe", "cat vault/stripe; exit 4"));
    let run = fleet.ship_in(&dir, &["deploy", "production"], &env, &[]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("of STRIPE_KEY failed (exit status 4)"),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains("Zq8"), "{}", run.all());
    fleet.edit_inventory(|t| t.replace("cat vault/stripe; exit 4", "cat vault/stripe"));
    let run = fleet.ship_in(&dir, &["deploy", "production"], &[], &["SHIP_T_DB"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr
            .contains("defaults.env.DB_PASSWORD.from_env: SHIP_T_DB is not set in the environment"),
        "{}",
        run.stderr
    );
    fs::remove_file(dir.join("secrets.env")).expect("rm");
    let run = fleet.ship_in(&dir, &["deploy", "production"], &env, &[]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("defaults.env_file: cannot read"),
        "{}",
        run.stderr
    );
    assert_hosts(&fleet, Some(&current), &kept);
}

#[test]
fn the_journal_the_lock_and_releases_say_who_deployed_from_the_ci_or_the_machine() {
    let fleet = Fleet::start(1);
    fleet.inventory("", "");
    let dir = fleet.dir().to_path_buf();
    let github = [
        ("GITHUB_ACTOR", "alice"),
        ("USER", "runner"),
        ("GITHUB_SERVER_URL", "https://github.com"),
        ("GITHUB_REPOSITORY", "acme/shop"),
        ("GITHUB_RUN_ID", "4242"),
    ];
    let a = released(&fleet.ship_in(&dir, &["deploy", "production", "--json"], &github, CI_VARS));
    let last = |fleet: &Fleet| {
        fleet.hosts[0]
            .journal()
            .last()
            .cloned()
            .expect("a journal line")
    };
    let j = last(&fleet);
    assert_eq!(j["user"], "alice");
    assert_eq!(
        j["ci_url"],
        "https://github.com/acme/shop/actions/runs/4242"
    );
    let releases = fleet.ship_in(&dir, &["releases", "production"], &[], CI_VARS);
    assert!(releases.stdout.contains("alice"), "{}", releases.stdout);
    assert!(
        releases
            .stdout
            .contains("by CI run https://github.com/acme/shop/actions/runs/4242"),
        "{}",
        releases.stdout
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // GitLab names the person with GITLAB_USER_LOGIN and the job's page with CI_JOB_URL.
    let gitlab = [
        ("GITLAB_USER_LOGIN", "bob"),
        ("CI_JOB_URL", "https://gitlab.example/acme/shop/-/jobs/9"),
    ];
    released(&fleet.ship_in(&dir, &["deploy", "production", "--json"], &gitlab, CI_VARS));
    assert_eq!(last(&fleet)["user"], "bob");
    assert_eq!(
        last(&fleet)["ci_url"],
        "https://gitlab.example/acme/shop/-/jobs/9"
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // A laptop: $USER.
    released(&fleet.ship_in(
        &dir,
        &["deploy", "production", "--json"],
        &[("USER", "carol")],
        CI_VARS,
    ));
    assert_eq!(last(&fleet)["user"], "carol");
    assert!(last(&fleet)["ci_url"].is_null());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // No $USER nor $LOGNAME (a bare container): git's user.name, from the home it has.
    let home = dir.join("home");
    fs::create_dir_all(&home).expect("home");
    fs::write(home.join(".gitconfig"), "[user]\n\tname = Dana Dev\n").expect("gitconfig");
    let home_s = home.display().to_string();
    let mut unset = CI_VARS.to_vec();
    unset.extend(["USER", "LOGNAME", "GIT_CONFIG_GLOBAL"]);
    released(&fleet.ship_in(
        &dir,
        &["deploy", "production", "--json"],
        &[("HOME", &home_s)],
        &unset,
    ));
    assert_eq!(last(&fleet)["user"], "Dana Dev");
    // A held lock names the holder and the CI run too.
    fs::create_dir_all(fleet.hosts[0].path(".ship/lock")).expect("lock");
    let owner = serde_json::json!({
        "token": "ship-x", "kind": "deploy", "user": "erin", "controller": "ci-runner-7",
        "pid": 1, "release": a, "started": "2026-12-04T10:00:00Z", "ci_job": "GITHUB_RUN_ID=77",
        "ci_url": "https://github.com/acme/shop/actions/runs/77"
    });
    fs::write(
        fleet.hosts[0].path(".ship/lock/owner"),
        format!("{owner}\n"),
    )
    .expect("owner");
    let run = fleet.ship_in(&dir, &["deploy", "production"], &[], CI_VARS);
    assert_eq!(run.code, 4, "{}", run.all());
    assert!(
        run.all().contains("by erin on ci-runner-7")
            && run
                .all()
                .contains("CI run https://github.com/acme/shop/actions/runs/77"),
        "{}",
        run.all()
    );
}

/// The fenced YAML blocks of a Markdown file, each with the file name its first line names
/// (`# .gitlab-ci.yml`).
fn yaml_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = markdown.lines();
    while let Some(l) = lines.next() {
        if l.trim() != "```yaml" {
            continue;
        }
        let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        let name = block
            .first()
            .and_then(|l| l.strip_prefix("# "))
            .unwrap_or_default()
            .to_owned();
        out.push((name, block.join("\n") + "\n"));
    }
    out
}

/// Every line of every string in `v` that runs ship.
fn ship_lines(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.extend(
            s.lines()
                .map(str::trim)
                .filter(|l| l.starts_with("ship "))
                .map(str::to_owned),
        ),
        serde_json::Value::Array(a) => a.iter().for_each(|x| ship_lines(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| ship_lines(x, out)),
        _ => {}
    }
}

#[test]
fn every_job_in_the_ci_guide_parses_and_its_ship_command_deploys() {
    let guide = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/guides/ci.md");
    let blocks = yaml_blocks(&fs::read_to_string(&guide).expect("the CI guide"));
    let names: Vec<&str> = blocks.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "inventory.yaml",
            ".github/workflows/deploy.yml",
            ".gitlab-ci.yml"
        ],
        "the guide's YAML blocks"
    );
    // The guide's inventory takes the database password from the job's environment.
    let inventory: serde_json::Value =
        serde_saphyr::from_str(&blocks[0].1).expect("the guide's inventory is YAML");
    assert_eq!(
        inventory["defaults"]["env"]["DB_PASSWORD"],
        serde_json::json!({"from_env": "DB_PASSWORD", "secret": true})
    );
    let fleet = Fleet::start(2);
    fleet.inventory(
        "  env:\n    DB_PASSWORD: { from_env: DB_PASSWORD, secret: true }\n",
        "",
    );
    fleet.edit_inventory(|t| {
        t.replace(
            "build: [\"sh build.sh\"]",
            "build: [\"sh build.sh\", \"printf %s \\\"$DB_PASSWORD\\\" > db.txt\"]",
        )
    });
    // The job's workspace: the build it made.
    let work = fleet.dir().join("workspace");
    fs::create_dir_all(&work).expect("workspace");
    run_ok(
        Command::new("tar")
            .args(["-czf"])
            .arg(work.join("build.tar.gz"))
            .arg("-C")
            .arg(Fleet::example_app())
            .arg("."),
    );
    let mut ran = 0;
    for (name, text) in &blocks[1..] {
        let job: serde_json::Value =
            serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{name} is not YAML: {e}"));
        let mut lines = Vec::new();
        ship_lines(&job, &mut lines);
        assert!(!lines.is_empty(), "{name} runs ship");
        for line in lines {
            let words = shlex::split(&line).unwrap_or_else(|| panic!("{name}: {line}"));
            let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
            let run = fleet.ship_in(&work, &args, &[("DB_PASSWORD", "Zq9-db")], CI_VARS);
            assert_eq!(run.code, 0, "{name}: `{line}`\n{}", run.all());
            assert!(
                !run.all().contains("Zq9"),
                "{name}: the secret shows\n{}",
                run.all()
            );
            for h in &fleet.hosts {
                assert_eq!(
                    fs::read_to_string(h.path("current/db.txt")).expect("db.txt"),
                    "Zq9-db",
                    "{name} on {}",
                    h.name
                );
                assert!(!h.locked(), "{name}: {}", h.name);
            }
            ran += 1;
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
    }
    assert_eq!(ran, 2, "one ship command per job");
}
