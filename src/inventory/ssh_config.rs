//! OpenSSH client configuration for inventory hosts, resolved with `ssh -G`, so `~/.ssh/config`
//! means exactly what it means to `ssh`: `Host` aliases and patterns, `Match`, `Include`,
//! tokens. Only what the config file changes is taken: `ssh -G` with the file is compared with
//! `ssh -G -F /dev/null`, and the differences in HostName, User, Port, IdentityFile and
//! ProxyJump fill in whatever the inventory did not set itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Connection, ProxyJump, SshConfig, Stage};

type Options = BTreeMap<String, Vec<String>>;

/// The keywords whose values ship takes from the config.
const TAKEN: &[&str] = &["hostname", "user", "port", "identityfile", "proxyjump"];

/// A small reader of ssh config files, for machines without an `ssh` program: `Host` blocks
/// with `*`, `?` and `!` patterns, first value wins, and HostName, User, Port, IdentityFile,
/// ProxyJump. What it cannot handle (Match, Include, ProxyCommand, `%` tokens) is returned as
/// notes rather than silently ignored.
pub fn parse_config(text: &str, name: &str) -> (Options, Vec<String>) {
    let mut out = Options::new();
    let mut notes = Vec::new();
    let mut applies = true;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, rest) = match line.split_once(|c: char| c.is_whitespace() || c == '=') {
            Some((k, r)) => (
                k.to_lowercase(),
                r.trim_start_matches([' ', '\t', '=']).trim(),
            ),
            None => (line.to_lowercase(), ""),
        };
        let value = rest.trim_matches('"').to_owned();
        match key.as_str() {
            "host" => {
                let pats: Vec<&str> = rest.split_whitespace().collect();
                let negated = pats
                    .iter()
                    .any(|p| p.strip_prefix('!').is_some_and(|p| glob(p, name)));
                applies = !negated && pats.iter().any(|p| !p.starts_with('!') && glob(p, name));
            }
            "match" | "include" => notes.push(format!(
                "line {}: `{}` cannot be evaluated without ssh; the lines it governs may be \
                 applied wrongly",
                n + 1,
                key
            )),
            k if applies && k == "proxycommand" => {
                out.entry(k.to_owned()).or_insert_with(|| vec![value]);
            }
            k if applies && TAKEN.contains(&k) => {
                if value.contains('%') {
                    notes.push(format!(
                        "line {}: `%` tokens in {k} are not expanded without ssh",
                        n + 1
                    ));
                    continue;
                }
                let entry = out.entry(k.to_owned()).or_default();
                if entry.is_empty() || k == "identityfile" {
                    entry.push(value);
                }
            }
            _ => {}
        }
    }
    (out, notes)
}

/// ssh's `Host` pattern match: `*` any run, `?` any one character.
fn glob(pattern: &str, name: &str) -> bool {
    fn m(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => m(&p[1..], n) || (!n.is_empty() && m(p, &n[1..])),
            (Some(b'?'), Some(_)) => m(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => m(&p[1..], &n[1..]),
            _ => false,
        }
    }
    m(pattern.as_bytes(), name.as_bytes())
}

/// `ssh -G` with and without the config (`-F /dev/null`) for each host that wants it, on a
/// few threads (each is a process start).
fn resolve_all(
    hosts: &[super::Host],
    wanted: &[Option<Option<PathBuf>>],
) -> Vec<(Result<Options, String>, Options)> {
    let one = |i: usize| match &wanted[i] {
        None => (Ok(Options::new()), Options::new()),
        Some(file) => (
            resolve(&hosts[i].address, file.as_deref()),
            resolve(&hosts[i].address, Some(Path::new("/dev/null"))).unwrap_or_default(),
        ),
    };
    let n = hosts.len();
    let threads = n.clamp(1, 8);
    let mut out: Vec<Option<(Result<Options, String>, Options)>> = (0..n).map(|_| None).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let one = &one;
                s.spawn(move || {
                    (t..n)
                        .step_by(threads)
                        .map(|i| (i, one(i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            if let Ok(done) = h.join() {
                for (i, r) in done {
                    out[i] = Some(r);
                }
            }
        }
    });
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| (Err("resolving failed".into()), Options::new())))
        .collect()
}

/// `ssh -G` for `name`, as key → values (lower-case keys, as ssh prints them).
fn resolve(name: &str, file: Option<&Path>) -> Result<Options, String> {
    let mut cmd = Command::new("ssh");
    cmd.arg("-G");
    if let Some(f) = file {
        cmd.arg("-F").arg(f);
    }
    let out = cmd
        .arg("--")
        .arg(name)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    let mut map = Options::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((k, v)) = line.split_once(' ') {
            map.entry(k.to_owned()).or_default().push(v.to_owned());
        }
    }
    Ok(map)
}

