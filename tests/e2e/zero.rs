//! Zero downtime on the stack users run: nginx + php-fpm with OPcache (`validate_timestamps=0`)
//! on every host, continuous HTTP requests to every host, and real deploys and rollbacks.
//! Every response is classified: failed (no answer, not 200), mixed (files of two releases in
//! one response), stale (the old release more than a second after ship reported the switch).

use std::time::Duration;

use crate::support::php::{Load, Root, get, now_ns, php_app, switch, tally};
use crate::support::{Fleet, wait_until};

/// Hosts with the PHP example deployed once; the after-switch step tells the queue workers to
/// restart, as `php artisan queue:restart` does.
fn php_fleet(n: usize) -> (Fleet, String) {
    let fleet = Fleet::start(n);
    fleet.inventory(
        "  after_switch: [\"date +%s%N > $SHIP_DEPLOY_TO/shared/queue-restart\"]\n",
        "",
    );
    fleet.set_source(&format!("{{ artifact: {} }}", php_app().display()));
    let (_, a) = switch(&fleet, &["deploy", "production"]);
    (fleet, a)
}

#[test]
fn deploys_and_rollbacks_under_http_load_fail_no_request_and_mix_no_releases() {
    let (fleet, a) = php_fleet(2);
    let servers: Vec<_> = fleet
        .hosts
        .iter()
        .map(|h| h.serve_php(18090, Root::Realpath))
        .collect();
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    for addr in &addrs {
        let (status, line) = get(addr).expect("the app answers");
        assert_eq!((status, line), (200, format!("release {a} {a} {a}")));
    }
    // A queue worker on every host, run by Supervisor in `current`.
    let _workers: Vec<_> = fleet.hosts.iter().map(|h| h.supervise_worker()).collect();
    let on = |release: &str| {
        let release = release.to_owned();
        let fleet = &fleet;
        move || {
            fleet
                .hosts
                .iter()
                .all(|h| h.worker_release().as_deref() == Some(release.as_str()))
        }
    };
    wait_until("every worker running", Duration::from_secs(30), on(&a));
    let load = Load::start(&addrs);
    let mut switches = Vec::new();
    let mut worker_lag_ms = Vec::new();
    for action in ["deploy", "rollback", "deploy", "rollback"] {
        std::thread::sleep(Duration::from_millis(1100));
        let (at, release) = switch(&fleet, &[action, "production"]);
        // Every worker restarts into the release just switched to (how long it took is
        // printed, not asserted: bench/zero-downtime.sh measures it).
        wait_until(
            "every worker on the new release",
            Duration::from_secs(30),
            on(&release),
        );
        worker_lag_ms.push((now_ns().saturating_sub(at)) / 1_000_000);
        switches.push((release, at));
    }
    eprintln!("workers on the new release within (ms, at most): {worker_lag_ms:?}");
    // Requests go on past the last switch's grace second.
    let last = switches.last().map(|s| s.1).unwrap_or_default();
    wait_until("requests past the grace", Duration::from_secs(10), || {
        now_ns() > last + 1_500_000_000
    });
    let responses = load.finish();
    let switched: Vec<(u128, String)> = switches.iter().map(|(r, at)| (*at, r.clone())).collect();
    let t = tally(&responses, &switched, Duration::from_secs(1));
    eprintln!("realpath: {t:?}");
    assert!(t.requests > 200, "the load must be real: {t:?}");
    let failures: Vec<_> = responses
        .iter()
        .filter_map(|r| r.failed.clone())
        .take(5)
        .collect();
    assert_eq!(
        (t.failed, t.mixed, t.stale),
        (0, 0, 0),
        "{t:?}; failures: {failures:?}"
    );
    // Every host ends on the release the last rollback chose.
    assert_eq!(switches.last().map(|s| s.0.clone()), Some(a.clone()));

    // Control: the same load, with nginx passing the path through `current`
    // ($document_root), as many guides write it. OPcache keeps serving the old release: the
    // tally sees it, so the zeros above mean something.
    drop(servers);
    let servers: Vec<_> = fleet
        .hosts
        .iter()
        .map(|h| h.serve_php(18091, Root::DocumentRoot))
        .collect();
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    for addr in &addrs {
        get(addr).expect("the app answers");
    }
    let load = Load::start(&addrs);
    std::thread::sleep(Duration::from_millis(1100));
    let (at, b) = switch(&fleet, &["deploy", "production"]);
    wait_until("requests past the grace", Duration::from_secs(10), || {
        now_ns() > at + 1_500_000_000
    });
    let responses = load.finish();
    let t = tally(&responses, &[(at, b)], Duration::from_secs(1));
    eprintln!("document_root: {t:?}");
    assert!(
        t.stale > 0,
        "with $document_root the old release goes on: {t:?}"
    );
}

#[test]
fn the_tally_counts_failed_mixed_and_stale_responses() {
    use crate::support::php::{Response, Tally};
    let r = |at_s: u128, ids: &[&str], failed: Option<&str>| Response {
        at_ns: at_s * 1_000_000_000,
        took_us: 1000,
        host: 0,
        ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        failed: failed.map(str::to_owned),
    };
    let responses = [
        r(1, &["A", "A", "A"], None),
        r(10, &["A", "A", "A"], None), // within the grace after the switch to B at 10
        r(12, &["A", "A", "A"], None), // stale
        r(12, &["A", "B", "B"], None), // mixed (and stale)
        r(13, &[], Some("HTTP 502")),  // failed
        r(13, &["B", "B", "B"], None),
    ];
    let t = tally(
        &responses,
        &[(10_000_000_000, "B".to_owned())],
        Duration::from_secs(1),
    );
    assert_eq!(
        t,
        Tally {
            requests: 6,
            failed: 1,
            mixed: 1,
            stale: 2
        }
    );
}
