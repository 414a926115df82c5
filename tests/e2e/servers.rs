//! Real servers: a non-root deploy user, `sudo` steps, `writable` paths that another user (the
//! web server) writes into between deploys, and steps limited to roles.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::support::{DEPLOY_TO, Fleet};

const DEPLOY_UID: u32 = 2101;
const WWW_UID: u32 = 2102;

/// Every host gets a `deploy` user that owns the deploy directory and a `www` user (the web
/// server); the inventory logs in as `deploy`.
fn non_root_fleet(n: usize, sudoers: &str, defaults_extra: &str) -> Fleet {
    let fleet = Fleet::start(n);
    fleet.inventory(defaults_extra, "");
    fleet.edit_inventory(|t| t.replace("  user: root\n", "  user: deploy\n"));
    for h in &fleet.hosts {
        h.add_users(&[("deploy", DEPLOY_UID), ("www", WWW_UID)], sudoers);
        let app = h.path("");
        fs::create_dir_all(&app).expect("deploy dir");
        std::os::unix::fs::chown(&app, Some(DEPLOY_UID), Some(DEPLOY_UID)).expect("chown");
    }
    fleet
}

#[test]
fn a_non_root_deploy_user_with_sudo_steps_and_writable_paths_another_user_writes_into() {
    let fleet = non_root_fleet(
        2,
        "deploy ALL=(root) NOPASSWD: /usr/bin/id\n",
        "  writable: { paths: [storage, bootstrap/cache] }\n  \
         after_switch:\n    - { run: \"id -u > $SHIP_RELEASE_PATH/root-step\", sudo: true }\n    \
         - \"id -u > $SHIP_RELEASE_PATH/user-step\"\n",
    );
    let run = fleet.deploy();
    assert_eq!(run.code, 0, "{}", run.all());
    let a = fleet.host(0).current_id().expect("current");
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(a.as_str()), "{}", h.name);
        let rel = h.path(&format!("releases/{a}"));
        // Everything ship made belongs to the deploy user; the sudo step ran as root.
        assert_eq!(
            fs::metadata(&rel).expect("rel").uid(),
            DEPLOY_UID,
            "{}",
            h.name
        );
        assert_eq!(
            fs::read_to_string(rel.join("root-step"))
                .expect("sudo")
                .trim(),
            "0"
        );
        assert_eq!(
            fs::read_to_string(rel.join("user-step"))
                .expect("user")
                .trim(),
            DEPLOY_UID.to_string()
        );
        // Writable: the shared storage dir (through its link) and a release path.
        let storage = h.path("shared/storage");
        assert_eq!(
            fs::metadata(&storage)
                .expect("storage")
                .permissions()
                .mode()
                & 0o777,
            0o777,
            "{}",
            h.name
        );
        let cache = rel.join("bootstrap/cache");
        assert_eq!(
            fs::metadata(&cache).expect("cache").permissions().mode() & 0o777,
            0o777
        );
    }
    // The web server writes into storage as its own user, as a live app does.
    for h in &fleet.hosts {
        let out = h.run_on_host(&format!(
            "su -s /bin/sh www -c 'mkdir -p {DEPLOY_TO}/shared/storage/logs && \
             echo line > {DEPLOY_TO}/shared/storage/logs/app.log && chmod 644 \
             {DEPLOY_TO}/shared/storage/logs/app.log && chmod 755 {DEPLOY_TO}/shared/storage/logs'"
        ));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The second deploy must not fail on files it does not own, and must leave them alone.
    let run = fleet.deploy();
    assert_eq!(run.code, 0, "{}", run.all());
    let b = fleet.host(0).current_id().expect("current");
    assert_ne!(a, b);
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(b.as_str()));
        let log = h.path("shared/storage/logs/app.log");
        let meta = fs::metadata(&log).expect("log");
        assert_eq!(
            (meta.uid(), meta.permissions().mode() & 0o777),
            (WWW_UID, 0o644)
        );
        assert_eq!(fs::read_to_string(&log).expect("log"), "line\n");
        assert!(!h.locked());
    }
}

