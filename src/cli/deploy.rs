//! `ship deploy <stage>`.

use std::io::IsTerminal;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::output::{Board, Json, Live, Plain, Verbosity, summary_text};
use super::{DeployArgs, exit};
use crate::fleet::{self, Deploy};
use crate::report::{Outcome, Phase, Reporter};
use crate::transport::ConnectOptions;

pub async fn run(args: DeployArgs) -> u8 {
    let g = &args.global;
    let stage = match super::inspect::load_stage(g, &args.stage) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut stage = stage;
    for h in &mut stage.hosts {
        if let Some(t) = args.connect_timeout {
            h.config.timeouts.connect = t;
        }
        if let Some(t) = args.step_timeout {
            h.config.timeouts.step = t;
        }
    }
    let Some(source) = stage.source().cloned() else {
        eprintln!("error: stage `{}` has no hosts", stage.name);
        return exit::USAGE;
    };
    // Pack or resolve once, before any host is touched.
    let prepared = match tokio::task::spawn_blocking(move || crate::source::prepare(&source)).await
    {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            eprintln!("error: {e}\n  nothing was changed on any host");
            return exit::FAILED;
        }
        Err(e) => {
            eprintln!("error: preparing the source failed: {e}");
            return exit::FAILED;
        }
    };
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
        Arc::new(Plain { verbosity })
    };
    let board = Arc::new(Board::new(&names, shown));

    let cancel = CancellationToken::new();
    spawn_signal_watch(cancel.clone(), board.clone());

    let summary = fleet::deploy(
        Deploy {
            stage,
            source: prepared,
            connect: ConnectOptions {
                accept_new_host_keys: args.accept_new_host_keys,
            },
            keep_failed: args.keep_failed,
            lock_wait: args.lock_wait.unwrap_or_default(),
        },
        board,
        cancel.clone(),
    )
    .await;

    if !g.json {
        print!("{}", summary_text(&summary));
    }
    let lock_held = summary
        .hosts
        .iter()
        .any(|h| h.failure.as_ref().is_some_and(|f| f.phase == Phase::Lock));
    let lock_left = summary.hosts.iter().any(|h| h.lock_left);
    match summary.outcome {
        Outcome::Deployed if lock_left => exit::ATTENTION,
        Outcome::Deployed => exit::OK,
        Outcome::Mixed => exit::ATTENTION,
        _ if lock_left => exit::ATTENTION,
        _ if cancel.is_cancelled() => exit::INTERRUPTED,
        _ if lock_held => exit::LOCKED,
        Outcome::Aborted | Outcome::RolledBack => exit::FAILED,
    }
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
