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
    /// Interrupt after this many actions (None: never).
    interrupt_after: Option<usize>,
}

/// The hosts as they really are.
#[derive(Debug, Clone)]
struct World {
    current: [Current; N],
    locked: [bool; N],
    staged: [bool; N],
}

fn run(s: &Scenario) -> (Outcome, World, Vec<Action>) {
    let mut p = Protocol::new(N);
    let mut w = World {
        current: [Current::Old; N],
        locked: [false; N],
        staged: [false; N],
    };
    let mut log = Vec::new();
    for step in 0..100 {
        if s.interrupt_after == Some(step) {
            p.on(Event::Interrupted);
        }
        let action = p.next_action();
        log.push(action.clone());
        match action {
            Action::Connect(hs) => {
                for h in hs {
                    p.on(if s.connect[h] {
                        Event::Connected(h)
                    } else {
                        Event::ConnectFailed(h)
                    });
                }
            }
            Action::Lock(hs) => {
                for h in hs {
                    if s.lock[h] {
                        w.locked[h] = true;
                        p.on(Event::Locked(h));
                    } else {
                        p.on(Event::LockFailed(h));
                    }
                }
            }
            Action::Prepare(hs) => {
                for h in hs {
                    p.on(Event::Staging(h));
                    w.staged[h] = true;
                    p.on(if s.prepare[h] {
                        Event::Prepared(h)
                    } else {
                        Event::PrepareFailed(h)
                    });
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
                            p.on(Event::Switched(h));
                        }
                        1 => p.on(Event::SwitchRefused(h)),
                        2 => {
                            w.current[h] = Current::New;
                            p.on(Event::SwitchUnknown(h));
                        }
                        _ => p.on(Event::SwitchUnknown(h)),
                    }
                }
            }
            Action::Revert(hs) => {
                for h in hs {
                    if s.revert[h] {
                        w.current[h] = Current::Old;
                        p.on(Event::Reverted(h));
                    } else {
                        p.on(Event::RevertFailed(h));
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
            Action::Cleanup(_) => {}
            Action::Unlock(hs) => {
                for h in hs {
                    w.locked[h] = false;
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
    for interrupt_after in [None, Some(0), Some(1), Some(2), Some(3), Some(4), Some(5)] {
        let base = Scenario {
            connect: ok,
            lock: ok,
            prepare: ok,
            switch: [0; N],
            revert: ok,
            interrupt_after,
        };
        for connect in bools() {
            out.push(Scenario {
                connect,
                ..base.clone()
            });
        }
        for lock in bools() {
            out.push(Scenario {
                lock,
                ..base.clone()
            });
        }
        for prepare in bools() {
            out.push(Scenario {
                prepare,
                ..base.clone()
            });
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
        // Never leave a lock behind on a host that answered.
        assert!(
            w.locked.iter().all(|l| !l),
            "lock left behind: {s:?} {log:?}"
        );
        let news = w.current.iter().filter(|c| **c == Current::New).count();
        match outcome {
            Outcome::Deployed => assert_eq!(news, N, "{s:?}"),
            Outcome::Aborted | Outcome::RolledBack => {
                assert_eq!(news, 0, "not all old after {outcome:?}: {s:?} {log:?}");
                assert!(w.staged.iter().all(|x| !x), "staged release left: {s:?}");
            }
            Outcome::Mixed => assert!(
                s.revert.iter().any(|r| !r),
                "mixed although every revert worked: {s:?}"
            ),
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
        }
    }
}

#[test]
fn happy_path_sequence() {
    let mut p = Protocol::new(2);
    assert_eq!(p.next_action(), Action::Connect(vec![0, 1]));
    p.on(Event::Connected(0));
    p.on(Event::Connected(1));
    assert_eq!(p.next_action(), Action::Lock(vec![0, 1]));
    p.on(Event::Locked(0));
    p.on(Event::Locked(1));
    assert_eq!(p.next_action(), Action::Prepare(vec![0, 1]));
    for h in 0..2 {
        p.on(Event::Staging(h));
        p.on(Event::Prepared(h));
    }
    assert_eq!(p.next_action(), Action::Switch(vec![0, 1]));
    assert!(p.past_barrier());
    p.on(Event::Switched(0));
    p.on(Event::Switched(1));
    assert_eq!(p.next_action(), Action::Cleanup(vec![0, 1]));
    assert_eq!(p.next_action(), Action::Unlock(vec![0, 1]));
    assert_eq!(p.next_action(), Action::Finish(Outcome::Deployed));
}

#[test]
fn one_failed_build_discards_everywhere_and_unlocks() {
    let mut p = Protocol::new(3);
    p.next_action();
    (0..3).for_each(|h| p.on(Event::Connected(h)));
    p.next_action();
    (0..3).for_each(|h| p.on(Event::Locked(h)));
    p.next_action();
    (0..3).for_each(|h| p.on(Event::Staging(h)));
    p.on(Event::Prepared(0));
    p.on(Event::PrepareFailed(1));
    p.on(Event::Prepared(2));
    assert_eq!(p.next_action(), Action::Discard(vec![0, 1, 2]));
    assert_eq!(p.next_action(), Action::Unlock(vec![0, 1, 2]));
    assert_eq!(p.next_action(), Action::Finish(Outcome::Aborted));
}

#[test]
fn interruption_after_the_barrier_does_not_stop_the_switch() {
    let mut p = Protocol::new(1);
    p.next_action();
    p.on(Event::Connected(0));
    p.next_action();
    p.on(Event::Locked(0));
    p.next_action();
    p.on(Event::Staging(0));
    p.on(Event::Prepared(0));
    assert_eq!(p.next_action(), Action::Switch(vec![0]));
    p.on(Event::Interrupted);
    p.on(Event::Switched(0));
    assert_eq!(p.next_action(), Action::Cleanup(vec![0]));
}
