//! How events are shown: live rows on a terminal, plain prefixed lines elsewhere (CI logs), or
//! JSON lines. And the final summary.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::{Event, Failure, HostResult, Outcome, Phase, Reporter, Summary};
use crate::util::human_duration;

/// How much to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// One JSON object per line on stdout, each with the schema version (`"schema": 1`).
pub struct Json;

impl Reporter for Json {
    fn report(&self, event: &Event) {
        let mut value = match serde_json::to_value(event) {
            Ok(v) => v,
            Err(_) => return,
        };
        if let Some(obj) = value.as_object_mut() {
            obj.insert("schema".into(), serde_json::json!(1));
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
        let _ = out.flush();
    }
}

/// Where a failure happened: `prepare (build: npm ci)`, or just the phase.
fn place(f: &Failure) -> String {
    match &f.step {
        Some(step) => format!("{} ({step})", f.phase),
        None => f.phase.to_string(),
    }
}

fn failure_lines(host: &str, f: &Failure) -> Vec<String> {
    let mut lines = vec![format!("[{host}] FAILED at {}: {}", place(f), f.message)];
    lines.extend(f.output_tail.iter().map(|l| format!("[{host}]   | {l}")));
    lines
}

/// The failures said so far, so that a cause every host shares (a held lock, a missing rollback
/// target) is said in full once, and then only named for each other host.
#[derive(Default)]
pub struct Said(Mutex<Vec<(String, String)>>);

impl Said {
    /// The lines for `host`'s failure: in full, or, when another host already failed the same
    /// way, one line that says so.
    fn lines(&self, host: &str, f: &Failure) -> Vec<String> {
        let key = format!("{}\n{}", place(f), f.message);
        if let Ok(mut said) = self.0.lock() {
            if let Some((_, first)) = said.iter().find(|(k, _)| *k == key) {
                return vec![format!(
                    "[{host}] FAILED at {}: the same as {first}",
                    place(f)
                )];
            }
            said.push((key, host.to_owned()));
        }
        failure_lines(host, f)
    }
}

/// Plain lines, for CI logs and pipes, each with the UTC time:
/// `06:20:01.123 [web-1] build: npm ci … ok 3.2s`.
pub struct Plain {
    pub verbosity: Verbosity,
    pub said: Said,
}

impl Plain {
    fn line(&self, s: &str) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{} {s}", crate::util::clock_now());
    }
}

impl Reporter for Plain {
    fn report(&self, event: &Event) {
        let v = self.verbosity;
        match event {
            Event::Started {
                kind,
                stage,
                release,
                revision,
                hosts,
            } if v != Verbosity::Quiet => {
                self.line(&started_line(kind, stage, release, revision, hosts.len()))
            }
            Event::Phase { host, phase } if v == Verbosity::Verbose => {
                self.line(&format!("[{host}] {phase}"))
            }
            Event::StepFinished {
                host,
                step,
                ok,
                cancelled,
                elapsed_ms,
            } if v != Verbosity::Quiet => self.line(&format!(
                "[{host}] {step} … {} {}",
                step_word(*ok, *cancelled),
                human_duration(Duration::from_millis(*elapsed_ms))
            )),
            Event::Prepared { host, elapsed_ms } if v != Verbosity::Quiet => self.line(&format!(
                "[{host}] prepared in {}",
                human_duration(Duration::from_millis(*elapsed_ms))
            )),
            Event::Line { host, line, .. } if v == Verbosity::Verbose => {
                self.line(&format!("[{host}] | {line}"))
            }
            Event::HostFailed { host, failure } => {
                for l in self.said.lines(host, failure) {
                    self.line(&l);
                }
            }
            Event::Switched { host, .. } if v != Verbosity::Quiet => {
                self.line(&format!("[{host}] switched"))
            }
            Event::Interrupted { message } => self.line(&format!("interrupted: {message}")),
            Event::Waiting { host, message } => self.line(&format!("[{host}] {message}")),
            Event::HostWarning { host, failure } => {
                for l in failure_lines(host, failure) {
                    self.line(&format!("warning: {l}"));
                }
            }
            Event::Observing {
                hosts,
                for_ms,
                checked,
                wave,
                waves,
            } if v != Verbosity::Quiet => {
                self.line(&observing_line(hosts, *for_ms, checked, (*wave, *waves)))
            }
            _ => {}
        }
    }
}

