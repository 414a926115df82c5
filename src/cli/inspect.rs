//! `ship status <stage>`, `ship releases <stage>`, `ship check <stage>`, `ship lock status
//! <stage>`, `ship lock release <stage>`.

use std::io::{BufRead, IsTerminal, Write};

use super::output::column_width;
use super::{Global, exit};
use crate::error::{Error, Result};
use crate::fleet::inspect::{self, HostStatus, StageStatus, Verdict};
use crate::inventory::{Inventory, Stage};
use crate::transport::ConnectOptions;

/// Load the inventory and pick the stage, or say why not (exit 2).
pub fn load_stage(g: &Global, name: &str) -> Result<Stage> {
    let inventory = Inventory::load(&g.inventory)?;
    let stage = inventory.stage(name)?;
    if stage.hosts.is_empty() {
        return Err(Error::usage(format!("stage `{}` has no hosts", stage.name))
            .hint("add hosts under `hosts:` in the stage"));
    }
    let mut stage = stage.select(&g.hosts, &g.roles)?;
    for note in crate::inventory::ssh_config::apply(&mut stage) {
        eprintln!("warning: {note}");
    }
    Ok(stage)
}

/// Load the stage for a command that connects to its hosts: first, on a terminal, ask for the
/// passphrases of encrypted keys (before anything else is drawn).
pub fn connect_stage(g: &Global, name: &str) -> Result<Stage> {
    let stage = load_stage(g, name)?;
    crate::transport::ssh::unlock_keys(&stage.hosts).map_err(Error::failed)?;
    Ok(stage)
}

/// The stage and where its hosts stand.
async fn stage_status(g: &Global, stage: &str) -> Result<(Stage, StageStatus)> {
    let stage = connect_stage(g, stage)?;
    let st = inspect::status(&stage, &ConnectOptions::default()).await;
    Ok((stage, st))
}

/// Inspect the stage and print it: as JSON with `--json`, else as `render` makes it.
async fn show_status(
    g: &Global,
    stage: &str,
    render: fn(&StageStatus) -> String,
) -> Result<StageStatus> {
    let (_, st) = stage_status(g, stage).await?;
    if g.json {
        print_json(&st);
    } else {
        print!("{}", render(&st));
    }
    Ok(st)
}

fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot render JSON: {e}"),
    }
}

fn dash(s: Option<&str>) -> &str {
    s.filter(|s| !s.is_empty()).unwrap_or("-")
}

/// `deployed 20261122101500 by alice at 2026-11-22T10:15:09Z` from a journal line.
fn last_entry(h: &HostStatus) -> String {
    let Some(v) = &h.last else {
        return "-".into();
    };
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_owned();
    match v.get("kind").and_then(|x| x.as_str()) {
        Some("lock-release") => format!("lock released by {} at {}", s("user"), s("finished")),
        _ => format!(
            "{} {} {} by {} at {}",
            s("kind"),
            s("release"),
            s("outcome"),
            s("user"),
            s("finished")
        ),
    }
}

/// The fleet's verdict as one line, the same for `status` and `releases` (`agrees`: in the
/// words of `releases`), saying when only some of the stage's hosts were read.
pub fn verdict_line(st: &StageStatus, agrees: bool) -> String {
    let (yes, no) = if agrees {
        ("the fleet agrees", "the fleet does NOT agree")
    } else {
        ("consistent", "NOT consistent")
    };
    let mut s = match st.verdict() {
        Verdict::Consistent(r) => format!("{}: {yes}: every host is on {r}", st.stage),
        Verdict::Unknown(hosts) => format!(
            "{}: UNKNOWN: {} could not be inspected, so whether the fleet agrees is not known",
            st.stage,
            hosts.join(", ")
        ),
        Verdict::RevisionMismatch(r) => format!(
            "{}: {no}: every host is on {r}, but not on the same revision of it",
            st.stage
        ),
        Verdict::Different => format!(
            "{}: {no}: hosts point `current` at different releases",
            st.stage
        ),
    };
    if !st.excluded.is_empty() {
        s.push_str(&format!(
            " (of the {} selected host(s) only; not read: {})",
            st.hosts.len(),
            st.excluded.join(", ")
        ));
    }
    s.push('\n');
    s
}