/// Whether the client configuration ssh reads by default (`~/.ssh/config`, the system-wide
/// `/etc/ssh/ssh_config`, and what they include) could change anything ship uses. When no
/// file sets any of [`TAKEN`], ProxyCommand (which ship reports) or Match (which only ssh can
/// evaluate), `ssh -G` cannot differ from `ssh -G -F /dev/null` in what ship reads, and is not
/// run (it costs a process per host, twice). Unsure means yes.
fn default_config_matters() -> bool {
    let user = home_path("~/.ssh/config");
    let system = Path::new("/etc/ssh/ssh_config");
    [
        (user.as_path(), home_path("~/.ssh")),
        (system, PathBuf::from("/etc/ssh")),
    ]
    .iter()
    .any(|(file, base)| file_matters(file, base, 0))
}

fn file_matters(file: &Path, base: &Path, depth: usize) -> bool {
    if depth > 8 {
        return true;
    }
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
        Err(_) => return true,
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, rest) = line
            .split_once(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or((line, ""));
        let key = key.to_lowercase();
        if TAKEN.contains(&key.as_str()) || key == "proxycommand" || key == "match" {
            return true;
        }
        if key == "include" {
            for pattern in rest.trim_start_matches([' ', '\t', '=']).split_whitespace() {
                let pattern = pattern.trim_matches('"');
                let path = if pattern.starts_with('~') {
                    home_path(pattern)
                } else {
                    base.join(pattern)
                };
                match expand(&path) {
                    Some(files) => {
                        if files.iter().any(|f| file_matters(f, base, depth + 1)) {
                            return true;
                        }
                    }
                    None => return true,
                }
            }
        }
    }
    false
}

/// The files an `Include` path names: wildcards only in its last component (`None`: a
/// pattern this cannot expand, so the caller assumes the worst).
fn expand(path: &Path) -> Option<Vec<PathBuf>> {
    let name = path.file_name()?.to_str()?;
    let dir = path.parent()?;
    if dir.to_str()?.contains(['*', '?', '[', '%']) {
        return None;
    }
    if !name.contains(['*', '?']) {
        return Some(vec![path.to_path_buf()]);
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Some(Vec::new());
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| glob(name, n)))
        .map(|e| e.path())
        .collect();
    files.sort();
    Some(files)
}