#[test]
fn a_sudo_step_that_would_ask_for_a_password_fails_clearly_before_any_switch() {
    let fleet = non_root_fleet(
        2,
        "deploy ALL=(root) ALL\n",
        "  run_once: [{ run: \"systemctl reload php-fpm\", sudo: true }]\n",
    );
    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    let text = run.all();
    assert!(
        text.contains("sudo asked for a password; ship runs sudo non-interactively"),
        "{text}"
    );
    assert!(text.contains("NOPASSWD"), "{text}");
    assert!(text.contains("aborted: no host was switched"), "{text}");
    for h in &fleet.hosts {
        assert_eq!(h.current(), None, "{}", h.name);
        assert!(h.releases().is_empty(), "{}", h.name);
        assert!(!h.locked(), "{}", h.name);
    }
}

#[test]
fn steps_limited_to_roles_run_only_on_those_hosts() {
    let fleet = Fleet::start(3);
    fleet.inventory(
        "  after_switch:\n    - \"touch $SHIP_RELEASE_PATH/every-host\"\n    \
         - { run: \"touch $SHIP_RELEASE_PATH/worker-only\", roles: [worker] }\n",
        "",
    );
    fleet.host_settings(2, "roles: [worker]");
    let run = fleet.deploy();
    assert_eq!(run.code, 0, "{}", run.all());
    for (i, h) in fleet.hosts.iter().enumerate() {
        assert!(h.path("current/every-host").is_file(), "{}", h.name);
        assert_eq!(
            h.path("current/worker-only").is_file(),
            i == 2,
            "{}: worker-only step",
            h.name
        );
    }
}

/// `lib.git` and `app.git` (with `lib` as a submodule at `vendor/lib`, relative URL, as on
/// GitHub) on the git server; `app` has an annotated tag `v1.0` and a later commit on `main`.
/// Returns the commit `v1.0` points at.
fn make_repositories(server: &crate::support::GitServer) -> String {
    use crate::support::git;
    let d = &server.dir;
    let lib = d.join("lib-work");
    fs::create_dir_all(&lib).expect("mkdir");
    git(&lib, &["init", "-q", "-b", "main"]);
    fs::write(lib.join("lib.php"), "<?php // lib\n").expect("write");
    git(&lib, &["add", "-A"]);
    git(&lib, &["commit", "-q", "-m", "lib"]);
    git(d, &["clone", "-q", "--bare", "lib-work", "lib.git"]);
    let app = d.join("app-work");
    fs::create_dir_all(app.join("public")).expect("mkdir");
    git(&app, &["init", "-q", "-b", "main"]);
    fs::write(app.join("public/index.html"), "v1\n").expect("write");
    git(
        &app,
        &["submodule", "add", "-q", "../lib.git", "vendor/lib"],
    );
    git(&app, &["add", "-A"]);
    git(&app, &["commit", "-q", "-m", "v1"]);
    git(&app, &["tag", "-a", "v1.0", "-m", "release 1.0"]);
    let tagged = git(&app, &["rev-parse", "v1.0^{commit}"]);
    fs::write(app.join("public/index.html"), "v2\n").expect("write");
    git(&app, &["commit", "-q", "-am", "v2"]);
    git(d, &["clone", "-q", "--bare", "app-work", "app.git"]);
    tagged
}

