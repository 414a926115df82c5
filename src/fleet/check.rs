//! `ship check`: can every host take a deploy, and is what the deploy needs on this machine in
//! place? Nothing that matters is changed (a scratch directory under `deploy_to/.ship` is made
//! and removed for the rename proof).

use std::path::Path;

use serde::Serialize;

use super::inspect::each_host;
use super::lock::HeldLock;
use crate::inventory::{Host, Probe, Source, Stage};
use crate::remote::{self, Preflight};
use crate::transport::{ConnectOptions, Purpose};

/// The longest one check command may take on a host.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// One line of `ship check` on one host.
#[derive(Debug, Clone, Serialize)]
pub struct CheckItem {
    pub check: &'static str,
    /// `pass`, `warn` or `fail`.
    pub result: &'static str,
    pub detail: String,
}

/// `ship check` on one host.
#[derive(Debug, Clone, Serialize)]
pub struct HostCheck {
    pub host: String,
    pub items: Vec<CheckItem>,
}

impl HostCheck {
    pub fn failed(&self) -> bool {
        self.items.iter().any(|i| i.result == "fail")
    }
}

/// Below this much free space on the deploy filesystem, `ship check` fails.
const MIN_FREE_KB: u64 = 100 * 1024;

fn item(check: &'static str, result: &'static str, detail: impl Into<String>) -> CheckItem {
    CheckItem {
        check,
        result,
        detail: detail.into(),
    }
}

