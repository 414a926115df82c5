//! Test fleet: real OpenSSH servers, one per host, each on its own loopback address and in its
//! own mount namespace (so every host has its own `/var/www` at the same path, as real servers
//! do). Needs root, `unshare` and `/usr/sbin/sshd`; `.ci/run` installs them.
//!
//! Host state is read from the controller side through each host's directory: ship makes every
//! link relative, so `current` resolves the same from outside.

#![allow(dead_code)]

pub mod php;
pub mod scenario;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const DEPLOY_TO: &str = "/var/www/app";
static NEXT_FLEET: AtomicU32 = AtomicU32::new(0);

/// One test host.
pub struct TestHost {
    pub name: String,
    pub address: String,
    /// What the host sees as `/var/www`.
    pub www: PathBuf,
    pub host_key_pub: String,
    /// Commands placed here shadow the system's on this host only (it is mounted over
    /// `/usr/local/sbin`, first in sshd's PATH): fault injection at an exact moment.
    pub faults: PathBuf,
    sshd: Option<Child>,
    mnt_ns: Option<String>,
    /// The mount namespace held open: while it is, its number cannot go to another test's host
    /// (a namespace's number is reused as soon as it is freed, and processes are found by it).
    mnt_ns_pin: Option<fs::File>,
    /// How this host's sshd is started (for a restart after a crash).
    start: String,
    log: PathBuf,
    /// A tmpfs mounted over the deploy directory (disk-full tests).
    tmpfs: Option<PathBuf>,
    cut: bool,
}

impl TestHost {
    /// A path inside the host's deploy directory, seen from the controller.
    pub fn path(&self, rel: &str) -> PathBuf {
        let base = self.www.join("app");
        if rel.is_empty() { base } else { base.join(rel) }
    }

