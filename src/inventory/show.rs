//! The effective configuration of a stage, as `ship config` prints it: every setting of every
//! host after defaults, stage, host and recipe, under the inventory's own key names, with
//! secret values masked.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::{
    Canary, Connection, HealthCheck, HostKeyChecking, OnFailure, Probe, ProxyJump, Source,
    SshConfig, Stage, StepSpec,
};

/// How a secret value is shown.
pub const MASK: &str = "****";

#[derive(Debug, Serialize)]
pub struct StageConfig {
    pub stage: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waves: Option<Vec<serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unreachable: Option<serde_json::Value>,
    pub connect_concurrency: usize,
    pub observe: String,
    pub hooks: BTreeMap<&'static str, Vec<String>>,
    /// The values that took text from the controller's environment (`${VAR}`): key path →
    /// variables.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub from_environment: BTreeMap<String, Vec<String>>,
    pub hosts: Vec<HostConfigView>,
}

/// One host's settings, in inventory order and spelling.
#[derive(Debug, Serialize)]
pub struct HostConfigView {
    pub host: String,
    pub address: String,
    pub connection: &'static str,
    pub user: String,
    pub port: u16,
    pub identity_file: Option<String>,
    pub known_hosts: String,
    pub host_key_checking: &'static str,
    pub proxy_jump: Option<String>,
    /// `default` (ssh's own files), `false` (not read), or the file read instead.
    pub ssh_config: serde_json::Value,
    pub deploy_to: String,
    pub keep_releases: usize,
    pub source: BTreeMap<&'static str, String>,
    pub shared: BTreeMap<&'static str, Vec<String>>,
    pub copy_from_previous: Vec<String>,
    pub writable: Option<serde_json::Value>,
    pub forward_agent: bool,
    pub git_known_hosts: Option<String>,
    pub build: Vec<serde_json::Value>,
    pub run_once: Vec<serde_json::Value>,
    pub after_switch: Vec<serde_json::Value>,
    pub health_check: Option<BTreeMap<&'static str, serde_json::Value>>,
    pub roles: Vec<String>,
    pub recipe: Option<String>,
    pub env: BTreeMap<String, String>,
    pub env_file: Option<String>,
    pub connect_timeout: String,
    pub step_timeout: String,
    pub switch_timeout: String,
    pub keepalive_interval: String,
}

/// A duration as the inventory writes it: `500ms`, `30s`, `5m`, `1h`.
pub fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    if s != 0 && s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s != 0 && s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// The health check as configured; `None` (shown as `null`) when there is none, so that its
/// defaults (interval, retries…) are not shown as if something were checked.
fn health(h: &HealthCheck) -> Option<BTreeMap<&'static str, serde_json::Value>> {
    let mut m = BTreeMap::new();
    match &h.probe {
        Some(Probe::Http {
            url,
            expect_status,
            expect_body,
        }) => {
            m.insert("url", url.clone().into());
            m.insert("expect_status", (*expect_status).into());
            if let Some(b) = expect_body {
                m.insert("expect_body", b.clone().into());
            }
        }
        Some(Probe::Command(c)) => {
            m.insert("command", c.clone().into());
        }
        None => return None,
    }
    m.insert("retries", h.retries.into());
    m.insert("interval", duration_text(h.interval).into());
    m.insert("timeout", duration_text(h.timeout).into());
    m.insert(
        "on_failure",
        match h.on_failure {
            OnFailure::Rollback => "rollback",
            OnFailure::Warn => "warn",
        }
        .into(),
    );
    Some(m)
}

