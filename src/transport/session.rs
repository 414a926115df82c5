//! One long-lived shell per host: the commands of a whole deploy go through it.
//!
//! Opening an SSH channel for every command costs a round trip, a process forked by sshd and
//! a start of the user's login shell (with its rc files: 150 ms of CPU on a host whose
//! `.bashrc` starts pyenv). A session pays that once: one channel runs `sh -s`, a small driver
//! is written to it, and then each command is one line on its stdin, `ship_<mode> <id>
//! '<script>'`. The driver runs the script in a subshell and prints an end marker with the exit
//! status on stdout and on stderr (both streams are complete once both markers arrived):
//!
//! ```text
//! <token> <id> <status>\n
//! ```
//!
//! The token is random per session, so no output can fake a marker; it is found wherever it
//! starts (output need not end with a newline). Modes:
//!
//! - `q` (quick): stdin is `/dev/null`.
//! - `i` (line input): the script reads lines the controller writes (the armed switch waits
//!   for its word this way).
//! - stoppable: the script [`supervised`], run with line input, as a step in a channel of its
//!   own is: it runs in a process group of its own, and a watcher reads the session's stdin
//!   while it runs: a `stop` line (timeout, Ctrl-C) or end-of-file (the controller died and
//!   took the connection with it) sends SIGTERM to the group, then SIGKILL 5 s later. The
//!   session stays usable after a stop.
//!
//! While a command runs, the controller writes nothing the command has not shown it waits for:
//! the shell reads its input in blocks, so a line sent together with the command line would be
//! taken by the shell, not by the command. A line-input command prints a ready line first; a
//! stop is repeated until the step ends (a repeated or late `stop` is a no-op for the shell).
//! A session that cannot be used any more (a command timed out, a process was abandoned) is
//! set aside and the connection falls back to a channel per command; so does a command that
//! needs its own channel (a binary payload on stdin, agent forwarding) or that comes while the
//! session is busy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, OwnedMutexGuard, mpsc, oneshot};

use super::{Collector, OnLine, Output, Stream, TransportError};
use crate::remote::{session_command, session_driver as driver, supervised};

/// How the session runs a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Stdin is `/dev/null`.
    Quick,
    /// Stoppable with [`SessionProcess::stop`] and stopped when the session's stdin closes.
    Stoppable,
    /// The command reads lines written with [`SessionProcess::write`].
    LineInput,
}

impl Mode {
    /// The line that runs `script` as command `id` in this mode.
    fn line(self, id: u64, script: &str) -> String {
        match self {
            Mode::Quick => session_command(id, script, false),
            Mode::LineInput => session_command(id, script, true),
            Mode::Stoppable => Mode::LineInput.line(id, &supervised(script)),
        }
    }
}

/// Where the session's stdin goes.
pub(crate) enum Input {
    Ssh(russh::ChannelWriteHalf<russh::client::Msg>),
    /// A local `sh -s` (the driver's tests run it under each shell it supports).
    #[cfg(test)]
    Local(tokio::process::ChildStdin),
}

impl Input {
    async fn write(&mut self, data: &[u8]) -> Result<(), TransportError> {
        match self {
            Input::Ssh(w) => w
                .data(data)
                .await
                .map_err(|e| TransportError::Lost(format!("the session's channel failed: {e}"))),
            #[cfg(test)]
            Input::Local(w) => {
                use tokio::io::AsyncWriteExt;
                w.write_all(data)
                    .await
                    .map_err(|e| TransportError::Lost(format!("the session's shell is gone: {e}")))
            }
        }
    }
}

/// What the reader of the session's channel or process passes on.
#[derive(Debug)]
pub(crate) enum Raw {
    Data(Stream, Vec<u8>),
    /// The session's shell ended or its channel closed.
    Closed,
}

/// What a stream of the session carries: a command's output, or its end.
#[derive(Debug, PartialEq, Eq)]
enum Item {
    Bytes(Vec<u8>),
    End(u64, u32),
}

/// Finds end markers in one output stream. Trailing bytes that could be the start of a marker
/// (a prefix of it: the token starts with `@ship-`, which ends no ordinary line) are held back
/// until the next chunk shows what they are.
#[derive(Default)]
struct Scanner {
    pending: Vec<u8>,
}