/// The status as text: a headline (consistent or not), a row per host, then details.
pub fn status_text(st: &StageStatus) -> String {
    let mut out = verdict_line(st, false);
    let w = column_width(st.hosts.iter().map(|h| h.host.as_str()));
    out.push_str(&format!(
        "  {:<w$}  {:<16}  {:<11}  {:<16}  {}\n",
        "host", "current", "lock", "unfinished", "last journal entry"
    ));
    for h in &st.hosts {
        let current = match (&h.error, &h.current, &h.current_other) {
            (Some(_), _, _) => "UNREACHABLE".to_owned(),
            (None, Some(c), _) => c.clone(),
            (None, None, Some(other)) => format!("other: {other}"),
            (None, None, None) => "-".to_owned(),
        };
        let lock = match &h.lock {
            None => "-",
            Some(l) if l.dead => "HELD (dead)",
            Some(_) => "held",
        };
        out.push_str(&format!(
            "  {:<w$}  {:<16}  {:<11}  {:<16}  {}\n",
            h.host,
            current,
            lock,
            if h.unfinished.is_empty() {
                "-".to_owned()
            } else {
                h.unfinished.join(",")
            },
            last_entry(h)
        ));
    }
    for h in &st.hosts {
        if let Some(e) = &h.error {
            out.push_str(&format!("  {}: {e}\n", h.host));
        }
        if st.revision_mismatch {
            let rev = h
                .release_details
                .iter()
                .find(|r| r.current)
                .and_then(|r| r.revision.as_deref());
            out.push_str(&format!(
                "  {}: {} is revision {}\n",
                h.host,
                dash(h.current.as_deref()),
                dash(rev)
            ));
        }
        if let Some(l) = &h.lock {
            out.push_str(&format!("  {}: locked by {}\n", h.host, l.holder));
        }
    }
    // An abandoned lock is a run that did not finish; one held from elsewhere may still run.
    let dead = st
        .hosts
        .iter()
        .any(|h| h.lock.as_ref().is_some_and(|l| l.abandoned()));
    let leftovers = st.hosts.iter().any(|h| !h.unfinished.is_empty());
    if dead || leftovers {
        out.push_str(&format!(
            "  hint: a run did not finish. `ship lock release {}` removes its lock and the \
             release it was staging (never `current`, never shared/)\n",
            st.stage
        ));
    } else if st.hosts.iter().any(|h| {
        h.lock
            .as_ref()
            .and_then(|l| l.owner.as_ref())
            .is_some_and(|o| o.is_maintenance())
    }) {
        out.push_str(&format!(
            "  hint: locked for maintenance on purpose (`ship lock acquire`); deploys are refused \
             until `ship lock release {}` lifts it\n",
            st.stage
        ));
    } else if st.hosts.iter().any(|h| h.lock.is_some()) {
        out.push_str(&format!(
            "  hint: wait for that run to finish; if it died, `ship lock release {}` clears \
             what it left\n",
            st.stage
        ));
    }
    if !st.consistent && st.hosts.iter().all(|h| h.error.is_none()) {
        out.push_str(
            "  hint: deploy again to put every host on one new release (the switch is \
             all-or-nothing)\n",
        );
    }
    out
}

/// `ship status <stage>`: 0 when every host answered and all are on one release with no
/// dead run's leftovers; 3 otherwise.
pub async fn status(g: &Global, stage: &str) -> Result<u8> {
    let st = show_status(g, stage, status_text).await?;
    let dead = st
        .hosts
        .iter()
        .any(|h| h.lock.as_ref().is_some_and(|l| l.abandoned()));
    let leftovers = st
        .hosts
        .iter()
        .any(|h| !h.unfinished.is_empty() && h.lock.is_none());
    if st.consistent && !dead && !leftovers {
        Ok(exit::OK)
    } else {
        Ok(exit::ATTENTION)
    }
}