/// A row per host with its phase, step and elapsed time, on a terminal. A fleet taller than the
/// terminal gets rows for as many hosts as fit, and one line that counts the others by what
/// they are doing (the fleet line above counts every host; the summary lists each).
pub struct Live {
    multi: MultiProgress,
    /// The rows shown, by host.
    bars: HashMap<String, ProgressBar>,
    /// The fleet line above the rows: what runs where, how far the fleet is.
    header: ProgressBar,
    /// How many hosts the run has, shown or not.
    total: usize,
    /// The line under the rows for the hosts without one, and where each of them stands.
    rest: Option<(ProgressBar, Mutex<Rest>)>,
    /// (what is being done, hosts prepared, hosts switched), for the header.
    fleet: Mutex<(String, usize, usize)>,
    verbosity: Verbosity,
    failures: Mutex<Vec<String>>,
    said: Said,
    /// Set when the view is finished: the one thread that animates the rows stops.
    stop: Arc<AtomicBool>,
}

/// Where the hosts without a row stand: each host's state, and how many are in each.
#[derive(Default)]
struct Rest {
    state: HashMap<String, String>,
    count: BTreeMap<String, usize>,
}

impl Rest {
    fn set(&mut self, host: &str, state: &str) {
        let Some(old) = self.state.get_mut(host) else {
            return;
        };
        if let Some(n) = self.count.get_mut(old.as_str()) {
            *n -= 1;
            if *n == 0 {
                self.count.remove(old.as_str());
            }
        }
        *self.count.entry(state.to_owned()).or_default() += 1;
        *old = state.to_owned();
    }

    fn line(&self) -> String {
        let states: Vec<String> = self.count.iter().map(|(s, n)| format!("{n} {s}")).collect();
        format!(
            "… {} more host(s): {}",
            self.state.len(),
            states.join(" · ")
        )
    }
}

/// The rows of the terminal on stderr (24 when it cannot be told).
fn terminal_rows() -> usize {
    // SAFETY: TIOCGWINSZ fills the winsize given; fd 2 is only read.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_row > 0 {
        usize::from(ws.ws_row)
    } else {
        24
    }
}

/// How often the rows' spinners turn.
const SPIN: Duration = Duration::from_millis(120);

impl Live {
    pub fn new(hosts: &[String], verbosity: Verbosity) -> Self {
        // The fleet line, the host rows, the line for the rest, and a line to spare.
        Self::with_rows(hosts, verbosity, terminal_rows().saturating_sub(3).max(1))
    }

