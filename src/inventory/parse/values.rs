//! The values of the keys that hold more than a scalar, each validated where it is read:
//! paths, sources, shared paths, env, steps, health checks, writable paths.

use super::*;

/// Paths and URLs are names: a newline, a tab or another control character in one is a mistake
/// (and would break the line-based replies hosts send about paths, or a URL's line in curl's
/// configuration).
pub(super) fn no_control_characters(ctx: &Doc, path: &str, pos: Pos, key_path: &str) -> Result<()> {
    match path.chars().find(|c| c.is_control()) {
        Some(c) => Err(ctx.err_hint(
            pos,
            key_path,
            format!(
                "`{}` contains a control character ({c:?})",
                path.escape_debug()
            ),
            "write it without newlines, tabs or other control characters",
        )),
        None => Ok(()),
    }
}

pub(super) fn deploy_to(ctx: &Doc, v: &Node, p: &str) -> Result<String> {
    let s = ctx.non_empty(v, p)?;
    no_control_characters(ctx, &s, v.pos, p)?;
    if !s.starts_with('/') {
        return Err(ctx.err_hint(
            v.pos,
            p,
            format!("`{s}` is not an absolute path"),
            "write the full path on the host, e.g. /var/www/my-app",
        ));
    }
    if s.split('/').any(|c| c == "..") {
        return Err(ctx.err(v.pos, p, "must not contain `..`"));
    }
    let trimmed = s.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(ctx.err_hint(
            v.pos,
            p,
            "must not be the root directory",
            "use a directory of its own, e.g. /var/www/my-app",
        ));
    }
    Ok(trimmed.to_owned())
}

pub(super) fn source(ctx: &Doc, v: &Node, p: &str) -> Result<At<Source>> {
    let entries = ctx.entries(v, p, SOURCE_KEYS)?;
    let get = |k: &str| {
        entries
            .iter()
            .find(|(key, _, _)| *key == k)
            .map(|(_, n, _)| *n)
    };
    let given: Vec<&str> = ["artifact", "git", "url"]
        .into_iter()
        .filter(|k| get(k).is_some())
        .collect();
    if given.len() > 1 {
        let second = get(given[1]).map_or(v.pos, |n| n.pos);
        return Err(ctx.err_hint(
            second,
            p,
            format!("both `{}` and `{}` are set", given[0], given[1]),
            "choose one source: `artifact: ./build`, `git: <url>` with `ref:`, or `url: <https \
             URL of a tarball>` with `sha256:`",
        ));
    }
    // Keys that belong to one kind of source only.
    let only = |key: &str, kind: &str, instead: &str| -> Result<()> {
        match get(key) {
            Some(r) => Err(ctx.err_hint(
                r.pos,
                &join(p, key),
                format!("`{key}` only applies to a {kind} source"),
                format!("remove `{key}`, or use `{instead}` as the source"),
            )),
            None => Ok(()),
        }
    };
    let value = match given.first().copied() {
        Some("artifact") => {
            only("ref", "git", "git:")?;
            only("parallel", "git", "git:")?;
            only("sha256", "url", "url:")?;
            let a = get("artifact").unwrap_or(v);
            Source::Artifact {
                path: ctx.local_path(a, &join(p, "artifact"))?,
            }
        }
        Some("git") => {
            only("sha256", "url", "url:")?;
            let g = get("git").unwrap_or(v);
            let url = ctx.non_empty(g, &join(p, "git"))?;
            no_control_characters(ctx, &url, g.pos, &join(p, "git"))?;
            if url.starts_with('-') {
                return Err(ctx.err(
                    g.pos,
                    &join(p, "git"),
                    "a repository URL cannot start with `-`",
                ));
            }
            let reference = match get("ref") {
                Some(r) => {
                    let r_s = ctx.non_empty(r, &join(p, "ref"))?;
                    if r_s.starts_with('-') || r_s.contains(char::is_whitespace) {
                        return Err(ctx.err(r.pos, &join(p, "ref"), "not a valid git ref"));
                    }
                    r_s
                }
                None => "HEAD".to_owned(),
            };
            let parallel = match get("parallel") {
                Some(n) => Some(ctx.int(n, &join(p, "parallel"), 1, 100_000)? as usize),
                None => None,
            };
            Source::Git {
                url,
                reference,
                known_hosts: None,
                parallel,
            }
        }
        Some(_) => {
            only("ref", "git", "git:")?;
            only("parallel", "git", "git:")?;
            let u = get("url").unwrap_or(v);
            let url = ctx.non_empty(u, &join(p, "url"))?;
            if let Err(why) = crate::util::check_tarball_url(&url) {
                return Err(ctx.err_hint(u.pos, &join(p, "url"), why.0, why.1));
            }
            let Some(d) = get("sha256") else {
                return Err(ctx.err_hint(
                    u.pos,
                    p,
                    "a `url:` source needs `sha256:`, the tarball's SHA-256",
                    "add `sha256: <64 hex digits>` (`sha256sum app.tar.gz` prints it)",
                ));
            };
            let sha256 = ctx.non_empty(d, &join(p, "sha256"))?;
            let Some(sha256) = crate::util::check_sha256(&sha256) else {
                return Err(ctx.err_hint(
                    d.pos,
                    &join(p, "sha256"),
                    "not a SHA-256 digest",
                    "write the 64 hex digits `sha256sum app.tar.gz` prints",
                ));
            };
            Source::Url { url, sha256 }
        }
        None => {
            if let Some(d) = get("sha256") {
                return Err(ctx.err_hint(
                    d.pos,
                    &join(p, "sha256"),
                    "`sha256` without `url`",
                    "add `url: <https URL of the tarball>`",
                ));
            }
            return Err(ctx.err_hint(
                v.pos,
                p,
                "no source given",
                "write `artifact: ./build` (a directory or tarball), `git: <url>` with `ref: \
                 main`, or `url: <https URL of a tarball>` with `sha256:`",
            ));
        }
    };
    Ok(At {
        value,
        pos: v.pos,
        path: p.to_owned(),
    })
}