/// `ship lock status <stage>`: the lock on each host. 0 when no host is locked, 4 when some are.
pub async fn lock_status(g: &Global, stage: &str) -> Result<u8> {
    let (_, st) = stage_status(g, stage).await?;
    if g.json {
        let rows: Vec<_> = st
            .hosts
            .iter()
            .map(|h| serde_json::json!({"host": h.host, "lock": h.lock, "error": h.error}))
            .collect();
        print_json(&serde_json::json!({"stage": st.stage, "hosts": rows}));
    } else {
        for h in &st.hosts {
            match (&h.error, &h.lock) {
                (Some(e), _) => println!("{}: cannot tell: {e}", h.host),
                (None, Some(l)) => println!("{}: locked by {}", h.host, l.holder),
                (None, None) => println!("{}: not locked", h.host),
            }
        }
    }
    if st.hosts.iter().any(|h| h.error.is_some()) {
        Ok(exit::ATTENTION)
    } else if st.locked().next().is_some() {
        Ok(exit::LOCKED)
    } else {
        Ok(exit::OK)
    }
}

/// `ship lock acquire <stage> -m <message>`: every host locked for maintenance, or none. 0 when
/// every host is locked; 4 when another run holds a host's lock; 3 when a lock taken could not be
/// given back; 1 when a host could not be reached.
pub async fn lock_acquire(g: &Global, stage: &str, message: &str) -> Result<u8> {
    if message.trim().is_empty() || message.chars().any(char::is_control) {
        return Err(
            Error::usage("-m: the message is empty or holds control characters")
                .hint("say why, e.g. -m \"migrating the orders table by hand\""),
        );
    }
    let stage = connect_stage(g, stage)?;
    let owner = crate::fleet::maintenance::owner(message);
    let (results, all) =
        crate::fleet::maintenance::acquire(&stage, &ConnectOptions::default(), &owner).await;
    if g.json {
        print_json(&serde_json::json!({"stage": stage.name, "locked": all, "hosts": results}));
    }
    for r in &results {
        let line = match (&r.error, &r.held_by, r.locked) {
            (Some(e), _, _) => format!("{}: FAILED: {e}", r.host),
            (None, Some(who), _) => format!("{}: already locked by {who}", r.host),
            (None, None, true) => format!("{}: locked for maintenance", r.host),
            (None, None, false) => format!("{}: given back", r.host),
        };
        if !g.json {
            println!("{line}");
        }
    }
    let stuck = results.iter().any(|r| r.locked && !all);
    let held = results.iter().any(|r| r.held_by.is_some());
    if all {
        if !g.json {
            println!(
                "{}: every host is locked for maintenance ({:?}); deploys are refused until \
                 `ship lock release {}`",
                stage.name, message, stage.name
            );
        }
        Ok(exit::OK)
    } else if stuck {
        Ok(exit::ATTENTION)
    } else if held {
        if !g.json {
            println!("{}: not locked: no host was changed", stage.name);
        }
        Ok(exit::LOCKED)
    } else {
        if !g.json {
            println!("{}: not locked: no host was changed", stage.name);
        }
        Ok(exit::FAILED)
    }
}

/// `ship lock release <stage>`: show the locks, confirm (or `--yes`), remove them with the
/// release each holder was staging.
pub async fn lock_release(g: &Global, stage: &str, yes: bool) -> Result<u8> {
    let (stage, st) = stage_status(g, stage).await?;
    let locked: Vec<&HostStatus> = st.locked().collect();
    if locked.is_empty() {
        if !g.json {
            println!("{}: no host is locked; nothing to do", st.stage);
        }
        return if st.hosts.iter().any(|h| h.error.is_some()) {
            Ok(exit::ATTENTION)
        } else {
            Ok(exit::OK)
        };
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Error::usage(
                "`ship lock release` changes hosts and stdin is not a terminal",
            )
            .hint("pass --yes to confirm"));
        }
        for h in &locked {
            if let Some(l) = &h.lock {
                eprintln!("{}: locked by {}", h.host, l.holder);
            }
        }
        let alive = locked
            .iter()
            .any(|h| h.lock.as_ref().is_some_and(|l| !l.dead));
        if alive {
            eprintln!(
                "warning: ship cannot tell that these holders are gone; releasing the lock of a \
                 running deploy lets another one start beside it"
            );
        }
        eprint!(
            "Release the lock on {} host(s) and remove the release each holder left unfinished? \
             [y/N] ",
            locked.len()
        );
        let _ = std::io::stderr().flush();
        // Read on a thread of its own: the connections stay served (keepalives) meanwhile.
        let answer = tokio::task::spawn_blocking(|| {
            let mut answer = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut answer)
                .map(|_| answer)
        })
        .await;
        if !matches!(answer, Ok(Ok(a)) if matches!(a.trim(), "y" | "Y" | "yes")) {
            eprintln!("nothing was changed");
            return Ok(exit::FAILED);
        }
    }
    // Only the locks shown (and confirmed): one taken since by another run is not touched.
    let shown: Vec<inspect::ShownLock> = locked
        .iter()
        .map(|h| {
            (
                h.host.clone(),
                h.lock
                    .as_ref()
                    .and_then(|l| l.owner.as_ref())
                    .map(|o| o.token.clone()),
            )
        })
        .collect();
    let done = inspect::release_locks(&stage, &ConnectOptions::default(), &shown).await;
    if g.json {
        print_json(&serde_json::json!({"stage": stage.name, "hosts": done}));
    }
    let mut failed = false;
    for r in &done {
        if let Some(e) = &r.error {
            failed = true;
            eprintln!("{}: FAILED: {e}", r.host);
        } else if !g.json && r.gone {
            println!(
                "{}: no longer locked (its holder ended); nothing removed",
                r.host
            );
        } else if !g.json && (!r.removed.is_empty() || !r.kept.is_empty()) {
            let mut line = format!("{}: removed {}", r.host, r.removed.join(", "));
            if !r.kept.is_empty() {
                line.push_str(&format!("; kept {}", r.kept.join(", ")));
            }
            println!("{line}");
        }
    }
    if failed {
        Ok(exit::ATTENTION)
    } else {
        Ok(exit::OK)
    }
}

