//! The exact words of the summary, the live lines and the canary line.

use super::*;
use crate::report::{Failure, HostSummary};

fn summary(outcome: Outcome, hosts: Vec<HostSummary>) -> Summary {
    Summary {
        kind: "deploy".into(),
        forward: false,
        stage: "production".into(),
        release: "20261204120000".into(),
        revision: "sha256:ab".into(),
        outcome,
        hosts,
        flip_skew_ms: None,
        clock_error_ms: None,
        canary: Vec::new(),
        waves: Vec::new(),
        untouched: Vec::new(),
        phases: Vec::new(),
        elapsed_ms: 1200,
    }
}

fn host(name: &str) -> HostSummary {
    HostSummary {
        host: name.into(),
        current: Some("20261201000000".into()),
        ..HostSummary::default()
    }
}

fn failure(phase: Phase, step: Option<&str>, message: &str) -> Option<Failure> {
    Some(Failure {
        phase,
        step: step.map(str::to_owned),
        exit_status: None,
        message: message.into(),
        output_tail: Vec::new(),
    })
}

#[test]
fn builds_stopped_by_another_hosts_failure_are_cancelled_not_failed() {
    let mut h3 = host("web-3");
    h3.failure = failure(
        Phase::Prepare,
        Some("build: npm ci"),
        "exited with status 1",
    );
    let mut h1 = host("web-1");
    h1.cancelled = true;
    let text = summary_text(&summary(Outcome::Aborted, vec![h1, host("web-2"), h3]));
    assert!(
        text.contains("  web-1  cancelled  20261201000000"),
        "{text}"
    );
    assert!(
        text.contains("  web-2  unchanged  20261201000000"),
        "{text}"
    );
    assert!(
        text.contains("  web-3: failed at prepare (build: npm ci): exited with status 1"),
        "{text}"
    );
    assert_eq!(step_word(false, true), "cancelled");
    assert_eq!(step_word(false, false), "FAILED");
    assert_eq!(step_word(true, false), "ok");
}

#[test]
fn a_host_that_could_not_be_read_shows_a_question_mark_not_a_dash() {
    let mut h1 = host("web-1");
    h1.current = None;
    h1.failure = failure(
        Phase::Connect,
        None,
        "cannot connect to 203.0.113.10:22: timed out",
    );
    let mut h2 = host("web-2");
    h2.current = None;
    h2.result = HostResult::Unknown;
    let mut h3 = host("web-3");
    h3.current = None;
    let text = summary_text(&summary(Outcome::Aborted, vec![h1, h2, h3]));
    assert!(text.contains("  web-1  unchanged  ? (not read)"), "{text}");
    assert!(text.contains("  web-2  UNKNOWN    ? (unknown)"), "{text}");
    assert!(text.contains("  web-3  unchanged  - (none)"), "{text}");
}

#[test]
fn one_cause_on_every_host_is_said_once() {
    let held = "locked by deploy of 20261204110000 by alice on laptop";
    let hosts: Vec<HostSummary> = ["web-1", "web-2", "web-3"]
        .iter()
        .map(|n| {
            let mut h = host(n);
            h.failure = failure(Phase::Lock, None, held);
            h
        })
        .collect();
    let text = summary_text(&summary(Outcome::Aborted, hosts));
    assert_eq!(text.matches(held).count(), 1, "{text}");
    assert!(
        text.contains(&format!("  all 3 hosts: failed at lock: {held}")),
        "{text}"
    );
    let mut two = vec![host("web-1"), host("web-2"), host("web-3")];
    two[0].failure = failure(Phase::Lock, None, held);
    two[2].failure = failure(Phase::Lock, None, held);
    let text = summary_text(&summary(Outcome::Aborted, two));
    assert!(
        text.contains(&format!("  web-1, web-3: failed at lock: {held}")),
        "{text}"
    );
}

