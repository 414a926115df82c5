//! The SSH transport, on russh: one connection per host; commands go through one long-lived
//! shell on it (a [`Session`]), or a channel of their own when they need one.
//!
//! Traps handled here (each was observed against OpenSSH): no connect timeout in russh (we wrap
//! connect and auth in one); bursts of connects get reset by sshd's MaxStartups (we retry with
//! backoff); an inactivity timeout without keepalive kills long silent commands (we use
//! keepalives only, and a missing exit status is a failure); unread channels stall the connection
//! (every channel is drained from the start); the exit status may arrive before the last output
//! (we read until the channel closes).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle, Msg};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelWriteHalf};
use tokio::task::JoinHandle;

use super::known_hosts::{self, Verdict};
use super::session::{Input, Raw, Session};
use super::{Collector, ConnectOptions, OnLine, Output, Stream, TransportError, within};
use crate::inventory::{Host, HostKeyChecking};

mod agent;
mod keys;

use agent::*;
pub use keys::unlock_keys;
use keys::*;

/// What the host-key check decided, kept so a refused handshake gets a precise error.
#[derive(Default)]
struct KeyCheck {
    refusal: Option<TransportError>,
}

struct Client {
    name: String,
    port: u16,
    known_hosts: PathBuf,
    policy: HostKeyChecking,
    check: Arc<Mutex<KeyCheck>>,
    /// The agent window of this connection: agent channels the host opens are accepted and
    /// bridged to this machine's ssh-agent only while it is open, and refused otherwise.
    agent: Arc<AgentWindow>,
}

impl Client {
    fn verify(&self, key: &PublicKey) -> Result<(), TransportError> {
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let kh = self.known_hosts.display().to_string();
        let verdict = known_hosts::check(&self.known_hosts, &self.name, self.port, key)
            .map_err(|e| TransportError::Other(format!("cannot read {kh}: {e}")))?;
        match verdict {
            Verdict::Known => Ok(()),
            Verdict::Unknown if self.policy == HostKeyChecking::AcceptNew => {
                known_hosts::append(&self.known_hosts, &self.name, self.port, key).map_err(|e| {
                    TransportError::Other(format!("cannot record the host key in {kh}: {e}"))
                })
            }
            Verdict::Unknown => Err(TransportError::UnknownHostKey {
                name: known_hosts::lookup_name(&self.name, self.port),
                fingerprint,
                known_hosts: kh,
            }),
            Verdict::Changed {
                line,
                recorded_fingerprint,
            } => Err(TransportError::ChangedHostKey {
                name: known_hosts::lookup_name(&self.name, self.port),
                fingerprint,
                known_hosts: kh,
                line,
                recorded: recorded_fingerprint,
            }),
            Verdict::Revoked { line } => Err(TransportError::RevokedHostKey {
                name: known_hosts::lookup_name(&self.name, self.port),
                fingerprint,
                known_hosts: kh,
                line,
            }),
        }
    }
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn server_channel_open_agent_forward(
        &mut self,
        channel: russh::Channel<Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        if self.agent.admit() && std::env::var_os("SSH_AUTH_SOCK").is_some() {
            reply.accept().await;
            tokio::spawn(bridge_agent(channel));
        } else {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
        }
        Ok(())
    }

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let result = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => self.verify(key),
            PublicKeyOrCertificate::Certificate(_) => Err(TransportError::Other(
                "the host presented a certificate; host certificates are not supported yet".into(),
            )),
        };
        match result {
            Ok(()) => Ok(true),
            Err(e) => {
                if let Ok(mut c) = self.check.lock() {
                    c.refusal = Some(e);
                }
                Ok(false)
            }
        }
    }
}

/// The jump-host connections of one run, by jump host (address, port, user, key, known_hosts
/// and the chain before it): every host reached through the same jump host shares one
/// authenticated connection to it, each host a `direct-tcpip` channel on it. Held weakly: the
/// connection lives as long as a host uses it.
#[derive(Clone, Default)]
pub struct JumpPool(Arc<Mutex<std::collections::HashMap<String, JumpSlot>>>);

