//! The transport seam: run a command on a host with streamed output and an exit status, and
//! stream bytes to its stdin.
//!
//! Implementations: [`ssh`] (production: one connection per host; its commands go through one
//! long-lived shell, a [`session`], with a channel of their own only when they need one) and
//! [`local`] (`sh -c` on the controller, for deploying to this machine and for tests on temp
//! dirs). The fleet logic only sees [`Connection`] and [`Process`]. With an [`Interposer`] in
//! the [`ConnectOptions`], every connection and command passes it first ([`interpose`]: the
//! dry run records a run that way, and tests inject faults).

pub mod interpose;
pub mod known_hosts;
pub mod local;
pub mod session;
pub mod ssh;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::inventory::{Connection as Kind, Host};
pub use interpose::{Answer, Interposer, Purpose};

/// How long a stopped step gets to end on the host before ship stops waiting for it. A
/// supervised step is sent SIGTERM, then SIGKILL 5 s later, so this covers both.
pub const STOP_GRACE: Duration = Duration::from_secs(8);

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Called for every complete line a remote command prints, as it arrives.
pub type OnLine = Arc<dyn Fn(Stream, &str) + Send + Sync>;

/// Failures of the transport itself (not of the command it ran).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("timed out after {} while {what}", crate::util::human_duration(*after))]
    Timeout { after: Duration, what: &'static str },
    #[error(
        "host key of {name} is not known ({fingerprint}); nothing was changed on any host\n  \
         hint: verify the fingerprint, then add the key to {known_hosts} (e.g. `ssh-keyscan`) \
         or run once with --accept-new-host-keys"
    )]
    UnknownHostKey {
        name: String,
        fingerprint: String,
        known_hosts: String,
    },
    #[error(
        "HOST KEY CHANGED for {name}: it presented {fingerprint}, but {known_hosts}:{line} records \
         {recorded}. This may be an attack; the connection was refused\n  \
         hint: if the server was really reinstalled, remove line {line} of {known_hosts} \
         (`ssh-keygen -R`) and verify the new key"
    )]
    ChangedHostKey {
        name: String,
        fingerprint: String,
        known_hosts: String,
        line: usize,
        recorded: String,
    },
    #[error("host key of {name} ({fingerprint}) is marked @revoked in {known_hosts}:{line}")]
    RevokedHostKey {
        name: String,
        fingerprint: String,
        known_hosts: String,
        line: usize,
    },
    #[error("authentication as `{user}` failed: {reason}")]
    Auth { user: String, reason: String },
    /// A supervised step was stopped by the controller (timeout or interruption).
    #[error("{why}; {}", if *confirmed { "it was stopped on the host" } else { "the host did not confirm that it stopped" })]
    Stopped { why: String, confirmed: bool },
    #[error("the connection was lost: {0}")]
    Lost(String),
    #[error("{0}")]
    Other(String),
}

/// Everything a finished command produced.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// `None` when the command ended without an exit status (killed, connection lost).
    pub status: Option<u32>,
    /// The signal that ended the command, if it was killed.
    pub signal: Option<String>,
    /// Stdout, up to [`STDOUT_LIMIT`] bytes (the rest is dropped).
    pub stdout: Vec<u8>,
    /// The last [`TAIL_LIMIT`] bytes of stdout and stderr interleaved as they arrived.
    pub tail: Vec<u8>,
}

/// How much stdout is kept (commands whose output ship parses print a few lines).
pub const STDOUT_LIMIT: usize = 4 << 20;
/// How much combined output is kept for error messages.
pub const TAIL_LIMIT: usize = 64 << 10;

impl Output {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The last `n` lines of combined output.
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.tail);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| l.to_string())
            .collect()
    }
}

/// Collects output and forwards complete lines to an [`OnLine`] callback.
pub(crate) struct Collector {
    out: Output,
    on_line: Option<OnLine>,
    partial: [Vec<u8>; 2],
}

impl Collector {
    pub(crate) fn new(on_line: Option<OnLine>) -> Self {
        Collector {
            out: Output::default(),
            on_line,
            partial: [Vec::new(), Vec::new()],
        }
    }

