//! The host inventory: YAML in, validated and fully resolved per-host settings out.
//!
//! Settings are layered: `defaults`, then the stage, then the host; a later layer overrides an
//! earlier one key by key (`env` merges variable by variable). Every value is validated where it
//! is written, so an error points at the line that needs fixing.

// Inventory errors carry file, position, key path, message, hint and the source line: large, but
// built only on the failure path, once per run. Boxing them would buy nothing measurable.
#![allow(clippy::result_large_err)]

mod error;
pub mod interpolate;
mod node;
mod parse;
pub mod show;
pub mod ssh_config;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{InventoryError, edit_distance, nearest};
pub use parse::{
    HEALTH_KEYS, HOOK_KEYS, HOST_KEYS, LAYER_KEYS, RECIPES, STAGE_KEYS, STEP_KEYS, TOP_KEYS,
    WRITABLE_KEYS, check_unreachable, check_waves, parse_canary, parse_duration, parse_inventory,
    parse_inventory_with, parse_wave, parse_waves,
};

/// The inventory's JSON Schema (draft 2020-12), for editors: `ship schema` prints it. A test
/// keeps its keys equal to the parser's.
pub const SCHEMA: &str = include_str!("../../docs/inventory.schema.json");

/// A parsed inventory file.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub file: PathBuf,
    pub stages: Vec<Stage>,
}

impl Inventory {
    /// Read and validate an inventory file.
    pub fn load(path: &Path) -> Result<Self, InventoryError> {
        let text = std::fs::read_to_string(path).map_err(|e| InventoryError {
            file: path.to_path_buf(),
            pos: Default::default(),
            key_path: String::new(),
            message: format!("cannot read the inventory: {e}"),
            hint: Some(
                "pass another file with -i/--inventory or SHIP_INVENTORY, or create one from \
                 inventory.example.yaml"
                    .into(),
            ),
            source_line: None,
        })?;
        parse_inventory(path, &text)
    }

    /// The stage with this name, or an error that lists the stages that exist.
    pub fn stage(&self, name: &str) -> Result<&Stage, InventoryError> {
        self.stages.iter().find(|s| s.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
            let hint = match nearest(name, &names) {
                Some(n) => format!("did you mean `{n}`? stages here: {}", names.join(", ")),
                None if names.is_empty() => "this inventory defines no stages".into(),
                None => format!("stages here: {}", names.join(", ")),
            };
            InventoryError {
                file: self.file.clone(),
                pos: Default::default(),
                key_path: "stages".into(),
                message: format!("no stage named `{name}`"),
                hint: Some(hint),
                source_line: None,
            }
        })
    }
}

/// How many SSH handshakes a run keeps in flight at once unless `connect_concurrency:` says
/// otherwise: under OpenSSH's default `MaxStartups 10:30:100`, sshd starts refusing some
/// unauthenticated connections past 10, and all past 100; ship retries those it drops.
pub const DEFAULT_CONNECT_CONCURRENCY: usize = 32;

/// A named group of hosts deployed together (production, staging…).
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    pub hosts: Vec<Host>,
    /// Switch these first, verify them, hold, then switch the rest (`canary:`).
    pub canary: Option<Canary>,
    /// Switch in these waves, each verified and held before the next (`waves:`).
    pub waves: Option<Vec<WaveSize>>,
    /// How many hosts (or what share) may be unreachable at connect and be left out
    /// (`max_unreachable:`).
    pub max_unreachable: Option<WaveSize>,
    /// How many SSH handshakes a run keeps in flight at once (`connect_concurrency:`).
    pub connect_concurrency: usize,
    /// How long the canary is watched before the rest of the fleet switches (`observe:`).
    pub observe: Duration,
    /// Commands run on the controller around a deploy (`hooks:`).
    pub hooks: Hooks,
    /// Hosts of the stage left out of this run by `--hosts` / `--roles`.
    pub excluded: Vec<String>,
    /// The values of this stage (and of `defaults`) that took text from the controller's
    /// environment (`${VAR}`): each key path with the variables it read.
    pub from_environment: Vec<(String, Vec<String>)>,
}

/// One wave of a rollout: how many hosts, or what share of the fleet, have switched once it is
/// done (cumulative: `[1, "10%", "100%"]` is one host, then up to a tenth, then the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaveSize {
    Count(usize),
    Percent(u32),
}

/// Which hosts of a stage switch first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Canary {
    /// The first N hosts by name.
    Count(usize),
    /// These hosts.
    Hosts(Vec<String>),
}

