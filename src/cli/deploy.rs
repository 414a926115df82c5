//! `ship deploy <stage>` (and `--dry-run`, `ship plan`) and `ship rollback <stage>`.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::output::{
    Board, Json, Live, Plain, Verbosity, github_annotations, markdown_summary, summary_text,
};
use super::{DeployArgs, Global, RollbackArgs, exit};
use crate::error::{Error, Result};
use crate::fleet::{self, Deploy, Job, RunPlan};
use crate::inventory::{Stage, parse_canary};
use crate::report::{Outcome, Reporter, Summary};
use crate::transport::ConnectOptions;

/// What every run of the fleet takes from the command line.
struct RunOptions {
    accept_new_host_keys: bool,
    keep_failed: bool,
    lock_wait: Duration,
    /// The waves before the last (see [`Deploy::waves`]).
    waves: Vec<Vec<usize>>,
    max_unreachable: usize,
    rebuild: bool,
    observe: Duration,
}

/// Load the stage, apply the command line's timeout overrides, and read its secrets from
/// commands.
fn stage_with_overrides(
    g: &Global,
    name: &str,
    connect: Option<Duration>,
    step: Option<Duration>,
    concurrency: Option<u32>,
) -> Result<Stage> {
    let mut stage = super::inspect::connect_stage(g, name)?;
    if let Some(n) = concurrency {
        stage.connect_concurrency = n as usize;
    }
    for h in &mut stage.hosts {
        if let Some(t) = connect {
            h.config.timeouts.connect = t;
        }
        if let Some(t) = step {
            h.config.timeouts.step = t;
        }
    }
    // Secrets from commands are read before any host is contacted.
    stage.run_secret_commands()?;
    Ok(stage)
}

/// `--ref` and `--artifact`: what the command line chooses to deploy instead of the inventory's
/// source. Checked here, before anything is contacted.
fn source_overrides(
    stage: &mut Stage,
    reference: Option<&str>,
    artifact: Option<&Path>,
    url: Option<(&str, &str)>,
) -> Result<()> {
    use crate::inventory::Source;
    if let Some(r) = reference {
        if r.is_empty()
            || r.starts_with('-')
            || r.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::usage(format!(
                "--ref: `{}` is not a branch, tag or commit",
                r.escape_debug()
            ))
            .hint("e.g. --ref main, --ref v1.4.2, --ref $GITHUB_SHA"));
        }
        if let Some(h) = stage
            .hosts
            .iter()
            .find(|h| !matches!(h.config.source, Source::Git { .. }))
        {
            return Err(Error::usage(format!(
                "--ref: {} deploys an artifact, not a git repository",
                h.name
            ))
            .hint("--ref chooses the commit of a `source: { git: … }`; to deploy another build, use --artifact PATH"));
        }
        for h in &mut stage.hosts {
            if let Source::Git { reference: r0, .. } = &mut h.config.source {
                *r0 = r.to_owned();
            }
        }
    }
    if let Some(p) = artifact {
        let path = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| {
                    Error::usage("--artifact: cannot read the current directory").because(e)
                })?
                .join(p)
        };
        let name = path.to_string_lossy().to_lowercase();
        let tarball = [".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst"]
            .iter()
            .any(|s| name.ends_with(s));
        match std::fs::metadata(&path) {
            Err(e) => {
                return Err(Error::usage(format!("--artifact: {}", path.display()))
                    .because(e)
                    .hint(
                        "build the artifact first; the path is relative to the current directory",
                    ));
            }
            Ok(m) if !m.is_dir() && !tarball => {
                return Err(Error::usage(format!(
                    "--artifact: {} is not a directory, .tar, .tar.gz, .tgz or .tar.zst",
                    path.display()
                ))
                .hint("pack it with `tar -czf build.tar.gz -C build .`"));
            }
            Ok(_) => {}
        }
        for h in &mut stage.hosts {
            h.config.source = Source::Artifact { path: path.clone() };
        }
    }
    if let Some((url, digest)) = url {
        if let Err((why, hint)) = crate::source::check_tarball_url(url) {
            return Err(Error::usage(format!(
                "--artifact-url {}: {why}",
                crate::mask::mask_urls(url)
            ))
            .hint(hint));
        }
        let Some(sha256) = crate::util::check_sha256(digest) else {
            return Err(Error::usage(format!(
                "--sha256: `{}` is not a SHA-256 digest",
                digest.escape_debug()
            ))
            .hint("64 hex digits, as `sha256sum app.tar.gz` prints them"));
        };
        for h in &mut stage.hosts {
            h.config.source = Source::Url {
                url: url.to_owned(),
                sha256: sha256.clone(),
            };
        }
    }
    Ok(())
}