    pub(crate) fn push(&mut self, stream: Stream, data: &[u8]) {
        if stream == Stream::Stdout {
            let room = STDOUT_LIMIT.saturating_sub(self.out.stdout.len());
            self.out
                .stdout
                .extend_from_slice(&data[..data.len().min(room)]);
        }
        self.out.tail.extend_from_slice(data);
        if self.out.tail.len() > TAIL_LIMIT {
            let cut = self.out.tail.len() - TAIL_LIMIT;
            self.out.tail.drain(..cut);
        }
        if let Some(cb) = &self.on_line {
            let buf = &mut self.partial[stream as usize];
            buf.extend_from_slice(data);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                cb(
                    stream,
                    String::from_utf8_lossy(&line[..i]).trim_end_matches('\r'),
                );
            }
        }
    }

    pub(crate) fn finish(mut self, status: Option<u32>, signal: Option<String>) -> Output {
        if let Some(cb) = &self.on_line {
            for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
                if !self.partial[i].is_empty() {
                    cb(stream, &String::from_utf8_lossy(&self.partial[i]));
                }
            }
        }
        self.out.status = status;
        self.out.signal = signal;
        self.out
    }
}

/// A command started on a host. Its output is drained from the moment it starts (an unread
/// SSH channel would stall the whole connection).
pub enum Process {
    Ssh(ssh::SshProcess),
    Local(local::LocalProcess),
    Session(session::SessionProcess),
    /// Answered by an interposer, not by a host.
    Canned(interpose::CannedProcess),
}

impl Process {
    /// Send bytes to the command's stdin.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), TransportError> {
        match self {
            Process::Ssh(p) => p.write(data).await,
            Process::Local(p) => p.write(data).await,
            Process::Session(p) => p.write(data).await,
            Process::Canned(p) => p.write(data).await,
        }
    }

    /// Close the command's stdin (EOF).
    pub async fn close_stdin(&mut self) -> Result<(), TransportError> {
        match self {
            Process::Ssh(p) => p.close_stdin().await,
            Process::Local(p) => p.close_stdin().await,
            Process::Session(p) => p.close_stdin().await,
            Process::Canned(p) => p.close_stdin().await,
        }
    }

    /// Wait for the command to end. An abandoned wait can be resumed; dropping the process
    /// abandons the command (its channel or process is closed).
    pub async fn wait(&mut self) -> Result<Output, TransportError> {
        match self {
            Process::Ssh(p) => p.wait().await,
            Process::Local(p) => p.wait().await,
            Process::Session(p) => p.wait().await,
            Process::Canned(p) => p.wait().await,
        }
    }

    /// Stop a step (see [`Connection::run_step`]) and wait up to [`STOP_GRACE`] for its end.
    async fn stop(&mut self) -> Result<Output, TransportError> {
        match self {
            Process::Session(s) => s.stop(STOP_GRACE).await,
            Process::Canned(c) => c.stop(),
            // Closing stdin is the stop signal of a supervised step in its own channel (and
            // cuts a stream short).
            other => {
                let _ = other.close_stdin().await;
                other.wait().await
            }
        }
    }
}

/// How a command is started.
#[derive(Debug, Clone, Copy)]
enum Way {
    /// Fed lines as it runs.
    LineInput,
    /// Short: run to the end.
    Quick,
    /// Long and stoppable; with `agent`, it may use the controller's ssh-agent.
    Step { agent: bool },
}

/// An open connection to one host.
pub enum Connection {
    Ssh(ssh::SshConnection),
    Local(local::LocalConnection),
    /// A connection whose commands pass an [`Interposer`] first.
    Interposed(interpose::Interposed),
}

impl Connection {
    /// Open the connection this host's inventory entry asks for (through the interposer of
    /// `options`, if it has one).
    pub async fn open(host: &Host, options: &ConnectOptions) -> Result<Self, TransportError> {
        let real = async {
            match host.config.connection {
                Kind::Ssh => Ok(Connection::Ssh(
                    ssh::SshConnection::connect(host, options).await?,
                )),
                Kind::Local => Ok(Connection::Local(local::LocalConnection)),
            }
        };
        match &options.interposer {
            Some(by) => {
                by.connect(host)?;
                Ok(Connection::Interposed(interpose::Interposed::new(
                    host,
                    real.await?,
                    by.clone(),
                )))
            }
            None => real.await,
        }
    }

