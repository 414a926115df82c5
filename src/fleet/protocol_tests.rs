//! The protocol's invariants, checked over every combination of per-host results for a
//! three-host fleet, with an interruption at every point — against a model of the hosts.

use super::*;

const N: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Current {
    Old,
    New,
}

/// What each host's results are in one scenario.
#[derive(Debug, Clone)]
struct Scenario {
    connect: [bool; N],
    lock: [bool; N],
    prepare: [bool; N],
    /// 0 = switched, 1 = refused, 2 = no answer (and it did switch), 3 = no answer (did not).
    switch: [u8; N],
    revert: [bool; N],
    run_once: bool,
    verify: [bool; N],
    /// The unlock works on the host (false: it keeps our lock, unreachable by then).
    unlock: [bool; N],
    /// Interrupt after this many actions (None: never).
    interrupt_after: Option<usize>,
    /// Interrupt after this many facts, i.e. in the middle of an action's results (None: never).
    interrupt_at_fact: Option<usize>,
}

/// The hosts as they really are.
#[derive(Debug, Clone)]
struct World {
    current: [Current; N],
    locked: [bool; N],
    staged: [bool; N],
    /// The index (in the log) of the action whose results an interruption landed in.
    interrupted_in: Option<usize>,
}

fn run(s: &Scenario) -> (Outcome, World, Vec<Action>) {
    run_with(s, &Options::default())
}

fn run_with(s: &Scenario, options: &Options) -> (Outcome, World, Vec<Action>) {
    let mut p = Protocol::with(N, options.clone());
    let mut w = World {
        current: [Current::Old; N],
        locked: [false; N],
        staged: [false; N],
        interrupted_in: None,
    };
    let mut log = Vec::new();
    let facts = std::cell::Cell::new(0);
    let landed = std::cell::Cell::new(false);
    // Every fact goes through here: an interruption can land between two of them.
    let on = |p: &mut Protocol, f: Fact| {
        p.on(f);
        facts.set(facts.get() + 1);
        if s.interrupt_at_fact == Some(facts.get()) {
            p.on(Fact::Interrupted);
            landed.set(true);
        }
    };
    for step in 0..100 {
        if s.interrupt_after == Some(step) {
            p.on(Fact::Interrupted);
        }
        if landed.get() && w.interrupted_in.is_none() {
            w.interrupted_in = Some(log.len().saturating_sub(1));
        }
        let action = p.next_action();
        log.push(action.clone());
        match action {
            Action::Connect(hs) => {
                for h in hs {
                    on(
                        &mut p,
                        if s.connect[h] {
                            Fact::Connected(h)
                        } else {
                            Fact::ConnectFailed(h)
                        },
                    );
                }
            }
            Action::Lock(hs) => {
                for h in hs {
                    if s.lock[h] {
                        w.locked[h] = true;
                        on(&mut p, Fact::Locked(h));
                    } else {
                        on(&mut p, Fact::LockFailed(h));
                    }
                }
            }
            Action::Prepare(hs) => {
                for h in hs {
                    on(&mut p, Fact::Staging(h));
                    w.staged[h] = true;
                    on(
                        &mut p,
                        if s.prepare[h] {
                            Fact::Prepared(h)
                        } else {
                            Fact::PrepareFailed(h)
                        },
                    );
                }
            }
            Action::Switch(hs) => {
                assert!(
                    s.connect.iter().all(|x| *x)
                        && s.lock.iter().all(|x| *x)
                        && s.prepare.iter().all(|x| *x),
                    "switch without every host prepared: {s:?}"
                );
                for h in hs {
                    match s.switch[h] {
                        0 => {
                            w.current[h] = Current::New;
                            on(&mut p, Fact::Switched(h));
                        }
                        1 => on(&mut p, Fact::SwitchRefused(h)),
                        2 => {
                            w.current[h] = Current::New;
                            on(&mut p, Fact::SwitchUnknown(h));
                        }
                        _ => on(&mut p, Fact::SwitchUnknown(h)),
                    }
                }
            }
            Action::Revert(hs) => {
                for h in hs {
                    if s.revert[h] {
                        w.current[h] = Current::Old;
                        on(&mut p, Fact::Reverted(h));
                    } else {
                        on(&mut p, Fact::RevertFailed(h));
                    }
                }
            }
            Action::Discard(hs) => {
                for h in hs {
                    assert_ne!(
                        w.current[h],
                        Current::New,
                        "discarded the live release: {s:?}"
                    );
                    w.staged[h] = false;
                }
            }
            Action::RunOnce(h) => {
                assert!(
                    w.current.iter().all(|c| *c == Current::Old),
                    "run once after a switch: {s:?}"
                );
                assert_eq!(Some(h), options.run_once);
                on(
                    &mut p,
                    if s.run_once {
                        Fact::RanOnce
                    } else {
                        Fact::RunOnceFailed
                    },
                );
            }
            Action::Verify(hs) => {
                for h in hs {
                    assert_eq!(w.current[h], Current::New, "verified an old host: {s:?}");
                    on(
                        &mut p,
                        if s.verify[h] {
                            Fact::Verified(h)
                        } else {
                            Fact::VerifyFailed(h)
                        },
                    );
                }
            }
            Action::Observe(_) => on(&mut p, Fact::Observed),
            Action::MarkBad(_) => {}
            Action::Cleanup(_) => {}
            Action::Unlock(hs) => {
                for h in hs {
                    if s.unlock[h] {
                        w.locked[h] = false;
                    }
                }
            }
            Action::Finish(o) => return (o, w, log),
        }
    }
    panic!("protocol did not finish: {s:?}");
}

