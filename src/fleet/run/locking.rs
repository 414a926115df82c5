//! Taking every host's lock, in an order that lets exactly one of two runs started together
//! proceed, and waiting for a held lock under `--lock-wait`.

use super::*;

/// The lock's owner record for this run.
pub(super) fn owner_record(ctx: &RunCtx) -> String {
    serde_json::to_string(&LockOwner {
        token: ctx.token.clone(),
        kind: ctx.kind.into(),
        user: ctx.user.clone(),
        controller: ctx.controller.clone(),
        pid: std::process::id(),
        release: ctx.release.clone(),
        started: ctx.started.clone(),
        ci_job: ctx.ci_job.clone(),
        ci_url: ctx.ci_url.clone(),
        message: None,
    })
    .unwrap_or_default()
}

/// What happened when one host's lock was tried.
pub(super) enum LockTry {
    /// Ours now; the host's releases as seen under the lock.
    Taken(Vec<String>),
    /// Another run holds it (its owner record, raw).
    Held(String),
    /// Not taken: the command said so.
    Failed(Failure),
    /// Unknown: the host was lost while it took the lock (it may hold ours now).
    Lost(Failure),
}

pub(super) async fn try_lock(
    ids: &[usize],
    hosts: &[HostRun],
    ctx: &RunCtx,
    owner: &str,
) -> Vec<(usize, LockTry)> {
    join_all(ids.iter().map(|&i| {
        let h = &hosts[i];
        let conn = h.connection();
        let script = remote::lock(&h.host.config.deploy_to, owner);
        let name = h.host.name.clone();
        let t = h.host.config.timeouts.step.min(SHORT_COMMAND);
        async move {
            ctx.phase(&name, Phase::Lock);
            let conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    return (
                        i,
                        LockTry::Failed(transport_failure(ctx, Phase::Lock, None, &e)),
                    );
                }
            };
            let what = Purpose::changes("lock", "lock");
            let r = match conn.run(what, &script, None, None, t).await {
                Ok(o) if o.success() => LockTry::Taken(Preflight::parse(&o.stdout_text()).releases),
                Ok(o) if o.status == Some(LOCK_HELD) => {
                    LockTry::Held(remote::parse_lock_held(&o.stdout_text()))
                }
                Ok(o) => LockTry::Failed(command_failure(ctx, Phase::Lock, None, &o)),
                Err(e) => LockTry::Lost(transport_failure(ctx, Phase::Lock, None, &e)),
            };
            (i, r)
        }
    }))
    .await
}

/// Lock every host. Hosts are locked in a fixed order — the first host by name alone, then
/// the rest at once — so of two runs started together exactly one gets past the first host and
/// the other stops there, having changed nothing. A held lock stops the run at once, or, with
/// `--lock-wait`, releases whatever this run took and tries again until the wait is over.
pub(super) async fn lock(
    ids: &[usize],
    hosts: &mut [HostRun],
    ctx: &RunCtx,
    d: &Deploy,
) -> Vec<Fact> {
    let owner = owner_record(ctx);
    let mut order = ids.to_vec();
    order.sort_by(|a, b| hosts[*a].host.name.cmp(&hosts[*b].host.name));
    let deadline = Instant::now() + d.lock_wait;
    let mut announced = false;
    loop {
        let Some((first, rest)) = order.split_first() else {
            return Vec::new();
        };
        let mut results = try_lock(&[*first], hosts, ctx, &owner).await;
        if matches!(results.first(), Some((_, LockTry::Taken(_)))) {
            results.extend(try_lock(rest, hosts, ctx, &owner).await);
        }
        let held = results.iter().find_map(|(i, r)| match r {
            LockTry::Held(raw) => Some((*i, raw.clone())),
            _ => None,
        });
        let other_failure = results
            .iter()
            .any(|(_, r)| matches!(r, LockTry::Failed(_) | LockTry::Lost(_)));
        let remaining = deadline.saturating_duration_since(Instant::now());
        // A maintenance lock is waited for by no one: it ends when someone lifts it.
        let maintenance = held
            .as_ref()
            .is_some_and(|(_, raw)| HeldLock::read(raw, &ctx.controller).is_maintenance());
        if let Some((i, raw)) = held.filter(|_| {
            !other_failure && !remaining.is_zero() && !ctx.cancel.is_cancelled() && !maintenance
        }) {
            // Give back what we took, so the holder (or a run waiting like us) can finish.
            let taken: Vec<usize> = results
                .iter()
                .filter(|(_, r)| matches!(r, LockTry::Taken(_)))
                .map(|(i, _)| *i)
                .collect();
            on_each(&taken, hosts, ctx, (Phase::Lock, "give back"), |h, c| {
                remote::unlock(&h.host.config.deploy_to, &c.token)
            })
            .await;
            if !announced {
                announced = true;
                let lock = HeldLock::read(&raw, &ctx.controller);
                ctx.reporter.report(&Event::Waiting {
                    host: hosts[i].host.name.clone(),
                    message: format!(
                        "locked by {}; waiting up to {} for it (--lock-wait)",
                        lock.who(),
                        util::human_duration(remaining)
                    ),
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(remaining.min(LOCK_POLL)) => continue,
                _ = ctx.cancel.cancelled() => {}
            }
        }
        let mut events = Vec::new();
        for (i, r) in results {
            match r {
                LockTry::Taken(releases) => {
                    hosts[i].preflight.releases = releases;
                    events.push(Fact::Locked(i));
                }
                LockTry::Held(raw) => {
                    let f = held_lock_failure(ctx, &hosts[i].host, &raw, d.lock_wait);
                    hosts[i].locked_by_other = true;
                    hosts[i].fail(ctx, f);
                    events.push(Fact::LockFailed(i));
                }
                LockTry::Failed(f) => {
                    hosts[i].fail(ctx, f);
                    events.push(Fact::LockFailed(i));
                }
                // It may hold our lock: counted as locked, so that the unlock tries it (a
                // token-checked unlock is safe either way) and, if the host stays lost, the
                // summary says its lock may be left.
                LockTry::Lost(f) => {
                    hosts[i].fail(ctx, f);
                    events.push(Fact::Locked(i));
                    events.push(Fact::LockFailed(i));
                }
            }
        }
        return events;
    }
}

/// The failure for a lock held by another run: who, since when, alive or not, what to do.
pub(super) fn held_lock_failure(ctx: &RunCtx, host: &Host, raw: &str, waited: Duration) -> Failure {
    let lock = HeldLock::read(raw, &ctx.controller);
    let mut msg = format!("{} is locked by {}", host.config.deploy_to, lock.who());
    if let Some(r) = lock.staged_release() {
        msg.push_str(&format!(" (it may have left releases/{r} unfinished)"));
    }
    if !waited.is_zero() {
        msg.push_str(&format!(
            "; still held after waiting {}",
            util::human_duration(waited)
        ));
    }
    msg.push_str(&format!("\n  {}", lock.hint(&ctx.stage)));
    ctx.failure(Phase::Lock, None, None, msg)
}