    /// Start `script` (POSIX sh) on the host, to be fed lines on its stdin (over SSH it runs
    /// in the connection's session when that is free: closing stdin then sends an empty line).
    pub async fn spawn(
        &self,
        what: Purpose<'_>,
        script: &str,
        on_line: Option<OnLine>,
    ) -> Result<Process, TransportError> {
        self.start(what, script, None, on_line, Way::LineInput)
            .await
    }

    /// Start `script` the way `way` says, asking the interposer first if there is one.
    async fn start(
        &self,
        what: Purpose<'_>,
        script: &str,
        stdin: Option<&[u8]>,
        on_line: Option<OnLine>,
        way: Way,
    ) -> Result<Process, TransportError> {
        let Connection::Interposed(c) = self else {
            return self.start_here(script, stdin.is_some(), on_line, way).await;
        };
        match c.ask(what, script, stdin) {
            Answer::Pass => Box::pin(c.inner().start(what, script, stdin, on_line, way)).await,
            answer => Ok(Process::Canned(interpose::CannedProcess::new(
                answer, on_line,
            ))),
        }
    }

    /// Start `script` on this connection itself. A payload (`stdin`) goes through a channel of
    /// its own, straight to the script's stdin; so does a step that uses the agent.
    async fn start_here(
        &self,
        script: &str,
        stdin: bool,
        on_line: Option<OnLine>,
        way: Way,
    ) -> Result<Process, TransportError> {
        let mode = match way {
            _ if stdin => None,
            Way::LineInput => Some(session::Mode::LineInput),
            Way::Quick => Some(session::Mode::Quick),
            Way::Step { agent: false } => Some(session::Mode::Stoppable),
            Way::Step { agent: true } => None,
        };
        if let Some(mode) = mode {
            if let Some(p) = self.in_session(script, mode, on_line.clone()).await {
                return p.map(Process::Session);
            }
        }
        match way {
            Way::Step { agent } if !stdin => {
                self.spawn_with(&crate::remote::supervised(script), on_line, agent)
                    .await
            }
            Way::Step { agent } => self.spawn_with(script, on_line, agent).await,
            _ => self.spawn_with(script, on_line, false).await,
        }
    }

    /// Start `script` in the connection's session, if it has one and it is free.
    async fn in_session(
        &self,
        script: &str,
        mode: session::Mode,
        on_line: Option<OnLine>,
    ) -> Option<Result<session::SessionProcess, TransportError>> {
        match self {
            Connection::Ssh(c) => c.session().await?.try_start(script, mode, on_line).await,
            Connection::Local(_) | Connection::Interposed(_) => None,
        }
    }

    /// Start `script` in a channel (a process) of its own; with `agent`, it gets the
    /// controller's ssh-agent (over SSH, agent forwarding for this command only; locally, the
    /// agent is simply inherited).
    async fn spawn_with(
        &self,
        script: &str,
        on_line: Option<OnLine>,
        agent: bool,
    ) -> Result<Process, TransportError> {
        match self {
            Connection::Ssh(c) => Ok(Process::Ssh(c.spawn(script, on_line, agent).await?)),
            Connection::Local(c) => Ok(Process::Local(c.spawn(script, on_line)?)),
            Connection::Interposed(c) => {
                Box::pin(c.inner().spawn_with(script, on_line, agent)).await
            }
        }
    }

    /// Run `script` to the end, optionally feeding `stdin`, within `timeout`. For short
    /// commands; long ones go through [`Connection::run_step`].
    pub async fn run(
        &self,
        what: Purpose<'_>,
        script: &str,
        stdin: Option<&[u8]>,
        on_line: Option<OnLine>,
        timeout: Duration,
    ) -> Result<Output, TransportError> {
        // An interposer answers here, or sees the host's own answer.
        let canned = match self {
            Connection::Interposed(c) => match c.ask(what, script, stdin) {
                Answer::Pass => {
                    let out = Box::pin(c.inner().run(what, script, stdin, on_line, timeout)).await;
                    if let Ok(o) = &out {
                        c.tell(what, script, stdin, o);
                    }
                    return out;
                }
                answer => Some(Process::Canned(interpose::CannedProcess::new(
                    answer,
                    on_line.clone(),
                ))),
            },
            _ => None,
        };
        let work = async {
            let mut p = match canned {
                Some(p) => p,
                None => {
                    self.start_here(script, stdin.is_some(), on_line, Way::Quick)
                        .await?
                }
            };
            if let Some(data) = stdin {
                p.write(data).await?;
            }
            p.close_stdin().await?;
            p.wait().await
        };
        within(timeout, "waiting for the command", work).await
    }