fn bools() -> impl Iterator<Item = [bool; N]> {
    (0..(1 << N)).map(|m| std::array::from_fn(|i| m & (1 << i) != 0))
}

fn scenarios() -> Vec<Scenario> {
    let ok = [true; N];
    let mut out = Vec::new();
    // Interruptions between actions, and in the middle of an action's results.
    let interruptions = [None, Some(0), Some(1), Some(2), Some(3), Some(4), Some(5)]
        .into_iter()
        .map(|a| (a, None))
        .chain((1..=14).map(|f| (None, Some(f))));
    for (interrupt_after, interrupt_at_fact) in interruptions {
        let base = Scenario {
            connect: ok,
            lock: ok,
            prepare: ok,
            switch: [0; N],
            revert: ok,
            run_once: true,
            verify: ok,
            unlock: ok,
            interrupt_after,
            interrupt_at_fact,
        };
        // Connect, lock and prepare results together, with unlocks that fail.
        for connect in bools() {
            for lock in bools() {
                for prepare in bools() {
                    for unlock in [ok, [true, false, true]] {
                        out.push(Scenario {
                            connect,
                            lock,
                            prepare,
                            unlock,
                            ..base.clone()
                        });
                    }
                }
            }
        }
        for code in 0..(4u32.pow(N as u32)) {
            let switch: [u8; N] = std::array::from_fn(|i| ((code / 4u32.pow(i as u32)) % 4) as u8);
            for revert in bools() {
                out.push(Scenario {
                    switch,
                    revert,
                    ..base.clone()
                });
            }
        }
    }
    out
}

#[test]
fn invariants_hold_in_every_scenario() {
    let all = scenarios();
    assert!(all.len() > 3000, "{} scenarios", all.len());
    for s in &all {
        let (outcome, w, log) = run(s);
        // A lock is left only where the unlock itself failed (the runner reports it).
        for h in 0..N {
            assert!(
                !w.locked[h] || !s.unlock[h],
                "lock left behind on host {h} although its unlock works: {s:?} {log:?}"
            );
        }
        let news = w.current.iter().filter(|c| **c == Current::New).count();
        match outcome {
            Outcome::Deployed => assert_eq!(news, N, "{s:?}"),
            Outcome::Aborted | Outcome::RolledBack => {
                assert_eq!(news, 0, "not all old after {outcome:?}: {s:?} {log:?}");
                assert!(w.staged.iter().all(|x| !x), "staged release left: {s:?}");
            }
            Outcome::Mixed => {
                // Mixed names a real cause: a host that may be on the new release and could not
                // be switched back.
                let stuck: Vec<usize> = (0..N)
                    .filter(|&h| !s.revert[h] && s.switch[h] != 1)
                    .collect();
                assert!(
                    !stuck.is_empty(),
                    "mixed although every host that may have switched was reverted: {s:?} {log:?}"
                );
                for h in 0..N {
                    if w.current[h] == Current::New {
                        assert!(
                            stuck.contains(&h),
                            "host {h} is on the new release, and is not one that could not be \
                             switched back: {s:?} {log:?}"
                        );
                    }
                }
            }
            Outcome::NothingToDo => panic!("nothing to do, although no one said so: {s:?}"),
        }
        // Switching only ever happens with all hosts prepared and no interruption before it.
        if log.iter().any(|a| matches!(a, Action::Switch(_))) {
            let before = log
                .iter()
                .position(|a| matches!(a, Action::Switch(_)))
                .unwrap_or(0);
            assert!(
                s.interrupt_after.is_none_or(|i| i > before),
                "switched after an interruption: {s:?} {log:?}"
            );
            assert!(
                w.interrupted_in.is_none_or(|k| k >= before),
                "switched after an interruption inside action {:?}: {s:?} {log:?}",
                w.interrupted_in
            );
        }
    }
}

