//! The command line: argument parsing, output rendering and exit codes. The only layer that
//! prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod deploy;
pub(crate) mod init;
mod inspect;
mod output;
mod ssh;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Exit codes, documented in docs/cli.md.
pub use crate::error::exit;

#[derive(Parser, Debug)]
#[command(
    name = "ship",
    version,
    about = "Fleet-atomic deploys over SSH: every host or none, at one instant, with proof.",
    after_help = "`ship <stage>` is short for `ship deploy <stage>`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build a release on every host of a stage, then switch them all at once.
    Deploy(DeployArgs),
    /// Switch every host of a stage back to an earlier release, all at once.
    Rollback(RollbackArgs),
    /// Print every command a deploy would run on each host, without changing anything (same as
    /// `ship deploy --dry-run`).
    #[command(
        mut_arg("dry_run", |a| a.hide(true)),
        mut_arg("keep_failed", |a| a.hide(true)),
        mut_arg("lock_wait", |a| a.hide(true)),
    )]
    Plan(DeployArgs),
    /// Show where every host of a stage stands: current release, locks, unfinished releases,
    /// last journal entry, and whether the fleet is consistent.
    Status(StageArgs),
    /// List the releases on every host: id, commit, deployed by and when, current, bad.
    Releases(StageArgs),
    /// An interactive shell on one host of a stage (the first by default), in
    /// `deploy_to/current`, through OpenSSH with the inventory's keys, host keys and jump hosts.
    Ssh {
        #[command(flatten)]
        target: StageArgs,
        /// The host (a name from the inventory).
        host: Option<String>,
    },
    /// The stage's deploys and rollbacks, newest first, merged from every host's journal.
    History {
        #[command(flatten)]
        target: StageArgs,
        /// How many runs to show.
        #[arg(short = 'n', long, default_value_t = 10)]
        count: usize,
    },
    /// Check that every host can take a deploy, changing nothing that matters: connection and
    /// host key, deploy_to writable, free disk, tools, shared files, atomic rename.
    Check(CheckArgs),
    /// Print the effective settings of every host of a stage (after defaults, stage, host and
    /// recipe), secrets masked, as YAML (or JSON with --json).
    Config(StageArgs),
    /// Run a command on every host of a stage at once (in `deploy_to/current`), and show the
    /// output grouped by host: `ship exec production -- php artisan cache:clear`.
    Exec(ExecArgs),
    /// Write a commented inventory for a new project (asks on a terminal; flags for scripts).
    Init(init::InitArgs),
    /// Print a shell completion script: `ship completions bash > /etc/bash_completion.d/ship`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `ship man > /usr/local/share/man/man1/ship.1`.
    Man,
    /// Print the inventory's JSON Schema, for editors that check and complete YAML:
    /// `ship schema > inventory.schema.json`.
    Schema,
    /// Show or release the deploy lock of a stage.
    #[command(subcommand)]
    Lock(LockCommand),
    #[command(external_subcommand)]
    Stage(Vec<OsString>),
}

/// Options shared by commands that read the inventory.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// The inventory file.
    #[arg(
        short,
        long,
        env = "SHIP_INVENTORY",
        default_value = "inventory.yaml",
        global = true
    )]
    pub inventory: PathBuf,
    /// Print JSON instead of text: one event per line for deploy and rollback, one object for
    /// the other commands.
    #[arg(long, global = true)]
    pub json: bool,
    /// Show every line the hosts print (for the commands that run on them).
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Print only the summary and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Limit the run to these hosts (names separated by commas); the rest are left untouched.
    #[arg(long, global = true, value_name = "HOSTS", value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Limit the run to hosts with any of these roles (separated by commas).
    #[arg(long, global = true, value_name = "ROLES", value_delimiter = ',')]
    pub roles: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct StageArgs {
    /// The stage (a key under `stages:` in the inventory).
    pub stage: String,
    #[command(flatten)]
    pub global: Global,
}

