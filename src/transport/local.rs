//! The local transport: commands run on the controller with `sh -c`.
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

/// A `sh -c` child process.
pub struct LocalProcess {
    child: Child,
    stdin: Option<ChildStdin>,
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
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| TransportError::Other(format!("cannot start sh: {e}")))?;
        let stdin = child.stdin.take();
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
            stdin,
            drain: Some(drain),
        })
    }
}

impl LocalProcess {
    pub async fn write(&mut self, data: &[u8]) -> Result<(), TransportError> {
        match &mut self.stdin {
            Some(s) => s
                .write_all(data)
                .await
                .map_err(|e| TransportError::Other(format!("writing to the command failed: {e}"))),
            None => Err(TransportError::Other("stdin already closed".into())),
        }
    }

    pub async fn close_stdin(&mut self) -> Result<(), TransportError> {
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