type JumpSlot = Arc<tokio::sync::Mutex<std::sync::Weak<SshConnection>>>;

impl JumpPool {
    fn key(jump: &Host) -> String {
        let c = &jump.config;
        format!(
            "{}@{}:{} key={:?} known_hosts={:?} via={:?}",
            c.user, jump.address, c.port, c.identity_file, c.known_hosts, c.proxy_jump
        )
    }

    fn slot(&self, key: &str) -> JumpSlot {
        let mut slots = self.0.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(key.to_owned()).or_default().clone()
    }
}

/// An authenticated SSH connection.
pub struct SshConnection {
    handle: Arc<Handle<Client>>,
    /// The jump host's connection the host is reached through (kept open while this one is),
    /// shared with every other host of the run reached through the same jump host.
    jump: Option<Arc<SshConnection>>,
    /// Channels are opened one at a time per connection (sshd caps sessions per connection).
    open_timeout: Duration,
    /// The long-lived shell, opened with the first command that can use it (`None`: it could
    /// not be started, and every command gets a channel of its own).
    session: tokio::sync::OnceCell<Option<Arc<Session>>>,
    /// When the host may use the controller's agent over this connection.
    agent: Arc<AgentWindow>,
    /// What it was opened for and with: a connection for the agent is opened the same way.
    host: Box<Host>,
    options: ConnectOptions,
}

/// A command running in an SSH channel.
pub struct SshProcess {
    write: ChannelWriteHalf<Msg>,
    drain: JoinHandle<(Option<u32>, Option<String>, Collector)>,
    /// The reader has been joined (a join handle must not be polled again).
    finished: bool,
    /// The connection's agent window, held open while this command runs (if it asked).
    _agent: Option<AgentOpen>,
}

fn is_retryable(e: &russh::Error) -> bool {
    match e {
        russh::Error::IO(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::BrokenPipe
        ),
        russh::Error::Disconnect | russh::Error::HUP => true,
        _ => false,
    }
}

impl SshConnection {
    /// Connect, verify the host key and authenticate, all within the host's connect timeout.
    pub async fn connect(host: &Host, options: &ConnectOptions) -> Result<Self, TransportError> {
        Self::connect_with_agent(host, options, false).await
    }

    /// Another connection to the same host, made for commands that use the controller's
    /// ssh-agent (git steps with `forward_agent`): sshd keeps a forwarded agent's socket for
    /// as long as the connection that asked for it lives, so the agent is never asked for on
    /// the connection that runs everything else, and this one is closed when the git steps
    /// end. Even here, agent channels are accepted only while such a command runs.
    pub async fn for_agent(&self) -> Result<Self, TransportError> {
        Self::connect_with_agent(&self.host, &self.options, true).await
    }

    /// How many agent channels the host opened that were refused (outside a git step, or on
    /// a connection not made for the agent).
    pub fn agent_refusals(&self) -> usize {
        self.agent.refused()
    }

    async fn connect_with_agent(
        host: &Host,
        options: &ConnectOptions,
        agent: bool,
    ) -> Result<Self, TransportError> {
        let timeout = host.config.timeouts.connect;
        within(
            timeout,
            "connecting and authenticating (connect_timeout; hint: is the host up, and its \
             port open to this machine? --connect-timeout gives it longer)",
            Self::connect_with_retry(host, options, agent && host.config.forward_agent),
        )
        .await
    }