fn home_path(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// Fill in the stage's ssh hosts from the OpenSSH client configuration. Returns warnings: what
/// could not be applied, and why.
pub fn apply(stage: &mut Stage) -> Vec<String> {
    let mut notes = Vec::new();
    let mut ssh_missing_noted = false;
    let default_matters = std::sync::LazyLock::new(default_config_matters);
    // `ssh -G` for every host that needs it, with and without the config, a few at a time.
    let wanted: Vec<Option<Option<PathBuf>>> = stage
        .hosts
        .iter()
        .map(|h| match (&h.config.connection, &h.config.ssh_config) {
            (Connection::Ssh, SshConfig::File(f)) => Some(Some(f.clone())),
            (Connection::Ssh, SshConfig::Default) if *default_matters => Some(None),
            _ => None,
        })
        .collect();
    let resolved = resolve_all(&stage.hosts, &wanted);
    for ((host, want), (with, base)) in stage.hosts.iter_mut().zip(wanted).zip(resolved) {
        let c = &mut host.config;
        let Some(file) = want else {
            continue;
        };
        let with = match with {
            Ok(m) => m,
            Err(e) if e.contains("No such file") || e.contains("not found") => {
                // No ssh here: read the file ourselves, and say what could not be handled.
                let wanted = file.clone().unwrap_or_else(|| home_path("~/.ssh/config"));
                let Ok(text) = std::fs::read_to_string(&wanted) else {
                    continue;
                };
                let (parsed, problems) = parse_config(&text, &host.address);
                if !ssh_missing_noted {
                    ssh_missing_noted = true;
                    notes.push(format!(
                        "no `ssh` program here: {} is read by ship's own reader, which takes \
                         Host blocks with HostName, User, Port, IdentityFile and ProxyJump only \
                         (hint: install openssh-client for ssh's exact semantics)",
                        wanted.display()
                    ));
                    let shown = wanted.display().to_string();
                    notes.extend(problems.into_iter().map(|p| format!("{shown}: {p}")));
                }
                parsed
            }
            Err(e) => {
                notes.push(format!(
                    "{}: the ssh config could not be read (`ssh -G`): {e}",
                    host.name
                ));
                continue;
            }
        };
        // What the file changes: ssh's answer without any file, or nothing at all when ship
        // read the file itself.
        let changed = |key: &str| -> Option<&Vec<String>> {
            let v = with.get(key)?;
            (base.get(key) != Some(v)).then_some(v)
        };
        if let Some(proxy) = changed("proxycommand") {
            notes.push(format!(
                "{}: the ssh config sets ProxyCommand `{}`, which ship does not run; it connects \
                 directly (hint: use ProxyJump, or `proxy_jump:` in the inventory)",
                host.name,
                proxy.join(" ")
            ));
        }
        if !c.explicit.user {
            if let Some(u) = changed("user").and_then(|v| v.first()) {
                c.user = u.clone();
            }
        }
        if !c.explicit.port {
            if let Some(p) = changed("port").and_then(|v| v.first()) {
                match p.parse() {
                    Ok(port) => c.port = port,
                    Err(_) => notes.push(format!("{}: ssh config port `{p}` ignored", host.name)),
                }
            }
        }
        if !c.explicit.identity_file {
            if let Some(files) = changed("identityfile") {
                if let Some(f) = files.iter().map(|f| home_path(f)).find(|p| p.exists()) {
                    c.identity_file = Some(f);
                }
            }
        }
        if !c.explicit.proxy_jump {
            if let Some(j) = changed("proxyjump").and_then(|v| v.first()) {
                if j != "none" {
                    match ProxyJump::parse_chain(j) {
                        Ok(pj) => c.proxy_jump = Some(pj),
                        Err(e) => notes.push(format!("{}: ssh config ProxyJump: {e}", host.name)),
                    }
                }
            }
        }
        if let Some(h) = changed("hostname").and_then(|v| v.first()) {
            c.alias = Some(std::mem::replace(&mut host.address, h.clone()));
        }
        // Each jump host's own entry (an alias, its user and port), as ssh would read it.
        for j in c.proxy_jump.iter_mut().flatten() {
            if let (Ok(w), Ok(b)) = (
                resolve(&j.host, file.as_deref()),
                resolve(&j.host, Some(Path::new("/dev/null"))),
            ) {
                let jchanged = |key: &str| -> Option<String> {
                    let v = w.get(key)?;
                    (b.get(key) != Some(v))
                        .then(|| v.first().cloned())
                        .flatten()
                };
                if j.user.is_none() {
                    j.user = jchanged("user");
                }
                if j.port.is_none() {
                    j.port = jchanged("port").and_then(|p| p.parse().ok());
                }
                if let Some(h) = jchanged("hostname") {
                    j.host = h;
                }
                if let Some(files) = w
                    .get("identityfile")
                    .filter(|v| b.get("identityfile") != Some(*v))
                {
                    j.identity_file = files.iter().map(|f| home_path(f)).find(|p| p.exists());
                }
            }
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_reader_takes_the_first_value_and_reports_what_it_cannot_handle() {
        let text = "\
# comment
Host app-?
  HostName 10.0.0.5
  User deploy
Host app-1 !app-2
  Port 2222
Host *
  User nobody
  IdentityFile ~/.ssh/id_deploy
  ProxyJump jump@bastion
  ProxyCommand nc %h %p
Match exec \"true\"
  User other
Host legacy
  HostName %h.internal
";
        let (o, notes) = parse_config(text, "app-1");
        let get = |k: &str| o.get(k).cloned().unwrap_or_default();
        assert_eq!(get("hostname"), ["10.0.0.5"]);
        assert_eq!(get("user"), ["deploy"], "the first value wins");
        assert_eq!(get("port"), ["2222"]);
        assert_eq!(get("identityfile"), ["~/.ssh/id_deploy"]);
        assert_eq!(get("proxyjump"), ["jump@bastion"]);
        assert_eq!(get("proxycommand"), ["nc %h %p"]);
        assert!(
            notes
                .iter()
                .any(|n| n.contains("line 12: `match` cannot be evaluated"))
        );
        // `!app-2` excludes app-2 from that block; `app-?` still matches it.
        let (o, _) = parse_config(text, "app-2");
        assert_eq!(o.get("port"), None);
        assert_eq!(o["user"], ["deploy"]);
        let (o, notes) = parse_config(text, "legacy");
        assert_eq!(o.get("hostname"), None);
        assert!(notes.iter().any(|n| n.contains("`%` tokens in hostname")));
        assert!(glob("*.example.com", "Web.EXAMPLE.com"));
        assert!(!glob("web?", "web10"));
    }

    #[test]
    fn only_a_config_that_sets_what_ship_uses_is_resolved_with_ssh() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let write = |name: &str, text: &str| {
            let p = d.join(name);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
            std::fs::write(&p, text).expect("write");
            p
        };
        // Debian's stock system file: nothing ship uses.
        let stock = write(
            "ssh_config",
            "# comment\nInclude conf.d/*.conf\nHost *\n    SendEnv LANG LC_*\n    \
             HashKnownHosts yes\n    GSSAPIAuthentication yes\n",
        );
        assert!(!file_matters(&stock, d, 0));
        assert!(!file_matters(&d.join("missing"), d, 0));
        // An included file that sets a port, or a user.
        write("conf.d/10-ports.conf", "Host web-*\n  Port 2222\n");
        assert!(file_matters(&stock, d, 0));
        write("conf.d/10-ports.conf", "Host web-*\n  Compression yes\n");
        assert!(!file_matters(&stock, d, 0));
        for line in [
            "User deploy",
            "hostname=10.0.0.5",
            "IdentityFile ~/.ssh/deploy",
            "ProxyJump bastion",
            "ProxyCommand nc %h %p",
            "Match host web-1",
        ] {
            let f = write("user_config", &format!("Host x\n  {line}\n"));
            assert!(file_matters(&f, d, 0), "{line}");
        }
        // An Include this cannot expand: assume it matters.
        let f = write("odd", "Include /etc/*/x.conf\n");
        assert!(file_matters(&f, d, 0));
        // An Include of itself does not loop forever.
        let f = write("loop", "Include loop\n");
        assert!(file_matters(&f, d, 0));
    }
}