#[test]
fn a_private_repository_through_the_forwarded_agent_with_submodules_and_an_annotated_tag() {
    let fleet = Fleet::start(2);
    let (server, key) = fleet.forwarding_to_git_server();
    let tagged = make_repositories(&server);
    // First a full commit id (the controller then needs no access itself).
    fleet.set_source(&format!(
        "{{ git: \"{}\", ref: {tagged} }}",
        server.url("app.git")
    ));
    fleet.edit_inventory(|t| t.replace("build: [\"sh build.sh\"]", "build: []"));

    // No agent on the controller: said at once, nothing touched.
    let run = fleet.ship_env(&["deploy", "production"], &[]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all().contains(
            "forward_agent is set, but no ssh-agent runs here (SSH_AUTH_SOCK is not set)"
        ),
        "{}",
        run.all()
    );
    for h in &fleet.hosts {
        assert!(h.releases().is_empty() && !h.locked(), "{}", h.name);
    }
    // Then the annotated tag, resolved on the controller through the same agent.
    fleet.edit_inventory(|t| t.replace(&format!("ref: {tagged}"), "ref: v1.0"));

    // With the key in the controller's agent: every host fetches through it.
    let agent = fleet.agent(&[&key]);
    let run = fleet.ship_env(
        &["deploy", "production"],
        &[("SSH_AUTH_SOCK", agent.socket.as_path())],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    let id = fleet.host(0).current_id().expect("current");
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(id.as_str()), "{}", h.name);
        assert_eq!(
            fs::read_to_string(h.path("current/REVISION"))
                .expect("REVISION")
                .trim(),
            tagged,
            "{}: the annotated tag's commit, in full",
            h.name
        );
        assert_eq!(
            fs::read_to_string(h.path("current/public/index.html")).expect("index"),
            "v1\n"
        );
        assert_eq!(
            fs::read_to_string(h.path("current/vendor/lib/lib.php")).expect("submodule"),
            "<?php // lib\n"
        );
        assert!(!h.path("current/.git").exists() && !h.path("current/vendor/lib/.git").exists());
        // The git server's key was written for the hosts' git to check against.
        assert_eq!(
            fs::read_to_string(h.path(".ship/git_known_hosts"))
                .expect("kh")
                .trim(),
            server.known_hosts_line
        );
    }
    // Without forwarding, the hosts have no key the server accepts: refused before any
    // switch, with git's message and what to do.
    fleet.edit_inventory(|t| t.replace("forward_agent: true", "forward_agent: false"));
    let run = fleet.ship_env(
        &["deploy", "production"],
        &[("SSH_AUTH_SOCK", agent.socket.as_path())],
    );
    assert_eq!(run.code, 1, "{}", run.all());
    let text = run.all();
    // The first host to fail stops the other's fetch: either may be the one named.
    assert!(text.contains("] FAILED at prepare (fetch)"), "{text}");
    assert!(text.contains("Permission denied (publickey"), "{text}");
    assert!(text.contains("set `forward_agent: true`"), "{text}");
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(id.as_str()));
        assert_eq!(h.releases(), vec![id.clone()]);
        assert!(!h.locked());
    }
}