/// The waves before the last: from `--waves`, else `--canary`, else the stage's `waves:`, else
/// its `canary:` (a canary is one leading wave).
fn waves_of(stage: &Stage, waves: Option<&str>, canary: Option<&str>) -> Result<Vec<Vec<usize>>> {
    let sizes =
        match waves {
            Some(text) => Some(crate::inventory::parse_waves(text).map_err(|e| {
                Error::usage(format!("--waves: {e}")).hint("e.g. --waves 1,10%,100%")
            })?),
            None if canary.is_some() => None,
            None => stage.waves.clone(),
        };
    if let Some(sizes) = sizes {
        if waves.is_some() {
            crate::inventory::check_waves(&sizes, stage.hosts.len())
                .map_err(|(m, h)| Error::usage(format!("--waves: {m}")).hint(h))?;
        }
        let w = stage.wave_hosts(&sizes);
        if w.is_empty() {
            return Err(Error::usage(format!(
                "these waves put the whole fleet of {} host(s) in one wave; nothing would wait \
                 for anything",
                stage.hosts.len()
            ))
            .hint("start with a smaller wave, e.g. 1,100%"));
        }
        return Ok(w);
    }
    let c = canary_hosts(stage, canary)?;
    Ok(if c.is_empty() { Vec::new() } else { vec![c] })
}

/// How many hosts may be unreachable and left out: `--max-unreachable`, else the stage's
/// `max_unreachable:`, as a number of hosts (a share is of the stage's hosts, rounded down).
fn unreachable_budget(stage: &Stage, flag: Option<&str>) -> Result<usize> {
    let size = match flag {
        Some(text) => Some(crate::inventory::parse_wave(text).map_err(|e| {
            Error::usage(format!("--max-unreachable: {e}")).hint("e.g. --max-unreachable 1 or 2%")
        })?),
        None => stage.max_unreachable,
    };
    match size {
        None => Ok(0),
        Some(s) => crate::inventory::check_unreachable(s, stage.hosts.len())
            .map_err(|(m, h)| Error::usage(format!("--max-unreachable: {m}")).hint(h)),
    }
}

/// The canary hosts from `--canary` or the stage's `canary:`, checked against the stage.
fn canary_hosts(stage: &Stage, flag: Option<&str>) -> Result<Vec<usize>> {
    let canary = match flag {
        Some(text) => Some(parse_canary(text).map_err(|e| Error::usage(format!("--canary: {e}")))?),
        None => stage.canary.clone(),
    };
    if let Some(crate::inventory::Canary::Hosts(names)) = &canary {
        if let Some(n) = names
            .iter()
            .find(|n| !stage.hosts.iter().any(|h| &h.name == *n))
        {
            let known: Vec<&str> = stage.hosts.iter().map(|h| h.name.as_str()).collect();
            return Err(Error::usage(format!(
                "--canary: `{n}` is not a host of stage `{}`",
                stage.name
            ))
            .hint(format!("hosts here: {}", known.join(", "))));
        }
    }
    let idx = stage.canary_hosts(canary.as_ref());
    if canary.is_some() && idx.is_empty() {
        return Err(Error::usage(format!(
            "the canary would be the whole fleet of {} host(s); nothing would wait for it",
            stage.hosts.len()
        ))
        .hint("use a smaller number, or deploy without a canary"));
    }
    Ok(idx)
}