/// Commands run on the controller with `sh -c`, in the inventory's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    /// Before any host is contacted; a failure stops the deploy.
    pub before_deploy: Vec<String>,
    /// After a deploy that switched the whole fleet.
    pub after_deploy: Vec<String>,
    /// After a deploy that did not (aborted, rolled back, needs attention).
    pub on_failure: Vec<String>,
}

/// The longest a `from_command` may run.
pub const SECRET_COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

impl Stage {
    /// Run every `from_command` of this stage's hosts (each distinct command once, on the
    /// controller) and put what it printed in its variables. A command that fails, times out or
    /// prints nothing is an error naming the variable and where it is written — never what it
    /// printed.
    pub fn run_secret_commands(&mut self) -> Result<(), crate::error::Error> {
        let mut done: BTreeMap<(String, PathBuf), String> = BTreeMap::new();
        for host in &mut self.hosts {
            for var in &mut host.config.env {
                let Some(c) = &var.from_command else { continue };
                let key = (c.command.clone(), c.dir.clone());
                if let Some(v) = done.get(&key) {
                    var.value = v.clone();
                    continue;
                }
                let value = run_secret_command(c).map_err(|why| {
                    crate::error::Error::usage(format!(
                        "{}: the `from_command` of {} {why}",
                        c.at, var.name
                    ))
                    .note("nothing was changed on any host")
                    .hint(
                        "run the command yourself to see why (its output is not shown here: it \
                         is a secret)",
                    )
                })?;
                done.insert(key, value.clone());
                var.value = value;
            }
        }
        Ok(())
    }
}

/// Run one secret command: its stdout, trimmed, or why not.
fn run_secret_command(c: &SecretCommand) -> Result<String, String> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&c.command)
        .current_dir(&c.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("could not start: {e}"))?;
    let mut stdout = child.stdout.take();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut out);
        }
        let _ = tx.send(out);
    });
    let deadline = std::time::Instant::now() + SECRET_COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "did not finish within {}",
                    crate::util::human_duration(SECRET_COMMAND_TIMEOUT)
                ));
            }
            Err(e) => return Err(format!("could not be waited for: {e}")),
        }
    };
    // A process it left behind may hold its stdout open: wait for the end of it no longer
    // than the time left.
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    let out = rx
        .recv_timeout(left.max(Duration::from_secs(1)))
        .map_err(|_| "left a process behind that keeps its output open".to_owned())?;
    if !status.success() {
        return Err(match status.code() {
            Some(code) => format!("failed (exit status {code})"),
            None => "was killed".to_owned(),
        });
    }
    let text =
        String::from_utf8(out).map_err(|_| "printed something that is not UTF-8".to_owned())?;
    let value = text.trim();
    if value.is_empty() {
        return Err("printed nothing".to_owned());
    }
    Ok(value.to_owned())
}

impl Stage {
    /// This stage limited to the named hosts and/or the hosts with any of the roles (both given:
    /// a host must match both). The others are listed in `excluded`. An unknown host name, or
    /// a selection that leaves no host, is an error that says what exists.
    pub fn select(&self, names: &[String], roles: &[String]) -> Result<Stage, crate::error::Error> {
        if names.is_empty() && roles.is_empty() {
            return Ok(self.clone());
        }
        let known: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
        if let Some(n) = names.iter().find(|n| !known.contains(&n.as_str())) {
            let hint = match nearest(n, &known) {
                Some(m) => format!("did you mean `{m}`? hosts here: {}", known.join(", ")),
                None => format!("hosts here: {}", known.join(", ")),
            };
            return Err(crate::error::Error::usage(format!(
                "--hosts: `{n}` is not a host of stage `{}`",
                self.name
            ))
            .hint(hint));
        }
        let (picked, left): (Vec<Host>, Vec<Host>) = self.hosts.iter().cloned().partition(|h| {
            (names.is_empty() || names.contains(&h.name))
                && (roles.is_empty() || h.config.roles.iter().any(|r| roles.contains(r)))
        });
        if picked.is_empty() {
            let mut all: Vec<&str> = self
                .hosts
                .iter()
                .flat_map(|h| h.config.roles.iter().map(String::as_str))
                .collect();
            all.sort();
            all.dedup();
            return Err(crate::error::Error::usage(format!(
                "no host of stage `{}` matches --hosts/--roles",
                self.name
            ))
            .hint(format!(
                "roles here: {}",
                if all.is_empty() {
                    "none (set `roles:` on hosts)".to_owned()
                } else {
                    all.join(", ")
                }
            )));
        }
        let mut stage = self.clone();
        stage.excluded = left.into_iter().map(|h| h.name).collect();
        stage.hosts = picked;
        Ok(stage)
    }