impl Scanner {
    fn feed(&mut self, data: &[u8], needle: &[u8], items: &mut Vec<Item>) {
        self.pending.extend_from_slice(data);
        loop {
            let Some(p) = find(&self.pending, needle) else {
                let keep = (1..needle.len().min(self.pending.len() + 1))
                    .rev()
                    .find(|&k| self.pending.ends_with(&needle[..k]))
                    .unwrap_or(0);
                if self.pending.len() > keep {
                    let out: Vec<u8> = self.pending.drain(..self.pending.len() - keep).collect();
                    items.push(Item::Bytes(out));
                }
                return;
            };
            if p > 0 {
                items.push(Item::Bytes(self.pending.drain(..p).collect()));
            }
            let rest = &self.pending[needle.len()..];
            let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
                return; // the marker's line is not complete yet
            };
            let line = String::from_utf8_lossy(&rest[..nl]).into_owned();
            self.pending.drain(..needle.len() + nl + 1);
            let mut words = line.split_whitespace();
            if let (Some(Ok(id)), Some(Ok(status))) = (
                words.next().map(str::parse::<u64>),
                words.next().map(str::parse::<u32>),
            ) {
                items.push(Item::End(id, status));
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The command the session is running, fed by the reader as its output arrives.
struct Current {
    id: u64,
    collector: Collector,
    ends: [Option<u32>; 2],
    done: oneshot::Sender<Result<Output, TransportError>>,
}

#[derive(Default)]
struct Shared {
    current: Option<Current>,
    /// The shell ended or its channel closed.
    closed: bool,
}

/// A shell running on the host for the life of the connection.
pub struct Session {
    input: Mutex<Input>,
    shared: Arc<std::sync::Mutex<Shared>>,
    /// Held by the running command.
    busy: Arc<Mutex<()>>,
    next_id: AtomicU64,
    /// Set aside: a command was abandoned or timed out, so what the shell does next is unknown.
    broken: AtomicBool,
}

fn lost() -> TransportError {
    TransportError::Lost(
        "the connection's shell ended (the connection dropped or the host stopped answering \
         keepalives)"
            .into(),
    )
}

/// Read the session's output: pass each command's output to it as it arrives (its line
/// callback runs live), and finish it when its end marker has come on both streams.
async fn read(
    mut raw: mpsc::UnboundedReceiver<Raw>,
    shared: Arc<std::sync::Mutex<Shared>>,
    needle: Vec<u8>,
) {
    let mut scanners = [Scanner::default(), Scanner::default()];
    // The driver's start marker was seen on each stream: what came before it (a login
    // script's chatter) is no command's output.
    let mut ready = [false, false];
    while let Some(Raw::Data(stream, data)) = raw.recv().await {
        let k = stream as usize;
        let mut items = Vec::new();
        scanners[k].feed(&data, &needle, &mut items);
        let Ok(mut sh) = shared.lock() else { return };
        for item in items {
            match (item, sh.current.as_mut()) {
                (Item::End(0, _), _) => ready[k] = true,
                (Item::End(id, status), Some(c)) if c.id == id && ready[k] => {
                    c.ends[k] = Some(status)
                }
                (Item::Bytes(b), Some(c)) if ready[k] && c.ends[k].is_none() => {
                    c.collector.push(stream, &b)
                }
                _ => {}
            }
        }
        if sh
            .current
            .as_ref()
            .is_some_and(|c| c.ends.iter().all(Option::is_some))
        {
            if let Some(c) = sh.current.take() {
                let output = c.collector.finish(c.ends[0], None);
                let _ = c.done.send(Ok(output));
            }
        }
    }
    if let Ok(mut sh) = shared.lock() {
        sh.closed = true;
        if let Some(c) = sh.current.take() {
            let _ = c.done.send(Err(lost()));
        }
    }
}

impl Session {
    /// Start the driver on a shell that reads commands from its stdin (`sh -s`), whose output
    /// arrives on `raw`. Nothing is waited for: the first command's answer follows the
    /// driver's start marker.
    pub(crate) async fn start(
        mut input: Input,
        raw: mpsc::UnboundedReceiver<Raw>,
    ) -> Result<Arc<Session>, TransportError> {
        let token = format!("@ship-{:016x}", random_u64());
        input.write(driver(&token).as_bytes()).await?;
        let shared = Arc::new(std::sync::Mutex::new(Shared::default()));
        tokio::spawn(read(raw, shared.clone(), format!("{token} ").into_bytes()));
        Ok(Arc::new(Session {
            input: Mutex::new(input),
            shared,
            busy: Arc::new(Mutex::new(())),
            next_id: AtomicU64::new(1),
            broken: AtomicBool::new(false),
        }))
    }

    /// Whether commands can go through this session.
    pub fn usable(&self) -> bool {
        !self.broken.load(Ordering::SeqCst) && self.shared.lock().is_ok_and(|s| !s.closed)
    }

    /// Start `script`, or `None` when the session is busy with another command or set aside
    /// (the caller then uses a channel of its own).
    pub async fn try_start(
        self: &Arc<Self>,
        script: &str,
        mode: Mode,
        on_line: Option<OnLine>,
    ) -> Option<Result<SessionProcess, TransportError>> {
        if !self.usable() {
            return None;
        }
        let busy = self.busy.clone().try_lock_owned().ok()?;
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        {
            let mut sh = self.shared.lock().ok()?;
            if sh.closed {
                return None;
            }
            sh.current = Some(Current {
                id,
                collector: Collector::new(on_line),
                ends: [None, None],
                done: tx,
            });
        }
        let mut process = SessionProcess {
            session: self.clone(),
            busy: Some(busy),
            done: rx,
            closed: false,
            result: None,
        };
        let line = mode.line(id, script);
        if let Err(e) = self.write(line.as_bytes()).await {
            process.result = Some(Err(e.clone()));
            self.broken.store(true, Ordering::SeqCst);
            return Some(Err(e));
        }
        Some(Ok(process))
    }

    async fn write(&self, data: &[u8]) -> Result<(), TransportError> {
        self.input.lock().await.write(data).await
    }
}

/// A command running in a session. It holds the session until it has ended; dropped before
/// that, it sets the session aside.
pub struct SessionProcess {
    session: Arc<Session>,
    busy: Option<OwnedMutexGuard<()>>,
    done: oneshot::Receiver<Result<Output, TransportError>>,
    /// The end of input was sent.
    closed: bool,
    result: Option<Result<Output, TransportError>>,
}

impl SessionProcess {
    /// Send lines to a [`Mode::LineInput`] command, once it has shown it reads them.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), TransportError> {
        self.session.write(data).await
    }

    /// A line reader's end of input: an empty line (the session's stdin itself stays open for
    /// the next command), once. A command that reads several lines (the armed switch's clock
    /// questions) sees it however many it was sent; one that read its last line already
    /// leaves it to the shell, for which an empty line is nothing.
    pub async fn close_stdin(&mut self) -> Result<(), TransportError> {
        if self.closed || self.result.is_some() {
            return Ok(());
        }
        self.closed = true;
        self.session.write(b"\n").await
    }

    /// Stop a [`Mode::Stoppable`] command (its process group gets SIGTERM, then SIGKILL 5 s
    /// later) and wait up to `grace` for its end. The word is repeated every second: one sent
    /// right after the command line may have been read by the shell with it.
    pub async fn stop(&mut self, grace: Duration) -> Result<Output, TransportError> {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            if self.result.is_none() {
                self.session.write(b"stop\n").await?;
            }
            let next = (tokio::time::Instant::now() + Duration::from_secs(1)).min(deadline);
            if let Ok(r) = tokio::time::timeout_at(next, self.wait()).await {
                return r;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(TransportError::Timeout {
                    after: grace,
                    what: "waiting for the stopped step to end",
                });
            }
        }
    }

    /// Wait for the command's end. Safe to abandon and call again.
    pub async fn wait(&mut self) -> Result<Output, TransportError> {
        if let Some(r) = &self.result {
            return r.clone();
        }
        let r = (&mut self.done).await.unwrap_or_else(|_| Err(lost()));
        if r.is_err() {
            self.session.broken.store(true, Ordering::SeqCst);
        }
        // The session is free again: this command's end was read on both streams.
        self.busy = None;
        self.result = Some(r.clone());
        r
    }
}

impl Drop for SessionProcess {
    fn drop(&mut self) {
        if self.result.is_none() {
            self.session.broken.store(true, Ordering::SeqCst);
        }
    }
}

/// A random value for the session's marker (not secret: it only has to be unguessable by the
/// output of commands that were written before it existed).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::quote;
    use std::process::Stdio;
    use std::time::Instant;

