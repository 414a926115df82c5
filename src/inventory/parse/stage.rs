//! The settings of a whole stage rather than of each host: `canary`, `waves`,
//! `max_unreachable`, `observe`, `hooks`; and the canary and wave sizes as the command line
//! writes them.

use super::*;

/// The settings that belong to a whole stage rather than to each host.
#[derive(Debug, Clone, Default)]
pub(super) struct StageSettings {
    pub(super) canary: Option<At<Canary>>,
    pub(super) waves: Option<At<Vec<WaveSize>>>,
    pub(super) max_unreachable: Option<At<WaveSize>>,
    pub(super) observe: Option<Duration>,
    pub(super) hooks: Option<Hooks>,
    pub(super) connect_concurrency: Option<usize>,
}

pub(super) fn stage_settings(
    ctx: &Doc,
    extra: &BTreeMap<&str, &Node>,
    path: &str,
    inherited: StageSettings,
) -> Result<StageSettings> {
    let mut s = inherited;
    if let Some(n) = extra.get("canary") {
        let p = join(path, "canary");
        let value = match &n.kind {
            Kind::Int(_) => Canary::Count(ctx.int(n, &p, 1, 10_000)? as usize),
            Kind::Str(_) => {
                let name = ctx.non_empty(n, &p)?;
                parse_canary(&name).map_err(|m| ctx.err(n.pos, &p, m))?
            }
            Kind::Seq(_) => Canary::Hosts(
                ctx.list_of_strings(n, &p)?
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect(),
            ),
            _ => return Err(ctx.expected(n, &p, "a number of hosts or host names")),
        };
        s.canary = Some(At {
            value,
            pos: n.pos,
            path: p,
        });
    }
    if let Some(n) = extra.get("waves") {
        let p = join(path, "waves");
        let Kind::Seq(items) = &n.kind else {
            return Err(ctx.expected(
                n,
                &p,
                "a list of host counts or shares, e.g. [1, \"10%\", \"100%\"]",
            ));
        };
        let mut sizes = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let ip = format!("{p}[{i}]");
            let text = match &item.kind {
                Kind::Int(v) => v.to_string(),
                Kind::Str(v) => v.clone(),
                _ => {
                    return Err(ctx.expected(
                        item,
                        &ip,
                        "a number of hosts or a share like \"10%\"",
                    ));
                }
            };
            sizes.push(parse_wave(&text).map_err(|m| ctx.err(item.pos, &ip, m))?);
        }
        if sizes.is_empty() {
            return Err(ctx.err_hint(n.pos, &p, "no waves", "e.g. waves: [1, \"10%\", \"100%\"]"));
        }
        s.waves = Some(At {
            value: sizes,
            pos: n.pos,
            path: p,
        });
    }
    if let Some(n) = extra.get("max_unreachable") {
        let p = join(path, "max_unreachable");
        let text = match &n.kind {
            Kind::Int(0) => None,
            Kind::Int(v) => Some(v.to_string()),
            Kind::Str(v) => Some(v.clone()),
            _ => return Err(ctx.expected(n, &p, "a number of hosts or a share like \"2%\"")),
        };
        s.max_unreachable = match text {
            Some(t) => Some(At {
                value: parse_wave(&t).map_err(|m| ctx.err(n.pos, &p, m))?,
                pos: n.pos,
                path: p,
            }),
            None => None,
        };
    }
    if let Some(n) = extra.get("connect_concurrency") {
        let p = join(path, "connect_concurrency");
        if matches!(n.kind, Kind::Int(0)) {
            return Err(ctx.err_hint(
                n.pos,
                &p,
                "0 handshakes at once would connect to no host",
                format!(
                    "leave it out for {}, or give at least 1",
                    crate::inventory::DEFAULT_CONNECT_CONCURRENCY
                ),
            ));
        }
        s.connect_concurrency = Some(ctx.int(n, &p, 1, 100_000)? as usize);
    }
    if let Some(n) = extra.get("observe") {
        s.observe = Some(ctx.duration(n, &join(path, "observe"))?);
    }
    if let Some(n) = extra.get("hooks") {
        let p = join(path, "hooks");
        let mut hooks = Hooks::default();
        for (key, v, _) in ctx.entries(n, &p, HOOK_KEYS)? {
            let list: Vec<String> = ctx
                .list_of_strings(v, &join(&p, key))?
                .into_iter()
                .map(|(s, _)| s)
                .collect();
            match key {
                "before_deploy" => hooks.before_deploy = list,
                "after_deploy" => hooks.after_deploy = list,
                _ => hooks.on_failure = list,
            }
        }
        s.hooks = Some(hooks);
    }
    Ok(s)
}