pub(super) fn shared(ctx: &Doc, v: &Node, p: &str) -> Result<Shared> {
    let mut out = Shared::default();
    let mut all: Vec<(String, Pos, String)> = Vec::new();
    for (key, list, _) in ctx.entries(v, p, SHARED_KEYS)? {
        let kp = join(p, key);
        for (i, (path, pos)) in ctx.list_of_strings(list, &kp)?.into_iter().enumerate() {
            let item_path = format!("{kp}[{i}]");
            let clean = shared_path(ctx, &path, pos, &item_path)?;
            if let Some((other, _, other_path)) = all.iter().find(|(o, _, _)| overlaps(o, &clean)) {
                return Err(ctx.err_hint(
                    pos,
                    &item_path,
                    format!("`{clean}` overlaps `{other}`"),
                    format!("shared paths must not contain one another; see {other_path}"),
                ));
            }
            all.push((clean.clone(), pos, item_path));
            if key == "files" {
                out.files.push(clean);
            } else {
                out.dirs.push(clean);
            }
        }
    }
    Ok(out)
}

pub(super) fn overlaps(a: &str, b: &str) -> bool {
    a == b || b.starts_with(&format!("{a}/")) || a.starts_with(&format!("{b}/"))
}

/// A shared path: relative, inside the release, normalised (no `.`, no trailing `/`).
pub(super) fn shared_path(ctx: &Doc, path: &str, pos: Pos, key_path: &str) -> Result<String> {
    no_control_characters(ctx, path, pos, key_path)?;
    let p = Path::new(path);
    if p.is_absolute() {
        return Err(ctx.err_hint(
            pos,
            key_path,
            format!("`{path}` is absolute"),
            "shared paths are relative to the release, e.g. `storage` or `.env`",
        ));
    }
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => {
                return Err(ctx.err_hint(
                    pos,
                    key_path,
                    format!("`{path}` leaves the release directory"),
                    "shared paths must stay inside the release: no `..`",
                ));
            }
        }
    }
    if parts.is_empty() {
        return Err(ctx.err(pos, key_path, "must name a path inside the release"));
    }
    let clean = parts.join("/");
    if clean == "REVISION" {
        return Err(ctx.err(
            pos,
            key_path,
            "`REVISION` is written by ship and cannot be shared",
        ));
    }
    Ok(clean)
}

