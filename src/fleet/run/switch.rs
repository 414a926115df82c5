//! The switch at one instant, and switching hosts back (compensation).

use super::*;

pub(super) async fn switch(ids: &[usize], hosts: &mut [HostRun], ctx: &RunCtx) -> Vec<Fact> {
    // 1. Arm: start the switch command on every host not armed at the end of its prepare, and
    //    wait until each one says it is waiting for our word. Until we fire, nothing has
    //    changed anywhere.
    let early: Vec<Option<Armed>> = ids.iter().map(|&i| hosts[i].armed.take()).collect();
    let armed = join_all(ids.iter().zip(early).map(|(&i, early)| {
        let h = &hosts[i];
        async move {
            ctx.phase(&h.host.name, Phase::Switch);
            match early {
                Some(a) => Ok(a),
                None => arm(h, ctx).await,
            }
        }
    }))
    .await;
    // 2. Measure each host's clock against ours, once every host is armed: a clock_turns hosts at a
    //    time, for short round trips and so small error bounds (hosts armed early were asked
    //    while they waited: only those without enough fresh answers are asked now); then once
    //    more every host at once, the way the words will go out, for how long they take to
    //    arrive.
    let now = clock::now_us();
    let armed: Vec<_> = armed
        .into_iter()
        .map(|a| {
            a.map(|mut a| {
                a.keep_fresh(now, clock_fresh(ids.len()));
                a
            })
        })
        .collect();
    let clock_turns = Semaphore::new(CLOCK_CONCURRENCY);
    let armed = ask_clocks(ids, hosts, armed, Some(&clock_turns), |a| {
        CLOCK_QUESTIONS.saturating_sub(a.samples.len())
    })
    .await;
    let armed = ask_clocks(ids, hosts, armed, None, |_| 1).await;
    let mut events = Vec::new();
    if armed.iter().any(|a| a.is_err()) {
        // Some host cannot be armed: tell every armed host not to switch (EOF). Nothing changes.
        for (&i, a) in ids.iter().zip(armed) {
            match a {
                Ok(a) => a.disarm(hosts[i].host.config.timeouts.switch).await,
                Err(e) => {
                    let f = transport_failure(ctx, Phase::Switch, None, &e);
                    hosts[i].fail(ctx, f);
                }
            }
            events.push(Fact::SwitchRefused(i));
        }
        return events;
    }
    let mut armed: Vec<Armed> = armed.into_iter().flatten().collect();
    // 3. Fire: one short write per host, back to back, before waiting for any answer. A host
    //    whose clock we know is given an instant a little ahead (time for every word to
    //    arrive), on its own clock: all of them rename at that instant. The others get `go`
    //    at that instant.
    let clocks: Vec<Option<clock::Offset>> = armed.iter().map(Armed::clock).collect();
    // The round trip of each scheduled host's last question, asked of every host at once.
    let trips: Vec<i64> = armed
        .iter()
        .zip(&clocks)
        .filter(|(_, c)| c.is_some())
        .filter_map(|(a, _)| a.samples.last().map(clock::Sample::round_trip))
        .collect();
    let at = if trips.is_empty() {
        clock::now_us()
    } else {
        clock::now_us() + clock::lead(&trips, LEAD_FLOOR, LEAD_CEILING).as_micros() as i64
    };
    let settle =
        (SETTLE_PER_HOST.as_micros() as usize * trips.len()).min(SETTLE_MOST.as_micros() as usize);
    let mut fire: Vec<Result<(), TransportError>> =
        join_all(armed.iter_mut().zip(&clocks).map(|(a, c)| async move {
            match c {
                Some(c) => a.tell(&format!("at {} {settle}", c.to_host(at))).await,
                None => Ok(()),
            }
        }))
        .await;
    if clocks.iter().any(Option::is_none) {
        let wait = at - clock::now_us();
        if wait > 0 {
            tokio::time::sleep(Duration::from_micros(wait as u64)).await;
        }
        let go = join_all(armed.iter_mut().zip(&clocks).map(|(a, c)| async move {
            match c {
                None => a.tell("go").await,
                Some(_) => Ok(()),
            }
        }))
        .await;
        for (f, g) in fire.iter_mut().zip(go) {
            if f.is_ok() {
                *f = g;
            }
        }
    }
    // 4. Collect the confirmations.
    let results = join_all(ids.iter().zip(armed).zip(fire).zip(clocks).map(
        |(((&i, mut a), fired), offset)| {
            let t = hosts[i].host.config.timeouts.switch;
            async move {
                let r = match fired {
                    Err(e) => Err(e),
                    Ok(()) => within(t, "waiting for the switch", a.process.wait()).await,
                };
                (i, offset, r)
            }
        },
    ))
    .await;
    for (i, offset, r) in results {
        let name = hosts[i].host.name.clone();
        hosts[i].clock = offset;
        match r {
            Ok(o) if o.success() => {
                let at = switch_stamp(&o.stdout_text());
                hosts[i].switched_at = at;
                ctx.reporter.report(&Event::Switched {
                    host: name,
                    at_unix_ns: at,
                });
                events.push(Fact::Switched(i));
            }
            Ok(o) if matches!(o.status, Some(SWITCH_CANCELLED | SWITCH_RENAME_FAILED)) => {
                // The rename failed or was cancelled: `current` is unchanged there.
                let mut f = command_failure(ctx, Phase::Switch, None, &o);
                f.message = if o.status == Some(SWITCH_CANCELLED) {
                    "the switch was cancelled before it ran; current is unchanged".into()
                } else {
                    "the rename failed; current is unchanged".into()
                };
                hosts[i].fail(ctx, f);
                events.push(Fact::SwitchRefused(i));
            }
            Ok(o) => {
                // Killed mid-way (the host crashed?): the rename may or may not have run.
                let mut f = command_failure(ctx, Phase::Switch, None, &o);
                f.message = format!(
                    "the switch command {}; whether current changed is unknown",
                    f.message
                );
                hosts[i].fail(ctx, f);
                events.push(Fact::SwitchUnknown(i));
            }
            Err(e) => {
                let f = transport_failure(ctx, Phase::Switch, None, &e);
                hosts[i].fail(ctx, f);
                events.push(Fact::SwitchUnknown(i));
            }
        }
    }
    events
}

pub(super) async fn revert(ids: &[usize], hosts: &mut [HostRun], ctx: &RunCtx) -> Vec<Fact> {
    let results = join_all(ids.iter().map(|&i| {
        let h = &hosts[i];
        let conn = h.connection();
        let script = remote::revert(
            &h.host.config.deploy_to,
            &ctx.release,
            h.preflight.current.as_deref(),
        );
        let t = h.host.config.timeouts.switch;
        let name = h.host.name.clone();
        async move {
            ctx.phase(&name, Phase::Revert);
            let r = run_short(conn, Purpose::changes("revert", "revert"), &script, t).await;
            (i, script, r)
        }
    }))
    .await;
    let mut events = Vec::new();
    for (i, script, r) in results {
        match r {
            Ok(o) if o.success() => events.push(Fact::Reverted(i)),
            other => {
                let f = match other {
                    Ok(o) => command_failure(ctx, Phase::Revert, None, &o),
                    Err(e) => transport_failure(ctx, Phase::Revert, None, &e),
                };
                hosts[i].remedy = Some(script);
                hosts[i].fail(ctx, f);
                events.push(Fact::RevertFailed(i));
            }
        }
    }
    events
}
