//! `ship ssh <stage> [host]`: an interactive shell on one host, in `deploy_to/current`, through
//! OpenSSH's own client with the inventory's settings: user, port, key, the inventory's
//! known_hosts and host-key policy (a changed key is always refused), the jump hosts with each
//! hop's own key, and the ssh config the inventory names.

use std::process::Command;

use super::{Global, exit};
use crate::error::{Error, Result};
use crate::inventory::{Host, HostKeyChecking, ProxyJump, SshConfig};
use crate::remote::quote;

/// The options every connection of `host` (the host itself and each jump host) is made with.
fn common(host: &Host) -> Vec<String> {
    let c = &host.config;
    let mut o = vec![
        "-o".to_owned(),
        format!("UserKnownHostsFile={}", c.known_hosts.display()),
        "-o".to_owned(),
        format!(
            "StrictHostKeyChecking={}",
            match c.host_key_checking {
                HostKeyChecking::Strict => "yes",
                HostKeyChecking::AcceptNew => "accept-new",
            }
        ),
    ];
    match &c.ssh_config {
        SshConfig::Default => {}
        SshConfig::Off => o.extend(["-F".to_owned(), "none".to_owned()]),
        SshConfig::File(f) => o.extend(["-F".to_owned(), f.display().to_string()]),
    }
    o
}

/// The command line (as one shell string, for a ProxyCommand) that reaches jump host `k` of the
/// chain and forwards to the next hop.
fn hop(host: &Host, chain: &[ProxyJump], k: usize) -> String {
    let j = &chain[k];
    let mut words = vec!["ssh".to_owned()];
    words.extend(common(host));
    if let Some(key) = j
        .identity_file
        .as_ref()
        .or(host.config.identity_file.as_ref())
    {
        words.extend(["-i".to_owned(), key.display().to_string()]);
    }
    if k > 0 {
        words.extend([
            "-o".to_owned(),
            format!("ProxyCommand={}", hop(host, chain, k - 1)),
        ]);
    }
    words.extend(["-W".to_owned(), "%h:%p".to_owned()]);
    if let Some(p) = j.port {
        words.extend(["-p".to_owned(), p.to_string()]);
    }
    let user = j.user.as_deref().unwrap_or(&host.config.user);
    words.push(format!("{user}@{}", j.host));
    words
        .iter()
        .map(|w| quote(w).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `ssh` command that opens an interactive shell in `deploy_to/current` on `host`.
pub fn command(host: &Host) -> Command {
    let c = &host.config;
    let mut cmd = Command::new("ssh");
    cmd.arg("-t")
        .args(common(host))
        .arg("-p")
        .arg(c.port.to_string());
    if let Some(key) = &c.identity_file {
        cmd.arg("-i").arg(key);
    }
    if let Some(chain) = c.proxy_jump.as_deref().filter(|c| !c.is_empty()) {
        cmd.arg("-o").arg(format!(
            "ProxyCommand={}",
            hop(host, chain, chain.len() - 1)
        ));
    }
    cmd.arg(format!("{}@{}", c.user, host.address))
        .arg(crate::remote::interactive_shell(&c.deploy_to));
    cmd
}

/// `ship ssh <stage> [host]`: the first host by default. Exits with ssh's status.
pub fn run(g: &Global, stage: &str, host: Option<&str>) -> Result<u8> {
    let stage = super::inspect::load_stage(g, stage)?;
    let h = match host {
        None => stage.hosts.first(),
        Some(name) => stage.hosts.iter().find(|h| h.name == name),
    };
    let Some(h) = h else {
        let names: Vec<&str> = stage.hosts.iter().map(|h| h.name.as_str()).collect();
        let name = host.unwrap_or_default();
        let hint = match crate::inventory::nearest(name, &names) {
            Some(n) => format!("did you mean `{n}`? hosts here: {}", names.join(", ")),
            None => format!("hosts here: {}", names.join(", ")),
        };
        return Err(
            Error::usage(format!("`{name}` is not a host of stage `{}`", stage.name)).hint(hint),
        );
    };
    if h.config.connection == crate::inventory::Connection::Local {
        return Err(Error::usage(format!(
            "{} is `connection: local`: it is this machine",
            h.name
        ))
        .hint(format!("cd {}", h.config.deploy_to)));
    }
    let status = command(h).status().map_err(|e| {
        Error::failed("cannot run ssh")
            .because(e)
            .hint("install OpenSSH's client (openssh-client); `ship ssh` uses it for the terminal")
    })?;
    Ok(status
        .code()
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(exit::FAILED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_carries_the_inventorys_settings_and_each_hops_key() {
        let text = "\
defaults:
  user: deploy
  port: 2222
  identity_file: /keys/deploy
  known_hosts: /keys/known_hosts
  deploy_to: /var/www/my app
  source: { artifact: . }
  ssh_config: false
stages:
  production:
    proxy_jump: ops@gate.example.com:2200,inner
    hosts:
      web-1: { address: 10.0.0.5 }
";
        let inv =
            crate::inventory::parse_inventory(std::path::Path::new("/srv/inventory.yaml"), text)
                .unwrap_or_else(|e| panic!("{e}"));
        let h = &inv.stage("production").expect("stage").hosts[0];
        let cmd = command(h);
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(cmd.get_program(), "ssh");
        assert_eq!(
            &args[..10],
            [
                "-t",
                "-o",
                "UserKnownHostsFile=/keys/known_hosts",
                "-o",
                "StrictHostKeyChecking=yes",
                "-F",
                "none",
                "-p",
                "2222",
                "-i"
            ]
        );
        let proxy = args
            .iter()
            .find(|a| a.starts_with("ProxyCommand="))
            .expect("proxy");
        // The inner hop is reached through the outer one, each with the keys and host keys.
        assert!(proxy.contains("deploy@inner"), "{proxy}");
        assert!(proxy.contains("ops@gate.example.com"), "{proxy}");
        assert!(proxy.contains("2200"), "{proxy}");
        assert!(proxy.contains("-W %h:%p"), "{proxy}");
        assert_eq!(args[args.len() - 2], "deploy@10.0.0.5");
        assert_eq!(
            args[args.len() - 1],
            "cd '/var/www/my app'/current 2>/dev/null || cd '/var/www/my app' || exit 1; exec \
             \"${SHELL:-/bin/sh}\" -l"
        );
    }
}