#[test]
fn nothing_to_do_ends_at_connect_without_locking_and_only_when_every_host_answered() {
    let mut p = Protocol::new(2);
    assert_eq!(p.next_action(), Action::Connect(vec![0, 1]));
    p.on(Fact::Connected(0));
    p.on(Fact::Connected(1));
    p.on(Fact::NothingToDo);
    assert_eq!(p.next_action(), Action::Finish(Outcome::NothingToDo));
    assert_eq!(p.outcome(), Some(Outcome::NothingToDo));
    // A host that did not answer: the run aborts, as any failure at connect.
    let mut p = Protocol::new(2);
    p.next_action();
    p.on(Fact::Connected(0));
    p.on(Fact::ConnectFailed(1));
    p.on(Fact::NothingToDo);
    assert_eq!(p.next_action(), Action::Finish(Outcome::Aborted));
}

#[test]
fn a_host_left_out_at_connect_takes_no_part_and_the_rest_deploy() {
    let mut p = Protocol::with(
        3,
        Options {
            waves: vec![vec![2], vec![0]],
            ..Options::default()
        },
    );
    assert_eq!(p.next_action(), Action::Connect(vec![0, 1, 2]));
    p.on(Fact::Connected(0));
    p.on(Fact::Connected(1));
    p.on(Fact::LeftOut(2));
    assert_eq!(p.next_action(), Action::Lock(vec![0, 1]));
    p.on(Fact::Locked(0));
    p.on(Fact::Locked(1));
    assert_eq!(p.next_action(), Action::Prepare(vec![0, 1]));
    p.on(Fact::Prepared(0));
    p.on(Fact::Prepared(1));
    // The wave that held only the left-out host is gone.
    assert_eq!(p.next_action(), Action::Switch(vec![0]));
    p.on(Fact::Switched(0));
    assert_eq!(p.next_action(), Action::Switch(vec![1]));
    p.on(Fact::Switched(1));
    assert_eq!(p.next_action(), Action::Cleanup(vec![0, 1]));
    assert_eq!(p.outcome(), Some(Outcome::Deployed));
}

#[test]
fn happy_path_sequence() {
    let mut p = Protocol::new(2);
    assert_eq!(p.next_action(), Action::Connect(vec![0, 1]));
    p.on(Fact::Connected(0));
    p.on(Fact::Connected(1));
    assert_eq!(p.next_action(), Action::Lock(vec![0, 1]));
    p.on(Fact::Locked(0));
    p.on(Fact::Locked(1));
    assert_eq!(p.next_action(), Action::Prepare(vec![0, 1]));
    for h in 0..2 {
        p.on(Fact::Staging(h));
        p.on(Fact::Prepared(h));
    }
    assert_eq!(p.next_action(), Action::Switch(vec![0, 1]));
    assert!(p.past_barrier());
    p.on(Fact::Switched(0));
    p.on(Fact::Switched(1));
    assert_eq!(p.next_action(), Action::Cleanup(vec![0, 1]));
    assert_eq!(p.next_action(), Action::Unlock(vec![0, 1]));
    assert_eq!(p.next_action(), Action::Finish(Outcome::Deployed));
}

#[test]
fn one_failed_build_discards_everywhere_and_unlocks() {
    let mut p = Protocol::new(3);
    p.next_action();
    (0..3).for_each(|h| p.on(Fact::Connected(h)));
    p.next_action();
    (0..3).for_each(|h| p.on(Fact::Locked(h)));
    p.next_action();
    (0..3).for_each(|h| p.on(Fact::Staging(h)));
    p.on(Fact::Prepared(0));
    p.on(Fact::PrepareFailed(1));
    p.on(Fact::Prepared(2));
    assert_eq!(p.next_action(), Action::Discard(vec![0, 1, 2]));
    assert_eq!(p.next_action(), Action::Unlock(vec![0, 1, 2]));
    assert_eq!(p.next_action(), Action::Finish(Outcome::Aborted));
}

#[test]
fn interruption_after_the_barrier_does_not_stop_the_switch() {
    let mut p = Protocol::new(1);
    p.next_action();
    p.on(Fact::Connected(0));
    p.next_action();
    p.on(Fact::Locked(0));
    p.next_action();
    p.on(Fact::Staging(0));
    p.on(Fact::Prepared(0));
    assert_eq!(p.next_action(), Action::Switch(vec![0]));
    p.on(Fact::Interrupted);
    p.on(Fact::Switched(0));
    assert_eq!(p.next_action(), Action::Cleanup(vec![0]));
}