/// Check every host can take a deploy, changing nothing that matters (a scratch directory
/// under `deploy_to/.ship` is made and removed for the rename proof).
pub async fn check(stage: &Stage, options: &ConnectOptions, tools: &[&str]) -> Vec<HostCheck> {
    let unpacked_kb = unpacked_kb(stage);
    each_host(stage, options, |host, conn| async move {
        let mut items = Vec::new();
        let conn = match conn {
            Ok(c) => {
                items.push(item(
                    "connect",
                    "pass",
                    format!(
                        "{}@{}:{}, host key verified",
                        host.config.user, host.address, host.config.port
                    ),
                ));
                c
            }
            Err(e) => {
                items.push(item("connect", "fail", e));
                return HostCheck {
                    host: host.name.clone(),
                    items,
                };
            }
        };
        let d = &host.config.deploy_to;
        let t = host.config.timeouts.step.min(CHECK_TIMEOUT);
        let pf = match conn
            .run(
                Purpose::reads("check", "preflight"),
                &remote::preflight(d, tools, false),
                None,
                None,
                t,
            )
            .await
        {
            Ok(o) if o.success() => Preflight::parse(&o.stdout_text()),
            Ok(o) => {
                items.push(item("deploy_to", "fail", o.last_lines(3).join(" / ")));
                conn.close().await;
                return HostCheck {
                    host: host.name.clone(),
                    items,
                };
            }
            Err(e) => {
                items.push(item("deploy_to", "fail", e.to_string()));
                conn.close().await;
                return HostCheck {
                    host: host.name.clone(),
                    items,
                };
            }
        };
        items.push(if !pf.writable {
            item(
                "deploy_to",
                "fail",
                format!(
                    "{d} is not writable by `{}` (hint: create it and chown it to the deploy user)",
                    host.config.user
                ),
            )
        } else if pf.current_not_a_link {
            item(
                "deploy_to",
                "fail",
                format!("{d}/current is not a symlink (set up by hand?); ship will not touch it"),
            )
        } else {
            item("deploy_to", "pass", format!("{d} is writable"))
        });
        items.push(match pf.disk_free_kb {
            Some(kb) if kb < MIN_FREE_KB => item(
                "disk",
                "fail",
                format!("only {} MB free under {d}", kb / 1024),
            ),
            Some(kb) => item("disk", "pass", format!("{} MB free", kb / 1024)),
            None => item("disk", "warn", "could not read the free space (df)"),
        });
        let missing: Vec<&str> = tools
            .iter()
            .filter(|t| !pf.tools.iter().any(|x| x == *t))
            .copied()
            .collect();
        items.push(if missing.is_empty() {
            item("tools", "pass", tools.join(", "))
        } else {
            item(
                "tools",
                "fail",
                format!("missing: {} (hint: install them)", missing.join(", ")),
            )
        });
        if let Some(l) = &pf.lock {
            let held = HeldLock::read(l, &super::run::controller_name());
            items.push(item("lock", "warn", format!("locked by {}", held.who())));
        } else {
            items.push(item("lock", "pass", "not locked"));
        }
        if pf.writable && !pf.current_not_a_link {
            let shared = &host.config.shared;
            let script = remote::check(d, &shared.files, &shared.dirs);
            match conn
                .run(Purpose::reads("check", "shared"), &script, None, None, t)
                .await
            {
                Ok(o) if o.success() => {
                    let answer = remote::CheckReply::parse(&o.stdout_text());
                    match answer.rename {
                        Some(Ok(())) => items.push(item(
                            "switch",
                            "pass",
                            "`current` is replaced by one rename(2) here",
                        )),
                        Some(Err(v)) => items.push(item(
                            "switch",
                            "fail",
                            format!("the rename test failed: {v}"),
                        )),
                        None => {}
                    }
                    let (missing, present) = (answer.shared_missing, answer.shared_ok);
                    if !missing.is_empty() {
                        items.push(item(
                            "shared",
                            "warn",
                            format!(
                                "not in shared/ yet: {} (the first deploy creates them from the \
                                 release, or empty; put real ones there, e.g. your .env)",
                                missing.join(", ")
                            ),
                        ));
                    } else if !present.is_empty() {
                        items.push(item("shared", "pass", present.join(", ")));
                    }
                    for (file, realpath) in answer.web {
                        items.push(if realpath {
                            item(
                                "web",
                                "pass",
                                format!(
                                    "{file} hands PHP the release's real path ($realpath_root)"
                                ),
                            )
                        } else {
                            item(
                                "web",
                                "warn",
                                format!(
                                    "{file} serves {d}/current to PHP without $realpath_root: \
                                     with OPcache (validate_timestamps=0) the old release goes \
                                     on after a switch (hint: fastcgi_param SCRIPT_FILENAME \
                                     $realpath_root$fastcgi_script_name; and DOCUMENT_ROOT \
                                     $realpath_root)"
                                ),
                            )
                        });
                    }
                }
                Ok(o) => items.push(item("switch", "fail", o.last_lines(3).join(" / "))),
                Err(e) => items.push(item("switch", "fail", e.to_string())),
            }
        }
        needs_rows(&host, &conn, t, &mut items).await;
        if let (Some(kb), Some(need)) = (pf.disk_free_kb, unpacked_kb) {
            items.push(if need > kb {
                item(
                    "space",
                    "fail",
                    format!(
                        "the release needs about {} MB unpacked; {} MB free",
                        need / 1024,
                        kb / 1024
                    ),
                )
            } else {
                item(
                    "space",
                    "pass",
                    format!(
                        "the release needs about {} MB unpacked",
                        need.div_ceil(1024)
                    ),
                )
            });
        }
        conn.close().await;
        HostCheck {
            host: host.name.clone(),
            items,
        }
    })
    .await
}