    /// Run a step that may take long and must be stoppable. Without `stdin`, it runs stoppable
    /// in the session, or in a channel of its own [`crate::remote::supervised`] (it stops
    /// itself when its stdin closes); with `stdin`, a cut stream stops it. On `timeout` or
    /// `cancel`, the step is told to stop and the host gets [`STOP_GRACE`] to confirm it ended;
    /// the error says whether it did.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_step(
        &self,
        what: Purpose<'_>,
        script: &str,
        stdin: Option<&[u8]>,
        on_line: Option<OnLine>,
        timeout: Duration,
        cancel: &CancellationToken,
        agent: bool,
    ) -> Result<Output, TransportError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let why = |cancelled: bool| {
            if cancelled {
                "interrupted by the operator".to_owned()
            } else {
                format!(
                    "timed out after {} (step_timeout)",
                    crate::util::human_duration(timeout)
                )
            }
        };
        let start = self.start(what, script, stdin, on_line, Way::Step { agent });
        let mut p = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(TransportError::Stopped { why: why(true), confirmed: true }),
            _ = tokio::time::sleep_until(deadline) => return Err(TransportError::Timeout { after: timeout, what: "starting the step" }),
            p = start => p?,
        };
        let fed = async {
            if let Some(data) = stdin {
                p.write(data).await?;
                p.close_stdin().await?;
            }
            p.wait().await
        };
        let cancelled = tokio::select! {
            biased;
            r = fed => return r,
            _ = tokio::time::sleep_until(deadline) => false,
            _ = cancel.cancelled() => true,
        };
        let confirmed = matches!(tokio::time::timeout(STOP_GRACE, p.stop()).await, Ok(Ok(_)));
        Err(TransportError::Stopped {
            why: why(cancelled),
            confirmed,
        })
    }

    /// A connection for the commands that use the controller's ssh-agent (see
    /// [`ssh::SshConnection::for_agent`]); `None` where this one serves (a local connection
    /// inherits the agent anyway).
    pub async fn for_agent(&self) -> Result<Option<Connection>, TransportError> {
        match self {
            Connection::Ssh(c) => Ok(Some(Connection::Ssh(c.for_agent().await?))),
            Connection::Local(_) => Ok(None),
            Connection::Interposed(c) => Ok(Box::pin(c.inner().for_agent())
                .await?
                .map(|inner| Connection::Interposed(c.beside(inner)))),
        }
    }

    /// Agent channels the host opened on this connection that were refused.
    pub fn agent_refusals(&self) -> usize {
        match self {
            Connection::Ssh(c) => c.agent_refusals(),
            Connection::Local(_) => 0,
            Connection::Interposed(c) => c.inner().agent_refusals(),
        }
    }

    /// Close the connection politely.
    pub async fn close(&self) {
        match self {
            Connection::Ssh(c) => c.close().await,
            Connection::Local(_) => {}
            Connection::Interposed(c) => Box::pin(c.inner().close()).await,
        }
    }
}

/// `work`, given up after `after` with a [`TransportError::Timeout`] that says what timed out.
pub async fn within<T>(
    after: Duration,
    what: &'static str,
    work: impl std::future::Future<Output = Result<T, TransportError>>,
) -> Result<T, TransportError> {
    tokio::time::timeout(after, work)
        .await
        .map_err(|_| TransportError::Timeout { after, what })?
}

/// Controller-side options for opening connections.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    /// Trust unknown host keys and record them (a changed key is still refused).
    pub accept_new_host_keys: bool,
    /// Every connection and command passes this first (the dry run, tests).
    pub interposer: Option<Arc<dyn Interposer>>,
    /// The run's jump-host connections, shared by the hosts behind each.
    pub jumps: ssh::JumpPool,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("accept_new_host_keys", &self.accept_new_host_keys)
            .field("interposer", &self.interposer.is_some())
            .finish()
    }
}