/// `ship history <stage> [-n N]`: the last runs, merged from every host's journal. 0 when every
/// host could be read; 3 otherwise (the history may miss what only they recorded).
pub async fn history(g: &Global, stage: &str, n: usize) -> Result<u8> {
    let (_, st) = stage_status(g, stage).await?;
    let runs = crate::fleet::history::merge(&st.hosts, n);
    let unread: Vec<&str> = st
        .hosts
        .iter()
        .filter(|h| h.error.is_some())
        .map(|h| h.host.as_str())
        .collect();
    if g.json {
        print_json(&serde_json::json!({"stage": st.stage, "runs": runs, "unread": unread}));
    } else {
        print!("{}", history_text(&st, &runs, &unread));
    }
    Ok(if unread.is_empty() {
        exit::OK
    } else {
        exit::ATTENTION
    })
}

fn history_text(
    st: &StageStatus,
    runs: &[crate::fleet::history::PastRun],
    unread: &[&str],
) -> String {
    let total = st.hosts.len();
    let mut out = format!(
        "{}: the last {} run(s), newest first, from the journals of {} host(s)\n",
        st.stage,
        runs.len(),
        total - unread.len()
    );
    if !unread.is_empty() {
        out.push_str(&format!(
            "  not read: {} (their records are missing here)\n",
            unread.join(", ")
        ));
    }
    if runs.is_empty() {
        out.push_str("  no deploy or rollback recorded\n");
        return out;
    }
    out.push_str(&format!(
        "  {:<16}  {:<8}  {:<13}  {:<20}  {:<12}  {:<20}  {:>5}  {}\n",
        "release", "kind", "outcome", "revision", "by", "finished", "hosts", "skew"
    ));
    for r in runs {
        out.push_str(&format!(
            "  {:<16}  {:<8}  {:<13}  {:<20}  {:<12}  {:<20}  {:>5}  {}\n",
            r.release,
            r.kind,
            r.outcome,
            short_revision(&r.revision),
            r.user,
            r.finished,
            format!("{}/{total}", r.hosts.len()),
            r.skew_ms
                .map(|s| format!("{s:.2}ms"))
                .unwrap_or_else(|| "-".into())
        ));
        for note in &r.notes {
            out.push_str(&format!("    {}: {note}\n", r.release));
        }
    }
    out
}

/// `ship releases <stage>`: a table of releases per host, and whether the fleet agrees.
/// 0 when every host answered and all are on one release; 3 otherwise.
pub async fn releases(g: &Global, stage: &str) -> Result<u8> {
    let st = show_status(g, stage, releases_text).await?;
    if st.consistent {
        Ok(exit::OK)
    } else {
        Ok(exit::ATTENTION)
    }
}