    /// The index of the host that runs `run_once` steps: the first with role `primary`, else
    /// the first host.
    pub fn primary(&self) -> usize {
        self.hosts
            .iter()
            .position(|h| h.config.roles.iter().any(|r| r == "primary"))
            .unwrap_or(0)
    }

    /// The indices of the canary hosts (`count` first by name, or the named ones); empty
    /// without a canary or when it would be the whole fleet.
    /// The hosts of each wave but the last (which is every host left), by name order: each
    /// wave switches the hosts that take the fleet to its size. Waves that add no host are
    /// dropped; a single wave is the whole fleet at once (none returned).
    pub fn wave_hosts(&self, sizes: &[WaveSize]) -> Vec<Vec<usize>> {
        let n = self.hosts.len();
        let mut by_name: Vec<usize> = (0..n).collect();
        by_name.sort_by(|a, b| self.hosts[*a].name.cmp(&self.hosts[*b].name));
        let mut waves = Vec::new();
        let mut done = 0;
        for s in sizes {
            let target = match *s {
                WaveSize::Count(c) => c,
                WaveSize::Percent(p) => (n * p as usize).div_ceil(100).max(1),
            }
            .min(n);
            if target <= done {
                continue;
            }
            if target == n {
                break;
            }
            waves.push(by_name[done..target].to_vec());
            done = target;
        }
        waves
    }

    pub fn canary_hosts(&self, canary: Option<&Canary>) -> Vec<usize> {
        let mut idx: Vec<usize> = match canary {
            None => Vec::new(),
            Some(Canary::Count(n)) => {
                let mut by_name: Vec<usize> = (0..self.hosts.len()).collect();
                by_name.sort_by(|a, b| self.hosts[*a].name.cmp(&self.hosts[*b].name));
                by_name.into_iter().take(*n).collect()
            }
            Some(Canary::Hosts(names)) => self
                .hosts
                .iter()
                .enumerate()
                .filter(|(_, h)| names.contains(&h.name))
                .map(|(i, _)| i)
                .collect(),
        };
        idx.sort();
        if idx.len() >= self.hosts.len() {
            idx.clear();
        }
        idx
    }

    /// The source every host of this stage deploys (validated to be the same for all of them).
    pub fn source(&self) -> Option<&Source> {
        self.hosts.first().map(|h| &h.config.source)
    }
}

/// One server, with its settings resolved from defaults, stage and host.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    /// Hostname or IP to connect to (for `connection: local`, informational only).
    pub address: String,
    pub config: HostConfig,
}

/// How ship reaches a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// One SSH connection per host (the normal case).
    Ssh,
    /// Run commands on the controller itself with `sh -c` (deploying to this machine).
    Local,
}

/// What to do with a host key that is not in known_hosts yet. A key that differs from the
/// recorded one is always refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyChecking {
    /// Unknown hosts are refused.
    Strict,
    /// Unknown hosts are trusted on first use and recorded in known_hosts.
    AcceptNew,
}

/// Where a release's code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local directory or tarball (`.tar.gz`, `.tgz`, `.tar`), packed once and pushed.
    Artifact { path: PathBuf },
    /// A git repository; `reference` is resolved to one commit on the controller.
    /// `known_hosts`: the git server's host keys (`git_known_hosts`), checked on the controller
    /// and on every host; without it, each machine's own known_hosts.
    Git {
        url: String,
        reference: String,
        known_hosts: Option<PathBuf>,
        /// At most this many hosts fetch from the git server at once (`parallel:`).
        parallel: Option<usize>,
    },
    /// A tarball each host downloads itself (curl, else wget) from `url` — an object store, a
    /// CDN, a release asset — and checks against `sha256` (lowercase hex) before unpacking.
    /// The controller sends only the URL and the digest.
    Url { url: String, sha256: String },
}

/// Paths kept in `shared/` across releases and linked into each one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shared {
    pub files: Vec<String>,
    pub dirs: Vec<String>,
}