#[derive(Subcommand, Debug)]
enum LockCommand {
    /// Show who holds the lock on each host.
    Status(StageArgs),
    /// Lock every host of a stage for maintenance: no deploy or rollback starts (and none waits)
    /// until `ship lock release`. Every host or none.
    Acquire {
        #[command(flatten)]
        target: StageArgs,
        /// Why: shown to whoever tries to deploy meanwhile, by `ship status` and `lock release`.
        #[arg(long, short = 'm', value_name = "MESSAGE")]
        message: String,
    },
    /// Remove the lock left by a run that died, with the release it was staging (never
    /// `current`, never `shared/`).
    Release {
        #[command(flatten)]
        target: StageArgs,
        /// Do not ask for confirmation (required when not on a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct DeployArgs {
    /// The stage to deploy (a key under `stages:` in the inventory).
    pub stage: String,
    /// Trust hosts whose key is not yet in known_hosts, and record it. A changed key is still
    /// refused.
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// After a failure, keep the staged release on the hosts for inspection.
    #[arg(long)]
    pub keep_failed: bool,
    /// Wait this long for a lock held by another deploy instead of stopping at once
    /// (e.g. `10m`).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub lock_wait: Option<Duration>,
    /// Override `connect_timeout` for every host (TCP, handshake and authentication).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub connect_timeout: Option<Duration>,
    /// At most this many SSH handshakes in flight at once (overrides `connect_concurrency:`;
    /// keep it under the hosts' or a bastion's sshd `MaxStartups`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub connect_concurrency: Option<u32>,
    /// Override `step_timeout` for every host (each remote step of prepare).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub step_timeout: Option<Duration>,
    /// Switch these hosts first (a number of hosts, first by name, or host names separated by
    /// commas), verify them, hold for `--observe`, then switch the rest. Overrides `canary:`.
    #[arg(long, value_name = "N|HOSTS")]
    pub canary: Option<String>,
    /// Switch in waves (e.g. `1,10%,100%`: one host, then up to a tenth of the fleet, then the
    /// rest), each verified and held for `--observe` before the next; a failure anywhere
    /// switches every switched host back. Overrides `waves:` and `canary:`.
    #[arg(long, value_name = "SIZES", conflicts_with = "canary")]
    pub waves: Option<String>,
    /// Leave out up to this many hosts (or this share of the stage, e.g. `2%`) that cannot be
    /// reached or logged in to at connect: the others deploy as the whole fleet, and the summary
    /// names those left out. Overrides `max_unreachable:`. Default 0.
    #[arg(long, value_name = "N|P%")]
    pub max_unreachable: Option<String>,
    /// Build afresh on every host, even where a failed deploy of the same build left its
    /// release prepared (by default those hosts reuse it).
    #[arg(long)]
    pub rebuild: bool,
    /// With a canary: how long to hold before switching the rest (Ctrl-C during the hold
    /// switches the canary back). Overrides `observe:`.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub observe: Option<Duration>,
    /// Print every command each host would run, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run (or `ship plan`): print every line of every command whole.
    #[arg(long)]
    pub full: bool,
    /// Deploy this branch, tag or commit (full, or short within a checkout of the repository)
    /// instead of the inventory's `ref:` (git sources).
    #[arg(long = "ref", value_name = "REF", conflicts_with = "artifact")]
    pub reference: Option<String>,
    /// Deploy this directory or tarball (.tar, .tar.gz, .tgz, .tar.zst) instead of the
    /// inventory's source; relative to the current directory.
    #[arg(long, value_name = "PATH")]
    pub artifact: Option<std::path::PathBuf>,
    /// Deploy the tarball at this http(s) URL instead of the inventory's source: each host
    /// downloads it itself and checks it against --sha256 before unpacking.
    #[arg(
        long,
        value_name = "URL",
        conflicts_with_all = ["reference", "artifact"],
        requires = "sha256"
    )]
    pub artifact_url: Option<String>,
    /// The SHA-256 of the tarball at --artifact-url (64 hex digits).
    #[arg(long, value_name = "HEX", requires = "artifact_url")]
    pub sha256: Option<String>,
    #[command(flatten)]
    pub global: Global,
}

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// The stage to check.
    pub stage: String,
    /// Trust hosts whose key is not yet in known_hosts, and record it. A changed key is still
    /// refused.
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Override `connect_timeout` for every host.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub connect_timeout: Option<Duration>,
    #[command(flatten)]
    pub global: Global,
}