    /// A view with a row for at most `rows` hosts.
    fn with_rows(hosts: &[String], verbosity: Verbosity, rows: usize) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let (shown, hidden) = if hosts.len() > rows {
            // One of the rows goes to the line that counts the rest.
            hosts.split_at(rows.saturating_sub(1))
        } else {
            (hosts, &[][..])
        };
        let width = shown.iter().map(|h| h.len()).max().unwrap_or(4);
        // NO_COLOR (https://no-color.org): no styling at all.
        let bold = if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
            ""
        } else {
            ".bold"
        };
        let style = ProgressStyle::with_template(&format!(
            "{{prefix:<{width}{bold}}} {{spinner}} {{wide_msg}} {{elapsed:>4}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let header = multi.add(ProgressBar::new_spinner());
        header.set_style(
            ProgressStyle::with_template(&format!(
                "{{wide_msg{}}} {{elapsed:>4}}",
                if bold.is_empty() { "" } else { ":.bold" }
            ))
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        header.set_message(format!("{} host(s)", hosts.len()));
        let bars: HashMap<String, ProgressBar> = shown
            .iter()
            .map(|h| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(style.clone());
                bar.set_prefix(h.clone());
                bar.set_message("waiting");
                (h.clone(), bar)
            })
            .collect();
        let rest = (!hidden.is_empty()).then(|| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            let rest = Rest {
                state: hidden
                    .iter()
                    .map(|h| (h.clone(), "waiting".to_owned()))
                    .collect(),
                count: BTreeMap::from([("waiting".to_owned(), hidden.len())]),
            };
            bar.set_message(rest.line());
            (bar, Mutex::new(rest))
        });
        // One thread turns every spinner (indicatif's steady tick is a thread per row).
        let stop = Arc::new(AtomicBool::new(false));
        {
            let mut all: Vec<ProgressBar> = vec![header.clone()];
            all.extend(bars.values().cloned());
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for b in &all {
                        b.tick();
                    }
                    std::thread::sleep(SPIN);
                }
            });
        }
        Live {
            multi,
            bars,
            header,
            total: hosts.len(),
            rest,
            fleet: Mutex::new((String::new(), 0, 0)),
            verbosity,
            failures: Mutex::new(Vec::new()),
            said: Said::default(),
            stop,
        }
    }

    fn set(&self, host: &str, msg: String) {
        if let Some(b) = self.bars.get(host) {
            b.set_message(msg);
        } else if let Some((bar, rest)) = &self.rest
            && let Ok(mut r) = rest.lock()
        {
            r.set(host, &msg);
            bar.set_message(r.line());
        }
    }

    /// A host's step: on its row; the line for the rest counts hosts by phase, not by step.
    fn set_step(&self, host: &str, step: &str) {
        if let Some(b) = self.bars.get(host) {
            b.set_message(step.to_owned());
        }
    }

    /// Update the fleet line: `what` is being done, and the counts.
    fn fleet_line(&self, update: impl FnOnce(&mut (String, usize, usize))) {
        if let Ok(mut f) = self.fleet.lock() {
            update(&mut f);
            let n = self.total;
            self.header.set_message(format!(
                "{} · {}/{n} prepared · {}/{n} switched",
                f.0, f.1, f.2
            ));
        }
    }

    /// Stop the rows and print failures kept for the end.
    pub fn finish(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.header.finish();
        for b in self.bars.values() {
            b.finish();
        }
        if let Some((bar, _)) = &self.rest {
            bar.finish();
        }
        let _ = self.multi.clear();
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Reporter for Live {
    fn report(&self, event: &Event) {
        match event {
            Event::Started {
                kind,
                stage,
                release,
                ..
            } => self.fleet_line(|f| {
                f.0 = if kind == "rollback" {
                    format!("{stage}: rolling back to {release}")
                } else {
                    format!("{stage}: deploying {release}")
                }
            }),
            Event::Phase { host, phase } => {
                self.set(host, phase.to_string());
                // Past the barrier, every host is prepared.
                if matches!(phase, Phase::RunOnce | Phase::Switch) {
                    let n = self.total;
                    self.fleet_line(|f| f.1 = n);
                }
            }
            Event::StepStarted { host, step } => self.set_step(host, step),
            Event::Prepared { .. } => self.fleet_line(|f| f.1 += 1),
            Event::Line { host, line, .. } if self.verbosity == Verbosity::Verbose => {
                let _ = self.multi.println(format!("[{host}] | {line}"));
            }
            Event::HostFailed { host, failure } => {
                self.set(host, format!("FAILED at {}", failure.phase));
                for l in self.said.lines(host, failure) {
                    let _ = self.multi.println(&l);
                    if let Ok(mut f) = self.failures.lock() {
                        f.push(l);
                    }
                }
            }
            Event::Switched { host, .. } => {
                self.set(host, "switched".into());
                self.fleet_line(|f| f.2 += 1);
            }
            Event::Waiting { host, message } => {
                self.set(host, "waiting for the lock".into());
                let _ = self.multi.println(format!("[{host}] {message}"));
            }
            Event::Interrupted { message } => {
                let _ = self.multi.println(format!("interrupted: {message}"));
            }
            Event::HostWarning { host, failure } => {
                for l in failure_lines(host, failure) {
                    let _ = self.multi.println(format!("warning: {l}"));
                }
            }
            Event::Observing {
                hosts,
                for_ms,
                checked,
                wave,
                waves,
            } => {
                for h in hosts {
                    self.set(h, "canary: observing".into());
                }
                let _ =
                    self.multi
                        .println(observing_line(hosts, *for_ms, checked, (*wave, *waves)));
            }
            Event::Finished { .. } => self.finish(),
            _ => {}
        }
    }
}

/// Remembers where each host stands, for a second Ctrl-C that exits at once: what was each
/// host doing when ship gave up on it. Passes every event on.
pub struct Board {
    inner: Arc<dyn Reporter>,
    states: Mutex<Vec<(String, String)>>,
    /// Each host's place in `states` (a scan per event was quadratic in the fleet).
    index: HashMap<String, usize>,
}

impl Board {
    pub fn new(hosts: &[String], inner: Arc<dyn Reporter>) -> Self {
        Board {
            inner,
            index: hosts
                .iter()
                .enumerate()
                .map(|(i, h)| (h.clone(), i))
                .collect(),
            states: Mutex::new(
                hosts
                    .iter()
                    .map(|h| (h.clone(), "not started".to_owned()))
                    .collect(),
            ),
        }
    }

    fn set(&self, host: &str, state: String) {
        if let Some(&i) = self.index.get(host)
            && let Ok(mut v) = self.states.lock()
            && let Some(slot) = v.get_mut(i)
        {
            slot.1 = state;
        }
    }

    /// One line per host: its last known state.
    pub fn snapshot(&self) -> Vec<String> {
        self.states
            .lock()
            .map(|v| v.iter().map(|(h, s)| format!("  {h}: {s}")).collect())
            .unwrap_or_default()
    }
}

impl Reporter for Board {
    fn report(&self, event: &Event) {
        match event {
            Event::Phase { host, phase } => self.set(host, format!("in {phase}")),
            Event::StepStarted { host, step } => self.set(host, format!("in step: {step}")),
            Event::HostFailed { host, failure } => self.set(
                host,
                format!("failed at {}: {}", failure.phase, failure.message),
            ),
            Event::Switched { host, .. } => self.set(host, "switched to the new release".into()),
            Event::Waiting { host, .. } => self.set(host, "waiting for the lock".into()),
            _ => {}
        }
        self.inner.report(event);
    }
}

/// The names of the summary's hosts for which `f` holds.
fn hosts_where(s: &Summary, f: impl Fn(&crate::report::HostSummary) -> bool) -> Vec<&str> {
    s.hosts
        .iter()
        .filter(|h| f(h))
        .map(|h| h.host.as_str())
        .collect()
}

/// How a finished step is said in plain lines: a step ship stopped (another host failed, or an
/// interruption) is `cancelled`, not `FAILED`.
fn step_word(ok: bool, cancelled: bool) -> &'static str {
    match (ok, cancelled) {
        (true, _) => "ok",
        (false, true) => "cancelled",
        (false, false) => "FAILED",
    }
}

