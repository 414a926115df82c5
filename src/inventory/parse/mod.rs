//! From a node tree to a validated [`Inventory`].

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::error::{InventoryError, nearest};
use super::node::{Kind, Node, Pos, parse_yaml};
use super::{
    Canary, Connection, EnvFile, EnvVar, Explicit, HealthCheck, Hooks, Host, HostConfig,
    HostKeyChecking, Inventory, OnFailure, Probe, ProxyJump, SecretCommand, Shared, Source,
    SshConfig, Stage, StepSpec, Timeouts, WaveSize, Writable, WritableMode,
};

mod keys;
mod recipes;
mod stage;
mod values;

pub use keys::LAYER_KEYS;
use keys::*;
use recipes::*;
use stage::*;
pub use stage::{check_unreachable, check_waves, parse_canary, parse_wave, parse_waves};
use values::*;

/// Keys allowed at the top of the document.
pub const TOP_KEYS: &[&str] = &["defaults", "stages"];
/// Keys allowed only in a stage (besides [`LAYER_KEYS`]); all but `hosts` may also be set in
/// `defaults`.
pub const STAGE_KEYS: &[&str] = &[
    "hosts",
    "canary",
    "waves",
    "max_unreachable",
    "observe",
    "hooks",
    "connect_concurrency",
];
/// Keys allowed only in a host (besides [`LAYER_KEYS`]).
pub const HOST_KEYS: &[&str] = &["address", "roles"];
/// Keys of `health_check`.
pub const HEALTH_KEYS: &[&str] = &[
    "url",
    "command",
    "expect_status",
    "expect_body",
    "retries",
    "interval",
    "timeout",
    "on_failure",
];
/// Keys of `hooks`.
pub const HOOK_KEYS: &[&str] = &["before_deploy", "after_deploy", "on_failure"];
/// Recipes `recipe:` accepts.
pub const RECIPES: &[&str] = &["laravel"];

pub(crate) const SOURCE_KEYS: &[&str] = &["artifact", "git", "ref", "parallel", "url", "sha256"];
pub(crate) const SHARED_KEYS: &[&str] = &["files", "dirs"];
pub(crate) const SECRET_KEYS: &[&str] = &["value", "from_env", "from_command", "secret"];
/// Keys of `writable`.
pub const WRITABLE_KEYS: &[&str] = &["paths", "mode", "user", "chmod"];
/// Keys of a step written as a mapping.
pub const STEP_KEYS: &[&str] = &["run", "sudo", "roles", "parallel"];

struct Doc<'a> {
    file: &'a Path,
    lines: Vec<&'a str>,
    /// The controller's environment, for `${VAR}` and `from_env`.
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

type Result<T> = std::result::Result<T, InventoryError>;