#[derive(Args, Debug, Clone)]
pub struct ExecArgs {
    /// The stage.
    pub stage: String,
    /// Stop the command on a host that takes longer than this.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "10m")]
    pub timeout: Duration,
    /// The command (a shell command line; after `--`).
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
    #[command(flatten)]
    pub global: Global,
}

#[derive(Args, Debug, Clone)]
pub struct RollbackArgs {
    /// The stage to roll back.
    pub stage: String,
    /// The release to switch to (default: the release that was current before the last
    /// deploy, from the hosts' journals).
    #[arg(long, value_name = "RELEASE")]
    pub to: Option<String>,
    /// Trust hosts whose key is not yet in known_hosts, and record it.
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Wait this long for a lock held by another run.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub lock_wait: Option<Duration>,
    /// Override `connect_timeout` for every host.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub connect_timeout: Option<Duration>,
    /// At most this many SSH handshakes in flight at once (overrides `connect_concurrency:`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub connect_concurrency: Option<u32>,
    /// Print every command each host would run, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: print every line of every command whole.
    #[arg(long, requires = "dry_run")]
    pub full: bool,
    #[command(flatten)]
    pub global: Global,
}

/// `ship stauts production` reads as `ship deploy stauts …` by the shorthand: when `stauts`
/// is nearly a command's name and neither a stage of the inventory nor nearly one, the operator
/// mistyped the command.
fn mistyped_command(rest: &[OsString]) -> Option<crate::error::Error> {
    let word = rest.first()?.to_str()?;
    let cmd = <Cli as clap::CommandFactory>::command();
    let names: Vec<&str> = cmd
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name())
        .collect();
    let near = crate::inventory::nearest(word, &names)?;
    // The inventory the command line names, as the deploy would read it.
    let flag = rest
        .iter()
        .position(|a| a == "-i" || a == "--inventory")
        .and_then(|i| rest.get(i + 1))
        .map(std::path::PathBuf::from);
    let inventory = flag
        .or_else(|| std::env::var_os("SHIP_INVENTORY").map(std::path::PathBuf::from))
        .unwrap_or_else(|| std::path::PathBuf::from("inventory.yaml"));
    if let Ok(inv) = crate::inventory::Inventory::load(&inventory) {
        let stages: Vec<&str> = inv.stages.iter().map(|s| s.name.as_str()).collect();
        if stages.contains(&word) || crate::inventory::nearest(word, &stages).is_some() {
            return None;
        }
    }
    Some(
        crate::error::Error::usage(format!(
            "`{word}` is neither a command nor a stage of {}",
            inventory.display()
        ))
        .hint(format!(
            "did you mean `ship {near}`? (`ship --help` lists the commands)"
        )),
    )
}