/// The line that says what a run does: `deploying <id> (<revision>) to <stage>: N host(s)`, or
/// for a rollback `rolling <stage> back to <id> (<revision>)`, without made-up parts when the
/// target is not known.
fn started_line(kind: &str, stage: &str, release: &str, revision: &str, n: usize) -> String {
    let rev = if revision.is_empty() {
        String::new()
    } else {
        format!(" ({revision})")
    };
    match (kind, release) {
        ("rollback", "") => format!("rolling {stage} back: {n} host(s); the target is not known"),
        ("rollback", _) => format!("rolling {stage} back to {release}{rev}: {n} host(s)"),
        _ => format!("deploying {release}{rev} to {stage}: {n} host(s)"),
    }
}

fn observing_line(
    hosts: &[String],
    for_ms: u64,
    checked: &[String],
    wave: (usize, usize),
) -> String {
    let passed = if checked.is_empty() {
        "switched (no health check or after-switch step configured: nothing checked it)".to_owned()
    } else {
        format!("switched and passed its {}", checked.join(" and "))
    };
    let hold = human_duration(Duration::from_millis(for_ms));
    match wave {
        (_, n) if n <= 2 => format!(
            "canary {} {passed}; observing for {hold} before the rest of the fleet switches \
             (Ctrl-C switches the canary back)",
            hosts.join(", ")
        ),
        (w, n) => format!(
            "wave {w} of {n} ({}) {passed}; observing for {hold} before wave {} switches \
             (Ctrl-C switches every switched host back)",
            hosts.join(", "),
            w + 1
        ),
    }
}