    async fn connect_with_retry(
        host: &Host,
        options: &ConnectOptions,
        agent: bool,
    ) -> Result<Self, TransportError> {
        let mut delay = Duration::from_millis(50);
        loop {
            match Self::connect_once(host, options, agent).await {
                Err(Attempt::Retry) => {
                    // sshd's MaxStartups drops bursts of new connections: back off and retry
                    // (the overall connect timeout bounds this loop), each host after its own
                    // share of the delay, so that the hosts dropped together do not come back
                    // together.
                    tokio::time::sleep(jittered(delay, &host.address)).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Ok(c) => return Ok(c),
            }
        }
    }

    async fn connect_once(
        host: &Host,
        options: &ConnectOptions,
        agent: bool,
    ) -> Result<Self, Attempt> {
        let cfg = &host.config;
        let check = Arc::new(Mutex::new(KeyCheck::default()));
        let agent = Arc::new(AgentWindow::new(agent));
        let policy = if options.accept_new_host_keys {
            HostKeyChecking::AcceptNew
        } else {
            cfg.host_key_checking
        };
        let handler = Client {
            name: host.address.clone(),
            port: cfg.port,
            known_hosts: cfg.known_hosts.clone(),
            policy,
            check: check.clone(),
            agent: agent.clone(),
        };
        let mut preferred = russh::Preferred::default();
        if cpu_has_aes() {
            // With AES instructions, AES-GCM moves bulk data (the artifact upload) faster than
            // ChaCha20-Poly1305, russh's first choice.
            preferred.cipher = Cow::Owned(vec![
                russh::cipher::AES_256_GCM,
                russh::cipher::CHACHA20_POLY1305,
                russh::cipher::AES_256_CTR,
            ]);
        }
        let recorded = known_hosts::recorded_algorithms(&cfg.known_hosts, &host.address, cfg.port);
        if !recorded.is_empty() {
            // Ask for a key type that known_hosts has, then the rest.
            let mut keys = recorded.clone();
            keys.extend(
                preferred
                    .key
                    .iter()
                    .filter(|a| !recorded.contains(a))
                    .cloned(),
            );
            preferred.key = Cow::Owned(keys);
        }
        let config = client::Config {
            keepalive_interval: Some(cfg.timeouts.keepalive),
            keepalive_max: 3,
            inactivity_timeout: None,
            nodelay: true,
            preferred,
            ..Default::default()
        };
        let addr = format!("{}:{}", host.address, cfg.port);
        let config = Arc::new(config);
        let (jump, connected) = match cfg.proxy_jump.as_deref() {
            None | Some([]) => (
                None,
                match tokio::net::TcpStream::connect((host.address.as_str(), cfg.port)).await {
                    Ok(tcp) => {
                        let _ = tcp.set_nodelay(true);
                        client::connect_stream(config, QuickAck::new(tcp), handler).await
                    }
                    Err(e) => Err(russh::Error::IO(e)),
                },
            ),
            Some([before @ .., j]) => {
                // First the last jump host (its key checked like any host's; reached through
                // the ones before it, the same way), then a TCP channel through it to the
                // host, and SSH over that channel.
                let mut jump_cfg = cfg.clone();
                jump_cfg.user = j.user.clone().unwrap_or_else(|| cfg.user.clone());
                jump_cfg.port = j.port.unwrap_or(22);
                if j.identity_file.is_some() {
                    jump_cfg.identity_file = j.identity_file.clone();
                }
                jump_cfg.proxy_jump = (!before.is_empty()).then(|| before.to_vec());
                jump_cfg.forward_agent = false;
                let jump_host = Host {
                    name: j.host.clone(),
                    address: j.host.clone(),
                    config: jump_cfg,
                };
                let via = |e: TransportError| {
                    TransportError::Other(format!("through the jump host {}: {e}", j.host))
                };
                // One authenticated connection to each jump host per run, however many hosts
                // are behind it (as OpenSSH's ControlMaster gives): the first host to need it
                // logs in, the others wait for it and open their channel on it.
                let slot = options.jumps.slot(&JumpPool::key(&jump_host));
                let mut shared = slot.lock().await;
                let jump = match shared.upgrade() {
                    Some(c) => c,
                    None => {
                        let c = match Box::pin(Self::connect_once(&jump_host, options, false)).await
                        {
                            Ok(c) => Arc::new(c),
                            Err(Attempt::Retry) => return Err(Attempt::Retry),
                            Err(Attempt::Fatal(e)) => {
                                return Err(Attempt::Fatal(TransportError::Other(format!(
                                    "cannot reach the jump host {j}: {e}"
                                ))));
                            }
                        };
                        *shared = Arc::downgrade(&c);
                        c
                    }
                };
                drop(shared);
                let channel = jump
                    .handle
                    .channel_open_direct_tcpip(
                        host.address.clone(),
                        u32::from(cfg.port),
                        "127.0.0.1",
                        0,
                    )
                    .await
                    .map_err(|e| {
                        Attempt::Fatal(via(TransportError::Connect {
                            addr: addr.clone(),
                            reason: format!(
                                "the jump host could not open a connection to it: {} \
                                 (hint: check that it can reach {addr}, and that its sshd \
                                 allows TCP forwarding)",
                                describe_russh_error(&e)
                            ),
                        }))
                    })?;
                let connected =
                    client::connect_stream(config, channel.into_stream(), handler).await;
                (Some(jump), connected)
            }
        };
        let mut handle = match connected {
            Ok(h) => h,
            Err(e) => {
                if let Some(refusal) = check.lock().ok().and_then(|mut c| c.refusal.take()) {
                    return Err(Attempt::Fatal(refusal));
                }
                if is_retryable(&e) {
                    return Err(Attempt::Retry);
                }
                return Err(Attempt::Fatal(TransportError::Connect {
                    addr,
                    reason: describe_russh_error(&e),
                }));
            }
        };
        authenticate(&mut handle, host)
            .await
            .map_err(Attempt::Fatal)?;
        Ok(SshConnection {
            handle: Arc::new(handle),
            jump,
            open_timeout: cfg.timeouts.connect,
            session: tokio::sync::OnceCell::new(),
            agent,
            host: Box::new(host.clone()),
            options: options.clone(),
        })
    }

    /// Start `script` in a channel of its own: the channel runs [`crate::remote::READ_SCRIPT`]
    /// and the script is its first input (so the user's login shell, even fish, does not
    /// matter, and the script is in no process's arguments).
    /// With `agent`, the command gets the controller's ssh-agent (`SSH_AUTH_SOCK` on the host,
    /// for this command only).
    pub async fn spawn(
        &self,
        script: &str,
        on_line: Option<OnLine>,
        agent: bool,
    ) -> Result<SshProcess, TransportError> {
        let channel = self.open_channel().await?;
        let agent = (agent && self.agent.allowed()).then(|| AgentOpen::new(&self.agent));
        if agent.is_some() {
            channel
                .agent_forward(false)
                .await
                .map_err(|e| TransportError::Lost(describe_russh_error(&e)))?;
        }
        // The script follows on stdin: nothing of it is in the host's process arguments.
        channel
            .exec(true, crate::remote::channel_command())
            .await
            .map_err(|e| TransportError::Lost(describe_russh_error(&e)))?;
        let (mut read, write) = channel.split();
        write
            .data_bytes(bytes::Bytes::from(crate::remote::on_stdin(script)))
            .await
            .map_err(|e| TransportError::Lost(describe_russh_error(&e)))?;
        let drain = tokio::spawn(async move {
            let mut collector = Collector::new(on_line);
            let (mut status, mut signal) = (None, None);
            while let Some(msg) = read.wait().await {
                match msg {
                    ChannelMsg::Data { data } => collector.push(Stream::Stdout, &data),
                    ChannelMsg::ExtendedData { data, ext: 1 } => {
                        collector.push(Stream::Stderr, &data)
                    }
                    ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        signal = Some(format!("{signal_name:?}"))
                    }
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            (status, signal, collector)
        });
        Ok(SshProcess {
            write,
            drain,
            finished: false,
            _agent: agent,
        })
    }

    /// The connection's session, started on first use.
    pub async fn session(&self) -> Option<Arc<Session>> {
        self.session
            .get_or_init(|| async { self.open_session().await.ok() })
            .await
            .clone()
            .filter(|s| s.usable())
    }

    /// A new session channel, within the connect timeout.
    async fn open_channel(&self) -> Result<russh::Channel<Msg>, TransportError> {
        within(self.open_timeout, "opening a channel", async {
            self.handle
                .channel_open_session()
                .await
                .map_err(|e| TransportError::Lost(describe_russh_error(&e)))
        })
        .await
    }

    async fn open_session(&self) -> Result<Arc<Session>, TransportError> {
        let channel = self.open_channel().await?;
        channel
            // `exec`: the login shell becomes the session's shell, not its idle parent.
            .exec(true, "exec sh -s")
            .await
            .map_err(|e| TransportError::Lost(describe_russh_error(&e)))?;
        let (mut read, write) = channel.split();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(msg) = read.wait().await {
                let raw = match msg {
                    ChannelMsg::Data { data } => Raw::Data(Stream::Stdout, data.to_vec()),
                    ChannelMsg::ExtendedData { data, ext: 1 } => {
                        Raw::Data(Stream::Stderr, data.to_vec())
                    }
                    ChannelMsg::Close => break,
                    _ => continue,
                };
                if tx.send(raw).is_err() {
                    return;
                }
            }
            let _ = tx.send(Raw::Closed);
        });
        Session::start(Input::Ssh(write), rx).await
    }

