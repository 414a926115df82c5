//! The zero-downtime benchmark: N hosts serving the PHP example app through nginx and php-fpm
//! with OPcache (`validate_timestamps=0`), continuous requests to every host, and K deploys and
//! K rollbacks. Per setting it prints `requests N, failed F, mixed M, stale S` and the request
//! latency around the switches against the rest:
//!
//! - failed: no answer, or not 200;
//! - mixed: one response made of files of two releases;
//! - stale: the old release, more than 1 s after the switch was reported.
//!
//! Settings: ship with nginx passing `$realpath_root` (the Laravel recipe's), ship with
//! `$document_root`, and the seeds' recipe — `ln -nfs` on every host at once — with each.
//! Figures only: nothing here passes or fails.
//!
//! `bench/zero-downtime.sh [--deploys K] [--hosts N]` (root: sshd in mount namespaces).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use support::Fleet;
use support::php::{Load, Response, Root, get, now_ns, php_app, switch, tally};

/// The after-switch step that tells the queue workers to restart (what `php artisan
/// queue:restart` does: a value the workers watch changes).
const RESTART: &str = "date +%s%N > $SHIP_DEPLOY_TO/shared/queue-restart";

/// How the fleet's `current` is switched.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Switcher {
    /// `ship deploy` then `ship rollback`, K times.
    Ship,
    /// `ln -nfs releases/<id> current` on every host at once, to a new release and back.
    LnNfs,
    /// ship, with an after-switch step that reloads php-fpm gracefully (SIGUSR2), as guides
    /// advise to clear OPcache.
    ShipReload,
}

/// `ln -nfs` to `id` on every host at once (one thread per host, as a parallel SSH loop does):
/// when the last one returned, and the release.
fn ln_switch(fleet: &Fleet, id: &str) -> (u128, String) {
    std::thread::scope(|s| {
        for h in &fleet.hosts {
            s.spawn(move || {
                let out = h.run_on_host(&format!(
                    "cd {} && ln -nfs releases/{id} current",
                    support::DEPLOY_TO
                ));
                assert!(out.status.success(), "ln -nfs on {}", h.name);
            });
        }
    });
    (now_ns(), id.to_owned())
}

fn percentile(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

/// Latency (ms) p50 / p99 of the requests answered within a second around a switch, and of
/// the rest.
fn latency(responses: &[Response], switches: &[(u128, String)]) -> String {
    let near = |r: &Response| {
        switches
            .iter()
            .any(|(at, _)| r.at_ns + 500_000_000 > *at && r.at_ns < at + 1_000_000_000)
    };
    let (mut during, mut rest): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
    for r in responses.iter().filter(|r| r.failed.is_none()) {
        if near(r) {
            during.push(r.took_us);
        } else {
            rest.push(r.took_us);
        }
    }
    format!(
        "latency ms p50/p99: around switches {:.1}/{:.1}, otherwise {:.1}/{:.1}",
        percentile(&mut during, 0.5),
        percentile(&mut during, 0.99),
        percentile(&mut rest, 0.5),
        percentile(&mut rest, 0.99)
    )
}

fn measure(hosts: usize, deploys: usize, root: Root, switcher: Switcher, port: u16) -> String {
    let fleet = Fleet::start(hosts);
    // As `php artisan queue:restart` does: the workers see the value change and exit.
    fleet.inventory(&format!("  after_switch: [\"{RESTART}\"]\n"), "");
    fleet.set_source(&format!("{{ artifact: {} }}", php_app().display()));
    let (_, a) = switch(&fleet, &["deploy", "production"]);
    std::thread::sleep(Duration::from_millis(1100));
    // For `ln -nfs`, a second release to switch to, prepared (and then left) by ship.
    let b = if switcher == Switcher::LnNfs {
        let (_, b) = switch(&fleet, &["deploy", "production"]);
        ln_switch(&fleet, &a);
        b
    } else {
        String::new()
    };
    let servers: Vec<_> = fleet
        .hosts
        .iter()
        .map(|h| h.serve_php(port, root))
        .collect();
    if switcher == Switcher::ShipReload {
        for (i, s) in servers.iter().enumerate() {
            fleet.host_settings(
                i,
                &format!(
                    "after_switch: [\"{RESTART}\", \"kill -USR2 $(cat {})\"]",
                    s.fpm_pid.display()
                ),
            );
        }
    }
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    for addr in &addrs {
        let _ = get(addr);
    }
    // ship's runs restart a queue worker on every host (Supervisor, in `current`).
    let with_workers = switcher != Switcher::LnNfs;
    let _workers: Vec<_> = if with_workers {
        fleet.hosts.iter().map(|h| h.supervise_worker()).collect()
    } else {
        Vec::new()
    };
    let workers_on = |release: &str| {
        fleet
            .hosts
            .iter()
            .all(|h| h.worker_release().as_deref() == Some(release))
    };
    if with_workers {
        support::wait_until("the workers", Duration::from_secs(30), || workers_on(&a));
    }
    let mut worker_lag_ms: Vec<u64> = Vec::new();
    let mut after = |switched: &(u128, String)| {
        if with_workers {
            support::wait_until("the workers restarted", Duration::from_secs(60), || {
                workers_on(&switched.1)
            });
            worker_lag_ms.push((now_ns().saturating_sub(switched.0) / 1_000_000) as u64);
        }
    };
    let load = Load::start(&addrs);
    let settle = Duration::from_millis(1300);
    let mut switches = Vec::new();
    for _ in 0..deploys {
        std::thread::sleep(settle);
        switches.push(match switcher {
            Switcher::Ship | Switcher::ShipReload => switch(&fleet, &["deploy", "production"]),
            Switcher::LnNfs => ln_switch(&fleet, &b),
        });
        after(&switches[switches.len() - 1]);
        std::thread::sleep(settle);
        switches.push(match switcher {
            Switcher::Ship | Switcher::ShipReload => switch(&fleet, &["rollback", "production"]),
            Switcher::LnNfs => ln_switch(&fleet, &a),
        });
        after(&switches[switches.len() - 1]);
    }
    std::thread::sleep(settle);
    let responses = load.finish();
    let t = tally(&responses, &switches, Duration::from_secs(1));
    let workers = match worker_lag_ms.iter().max() {
        Some(max) => format!("; workers on the new release within {max} ms"),
        None => String::new(),
    };
    format!(
        "requests {}, failed {}, mixed {}, stale {}; {}{workers}",
        t.requests,
        t.failed,
        t.mixed,
        t.stale,
        latency(&responses, &switches)
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| support::arg(&args, name, default);
    let deploys: usize = arg("--deploys", "10").parse().unwrap_or(10);
    let hosts: usize = arg("--hosts", "2").parse().unwrap_or(2);
    println!(
        "{hosts} hosts, nginx + php-fpm (OPcache on, validate_timestamps=0), continuous \
         requests to every host; {deploys} switches to a new release and {deploys} back"
    );
    for (n, (label, root, switcher)) in [
        ("ship, $realpath_root", Root::Realpath, Switcher::Ship),
        ("ship, $document_root", Root::DocumentRoot, Switcher::Ship),
        (
            "ship, $document_root, fpm reload",
            Root::DocumentRoot,
            Switcher::ShipReload,
        ),
        (
            "ln -nfs, $document_root",
            Root::DocumentRoot,
            Switcher::LnNfs,
        ),
        ("ln -nfs, $realpath_root", Root::Realpath, Switcher::LnNfs),
    ]
    .into_iter()
    .enumerate()
    {
        let line = measure(hosts, deploys, root, switcher, 18100 + n as u16);
        println!("  {label:<34} {line}");
    }
}
