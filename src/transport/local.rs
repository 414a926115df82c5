//! The local transport: commands run on the controller by `sh`, the script on its stdin.
//!
//! For `connection: local` hosts (deploying to the machine ship runs on) and for tests on temp
//! directories. Behaves like the SSH transport: streamed output, exit status, stdin.

use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Collector, OnLine, Output, Stream, TransportError};

/// The controller itself.
pub struct LocalConnection;

/// A `sh` child process.
pub struct LocalProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Stdin comes back here once the script is written to it.
    script_sent: Option<tokio::sync::oneshot::Receiver<Option<ChildStdin>>>,
    drain: Option<JoinHandle<Collector>>,
}

impl LocalConnection {
    pub fn spawn(
        &self,
        script: &str,
        on_line: Option<OnLine>,
    ) -> Result<LocalProcess, TransportError> {
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(crate::remote::READ_SCRIPT)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| TransportError::Other(format!("cannot start sh: {e}")))?;
        // The script is the first input (see `remote::on_stdin`): a pipe holds it until `sh`
        // reads it, so a script larger than the pipe is written by a task of its own.
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        if let Some(mut s) = child.stdin.take() {
            let bytes = crate::remote::on_stdin(script);
            tokio::spawn(async move {
                let ok = s.write_all(&bytes).await.is_ok();
                let _ = ready_tx.send(ok.then_some(s));
            });
        }
        let (tx, mut rx) = mpsc::channel::<(Stream, Vec<u8>)>(64);
        for (stream, reader) in [
            (
                Stream::Stdout,
                child
                    .stdout
                    .take()
                    .map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            ),
            (
                Stream::Stderr,
                child
                    .stderr
                    .take()
                    .map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            ),
        ] {
            let Some(mut reader) = reader else { continue };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 << 10];
                while let Ok(n) = reader.read(&mut buf).await {
                    if n == 0 || tx.send((stream, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let drain = tokio::spawn(async move {
            let mut collector = Collector::new(on_line);
            while let Some((stream, data)) = rx.recv().await {
                collector.push(stream, &data);
            }
            collector
        });
        Ok(LocalProcess {
            child,
            stdin: None,
            script_sent: Some(ready_rx),
            drain: Some(drain),
        })
    }
}

impl LocalProcess {
    /// Stdin, once the script went through it.
    async fn script_sent(&mut self) {
        if let Some(rx) = self.script_sent.take() {
            self.stdin = rx.await.ok().flatten();
        }
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<(), TransportError> {
        self.script_sent().await;
        match &mut self.stdin {
            Some(s) => s
                .write_all(data)
                .await
                .map_err(|e| TransportError::Other(format!("writing to the command failed: {e}"))),
            None => Err(TransportError::Other("stdin already closed".into())),
        }
    }

    pub async fn close_stdin(&mut self) -> Result<(), TransportError> {
        self.script_sent().await;
        if let Some(mut s) = self.stdin.take() {
            let _ = s.shutdown().await;
        }
        Ok(())
    }

    /// Wait for the command to end. Stdin stays open until then unless closed: a supervised
    /// step lives only as long as its stdin. Safe to call again after an abandoned wait.
    pub async fn wait(&mut self) -> Result<Output, TransportError> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| TransportError::Other(format!("waiting for sh failed: {e}")))?;
        drop(self.stdin.take());
        drop(self.script_sent.take());
        let Some(drain) = self.drain.take() else {
            return Err(TransportError::Other(
                "the command was already waited for".into(),
            ));
        };
        let collector = drain
            .await
            .map_err(|e| TransportError::Other(format!("output reader failed: {e}")))?;
        use std::os::unix::process::ExitStatusExt;
        let signal = status.signal().map(|s| format!("signal {s}"));
        Ok(collector.finish(status.code().map(|c| c as u32), signal))
    }
}