pub async fn run(args: DeployArgs) -> Result<u8> {
    let g = &args.global;
    if args.full && !args.dry_run {
        return Err(
            Error::usage("--full shows a plan's commands whole; it goes with --dry-run")
                .hint(format!("`ship plan {} --full`", args.stage)),
        );
    }
    let stage = stage_with_overrides(
        g,
        &args.stage,
        args.connect_timeout,
        args.step_timeout,
        args.connect_concurrency,
    )?;
    let mut stage = stage;
    source_overrides(
        &mut stage,
        args.reference.as_deref(),
        args.artifact.as_deref(),
        args.artifact_url.as_deref().zip(args.sha256.as_deref()),
    )?;
    let waves = waves_of(&stage, args.waves.as_deref(), args.canary.as_deref())?;
    // Without a hold, the canary still switches and is verified before the rest go.
    let observe = args.observe.unwrap_or(stage.observe);
    let Some(source) = stage.source().cloned() else {
        return Err(Error::usage(format!("stage `{}` has no hosts", stage.name)));
    };
    let revision_hint = match &source {
        crate::inventory::Source::Git { reference, .. } => reference.clone(),
        crate::inventory::Source::Artifact { path } => path.display().to_string(),
        crate::inventory::Source::Url { url, .. } => crate::mask::mask_urls(url),
    };
    let hook_dir = inventory_dir(&g.inventory);
    if !args.dry_run {
        let env = hook_env(&stage, "deploy", None, &revision_hint, None);
        if let Err(e) =
            crate::hooks::run("before_deploy", &stage.hooks.before_deploy, &env, &hook_dir).await
        {
            return Err(Error::failed(e.to_string()).note("nothing was changed on any host"));
        }
    }
    // Pack or resolve once, before any host is touched.
    let prepared = match tokio::task::spawn_blocking(move || crate::source::prepare(&source)).await
    {
        Ok(Ok(p)) => p,
        // A --ref that does not resolve is a bad command line.
        Ok(Err(e)) if args.reference.is_some() => {
            return Err(Error::usage(format!("--ref: {e}")).note("nothing was changed on any host"));
        }
        Ok(Err(e)) => {
            return Err(Error::failed(e.to_string()).note("nothing was changed on any host"));
        }
        Err(e) => return Err(Error::failed("preparing the source failed").because(e)),
    };
    let options = RunOptions {
        accept_new_host_keys: args.accept_new_host_keys,
        keep_failed: args.keep_failed,
        lock_wait: args.lock_wait.unwrap_or_default(),
        waves,
        observe,
        max_unreachable: unreachable_budget(&stage, args.max_unreachable.as_deref())?,
        rebuild: args.rebuild,
    };
    if args.dry_run {
        return dry_run(g, stage, Job::Deploy(prepared), &options, args.full).await;
    }
    execute(g, stage, Job::Deploy(prepared), options, &hook_dir).await
}

pub async fn rollback(args: RollbackArgs) -> Result<u8> {
    let g = &args.global;
    let stage = stage_with_overrides(
        g,
        &args.stage,
        args.connect_timeout,
        None,
        args.connect_concurrency,
    )?;
    if let Some(to) = &args.to {
        if !crate::remote::is_release_id(to) {
            return Err(
                Error::usage(format!("--to: `{to}` is not a release id")).hint(format!(
                    "release ids look like 20261122153000; `ship releases {}` lists them",
                    stage.name
                )),
            );
        }
    }
    let options = RunOptions {
        accept_new_host_keys: args.accept_new_host_keys,
        keep_failed: false,
        lock_wait: args.lock_wait.unwrap_or_default(),
        waves: Vec::new(),
        observe: Duration::ZERO,
        max_unreachable: 0,
        rebuild: false,
    };
    let job = Job::Rollback {
        to: args.to.clone(),
    };
    if args.dry_run {
        return dry_run(g, stage, job, &options, args.full).await;
    }
    let hook_dir = inventory_dir(&g.inventory);
    let env = hook_env(&stage, "rollback", args.to.as_deref(), "", None);
    if let Err(e) =
        crate::hooks::run("before_deploy", &stage.hooks.before_deploy, &env, &hook_dir).await
    {
        return Err(Error::failed(e).note("nothing was changed on any host"));
    }
    execute(g, stage, job, options, &hook_dir).await
}

fn inventory_dir(inventory: &Path) -> std::path::PathBuf {
    inventory
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from("."))
}