pub(super) fn env(ctx: &Doc, v: &Node, p: &str) -> Result<BTreeMap<String, EnvVar>> {
    let mut out = BTreeMap::new();
    for (name, value, pos) in ctx.map(v, p)? {
        let kp = join(p, name);
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(ctx.err_hint(
                pos,
                &kp,
                "invalid environment variable name",
                "use letters, digits and `_`, not starting with a digit",
            ));
        }
        let var = match &value.kind {
            Kind::Map(_) => env_entry(ctx, name, value, &kp)?,
            _ => EnvVar {
                name: name.to_owned(),
                value: ctx.scalar_text(value, &kp)?,
                secret: false,
                from_command: None,
            },
        };
        out.insert(name.to_owned(), var);
    }
    Ok(out)
}

/// One `env` entry written as a mapping: `{ value | from_env | from_command, secret }`.
fn env_entry(ctx: &Doc, name: &str, value: &Node, kp: &str) -> Result<EnvVar> {
    let mut given: Vec<(&str, &Node)> = Vec::new();
    let mut secret = false;
    for (k, n, _) in ctx.entries(value, kp, SECRET_KEYS)? {
        match k {
            "secret" => secret = ctx.boolean(n, &join(kp, k))?,
            _ => given.push((k, n)),
        }
    }
    let [(how, n)] = given[..] else {
        let (pos, message) = match given.get(1) {
            Some((_, n)) => (
                n.pos,
                "give one of `value`, `from_env`, `from_command`, not several",
            ),
            None => (value.pos, "missing `value` (or `from_env`, `from_command`)"),
        };
        return Err(ctx.err_hint(
            pos,
            kp,
            message,
            format!(
                "write `{name}: {{ value: \"...\", secret: true }}`, `{name}: {{ from_env: VAR, \
                 secret: true }}` or `{name}: {{ from_command: \"op read ...\", secret: true }}`"
            ),
        ));
    };
    let at = join(kp, how);
    let mut var = EnvVar {
        name: name.to_owned(),
        value: String::new(),
        secret,
        from_command: None,
    };
    match how {
        "value" => var.value = ctx.scalar_text(n, &at)?,
        "from_env" => {
            let from = ctx.non_empty(n, &at)?;
            if !super::super::interpolate::is_name(&from) {
                return Err(ctx.err(n.pos, &at, format!("`{from}` is not a variable name")));
            }
            var.value = (ctx.lookup)(&from).ok_or_else(|| {
                ctx.err_hint(
                    n.pos,
                    &at,
                    format!("{from} is not set in the environment"),
                    format!("set {from} (e.g. from the CI's secrets) before running ship"),
                )
            })?;
        }
        _ => {
            var.from_command = Some(SecretCommand {
                command: ctx.non_empty(n, &at)?,
                at: format!(
                    "{}:{}:{}: {at}",
                    ctx.file.display(),
                    n.pos.line,
                    n.pos.column
                ),
                dir: ctx
                    .file
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            });
        }
    }
    Ok(var)
}