/// Canary, run-once and verification: every combination of per-host results, with an
/// interruption at every point, under every shape of deploy.
#[test]
fn invariants_hold_with_canary_run_once_and_verification() {
    let ok = [true; N];
    let mut shapes = Vec::new();
    // No wave, a canary of one or two, and three waves of one host each.
    for waves in [
        vec![],
        vec![vec![0]],
        vec![vec![0, 1]],
        vec![vec![0], vec![1]],
    ] {
        for run_once in [None, Some(2)] {
            for (verify, rollback) in [(false, false), (true, true), (true, false)] {
                for observe in [false, true] {
                    shapes.push(Options {
                        waves: waves.clone(),
                        run_once,
                        verify,
                        rollback_on_verify_failure: rollback,
                        observe,
                    });
                }
            }
        }
    }
    let mut count = 0;
    for o in &shapes {
        for interrupt_after in (0..12).map(Some).chain([None]) {
            for run_once in [true, false] {
                for verify in bools() {
                    for code in 0..(3u32.pow(N as u32)) {
                        let switch: [u8; N] =
                            std::array::from_fn(|i| ((code / 3u32.pow(i as u32)) % 3) as u8);
                        for revert in [ok, [true, false, true]] {
                            let s = Scenario {
                                connect: ok,
                                lock: ok,
                                prepare: ok,
                                switch,
                                revert,
                                run_once,
                                verify,
                                unlock: ok,
                                interrupt_after,
                                interrupt_at_fact: None,
                            };
                            check_shape(&s, o);
                            count += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(count > 50_000, "{count} scenarios");
}

fn check_shape(s: &Scenario, o: &Options) {
    let (outcome, w, log) = run_with(s, o);
    assert!(
        w.locked.iter().all(|l| !l),
        "lock left: {s:?} {o:?} {log:?}"
    );
    let news = w.current.iter().filter(|c| **c == Current::New).count();
    let marked_bad = log.iter().any(|a| matches!(a, Action::MarkBad(_)));
    match outcome {
        Outcome::Deployed => {
            assert_eq!(news, N, "{s:?} {o:?}");
            if o.verify && o.rollback_on_verify_failure {
                assert!(
                    s.verify.iter().all(|v| *v),
                    "deployed past a failed check: {s:?}"
                );
            }
            if o.run_once.is_some() {
                assert!(s.run_once, "deployed after a failed run-once: {s:?}");
            }
        }
        Outcome::Aborted | Outcome::RolledBack => {
            assert_eq!(
                news, 0,
                "not all old after {outcome:?}: {s:?} {o:?} {log:?}"
            );
            if !marked_bad {
                assert!(
                    w.staged.iter().all(|x| !x),
                    "staged left: {s:?} {o:?} {log:?}"
                );
            }
        }
        Outcome::Mixed => assert!(s.revert.iter().any(|r| !r), "mixed: {s:?} {o:?} {log:?}"),
        Outcome::NothingToDo => panic!("nothing to do, although no one said so: {s:?}"),
    }
    // Only a release that went live on the whole fleet is kept as bad.
    if marked_bad {
        let full = log
            .iter()
            .filter_map(|a| match a {
                Action::Switch(hs) => Some(hs.len()),
                _ => None,
            })
            .sum::<usize>();
        assert_eq!(
            full, N,
            "marked bad without a full switch: {s:?} {o:?} {log:?}"
        );
    }
    // Each wave switches only after every earlier wave passed its checks, with no interruption
    // before it, and the waves switch in order, each host once.
    let switches: Vec<(usize, Vec<usize>)> = log
        .iter()
        .enumerate()
        .filter_map(|(i, a)| match a {
            Action::Switch(hosts) => Some((i, hosts.clone())),
            _ => None,
        })
        .collect();
    for (k, (at, _)) in switches.iter().enumerate().skip(1) {
        let earlier: Vec<usize> = switches[..k].iter().flat_map(|(_, h)| h.clone()).collect();
        if o.verify && o.rollback_on_verify_failure {
            assert!(
                earlier.iter().all(|&c| s.verify[c]),
                "wave {k} switched after a failed earlier wave: {s:?} {o:?} {log:?}"
            );
        }
        assert!(
            s.interrupt_after.is_none_or(|i| i > *at),
            "wave {k} switched after an interruption: {s:?} {o:?} {log:?}"
        );
    }
    let mut switched: Vec<usize> = switches.iter().flat_map(|(_, h)| h.clone()).collect();
    let total = switched.len();
    switched.sort();
    switched.dedup();
    assert_eq!(switched.len(), total, "a host switched twice: {log:?}");
    if switches.len() > 1 {
        let planned: Vec<Vec<usize>> = o
            .waves
            .iter()
            .cloned()
            .chain(std::iter::once(
                (0..N)
                    .filter(|i| !o.waves.iter().flatten().any(|w| w == i))
                    .collect(),
            ))
            .collect();
        for (k, (_, hosts)) in switches.iter().enumerate() {
            assert_eq!(*hosts, planned[k], "wave {k} out of order: {o:?} {log:?}");
        }
    }
    // Nothing switches after a failed run-once.
    if !s.run_once && o.run_once.is_some() {
        assert!(
            switches.is_empty(),
            "switched after a failed run-once: {s:?} {log:?}"
        );
    }
}