    /// Where `current` points (`releases/<id>`), if it exists.
    pub fn current(&self) -> Option<String> {
        fs::read_link(self.path("current"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    /// The release id `current` points to.
    pub fn current_id(&self) -> Option<String> {
        self.current()
            .and_then(|c| c.strip_prefix("releases/").map(str::to_owned))
    }

    /// Names in `releases/`, sorted.
    pub fn releases(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.path("releases"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Names in `releases/`, sorted, without the releases a failed deploy kept prepared (each
    /// checked to be whole: marked and with its `REVISION`).
    pub fn releases_but_prepared(&self) -> Vec<String> {
        self.releases()
            .into_iter()
            .filter(|r| {
                let marked = self.path(&format!(".ship/prepared/{r}")).is_file();
                if marked {
                    assert!(
                        self.path(&format!("releases/{r}/REVISION")).is_file(),
                        "{}: prepared release {r} is not whole",
                        self.name
                    );
                }
                !marked
            })
            .collect()
    }

    pub fn locked(&self) -> bool {
        self.path(".ship/lock").exists()
    }

    /// The host is as it was before a run that changed nothing here: on `live` and no other
    /// release (or, with `may_keep_prepared`, also one a failed deploy kept whole and marked
    /// prepared), no lock, `shared/` byte-identical to `snap`. The one host-state check of the
    /// suite for "nothing changed".
    pub fn assert_as_before(
        &self,
        live: &str,
        snap: &BTreeMap<String, String>,
        may_keep_prepared: bool,
    ) {
        assert_eq!(
            self.current_id().as_deref(),
            Some(live),
            "{}: current",
            self.name
        );
        let releases = if may_keep_prepared {
            self.releases_but_prepared()
        } else {
            self.releases()
        };
        assert_eq!(releases, vec![live.to_owned()], "{}: releases", self.name);
        assert!(!self.locked(), "{}: no lock left", self.name);
        assert_eq!(
            &self.shared_snapshot(),
            snap,
            "{}: shared/ intact",
            self.name
        );
    }

    /// Every file, directory and link under `shared/` with its content or target: compare two
    /// snapshots to prove shared/ is byte-identical.
    pub fn shared_snapshot(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        snapshot(&self.path("shared"), "", &mut out);
        out
    }

    /// Journal lines (`.ship/history`) as JSON values.
    pub fn journal(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.path(".ship/history"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("journal line is JSON"))
            .collect()
    }

    /// The pid of this host's sshd listener, if it runs.
    pub fn sshd_pid(&self) -> Option<u32> {
        self.sshd.as_ref().map(|c| c.id())
    }

    /// Every process of this host (its sshd and all sessions), found by mount namespace.
    pub fn pids(&self) -> Vec<i32> {
        self.pids_in(&processes())
    }

    /// This host's processes among `all` (from [`processes`]).
    fn pids_in(&self, all: &[(i32, String)]) -> Vec<i32> {
        let Some(ns) = &self.mnt_ns else {
            return Vec::new();
        };
        all.iter()
            .filter(|(_, n)| n == ns)
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// How many of this host's processes run a command line starting with `prefix`.
    pub fn running(&self, prefix: &str) -> usize {
        self.pids()
            .into_iter()
            .filter(|p| {
                fs::read(format!("/proc/{p}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                    .is_ok_and(|c| c.starts_with(prefix))
            })
            .count()
    }

    fn signal_all(&self, sig: libc::c_int) {
        for pid in self.pids() {
            // SAFETY: sends a signal; no memory is involved.
            unsafe { libc::kill(pid, sig) };
        }
    }

    /// The host crashes: every process of it dies at once (all are stopped first, so none
    /// starts another while the others are being killed).
    pub fn kill(&mut self) {
        self.signal_all(libc::SIGSTOP);
        self.signal_all(libc::SIGKILL);
        if let Some(mut c) = self.sshd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The host hangs: every process stops answering (packets are still accepted by the kernel).
    pub fn freeze(&self) {
        self.signal_all(libc::SIGSTOP);
    }

    pub fn thaw(&self) {
        self.signal_all(libc::SIGCONT);
    }

    /// Start the host again (after a crash: its processes are reaped first).
    pub fn restart(&mut self) {
        self.kill();
        self.sshd = Some(spawn_sshd(&self.start, &self.log));
        wait_listening(self);
    }

    fn firewall(&self, op: &str) {
        for dir in ["-d", "-s"] {
            run_ok(Command::new("iptables").args([
                "-w",
                op,
                "INPUT",
                dir,
                &self.address,
                "-j",
                "DROP",
            ]));
        }
    }

    /// The network to this host is cut: every packet to or from it is dropped.
    pub fn cut(&mut self) {
        if !self.cut {
            self.firewall("-I");
            self.cut = true;
        }
    }

    /// The iptables commands that cut this host off, for a fault script on the host itself.
    pub fn cut_commands(&self) -> String {
        format!(
            "iptables -w -I INPUT -d {a} -j DROP; iptables -w -I INPUT -s {a} -j DROP",
            a = self.address
        )
    }

    /// The network comes back.
    pub fn reconnect(&mut self) {
        // Rules may also have been added by a fault script on the host: remove all of them.
        for dir in ["-d", "-s"] {
            while Command::new("iptables")
                .args(["-w", "-D", "INPUT", dir, &self.address, "-j", "DROP"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
            {}
        }
        self.cut = false;
    }

    /// Put an executable `name` with `body` (a sh script) first in this host's PATH.
    pub fn fault(&self, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.faults.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("fault script");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// Make this host's switch rename through its `mv` (so an `mv` fault applies to it): where
    /// perl is installed, the armed switch renames in perl; this host's `perl` then loads a
    /// module that routes the rename of `current` through `mv -f <staged> .`, at the same
    /// moment.
    pub fn switch_through_mv(&self) {
        fs::write(
            self.faults.join("ShipRenameViaMv.pm"),
            "package ShipRenameViaMv;\n\
             BEGIN { *CORE::GLOBAL::rename = sub { my ($from, $to) = @_; \
             return system('mv', '-f', $from, '.') == 0 if $to eq 'current'; \
             return CORE::rename($from, $to); }; }\n1;\n",
        )
        .expect("perl module");
        let perl = ["/usr/bin/perl", "/bin/perl"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("/usr/bin/perl");
        self.fault(
            "perl",
            &format!("PERL5OPT='-I/usr/local/sbin -MShipRenameViaMv' exec {perl} \"$@\""),
        );
    }

    /// A fault script line that crashes the whole host: every process in its mount namespace
    /// is killed at once, the calling one included. The host's processes are listed, stopped
    /// together, listed again (in case one started another meanwhile), then killed together:
    /// killing them one by one while walking /proc let the rest run on (after pids wrap, the
    /// host's sshd comes last), long enough to answer. The calling shell kills itself last.
    pub const CRASH: &'static str = "me=$(readlink /proc/self/ns/mnt); \
        ours() { l=; for p in /proc/[0-9]*; do p=${p#/proc/}; [ \"$p\" = \"$$\" ] && continue; \
        [ \"$(readlink /proc/$p/ns/mnt 2>/dev/null)\" = \"$me\" ] && l=\"$l $p\"; done; }; \
        ours; kill -STOP $l 2>/dev/null; ours; kill -9 $l 2>/dev/null; kill -9 $$";

    /// Run `script` on the host as its own shell would (inside its mount namespace): to apply a
    /// remedy ship printed.
    pub fn run_on_host(&self, script: &str) -> std::process::Output {
        let pid = self.sshd.as_ref().map(|c| c.id()).expect("host is running");
        Command::new("nsenter")
            .arg(format!("--mount=/proc/{pid}/ns/mnt"))
            .args(["sh", "-c", script])
            .output()
            .expect("nsenter")
    }
}

fn snapshot(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        let p = e.path();
        let meta = fs::symlink_metadata(&p).expect("metadata");
        if meta.file_type().is_symlink() {
            out.insert(
                name,
                format!("-> {}", fs::read_link(&p).expect("link").display()),
            );
        } else if meta.is_dir() {
            out.insert(name.clone(), "<dir>".into());
            snapshot(&p, &format!("{name}/"), out);
        } else {
            out.insert(
                name,
                String::from_utf8_lossy(&fs::read(&p).expect("read")).into_owned(),
            );
        }
    }
}

/// What a `ship` run produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// The longest a ship run may take in a test before it counts as stalled.
pub const SHIP_RUN_LIMIT: Duration = Duration::from_secs(300);

/// N real sshd hosts and the controller-side files that go with them.
pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub hosts: Vec<TestHost>,
    pub client_key: PathBuf,
    pub known_hosts: PathBuf,
}

/// A benchmark's `--name value` option from its arguments, or `default`.
pub fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

pub fn run_ok(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn require_tools() {
    for tool in ["/usr/sbin/sshd", "/usr/bin/ssh-keygen", "/usr/bin/unshare"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: the end-to-end tests need real OpenSSH servers \
             (apt-get install openssh-server openssh-client util-linux; see .ci/run)"
        );
    }
    let _ = fs::create_dir_all("/run/sshd");
    let _ = fs::create_dir_all("/usr/local/sbin");
    let _ = fs::create_dir_all("/var/www");
}

/// Make an unencrypted ed25519 key pair at `path` and `path.pub`.
pub fn keygen(path: &Path) {
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "ship-test", "-f"])
            .arg(path),
    );
}

/// Hosts log in as this machine's root with its own home (`/root`, its rc files) instead of one
/// of their own: for the benchmark's `--user root`, which measures a heavy shell start-up.
pub static MACHINE_ROOT_HOME: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

impl Fleet {
    /// Start `n` hosts named `web-1` … `web-n`.
    pub fn start(n: usize) -> Fleet {
        Self::start_with(n, None)
    }

    /// Start `n` hosts; `small_disk: Some((i, "512k"))` gives host `i` a deploy directory on a
    /// tmpfs of that size.
    pub fn start_with(n: usize, small_disk: Option<(usize, &str)>) -> Fleet {
        require_tools();
        let dir = tempfile::Builder::new()
            .prefix("ship-fleet-")
            .tempdir()
            .expect("tempdir");
        own_disk_area(dir.path());
        let client_key = dir.path().join("client_key");
        keygen(&client_key);
        let authorized = dir.path().join("authorized_keys");
        fs::copy(client_key.with_extension("pub"), &authorized).expect("authorized_keys");
        // sshd reads the keys file as the user logging in: let non-root test users read it.
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).expect("chmod");
            fs::set_permissions(&authorized, fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        // Loopback /24s of our own: pid and a per-process counter keep parallel tests apart.
        // 199 hosts to a /24 (`.200` is the git server's); a bigger fleet takes the next ones.
        let pid = std::process::id();
        let k = NEXT_FLEET.fetch_add(1, Ordering::SeqCst);
        let second = 100 + (pid % 150);
        let third = ((pid / 150) * 7 + k * 31) % 250 + 1;
        let host_address = |i: usize| {
            let block = (third as usize - 1 + i / 199) % 250 + 1;
            format!("127.{second}.{block}.{}", i % 199 + 1)
        };
        let mut fleet = Fleet {
            known_hosts: dir.path().join("known_hosts"),
            client_key,
            hosts: Vec::new(),
            dir,
        };
        let mut known = String::new();
        for i in 0..n {
            let name = format!("web-{}", i + 1);
            let hdir = fleet.dir.path().join(&name);
            let www = hdir.join("www");
            fs::create_dir_all(&www).expect("www");
            let key = hdir.join("host_key");
            keygen(&key);
            let host_key_pub = fs::read_to_string(key.with_extension("pub")).expect("pub");
            let address = host_address(i);
            let config = write_sshd_config(&hdir, &address, &key, &authorized);
            let faults = hdir.join("faults");
            fs::create_dir_all(&faults).expect("faults");
            let tmpfs = small_disk.filter(|(h, _)| *h == i).map(|(_, size)| {
                let app = www.join("app");
                fs::create_dir_all(&app).expect("app");
                run_ok(
                    Command::new("mount")
                        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                        .arg(&app),
                );
                app
            });
            // Each host has a home of its own for root, as servers do: not this machine's,
            // whose shell start-up (rc files, shared lock files) would be shared by all hosts
            // and by every host a test crashes half-way through it.
            let home = if MACHINE_ROOT_HOME.load(Ordering::SeqCst) {
                String::new()
            } else {
                let home = hdir.join("root");
                fs::create_dir_all(&home).expect("home");
                format!("mount --bind {} /root && ", home.display())
            };
            let start = format!(
                "mount --rbind {} /var/www && mount --bind {} /usr/local/sbin && {home}\
                 exec /usr/sbin/sshd -D -e -f {}",
                www.display(),
                faults.display(),
                config.display()
            );
            let log = hdir.join("sshd.log");
            let child = spawn_sshd(&start, &log);
            let key_fields: Vec<&str> = host_key_pub.split_whitespace().take(2).collect();
            known.push_str(&format!("{address} {}\n", key_fields.join(" ")));
            fleet.hosts.push(TestHost {
                name,
                address,
                www,
                host_key_pub: key_fields.join(" "),
                faults,
                sshd: Some(child),
                mnt_ns: None,
                mnt_ns_pin: None,
                start,
                log,
                tmpfs,
                cut: false,
            });
        }
        fs::write(&fleet.known_hosts, known).expect("known_hosts");
        for h in &mut fleet.hosts {
            wait_listening(h);
        }
        fleet
    }

    pub fn host(&self, i: usize) -> &TestHost {
        &self.hosts[i]
    }

    /// The example app shipped in the repository.
    pub fn example_app() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/app")
    }

    /// Write an inventory for this fleet: stage `production` with every host, the example app
    /// as the artifact. `defaults_extra` and `stage_extra` are YAML lines added to `defaults:`
    /// and to the stage (indented by the caller's two spaces).
    pub fn inventory(&self, defaults_extra: &str, stage_extra: &str) -> PathBuf {
        // The machine's own ~/.ssh/config must not change what a test does.
        let ssh_config = if defaults_extra.contains("ssh_config:") {
            ""
        } else {
            "  ssh_config: false\n"
        };
        let mut hosts = String::new();
        for h in &self.hosts {
            hosts.push_str(&format!("      {}: {{ address: {} }}\n", h.name, h.address));
        }
        let text = format!(
            "defaults:\n  user: root\n  identity_file: {key}\n  known_hosts: {kh}\n  \
             deploy_to: {DEPLOY_TO}\n  keep_releases: 3\n  connect_timeout: 5s\n  \
             switch_timeout: 5s\n  step_timeout: 2m\n  keepalive_interval: 1s\n  \
             source: {{ artifact: {app} }}\n  shared: {{ files: [.env], dirs: [storage] }}\n  \
             build: [\"sh build.sh\"]\n{ssh_config}{defaults_extra}\
             stages:\n  production:\n{stage_extra}    hosts:\n{hosts}",
            key = self.client_key.display(),
            kh = self.known_hosts.display(),
            app = Self::example_app().display(),
        );
        let path = self.dir.path().join("inventory.yaml");
        fs::write(&path, text).expect("inventory");
        path
    }

    /// Replace the inventory's source (the example app artifact) with `source`, a YAML flow
    /// mapping such as `{ git: /path, ref: main }`.
    pub fn set_source(&self, source: &str) {
        let path = self.dir.path().join("inventory.yaml");
        let text = fs::read_to_string(&path).expect("inventory written by Fleet::inventory");
        let line = format!("source: {{ artifact: {} }}", Self::example_app().display());
        assert!(text.contains(&line), "the inventory has the default source");
        fs::write(&path, text.replace(&line, &format!("source: {source}"))).expect("write");
    }

    /// Deploy once, then give every host's `shared/` content an operator cares about (a
    /// different `.env` and upload on each): the live release's id.
    pub fn deploy_first(&self) -> String {
        let first = self.deploy();
        assert_eq!(first.code, 0, "the first deploy: {}", first.all());
        for (i, h) in self.hosts.iter().enumerate() {
            fs::write(h.path("shared/.env"), format!("APP_KEY=secret-{i}\n")).expect("env");
            fs::write(h.path("shared/storage/upload.bin"), [i as u8; 64]).expect("upload");
        }
        self.host(0).current_id().expect("current")
    }

    /// Every host is on `current` with exactly `releases`, holds no lock, and has its
    /// `shared/` files and directories.
    pub fn assert_on(&self, current: &str, releases: &[&str]) {
        for h in &self.hosts {
            assert_eq!(
                h.current_id().as_deref(),
                Some(current),
                "{}: current",
                h.name
            );
            assert_eq!(h.releases(), releases, "{}: releases", h.name);
            assert!(!h.locked(), "{}: lock", h.name);
            assert!(
                h.path("shared/.env").is_file() && h.path("shared/storage").is_dir(),
                "{}: shared",
                h.name
            );
        }
    }

    /// No host has a release, a `current` or a lock: a run that stopped before changing any.
    pub fn assert_untouched(&self) {
        for h in &self.hosts {
            assert!(
                h.releases().is_empty() && h.current().is_none() && !h.locked(),
                "{}",
                h.name
            );
        }
    }

    /// Every host is on `release`, has no other release, and holds no lock.
    pub fn assert_all_on(&self, release: &str) {
        for h in &self.hosts {
            assert_eq!(
                h.current_id().as_deref(),
                Some(release),
                "{}: current",
                h.name
            );
            assert_eq!(
                h.releases(),
                vec![release.to_owned()],
                "{}: releases",
                h.name
            );
            assert!(!h.locked(), "{}: lock", h.name);
        }
    }

    /// Run the ship binary with `args`, in the fleet's directory.
    pub fn ship(&self, args: &[&str]) -> Run {
        self.spawn_ship(args).finish()
    }

    /// Start the ship binary with `args` and return at once.
    pub fn spawn_ship(&self, args: &[&str]) -> Running {
        self.spawn_ship_env(args, &[])
    }

    /// Start the ship binary with extra environment variables (e.g. `SSH_AUTH_SOCK`).
    pub fn spawn_ship_env(&self, args: &[&str], env: &[(&str, &Path)]) -> Running {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ship"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("HOME", self.clean_home())
            .env_remove("SSH_AUTH_SOCK")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        Running {
            child: c.spawn().expect("start ship"),
        }
    }

    /// `ship deploy production` with the fleet's inventory.
    pub fn deploy(&self) -> Run {
        self.ship(&["deploy", "production"])
    }

    /// How many SSH connections each host accepted so far (from its sshd log).
    /// OpenSSH's client, logged in as `user` to host `i` with the fleet's key and known hosts
    /// (strict), no prompts; the caller adds the command.
    pub fn openssh(&self, user: &str, i: usize) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-i")
            .arg(&self.client_key)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
            .arg(format!("{user}@{}", self.hosts[i].address));
        cmd
    }

    /// How many processes each host has now (one walk of /proc for the whole fleet).
    pub fn process_counts(&self) -> Vec<usize> {
        let all = processes();
        self.hosts.iter().map(|h| h.pids_in(&all).len()).collect()
    }

    pub fn connections(&self, i: usize) -> usize {
        self.log_count(i, "Accepted publickey")
    }

    /// How many times `user` logged in to host `i` so far.
    pub fn logins(&self, i: usize, user: &str) -> usize {
        self.log_count(i, &format!("Accepted publickey for {user} "))
    }

    /// How many channels that run a command (a session, an upload…) host `i` opened so far.
    pub fn command_channels(&self, i: usize) -> usize {
        self.log_count(i, "Starting session: command")
    }

    fn log_count(&self, i: usize, what: &str) -> usize {
        fs::read_to_string(self.dir.path().join(&self.hosts[i].name).join("sshd.log"))
            .unwrap_or_default()
            .matches(what)
            .count()
    }
}

fn wait_listening(h: &mut TestHost) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr: std::net::SocketAddr = format!("{}:22", h.address).parse().expect("addr");
    loop {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            break;
        }
        if let Some(c) = &mut h.sshd {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("sshd for {} exited at start: {status}", h.name);
            }
        }
        assert!(
            Instant::now() < deadline,
            "sshd for {} did not start listening",
            h.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = h.sshd.as_ref().map(|c| c.id()).expect("pid");
    h.mnt_ns_pin = fs::File::open(format!("/proc/{pid}/ns/mnt")).ok();
    h.mnt_ns = fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
}

/// The sshd_config of a test server in `dir`: key-only logins (root included), the keys in
/// `authorized` for every user, verbose logs (connections are counted from them).
fn write_sshd_config(dir: &Path, address: &str, host_key: &Path, authorized: &Path) -> PathBuf {
    let config = dir.join("sshd_config");
    fs::write(
        &config,
        format!(
            "ListenAddress {address}\nPort 22\nHostKey {}\nAuthorizedKeysFile {}\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n\
             PidFile {}\nMaxStartups 1000\nMaxSessions 100\nLogLevel VERBOSE\n",
            host_key.display(),
            authorized.display(),
            dir.join("sshd.pid").display()
        ),
    )
    .expect("sshd_config");
    config
}

fn spawn_sshd(start: &str, log: &Path) -> Child {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log");
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", start])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start sshd")
}

/// Run git in `dir` with a fixed identity (local `file` transport allowed, for submodules in
/// test repositories); fail the test on error. Returns stdout, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "protocol.file.allow=always"])
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Wait until `cond` holds, or fail the test saying `what` did not happen.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `ship` run in the background, for faults injected while it runs.
pub struct Running {
    pub child: Child,
}

impl TestHost {
    /// Give this host (only: its own mount namespace) local users, as `(name, uid)`, each with
    /// its own group, home `/var/www`, shell `/bin/sh`; and `sudoers` as its /etc/sudoers.d.
    /// The machine's /etc is not changed.
    pub fn add_users(&self, users: &[(&str, u32)], sudoers: &str) {
        let dir = self.www.parent().expect("host dir").join("etc");
        fs::create_dir_all(dir.join("sudoers.d")).expect("etc");
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
        let (mut passwd, mut group, mut shadow) =
            (read("/etc/passwd"), read("/etc/group"), read("/etc/shadow"));
        for (name, uid) in users {
            passwd.push_str(&format!("{name}:x:{uid}:{uid}::/var/www:/bin/sh\n"));
            group.push_str(&format!("{name}:x:{uid}:\n"));
            shadow.push_str(&format!("{name}:*:19000:0:99999:7:::\n"));
        }
        fs::write(dir.join("passwd"), passwd).expect("passwd");
        fs::write(dir.join("group"), group).expect("group");
        fs::write(dir.join("shadow"), shadow).expect("shadow");
        let rules = dir.join("sudoers.d/ship-test");
        fs::write(&rules, sudoers).expect("sudoers");
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&rules, fs::Permissions::from_mode(0o440)).expect("chmod");
        }
        let d = dir.display();
        let out = self.run_on_host(&format!(
            "mount --bind {d}/passwd /etc/passwd && mount --bind {d}/group /etc/group && \
             mount --bind {d}/shadow /etc/shadow && mount --bind {d}/sudoers.d /etc/sudoers.d"
        ));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A web server on one test host: Python's http.server on the host's own address, in its mount
/// namespace, serving `current/public` of the deploy directory (resolved per request, as a
/// web server's document root is). Stopped when dropped.
pub type HttpServer = Background;

/// An HTTP server on this machine serving the files of `dir` (the hosts reach it at
/// `http://127.0.0.1:<port>/`), where any path starting `/stall` sends its headers and ten
/// bytes, then nothing for ten minutes. The server and its port.
pub fn serve_files(dir: &Path) -> (Background, u16) {
    use std::io::BufRead;
    const SERVER: &str = r#"
import http.server, sys, time
d = sys.argv[1]
class H(http.server.SimpleHTTPRequestHandler):
    def __init__(s, *a, **k):
        super().__init__(*a, directory=d, **k)
    def log_message(s, *a):
        pass
    def do_GET(s):
        if s.path.startswith('/stall'):
            s.send_response(200)
            s.send_header('Content-Length', '1000000')
            s.end_headers()
            s.wfile.write(b'x' * 10)
            s.wfile.flush()
            time.sleep(600)
            return
        return super().do_GET()
srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
srv.daemon_threads = True
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;
    let mut child = Command::new("python3")
        .args(["-c", SERVER])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the server's port");
    let port = line.trim().parse().expect("a port");
    (Background(child), port)
}

/// A process a test started beside the hosts (a web server, a git server, an agent): killed
/// and reaped when dropped.
pub struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl TestHost {
    pub fn serve_http(&self, port: u16) -> HttpServer {
        let pid = self.sshd.as_ref().map(|c| c.id()).expect("host is running");
        let child = Command::new("nsenter")
            .arg(format!("--mount=/proc/{pid}/ns/mnt"))
            .args(["python3", "-m", "http.server", &port.to_string(), "--bind"])
            .arg(&self.address)
            .arg("--directory")
            .arg(format!("{DEPLOY_TO}/current/public"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 http.server");
        let server = Background(child);
        let addr = format!("{}:{port}", self.address);
        wait_until("the web server listens", Duration::from_secs(20), || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
        server
    }
}

impl Fleet {
    /// Rewrite the inventory written by [`Fleet::inventory`].
    /// An edit that changes nothing fails the test: its pattern did not match.
    pub fn edit_inventory(&self, f: impl FnOnce(String) -> String) {
        let path = self.dir.path().join("inventory.yaml");
        let text = fs::read_to_string(&path).expect("inventory written by Fleet::inventory");
        let edited = f(text.clone());
        assert_ne!(edited, text, "the inventory edit matched nothing:\n{text}");
        fs::write(&path, edited).expect("write inventory");
    }

    /// Give one host extra settings in the inventory (a YAML flow mapping's entries).
    pub fn host_settings(&self, i: usize, extra: &str) {
        let h = &self.hosts[i];
        let from = format!("{}: {{ address: {} }}", h.name, h.address);
        let to = format!("{}: {{ address: {}, {extra} }}", h.name, h.address);
        self.edit_inventory(|t| {
            assert!(t.contains(&from), "host line for {}", h.name);
            t.replace(&from, &to)
        });
    }

    /// An empty home for ship in tests: nothing of the machine's `~` (ssh config, git config)
    /// changes what a test does.
    pub fn clean_home(&self) -> PathBuf {
        let home = self.dir.path().join("home");
        fs::create_dir_all(&home).expect("home");
        home
    }

    /// The directory the inventory and ship's working files are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Running {
    pub fn signal(&self, sig: &str) {
        run_ok(Command::new("kill").args([sig, &self.child.id().to_string()]));
    }

    /// Wait for ship to end, at most [`SHIP_RUN_LIMIT`]: a run that stalls fails the test with
    /// what it printed so far, rather than hanging the suite.
    pub fn finish(mut self) -> Run {
        use std::io::Read;
        let take = |r: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut buf);
                }
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let out = take(
            self.child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let err = take(
            self.child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let deadline = Instant::now() + SHIP_RUN_LIMIT;
        let status = loop {
            match self.child.try_wait().expect("wait for ship") {
                Some(s) => break Some(s),
                None if Instant::now() >= deadline => break None,
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let Some(status) = status else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "ship did not end within {SHIP_RUN_LIMIT:?}; it printed:\n{}\n{}",
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default()
            );
        };
        Run {
            code: status.code().unwrap_or(-1),
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            h.reconnect();
            h.thaw();
            h.kill();
            if let Some(t) = &h.tmpfs {
                let _ = Command::new("umount").arg("-l").arg(t).status();
            }
        }
    }
}

/// A git server for a fleet: its own sshd on the fleet's network (address `.200`), serving bare
/// repositories kept in the fleet's directory, accepting only the keys given. Stopped when
/// dropped.
pub struct GitServer {
    pub address: String,
    /// Where the bare repositories are (`<dir>/app.git`, `<dir>/lib.git`).
    pub dir: PathBuf,
    /// The server's host key as a known_hosts line.
    pub known_hosts_line: String,
    _sshd: Background,
}

impl GitServer {
    /// `ssh://` URL of a repository on this server.
    pub fn url(&self, repo: &str) -> String {
        format!("ssh://root@{}{}/{repo}", self.address, self.dir.display())
    }
}

/// An ssh-agent of the test's own, holding the given keys. Stopped when dropped.
pub struct Agent {
    pub socket: PathBuf,
    _process: Background,
}

impl Fleet {
    /// Start a git server that accepts only `authorized` (public key files).
    pub fn git_server(&self, authorized: &[&Path]) -> GitServer {
        let base = self.dir.path().join("git-server");
        let dir = base.join("repos");
        fs::create_dir_all(&dir).expect("git dir");
        let key = base.join("host_key");
        keygen(&key);
        let mut keys = String::new();
        for k in authorized {
            keys.push_str(&fs::read_to_string(k).expect("public key"));
        }
        let auth = base.join("authorized_keys");
        fs::write(&auth, keys).expect("authorized_keys");
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&auth, fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        let net = self.hosts[0]
            .address
            .rsplit_once('.')
            .map(|(n, _)| n.to_owned())
            .expect("address");
        let address = format!("{net}.200");
        let config = write_sshd_config(&base, &address, &key, &auth);
        let sshd = spawn_sshd(
            &format!("exec /usr/sbin/sshd -D -e -f {}", config.display()),
            &base.join("sshd.log"),
        );
        let pubkey = fs::read_to_string(key.with_extension("pub")).expect("pub");
        let fields: Vec<&str> = pubkey.split_whitespace().take(2).collect();
        let server = GitServer {
            known_hosts_line: format!("{address} {}", fields.join(" ")),
            address: address.clone(),
            dir,
            _sshd: Background(sshd),
        };
        wait_until("the git server listens", Duration::from_secs(10), || {
            std::net::TcpStream::connect(format!("{address}:22")).is_ok()
        });
        server
    }

    /// Wait (at most `limit`) until every host is back to its processes when idle (`idle`, from
    /// [`Fleet::process_counts`] on a quiet fleet): the sessions of the last run have ended.
    pub fn wait_idle(&self, idle: &[usize], limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline
            && self
                .process_counts()
                .iter()
                .zip(idle)
                .any(|(now, idle)| now > idle)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A copy of the example app at `name` in the fleet's directory (outside the hosts'
    /// /var/www, on the same filesystem: the hosts can read it).
    pub fn copy_example_app(&self, name: &str) -> PathBuf {
        let to = self.dir().join(name);
        let _ = fs::remove_dir_all(&to);
        run_ok(
            Command::new("cp")
                .arg("-a")
                .arg(Self::example_app())
                .arg(&to),
        );
        to
    }

    /// A git repository of the example app (one commit on `main`) the hosts can reach.
    pub fn example_repository(&self) -> PathBuf {
        let work = self.copy_example_app("app-src");
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["add", "."]);
        git(&work, &["commit", "-q", "-m", "first"]);
        work
    }

    /// A deploy key (`deploy_key`, `deploy_key.pub` in the fleet's directory) and a git server
    /// that accepts only it, whose host key is in the fleet's `git_known_hosts`; the inventory
    /// written with `forward_agent: true` and that `git_known_hosts`. The repositories are the
    /// caller's to make.
    pub fn forwarding_to_git_server(&self) -> (GitServer, PathBuf) {
        let key = self.dir().join("deploy_key");
        keygen(&key);
        let server = self.git_server(&[&key.with_extension("pub")]);
        let kh = self.dir().join("git_known_hosts");
        fs::write(&kh, format!("{}\n", server.known_hosts_line)).expect("known hosts");
        self.inventory(
            &format!(
                "  forward_agent: true\n  git_known_hosts: {}\n",
                kh.display()
            ),
            "",
        );
        (server, key)
    }

    /// Start an ssh-agent holding `keys` (private key files).
    pub fn agent(&self, keys: &[&Path]) -> Agent {
        let socket = self.dir.path().join("agent.sock");
        let child = Command::new("ssh-agent")
            .args(["-D", "-a"])
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent");
        wait_until("the agent listens", Duration::from_secs(10), || {
            socket.exists()
        });
        let agent = Agent {
            socket,
            _process: Background(child),
        };
        for k in keys {
            run_ok(
                Command::new("ssh-add")
                    .arg("-q")
                    .arg(k)
                    .env("SSH_AUTH_SOCK", &agent.socket),
            );
        }
        agent
    }

    /// Run ship with extra environment variables (e.g. `SSH_AUTH_SOCK`).
    pub fn ship_env(&self, args: &[&str], env: &[(&str, &Path)]) -> Run {
        self.spawn_ship_env(args, env).finish()
    }

    /// Run ship in `dir` with the fleet's inventory (`-i`), the variables of `env` set and those
    /// named in `unset` removed (a CI job's environment, say).
    pub fn ship_in(&self, dir: &Path, args: &[&str], env: &[(&str, &str)], unset: &[&str]) -> Run {
        let inventory = self.dir.path().join("inventory.yaml");
        let mut c = Command::new(env!("CARGO_BIN_EXE_ship"));
        c.args(args)
            .arg("-i")
            .arg(&inventory)
            .current_dir(dir)
            .env("HOME", self.clean_home())
            .env_remove("SSH_AUTH_SOCK")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for k in unset {
            c.env_remove(k);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        Running {
            child: c.spawn().expect("start ship"),
        }
        .finish()
    }
}

/// Ask ext4 to treat `dir` as the top of a directory tree (the `T` attribute, `chattr +T`):
/// each host directory made in it then gets a block group of its own, as each server has a disk
/// of its own, instead of all hosts sharing the group of the temporary directory. Where that group
/// is busy (ext4 without a journal checks every recently deleted inode of the group before it
/// reuses one, and /tmp sees every test run's deletions), a file created there costs about half a
/// millisecond instead of a few microseconds. Other filesystems refuse the request, which is fine.
fn own_disk_area(dir: &Path) {
    use std::os::fd::AsRawFd;
    const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
    const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
    const FS_TOPDIR_FL: libc::c_int = 0x0002_0000;
    let Ok(f) = fs::File::open(dir) else {
        return;
    };
    let mut flags: libc::c_int = 0;
    // SAFETY: both requests read or write the flags as one int (whatever their number says).
    unsafe {
        if libc::ioctl(f.as_raw_fd(), FS_IOC_GETFLAGS, &mut flags) == 0 {
            flags |= FS_TOPDIR_FL;
            libc::ioctl(f.as_raw_fd(), FS_IOC_SETFLAGS, &flags);
        }
    }
}

/// Every process on this machine with its mount namespace, read once from /proc.
fn processes() -> Vec<(i32, String)> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<i32>().ok()?;
            let ns = fs::read_link(e.path().join("ns/mnt")).ok()?;
            Some((pid, ns.to_string_lossy().into_owned()))
        })
        .collect()
}