/// One wave of a rollout, as written: how many hosts (`3`) or what share of the fleet (`10%`)
/// have switched once the wave is done.
pub fn parse_wave(text: &str) -> std::result::Result<WaveSize, String> {
    let t = text.trim();
    let bad =
        || format!("`{t}` is neither a number of hosts nor a share of the fleet (e.g. `1`, `10%`)");
    if let Some(p) = t.strip_suffix('%') {
        let p: u32 = p.trim().parse().map_err(|_| bad())?;
        if p == 0 || p > 100 {
            return Err(format!("`{t}`: a share is between 1% and 100%"));
        }
        return Ok(WaveSize::Percent(p));
    }
    match t.parse::<usize>() {
        Ok(0) => Err("a wave needs at least one host".into()),
        Ok(n) => Ok(WaveSize::Count(n)),
        Err(_) => Err(bad()),
    }
}

/// Whether `sizes` make a rollout of a stage of `n` hosts: each wave takes the fleet further,
/// and the last one takes all of it.
pub fn check_waves(sizes: &[WaveSize], n: usize) -> std::result::Result<(), (String, String)> {
    let mut done = 0;
    for s in sizes {
        let (count, text) = match *s {
            WaveSize::Count(c) => (c, c.to_string()),
            WaveSize::Percent(p) => ((n * p as usize).div_ceil(100).max(1), format!("{p}%")),
        };
        if count <= done {
            return Err((
                format!("the wave `{text}` adds no host to the {done} of {n} before it"),
                "each wave takes the fleet further, e.g. [1, \"10%\", \"100%\"]".into(),
            ));
        }
        done = count;
    }
    if done < n {
        return Err((
            format!("the waves end with {done} of the stage's {n} host(s) switched"),
            "end with \"100%\" (the rest of the fleet)".into(),
        ));
    }
    Ok(())
}

/// Whether a budget of unreachable hosts fits a stage of `n` hosts.
pub fn check_unreachable(size: WaveSize, n: usize) -> std::result::Result<usize, (String, String)> {
    let count = match size {
        WaveSize::Count(c) => c,
        WaveSize::Percent(p) => n * p as usize / 100,
    };
    if count >= n {
        return Err((
            format!("{count} unreachable host(s) of {n} would leave out the whole fleet"),
            "a budget below the stage's size, e.g. 1 or \"2%\"".into(),
        ));
    }
    Ok(count)
}

/// Waves on the command line: `1,10%,100%`.
pub fn parse_waves(text: &str) -> std::result::Result<Vec<WaveSize>, String> {
    text.split(',').map(parse_wave).collect()
}

/// A canary given on the command line or as a string: a number of hosts, or host names
/// separated by commas.
pub fn parse_canary(text: &str) -> std::result::Result<Canary, String> {
    let text = text.trim();
    if let Ok(n) = text.parse::<usize>() {
        if n == 0 {
            return Err("a canary needs at least one host".into());
        }
        return Ok(Canary::Count(n));
    }
    let names: Vec<String> = text
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() || names.iter().any(|n| !valid_host_name(n)) {
        return Err(format!(
            "`{text}` is neither a number of hosts nor host names (e.g. `1` or `web-1,web-2`)"
        ));
    }
    Ok(Canary::Hosts(names))
}