/// The rows for what the deploy's steps need on the host: the programs they start, `sudo -n`,
/// curl or wget for an HTTP health check.
async fn needs_rows(
    host: &Host,
    conn: &crate::transport::Connection,
    t: std::time::Duration,
    items: &mut Vec<CheckItem>,
) {
    let c = &host.config;
    let steps = c.build.iter().chain(&c.run_once).chain(&c.after_switch);
    let mut programs: Vec<String> = Vec::new();
    let mut untold: Vec<String> = Vec::new();
    for s in steps.clone() {
        match remote::program_of(&s.run) {
            Some(p) if !programs.contains(&p) => programs.push(p),
            Some(_) => {}
            None => untold.push(s.run.clone()),
        }
    }
    let sudo = steps.clone().any(|s| s.sudo);
    let http = matches!(c.health_check.probe, Some(Probe::Http { .. }));
    if programs.is_empty() && !sudo && !http {
        return;
    }
    let script = remote::needs(&programs, sudo, http);
    let reply = match conn
        .run(Purpose::reads("check", "needs"), &script, None, None, t)
        .await
    {
        Ok(o) if o.success() => remote::NeedsReply::parse(&o.stdout_text()),
        Ok(o) => {
            items.push(item("commands", "warn", o.last_lines(3).join(" / ")));
            return;
        }
        Err(e) => {
            items.push(item("commands", "warn", e.to_string()));
            return;
        }
    };
    if !reply.missing.is_empty() {
        items.push(item(
            "commands",
            "fail",
            format!(
                "not found on the PATH of `{}`: {} (the steps that start them would fail)",
                c.user,
                reply.missing.join(", ")
            ),
        ));
    } else if !reply.found.is_empty() {
        items.push(item("commands", "pass", reply.found.join(", ")));
    }
    if !untold.is_empty() {
        items.push(item(
            "commands",
            "warn",
            format!(
                "cannot tell what these start before they run: {}",
                untold.join("; ")
            ),
        ));
    }
    match reply.sudo {
        Some(true) => items.push(item("sudo", "pass", "`sudo -n` works")),
        Some(false) => items.push(item(
            "sudo",
            "fail",
            format!(
                "`sudo -n` asks `{}` for a password: the sudo steps would fail (hint: a sudoers \
                 rule with NOPASSWD for the exact commands)",
                c.user
            ),
        )),
        None => {}
    }
    match reply.health_tool.as_deref() {
        Some("none") => items.push(item(
            "health",
            "fail",
            "neither curl nor wget is installed: the HTTP health check cannot run",
        )),
        Some(t) => items.push(item(
            "health",
            "pass",
            format!("{t} for the HTTP health check"),
        )),
        None => {}
    }
}

/// Checks on this machine: the source (the artifact exists and is one ship can send; a git ref
/// resolves) and the key files the inventory names (they exist and are keys). A failure here is
/// the operator's to fix before any host matters (exit 2).
pub fn local(stage: &Stage) -> Vec<CheckItem> {
    let mut items = Vec::new();
    if let Some(source) = stage.source() {
        items.push(match crate::source::prepare(source) {
            Ok(p) => match source {
                Source::Git { reference, .. } => {
                    item("source", "pass", format!("`{reference}` is {}", p.revision))
                }
                Source::Artifact { path } => item(
                    "source",
                    "pass",
                    format!("{} ({} bytes to send)", path.display(), p.payload.len()),
                ),
                Source::Url { url, .. } => item(
                    "source",
                    "pass",
                    format!(
                        "{} (each host downloads it and checks {})",
                        crate::mask::mask_urls(url),
                        p.revision
                    ),
                ),
            },
            Err(e) => item("source", "fail", e.to_string()),
        });
    }
    let mut keys: Vec<&Path> = stage
        .hosts
        .iter()
        .filter_map(|h| h.config.identity_file.as_deref())
        .collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        items.push(match russh::keys::load_secret_key(k, None) {
            Ok(_) => item("key", "pass", format!("{} is a usable key", k.display())),
            Err(e) if e.to_string().to_lowercase().contains("encrypt") => item(
                "key",
                "warn",
                format!(
                    "{} is encrypted: ship asks for its passphrase on a terminal; elsewhere load \
                     it into ssh-agent",
                    k.display()
                ),
            ),
            Err(e) if !k.exists() => item("key", "fail", format!("{}: {e}", k.display())),
            Err(e) => item(
                "key",
                "fail",
                format!("{} cannot be read as a private key: {e}", k.display()),
            ),
        });
    }
    items
}

/// How much space the artifact takes unpacked (KiB), when that can be read from it here: a
/// directory, a `.tar` or a gzip tarball.
pub fn unpacked_kb(stage: &Stage) -> Option<u64> {
    let Some(Source::Artifact { path }) = stage.source() else {
        return None;
    };
    let bytes = if path.is_dir() {
        dir_size(path)
    } else {
        let packing = crate::util::packing_of(&path.to_string_lossy());
        let f = std::fs::File::open(path).ok()?;
        match packing? {
            crate::util::Packing::Tar => tar_size(f)?,
            crate::util::Packing::Gzip => tar_size(flate2::read::GzDecoder::new(f))?,
            crate::util::Packing::Zstd => return None,
        }
    };
    Some(bytes.div_ceil(1024))
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

fn tar_size(r: impl std::io::Read) -> Option<u64> {
    let mut a = tar::Archive::new(r);
    let mut total = 0;
    for e in a.entries().ok()? {
        total += e.ok()?.header().size().unwrap_or(0);
    }
    Some(total)
}
