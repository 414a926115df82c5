//! Forwarding the operator's ssh-agent to a host, only while a git step that asked for it runs.

use super::*;

/// When a host may reach the controller's ssh-agent over one connection: only a connection
/// made for it ([`SshConnection::for_agent`]), and only while one of its commands that asked
/// for the agent (a git step) runs. Every other agent channel the host opens is refused and
/// counted.
#[derive(Debug, Default)]
pub struct AgentWindow {
    /// Whether this connection may forward the agent at all.
    allowed: bool,
    /// Commands with the agent running now.
    open: AtomicUsize,
    /// Agent channels refused so far.
    refused: AtomicUsize,
}

impl AgentWindow {
    /// A window for a connection made for the agent (`allowed`), or for one that never
    /// forwards it.
    pub(super) fn new(allowed: bool) -> Self {
        AgentWindow {
            allowed,
            ..AgentWindow::default()
        }
    }

    /// Whether this connection forwards the agent at all.
    pub(super) fn allowed(&self) -> bool {
        self.allowed
    }

    /// Whether an agent channel the host opens now is accepted (a command that asked for the
    /// agent runs); when it is not, it is counted as refused.
    pub(super) fn admit(&self) -> bool {
        let open = self.allowed && self.open.load(Ordering::SeqCst) > 0;
        if !open {
            self.refused.fetch_add(1, Ordering::SeqCst);
        }
        open
    }

    /// Agent channels refused so far.
    pub(super) fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

/// Holds a connection's agent window open while a command that asked for the agent runs.
pub(super) struct AgentOpen(Arc<AgentWindow>);

impl AgentOpen {
    pub(super) fn new(w: &Arc<AgentWindow>) -> Self {
        w.open.fetch_add(1, Ordering::SeqCst);
        AgentOpen(w.clone())
    }
}

impl Drop for AgentOpen {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Bridge one forwarded agent channel to the local agent at `SSH_AUTH_SOCK`.
pub(super) async fn bridge_agent(channel: russh::Channel<Msg>) {
    let Some(sock) = std::env::var_os("SSH_AUTH_SOCK") else {
        return;
    };
    let Ok(mut agent) = tokio::net::UnixStream::connect(sock).await else {
        return;
    };
    let mut stream = channel.into_stream();
    let _ = tokio::io::copy_bidirectional(&mut stream, &mut agent).await;
}