#[test]
fn a_deploy_key_on_the_host_and_a_wrong_git_host_key_refused() {
    let fleet = non_root_fleet(1, "", "");
    let key = fleet.dir().join("host_deploy_key");
    crate::support::keygen(&key);
    let server = fleet.git_server(&[&key.with_extension("pub")]);
    let tagged = make_repositories(&server);
    // The deploy user's own key on the host (its home is /var/www).
    let h = fleet.host(0);
    let ssh_dir = h.www.join(".ssh");
    fs::create_dir_all(&ssh_dir).expect(".ssh");
    fs::copy(&key, ssh_dir.join("id_ed25519")).expect("key");
    for p in [ssh_dir.clone(), ssh_dir.join("id_ed25519")] {
        std::os::unix::fs::chown(&p, Some(DEPLOY_UID), Some(DEPLOY_UID)).expect("chown");
    }
    fs::set_permissions(
        ssh_dir.join("id_ed25519"),
        fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    let kh = fleet.dir().join("git_known_hosts");
    fs::write(&kh, format!("{}\n", server.known_hosts_line)).expect("known hosts");
    fleet.edit_inventory(|t| {
        t.replace(
            "  keep_releases: 3\n",
            &format!("  keep_releases: 3\n  git_known_hosts: {}\n", kh.display()),
        )
    });
    // A full commit id: the controller itself needs no access to the repository.
    fleet.set_source(&format!(
        "{{ git: \"{}\", ref: {tagged} }}",
        server.url("app.git")
    ));
    fleet.edit_inventory(|t| t.replace("build: [\"sh build.sh\"]", "build: []"));
    let run = fleet.deploy();
    assert_eq!(run.code, 0, "{}", run.all());
    let id = h.current_id().expect("current");
    assert_eq!(
        fs::read_to_string(h.path("current/REVISION"))
            .expect("REVISION")
            .trim(),
        tagged
    );
    assert!(h.path("current/vendor/lib/lib.php").is_file());

    // The recorded key is not the server's: refused, never silently accepted.
    let other = fleet.dir().join("other_host_key");
    crate::support::keygen(&other);
    let other_pub = fs::read_to_string(other.with_extension("pub")).expect("pub");
    let fields: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    fs::write(&kh, format!("{} {}\n", server.address, fields.join(" "))).expect("kh");
    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    let text = run.all();
    assert!(text.contains("FAILED at prepare (fetch)"), "{text}");
    assert!(
        text.contains("the git server's host key is not the one recorded"),
        "{text}"
    );
    assert_eq!(h.current_id().as_deref(), Some(id.as_str()));
    assert_eq!(h.releases(), vec![id]);
    assert!(!h.locked());
}

#[test]
fn per_host_settings_reach_the_steps_and_a_hand_made_current_directory_stops_everything() {
    let fleet = Fleet::start(2);
    fleet.inventory("  env:\n    SITE: one\n", "");
    fleet.host_settings(1, "deploy_to: /var/www/site2, env: { SITE: two }");
    fleet.edit_inventory(|t| {
        t.replace(
            "build: [\"sh build.sh\"]",
            "build: [\"sh build.sh\", \"echo $SITE:$SHIP_DEPLOY_TO > site.txt\"]",
        )
    });
    let run = fleet.deploy();
    assert_eq!(run.code, 0, "{}", run.all());
    let (w1, w2) = (fleet.host(0), fleet.host(1));
    assert_eq!(
        fs::read_to_string(w1.path("current/site.txt")).expect("web-1"),
        format!("one:{DEPLOY_TO}\n")
    );
    let site2 = w2.www.join("site2");
    assert_eq!(
        fs::read_to_string(site2.join("current/site.txt")).expect("web-2"),
        "two:/var/www/site2\n"
    );
    assert!(
        !w2.path("").exists(),
        "web-2 has nothing under the default deploy_to"
    );
    let a = w1.current_id().expect("current");

    // Someone replaced web-1's `current` with a real directory: nothing is touched anywhere.
    fs::remove_file(w1.path("current")).expect("rm link");
    fs::create_dir_all(w1.path("current")).expect("mkdir");
    fs::write(w1.path("current/by-hand.txt"), "mine").expect("write");
    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all()
            .contains("current exists but is not a symlink (a directory set up by hand?); ship will not touch it"),
        "{}",
        run.all()
    );
    assert_eq!(
        fs::read_to_string(w1.path("current/by-hand.txt")).expect("kept"),
        "mine"
    );
    assert_eq!(w1.releases(), vec![a.clone()]);
    let link = fs::read_link(site2.join("current")).expect("web-2 current");
    assert_eq!(link, std::path::Path::new(&format!("releases/{a}")));
    let mut rel2: Vec<String> = fs::read_dir(site2.join("releases"))
        .expect("releases")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    rel2.sort();
    assert_eq!(rel2, vec![a]);
    assert!(!w1.locked() && !site2.join(".ship/lock").exists());
}

const JUMP_UID: u32 = 2103;

/// An iptables rule for the length of a test.
struct Rule(Vec<String>);

impl Rule {
    fn add(args: &[&str]) -> Rule {
        let spec: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let ok = std::process::Command::new("iptables")
            .arg("-I")
            .args(&spec)
            .status()
            .expect("iptables");
        assert!(ok.success(), "iptables -I {spec:?}");
        Rule(spec)
    }
}

impl Drop for Rule {
    fn drop(&mut self) {
        let _ = std::process::Command::new("iptables")
            .arg("-D")
            .args(&self.0)
            .status();
    }
}

/// The inventory reads `ssh_config` and names web-2 only by the alias `app-2` (user, key and
/// jump host come from the ssh config); web-1 keeps its address, user and key.
fn web_2_by_alias(fleet: &Fleet, ssh_config: &std::path::Path) {
    let key = fleet.dir().join("client_key");
    let id_line = format!("  identity_file: {}\n", key.display());
    fleet.edit_inventory(|t| {
        // This test's inventory reads an ssh config: the harness's `ssh_config: false` goes.
        t.replace("  user: root\n", "")
            .replace("  ssh_config: false\n", "")
            .replace(
                &id_line,
                &format!("  ssh_config: {}\n", ssh_config.display()),
            )
    });
    fleet.host_settings(0, &format!("user: root, identity_file: {}", key.display()));
    let target = fleet.host(1);
    fleet.edit_inventory(|t| {
        t.replace(
            &format!("web-2: {{ address: {} }}", target.address),
            "web-2: { address: app-2 }",
        )
    });
}

