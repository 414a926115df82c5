//! `ship init`: write a commented inventory for a new project.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use super::exit;
use crate::error::{Error, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct InitArgs {
    /// Where to write the inventory.
    #[arg(short, long, default_value = "inventory.yaml")]
    pub inventory: PathBuf,
    /// The stage to create.
    #[arg(long, default_value = "production")]
    pub stage: String,
    /// The hosts: addresses or `name=address`, separated by commas (asked on a terminal).
    #[arg(long = "host", value_name = "HOSTS", value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Where releases live on the hosts (asked on a terminal).
    #[arg(long, value_name = "PATH")]
    pub deploy_to: Option<String>,
    /// The SSH user (default: deploy).
    #[arg(long, default_value = "deploy")]
    pub user: String,
    /// What to deploy: a git URL, or a local directory or tarball (default: ./build).
    #[arg(long, value_name = "GIT_URL|PATH")]
    pub source: Option<String>,
    /// Start from a framework's settings.
    #[arg(long, value_parser = ["laravel"])]
    pub recipe: Option<String>,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

fn ask(question: &str, default: Option<&str>) -> Option<String> {
    let mut err = std::io::stderr();
    match default {
        Some(d) => {
            let _ = write!(err, "{question} [{d}]: ");
        }
        None => {
            let _ = write!(err, "{question}: ");
        }
    }
    let _ = err.flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).ok()?;
    let answer = line.trim();
    if answer.is_empty() {
        default.map(str::to_owned)
    } else {
        Some(answer.to_owned())
    }
}

/// `name: address` pairs from `--host` values: `web-1=10.0.0.1` or a bare address (named
/// `web-N` in order).
fn host_entries(values: &[String]) -> std::result::Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, v) in values
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .enumerate()
    {
        let (name, address) = match v.split_once('=') {
            Some((n, a)) => (n.trim().to_owned(), a.trim().to_owned()),
            None => (format!("web-{}", i + 1), v.to_owned()),
        };
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !name_ok {
            return Err(format!(
                "`{name}` is not a valid host name (letters, digits, `.`, `_`, `-`)"
            ));
        }
        if address.is_empty() || address.starts_with('-') || address.contains(char::is_whitespace) {
            return Err(format!(
                "`{address}` is not a valid host name or IP address"
            ));
        }
        out.push((name, address));
    }
    Ok(out)
}

/// A YAML double-quoted string.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// The inventory text: every setting a new project needs, commented.
pub fn render(
    stage: &str,
    hosts: &[(String, String)],
    deploy_to: &str,
    user: &str,
    source: &str,
    recipe: Option<&str>,
) -> String {
    let is_git = source.contains("://") || source.starts_with("git@") || source.ends_with(".git");
    let source_line = if is_git {
        format!("  source:\n    git: {}\n    ref: main\n", q(source))
    } else {
        format!("  source:\n    artifact: {}\n", q(source))
    };
    let mut s = String::from(
        "# ship inventory. Reference: docs/inventory.md — `ship config <stage>` prints the\n\
         # settings each host ends up with; `ship check <stage>` checks the hosts.\n\n\
         defaults:\n",
    );
    s.push_str(&format!("  user: {}\n", q(user)));
    s.push_str(&format!(
        "  deploy_to: {}                 # releases/, shared/ and current live here\n",
        q(deploy_to)
    ));
    s.push_str("  keep_releases: 5\n");
    s.push_str(&source_line);
    match recipe {
        Some(r) => s.push_str(&format!(
            "  recipe: {r}                         # shared .env and storage/, composer, artisan caches,\n\
             \x20                                         # migrations once, queue:restart after the switch\n\
             \x20 # health_check:\n\
             \x20 #   url: http://localhost/up\n"
        )),
        None => s.push_str(
            "  shared:\n\
             \x20   files: [.env]                    # kept in shared/ across releases\n\
             \x20   dirs: [storage]\n\
             \x20 build:                             # run in the new release on every host\n\
             \x20   - echo \"build steps go here\"\n\
             \x20 # run_once: [\"./migrate\"]          # on one host, before any host switches\n\
             \x20 # after_switch: [\"./reload\"]       # on every host, after its switch\n\
             \x20 # health_check:\n\
             \x20 #   url: http://localhost/\n",
        ),
    }
    s.push_str(&format!("\nstages:\n  {stage}:\n    hosts:\n"));
    for (name, address) in hosts {
        s.push_str(&format!("      {name}: {{ address: {} }}\n", q(address)));
    }
    s
}

pub fn run(a: &InitArgs) -> Result<u8> {
    if a.inventory.exists() && !a.force {
        return Err(Error::usage(format!(
            "{} exists; ship init never overwrites it",
            a.inventory.display()
        ))
        .hint("pass --force, or -i to write another file"));
    }
    let tty = std::io::stdin().is_terminal();
    let mut host_values = a.hosts.clone();
    if host_values.is_empty() && tty {
        if let Some(v) = ask("Hosts (addresses or name=address, comma-separated)", None) {
            host_values = v.split(',').map(str::to_owned).collect();
        }
    }
    let deploy_to = match (&a.deploy_to, tty) {
        (Some(d), _) => Some(d.clone()),
        (None, true) => ask("Deploy path on the hosts", Some("/var/www/app")),
        (None, false) => None,
    };
    let (Some(deploy_to), false) = (deploy_to, host_values.is_empty()) else {
        return Err(
            Error::usage("ship init needs the hosts and the deploy path").hint(
                "on a terminal it asks; elsewhere pass --host 203.0.113.10,203.0.113.11 \
                 --deploy-to /var/www/app",
            ),
        );
    };
    let hosts = match host_entries(&host_values) {
        Ok(h) if !h.is_empty() => h,
        Ok(_) => return Err(Error::usage("no hosts given")),
        Err(e) => return Err(Error::usage(format!("--host: {e}"))),
    };
    let source = a.source.clone().unwrap_or_else(|| "./build".to_owned());
    let text = render(
        &a.stage,
        &hosts,
        &deploy_to,
        &a.user,
        &source,
        a.recipe.as_deref(),
    );
    // What we write must be an inventory ship accepts.
    crate::inventory::parse_inventory(&a.inventory, &text)?;
    std::fs::write(&a.inventory, text)
        .map_err(|e| Error::failed(format!("cannot write {}", a.inventory.display())).because(e))?;
    println!(
        "wrote {} (stage `{}`, {} host(s)). Next: `ship check {}`, then `ship {}`",
        a.inventory.display(),
        a.stage,
        hosts.len(),
        a.stage,
        a.stage
    );
    Ok(exit::OK)
}