/// The width of a column of host names (at least the header `host`).
pub fn column_width<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    names.map(str::len).max().unwrap_or(4).max(4)
}

/// The human summary printed at the end of a deploy.
pub fn summary_text(s: &Summary) -> String {
    let mut out = String::new();
    let total = s.hosts.len();
    let switched = s
        .hosts
        .iter()
        .filter(|h| h.result == HostResult::Switched)
        .count();
    let what = if s.kind == "rollback" {
        "rollback"
    } else {
        "deploy"
    };
    let verify_failed = s
        .hosts
        .iter()
        .any(|h| h.failure.as_ref().is_some_and(|f| f.phase == Phase::Verify));
    let headline = match s.outcome {
        Outcome::Deployed if s.kind == "rollback" && s.forward => format!(
            "switched {} forward to {}: {switched}/{total} hosts switched (a newer release: \
             nothing was marked bad)",
            s.stage, s.release
        ),
        Outcome::Deployed if s.kind == "rollback" => format!(
            "rolled {} back to {}: {switched}/{total} hosts switched",
            s.stage, s.release
        ),
        Outcome::Deployed => format!(
            "deployed {} to {}: {switched}/{total} hosts switched",
            s.release, s.stage
        ),
        Outcome::RolledBack if verify_failed && !s.canary.is_empty() => format!(
            "{what} of {} to {} failed its checks; every switched host was switched back: \
             the fleet is unchanged",
            s.release, s.stage
        ),
        Outcome::RolledBack if verify_failed => format!(
            "{what} of {} to {} failed its checks after the switch; the whole fleet was switched \
             back to the previous release, and {} is kept, marked bad",
            s.release, s.stage, s.release
        ),
        Outcome::Aborted => format!(
            "{what} of {} to {} aborted: no host was switched; the fleet is unchanged",
            s.release, s.stage
        ),
        Outcome::RolledBack => format!(
            "{what} of {} to {} failed during the switch; every switched host was switched back: \
             the fleet is unchanged",
            s.release, s.stage
        ),
        Outcome::NothingToDo => format!(
            "every host of {} is already on {}; nothing to {}",
            s.stage,
            s.release,
            if s.kind == "rollback" {
                "roll back"
            } else {
                "deploy"
            }
        ),
        Outcome::Mixed => format!(
            "{what} of {} to {} NEEDS ATTENTION: some hosts switched or may have, and could not be \
             switched back; see below",
            s.release, s.stage
        ),
    };
    out.push_str(&headline);
    out.push('\n');
    out.push_str(&format!("  revision {}\n", s.revision));
    let width = column_width(s.hosts.iter().map(|h| h.host.as_str()));
    let first_switch = s
        .hosts
        .iter()
        .filter_map(|h| h.switched_at_controller_ns())
        .min();
    out.push_str(&format!(
        "  {:<width$}  {:<9}  {:<16}  {:>8}  {:>10}\n",
        "host", "result", "current", "prepare", "switched"
    ));
    for h in &s.hosts {
        let result = match h.result {
            HostResult::Switched => "switched",
            HostResult::Reverted => "reverted",
            HostResult::Unchanged if h.cancelled => "cancelled",
            HostResult::Unchanged if h.left_out => "left out",
            HostResult::Unchanged => "unchanged",
            HostResult::Unknown => "UNKNOWN",
        };
        // `-` would read as "no release": a host that could not be read says so.
        let current = match (&h.current, h.result) {
            (Some(c), _) => c.as_str(),
            (None, HostResult::Unknown) => "? (unknown)",
            (None, _)
                if h.failure
                    .as_ref()
                    .is_some_and(|f| f.phase == Phase::Connect) =>
            {
                "? (not read)"
            }
            (None, _) => "- (none)",
        };
        let prepare = h
            .prepare_ms
            .map(|ms| human_duration(Duration::from_millis(ms)))
            .unwrap_or_else(|| "-".into());
        let switched = match (h.switched_at_controller_ns(), first_switch) {
            (Some(t), Some(t0)) => format!("+{:.2}ms", (t - t0) as f64 / 1e6),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "  {:<width$}  {:<9}  {:<16}  {:>8}  {:>10}\n",
            h.host, result, current, prepare, switched
        ));
    }
    if s.waves.len() > 1 {
        let waves: Vec<String> = s
            .waves
            .iter()
            .map(|w| match w.flip_skew_ms {
                Some(k) => format!("{} ({k:.2} ms)", w.hosts.join(", ")),
                None => w.hosts.join(", "),
            })
            .collect();
        out.push_str(&format!("  waves: {}\n", waves.join(" → ")));
    }
    if let Some(skew) = s.flip_skew_ms {
        let per = if s.waves.len() > 1 {
            " (the largest of the waves')"
        } else {
            ""
        };
        out.push_str(&format!(
            "  flip skew {skew:.2} ms{per} {}\n",
            skew_basis(s)
        ));
    }
    let phases: Vec<String> = s
        .phases
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p.phase,
                human_duration(Duration::from_millis(p.ms))
            )
        })
        .collect();
    out.push_str(&format!(
        "  took {} ({})\n",
        human_duration(Duration::from_millis(s.elapsed_ms)),
        phases.join(", ")
    ));
    // A fleet-wide cause (a held lock, a missing rollback target) is said once, with its hosts.
    let mut causes: Vec<(String, &str, Vec<&str>)> = Vec::new();
    for h in &s.hosts {
        if let Some(f) = &h.failure {
            let at = place(f);
            match causes
                .iter_mut()
                .find(|(p, m, _)| *p == at && *m == f.message)
            {
                Some((_, _, hosts)) => hosts.push(&h.host),
                None => causes.push((at, &f.message, vec![&h.host])),
            }
        }
    }
    for (at, message, hosts) in &causes {
        let who = if hosts.len() == total && total > 1 {
            format!("all {total} hosts")
        } else {
            hosts.join(", ")
        };
        out.push_str(&format!("  {who}: failed at {at}: {message}\n"));
    }
    for h in &s.hosts {
        for w in &h.warnings {
            out.push_str(&format!(
                "  {}: warning at {}: {}\n",
                h.host,
                place(w),
                w.message
            ));
        }
        if let Some(r) = &h.remedy {
            out.push_str(&format!(
                "  {}: could not be switched back; run this on the host: {r}\n",
                h.host
            ));
        }
    }
    let left = hosts_where(s, |h| h.left_out);
    if !left.is_empty() {
        out.push_str(&format!(
            "  left out, unreachable (within max_unreachable): {}; each stays on its release, and \
             the next deploy brings it along\n",
            left.join(", ")
        ));
    }
    let reused = hosts_where(s, |h| h.reused);
    if !reused.is_empty() {
        out.push_str(&format!(
            "  took up the release a failed deploy of this build left prepared, built nothing: \
             {}\n",
            reused.join(", ")
        ));
    }
    let kept = hosts_where(s, |h| h.kept_prepared);
    if !kept.is_empty() {
        out.push_str(&format!(
            "  kept {} prepared, whole, on: {}; a deploy of the same build takes it up there \
             without building (--rebuild to build afresh)\n",
            s.release,
            kept.join(", ")
        ));
    }
    if !s.untouched.is_empty() {
        out.push_str(&format!(
            "  not selected by --hosts/--roles, untouched: {}\n",
            s.untouched.join(", ")
        ));
    }
    let left = hosts_where(s, |h| h.lock_left);
    if !left.is_empty() {
        out.push_str(&format!(
            "  {}: still locked (and may keep the staged release): once reachable, \
             `ship status {stage}` shows them and `ship lock release {stage}` removes them\n",
            left.join(", "),
            stage = s.stage
        ));
    }
    out
}