/// `env_file:` — a dotenv file on the controller, read now; every value in it is secret.
/// Lines are `NAME=value` or `export NAME=value`; a value may be in single quotes (taken as
/// is) or double quotes (`\n`, `\"` and `\\` understood); `#` starts a comment line.
pub(super) fn env_file(ctx: &Doc, v: &Node, p: &str) -> Result<EnvFile> {
    let path = ctx.local_path(v, p)?;
    let text = std::fs::read_to_string(&path).map_err(|e| {
        ctx.err_hint(
            v.pos,
            p,
            format!("cannot read {}: {e}", path.display()),
            "the path is relative to the inventory; write the file before running ship (in CI, \
             from the CI's secrets)",
        )
    })?;
    let mut vars = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |what: &str| {
            ctx.err_hint(
                v.pos,
                p,
                format!("{}:{}: {what}", path.display(), i + 1),
                "lines are NAME=value, `export NAME=value`, or # comments",
            )
        };
        let body = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, raw)) = body.split_once('=') else {
            return Err(bad("not NAME=value"));
        };
        let name = name.trim();
        if !super::super::interpolate::is_name(name) {
            return Err(bad(&format!("`{name}` is not a variable name")));
        }
        let value = dotenv_value(raw.trim()).ok_or_else(|| bad("unterminated quote"))?;
        vars.insert(
            name.to_owned(),
            EnvVar {
                name: name.to_owned(),
                value,
                secret: true,
                from_command: None,
            },
        );
    }
    Ok(EnvFile { path, vars })
}

/// A dotenv value: quoted, or bare up to a ` #` comment.
fn dotenv_value(raw: &str) -> Option<String> {
    if let Some(rest) = raw.strip_prefix('\'') {
        return rest.find('\'').map(|end| rest[..end].to_owned());
    }
    if let Some(rest) = raw.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Some(out),
                '\\' => match chars.next()? {
                    'n' => out.push('\n'),
                    other => out.push(other),
                },
                c => out.push(c),
            }
        }
        return None;
    }
    let bare = match raw.find(" #") {
        Some(i) => &raw[..i],
        None => raw,
    };
    Some(bare.trim_end().to_owned())
}

/// The steps that apply to a host with these roles.
pub(super) fn for_roles(steps: Option<Vec<StepSpec>>, roles: &[String]) -> Vec<StepSpec> {
    steps
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.roles.is_empty() || s.roles.iter().any(|r| roles.contains(r)))
        .collect()
}

/// A list of steps: each a command string, or `{ run: …, sudo: true, roles: [...] }`.
pub(super) fn steps(ctx: &Doc, v: &Node, p: &str) -> Result<Vec<StepSpec>> {
    let Kind::Seq(items) = &v.kind else {
        return Err(ctx.expected(v, p, "a list of commands"));
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let ip = format!("{p}[{i}]");
        if !matches!(item.kind, Kind::Map(_)) {
            out.push(StepSpec::plain(&ctx.non_empty(item, &ip)?));
            continue;
        }
        let mut run = None;
        let mut sudo = false;
        let mut roles = Vec::new();
        let mut parallel = None;
        for (k, n, _) in ctx.entries(item, &ip, STEP_KEYS)? {
            let kp = join(&ip, k);
            match k {
                "run" => run = Some(ctx.non_empty(n, &kp)?),
                "sudo" => sudo = ctx.boolean(n, &kp)?,
                "parallel" => parallel = Some(ctx.int(n, &kp, 1, 100_000)? as usize),
                _ => roles = strings(ctx, n, &kp)?,
            }
        }
        let Some(run) = run else {
            return Err(ctx.err_hint(
                item.pos,
                &ip,
                "missing `run`",
                "write `{ run: \"systemctl reload php8.3-fpm\", sudo: true }`",
            ));
        };
        out.push(StepSpec {
            run,
            sudo,
            roles,
            parallel,
        });
    }
    Ok(out)
}

pub(super) fn strings(ctx: &Doc, v: &Node, p: &str) -> Result<Vec<String>> {
    Ok(ctx
        .list_of_strings(v, p)?
        .into_iter()
        .map(|(s, _)| s)
        .collect())
}