    pub async fn close(&self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
        // A shared jump connection is closed by the last host that used it.
        if let Some(j) = self.jump.as_ref().filter(|j| Arc::strong_count(j) == 1) {
            Box::pin(j.close()).await;
        }
    }
}

/// A TCP stream that acknowledges what it receives at once. sshd sends a command's output
/// with Nagle's algorithm on (it turns it off only for terminals), so a second small packet
/// waits for the first one's acknowledgement, which the kernel delays by up to 40 ms: a stall
/// on most commands. Re-arming TCP_QUICKACK after every read from the socket removes it.
///
/// It also reads ahead: russh reads each packet in two exact reads (its first block, then the
/// rest), which unbuffered were two `recvfrom` calls (and two `setsockopt`) per packet, and
/// more when several packets had arrived together. Small reads are served from what one
/// `recvfrom` of up to [`READ_AHEAD`] bytes brought; a read that asks for more goes to the
/// socket directly.
struct QuickAck {
    tcp: tokio::net::TcpStream,
    /// Read ahead (allocated at the first small read); `ahead[at..end]` is not read yet.
    ahead: Box<[u8]>,
    at: usize,
    end: usize,
}

/// How much one read from the socket takes at most for reads smaller than it (per connection:
/// 2 MiB at 1,000 hosts).
const READ_AHEAD: usize = 2048;