fn short_revision(r: &str) -> String {
    match r.strip_prefix("sha256:") {
        Some(d) => format!("sha256:{}", d.chars().take(12).collect::<String>()),
        None => r.chars().take(12).collect(),
    }
}

pub fn releases_text(st: &StageStatus) -> String {
    let mut out = String::new();
    out.push_str(&verdict_line(st, true));
    for h in &st.hosts {
        out.push_str(&format!("\n{}\n", h.host));
        if let Some(e) = &h.error {
            out.push_str(&format!("  UNREACHABLE: {e}\n"));
            continue;
        }
        if h.release_details.is_empty() {
            out.push_str("  no releases\n");
            continue;
        }
        out.push_str(&format!(
            "  {:<16}  {:<20}  {:<12}  {:<20}  {}\n",
            "release", "revision", "deployed by", "deployed at", ""
        ));
        for r in h.release_details.iter().rev() {
            let mut marks = Vec::new();
            if r.current {
                marks.push("current");
            }
            if r.bad {
                marks.push("bad (rolled back from)");
            }
            if r.prepared {
                marks.push("prepared (a failed deploy's build, kept for its retry)");
            }
            if r.revision.is_none() {
                marks.push("incomplete");
            }
            let via = r.ci_url.as_deref().map(|u| format!("by CI run {u}"));
            if let Some(v) = &via {
                marks.push(v);
            }
            out.push_str(&format!(
                "  {:<16}  {:<20}  {:<12}  {:<20}  {}\n",
                r.id,
                r.revision
                    .as_deref()
                    .map(short_revision)
                    .unwrap_or("-".into()),
                dash(r.deployed_by.as_deref()),
                dash(r.deployed_at.as_deref()),
                marks.join(", ")
            ));
        }
    }
    out
}

/// `ship check <stage>`: a pass/warn/fail table per host; exit 1 on any failure.
pub async fn check(a: &super::CheckArgs) -> Result<u8> {
    let g = &a.global;
    let mut stage = connect_stage(g, &a.stage)?;
    if let Some(t) = a.connect_timeout {
        for h in &mut stage.hosts {
            h.config.timeouts.connect = t;
        }
    }
    let tools = stage
        .source()
        .map(crate::source::tools_for)
        .unwrap_or_default();
    // This machine first: the source and the keys.
    let local = {
        let stage = stage.clone();
        tokio::task::spawn_blocking(move || crate::fleet::check::local(&stage))
            .await
            .unwrap_or_default()
    };
    let options = ConnectOptions {
        accept_new_host_keys: a.accept_new_host_keys,
        ..ConnectOptions::default()
    };
    let results = crate::fleet::check::check(&stage, &options, &tools).await;
    let failed = results.iter().filter(|h| h.failed()).count();
    let local_failed = local.iter().any(|i| i.result == "fail");
    if g.json {
        print_json(&serde_json::json!({"stage": stage.name, "local": local, "hosts": results}));
    } else {
        for i in &local {
            println!(
                "  this machine  {:<9}  {:<6}  {}",
                i.check,
                i.result.to_uppercase(),
                i.detail
            );
        }
        let w = column_width(results.iter().map(|h| h.host.as_str()));
        println!("  {:<w$}  {:<9}  {:<6}  detail", "host", "check", "result");
        for h in &results {
            for i in &h.items {
                println!(
                    "  {:<w$}  {:<9}  {:<6}  {}",
                    h.host,
                    i.check,
                    i.result.to_uppercase(),
                    i.detail
                );
            }
        }
        if local_failed {
            println!(
                "{}: this machine is not ready to deploy (see above); {failed} of {} host(s) \
                 FAILED a check",
                stage.name,
                results.len()
            );
        } else if failed == 0 {
            println!(
                "{}: all {} host(s) ready to deploy",
                stage.name,
                results.len()
            );
        } else {
            println!(
                "{}: {failed} of {} host(s) FAILED a check",
                stage.name,
                results.len()
            );
        }
    }
    Ok(if local_failed {
        exit::USAGE
    } else if failed == 0 {
        exit::OK
    } else {
        exit::FAILED
    })
}