#[test]
fn an_ssh_config_alias_reaches_a_host_only_through_a_bastion() {
    let fleet = Fleet::start(2);
    fleet.inventory("", "");
    let (bastion, target) = (fleet.host(0), fleet.host(1));
    bastion.add_users(&[("jump", JUMP_UID)], "");
    // web-2's sshd takes connections only from the bastion's forwarding (it runs as `jump`).
    let _only_via_bastion = reachable_only_from(target, JUMP_UID);
    let key = fleet.dir().join("client_key");
    // The inventory names web-2 only by an alias; the ssh config says the rest.
    let ssh_config = fleet.dir().join("ssh_config");
    fs::write(
        &ssh_config,
        format!(
            "Host app-2\n  HostName {}\n  User root\n  IdentityFile {}\n  ProxyJump jump@{}\n",
            target.address,
            key.display(),
            bastion.address
        ),
    )
    .expect("ssh config");
    web_2_by_alias(&fleet, &ssh_config);
    let run = fleet.deploy();
    assert_eq!(run.code, 0, "{}", run.all());
    let id = bastion.current_id().expect("current");
    assert_eq!(target.current_id().as_deref(), Some(id.as_str()));
    assert!(!bastion.locked() && !target.locked());
    // ship config shows what the ssh config resolved.
    let cfg = fleet.ship(&["config", "production", "--json"]);
    let v: serde_json::Value = serde_json::from_str(cfg.stdout.trim()).expect("json");
    assert_eq!(v["hosts"][1]["address"], target.address.as_str());
    assert_eq!(v["hosts"][1]["user"], "root");
    assert_eq!(
        v["hosts"][1]["proxy_jump"],
        format!("jump@{}", bastion.address)
    );

    // Without the jump host the target cannot be reached: refused, nothing changed anywhere.
    fs::write(
        &ssh_config,
        format!(
            "Host app-2\n  HostName {}\n  User root\n  IdentityFile {}\n",
            target.address,
            key.display()
        ),
    )
    .expect("ssh config");
    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all().contains("[web-2] FAILED at connect"),
        "{}",
        run.all()
    );
    assert_eq!(bastion.releases(), vec![id.clone()]);
    assert_eq!(target.releases(), vec![id]);
}

/// Connections to `target`'s sshd are refused unless they come from a process of `uid` (a jump
/// host's forwarding runs as the user who logged in there).
fn reachable_only_from(target: &crate::support::TestHost, uid: u32) -> Rule {
    Rule::add(&[
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        &target.address,
        "--dport",
        "22",
        "-m",
        "owner",
        "!",
        "--uid-owner",
        &uid.to_string(),
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ])
}

