//! The host inventory: YAML in, validated and fully resolved per-host settings out.
//!
//! Settings are layered: `defaults`, then the stage, then the host; a later layer overrides an
//! earlier one key by key (`env` merges variable by variable). Every value is validated where it
//! is written, so an error points at the line that needs fixing.

// Inventory errors carry file, position, key path, message, hint and the source line: large, but
// built only on the failure path, once per run. Boxing them would buy nothing measurable.
#![allow(clippy::result_large_err)]

mod error;
mod node;
mod parse;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{InventoryError, edit_distance, nearest};
pub use parse::{HOST_KEYS, LAYER_KEYS, STAGE_KEYS, TOP_KEYS, parse_duration, parse_inventory};

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

/// A named group of hosts deployed together (production, staging…).
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    pub hosts: Vec<Host>,
}

impl Stage {
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
    Git { url: String, reference: String },
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
    /// Absolute path on the host.
    pub deploy_to: String,
    pub keep_releases: usize,
    pub source: Source,
    pub shared: Shared,
    pub build: Vec<String>,
    pub env: Vec<EnvVar>,
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
