//! Running a host's steps one after the other, and what their output says went wrong (a
//! git server refusing the key, sudo wanting a password, a full disk).

use super::*;

/// Run steps one after the other on one host; the first failure ends it. `Ok(false)`: stopped
/// by `stop` (not this host's failure).
pub(super) async fn run_steps(
    conn: &Connection,
    host: &Host,
    steps: &[Step],
    payload: Option<&[u8]>,
    phase: Phase,
    ctx: &RunCtx,
    stop: &CancellationToken,
) -> Result<bool, Failure> {
    // The git steps that use the operator's agent run on a connection of their own, closed
    // as soon as they are done: no other step can reach the agent (see `Connection::for_agent`).
    let mut agent_conn: Option<Connection> = None;
    let refused_before = conn.agent_refusals();
    let needs_agent = |s: &Step| s.reaches_git && host.config.forward_agent;
    for (n, step) in steps.iter().enumerate() {
        // A step only so many hosts run at once: wait for a turn (or for the run to stop).
        let _turn = match step.parallel {
            Some(n) => {
                let turns = ctx.turns(&step.name, n);
                tokio::select! {
                    t = turns.acquire_owned() => t.ok(),
                    _ = stop.cancelled() => return Ok(false),
                }
            }
            None => None,
        };
        let s0 = Instant::now();
        ctx.reporter.report(&Event::StepStarted {
            host: host.name.clone(),
            step: step.name.clone(),
        });
        let stdin = if step.takes_payload { payload } else { None };
        let on_line = Some(ctx.on_line(&host.name));
        let agent = needs_agent(step);
        let what = Purpose::changes(phase.as_str(), &step.name);
        if agent && agent_conn.is_none() {
            match conn.for_agent().await {
                Ok(Some(c)) => agent_conn = Some(c),
                Ok(None) => {}
                Err(e) => {
                    return Err(transport_failure(ctx, phase, Some(&step.name), &e));
                }
            }
        }
        let on = match (&agent_conn, agent) {
            (Some(c), true) => c,
            _ => conn,
        };
        let result = if step.quick {
            on.run(
                what,
                &step.script,
                stdin,
                on_line,
                host.config.timeouts.step,
            )
            .await
        } else {
            on.run_step(
                what,
                &step.script,
                stdin,
                on_line,
                host.config.timeouts.step,
                stop,
                agent,
            )
            .await
        };
        let ok = matches!(&result, Ok(o) if o.success());
        if !ok || !steps.get(n + 1).is_some_and(needs_agent) {
            if let Some(c) = agent_conn.take() {
                report_refused_agent(ctx, host, c.agent_refusals());
                c.close().await;
            }
        }
        let cancelled =
            matches!(&result, Err(TransportError::Stopped { .. })) && stop.is_cancelled();
        ctx.reporter.report(&Event::StepFinished {
            host: host.name.clone(),
            step: step.name.clone(),
            ok,
            cancelled,
            elapsed_ms: s0.elapsed().as_millis() as u64,
        });
        match result {
            Ok(o) if o.success() => continue,
            Err(TransportError::Stopped { .. }) if cancelled => return Ok(false),
            Ok(o) => {
                let mut f = command_failure(ctx, phase, Some(&step.name), &o);
                if o.last_lines(TAIL_LINES)
                    .iter()
                    .any(|l| l.contains("No space left on device"))
                {
                    f.message = format!("{}: the disk is full on this host", f.message);
                }
                if let Some(hint) = sudo_problem(&o.last_lines(TAIL_LINES)) {
                    f.message = format!("{}: {hint}", f.message);
                }
                if step.reaches_git {
                    if let Some(hint) = git_problem(&o.last_lines(TAIL_LINES), host) {
                        f.message = format!("{}: {hint}", f.message);
                    }
                }
                return Err(f);
            }
            Err(e) => return Err(transport_failure(ctx, phase, Some(&step.name), &e)),
        }
    }
    report_refused_agent(ctx, host, conn.agent_refusals() - refused_before);
    Ok(true)
}

/// Say (as the host's output, shown with `-v`) that the host opened agent channels ship
/// refused: something on it tried to use the operator's agent outside a git step.
pub(super) fn report_refused_agent(ctx: &RunCtx, host: &Host, refused: usize) {
    if refused > 0 {
        ctx.reporter.report(&Event::Line {
            host: host.name.clone(),
            stream: "stderr",
            line: format!(
                "ship: refused {refused} ssh-agent channel(s) the host opened outside a git step"
            ),
        });
    }
}

/// What went wrong reaching the git server, from a git step's output, with what to do.
pub(super) fn git_problem(tail: &[String], host: &Host) -> Option<String> {
    let any = |needle: &str| tail.iter().any(|l| l.contains(needle));
    if any("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || any("has changed and you have requested strict checking")
    {
        Some(
            "the git server's host key is not the one recorded; refusing to fetch (hint: if the \
             server's key really changed, update git_known_hosts or the host's known_hosts after \
             checking the new fingerprint)"
                .into(),
        )
    } else if any("Host key verification failed") || any("No ED25519 host key is known") {
        Some(
            "the git server's host key is not trusted on this host (hint: set `git_known_hosts` \
             to a file with its key, e.g. from `ssh-keyscan`, after checking the fingerprint)"
                .into(),
        )
    } else if any("Permission denied (publickey") {
        Some(if host.config.forward_agent {
            "the git server refused the key: none of the keys in your ssh-agent is allowed \
             there (hint: `ssh-add -l` lists them; add the deploy key with `ssh-add`)"
                .into()
        } else {
            format!(
                "the git server refused the host's key (hint: give `{}` on this host a deploy key \
                 the repository accepts, or set `forward_agent: true` to use your ssh-agent)",
                host.config.user
            )
        })
    } else {
        None
    }
}

/// What went wrong with `sudo`, from a step's output, with what to do about it.
pub(super) fn sudo_problem(tail: &[String]) -> Option<&'static str> {
    let any = |needle: &str| tail.iter().any(|l| l.contains(needle));
    if any("sudo: a password is required") || any("sudo: a terminal is required") {
        Some(
            "sudo asked for a password; ship runs sudo non-interactively (hint: allow the deploy \
             user this command without a password, e.g. in /etc/sudoers.d/deploy: \
             `deploy ALL=(root) NOPASSWD: /usr/bin/systemctl reload php8.3-fpm`)",
        )
    } else if any("sudo: not found") || any("sudo: command not found") {
        Some("sudo is not installed on this host (hint: install it, or drop `sudo: true`)")
    } else if any("is not in the sudoers file") || any("is not allowed to execute") {
        Some("the deploy user may not run this with sudo (hint: add a sudoers rule for it)")
    } else {
        None
    }
}

/// A host's run-once steps (migrations), rendered for this release.
pub(super) fn run_once_steps(plan: &remote::ReleasePlan, host: &Host) -> Vec<Step> {
    host.config
        .run_once
        .iter()
        .map(|c| remote::release_step(plan, "run once", c))
        .collect()
}

/// A host's after-switch steps, then its health check, rendered for this release.
pub(super) fn verify_steps(plan: &remote::ReleasePlan, host: &Host) -> Vec<Step> {
    let mut steps: Vec<Step> = host
        .config
        .after_switch
        .iter()
        .map(|c| remote::release_step(plan, "after switch", c))
        .collect();
    steps.extend(remote::health_step(plan, &host.config.health_check));
    steps
}
