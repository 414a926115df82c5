//! The settings one level of the inventory gives (`defaults`, a stage, a host), and how the
//! levels are laid over one another.

use super::*;

/// The settings one layer (defaults, a stage, a host) writes; `None` means "not set here".
#[derive(Debug, Clone, Default)]
pub(super) struct Layer {
    pub(super) connection: Option<Connection>,
    pub(super) user: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) identity_file: Option<PathBuf>,
    pub(super) known_hosts: Option<PathBuf>,
    pub(super) host_key_checking: Option<HostKeyChecking>,
    pub(super) proxy_jump: Option<Vec<ProxyJump>>,
    pub(super) ssh_config: Option<SshConfig>,
    pub(super) deploy_to: Option<String>,
    pub(super) keep_releases: Option<usize>,
    pub(super) source: Option<At<Source>>,
    pub(super) shared: Option<Shared>,
    pub(super) build: Option<Vec<StepSpec>>,
    pub(super) copy_from_previous: Option<At<Vec<String>>>,
    pub(super) writable: Option<Writable>,
    pub(super) forward_agent: Option<bool>,
    pub(super) git_known_hosts: Option<PathBuf>,
    pub(super) run_once: Option<Vec<StepSpec>>,
    pub(super) after_switch: Option<Vec<StepSpec>>,
    pub(super) health_check: Option<HealthCheck>,
    pub(super) recipe: Option<String>,
    pub(super) env: BTreeMap<String, EnvVar>,
    pub(super) connect_timeout: Option<Duration>,
    pub(super) step_timeout: Option<Duration>,
    pub(super) switch_timeout: Option<Duration>,
    pub(super) keepalive_interval: Option<Duration>,
}