/// A jump host's own ssh config entry gives it its own key: the bastion's `jump` user accepts only
/// that key, not the one the target takes.
#[test]
fn a_jump_host_logs_in_with_the_key_its_own_ssh_config_entry_names() {
    let mut fleet = Fleet::start(2);
    fleet.inventory("", "");
    let bastion_key = fleet.dir().join("bastion_key");
    crate::support::keygen(&bastion_key);
    let jump_keys = fleet.dir().join("jump_keys");
    fs::copy(bastion_key.with_extension("pub"), &jump_keys).expect("jump_keys");
    fs::set_permissions(&jump_keys, fs::Permissions::from_mode(0o644)).expect("chmod");
    {
        // The users are added into the running host: restart it first.
        let bastion = &mut fleet.hosts[0];
        let config = bastion.www.parent().expect("host dir").join("sshd_config");
        let mut text = fs::read_to_string(&config).expect("sshd_config");
        text.push_str(&format!(
            "Match User jump\n  AuthorizedKeysFile {}\n",
            jump_keys.display()
        ));
        fs::write(&config, text).expect("sshd_config");
        bastion.restart();
        bastion.add_users(&[("jump", JUMP_UID)], "");
    }
    let (bastion, target) = (fleet.host(0), fleet.host(1));
    let _only_via_bastion = reachable_only_from(target, JUMP_UID);
    let key = fleet.dir().join("client_key");
    let ssh_config = fleet.dir().join("ssh_config");
    let write_config = |bastion_entry: &str| {
        fs::write(
            &ssh_config,
            format!(
                "Host app-2\n  HostName {}\n  User root\n  IdentityFile {}\n  ProxyJump gate\n\
                 Host gate\n  HostName {}\n  User jump\n{bastion_entry}",
                target.address,
                key.display(),
                bastion.address
            ),
        )
        .expect("ssh config")
    };
    write_config(&format!("  IdentityFile {}\n", bastion_key.display()));
    web_2_by_alias(&fleet, &ssh_config);
    let cfg = fleet.ship(&["config", "production", "--json"]);
    let v: serde_json::Value = serde_json::from_str(cfg.stdout.trim()).expect("json");
    assert_eq!(
        v["hosts"][1]["proxy_jump"],
        format!("jump@{}", bastion.address)
    );
    let run = fleet.deploy();
    assert_eq!(run.code, 0, "{}", run.all());
    let id = bastion.current_id().expect("current");
    assert_eq!(target.current_id().as_deref(), Some(id.as_str()));

    // Without its own key the bastion refuses the target's: nothing changes anywhere.
    write_config("");
    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all().contains(&format!(
            "[web-2] FAILED at connect: cannot reach the jump host jump@{}",
            bastion.address
        )),
        "{}",
        run.all()
    );
    for h in [bastion, target] {
        assert_eq!(h.releases(), vec![id.clone()], "{}", h.name);
        assert!(!h.locked(), "{}", h.name);
    }
}

#[test]
fn a_host_behind_two_jump_hosts_is_reached_through_both_in_order() {
    const INNER_UID: u32 = 2104;
    let fleet = Fleet::start(3);
    fleet.inventory("", "");
    let (outer, inner, target) = (fleet.host(0), fleet.host(1), fleet.host(2));
    outer.add_users(&[("jump", JUMP_UID)], "");
    inner.add_users(&[("inner", INNER_UID)], "");
    // web-2 only through web-1, web-3 only through web-2.
    let _inner_only_via_outer = reachable_only_from(inner, JUMP_UID);
    let _target_only_via_inner = reachable_only_from(target, INNER_UID);
    fleet.host_settings(1, &format!("proxy_jump: jump@{}", outer.address));
    fleet.host_settings(
        2,
        &format!(
            "proxy_jump: \"jump@{},inner@{}:22\"",
            outer.address, inner.address
        ),
    );
    let run = fleet.deploy();
    assert_eq!(run.code, 0, "{}", run.all());
    let id = outer.current_id().expect("current");
    for h in [inner, target] {
        assert_eq!(h.current_id().as_deref(), Some(id.as_str()), "{}", h.name);
    }
    for h in &fleet.hosts {
        assert!(!h.locked(), "{}", h.name);
    }
    // Each hop is shared: web-1 took its deploy connection and one jump connection for both
    // web-2 and web-3 (web-3's chain starts with the same hop); web-2 its own and one for
    // web-3.
    assert_eq!(
        (0..3).map(|i| fleet.connections(i)).collect::<Vec<_>>(),
        vec![2, 2, 1]
    );
    let cfg = fleet.ship(&["config", "production", "--json"]);
    let v: serde_json::Value = serde_json::from_str(cfg.stdout.trim()).expect("json");
    assert_eq!(
        v["hosts"][2]["proxy_jump"],
        format!("jump@{},inner@{}:22", outer.address, inner.address)
    );

    // In the wrong order the inner jump host cannot be reached first: web-3 fails at connect,
    // saying which jump host it could not reach for which, and nothing changes anywhere.
    fleet.edit_inventory(|t| {
        t.replace(
            &format!("jump@{},inner@{}:22", outer.address, inner.address),
            &format!("inner@{}:22,jump@{}", inner.address, outer.address),
        )
    });
    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    let all = run.all();
    assert!(
        all.contains(&format!(
            "[web-3] FAILED at connect: cannot reach the jump host jump@{}: cannot reach the \
             jump host inner@{}:22: cannot connect to {}:22",
            outer.address, inner.address, inner.address
        )),
        "{all}"
    );
    for h in &fleet.hosts {
        assert_eq!(h.releases(), vec![id.clone()], "{}", h.name);
        assert!(!h.locked(), "{}", h.name);
    }
}