impl Doc<'_> {
    fn err(&self, pos: Pos, path: &str, message: impl Into<String>) -> InventoryError {
        let source_line = usize::try_from(pos.line)
            .ok()
            .and_then(|l| l.checked_sub(1))
            .and_then(|l| self.lines.get(l))
            .map(|l| l.to_string());
        InventoryError {
            file: self.file.to_path_buf(),
            pos,
            key_path: path.to_owned(),
            message: message.into(),
            hint: None,
            source_line,
        }
    }

    fn err_hint(
        &self,
        pos: Pos,
        path: &str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> InventoryError {
        InventoryError {
            hint: Some(hint.into()),
            ..self.err(pos, path, message)
        }
    }

    fn expected(&self, node: &Node, path: &str, what: &str) -> InventoryError {
        self.err(
            node.pos,
            path,
            format!("expected {what}, found {}", node.kind.describe()),
        )
    }

    /// The entries of a mapping, each key checked against `allowed`.
    fn entries<'n>(
        &self,
        node: &'n Node,
        path: &str,
        allowed: &[&str],
    ) -> Result<Vec<(&'n str, &'n Node, Pos)>> {
        let entries = self.map(node, path)?;
        for (key, _, pos) in &entries {
            if !allowed.contains(key) {
                let key_path = join(path, key);
                let hint = match nearest(key, allowed) {
                    Some(n) => format!(
                        "did you mean `{n}`? valid keys here: {}",
                        allowed.join(", ")
                    ),
                    None => format!("valid keys here: {}", allowed.join(", ")),
                };
                return Err(self.err_hint(*pos, &key_path, "unknown key", hint));
            }
        }
        Ok(entries)
    }

    /// The entries of a mapping whose keys are names chosen by the user (stages, hosts, env).
    fn map<'n>(&self, node: &'n Node, path: &str) -> Result<Vec<(&'n str, &'n Node, Pos)>> {
        let Kind::Map(entries) = &node.kind else {
            return Err(self.expected(node, path, "a mapping"));
        };
        entries
            .iter()
            .map(|(k, v)| match &k.kind {
                Kind::Str(s) => Ok((s.as_str(), v, k.pos)),
                _ => Err(self.expected(k, path, "a string key")),
            })
            .collect()
    }

    fn string(&self, node: &Node, path: &str) -> Result<String> {
        match &node.kind {
            Kind::Str(s) if s.contains('\0') => {
                Err(self.err(node.pos, path, "contains a NUL character"))
            }
            Kind::Str(s) => Ok(s.clone()),
            _ => Err(self.expected(node, path, "a string")),
        }
    }

    fn non_empty(&self, node: &Node, path: &str) -> Result<String> {
        let s = self.string(node, path)?;
        if s.trim().is_empty() {
            return Err(self.err(node.pos, path, "must not be empty"));
        }
        Ok(s)
    }

    /// A scalar rendered as text (env values may be written as numbers or booleans).
    fn scalar_text(&self, node: &Node, path: &str) -> Result<String> {
        match &node.kind {
            Kind::Str(_) => self.string(node, path),
            Kind::Int(i) => Ok(i.to_string()),
            Kind::Float(f) => Ok(f.to_string()),
            Kind::Bool(b) => Ok(b.to_string()),
            _ => Err(self.expected(node, path, "a string, number or boolean")),
        }
    }

    fn boolean(&self, node: &Node, path: &str) -> Result<bool> {
        match node.kind {
            Kind::Bool(b) => Ok(b),
            _ => Err(self.expected(node, path, "true or false")),
        }
    }

    fn int(&self, node: &Node, path: &str, min: i64, max: i64) -> Result<i64> {
        match node.kind {
            Kind::Int(i) if (min..=max).contains(&i) => Ok(i),
            Kind::Int(i) => Err(self.err(
                node.pos,
                path,
                format!("{i} is out of range (expected {min} to {max})"),
            )),
            _ => Err(self.expected(node, path, "an integer")),
        }
    }

    fn list_of_strings(&self, node: &Node, path: &str) -> Result<Vec<(String, Pos)>> {
        let Kind::Seq(items) = &node.kind else {
            return Err(self.expected(node, path, "a list of strings"));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| Ok((self.non_empty(item, &format!("{path}[{i}]"))?, item.pos)))
            .collect()
    }

    fn duration(&self, node: &Node, path: &str) -> Result<Duration> {
        let bad = || {
            self.err_hint(
                node.pos,
                path,
                "expected a duration",
                "write a number with a unit: 500ms, 30s, 5m, 1h (a bare number means seconds)",
            )
        };
        let d = match &node.kind {
            Kind::Int(i) if *i > 0 => Duration::from_secs(i.unsigned_abs()),
            Kind::Str(s) => parse_duration(s).ok_or_else(bad)?,
            _ => return Err(bad()),
        };
        if d.is_zero() {
            return Err(self.err(node.pos, path, "must be longer than zero"));
        }
        Ok(d)
    }

    /// A local path; `~/` expands to the home directory, relative paths are relative to the
    /// inventory file's directory.
    fn local_path(&self, node: &Node, path: &str) -> Result<PathBuf> {
        let s = self.non_empty(node, path)?;
        Ok(expand_local_path(self.file, &s))
    }
}

/// Parse a duration such as `500ms`, `30s`, `5m`, `1h` or `90` (seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    match unit.trim() {
        "" | "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

