//! Connecting to every host and reading its state (the preflight), within the connect timeout.

use super::*;

pub(super) async fn connect(
    ids: &[usize],
    hosts: &mut [HostRun],
    ctx: &RunCtx,
    d: &Deploy,
) -> Vec<Fact> {
    let gate = Arc::new(Semaphore::new(d.stage.connect_concurrency.max(1)));
    let (tools, detail) = match &d.job {
        Job::Deploy(source) => (source.tools.clone(), false),
        Job::Rollback { .. } => (Vec::new(), true),
    };
    let work = ids.iter().map(|&i| {
        let host = hosts[i].host.clone();
        let gate = gate.clone();
        let options = d.connect.clone();
        let tools = tools.clone();
        async move {
            ctx.phase(&host.name, Phase::Connect);
            if host.config.forward_agent
                && tools.contains(&"git")
                && std::env::var_os("SSH_AUTH_SOCK").is_none()
            {
                return (
                    i,
                    None,
                    Err(alone(ctx.failure(
                        Phase::Connect,
                        None,
                        None,
                        "forward_agent is set, but no ssh-agent runs here (SSH_AUTH_SOCK is not \
                         set) (hint: `eval $(ssh-agent)` and `ssh-add` the key the git server \
                         accepts; in CI, load it into an agent first)"
                            .into(),
                    ))),
                );
            }
            let conn = {
                let _permit = gate.acquire().await;
                // Boxed: the handshake's state (15 KB) exists only for the handshakes in
                // flight, not inline in every host's future from the start (15 MB at 1,000).
                match Box::pin(Connection::open(&host, &options)).await {
                    Ok(c) => Arc::new(c),
                    Err(e) => {
                        return (
                            i,
                            None,
                            Err(unreachable(transport_failure(
                                ctx,
                                Phase::Connect,
                                None,
                                &e,
                            ))),
                        );
                    }
                }
            };
            // The first command also opens the host's session: like everything at connect, it
            // waits at most the connect timeout (a host lost right after logging in must not
            // hold the deploy for the step timeout).
            let script = remote::preflight(&host.config.deploy_to, &tools, detail);
            let out = match conn
                .run(
                    Purpose::reads("connect", "preflight"),
                    &script,
                    None,
                    None,
                    host.config.timeouts.connect,
                )
                .await
            {
                Ok(o) if o.success() => o,
                Ok(o) => {
                    return (
                        i,
                        Some(conn),
                        Err(alone(command_failure(
                            ctx,
                            Phase::Connect,
                            Some("preflight"),
                            &o,
                        ))),
                    );
                }
                Err(TransportError::Timeout { after, .. }) => {
                    let message = format!(
                        "logged in, but the host did not answer its first command within {} \
                         (connect_timeout)",
                        util::human_duration(after)
                    );
                    return (
                        i,
                        Some(conn),
                        Err(alone(ctx.failure(
                            Phase::Connect,
                            Some("preflight"),
                            None,
                            message,
                        ))),
                    );
                }
                Err(e) => {
                    return (
                        i,
                        Some(conn),
                        Err(alone(transport_failure(
                            ctx,
                            Phase::Connect,
                            Some("preflight"),
                            &e,
                        ))),
                    );
                }
            };
            let pf = Preflight::parse(&out.stdout_text());
            if let Some(msg) = preflight_problem(&host, &pf, &tools) {
                return (
                    i,
                    Some(conn),
                    Err(alone(ctx.failure(
                        Phase::Connect,
                        Some("preflight"),
                        None,
                        msg,
                    ))),
                );
            }
            // A lock held by another run stops everything at once (exit 4), before the lock
            // phase, unless we were asked to wait for it.
            match &pf.lock {
                Some(raw)
                    if d.lock_wait.is_zero()
                        || HeldLock::read(raw, &ctx.controller).is_maintenance() =>
                {
                    // What the host is on is known: the summary says so.
                    let f = held_lock_failure(ctx, &host, raw, Duration::ZERO);
                    (i, Some(conn), Err((f, Some(pf.clone()), false)))
                }
                _ => (i, Some(conn), Ok(pf)),
            }
        }
    });
    let results = join_all(work).await;
    let mut events = Vec::new();
    for (i, conn, result) in results {
        hosts[i].conn = conn;
        match result {
            Ok(pf) => {
                hosts[i].preflight = pf;
                events.push(Fact::Connected(i));
            }
            Err((f, pf, unreachable)) => {
                hosts[i].unreachable = unreachable;
                if let Some(pf) = pf {
                    hosts[i].preflight = pf;
                }
                // The one failure at connect that belongs to the lock: another run holds it.
                hosts[i].locked_by_other = f.phase == Phase::Lock;
                hosts[i].fail(ctx, f);
                events.push(Fact::ConnectFailed(i));
            }
        }
    }
    // Hosts that could not be reached, within the budget for them, are left out: the others go
    // on as the whole fleet. Over the budget, the run stops here as always.
    let unreached: Vec<usize> = ids
        .iter()
        .copied()
        .filter(|&i| hosts[i].unreachable)
        .collect();
    let others_failed = ids
        .iter()
        .any(|&i| hosts[i].failure.is_some() && !hosts[i].unreachable);
    if !unreached.is_empty()
        && unreached.len() <= d.max_unreachable
        && unreached.len() < ids.len()
        && !others_failed
    {
        for &i in &unreached {
            hosts[i].left_out = true;
            events.retain(|e| *e != Fact::ConnectFailed(i));
            events.push(Fact::LeftOut(i));
        }
    } else if d.max_unreachable > 0 && unreached.len() > d.max_unreachable {
        let note = format!(
            " ({} hosts unreachable, more than max_unreachable ({}): the deploy stops here)",
            unreached.len(),
            d.max_unreachable
        );
        for &i in &unreached {
            if let Some(f) = hosts[i].failure.as_mut() {
                f.message.push_str(&note);
            }
        }
    }
    events
}

/// Why a host that answered cannot take this deploy, if it cannot.
pub(super) fn preflight_problem(host: &Host, pf: &Preflight, tools: &[&str]) -> Option<String> {
    let d = &host.config.deploy_to;
    if !pf.writable {
        return Some(format!(
            "{d} is not writable by `{}` (hint: create it and chown it to the deploy user)",
            host.config.user
        ));
    }
    if pf.current_not_a_link {
        return Some(format!(
            "{d}/current exists but is not a symlink (a directory set up by hand?); ship will not \
             touch it (hint: move it aside, e.g. into releases/, and link current to it)"
        ));
    }
    let missing: Vec<&str> = tools
        .iter()
        .filter(|t| !pf.tools.iter().any(|x| x == *t))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "missing on the host: {} (hint: install it, e.g. `apt-get install {}`)",
            missing.join(", "),
            missing.join(" ")
        ));
    }
    None
}

/// A failure at connect that read nothing of the host.
fn alone(f: Failure) -> (Failure, Option<Preflight>, bool) {
    (f, None, false)
}

/// The host could not be reached or logged in to (what `max_unreachable` allows for).
fn unreachable(f: Failure) -> (Failure, Option<Preflight>, bool) {
    (f, None, true)
}