/// One environment variable given to build steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
    /// Secret values are masked in every output ship prints.
    pub secret: bool,
    /// `from_command:` — run once on the controller before a run that sends the variable to
    /// the hosts (see [`Stage::run_secret_commands`]); its stdout, trimmed, becomes `value`.
    pub from_command: Option<SecretCommand>,
}

/// A command that prints a secret (`op read …`, `vault kv get …`), and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretCommand {
    pub command: String,
    /// `file:line:col: key.path`, for its errors.
    pub at: String,
    /// The directory it runs in (the inventory's).
    pub dir: PathBuf,
}

/// A dotenv file of secrets on the controller (`env_file:`), read when the inventory is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFile {
    pub path: PathBuf,
    pub vars: BTreeMap<String, EnvVar>,
}

/// What to do when an after-switch step or the health check fails on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Switch the whole fleet back to the release it had before.
    #[default]
    Rollback,
    /// Report the failure and keep the new release.
    Warn,
}

/// How a host proves that the new release serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// An HTTP(S) URL fetched on the host itself (curl, else wget), expecting a status and
    /// optionally a substring of the body.
    Http {
        url: String,
        expect_status: u16,
        expect_body: Option<String>,
    },
    /// A command run in the new release directory; exit 0 means healthy.
    Command(String),
}

/// The health check run on every host after it switched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// None: only `on_failure` is set (it also governs `after_switch` steps).
    pub probe: Option<Probe>,
    /// Attempts before the host counts as unhealthy.
    pub retries: u32,
    /// Pause between attempts.
    pub interval: Duration,
    /// Limit for one attempt.
    pub timeout: Duration,
    pub on_failure: OnFailure,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            probe: None,
            retries: 3,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            on_failure: OnFailure::Rollback,
        }
    }
}

/// A jump host (bastion) ship connects through: `[user@]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyJump {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// The key to log in to this jump host with, from its own ssh config entry (none: the
    /// host's own key).
    pub identity_file: Option<PathBuf>,
}

/// At most this many jump hosts in a chain.
pub const MAX_JUMPS: usize = 8;

impl ProxyJump {
    /// Parse a chain of jump hosts as ssh's ProxyJump writes it, `hop[,hop…]`: the first is
    /// reached directly, each next one through the one before it, and the host through the last.
    pub fn parse_chain(text: &str) -> Result<Vec<ProxyJump>, String> {
        let hops: Vec<&str> = text.split(',').map(str::trim).collect();
        if hops.iter().any(|h| h.is_empty()) {
            return Err(format!(
                "`{}` has an empty jump host (write `[user@]host[:port]`, several separated by \
                 commas)",
                text.trim()
            ));
        }
        if hops.len() > MAX_JUMPS {
            return Err(format!(
                "`{}` names {} jump hosts; ship goes through at most {MAX_JUMPS}",
                text.trim(),
                hops.len()
            ));
        }
        hops.into_iter().map(ProxyJump::parse).collect()
    }

    /// A chain as ssh's ProxyJump writes it.
    pub fn chain_text(chain: &[ProxyJump]) -> String {
        chain
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Parse one hop, `[user@]host[:port]`.
    pub fn parse(text: &str) -> Result<ProxyJump, String> {
        let t = text.trim();
        if t.contains(',') {
            return Err(format!("`{t}` names several jump hosts where one belongs"));
        }
        let t = t.strip_prefix("ssh://").unwrap_or(t);
        let (user, rest) = match t.rsplit_once('@') {
            Some((u, r)) => (Some(u.to_owned()), r),
            None => (None, t),
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("`{p}` in `{t}` is not a port"))?;
                (
                    h.trim_matches(|c| c == '[' || c == ']').to_owned(),
                    Some(port),
                )
            }
            _ => (rest.to_owned(), None),
        };
        // `ssh -G` writes addresses in brackets: `jump@[10.0.0.1]`.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() || host.starts_with('-') || host.contains(char::is_whitespace) {
            return Err(format!(
                "`{t}` is not a jump host (write `[user@]host[:port]`)"
            ));
        }
        if user
            .as_deref()
            .is_some_and(|u| u.is_empty() || u.starts_with('-'))
        {
            return Err(format!("`{t}` has an invalid user"));
        }
        Ok(ProxyJump {
            user,
            host,
            port,
            identity_file: None,
        })
    }
}

impl std::fmt::Display for ProxyJump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            write!(f, "{}", self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// Where OpenSSH client settings for the hosts come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SshConfig {
    /// `~/.ssh/config` (and the system file), as `ssh` reads them.
    #[default]
    Default,
    /// This file instead.
    File(PathBuf),
    /// Not read.
    Off,
}