/// The environment of local hooks.
fn hook_env(
    stage: &Stage,
    kind: &str,
    release: Option<&str>,
    revision: &str,
    result: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("SHIP_STAGE", stage.name.clone()),
        ("SHIP_KIND", kind.to_owned()),
        ("SHIP_REVISION", revision.to_owned()),
        (
            "SHIP_HOSTS",
            stage
                .hosts
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        ),
    ];
    if let Some(r) = release {
        env.push(("SHIP_RELEASE_ID", r.to_owned()));
    }
    if let Some(r) = result {
        env.push(("SHIP_RESULT", r.to_owned()));
    }
    env
}

fn reporter(g: &Global, stage: &Stage) -> Arc<Board> {
    let verbosity = if g.quiet {
        Verbosity::Quiet
    } else if g.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    let live_terminal = !g.json && verbosity != Verbosity::Quiet && std::io::stderr().is_terminal();
    let names: Vec<String> = stage.hosts.iter().map(|h| h.name.clone()).collect();
    let shown: Arc<dyn Reporter> = if g.json {
        Arc::new(Json)
    } else if live_terminal {
        Arc::new(Live::new(&names, verbosity))
    } else {
        Arc::new(Plain {
            verbosity,
            said: Default::default(),
        })
    };
    Arc::new(Board::new(&names, shown))
}

/// Run a deploy or a rollback to the end: the fleet run, the local hooks after it, the summary
/// and the exit code.
async fn execute(g: &Global, stage: Stage, job: Job, o: RunOptions, hook_dir: &Path) -> Result<u8> {
    let board = reporter(g, &stage);
    let cancel = CancellationToken::new();
    spawn_signal_watch(cancel.clone(), board.clone());
    let hooks = stage.hooks.clone();
    let stage_for_hooks = stage.clone();
    let summary = fleet::deploy(
        Deploy {
            stage,
            job,
            connect: ConnectOptions {
                accept_new_host_keys: o.accept_new_host_keys,
                ..ConnectOptions::default()
            },
            waves: o.waves,
            observe: o.observe,
            keep_failed: o.keep_failed,
            lock_wait: o.lock_wait,
            max_unreachable: o.max_unreachable,
            rebuild: o.rebuild,
            identity: None,
        },
        board,
        cancel.clone(),
    )
    .await;

    if !g.json {
        print!("{}", summary_text(&summary));
    }
    github_report(&summary, g.json);
    let code = exit_code(&summary, cancel.is_cancelled());
    let result = serde_json::to_value(summary.outcome)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let env = hook_env(
        &stage_for_hooks,
        &summary.kind,
        Some(&summary.release),
        &summary.revision,
        Some(&result),
    );
    let (which, cmds) = if code == exit::OK {
        ("after_deploy", &hooks.after_deploy)
    } else {
        ("on_failure", &hooks.on_failure)
    };
    if let Err(e) = crate::hooks::run(which, cmds, &env, hook_dir).await {
        // The fleet is where the summary says; a hook failing does not change that.
        eprintln!("warning: {e}");
    }
    Ok(code)
}

/// Under GitHub Actions (`GITHUB_ACTIONS=true`): failures and warnings as annotations (not with
/// `--json`, whose stdout is for JSON only), and the summary appended to the job summary.
fn github_report(summary: &Summary, json: bool) {
    if std::env::var("GITHUB_ACTIONS").as_deref() != Ok("true") {
        return;
    }
    if !json {
        print!("{}", github_annotations(summary));
    }
    if let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY") {
        use std::io::Write;
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(markdown_summary(summary).as_bytes()));
        if let Err(e) = written {
            eprintln!("warning: cannot write the job summary: {e}");
        }
    }
}

fn exit_code(summary: &Summary, cancelled: bool) -> u8 {
    let lock_held = summary.hosts.iter().any(|h| h.locked_by_other);
    let lock_left = summary.hosts.iter().any(|h| h.lock_left);
    match summary.outcome {
        Outcome::Deployed if lock_left => exit::ATTENTION,
        Outcome::Deployed | Outcome::NothingToDo => exit::OK,
        Outcome::Mixed => exit::ATTENTION,
        _ if lock_left => exit::ATTENTION,
        _ if cancelled => exit::INTERRUPTED,
        _ if lock_held => exit::LOCKED,
        Outcome::Aborted | Outcome::RolledBack => exit::FAILED,
    }
}