/// Expand `~/` and resolve relative paths against the inventory's directory.
pub fn expand_local_path(inventory: &Path, s: &str) -> PathBuf {
    if let Some(rest) = s.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    let p = PathBuf::from(s);
    if p.is_absolute() {
        p
    } else {
        inventory.parent().map(|d| d.join(&p)).unwrap_or(p)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A value and where it was written, so that resolution errors can still point at it.
#[derive(Debug, Clone)]
struct At<T> {
    value: T,
    pos: Pos,
    path: String,
}

/// Parse and validate inventory text read from `file`, taking `${VAR}` from the environment.
pub fn parse_inventory(file: &Path, text: &str) -> Result<Inventory> {
    parse_inventory_with(file, text, &|name| std::env::var(name).ok())
}

/// [`parse_inventory`], reading `${VAR}` with `lookup`.
pub fn parse_inventory_with(
    file: &Path,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Inventory> {
    let ctx = Doc {
        file,
        lines: text.lines().collect(),
        lookup,
    };
    let mut root = parse_yaml(text).map_err(|e| {
        let pos = e
            .location()
            .map(|l| Pos {
                line: l.line(),
                column: l.column(),
            })
            .unwrap_or_default();
        let message = e.to_string();
        // saphyr's message may already carry a location and a snippet; keep its first line.
        let first = message.lines().next().unwrap_or("invalid YAML").to_owned();
        ctx.err_hint(
            pos,
            "",
            format!("invalid YAML: {first}"),
            "check the indentation and quoting around this line",
        )
    })?;
    if matches!(root.kind, Kind::Null) {
        return Err(ctx.err_hint(
            root.pos,
            "",
            "the inventory is empty",
            "start from inventory.example.yaml",
        ));
    }
    let mut from_environment = Vec::new();
    expand_tree(&ctx, &mut root, "", lookup, &mut from_environment)?;
    let mut defaults = Layer::default();
    let mut stage_defaults = StageSettings::default();
    let mut stages_node = None;
    for (key, value, _) in ctx.entries(&root, "", TOP_KEYS)? {
        match key {
            "defaults" => {
                let allowed: Vec<&str> = LAYER_KEYS
                    .iter()
                    .chain(STAGE_KEYS.iter().filter(|k| **k != "hosts"))
                    .copied()
                    .collect();
                let (l, extra) = layer(&ctx, value, "defaults", &allowed)?;
                defaults = l;
                stage_defaults =
                    stage_settings(&ctx, &extra, "defaults", StageSettings::default())?;
            }
            "stages" => stages_node = Some(value),
            _ => {}
        }
    }
    let Some(stages_node) = stages_node else {
        return Err(ctx.err_hint(
            root.pos,
            "stages",
            "missing key",
            "add `stages:` with at least one stage and its hosts",
        ));
    };
    let mut stages = Vec::new();
    for (name, node, pos) in ctx.map(stages_node, "stages")? {
        let path = join("stages", name);
        let mut s = stage(&ctx, &defaults, &stage_defaults, name, node, pos, &path)?;
        s.from_environment = from_environment
            .iter()
            .filter(|(p, _)| {
                p.starts_with("defaults.")
                    || p.strip_prefix(&path).is_some_and(|r| r.starts_with('.'))
            })
            .cloned()
            .collect();
        stages.push(s);
    }
    Ok(Inventory {
        file: file.to_path_buf(),
        stages,
    })
}

fn stage(
    ctx: &Doc,
    defaults: &Layer,
    stage_defaults: &StageSettings,
    name: &str,
    node: &Node,
    pos: Pos,
    path: &str,
) -> Result<Stage> {
    let allowed: Vec<&str> = LAYER_KEYS.iter().chain(STAGE_KEYS).copied().collect();
    let (own, extra) = layer(ctx, node, path, &allowed)?;
    let stage_layer = defaults.overlay(&own);
    let settings = stage_settings(ctx, &extra, path, stage_defaults.clone())?;
    let Some(hosts_node) = extra.get("hosts") else {
        return Err(ctx.err_hint(
            pos,
            path,
            "the stage has no `hosts`",
            "add `hosts:` with at least one host, e.g. `web-1: { address: 203.0.113.10 }`",
        ));
    };
    let hosts_path = join(path, "hosts");
    let host_entries = ctx.map(hosts_node, &hosts_path)?;
    if host_entries.is_empty() {
        return Err(ctx.err(hosts_node.pos, &hosts_path, "the stage has no hosts"));
    }
    let mut hosts = Vec::new();
    let mut first_source: Option<At<Source>> = None;
    for (host_name, host_node, host_pos) in host_entries {
        let host_path = join(&hosts_path, host_name);
        if !valid_host_name(host_name) {
            return Err(ctx.err_hint(
                host_pos,
                &host_path,
                "invalid host name",
                "host names may use letters, digits, `.`, `_` and `-`",
            ));
        }
        let h = host(
            ctx,
            &stage_layer,
            host_name,
            host_node,
            host_pos,
            &host_path,
        )?;
        if let Some(first) = &first_source {
            if first.value != h.1.value {
                return Err(ctx.err_hint(
                    h.1.pos,
                    &h.1.path,
                    "every host of a stage must deploy the same source",
                    format!("the first host uses the source set at {}", first.path),
                ));
            }
        } else {
            first_source = Some(h.1.clone());
        }
        hosts.push(h.0);
    }
    if let Some(At {
        value: Canary::Hosts(names),
        pos,
        path: cpath,
    }) = &settings.canary
    {
        if let Some(unknown) = names.iter().find(|n| !hosts.iter().any(|h| &h.name == *n)) {
            let known: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
            return Err(ctx.err_hint(
                *pos,
                cpath,
                format!("`{unknown}` is not a host of this stage"),
                format!("hosts here: {}", known.join(", ")),
            ));
        }
    }
    if let Some(w) = &settings.waves {
        check_waves(&w.value, hosts.len()).map_err(|(m, h)| ctx.err_hint(w.pos, &w.path, m, h))?;
    }
    if let Some(u) = &settings.max_unreachable {
        check_unreachable(u.value, hosts.len())
            .map_err(|(m, h)| ctx.err_hint(u.pos, &u.path, m, h))?;
    }
    Ok(Stage {
        name: name.to_owned(),
        hosts,
        canary: settings.canary.map(|c| c.value),
        observe: settings.observe.unwrap_or(Duration::ZERO),
        hooks: settings.hooks.unwrap_or_default(),
        waves: settings.waves.as_ref().map(|w| w.value.clone()),
        max_unreachable: settings.max_unreachable.as_ref().map(|u| u.value),
        connect_concurrency: settings
            .connect_concurrency
            .unwrap_or(crate::inventory::DEFAULT_CONNECT_CONCURRENCY),
        excluded: Vec::new(),
        from_environment: Vec::new(),
    })
}

/// Keys whose values are shell commands: they keep their `${…}` for the shell that runs them
/// (a build step's `${f%.tar}` is the host shell's), and are not expanded here. A value reaches
/// them through `env`.
const COMMAND_KEYS: &[&str] = &["build", "run_once", "after_switch", "hooks", "from_command"];

/// Expand `${…}` in every string value under `node` (at `path`; see [`super::interpolate`]),
/// except in commands ([`COMMAND_KEYS`], a health check's `command`), noting which paths read
/// which variables.
fn expand_tree(
    doc: &Doc,
    node: &mut Node,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    used: &mut Vec<(String, Vec<String>)>,
) -> Result<()> {
    let pos = node.pos;
    match &mut node.kind {
        Kind::Str(s) if s.contains('$') => {
            let e = super::interpolate::expand(s, lookup)
                .map_err(|p| doc.err_hint(pos, path, p.message, p.hint))?;
            if !e.vars.is_empty() {
                used.push((path.to_owned(), e.vars));
            }
            *s = e.text;
        }
        Kind::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_tree(doc, item, &format!("{path}[{i}]"), lookup, used)?;
            }
        }
        Kind::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                let key = match &k.kind {
                    Kind::Str(s) => s.clone(),
                    Kind::Int(n) => n.to_string(),
                    _ => String::new(),
                };
                let command = COMMAND_KEYS.contains(&key.as_str())
                    || (key == "command" && path.ends_with("health_check"));
                if !command {
                    expand_tree(doc, v, &join(path, &key), lookup, used)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn host(
    ctx: &Doc,
    stage: &Layer,
    name: &str,
    node: &Node,
    pos: Pos,
    path: &str,
) -> Result<(Host, At<Source>)> {
    let allowed: Vec<&str> = LAYER_KEYS.iter().chain(HOST_KEYS).copied().collect();
    // `web-1:` with nothing after it is a host with no settings of its own.
    let (own, extra) = if matches!(node.kind, Kind::Null) {
        (Layer::default(), BTreeMap::new())
    } else {
        layer(ctx, node, path, &allowed)?
    };
    let merged = stage.overlay(&own);
    // A recipe supplies defaults under everything written in the inventory.
    let l = match merged.recipe.as_deref() {
        Some(r) => recipe(r).overlay(&merged),
        None => merged,
    };
    let connection = l.connection.unwrap_or(Connection::Ssh);
    let roles = match extra.get("roles") {
        Some(n) => ctx
            .list_of_strings(n, &join(path, "roles"))?
            .into_iter()
            .map(|(s, _)| s)
            .collect(),
        None => Vec::new(),
    };
    let address = match extra.get("address") {
        Some(n) => {
            let a = ctx.non_empty(n, &join(path, "address"))?;
            if a.starts_with('-') || a.contains(char::is_whitespace) {
                return Err(ctx.err(
                    n.pos,
                    &join(path, "address"),
                    "not a valid host name or IP address",
                ));
            }
            a
        }
        None if connection == Connection::Local => "localhost".to_owned(),
        None => {
            return Err(ctx.err_hint(
                pos,
                path,
                "the host has no `address`",
                format!("write e.g. `{name}: {{ address: 203.0.113.10 }}`"),
            ));
        }
    };
    let missing = |key: &str, example: &str| {
        ctx.err_hint(
            pos,
            path,
            format!("no `{key}` is set for this host"),
            format!(
                "set `{key}` in defaults, in the stage or in the host, e.g. `{key}: {example}`"
            ),
        )
    };
    let deploy_to = l
        .deploy_to
        .clone()
        .ok_or_else(|| missing("deploy_to", "/var/www/my-app"))?;
    let mut source = l
        .source
        .clone()
        .ok_or_else(|| missing("source", "{ artifact: ./build }"))?;
    if let Source::Git { known_hosts, .. } = &mut source.value {
        known_hosts.clone_from(&l.git_known_hosts);
    }
    let shared = l.shared.clone().unwrap_or_default();
    let copy = l.copy_from_previous.clone();
    if let Some(c) = &copy {
        for p in &c.value {
            if let Some(s) = shared
                .files
                .iter()
                .chain(shared.dirs.iter())
                .find(|s| overlaps(s, p))
            {
                return Err(ctx.err_hint(
                    c.pos,
                    &c.path,
                    format!("`{p}` overlaps the shared path `{s}`"),
                    "a shared path is linked from shared/, not copied; remove it from one list",
                ));
            }
        }
    }
    let defaults = Timeouts::default();
    let user = l
        .user
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "root".to_owned());
    let known_hosts = l
        .known_hosts
        .clone()
        .unwrap_or_else(|| expand_local_path(ctx.file, "~/.ssh/known_hosts"));
    let config = HostConfig {
        connection,
        user,
        port: l.port.unwrap_or(22),
        identity_file: l.identity_file.clone(),
        known_hosts,
        host_key_checking: l.host_key_checking.unwrap_or(HostKeyChecking::Strict),
        proxy_jump: l.proxy_jump.clone(),
        ssh_config: l.ssh_config.clone().unwrap_or_default(),
        explicit: Explicit {
            user: l.user.is_some(),
            port: l.port.is_some(),
            identity_file: l.identity_file.is_some(),
            proxy_jump: l.proxy_jump.is_some(),
        },
        alias: None,
        deploy_to,
        keep_releases: l.keep_releases.unwrap_or(5),
        source: source.value.clone(),
        shared,
        copy_from_previous: copy.map(|c| c.value).unwrap_or_default(),
        writable: l.writable.clone(),
        forward_agent: l.forward_agent.unwrap_or(false),
        build: for_roles(l.build.clone(), &roles),
        run_once: for_roles(l.run_once.clone(), &roles),
        after_switch: for_roles(l.after_switch.clone(), &roles),
        health_check: l.health_check.clone().unwrap_or_default(),
        roles,
        recipe: l.recipe.clone(),
        env: {
            // `env` wins over `env_file` for the same name.
            let mut env = l
                .env_file
                .as_ref()
                .map(|f| f.vars.clone())
                .unwrap_or_default();
            env.extend(l.env.iter().flatten().map(|(k, v)| (k.clone(), v.clone())));
            env.into_values().collect()
        },
        env_file: l.env_file.as_ref().map(|f| f.path.clone()),
        timeouts: Timeouts {
            connect: l.connect_timeout.unwrap_or(defaults.connect),
            step: l.step_timeout.unwrap_or(defaults.step),
            switch: l.switch_timeout.unwrap_or(defaults.switch),
            keepalive: l.keepalive_interval.unwrap_or(defaults.keepalive),
        },
    };
    Ok((
        Host {
            name: name.to_owned(),
            address,
            config,
        },
        source,
    ))
}