/// The man page: ship's own sections, then one section per command with its options, all in
/// this one page (it names no `ship-deploy(1)` pages that do not exist).
fn man_page(cmd: &clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::Write;
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    let esc = |s: &str| s.replace('\\', "\\e").replace('-', "\\-");
    writeln!(out, ".SH SUBCOMMANDS")?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let mut names = vec![sub.get_name().to_owned()];
        let mut subs: Vec<&clap::Command> = sub.get_subcommands().collect();
        if subs.is_empty() {
            subs.push(sub);
            names.clear();
        }
        for c in subs {
            let full = if names.is_empty() {
                c.get_name().to_owned()
            } else {
                format!("{} {}", names[0], c.get_name())
            };
            writeln!(out, ".SS \"ship {}\"", esc(&full))?;
            if let Some(about) = c.get_long_about().or(c.get_about()) {
                writeln!(out, "{}", esc(&about.to_string()))?;
            }
            for a in c.get_arguments().filter(|a| !a.is_hide_set()) {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                let mut flag = Vec::new();
                if let Some(s) = a.get_short() {
                    flag.push(format!("\\fB\\-{s}\\fR"));
                }
                if let Some(l) = a.get_long() {
                    flag.push(format!("\\fB\\-\\-{}\\fR", esc(l)));
                }
                if flag.is_empty() {
                    flag.push(format!("<\\fI{}\\fR>", esc(id)));
                }
                writeln!(out, ".TP")?;
                writeln!(out, "{}", flag.join(", "))?;
                if let Some(h) = a.get_long_help().or(a.get_help()) {
                    writeln!(out, "{}", esc(&h.to_string()))?;
                }
            }
        }
    }
    writeln!(out, ".SH \"EXIT STATUS\"")?;
    for (code, what) in [
        (
            exit::OK,
            "every host is on the new release (or: nothing to do)",
        ),
        (exit::FAILED, "the run failed and the fleet is as it was"),
        (
            exit::USAGE,
            "bad command line or inventory; nothing was contacted",
        ),
        (
            exit::ATTENTION,
            "hosts may be on different releases, or a lock was left",
        ),
        (
            exit::LOCKED,
            "another run holds the lock; nothing was changed",
        ),
        (
            exit::INTERRUPTED,
            "interrupted before the switch; the fleet is as it was",
        ),
    ] {
        writeln!(out, ".TP\n{code}\n{}", esc(what))?;
    }
    man.render_version_section(out)?;
    // Each section clap_mangen renders repeats its two-line preamble: keep the first.
    let text = String::from_utf8_lossy(out).into_owned();
    let mut seen = std::collections::HashSet::new();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            !(l.starts_with(".ie \\n(.g") || l.starts_with(".el .ds Aq")) || seen.insert(*l)
        })
        .collect();
    *out = (kept.join("\n") + "\n").into_bytes();
    Ok(())
}

/// A duration on the command line: `90s`, `10m`, `1h`, `500ms`.
fn duration(text: &str) -> Result<Duration, String> {
    crate::inventory::parse_duration(text)
        .ok_or_else(|| format!("`{text}` is not a duration (examples: 30s, 10m, 1h, 500ms)"))
}