/// The effective configuration of `stage`; `mask` replaces secret values wherever they
/// appear (in env, and inside commands that embed them).
pub fn stage_config(stage: &Stage, mask: impl Fn(&str) -> String) -> StageConfig {
    let hosts = stage
        .hosts
        .iter()
        .map(|h| {
            let c = &h.config;
            HostConfigView {
                host: h.name.clone(),
                address: h.address.clone(),
                connection: match c.connection {
                    Connection::Ssh => "ssh",
                    Connection::Local => "local",
                },
                user: c.user.clone(),
                port: c.port,
                identity_file: c.identity_file.as_ref().map(|p| p.display().to_string()),
                known_hosts: c.known_hosts.display().to_string(),
                host_key_checking: match c.host_key_checking {
                    HostKeyChecking::Strict => "strict",
                    HostKeyChecking::AcceptNew => "accept-new",
                },
                proxy_jump: c.proxy_jump.as_deref().map(ProxyJump::chain_text),
                ssh_config: match &c.ssh_config {
                    SshConfig::Default => "default".into(),
                    SshConfig::Off => false.into(),
                    SshConfig::File(f) => f.display().to_string().into(),
                },
                deploy_to: c.deploy_to.clone(),
                keep_releases: c.keep_releases,
                source: match &c.source {
                    Source::Artifact { path } => {
                        BTreeMap::from([("artifact", path.display().to_string())])
                    }
                    Source::Git { url, reference, .. } => {
                        BTreeMap::from([("git", mask(url)), ("ref", reference.clone())])
                    }
                    Source::Url { url, sha256 } => {
                        BTreeMap::from([("url", mask(url)), ("sha256", sha256.clone())])
                    }
                },
                shared: BTreeMap::from([
                    ("files", c.shared.files.clone()),
                    ("dirs", c.shared.dirs.clone()),
                ]),
                copy_from_previous: c.copy_from_previous.clone(),
                forward_agent: c.forward_agent,
                git_known_hosts: match &c.source {
                    Source::Git {
                        known_hosts: Some(k),
                        ..
                    } => Some(k.display().to_string()),
                    _ => None,
                },
                writable: c.writable.as_ref().map(|w| match &w.mode {
                    super::WritableMode::Chmod(m) => {
                        serde_json::json!({"paths": w.paths, "mode": "chmod", "chmod": m})
                    }
                    super::WritableMode::Acl(u) => {
                        serde_json::json!({"paths": w.paths, "mode": "acl", "user": u})
                    }
                }),
                build: steps_masked(&c.build, &mask),
                run_once: steps_masked(&c.run_once, &mask),
                after_switch: steps_masked(&c.after_switch, &mask),
                health_check: health(&c.health_check),
                roles: c.roles.clone(),
                recipe: c.recipe.clone(),
                env: c
                    .env
                    .iter()
                    .map(|v| {
                        let value = match &v.from_command {
                            _ if v.secret => MASK.to_owned(),
                            // Not run for `ship config`.
                            Some(c) => format!("(from_command: {})", mask(&c.command)),
                            None => mask(&v.value),
                        };
                        (v.name.clone(), value)
                    })
                    .collect(),
                env_file: c.env_file.as_ref().map(|p| p.display().to_string()),
                connect_timeout: duration_text(c.timeouts.connect),
                step_timeout: duration_text(c.timeouts.step),
                switch_timeout: duration_text(c.timeouts.switch),
                keepalive_interval: duration_text(c.timeouts.keepalive),
            }
        })
        .collect();
    StageConfig {
        stage: stage.name.clone(),
        canary: stage.canary.as_ref().map(|c| match c {
            Canary::Count(n) => (*n).into(),
            Canary::Hosts(names) => names.clone().into(),
        }),
        waves: stage.waves.as_ref().map(|w| {
            w.iter()
                .map(|s| match s {
                    crate::inventory::WaveSize::Count(n) => (*n).into(),
                    crate::inventory::WaveSize::Percent(p) => format!("{p}%").into(),
                })
                .collect()
        }),
        max_unreachable: stage.max_unreachable.map(|s| match s {
            crate::inventory::WaveSize::Count(n) => n.into(),
            crate::inventory::WaveSize::Percent(p) => format!("{p}%").into(),
        }),
        connect_concurrency: stage.connect_concurrency,
        observe: duration_text(stage.observe),
        hooks: BTreeMap::from([
            (
                "before_deploy",
                list_masked(&stage.hooks.before_deploy, &mask),
            ),
            (
                "after_deploy",
                list_masked(&stage.hooks.after_deploy, &mask),
            ),
            ("on_failure", list_masked(&stage.hooks.on_failure, &mask)),
        ]),
        from_environment: stage.from_environment.iter().cloned().collect(),
        hosts,
    }
}

fn list_masked(v: &[String], mask: &impl Fn(&str) -> String) -> Vec<String> {
    v.iter().map(|s| mask(s)).collect()
}

/// Steps as the inventory writes them: a string, or a mapping when `sudo` or `roles` is set.
fn steps_masked(v: &[StepSpec], mask: &impl Fn(&str) -> String) -> Vec<serde_json::Value> {
    v.iter()
        .map(|s| {
            if !s.sudo && s.roles.is_empty() {
                mask(&s.run).into()
            } else {
                serde_json::json!({"run": mask(&s.run), "sudo": s.sudo, "roles": s.roles})
            }
        })
        .collect()
}