pub(super) fn health_check(ctx: &Doc, v: &Node, p: &str) -> Result<HealthCheck> {
    let mut h = HealthCheck::default();
    let mut url = None;
    let mut command = None;
    let mut expect_status = 200u16;
    let mut expect_body = None;
    for (key, n, _) in ctx.entries(v, p, HEALTH_KEYS)? {
        let kp = join(p, key);
        match key {
            "url" => {
                let u = ctx.non_empty(n, &kp)?;
                no_control_characters(ctx, &u, n.pos, &kp)?;
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(ctx.err_hint(
                        n.pos,
                        &kp,
                        format!("`{u}` is not an http:// or https:// URL"),
                        "the URL is fetched on each host, e.g. http://localhost/up",
                    ));
                }
                url = Some((u, n.pos));
            }
            "command" => command = Some((ctx.non_empty(n, &kp)?, n.pos)),
            "expect_status" => expect_status = ctx.int(n, &kp, 100, 599)? as u16,
            "expect_body" => expect_body = Some(ctx.non_empty(n, &kp)?),
            "retries" => h.retries = ctx.int(n, &kp, 1, 1000)? as u32,
            "interval" => h.interval = ctx.duration(n, &kp)?,
            "timeout" => h.timeout = ctx.duration(n, &kp)?,
            _ => {
                h.on_failure = match ctx.string(n, &kp)?.as_str() {
                    "rollback" => OnFailure::Rollback,
                    "warn" => OnFailure::Warn,
                    other => {
                        return Err(ctx.err_hint(
                            n.pos,
                            &kp,
                            format!("unknown policy `{other}`"),
                            "use `rollback` (default: switch the fleet back) or `warn` (report only)",
                        ));
                    }
                }
            }
        }
    }
    h.probe = match (url, command) {
        (Some(_), Some((_, pos))) => {
            return Err(ctx.err_hint(
                pos,
                p,
                "both `url` and `command` are set",
                "a health check is either an HTTP URL or a command",
            ));
        }
        (Some((url, _)), None) => Some(Probe::Http {
            url,
            expect_status,
            expect_body,
        }),
        (None, Some((c, _))) => Some(Probe::Command(c)),
        (None, None) => None,
    };
    Ok(h)
}

pub(super) fn writable(ctx: &Doc, v: &Node, p: &str) -> Result<Writable> {
    let mut paths = Vec::new();
    let mut mode = "chmod".to_owned();
    let mut user = None;
    let mut chmod = "a+rwX".to_owned();
    for (key, n, _) in ctx.entries(v, p, WRITABLE_KEYS)? {
        let kp = join(p, key);
        match key {
            "paths" => {
                for (i, (path, pos)) in ctx.list_of_strings(n, &kp)?.into_iter().enumerate() {
                    paths.push(shared_path(ctx, &path, pos, &format!("{kp}[{i}]"))?);
                }
            }
            "mode" => mode = ctx.non_empty(n, &kp)?,
            "user" => {
                let u = ctx.non_empty(n, &kp)?;
                if !u
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                {
                    return Err(ctx.err(n.pos, &kp, "not a valid user name"));
                }
                user = Some(u);
            }
            _ => {
                let m = ctx.scalar_text(n, &kp)?;
                if m.is_empty() || !m.chars().all(|c| "ugoa+-=rwxXst,01234567".contains(c)) {
                    return Err(ctx.err_hint(
                        n.pos,
                        &kp,
                        format!("`{m}` is not a chmod mode"),
                        "write a symbolic mode such as `ug+rwX` or an octal one in quotes, \
                         e.g. \"0775\"",
                    ));
                }
                chmod = m;
            }
        }
    }
    if paths.is_empty() {
        return Err(ctx.err_hint(
            v.pos,
            p,
            "no `paths`",
            "write e.g. `writable: { paths: [storage, bootstrap/cache] }`",
        ));
    }
    let mode = match (mode.as_str(), user) {
        ("chmod", _) => WritableMode::Chmod(chmod),
        ("acl", Some(u)) => WritableMode::Acl(u),
        ("acl", None) => {
            return Err(ctx.err_hint(
                v.pos,
                p,
                "`mode: acl` needs the web server's `user`",
                "add e.g. `user: www-data`",
            ));
        }
        (other, _) => {
            return Err(ctx.err_hint(
                v.pos,
                &join(p, "mode"),
                format!("unknown mode `{other}`"),
                "use `chmod` (default) or `acl`",
            ));
        }
    };
    Ok(Writable { paths, mode })
}
