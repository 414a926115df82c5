//! Preparing the release on every host, each arming its switch as soon as it is ready.

use super::*;

/// Prepare the release on every host. A host whose steps all succeeded arms its switch at once
/// (perl's start-up is paid while other hosts still build), but for `run_once`: the run-once
/// steps need its session first.
pub(super) async fn prepare(
    ids: &[usize],
    hosts: &mut [HostRun],
    ctx: &RunCtx,
    source: &Prepared,
    run_once: Option<usize>,
) -> Vec<Fact> {
    // Recorded before any work starts: an interruption mid-prepare must still discard.
    let mut events: Vec<Fact> = ids.iter().map(|&i| Fact::Staging(i)).collect();
    // The first failure closes the barrier: the other hosts' steps are stopped at once rather
    // than left to finish a build nobody will switch to. An interruption does the same.
    let stop = ctx.cancel.child_token();
    // Hosts armed early keep answering clock questions until every host is prepared (see
    // `keep_time`); this is cancelled when the last one is.
    let all_prepared = CancellationToken::new();
    let unprepared = std::sync::atomic::AtomicUsize::new(ids.len());
    let clock_turns = Semaphore::new(CLOCK_CONCURRENCY);
    let together = ids.len() > 1;
    let fleet = ids.len();
    let results = join_all(ids.iter().map(|&i| {
        let h = &hosts[i];
        let conn = h.connection();
        let host = h.host.clone();
        let steps = if h.reuse {
            let d = &h.host.config.deploy_to;
            vec![remote::reuse_prepared(d, &ctx.release, &ctx.revision)]
        } else {
            remote::prepare(&remote::ReleasePlan {
                inline_payload: Some(&source.payload),
                ..plan_for(h, ctx, &source.delivery)
            })
        };
        let stop = &stop;
        let (all_prepared, unprepared, clock_turns) = (&all_prepared, &unprepared, &clock_turns);
        async move {
            ctx.phase(&host.name, Phase::Prepare);
            let t0 = Instant::now();
            // However this host's prepare ends, it is one fewer to wait for.
            let done = Countdown(unprepared, all_prepared);
            let conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    let f = transport_failure(ctx, Phase::Prepare, None, &e);
                    return (i, t0.elapsed(), Err(f));
                }
            };
            let payload = Some(source.payload.as_slice());
            let mut r = run_steps(&conn, &host, &steps, payload, Phase::Prepare, ctx, stop)
                .await
                .map(|done| (done, None));
            if matches!(r, Ok((true, _))) && run_once != Some(i) && !stop.is_cancelled() {
                r = match arm(h, ctx).await {
                    Ok(a) => Ok((true, Some(a))),
                    Err(e) => Err(transport_failure(
                        ctx,
                        Phase::Prepare,
                        Some("arm switch"),
                        &e,
                    )),
                };
            }
            match &r {
                Ok((true, _)) => ctx.reporter.report(&Event::Prepared {
                    host: host.name.clone(),
                    elapsed_ms: t0.elapsed().as_millis() as u64,
                }),
                Ok((false, _)) => {}
                Err(_) => stop.cancel(),
            }
            let took = t0.elapsed();
            drop(done);
            if let Ok((true, Some(a))) = &mut r {
                if together && a.scheduled {
                    let waiting = async {
                        tokio::select! {
                            _ = all_prepared.cancelled() => {}
                            _ = stop.cancelled() => {}
                        }
                    };
                    if let Err(e) =
                        keep_time(a, clock_turns, host.config.timeouts.switch, fleet, waiting).await
                    {
                        r = Err(transport_failure(
                            ctx,
                            Phase::Prepare,
                            Some("arm switch"),
                            &e,
                        ));
                        stop.cancel();
                    }
                }
            }
            (i, took, r)
        }
    }))
    .await;
    for (i, took, r) in results {
        hosts[i].prepare_time = Some(took);
        match r {
            Ok((true, armed)) => {
                hosts[i].armed = armed;
                hosts[i].prepared_ok = true;
                events.push(Fact::Prepared(i));
            }
            Ok((false, _)) => {
                hosts[i].cancelled = true;
                events.push(Fact::PrepareFailed(i));
            }
            Err(f) => {
                hosts[i].fail(ctx, f);
                hosts[i].build_failed = true;
                events.push(Fact::PrepareFailed(i));
            }
        }
    }
    events
}

/// Counts a host's prepare as ended when dropped; the last one cancels the token.
pub(super) struct Countdown<'a>(&'a std::sync::atomic::AtomicUsize, &'a CancellationToken);

impl Drop for Countdown<'_> {
    fn drop(&mut self) {
        if self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            self.1.cancel();
        }
    }
}

/// While a host that is armed early waits for the rest of the fleet, keep its clock measured:
/// [`CLOCK_QUESTIONS`] questions at once (holding a permit of `clock_turns`), then one every
/// [`clock_period`] until `waiting` ends. So when the switch comes, the host has fresh answers
/// and it need not be asked again a clock_turns hosts at a time (a round trip per question that grows
/// with the fleet), but only once with every host at once.
pub(super) async fn keep_time(
    a: &mut Armed,
    clock_turns: &Semaphore,
    t: Duration,
    fleet: usize,
    waiting: impl std::future::Future<Output = ()>,
) -> Result<(), TransportError> {
    a.ask_clock_times(CLOCK_QUESTIONS, Some(clock_turns), t)
        .await?;
    tokio::pin!(waiting);
    loop {
        tokio::select! {
            _ = &mut waiting => return Ok(()),
            _ = tokio::time::sleep(clock_period(fleet)) => {
                a.keep_fresh(clock::now_us(), clock_fresh(fleet));
                a.ask_clock_times(1, None, t).await?;
            }
        }
    }
}