/// Which connection settings the inventory itself set (they win over the ssh config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Explicit {
    pub user: bool,
    pub port: bool,
    pub identity_file: bool,
    pub proxy_jump: bool,
}

/// How `writable` paths are made writable for the web server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WritableMode {
    /// `chmod` with this mode (symbolic or octal), on the deploy user's own files.
    Chmod(String),
    /// POSIX ACLs (`setfacl`) giving this user (the web server's) and the deploy user rwX, with
    /// default ACLs on directories so new files inherit them.
    Acl(String),
}

/// Paths the web server must be able to write (`writable:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writable {
    pub paths: Vec<String>,
    pub mode: WritableMode,
}

/// A command in `build`, `run_once` or `after_switch`: a string, or a mapping
/// `{ run: …, sudo: true, roles: [worker] }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSpec {
    pub run: String,
    /// Run as root through `sudo -n` (never prompts).
    pub sudo: bool,
    /// Only on hosts with one of these roles (empty: every host). Hosts are resolved with the
    /// steps that apply to them.
    pub roles: Vec<String>,
    /// At most this many hosts run it at once (`parallel:`); none: every host together.
    pub parallel: Option<usize>,
}

impl StepSpec {
    pub fn plain(run: &str) -> Self {
        StepSpec {
            run: run.to_owned(),
            sudo: false,
            roles: Vec::new(),
            parallel: None,
        }
    }
}

impl PartialEq<&str> for StepSpec {
    fn eq(&self, other: &&str) -> bool {
        !self.sudo && self.roles.is_empty() && self.run == *other
    }
}

/// How long ship waits on the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect + SSH handshake + authentication.
    pub connect: Duration,
    /// One remote step (a build command, the upload, the cleanup).
    pub step: Duration,
    /// The switch on every host, including compensation.
    pub switch: Duration,
    /// SSH keepalive interval: a host that misses three in a row is considered gone.
    pub keepalive: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            step: Duration::from_secs(30 * 60),
            switch: Duration::from_secs(10),
            keepalive: Duration::from_secs(5),
        }
    }
}

/// Every setting of one host, resolved.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub connection: Connection,
    pub user: String,
    pub port: u16,
    /// Explicit key; when absent, the default keys in `~/.ssh` are tried.
    pub identity_file: Option<PathBuf>,
    pub known_hosts: PathBuf,
    pub host_key_checking: HostKeyChecking,
    /// Connect through this jump host.
    /// Jump hosts, in the order they are reached (none: connect directly).
    pub proxy_jump: Option<Vec<ProxyJump>>,
    /// Where ssh client settings come from (`ssh_config`).
    pub ssh_config: SshConfig,
    /// What the inventory set itself, so the ssh config only fills the rest.
    pub explicit: Explicit,
    /// The name the inventory gave as `address`, when the ssh config resolved it to another
    /// `HostName` (an alias).
    pub alias: Option<String>,
    /// Absolute path on the host.
    pub deploy_to: String,
    pub keep_releases: usize,
    pub source: Source,
    pub shared: Shared,
    /// Paths copied from the current release into the new one before the build steps.
    pub copy_from_previous: Vec<String>,
    pub build: Vec<StepSpec>,
    /// Paths made writable for the web server after the build steps.
    pub writable: Option<Writable>,
    /// Forward the controller's ssh-agent to the git steps (fetch, checkout) on the host.
    pub forward_agent: bool,
    /// Run on one host (role `primary`, else the first) after every host prepared, before any
    /// host switches: database migrations.
    pub run_once: Vec<StepSpec>,
    /// Run on every host right after it switched (in the new release directory).
    pub after_switch: Vec<StepSpec>,
    pub health_check: HealthCheck,
    /// Labels for the host (`primary` picks the host for `run_once`).
    pub roles: Vec<String>,
    /// The recipe the defaults came from (`laravel`), if any.
    pub recipe: Option<String>,
    pub env: Vec<EnvVar>,
    /// The dotenv file its secrets were read from (`env_file`), if any.
    pub env_file: Option<PathBuf>,
    pub timeouts: Timeouts,
}

impl HostConfig {
    /// Values that must never appear in output.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.env
            .iter()
            .filter(|v| v.secret && !v.value.is_empty())
            .map(|v| v.value.as_str())
    }
}

#[cfg(test)]
mod tests;
