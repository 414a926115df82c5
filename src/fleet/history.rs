//! `ship history`: the fleet's runs, merged from the journals (`.ship/history`) of every host.
//! One run of ship writes one line per host, all with the same start time; a run is those lines.

use serde::Serialize;

use super::inspect::HostStatus;

/// One deploy or rollback, as the hosts' journals tell it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PastRun {
    pub release: String,
    pub kind: String,
    /// The outcome, when every host that recorded the run says the same; else `mixed records`.
    pub outcome: String,
    pub revision: String,
    pub user: String,
    pub ci_url: Option<String>,
    pub started: String,
    /// The latest `finished` of its lines.
    pub finished: String,
    /// The hosts whose journal has it.
    pub hosts: Vec<String>,
    /// Spread of the hosts' switch instants, on their own clocks (ms), when they recorded them.
    pub skew_ms: Option<f64>,
    /// Where the journals disagree about it.
    pub notes: Vec<String>,
    /// Where its line stands in a journal that has it (journals are appended to in order): what
    /// orders runs started in the same second.
    #[serde(skip)]
    position: usize,
}

/// The last `n` runs, newest first, from every host that could be read.
pub fn merge(hosts: &[HostStatus], n: usize) -> Vec<PastRun> {
    let mut runs: Vec<PastRun> = Vec::new();
    let mut outcomes: Vec<Vec<(String, String)>> = Vec::new();
    let mut stamps: Vec<Vec<f64>> = Vec::new();
    for h in hosts.iter().filter(|h| h.error.is_none()) {
        for (at_line, e) in h.journal.iter().enumerate() {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            let kind = text("kind");
            if kind != "deploy" && kind != "rollback" {
                continue;
            }
            let (release, started) = (text("release"), text("started"));
            let at = runs
                .iter()
                .position(|r| r.release == release && r.kind == kind && r.started == started);
            let i = match at {
                Some(i) => i,
                None => {
                    runs.push(PastRun {
                        release,
                        kind,
                        outcome: String::new(),
                        revision: text("revision"),
                        user: text("user"),
                        ci_url: e["ci_url"].as_str().map(str::to_owned),
                        started,
                        finished: String::new(),
                        hosts: Vec::new(),
                        skew_ms: None,
                        notes: Vec::new(),
                        position: at_line,
                    });
                    outcomes.push(Vec::new());
                    stamps.push(Vec::new());
                    runs.len() - 1
                }
            };
            let r = &mut runs[i];
            r.position = r.position.max(at_line);
            if !r.hosts.contains(&h.host) {
                r.hosts.push(h.host.clone());
            }
            r.finished = r.finished.clone().max(text("finished"));
            outcomes[i].push((h.host.clone(), text("outcome")));
            if let Some(ns) = e["switched_at_ns"].as_f64() {
                stamps[i].push(ns);
            }
        }
    }
    let read: Vec<&str> = hosts
        .iter()
        .filter(|h| h.error.is_none())
        .map(|h| h.host.as_str())
        .collect();
    for (i, r) in runs.iter_mut().enumerate() {
        let first = outcomes[i]
            .first()
            .map(|(_, o)| o.clone())
            .unwrap_or_default();
        if outcomes[i].iter().all(|(_, o)| *o == first) {
            r.outcome = first;
        } else {
            r.outcome = "mixed records".into();
            let each: Vec<String> = outcomes[i]
                .iter()
                .map(|(h, o)| format!("{h} {o}"))
                .collect();
            r.notes
                .push(format!("the journals differ: {}", each.join(", ")));
        }
        let missing: Vec<&str> = read
            .iter()
            .copied()
            .filter(|h| !r.hosts.iter().any(|x| x == h))
            .collect();
        if !missing.is_empty() {
            r.notes
                .push(format!("not in the journal of {}", missing.join(", ")));
        }
        if stamps[i].len() > 1 {
            let lo = stamps[i].iter().copied().fold(f64::INFINITY, f64::min);
            let hi = stamps[i].iter().copied().fold(f64::NEG_INFINITY, f64::max);
            r.skew_ms = Some((hi - lo) / 1e6);
        }
    }
    runs.sort_by(|a, b| b.started.cmp(&a.started).then(b.position.cmp(&a.position)));
    runs.truncate(n);
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, lines: &[serde_json::Value]) -> HostStatus {
        let mut h = HostStatus::unreachable(name, String::new());
        h.error = None;
        h.journal = lines.to_vec();
        h
    }

    fn line(release: &str, kind: &str, outcome: &str, started: &str, ns: u64) -> serde_json::Value {
        serde_json::json!({
            "kind": kind, "release": release, "revision": "sha256:ab", "outcome": outcome,
            "user": "alice", "started": started, "finished": started, "switched_at_ns": ns,
        })
    }

    #[test]
    fn runs_are_merged_across_hosts_newest_first_with_what_the_journals_disagree_on() {
        let a = line(
            "20261201000000",
            "deploy",
            "deployed",
            "2026-12-01T00:00:00Z",
            1_000_000_000,
        );
        let b1 = line(
            "20261202000000",
            "deploy",
            "deployed",
            "2026-12-02T00:00:00Z",
            2_000_000_000,
        );
        let b2 = line(
            "20261202000000",
            "deploy",
            "deployed",
            "2026-12-02T00:00:00Z",
            2_000_300_000,
        );
        let back = line(
            "20261201000000",
            "rollback",
            "deployed",
            "2026-12-03T00:00:00Z",
            0,
        );
        let aborted = line(
            "20261204000000",
            "deploy",
            "aborted",
            "2026-12-04T00:00:00Z",
            0,
        );
        let odd = line(
            "20261204000000",
            "deploy",
            "rolled_back",
            "2026-12-04T00:00:00Z",
            0,
        );
        let release =
            serde_json::json!({"kind": "lock-release", "finished": "2026-12-05T00:00:00Z"});
        let hosts = [
            host("web-1", &[a.clone(), b1, back.clone(), aborted, release]),
            host("web-2", &[a, b2, back, odd]),
            HostStatus::unreachable("web-3", "timed out".into()),
        ];
        let runs = merge(&hosts, 10);
        let ids: Vec<(&str, &str)> = runs
            .iter()
            .map(|r| (r.release.as_str(), r.kind.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                ("20261204000000", "deploy"),
                ("20261201000000", "rollback"),
                ("20261202000000", "deploy"),
                ("20261201000000", "deploy"),
            ]
        );
        assert_eq!(runs[0].outcome, "mixed records");
        assert_eq!(
            runs[0].notes,
            ["the journals differ: web-1 aborted, web-2 rolled_back"]
        );
        assert_eq!(runs[2].hosts, ["web-1", "web-2"]);
        assert_eq!(runs[2].skew_ms, Some(0.3));
        assert!(runs[2].notes.is_empty());
        assert_eq!(merge(&hosts, 2).len(), 2);
        // A host that has not got a run the others have is named.
        let lone = [
            host(
                "web-1",
                &[line("20261201000000", "deploy", "deployed", "x", 0)],
            ),
            host("web-2", &[]),
        ];
        assert_eq!(merge(&lone, 5)[0].notes, ["not in the journal of web-2"]);
    }
}