    use tokio::io::AsyncReadExt;

    /// The shells the driver must work under: every one must be here (`scripts/test.sh`
    /// installs them); a missing one fails the test rather than being skipped.
    fn shells() -> Vec<Vec<&'static str>> {
        let shells = vec![
            vec!["sh"],
            vec!["bash", "--posix"],
            vec!["dash"],
            vec!["busybox", "sh"],
        ];
        for s in &shells {
            assert!(
                std::process::Command::new(s[0])
                    .args(&s[1..])
                    .args(["-c", "true"])
                    .status()
                    .is_ok_and(|st| st.success()),
                "{} is needed for this test (scripts/test.sh installs it)",
                s[0]
            );
        }
        shells
    }

    /// A session on a local shell started as a login shell would be on a host: it prints some
    /// chatter on both streams first (rc files do), then reads the driver from stdin.
    async fn local(shell: &[&str]) -> (Arc<Session>, tokio::process::Child) {
        let mut child = tokio::process::Command::new(shell[0])
            .args(&shell[1..])
            .arg("-c")
            .arg(format!(
                "echo motd; echo rc noise >&2; exec {} -s",
                shell.join(" ")
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("shell starts");
        let (tx, rx) = mpsc::unbounded_channel();
        let mut out = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        tokio::spawn(async move {
            let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
            let (mut out_open, mut err_open) = (true, true);
            while out_open || err_open {
                tokio::select! {
                    n = out.read(&mut a), if out_open => match n {
                        Ok(n) if n > 0 => { let _ = tx.send(Raw::Data(Stream::Stdout, a[..n].to_vec())); }
                        _ => out_open = false,
                    },
                    n = err.read(&mut b), if err_open => match n {
                        Ok(n) if n > 0 => { let _ = tx.send(Raw::Data(Stream::Stderr, b[..n].to_vec())); }
                        _ => err_open = false,
                    },
                }
            }
            let _ = tx.send(Raw::Closed);
        });
        let input = Input::Local(child.stdin.take().expect("stdin"));
        (
            Session::start(input, rx).await.expect("driver written"),
            child,
        )
    }

    async fn run(s: &Arc<Session>, script: &str, mode: Mode) -> Output {
        let mut p = s
            .try_start(script, mode, None)
            .await
            .expect("the session is free")
            .expect("written");
        tokio::time::timeout(Duration::from_secs(10), p.wait())
            .await
            .expect("ends in time")
            .expect("ends")
    }

    /// The process has ended (a zombie waiting for its reaper counts), within 3 s.
    async fn gone(pid: &str) -> bool {
        for _ in 0..300 {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return true,
                Ok(stat)
                    if stat
                        .rsplit_once(") ")
                        .is_some_and(|(_, r)| r.starts_with('Z')) =>
                {
                    return true;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        false
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    #[tokio::test]
    async fn commands_run_one_after_another_with_their_own_output_status_and_state() {
        for shell in shells() {
            let (s, _child) = local(&shell).await;
            let o = run(&s, "echo out; echo err >&2; printf tail", Mode::Quick).await;
            assert_eq!(o.status, Some(0), "{shell:?}");
            assert_eq!(
                text(&o.stdout),
                "out\ntail",
                "{shell:?}: login chatter is not output"
            );
            let tail = text(&o.tail);
            assert!(
                tail.contains("err\n") && tail.contains("out\n") && !tail.contains("noise"),
                "{shell:?}: {tail}"
            );
            // Exit status, and nothing of one command's state leaks into the next.
            let o = run(&s, "cd /; X=1; set -e; false; echo never", Mode::Quick).await;
            assert_eq!(o.status, Some(1), "{shell:?}");
            let o = run(&s, "pwd; echo \"x=${X:-unset}\"; exit 7", Mode::Quick).await;
            assert_eq!(o.status, Some(7), "{shell:?}");
            assert_ne!(text(&o.stdout).lines().next(), Some("/"), "{shell:?}");
            assert!(text(&o.stdout).contains("x=unset"), "{shell:?}");
            // A script that does not parse fails alone; the session goes on.
            let o = run(&s, "if then fi ((", Mode::Quick).await;
            assert_ne!(o.status, Some(0), "{shell:?}");
            let o = run(&s, "cat; echo \"it's $((6 * 7))\"", Mode::Quick).await;
            assert_eq!(text(&o.stdout), "it's 42\n", "{shell:?}: stdin is empty");
            // Output that looks like a marker without the token is output.
            let o = run(&s, "printf '\\n@ship-0000 9 0\\n'", Mode::Quick).await;
            assert_eq!(text(&o.stdout), "\n@ship-0000 9 0\n", "{shell:?}");
        }
    }

    #[tokio::test]
    async fn a_stoppable_step_stops_with_its_children_and_the_session_goes_on() {
        for shell in shells() {
            let (s, _child) = local(&shell).await;
            let dir = tempfile::tempdir().expect("tempdir");
            let pid_file = dir.path().join("pid");
            let script = format!(
                "sleep 60 & echo $! > {}; wait",
                quote(&pid_file.display().to_string())
            );
            let mut p = s
                .try_start(&script, Mode::Stoppable, None)
                .await
                .expect("free")
                .expect("written");
            let t0 = Instant::now();
            while !pid_file.exists()
                || std::fs::read_to_string(&pid_file)
                    .unwrap_or_default()
                    .is_empty()
            {
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "{shell:?}: the step started"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(
                s.try_start("true", Mode::Quick, None).await.is_none(),
                "busy"
            );
            let o = p
                .stop(Duration::from_secs(5))
                .await
                .expect("stopped in time");
            assert_eq!(o.status, Some(143), "{shell:?}");
            let pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
            assert!(
                gone(pid.trim()).await,
                "{shell:?}: the step's child {pid} was stopped too"
            );
            let o = run(&s, "echo still here", Mode::Quick).await;
            assert_eq!(text(&o.stdout), "still here\n", "{shell:?}");
        }
    }

    #[tokio::test]
    async fn a_stoppable_step_ends_when_the_controller_goes_away() {
        for shell in shells() {
            let (s, mut child) = local(&shell).await;
            let dir = tempfile::tempdir().expect("tempdir");
            let done = dir.path().join("done");
            let script = format!("sleep 3; touch {}", quote(&done.display().to_string()));
            let p = s
                .try_start(&script, Mode::Stoppable, None)
                .await
                .expect("free")
                .expect("written");
            tokio::time::sleep(Duration::from_millis(300)).await;
            // The controller's end of stdin closes (a dead controller's connection does this).
            drop(p);
            drop(s);
            let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .expect("the shell ends")
                .expect("status");
            assert!(status.code().is_some(), "{shell:?}");
            tokio::time::sleep(Duration::from_secs(4)).await;
            assert!(
                !done.exists(),
                "{shell:?}: the step was stopped, not left to finish"
            );
        }
    }

    #[tokio::test]
    async fn a_stop_sent_with_the_command_line_still_stops_it() {
        for shell in shells() {
            let (s, _child) = local(&shell).await;
            let mut p = s
                .try_start("sleep 30", Mode::Stoppable, None)
                .await
                .expect("free")
                .expect("written");
            let t0 = Instant::now();
            let o = p.stop(Duration::from_secs(8)).await.expect("stopped");
            assert_eq!(o.status, Some(143), "{shell:?}");
            assert!(t0.elapsed() < Duration::from_secs(5), "{shell:?}");
            let o = run(&s, "echo next", Mode::Quick).await;
            assert_eq!(text(&o.stdout), "next\n", "{shell:?}");
        }
    }

    /// Start a line-input command and wait for its ready line.
    async fn ready(s: &Arc<Session>, script: &str) -> SessionProcess {
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let on_line: OnLine = Arc::new(move |_, line: &str| {
            if line == "ready" {
                let _ = tx.send(true);
            }
        });
        let mut p = s
            .try_start(script, Mode::LineInput, Some(on_line))
            .await
            .expect("free")
            .expect("written");
        tokio::select! {
            r = rx.wait_for(|r| *r) => { r.expect("ready line"); }
            r = p.wait() => panic!("ended before it was ready: {r:?}"),
        }
        p
    }

    #[tokio::test]
    async fn a_line_input_command_reads_the_lines_it_is_sent() {
        for shell in shells() {
            let (s, _child) = local(&shell).await;
            let script = "echo ready; read -r w; echo \"got [$w]\"";
            let mut p = ready(&s, script).await;
            p.write(b"go\n").await.expect("sent");
            p.close_stdin().await.expect("nothing more");
            let o = p.wait().await.expect("ends");
            assert_eq!(text(&o.stdout), "ready\ngot [go]\n", "{shell:?}");
            // Closed without a line: the reader sees an empty line, and the session goes on.
            let mut p = ready(&s, script).await;
            p.close_stdin().await.expect("closed");
            let o = p.wait().await.expect("ends");
            assert_eq!(text(&o.stdout), "ready\ngot []\n", "{shell:?}");
            let o = run(&s, "echo next", Mode::Quick).await;
            assert_eq!(text(&o.stdout), "next\n", "{shell:?}");
        }
    }

    #[tokio::test]
    async fn an_abandoned_command_sets_the_session_aside() {
        let (s, _child) = local(&["sh"]).await;
        let p = s
            .try_start("sleep 1", Mode::Quick, None)
            .await
            .expect("free")
            .expect("written");
        drop(p);
        assert!(!s.usable());
        assert!(s.try_start("true", Mode::Quick, None).await.is_none());
    }

    fn scan(chunks: &[&[u8]]) -> Vec<Item> {
        let mut s = Scanner::default();
        let mut items = Vec::new();
        for c in chunks {
            s.feed(c, b"@T ", &mut items);
        }
        // Merge adjacent byte items: how output was cut into chunks does not matter.
        let mut merged: Vec<Item> = Vec::new();
        for item in items {
            match (merged.last_mut(), item) {
                (Some(Item::Bytes(a)), Item::Bytes(b)) => a.extend(b),
                (_, item) => merged.push(item),
            }
        }
        merged
    }

    #[test]
    fn markers_split_output_exactly_however_it_is_chunked() {
        let stream: &[u8] = b"@T 0 0\nhello\nno newline@T 1 0\n@T 2 7\n";
        let whole = scan(&[stream]);
        assert_eq!(
            whole,
            vec![
                Item::End(0, 0),
                Item::Bytes(b"hello\nno newline".to_vec()),
                Item::End(1, 0),
                Item::End(2, 7),
            ]
        );
        for cut in 1..stream.len() {
            assert_eq!(
                scan(&[&stream[..cut], &stream[cut..]]),
                whole,
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(scan(&bytes), whole);
    }

    #[test]
    fn output_is_passed_on_as_it_comes_unless_it_may_start_a_marker() {
        let mut s = Scanner::default();
        let mut items = Vec::new();
        s.feed(b"ready\n", b"@T ", &mut items);
        assert_eq!(items, vec![Item::Bytes(b"ready\n".to_vec())]);
        items.clear();
        s.feed(b"50%@", b"@T ", &mut items);
        assert_eq!(items, vec![Item::Bytes(b"50%".to_vec())]);
        items.clear();
        s.feed(b"home\n", b"@T ", &mut items);
        assert_eq!(items, vec![Item::Bytes(b"@home\n".to_vec())]);
    }

    #[test]
    fn a_lookalike_without_the_token_is_output() {
        assert_eq!(
            scan(&[b"@X 1 0\n@T\n", b"@T 3 1\n"]),
            vec![Item::Bytes(b"@X 1 0\n@T\n".to_vec()), Item::End(3, 1)]
        );
    }
}