#[test]
fn rollback_headlines_say_what_happened() {
    let mut s = summary(Outcome::NothingToDo, vec![host("web-1")]);
    s.kind = "rollback".into();
    assert!(
        summary_text(&s).starts_with(
            "every host of production is already on 20261204120000; nothing to roll back\n"
        ),
        "{}",
        summary_text(&s)
    );
    s.outcome = Outcome::Deployed;
    s.forward = true;
    let mut h = host("web-1");
    h.result = HostResult::Switched;
    s.hosts = vec![h];
    assert!(
        summary_text(&s).starts_with(
            "switched production forward to 20261204120000: 1/1 hosts switched (a newer \
             release: nothing was marked bad)\n"
        ),
        "{}",
        summary_text(&s)
    );
    assert_eq!(
        started_line("rollback", "production", "", "", 3),
        "rolling production back: 3 host(s); the target is not known"
    );
    assert_eq!(
        started_line("rollback", "production", "20261204120000", "sha256:ab", 3),
        "rolling production back to 20261204120000 (sha256:ab): 3 host(s)"
    );
}

#[test]
fn the_canary_line_says_what_was_checked() {
    let hosts = vec!["web-1".to_owned()];
    assert_eq!(
        observing_line(&hosts, 3000, &[], (1, 2)),
        "canary web-1 switched (no health check or after-switch step configured: nothing \
         checked it); observing for 3.0s before the rest of the fleet switches (Ctrl-C \
         switches the canary back)"
    );
    assert_eq!(
        observing_line(&hosts, 3000, &["health check".to_owned()], (1, 2)),
        "canary web-1 switched and passed its health check; observing for 3.0s before the \
         rest of the fleet switches (Ctrl-C switches the canary back)"
    );
}

#[test]
fn a_cause_every_host_shares_is_said_in_full_once_as_it_happens() {
    let said = Said::default();
    let held = failure(Phase::Lock, None, "locked by deploy of 20261204 by alice").expect("f");
    let other = failure(
        Phase::Prepare,
        Some("build: npm ci"),
        "exited with status 1",
    )
    .expect("f");
    assert_eq!(
        said.lines("web-1", &held),
        ["[web-1] FAILED at lock: locked by deploy of 20261204 by alice"]
    );
    assert_eq!(
        said.lines("web-2", &held),
        ["[web-2] FAILED at lock: the same as web-1"]
    );
    assert_eq!(
        said.lines("web-3", &other),
        ["[web-3] FAILED at prepare (build: npm ci): exited with status 1"]
    );
}

#[test]
fn a_fleet_taller_than_the_terminal_gets_the_rows_that_fit_and_a_count_of_the_rest() {
    let hosts: Vec<String> = (1..=10).map(|i| format!("web-{i}")).collect();
    let live = Live::with_rows(&hosts, Verbosity::Normal, 4);
    // Three rows and the line for the other seven.
    assert_eq!(live.bars.len(), 3);
    assert!(live.bars.contains_key("web-1") && live.bars.contains_key("web-3"));
    let rest = |live: &Live| {
        let (_, r) = live.rest.as_ref().expect("a line for the rest");
        r.lock().expect("rest").line()
    };
    assert_eq!(rest(&live), "… 7 more host(s): 7 waiting");
    for h in &hosts {
        live.report(&Event::Phase {
            host: h.clone(),
            phase: Phase::Prepare,
        });
        // Steps count under their phase on the line for the rest.
        live.report(&Event::StepStarted {
            host: h.clone(),
            step: "npm ci".into(),
        });
    }
    assert_eq!(rest(&live), "… 7 more host(s): 7 prepare");
    for h in &hosts[6..] {
        live.report(&Event::Switched {
            host: h.clone(),
            at_unix_ns: None,
        });
    }
    assert_eq!(rest(&live), "… 7 more host(s): 3 prepare · 4 switched");
    // The fleet line counts every host, shown or not.
    assert_eq!(live.total, 10);
    live.finish();

    // A fleet that fits has a row per host and no such line.
    let live = Live::with_rows(&hosts, Verbosity::Normal, 10);
    assert_eq!(live.bars.len(), 10);
    assert!(live.rest.is_none());
    live.finish();
}