#[test]
fn an_encrypted_key_is_asked_for_on_a_terminal_and_refused_clearly_without_one() {
    let fleet = Fleet::start(1);
    fleet.inventory("", "");
    let key = fleet.dir().join("encrypted_key");
    let ok = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "open sesame", "-C", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(ok.success());
    let mut authorized = fs::read_to_string(fleet.dir().join("authorized_keys")).expect("keys");
    authorized.push_str(&fs::read_to_string(key.with_extension("pub")).expect("pub"));
    fs::write(fleet.dir().join("authorized_keys"), authorized).expect("write");
    let client_key = fleet.dir().join("client_key");
    fleet.edit_inventory(|t| {
        t.replace(
            &format!("identity_file: {}", client_key.display()),
            &format!("identity_file: {}", key.display()),
        )
    });
    // No terminal (CI): a clear failure, nothing changed.
    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all()
            .contains("is encrypted, and there is no terminal to ask for its passphrase"),
        "{}",
        run.all()
    );
    fleet.assert_untouched();

    // On a terminal: asked once, before anything else is drawn; a wrong answer is asked again.
    let mut screen = crate::rollout::Screen::start(&fleet, "deploy production", true);
    let wait_for = |screen: &crate::rollout::Screen, what: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !screen.contents().contains(what) {
            assert!(
                std::time::Instant::now() < deadline,
                "waiting for {what:?}; the screen:\n{}",
                screen.contents()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    // Like a person, the test types once it has read the prompt.
    let pause = || std::thread::sleep(std::time::Duration::from_millis(700));
    wait_for(&screen, &format!("Passphrase for {}:", key.display()));
    pause();
    screen.type_text("not it\n");
    wait_for(&screen, "wrong passphrase, try again");
    pause();
    screen.type_text("open sesame\n");
    let status = screen.child.wait().expect("ship ends");
    let text = screen.contents();
    assert!(status.success(), "{text}");
    assert!(
        !text.contains("open sesame"),
        "the passphrase is not echoed: {text}"
    );
    assert!(fleet.host(0).current_id().is_some());
}

#[test]
fn the_ssh_agent_authenticates_when_no_identity_file_is_set() {
    let fleet = Fleet::start(2);
    fleet.inventory("", "");
    let client_key = fleet.dir().join("client_key");
    fleet
        .edit_inventory(|t| t.replace(&format!("  identity_file: {}\n", client_key.display()), ""));
    let agent = fleet.agent(&[&client_key]);
    let run = fleet.ship_env(
        &["deploy", "production"],
        &[
            ("SSH_AUTH_SOCK", agent.socket.as_path()),
            // No default key files to fall back on.
            ("HOME", fleet.dir()),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    let id = fleet.host(0).current_id().expect("current");
    assert_eq!(fleet.host(1).current_id().as_deref(), Some(id.as_str()));
    // Without the agent (and no key files), the refusal says what to do.
    let run = fleet.ship_env(&["deploy", "production"], &[("HOME", fleet.dir())]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all()
            .contains("no key to offer: set identity_file, or load a key into ssh-agent"),
        "{}",
        run.all()
    );
    // Refused at login: every host as it was, no lock.
    fleet.assert_all_on(&id);
}

/// Eight hosts behind one bastion with OpenSSH's stock `MaxStartups` and `MaxSessions`: one
/// login to the bastion carries them all; losing the bastion mid-deploy fails every host
/// behind it, and nothing switches anywhere.
#[test]
fn hosts_behind_one_bastion_share_one_login_to_it_and_its_loss_fails_them_all() {
    let mut fleet = Fleet::start(9);
    fleet.inventory("", "");
    {
        let bastion = &mut fleet.hosts[0];
        let config = bastion.www.parent().expect("host dir").join("sshd_config");
        let text = fs::read_to_string(&config).expect("sshd_config");
        let stock = text
            .replace("MaxStartups 1000\n", "")
            .replace("MaxSessions 100\n", "");
        assert_ne!(stock, text, "the harness's limits are gone");
        fs::write(&config, stock).expect("sshd_config");
        bastion.restart();
        bastion.add_users(&[("jump", JUMP_UID)], "");
    }
    let bastion = fleet.host(0).address.clone();
    let _only_via_bastion: Vec<Rule> = (1..9)
        .map(|i| {
            fleet.host_settings(i, &format!("proxy_jump: jump@{bastion}"));
            reachable_only_from(fleet.host(i), JUMP_UID)
        })
        .collect();
    let run = fleet.deploy();
    assert_eq!(run.code, 0, "{}", run.all());
    let a = fleet.host(0).current_id().expect("current");
    fleet.assert_all_on(&a);
    assert_eq!(fleet.logins(0, "jump"), 1, "one login for the eight hosts");

    // The bastion is lost while every host builds: the hosts behind it fail, no host switches.
    fleet.edit_inventory(|t| {
        t.replace(
            "build: [\"sh build.sh\"]",
            "build: [\"sh build.sh\", \"touch building; sleep 20\"]",
        )
    });
    let running = fleet.spawn_ship(&["deploy", "production"]);
    crate::support::wait_until(
        "every host inside its build",
        std::time::Duration::from_secs(30),
        || {
            fleet.hosts.iter().all(|h| {
                h.releases()
                    .iter()
                    .any(|r| h.path(&format!("releases/{r}/building")).exists())
            })
        },
    );
    fleet.hosts[0].kill();
    let run = running.finish();
    assert_ne!(run.code, 0, "{}", run.all());
    let all = run.all();
    assert!(all.contains("aborted: no host was switched"), "{all}");
    for h in &fleet.hosts[1..] {
        assert!(
            all.contains(&format!("[{}] FAILED", h.name)),
            "{}: {all}",
            h.name
        );
    }
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(a.as_str()), "{}", h.name);
    }
}

#[test]
fn a_jump_host_that_refuses_tcp_forwarding_fails_its_hosts_at_connect_saying_so() {
    let mut fleet = Fleet::start(3);
    fleet.inventory("", "");
    let run = fleet.deploy();
    assert_eq!(run.code, 0, "{}", run.all());
    let a = fleet.host(0).current_id().expect("current");
    {
        // The bastion's sshd allows logins but no TCP channels (first keyword wins: put first).
        let bastion = &mut fleet.hosts[0];
        let config = bastion.www.parent().expect("host dir").join("sshd_config");
        let text = fs::read_to_string(&config).expect("sshd_config");
        fs::write(&config, format!("AllowTcpForwarding no\n{text}")).expect("sshd_config");
        bastion.restart();
        bastion.add_users(&[("jump", JUMP_UID)], "");
    }
    let bastion = fleet.host(0).address.clone();
    for i in 1..3 {
        fleet.host_settings(i, &format!("proxy_jump: jump@{bastion}"));
    }
    let run = fleet.deploy();
    assert_eq!(run.code, 1, "{}", run.all());
    let all = run.all();
    for h in &fleet.hosts[1..] {
        assert!(
            all.contains(&format!(
                "[{}] FAILED at connect: through the jump host {bastion}: cannot connect to {}:22: \
                 the jump host could not open a connection to it",
                h.name, h.address
            )),
            "{}: {all}",
            h.name
        );
    }
    assert!(all.contains("allows TCP forwarding"), "{all}");
    assert!(all.contains("aborted: no host was switched"), "{all}");
    for h in &fleet.hosts {
        assert_eq!(h.current_id().as_deref(), Some(a.as_str()), "{}", h.name);
        assert_eq!(h.releases(), vec![a.clone()], "{}", h.name);
        assert!(!h.locked(), "{}", h.name);
    }
}