/// `--dry-run`: rehearse the run on the hosts (reading them, changing nothing) and print every
/// command it sent or would send.
async fn dry_run(g: &Global, stage: Stage, job: Job, o: &RunOptions, full: bool) -> Result<u8> {
    let plan = fleet::plan(Deploy {
        stage,
        job,
        connect: ConnectOptions {
            accept_new_host_keys: false,
            ..ConnectOptions::default()
        },
        waves: o.waves.clone(),
        observe: o.observe,
        keep_failed: o.keep_failed,
        lock_wait: o.lock_wait,
        max_unreachable: o.max_unreachable,
        rebuild: o.rebuild,
        identity: None,
    })
    .await;
    if g.json {
        match serde_json::to_string(&plan) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: cannot render JSON: {e}"),
        }
    } else {
        print!("{}", plan_text(&plan, full));
    }
    if plan.hosts.iter().any(|h| h.error.is_some()) {
        Ok(exit::FAILED)
    } else {
        Ok(exit::OK)
    }
}

fn plan_text(p: &RunPlan, full: bool) -> String {
    let what = match p.kind.as_str() {
        "rollback" if p.release.is_empty() => "roll back".to_owned(),
        "rollback" => format!("roll back to {}", p.release),
        _ => format!("deploy {} ({})", p.release, p.revision),
    };
    let mut out = format!(
        "dry run: {what} on {}: {} host(s); nothing is changed\n",
        p.stage,
        p.hosts.len()
    );
    out.push_str(
        "  every host prepares; only when all succeeded does any host switch. Steps run under \
         ship's supervisor (stopped on the host if ship stops or goes away).\n  \
         These are the commands the run sends, rehearsed on the hosts: those marked (read) ran \
         now; the others were answered as a host where they succeed would answer.\n",
    );
    if let Some(h) = &p.run_once_host {
        out.push_str(&format!("  run-once steps run on {h} only\n"));
    }
    if p.waves.len() > 2 {
        let hold = match p.observe_ms {
            0 => String::new(),
            ms => format!(
                ", each held {} before the next",
                crate::util::human_duration(Duration::from_millis(ms))
            ),
        };
        let waves: Vec<String> = p.waves.iter().map(|w| w.join(", ")).collect();
        out.push_str(&format!("  waves: {}{hold}\n", waves.join(" → ")));
    } else if !p.canary.is_empty() {
        let hold = match p.observe_ms {
            0 => String::new(),
            ms => format!(
                ", hold {}",
                crate::util::human_duration(Duration::from_millis(ms))
            ),
        };
        out.push_str(&format!(
            "  canary: {} switch first{hold}, then the rest\n",
            p.canary.join(", ")
        ));
    }
    if full {
        full_plan(p, &mut out);
    } else {
        readable_plan(p, &mut out);
        out.push_str(&format!(
            "\n`ship plan {} --full` prints every command whole (`--json`: as one object)\n",
            p.stage
        ));
    }
    out
}

/// Every command whole, per host; an artifact carried inside its upload command is shown by
/// its size, not as escaped bytes.
fn full_plan(p: &RunPlan, out: &mut String) {
    for h in &p.hosts {
        out.push_str(&format!("\n== {}\n", h.host));
        for c in &h.commands {
            let read = if c.changes { "" } else { " (read)" };
            let stdin = match c.stdin_bytes {
                Some(n) => format!(" · then the artifact on its stdin ({n} bytes)"),
                None => String::new(),
            };
            out.push_str(&format!(
                "# {} · {}{read}{stdin}\n",
                c.phase.replace('_', " "),
                c.name
            ));
            for line in c.script.trim_end().lines() {
                out.push_str(&without_payload(line, p.artifact_bytes));
                out.push('\n');
            }
        }
        if let Some(e) = &h.error {
            out.push_str(&format!("  the run would stop here: {e}\n"));
        }
    }
}

