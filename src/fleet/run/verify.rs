//! After the barrier: the run-once steps on one host, the after-switch steps and health check
//! on each switched host, and the canary's hold.

use super::*;

/// The run-once steps (migrations) on one host, after every host prepared and before any
/// switches. An interruption does not stop a step half-way (a half-run migration is worse than
/// a finished one); the deploy aborts after it.
pub(super) async fn run_once(
    i: usize,
    hosts: &mut [HostRun],
    ctx: &RunCtx,
    d: &Deploy,
) -> Vec<Fact> {
    let Job::Deploy(source) = &d.job else {
        return vec![Fact::RanOnce];
    };
    let Some(h) = hosts.get(i) else {
        return vec![Fact::RunOnceFailed];
    };
    let Some(conn) = h.conn.clone() else {
        return vec![Fact::RunOnceFailed];
    };
    ctx.phase(&h.host.name, Phase::RunOnce);
    let plan = plan_for(h, ctx, &source.delivery);
    let steps = run_once_steps(&plan, &h.host);
    let host = h.host.clone();
    let never = CancellationToken::new();
    match run_steps(&conn, &host, &steps, None, Phase::RunOnce, ctx, &never).await {
        Ok(_) => vec![Fact::RanOnce],
        Err(f) => {
            hosts[i].fail(ctx, f);
            vec![Fact::RunOnceFailed]
        }
    }
}

/// After-switch steps, then the health check, on every host of a wave that switched.
pub(super) async fn verify(
    ids: &[usize],
    hosts: &mut [HostRun],
    ctx: &RunCtx,
    d: &Deploy,
    stop: &CancellationToken,
) -> Vec<Fact> {
    let delivery = match &d.job {
        Job::Deploy(s) => s.delivery.clone(),
        Job::Rollback { .. } => remote::Delivery::Tarball {
            compression: remote::Compression::None,
        },
    };
    let results = join_all(ids.iter().map(|&i| {
        let h = &hosts[i];
        let conn = h.connection();
        let host = h.host.clone();
        let plan = plan_for(h, ctx, &delivery);
        let steps = verify_steps(&plan, &host);
        async move {
            ctx.phase(&host.name, Phase::Verify);
            let conn = match conn {
                Ok(c) => c,
                Err(e) => return (i, Err(transport_failure(ctx, Phase::Verify, None, &e))),
            };
            (
                i,
                run_steps(&conn, &host, &steps, None, Phase::Verify, ctx, stop).await,
            )
        }
    }))
    .await;
    let warn = d
        .stage
        .hosts
        .first()
        .is_some_and(|h| h.config.health_check.on_failure == OnFailure::Warn)
        || matches!(d.job, Job::Rollback { .. });
    let mut events = Vec::new();
    for (i, r) in results {
        match r {
            Ok(_) => events.push(Fact::Verified(i)),
            Err(f) if warn => {
                ctx.reporter.report(&Event::HostWarning {
                    host: hosts[i].host.name.clone(),
                    failure: f.clone(),
                });
                hosts[i].warnings.push(f);
                events.push(Fact::Verified(i));
            }
            Err(f) => {
                hosts[i].fail(ctx, f);
                events.push(Fact::VerifyFailed(i));
            }
        }
    }
    events
}

/// Hold after wave `w` passed its checks, for `observe`, unless interrupted.
pub(super) async fn observe(ctx: &RunCtx, d: &Deploy, waves: &[Vec<usize>], w: usize) -> Vec<Fact> {
    let canary: Vec<&Host> = waves
        .get(w)
        .into_iter()
        .flatten()
        .filter_map(|&i| d.stage.hosts.get(i))
        .collect();
    let mut checked = Vec::new();
    if canary.iter().any(|h| h.config.health_check.probe.is_some()) {
        checked.push("health check".to_owned());
    }
    let steps = canary
        .iter()
        .map(|h| h.config.after_switch.len())
        .max()
        .unwrap_or(0);
    if steps > 0 {
        checked.push(format!("{steps} after-switch step(s)"));
    }
    ctx.reporter.report(&Event::Observing {
        hosts: canary.iter().map(|h| h.name.clone()).collect(),
        for_ms: d.observe.as_millis() as u64,
        checked,
        wave: w + 1,
        waves: waves.len(),
    });
    tokio::select! {
        _ = tokio::time::sleep(d.observe) => {}
        _ = ctx.cancel.cancelled() => {}
    }
    vec![Fact::Observed]
}
