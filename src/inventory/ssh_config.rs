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
    for host in &mut stage.hosts {
        let c = &mut host.config;
        if c.connection != Connection::Ssh {
            continue;
        }
        let file = match &c.ssh_config {
            SshConfig::Off => continue,
            SshConfig::Default => None,
            SshConfig::File(f) => Some(f.clone()),
        };
        let with = match resolve(&host.address, file.as_deref()) {
            Ok(m) => m,
            Err(e) if e.contains("No such file") || e.contains("not found") => {
                let wanted = file.clone().unwrap_or_else(|| home_path("~/.ssh/config"));
                if wanted.exists() && !ssh_missing_noted {
                    ssh_missing_noted = true;
                    notes.push(format!(
                        "no `ssh` program here, so {} is not read: ship uses the inventory's \
                         settings only (hint: install openssh-client, or set the hosts' \
                         settings in the inventory)",
                        wanted.display()
                    ));
                }
                continue;
            }
            Err(e) => {
                notes.push(format!(
                    "{}: the ssh config could not be read (`ssh -G`): {e}",
                    host.name
                ));
                continue;
            }
        };
        let Ok(base) = resolve(&host.address, Some(Path::new("/dev/null"))) else {
            continue;
        };
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
                    match ProxyJump::parse(j) {
                        Ok(pj) => c.proxy_jump = Some(pj),
                        Err(e) => notes.push(format!("{}: ssh config ProxyJump: {e}", host.name)),
                    }
                }
            }
        }
        if let Some(h) = changed("hostname").and_then(|v| v.first()) {
            c.alias = Some(std::mem::replace(&mut host.address, h.clone()));
        }
        // The jump host's own entry (an alias, its user and port), as ssh would read it.
        if let Some(j) = &mut c.proxy_jump {
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
            }
        }
    }
    notes
}