/// What a run does on each host, by name, hosts that would see the same grouped: where
/// `current` goes, whether the revision changes, what cleanup removes, the environment, the
/// steps of each phase.
fn readable_plan(p: &RunPlan, out: &mut String) {
    let mut groups: Vec<(Vec<&str>, String)> = Vec::new();
    for h in &p.hosts {
        let mut body = String::new();
        let now = h.current.as_deref().unwrap_or("no release yet");
        let revision = match (&h.current_revision, p.kind.as_str()) {
            (_, "rollback") => String::new(),
            (Some(r), _) if *r == p.revision => {
                format!(" (the same revision as current: {r})")
            }
            (Some(_), _) => " (another revision than current)".to_owned(),
            (None, _) => String::new(),
        };
        if !p.release.is_empty() {
            body.push_str(&format!("  current {now} → {}{revision}\n", p.release));
        }
        match (h.removes.is_empty(), p.kind.as_str()) {
            (_, "rollback") => {}
            (true, _) => body.push_str("  cleanup removes no release\n"),
            (false, _) => body.push_str(&format!(
                "  cleanup then removes: {}\n",
                h.removes.join(", ")
            )),
        }
        if !h.env.is_empty() {
            let env: Vec<String> = h.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            body.push_str(&format!("  env: {}\n", env.join(", ")));
        }
        let mut phases: Vec<(String, Vec<String>)> = Vec::new();
        for c in &h.commands {
            let phase = c.phase.replace('_', " ");
            let mut name = c.name.clone();
            if !c.changes {
                name.push_str(" (read)");
            }
            if let Some(n) = c.stdin_bytes {
                name.push_str(&format!(" ({})", human_bytes(n)));
            } else if c.name == "upload" {
                if let Some(n) = p.artifact_bytes {
                    name.push_str(&format!(" ({} artifact)", human_bytes(n)));
                }
            }
            match phases.last_mut() {
                Some((ph, names)) if *ph == phase => names.push(name),
                _ => phases.push((phase, vec![name])),
            }
        }
        for (phase, names) in phases {
            body.push_str(&format!("  {phase:<9} {}\n", names.join(", ")));
        }
        if let Some(e) = &h.error {
            body.push_str(&format!("  the run would stop here: {e}\n"));
        }
        match groups.iter_mut().find(|(_, b)| *b == body) {
            Some((hosts, _)) => hosts.push(&h.host),
            None => groups.push((vec![&h.host], body)),
        }
    }
    for (hosts, body) in groups {
        out.push_str(&format!("\n{}:\n{body}", hosts.join(", ")));
    }
}

/// A size as people read it: `812 B`, `12.3 kB`, `4.1 MB`.
fn human_bytes(n: usize) -> String {
    match n {
        n if n < 1000 => format!("{n} B"),
        n if n < 1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        n => format!("{:.1} MB", n as f64 / 1e6),
    }
}

/// A script line with the artifact it carries inline (`printf '\037\213…' | tar …`) shown by
/// its size instead of as escaped bytes.
fn without_payload(line: &str, bytes: Option<usize>) -> String {
    let Some(start) = line.find("printf '\\") else {
        return line.to_owned();
    };
    let body = start + "printf '".len();
    let Some(len) = line[body..].find("' | ") else {
        return line.to_owned();
    };
    let size = bytes.map(human_bytes).unwrap_or_else(|| "its".to_owned());
    format!(
        "{}printf <the artifact, {size}, as octal escapes>{}",
        &line[..start],
        &line[body + len + 1..]
    )
}

/// First SIGINT/SIGTERM/SIGHUP: cancel (the deploy aborts cleanly, or finishes its switch).
/// Second: exit at once.
fn spawn_signal_watch(cancel: CancellationToken, board: Arc<Board>) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        let mut count = 0;
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
            count += 1;
            if count == 1 {
                eprintln!(
                    "\nship: interrupted; cleaning up (press Ctrl-C again to exit at once — \
                     hosts may then keep a lock and a staged release; `ship status` shows them)"
                );
                cancel.cancel();
            } else {
                eprintln!(
                    "ship: exiting at once. Where each host stood:\n{}\n\
                     hosts may keep a lock and a staged release: `ship status` shows them",
                    board.snapshot().join("\n")
                );
                std::process::exit(i32::from(exit::INTERRUPTED));
            }
        }
    });
}