/// `ship config <stage>`: the effective settings per host, secrets masked.
pub fn config(g: &Global, stage: &str) -> Result<u8> {
    let stage = load_stage(g, stage)?;
    let masker = crate::fleet::masker_for(&stage);
    let view = crate::inventory::show::stage_config(&stage, |s| masker.mask(s));
    if g.json {
        print_json(&view);
        return Ok(exit::OK);
    }
    match serde_saphyr::to_string(&view) {
        Ok(text) => {
            print!("{text}");
            Ok(exit::OK)
        }
        Err(e) => Err(Error::failed("cannot render the settings as YAML").because(e)),
    }
}

/// `ship exec <stage> -- <command>`: every host at once, output grouped per host. Exit 0 when
/// the command succeeded everywhere, 1 when it failed somewhere, 3 when a host could not run
/// it (unreachable, timed out), 130 when interrupted.
pub async fn exec(a: &super::ExecArgs) -> Result<u8> {
    let g = &a.global;
    let stage = connect_stage(g, &a.stage)?;
    let command = a.command.join(" ");
    let cancel = tokio_util::sync::CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nship: interrupted; stopping the command on every host");
            on_signal.cancel();
        }
    });
    let results = inspect::exec(
        &stage,
        &ConnectOptions::default(),
        &command,
        a.timeout,
        &cancel,
    )
    .await;
    if g.json {
        print_json(&serde_json::json!({"stage": stage.name, "command": command, "hosts": results}));
    } else {
        for r in &results {
            let how = match (&r.error, r.status) {
                (Some(e), _) => format!("FAILED: {e}"),
                (None, Some(0)) => "ok".to_owned(),
                (None, Some(c)) => format!("exit {c}"),
                (None, None) => "no exit status".to_owned(),
            };
            println!(
                "== {} ({how}, {})",
                r.host,
                crate::util::human_duration(std::time::Duration::from_millis(r.elapsed_ms))
            );
            for l in &r.output {
                if l.stream == "stderr" {
                    println!("! {}", l.line);
                } else {
                    println!("{}", l.line);
                }
            }
            if r.dropped > 0 {
                println!("(… {} more lines not kept)", r.dropped);
            }
        }
        let ok = results
            .iter()
            .filter(|r| r.error.is_none() && r.status == Some(0))
            .count();
        println!("{}: ok on {ok} of {} host(s)", stage.name, results.len());
    }
    if cancel.is_cancelled() {
        Ok(exit::INTERRUPTED)
    } else if results.iter().any(|r| r.error.is_some()) {
        Ok(exit::ATTENTION)
    } else if results.iter().all(|r| r.status == Some(0)) {
        Ok(exit::OK)
    } else {
        Ok(exit::FAILED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(host: &str, release: &str) -> HostStatus {
        let mut h = HostStatus::unreachable(host, String::new());
        h.error = None;
        h.current = Some(release.to_owned());
        h
    }

    #[test]
    fn status_and_releases_give_one_verdict_with_its_reason() {
        let a = "20261204120000";
        let st = inspect::judge(
            "production",
            vec![on("web-1", a), on("web-2", a)],
            Vec::new(),
        );
        assert_eq!(
            verdict_line(&st, false),
            format!("production: consistent: every host is on {a}\n")
        );
        assert_eq!(
            verdict_line(&st, true),
            format!("production: the fleet agrees: every host is on {a}\n")
        );
        // An unreachable host: UNKNOWN in both, naming it (releases said "does NOT agree").
        let down = HostStatus::unreachable("web-2", "timed out".into());
        let st = inspect::judge("production", vec![on("web-1", a), down], Vec::new());
        let unknown = "production: UNKNOWN: web-2 could not be inspected, so whether the fleet \
                       agrees is not known\n";
        assert_eq!(verdict_line(&st, false), unknown);
        assert_eq!(verdict_line(&st, true), unknown);
        // Different releases.
        let st = inspect::judge(
            "production",
            vec![on("web-1", a), on("web-2", "20261204130000")],
            Vec::new(),
        );
        assert_eq!(
            verdict_line(&st, true),
            "production: the fleet does NOT agree: hosts point `current` at different releases\n"
        );
        // A subset says it is one.
        let st = inspect::judge(
            "production",
            vec![on("web-1", a)],
            vec!["web-2".into(), "web-3".into()],
        );
        assert_eq!(
            verdict_line(&st, true),
            format!(
                "production: the fleet agrees: every host is on {a} (of the 1 selected host(s) \
                 only; not read: web-2, web-3)\n"
            )
        );
    }
}