/// Parse the command line, run, and map the result to an exit code.
pub fn main() -> ExitCode {
    crate::util::raise_open_files_limit();
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let command = match cli.command {
        Command::Stage(rest) => {
            // `ship production …` → `ship deploy production …`
            if let Some(e) = mistyped_command(&rest) {
                eprint!("{}", e.render());
                return ExitCode::from(e.status);
            }
            let mut argv = vec![OsString::from("ship deploy")];
            argv.extend(rest);
            match DeployArgs::augment_args(clap::Command::new("ship deploy"))
                .try_get_matches_from(argv)
                .and_then(|m| <DeployArgs as clap::FromArgMatches>::from_arg_matches(&m))
            {
                Ok(a) => Command::Deploy(a),
                Err(e) => {
                    let _ = e.print();
                    return ExitCode::from(exit::USAGE);
                }
            }
        }
        c => c,
    };
    // One thread: ship waits on the network nearly all the time, and a runtime with a worker
    // per core woke its other worker for most packets (a futex call each way: 37,000 in a
    // 1,000-host deploy, 5% of the controller's CPU). What blocks (packing the artifact,
    // checks on this machine, a prompt) runs on tokio's blocking threads.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let json = match &command {
        Command::Deploy(a) | Command::Plan(a) => a.global.json,
        Command::Rollback(a) => a.global.json,
        Command::Status(a) | Command::Releases(a) | Command::Config(a) => a.global.json,
        Command::Check(a) => a.global.json,
        Command::Exec(a) => a.global.json,
        Command::History { target, .. } => target.global.json,
        Command::Lock(LockCommand::Status(a)) => a.global.json,
        Command::Lock(LockCommand::Release { target, .. })
        | Command::Lock(LockCommand::Acquire { target, .. }) => target.global.json,
        _ => false,
    };
    let result: crate::error::Result<u8> = runtime.block_on(async {
        match command {
            Command::Deploy(a) => deploy::run(a).await,
            Command::Plan(mut a) => {
                a.dry_run = true;
                deploy::run(a).await
            }
            Command::Rollback(a) => deploy::rollback(a).await,
            Command::Status(a) => inspect::status(&a.global, &a.stage).await,
            Command::Releases(a) => inspect::releases(&a.global, &a.stage).await,
            Command::Ssh { target, host } => {
                ssh::run(&target.global, &target.stage, host.as_deref())
            }
            Command::History { target, count } => {
                inspect::history(&target.global, &target.stage, count).await
            }
            Command::Check(a) => inspect::check(&a).await,
            Command::Config(a) => inspect::config(&a.global, &a.stage),
            Command::Exec(a) => inspect::exec(&a).await,
            Command::Completions { shell } => {
                let mut cmd = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut cmd, "ship", &mut std::io::stdout());
                Ok(exit::OK)
            }
            Command::Init(a) => init::run(&a),
            Command::Schema => {
                print!("{}", crate::inventory::SCHEMA);
                Ok(exit::OK)
            }
            Command::Man => {
                let cmd = <Cli as clap::CommandFactory>::command();
                let mut page = Vec::new();
                man_page(&cmd, &mut page)
                    .and_then(|()| std::io::Write::write_all(&mut std::io::stdout(), &page))
                    .map(|()| exit::OK)
                    .map_err(|e| {
                        crate::error::Error::failed("cannot write the man page").because(e)
                    })
            }
            Command::Lock(LockCommand::Status(a)) => {
                inspect::lock_status(&a.global, &a.stage).await
            }
            Command::Lock(LockCommand::Release { target, yes }) => {
                inspect::lock_release(&target.global, &target.stage, yes).await
            }
            Command::Lock(LockCommand::Acquire { target, message }) => {
                inspect::lock_acquire(&target.global, &target.stage, &message).await
            }
            Command::Stage(_) => Ok(exit::USAGE),
        }
    });
    // Every command's error is rendered here, and only here: on stderr; with --json also as
    // one JSON object on stdout; under GitHub Actions also as an annotation.
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprint!("{}", e.render());
            if json {
                println!("{}", e.to_json());
            } else if std::env::var("GITHUB_ACTIONS").as_deref() == Ok("true") {
                print!("{}", e.github_annotation());
            }
            e.status
        }
    };
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mistyped_command_is_named_unless_it_is_or_is_near_a_stage() {
        let dir = tempfile::tempdir().expect("dir");
        let inv = dir.path().join("inventory.yaml");
        std::fs::write(
            &inv,
            "defaults:\n  deploy_to: /srv/app\n  source: { artifact: . }\nstages:\n  local:\n    \
             connection: local\n    hosts:\n      here:\n  status-page:\n    connection: local\n    \
             hosts:\n      there:\n",
        )
        .expect("inventory");
        let args =
            |w: &str| -> Vec<OsString> { vec![w.into(), "-i".into(), inv.as_os_str().to_owned()] };
        let e = mistyped_command(&args("rollbak")).expect("a mistyped command");
        assert_eq!(e.status, exit::USAGE);
        assert_eq!(
            e.render(),
            format!(
                "error: `rollbak` is neither a command nor a stage of {}\n  hint: did you mean \
                 `ship rollback`? (`ship --help` lists the commands)\n",
                inv.display()
            )
        );
        // Near a stage: the stage's own error says which (`did you mean local?`).
        assert!(mistyped_command(&args("locl")).is_none());
        // A stage, or far from every command: the deploy goes on.
        assert!(mistyped_command(&args("local")).is_none());
        assert!(mistyped_command(&args("production")).is_none());
    }

    #[test]
    fn the_man_page_is_one_page_with_every_command() {
        let mut page = Vec::new();
        man_page(&<Cli as clap::CommandFactory>::command(), &mut page).expect("render");
        let page = String::from_utf8(page).expect("utf-8");
        assert!(!page.contains("(1)\n"), "names other pages: {page}");
        for c in ["deploy", "rollback", "plan", "status", "lock release"] {
            assert!(page.contains(&format!(".SS \"ship {c}\"")), "{c}: {page}");
        }
        assert!(page.contains("\\fB\\-\\-artifact\\fR"), "{page}");
        assert!(page.contains(".SH \"EXIT STATUS\"\n.TP\n0\n"), "{page}");
        assert_eq!(page.matches(".el .ds Aq").count(), 1, "{page}");
    }
}
