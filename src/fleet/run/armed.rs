//! The armed switch on each host: started at the end of its prepare, waiting for its word,
//! answering clock questions meanwhile, and told one instant on its own clock.

use super::*;

/// The host's clock after its rename: the first line of the switch's output that is neither the
/// ready line nor a clock answer, from `date +%s%N` (BusyBox prints a literal `%N`: seconds
/// precision then).
pub(super) fn switch_stamp(stdout: &str) -> Option<u128> {
    let line = stdout
        .lines()
        .map(str::trim)
        .find(|l| !l.starts_with(remote::SWITCH_READY) && !l.starts_with("t "))?;
    if let Ok(ns) = line.parse::<u128>() {
        return Some(ns);
    }
    let secs = line.strip_suffix("%N").or_else(|| line.strip_suffix('N'))?;
    secs.parse::<u128>().ok().map(|s| s * 1_000_000_000)
}

/// A host whose switch command waits for its word.
pub(super) struct Armed {
    pub(super) process: Process,
    /// Its stdout lines as they arrive, each with the controller's clock then (µs).
    pub(super) lines: tokio::sync::mpsc::UnboundedReceiver<(String, i64)>,
    /// It can be given an instant (`at`), not only `go`.
    pub(super) scheduled: bool,
    /// Its answers to our clock questions.
    pub(super) samples: Vec<clock::Sample>,
}

impl Armed {
    /// Its clock against ours, from its answers (none: it is not scheduled).
    pub(super) fn clock(&self) -> Option<clock::Offset> {
        clock::estimate(&self.samples)
    }

    /// Tell the host not to switch (end of input), and wait up to `t` for its command to end.
    pub(super) async fn disarm(mut self, t: Duration) {
        let _ = self.process.close_stdin().await;
        let _ = tokio::time::timeout(t, self.process.wait()).await;
    }

    /// The next stdout line that satisfies `want`, with when it arrived.
    pub(super) async fn line(
        &mut self,
        want: impl Fn(&str) -> bool,
    ) -> Result<(String, i64), TransportError> {
        while let Some((line, at)) = self.lines.recv().await {
            if want(&line) {
                return Ok((line, at));
            }
        }
        Err(TransportError::Lost(
            "the switch command ended before it answered".into(),
        ))
    }

    /// Ask the host for its clock `n` times (holding a permit of `turn`, if given, meanwhile),
    /// adding to its answers; all of it given up after `t`.
    pub(super) async fn ask_clock_times(
        &mut self,
        n: usize,
        turn: Option<&Semaphore>,
        t: Duration,
    ) -> Result<(), TransportError> {
        let ask = async {
            let _permit = match turn {
                Some(s) => s.acquire().await.ok(),
                None => None,
            };
            for _ in 0..n {
                let sample = self.ask_clock().await?;
                self.samples.push(sample);
            }
            Ok(())
        };
        within(t, "reading the host's clock", ask).await
    }

    /// Give the word (`go`, or `at …`) and end the input.
    pub(super) async fn tell(&mut self, word: &str) -> Result<(), TransportError> {
        self.process.write(format!("{word}\n").as_bytes()).await?;
        self.process.close_stdin().await
    }

    /// Forget answers older than `fresh` at `now` (µs).
    pub(super) fn keep_fresh(&mut self, now: i64, fresh: Duration) {
        let oldest = now - fresh.as_micros() as i64;
        self.samples.retain(|s| s.received >= oldest);
    }

    /// Ask the host for its clock once.
    pub(super) async fn ask_clock(&mut self) -> Result<clock::Sample, TransportError> {
        let sent = clock::now_us();
        self.process.write(b"t\n").await?;
        let (line, received) = self.line(|l| l.starts_with("t ")).await?;
        let host = line[2..].trim().parse::<i64>().map_err(|_| {
            TransportError::Other(format!(
                "the switch command answered {line:?} for its clock"
            ))
        })?;
        Ok(clock::Sample {
            sent,
            host,
            received,
        })
    }
}

/// Ask every armed host that can be scheduled for its clock as many times as `n` says for it
/// (holding a permit of `turn`, if given, meanwhile), adding to its answers so far.
/// Nothing is asked once any host failed: the switch will not happen.
pub(super) async fn ask_clocks(
    ids: &[usize],
    hosts: &[HostRun],
    armed: Vec<Result<Armed, TransportError>>,
    turn: Option<&Semaphore>,
    n: impl Fn(&Armed) -> usize,
) -> Vec<Result<Armed, TransportError>> {
    // One host has no one to switch together with.
    if ids.len() < 2 || armed.iter().any(|a| a.is_err()) {
        return armed;
    }
    join_all(ids.iter().zip(armed).map(|(&i, a)| {
        let t = hosts[i].host.config.timeouts.switch;
        let n = &n;
        async move {
            let mut a = a?;
            let n = n(&a);
            if !a.scheduled || n == 0 {
                return Ok(a);
            }
            a.ask_clock_times(n, turn, t).await?;
            Ok(a)
        }
    }))
    .await
}