impl QuickAck {
    fn new(tcp: tokio::net::TcpStream) -> QuickAck {
        QuickAck {
            tcp,
            ahead: Box::default(),
            at: 0,
            end: 0,
        }
    }

    fn read_socket(
        &mut self,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use tokio::io::AsyncRead;
        let r = std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if matches!(r, std::task::Poll::Ready(Ok(()))) {
            let _ = socket2::SockRef::from(&self.tcp).set_tcp_quickack(true);
        }
        r
    }
}

impl tokio::io::AsyncRead for QuickAck {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.at == this.end {
            if buf.remaining() >= READ_AHEAD {
                return this.read_socket(cx, buf);
            }
            let mut ahead = std::mem::take(&mut this.ahead);
            if ahead.is_empty() {
                ahead = vec![0; READ_AHEAD].into_boxed_slice();
            }
            let mut into = tokio::io::ReadBuf::new(&mut ahead);
            let r = this.read_socket(cx, &mut into);
            let filled = into.filled().len();
            this.ahead = ahead;
            (this.at, this.end) = (0, filled);
            match r {
                // The end of the stream: nothing put in `buf` says so.
                Poll::Ready(Ok(())) if filled == 0 => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        let n = buf.remaining().min(this.end - this.at);
        buf.put_slice(&this.ahead[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for QuickAck {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Whether this CPU has AES instructions (AES-GCM is then the faster cipher).
fn cpu_has_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// One connection attempt: worth retrying (sshd dropped a burst), or a final answer.
enum Attempt {
    Retry,
    Fatal(TransportError),
}

impl SshProcess {
    /// Send `data`, in pieces of 1 MiB that russh cuts into packets as large as the channel
    /// allows (its byte-stream path would send 8 KiB packets: four times the packets, and
    /// slower uploads).
    pub async fn write(&mut self, data: &[u8]) -> Result<(), TransportError> {
        for piece in data.chunks(1 << 20) {
            self.write
                .data_bytes(bytes::Bytes::copy_from_slice(piece))
                .await
                .map_err(|e| TransportError::Lost(describe_russh_error(&e)))?;
        }
        Ok(())
    }

    pub async fn close_stdin(&mut self) -> Result<(), TransportError> {
        self.write
            .eof()
            .await
            .map_err(|e| TransportError::Lost(describe_russh_error(&e)))
    }

    /// Wait for the command to end. Safe to call again after an abandoned wait (the output
    /// reader keeps running until the command ends or the process is dropped).
    pub async fn wait(&mut self) -> Result<Output, TransportError> {
        if self.finished {
            return Err(TransportError::Other(
                "the command was already waited for".into(),
            ));
        }
        let joined = (&mut self.drain).await;
        self.finished = true;
        let (status, signal, collector) =
            joined.map_err(|e| TransportError::Other(format!("output reader failed: {e}")))?;
        if status.is_none() && signal.is_none() {
            return Err(TransportError::Lost(
                "the command ended without an exit status (the connection dropped or the host \
                 stopped answering keepalives)"
                    .into(),
            ));
        }
        Ok(collector.finish(status, signal))
    }
}

impl Drop for SshProcess {
    /// Abandoning a command stops reading its channel (the channel closes with it).
    fn drop(&mut self) {
        self.drain.abort();
    }
}

fn describe_russh_error(e: &russh::Error) -> String {
    match e {
        russh::Error::IO(io) => io.to_string(),
        russh::Error::KeepaliveTimeout => "the host stopped answering keepalives".into(),
        russh::Error::InactivityTimeout => "no data for too long".into(),
        other => other.to_string(),
    }
}

/// `delay` scaled by a factor between 0.5 and 1.5 drawn from the clock and `seed` (the host's
/// address): retries of hosts a server dropped at once spread out instead of arriving again
/// as one burst.
fn jittered(delay: Duration, seed: &str) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut x = u64::from(nanos) ^ 0x9e37_79b9_7f4a_7c15;
    for b in seed.bytes() {
        x = (x ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    let permille = 500 + (x % 1000) as u32;
    delay * permille / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_spread_between_half_and_one_and_a_half_times_the_delay() {
        let d = Duration::from_millis(200);
        let got: Vec<Duration> = (0..200)
            .map(|i| jittered(d, &format!("127.0.0.{i}")))
            .collect();
        assert!(got.iter().all(|g| *g >= d / 2 && *g < d * 3 / 2), "{got:?}");
        let mut distinct = got.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() > 100,
            "spread out: {} distinct",
            distinct.len()
        );
    }

    #[test]
    fn the_read_ahead_hands_over_every_byte_in_order_then_the_end() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            // 10,000 bytes in writes of odd sizes, then the end of the stream.
            let sent: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
            let writer = {
                let sent = sent.clone();
                tokio::spawn(async move {
                    let (mut s, _) = listener.accept().await.expect("accept");
                    for chunk in sent.chunks(777) {
                        s.write_all(chunk).await.expect("write");
                    }
                })
            };
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let mut r = QuickAck::new(tcp);
            // Reads as russh makes them (a small first block, then the rest), and some bigger
            // than the read-ahead, which go to the socket directly.
            let mut got = Vec::new();
            for (i, size) in [4usize, 16, 1, 300, 5000, 2048, 3]
                .iter()
                .cycle()
                .enumerate()
            {
                let want = (*size).min(sent.len() - got.len());
                if want == 0 {
                    break;
                }
                let mut buf = vec![0; want];
                r.read_exact(&mut buf).await.expect("read");
                got.extend_from_slice(&buf);
                assert!(i < 1000);
            }
            assert_eq!(got, sent);
            writer.await.expect("writer");
            let mut rest = Vec::new();
            assert_eq!(r.read_to_end(&mut rest).await.expect("end"), 0);
        });
    }
}