impl Layer {
    /// This layer with `upper`'s settings on top.
    pub(super) fn overlay(&self, upper: &Layer) -> Layer {
        let mut env = self.env.clone();
        env.extend(upper.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        Layer {
            connection: upper.connection.or(self.connection),
            user: upper.user.clone().or_else(|| self.user.clone()),
            port: upper.port.or(self.port),
            identity_file: upper
                .identity_file
                .clone()
                .or_else(|| self.identity_file.clone()),
            known_hosts: upper
                .known_hosts
                .clone()
                .or_else(|| self.known_hosts.clone()),
            host_key_checking: upper.host_key_checking.or(self.host_key_checking),
            proxy_jump: upper.proxy_jump.clone().or_else(|| self.proxy_jump.clone()),
            ssh_config: upper.ssh_config.clone().or_else(|| self.ssh_config.clone()),
            deploy_to: upper.deploy_to.clone().or_else(|| self.deploy_to.clone()),
            keep_releases: upper.keep_releases.or(self.keep_releases),
            source: upper.source.clone().or_else(|| self.source.clone()),
            shared: upper.shared.clone().or_else(|| self.shared.clone()),
            build: upper.build.clone().or_else(|| self.build.clone()),
            copy_from_previous: upper
                .copy_from_previous
                .clone()
                .or_else(|| self.copy_from_previous.clone()),
            writable: upper.writable.clone().or_else(|| self.writable.clone()),
            forward_agent: upper.forward_agent.or(self.forward_agent),
            git_known_hosts: upper
                .git_known_hosts
                .clone()
                .or_else(|| self.git_known_hosts.clone()),
            run_once: upper.run_once.clone().or_else(|| self.run_once.clone()),
            after_switch: upper
                .after_switch
                .clone()
                .or_else(|| self.after_switch.clone()),
            health_check: upper
                .health_check
                .clone()
                .or_else(|| self.health_check.clone()),
            recipe: upper.recipe.clone().or_else(|| self.recipe.clone()),
            env,
            connect_timeout: upper.connect_timeout.or(self.connect_timeout),
            step_timeout: upper.step_timeout.or(self.step_timeout),
            switch_timeout: upper.switch_timeout.or(self.switch_timeout),
            keepalive_interval: upper.keepalive_interval.or(self.keepalive_interval),
        }
    }
}

/// Parse one layer's settings; keys outside [`LAYER_KEYS`] but in `allowed` are returned raw.
pub(super) fn layer<'n>(
    ctx: &Doc,
    node: &'n Node,
    path: &str,
    allowed: &[&str],
) -> Result<(Layer, BTreeMap<&'n str, &'n Node>)> {
    let mut l = Layer::default();
    let mut extra = BTreeMap::new();
    for (key, v, _) in ctx.entries(node, path, allowed)? {
        let p = join(path, key);
        match key {
            "connection" => {
                l.connection = Some(match ctx.string(v, &p)?.as_str() {
                    "ssh" => Connection::Ssh,
                    "local" => Connection::Local,
                    other => {
                        return Err(ctx.err_hint(
                            v.pos,
                            &p,
                            format!("unknown connection `{other}`"),
                            "use `ssh` (default) or `local`",
                        ));
                    }
                })
            }
            "user" => {
                let u = ctx.non_empty(v, &p)?;
                if u.starts_with('-') || u.contains(|c: char| c.is_whitespace() || c == '@') {
                    return Err(ctx.err(v.pos, &p, "not a valid user name"));
                }
                l.user = Some(u);
            }
            "port" => l.port = Some(ctx.int(v, &p, 1, 65535)? as u16),
            "identity_file" => l.identity_file = Some(ctx.local_path(v, &p)?),
            "known_hosts" => l.known_hosts = Some(ctx.local_path(v, &p)?),
            "host_key_checking" => {
                l.host_key_checking = Some(match ctx.string(v, &p)?.as_str() {
                    "strict" | "yes" => HostKeyChecking::Strict,
                    "accept-new" => HostKeyChecking::AcceptNew,
                    other => {
                        return Err(ctx.err_hint(
                            v.pos,
                            &p,
                            format!("unknown host key policy `{other}`"),
                            "use `strict` (default) or `accept-new`; a changed key is always refused",
                        ));
                    }
                })
            }
            "proxy_jump" => {
                let text = ctx.non_empty(v, &p)?;
                l.proxy_jump =
                    Some(ProxyJump::parse_chain(&text).map_err(|m| ctx.err(v.pos, &p, m))?);
            }
            "ssh_config" => {
                l.ssh_config = Some(match &v.kind {
                    Kind::Bool(false) => SshConfig::Off,
                    Kind::Bool(true) => SshConfig::Default,
                    _ => SshConfig::File(ctx.local_path(v, &p)?),
                })
            }
            "deploy_to" => l.deploy_to = Some(deploy_to(ctx, v, &p)?),
            "keep_releases" => l.keep_releases = Some(ctx.int(v, &p, 1, 1000)? as usize),
            "source" => l.source = Some(source(ctx, v, &p)?),
            "shared" => l.shared = Some(shared(ctx, v, &p)?),
            "build" => l.build = Some(steps(ctx, v, &p)?),
            "copy_from_previous" => {
                let mut paths = Vec::new();
                for (i, (path, pos)) in ctx.list_of_strings(v, &p)?.into_iter().enumerate() {
                    paths.push(shared_path(ctx, &path, pos, &format!("{p}[{i}]"))?);
                }
                l.copy_from_previous = Some(At {
                    value: paths,
                    pos: v.pos,
                    path: p.clone(),
                });
            }
            "writable" => l.writable = Some(writable(ctx, v, &p)?),
            "forward_agent" => l.forward_agent = Some(ctx.boolean(v, &p)?),
            "git_known_hosts" => l.git_known_hosts = Some(ctx.local_path(v, &p)?),
            "run_once" => l.run_once = Some(steps(ctx, v, &p)?),
            "after_switch" => l.after_switch = Some(steps(ctx, v, &p)?),
            "health_check" => l.health_check = Some(health_check(ctx, v, &p)?),
            "recipe" => {
                let r = ctx.non_empty(v, &p)?;
                if !RECIPES.contains(&r.as_str()) {
                    return Err(ctx.err_hint(
                        v.pos,
                        &p,
                        format!("unknown recipe `{r}`"),
                        format!("recipes: {}", RECIPES.join(", ")),
                    ));
                }
                l.recipe = Some(r);
            }
            "env" => l.env = env(ctx, v, &p)?,
            "connect_timeout" => l.connect_timeout = Some(ctx.duration(v, &p)?),
            "step_timeout" => l.step_timeout = Some(ctx.duration(v, &p)?),
            "switch_timeout" => l.switch_timeout = Some(ctx.duration(v, &p)?),
            "keepalive_interval" => l.keepalive_interval = Some(ctx.duration(v, &p)?),
            _ => {
                extra.insert(key, v);
            }
        }
    }
    Ok((l, extra))
}