/// Start the switch command on the host and wait until it is ready for its word.
pub(super) async fn arm(h: &HostRun, ctx: &RunCtx) -> Result<Armed, TransportError> {
    let conn = h.connection()?;
    let script = remote::armed_switch(&h.host.config.deploy_to, &ctx.release);
    let t = h.host.config.timeouts.switch;
    let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
    let on_line: OnLine = Arc::new(move |stream, line: &str| {
        if stream == Stream::Stdout {
            let _ = tx.send((line.trim().to_owned(), clock::now_us()));
        }
    });
    within(t, "arming the switch", async {
        let p = conn
            .spawn(Purpose::changes("switch", "switch"), &script, Some(on_line))
            .await?;
        let mut a = Armed {
            process: p,
            lines,
            scheduled: false,
            samples: Vec::new(),
        };
        let (ready, _) = a.line(|l| l.starts_with(remote::SWITCH_READY)).await?;
        a.scheduled = ready == remote::SWITCH_READY_AT;
        Ok(a)
    })
    .await
}

/// Tell armed hosts among `ids` not to switch (end of input), and wait for their switch
/// commands to end: the switch is not going to happen there, and their sessions are needed.
pub(super) async fn disarm(ids: &[usize], hosts: &mut [HostRun]) {
    let armed: Vec<(Armed, Duration)> = ids
        .iter()
        .filter_map(|&i| {
            let t = hosts[i].host.config.timeouts.switch;
            hosts[i].armed.take().map(|a| (a, t))
        })
        .collect();
    join_all(armed.into_iter().map(|(a, t)| a.disarm(t))).await;
}

/// Clock questions per host before a scheduled switch, asked of a few hosts at a time (short
/// round trips, so small error bounds)...
pub(super) const CLOCK_QUESTIONS: usize = 3;
pub(super) const CLOCK_CONCURRENCY: usize = 8;
/// How often a host armed early is asked for its clock while it waits for the rest, in a
/// fleet of up to `CLOCK_RATE / 2` hosts.
pub(super) const CLOCK_PERIOD: Duration = Duration::from_millis(500);
/// The most clock questions a second asked of the whole fleet while it waits: each costs the
/// host's sshd and the controller a little CPU, and 1,000 hosts asked twice a second took a
/// fifth of the controller's CPU in a deploy.
pub(super) const CLOCK_RATE: u32 = 500;
/// Answers older than this are not used for the switch (in a fleet of up to `CLOCK_RATE / 2`
/// hosts): clocks drift apart (by a few µs per second between NTP-disciplined hosts, by up to
/// 0.5 ms per second while NTP slews one).
pub(super) const CLOCK_FRESH: Duration = Duration::from_secs(2);

/// How often each of `hosts` armed early is asked for its clock: [`CLOCK_PERIOD`], or less
/// often so the fleet is asked at most [`CLOCK_RATE`] times a second.
pub(super) fn clock_period(hosts: usize) -> Duration {
    CLOCK_PERIOD.max(Duration::from_secs(1) * hosts as u32 / CLOCK_RATE)
}

/// How old an answer may be and still be used for the switch: [`CLOCK_FRESH`], or two and a
/// half periods where the period is longer (5 s at 1,000 hosts: up to 2.5 ms of drift while NTP
/// slews a clock at its fastest, a few µs otherwise).
pub(super) fn clock_fresh(hosts: usize) -> Duration {
    CLOCK_FRESH.max(clock_period(hosts) * 5 / 2)
}

/// After its rename, a scheduled host waits this long per scheduled host before it reports, at
/// most `SETTLE_MOST` (see [`remote::armed_switch`]): its report, and the end of its command,
/// would compete for the CPU with the renames of hosts that share it (a fleet of test hosts on
/// one machine; 1,000 processes woken at one instant on 2 cores need 20–40 ms to run, and
/// their exits took as long again when they came in between).
pub(super) const SETTLE_PER_HOST: Duration = Duration::from_micros(200);
pub(super) const SETTLE_MOST: Duration = Duration::from_millis(500);
/// The switch is scheduled at least this far ahead, and at most this far.
pub(super) const LEAD_FLOOR: Duration = Duration::from_millis(3);
pub(super) const LEAD_CEILING: Duration = Duration::from_millis(250);
