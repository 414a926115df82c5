//! The keys every level of the inventory (`defaults`, a stage, a host) may set: one row per key
//! in [`layer_keys!`], with its value's type and how it is read. The row is the one declaration
//! of the key: [`Layer`] (what one level sets), [`LAYER_KEYS`] (what the parser accepts, the
//! reference and the schema are checked against), the overlay of one level on another, and
//! the reading of a level all come from it.

use super::*;

/// Declares the layer keys. Each row: `key: Type => reader`, where the reader is a
/// `fn(&Doc, &Node, path) -> Result<Type>`; a level's value replaces the one below it, unless
/// the row ends in `, merged by f` (`f(lower, upper)` gives the value of both).
macro_rules! layer_keys {
    ($($(#[$doc:meta])* $key:ident: $ty:ty => $read:expr $(, merged by $merge:expr)?;)*) => {
        /// The settings one level (defaults, a stage, a host) writes; `None` means "not set here".
        #[derive(Debug, Clone, Default)]
        pub(super) struct Layer {
            $($(#[$doc])* pub(super) $key: Option<$ty>,)*
        }

        /// Keys allowed in `defaults`, a stage and a host alike.
        pub const LAYER_KEYS: &[&str] = &[$(stringify!($key),)*];

        impl Layer {
            /// This level with `upper`'s settings on top.
            pub(super) fn overlay(&self, upper: &Layer) -> Layer {
                Layer {
                    $($key: overlay_one!(self.$key, upper.$key $(, $merge)?),)*
                }
            }

            /// Read `key`'s value `v` (at `p`) into this level; `false` when it is not a
            /// layer key.
            fn read(&mut self, doc: &Doc, key: &str, v: &Node, p: &str) -> Result<bool> {
                match key {
                    $(stringify!($key) => {
                        let read: fn(&Doc, &Node, &str) -> Result<$ty> = $read;
                        self.$key = Some(read(doc, v, p)?);
                    })*
                    _ => return Ok(false),
                }
                Ok(true)
            }
        }
    };
}

/// One key of [`Layer::overlay`]: the upper level's value, else the lower's; or both merged.
macro_rules! overlay_one {
    ($lower:expr, $upper:expr) => {
        $upper.as_ref().or($lower.as_ref()).cloned()
    };
    ($lower:expr, $upper:expr, $merge:expr) => {
        $merge($lower.as_ref(), $upper.as_ref())
    };
}

layer_keys! {
    /// How to reach the host: `ssh` (default) or `local`.
    connection: Connection => connection;
    user: String => user;
    port: u16 => |doc, v, p| Ok(doc.int(v, p, 1, 65535)? as u16);
    identity_file: PathBuf => |doc, v, p| doc.local_path(v, p);
    known_hosts: PathBuf => |doc, v, p| doc.local_path(v, p);
    host_key_checking: HostKeyChecking => host_key_checking;
    proxy_jump: Vec<ProxyJump> => proxy_jump;
    ssh_config: SshConfig => ssh_config;
    deploy_to: String => deploy_to;
    keep_releases: usize => |doc, v, p| Ok(doc.int(v, p, 1, 1000)? as usize);
    source: At<Source> => source;
    shared: Shared => shared;
    build: Vec<StepSpec> => steps;
    copy_from_previous: At<Vec<String>> => copy_from_previous;
    writable: Writable => writable;
    forward_agent: bool => |doc, v, p| doc.boolean(v, p);
    git_known_hosts: PathBuf => |doc, v, p| doc.local_path(v, p);
    run_once: Vec<StepSpec> => steps;
    after_switch: Vec<StepSpec> => steps;
    health_check: HealthCheck => health_check;
    recipe: String => recipe;
    /// Environment variables: each level adds to, or replaces one of, the level below.
    env: BTreeMap<String, EnvVar> => env, merged by merge_env;
    /// A dotenv file of secrets on the controller; `env` wins over it for the same name.
    env_file: EnvFile => env_file;
    connect_timeout: Duration => |doc, v, p| doc.duration(v, p);
    step_timeout: Duration => |doc, v, p| doc.duration(v, p);
    switch_timeout: Duration => |doc, v, p| doc.duration(v, p);
    keepalive_interval: Duration => |doc, v, p| doc.duration(v, p);
}

/// Parse one level's settings; keys outside [`LAYER_KEYS`] but in `allowed` are returned raw.
pub(super) fn layer<'n>(
    doc: &Doc,
    node: &'n Node,
    path: &str,
    allowed: &[&str],
) -> Result<(Layer, BTreeMap<&'n str, &'n Node>)> {
    let mut l = Layer::default();
    let mut extra = BTreeMap::new();
    for (key, v, _) in doc.entries(node, path, allowed)? {
        if !l.read(doc, key, v, &join(path, key))? {
            extra.insert(key, v);
        }
    }
    Ok((l, extra))
}

/// The variables of two levels: the upper level's replace the lower's of the same name.
fn merge_env(
    lower: Option<&BTreeMap<String, EnvVar>>,
    upper: Option<&BTreeMap<String, EnvVar>>,
) -> Option<BTreeMap<String, EnvVar>> {
    let mut env = lower.cloned().unwrap_or_default();
    env.extend(
        upper
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    Some(env)
}

fn connection(doc: &Doc, v: &Node, p: &str) -> Result<Connection> {
    match doc.string(v, p)?.as_str() {
        "ssh" => Ok(Connection::Ssh),
        "local" => Ok(Connection::Local),
        other => Err(doc.err_hint(
            v.pos,
            p,
            format!("unknown connection `{other}`"),
            "use `ssh` (default) or `local`",
        )),
    }
}

fn user(doc: &Doc, v: &Node, p: &str) -> Result<String> {
    let u = doc.non_empty(v, p)?;
    if u.starts_with('-') || u.contains(|c: char| c.is_whitespace() || c == '@') {
        return Err(doc.err(v.pos, p, "not a valid user name"));
    }
    Ok(u)
}

fn host_key_checking(doc: &Doc, v: &Node, p: &str) -> Result<HostKeyChecking> {
    match doc.string(v, p)?.as_str() {
        "strict" | "yes" => Ok(HostKeyChecking::Strict),
        "accept-new" => Ok(HostKeyChecking::AcceptNew),
        other => Err(doc.err_hint(
            v.pos,
            p,
            format!("unknown host key policy `{other}`"),
            "use `strict` (default) or `accept-new`; a changed key is always refused",
        )),
    }
}

fn proxy_jump(doc: &Doc, v: &Node, p: &str) -> Result<Vec<ProxyJump>> {
    let text = doc.non_empty(v, p)?;
    ProxyJump::parse_chain(&text).map_err(|m| doc.err(v.pos, p, m))
}

fn ssh_config(doc: &Doc, v: &Node, p: &str) -> Result<SshConfig> {
    Ok(match &v.kind {
        Kind::Bool(false) => SshConfig::Off,
        Kind::Bool(true) => SshConfig::Default,
        _ => SshConfig::File(doc.local_path(v, p)?),
    })
}

fn copy_from_previous(doc: &Doc, v: &Node, p: &str) -> Result<At<Vec<String>>> {
    let mut paths = Vec::new();
    for (i, (path, pos)) in doc.list_of_strings(v, p)?.into_iter().enumerate() {
        paths.push(shared_path(doc, &path, pos, &format!("{p}[{i}]"))?);
    }
    Ok(At {
        value: paths,
        pos: v.pos,
        path: p.to_owned(),
    })
}

fn recipe(doc: &Doc, v: &Node, p: &str) -> Result<String> {
    let r = doc.non_empty(v, p)?;
    if !RECIPES.contains(&r.as_str()) {
        return Err(doc.err_hint(
            v.pos,
            p,
            format!("unknown recipe `{r}`"),
            format!("recipes: {}", RECIPES.join(", ")),
        ));
    }
    Ok(r)
}