/// Escape a GitHub Actions workflow-command message.
fn gh_escape(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escape a GitHub Actions workflow-command property (`title=`).
fn gh_escape_property(s: &str) -> String {
    gh_escape(s).replace(':', "%3A").replace(',', "%2C")
}

/// Under GitHub Actions: every failure and warning as an annotation (`::error`/`::warning`
/// lines for stdout), so they show on the run's page.
pub fn github_annotations(s: &Summary) -> String {
    let mut out = String::new();
    for h in &s.hosts {
        let items = h
            .failure
            .iter()
            .map(|f| ("error", f))
            .chain(h.warnings.iter().map(|w| ("warning", w)));
        for (level, f) in items {
            let title = format!("ship {}: {} {level} at {}", s.stage, h.host, place(f));
            let mut msg = f.message.clone();
            if !f.output_tail.is_empty() {
                msg.push('\n');
                msg.push_str(&f.output_tail.join("\n"));
            }
            out.push_str(&format!(
                "::{level} title={}::{}\n",
                gh_escape_property(&title),
                gh_escape(&msg)
            ));
        }
    }
    out
}

/// The summary as Markdown, for GitHub Actions' job summary (`$GITHUB_STEP_SUMMARY`).
pub fn markdown_summary(s: &Summary) -> String {
    let text = summary_text(s);
    let headline = text.lines().next().unwrap_or_default();
    let mut out = format!("### {headline}\n\n");
    out.push_str(&format!("revision `{}`\n\n", s.revision));
    out.push_str("| host | result | current | prepare | switched |\n|---|---|---|---|---|\n");
    let first = s
        .hosts
        .iter()
        .filter_map(|h| h.switched_at_controller_ns())
        .min();
    for h in &s.hosts {
        let result = match h.result {
            HostResult::Switched => "switched",
            HostResult::Reverted => "reverted",
            HostResult::Unchanged => "unchanged",
            HostResult::Unknown => "**UNKNOWN**",
        };
        let switched = match (h.switched_at_controller_ns(), first) {
            (Some(t), Some(t0)) => format!("+{:.2}ms", (t - t0) as f64 / 1e6),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "| {} | {result} | {} | {} | {switched} |\n",
            h.host,
            h.current.as_deref().unwrap_or("-"),
            h.prepare_ms
                .map(|ms| human_duration(Duration::from_millis(ms)))
                .unwrap_or_else(|| "-".into()),
        ));
    }
    if let Some(skew) = s.flip_skew_ms {
        out.push_str(&format!("\nflip skew **{skew:.2} ms** {}\n", skew_basis(s)));
    }
    for h in &s.hosts {
        if let Some(f) = &h.failure {
            out.push_str(&format!(
                "\n**{}** failed at {}: {}\n",
                h.host,
                place(f),
                f.message
            ));
            if !f.output_tail.is_empty() {
                out.push_str(&format!("```\n{}\n```\n", f.output_tail.join("\n")));
            }
        }
    }
    out
}

/// What the flip skew was measured on, for the line that shows it.
fn skew_basis(s: &Summary) -> String {
    match s.clock_error_ms {
        Some(e) => format!(
            "(spread of the hosts' switch instants on this machine's clock, each within \
             ±{e:.2} ms)"
        ),
        None => "(spread of the hosts' switch instants, by their clocks)".to_owned(),
    }
}

#[cfg(test)]
#[path = "output_tests.rs"]
mod tests;
