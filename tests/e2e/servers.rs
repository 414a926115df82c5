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
