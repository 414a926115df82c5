//! The end of a run on each host: the journal line, old releases removed, the lock given back;
//! and the short commands every phase fans out to the fleet.

use super::*;

/// The end of a deploy on a host: the journal line, the releases beyond `keep_releases`
/// removed now that this release is current, and the lock released (see [`remote::finish`]).
pub(super) fn finish_script(h: &HostRun, ctx: &RunCtx) -> String {
    let mut releases = h.preflight.releases.clone();
    releases.push(ctx.release.clone());
    let old = remote::releases_to_remove(
        &releases,
        h.host.config.keep_releases,
        &ctx.release,
        h.preflight.current_release(),
        &h.preflight.bad,
    );
    let d = &h.host.config.deploy_to;
    remote::finish(d, &ctx.release, &ctx.token, &journal_line(h, ctx), &old)
}

/// Clean up, write the journal line and release the lock, in one command per host (`script`,
/// which prints [`remote::CLEANUP_STATUS`] and the status when its cleanup failed, and exits non-zero
/// only when the lock could not be released): the unlock always follows a cleanup, so it need
/// not wait for another round trip. A failed cleanup is reported as such and does not stop the
/// unlock; the hosts unlocked here are skipped by the unlock that follows.
pub(super) async fn cleanup_and_unlock(
    ids: &[usize],
    hosts: &mut [HostRun],
    ctx: &RunCtx,
    script: impl Fn(&HostRun, &RunCtx) -> String,
) {
    // The script always has the unlock: every host has a result.
    let what = (Phase::Cleanup, "journal, old releases and unlock");
    let results = short_on_each(ids, hosts, ctx, what, script).await;
    for (i, r) in results.into_iter().filter_map(|(i, r)| Some((i, r?))) {
        match r {
            Ok(o) => {
                let stdout = o.stdout_text();
                if let Some(rc) = remote::failed_cleanup(&stdout) {
                    let message = format!("exited with status {rc}");
                    let mut f = ctx.failure(Phase::Cleanup, None, Some(&o), message);
                    f.exit_status = rc.parse().ok();
                    hosts[i].fail(ctx, f);
                }
                if o.success() {
                    hosts[i].unlocked = true;
                } else {
                    hosts[i].left_behind = true;
                    let f = command_failure(ctx, Phase::Unlock, None, &o);
                    hosts[i].fail(ctx, f);
                }
            }
            // Nothing is known: the unlock that follows tries again.
            Err(e) => {
                let f = transport_failure(ctx, Phase::Cleanup, None, &e);
                hosts[i].fail(ctx, f);
            }
        }
    }
}

/// The journal line for this run, then our lock released.
pub(super) fn unlock_script(h: &HostRun, ctx: &RunCtx) -> String {
    remote::journal_and_unlock(&h.host.config.deploy_to, &journal_line(h, ctx), &ctx.token)
}

/// One line of the host's `.ship/history`.
pub(super) fn journal_line(h: &HostRun, ctx: &RunCtx) -> String {
    serde_json::json!({
        "kind": ctx.kind,
        "release": ctx.release,
        "revision": ctx.revision,
        "outcome": ctx.outcome,
        "previous": h.preflight.current_release(),
        "host": h.host.name,
        "user": ctx.user,
        "controller": ctx.controller,
        "ci_job": ctx.ci_job,
        "ci_url": ctx.ci_url,
        "started": ctx.started,
        "finished": util::rfc3339(util::unix_now()),
        "switched_at_ns": h.switched_at,
    })
    .to_string()
}

/// Run one command per host; failures are reported but do not change the protocol's course
/// (discard, cleanup and unlock are best-effort and idempotent).
pub(super) async fn on_each(
    ids: &[usize],
    hosts: &mut [HostRun],
    ctx: &RunCtx,
    what: (Phase, &str),
    script: impl Fn(&HostRun, &RunCtx) -> String,
) {
    let phase = what.0;
    // A host with nothing to run has nothing to report.
    for (i, r) in short_on_each(ids, hosts, ctx, what, script).await {
        let f = match r {
            None => continue,
            Some(Ok(o)) if o.success() => continue,
            Some(Ok(o)) => command_failure(ctx, phase, None, &o),
            Some(Err(e)) => transport_failure(ctx, phase, None, &e),
        };
        if matches!(phase, Phase::Unlock | Phase::Discard) {
            hosts[i].left_behind = true;
        }
        hosts[i].fail(ctx, f);
    }
}

/// Run `script`'s short command on each host at once, as `what` (its phase and name); `None`
/// for a host whose script is empty (nothing to run there).
pub(super) async fn short_on_each(
    ids: &[usize],
    hosts: &[HostRun],
    ctx: &RunCtx,
    what: (Phase, &str),
    script: impl Fn(&HostRun, &RunCtx) -> String,
) -> Vec<(usize, Option<Result<Output, TransportError>>)> {
    let (phase, step) = what;
    join_all(ids.iter().map(|&i| {
        let h = &hosts[i];
        let conn = h.connection();
        let s = script(h, ctx);
        let t = h.host.config.timeouts.step.min(SHORT_COMMAND);
        let name = h.host.name.clone();
        async move {
            if s.is_empty() {
                return (i, None);
            }
            ctx.phase(&name, phase);
            let what = Purpose::changes(phase.as_str(), step);
            (i, Some(run_short(conn, what, &s, t).await))
        }
    }))
    .await
}
