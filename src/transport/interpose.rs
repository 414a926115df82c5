//! A seam between a run and its hosts: with an [`Interposer`] in the [`super::ConnectOptions`],
//! every connection is opened through it and every command passes it first. It may let the
//! command through to the real connection, answer it as a host would, fail it, or never answer.
//!
//! The dry run is a real run through an interposer that lets the commands that only read
//! through to the hosts and answers the ones that would change them, recording all of them:
//! what `ship plan` prints is what a run sends, by construction. Tests drive whole runs on
//! local hosts through one that injects faults per host and command (a refused connection, a
//! failing build, a rename that fails, a host lost after its word), without sshd or root.

use std::sync::{Arc, Mutex};

use super::{Collector, Connection, OnLine, Output, Stream, TransportError};
use crate::inventory::Host;

/// What a command is for, as the run names it: the phase it belongs to, its name there (a
/// build step's is the step's), and whether it changes the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purpose<'a> {
    pub phase: &'a str,
    pub name: &'a str,
    pub changes: bool,
}

impl<'a> Purpose<'a> {
    /// A command that only reads the host.
    pub const fn reads(phase: &'a str, name: &'a str) -> Self {
        Purpose {
            phase,
            name,
            changes: false,
        }
    }

    /// A command that changes the host.
    pub const fn changes(phase: &'a str, name: &'a str) -> Self {
        Purpose {
            phase,
            name,
            changes: true,
        }
    }
}

/// One command as an interposer sees it.
#[derive(Debug, Clone, Copy)]
pub struct Sent<'a> {
    /// The host's inventory name.
    pub host: &'a str,
    pub purpose: Purpose<'a>,
    pub script: &'a str,
    /// What is fed to its stdin after the script, when that is known at the start (an upload's
    /// tarball); a command that is fed lines as it runs (the armed switch) has none here.
    pub stdin: Option<&'a [u8]>,
}

/// How an interposer answers a command.
pub enum Answer {
    /// Send it to the host.
    Pass,
    /// The host's answer, without asking it: what it printed and its exit status.
    Reply {
        status: u32,
        stdout: String,
        stderr: String,
    },
    /// A conversation: lines printed in answer to each line of input.
    Dialog(Box<dyn Dialog>),
    /// The transport fails with this.
    Fail(TransportError),
    /// No answer, ever: the caller's timeout, or the operator, ends the wait.
    Hang,
}

impl Answer {
    /// A command that succeeded and printed `stdout`.
    pub fn ok(stdout: &str) -> Self {
        Answer::exit(0, stdout)
    }

    /// A command that ended with `status` after printing `stdout`.
    pub fn exit(status: u32, stdout: &str) -> Self {
        Answer::Reply {
            status,
            stdout: stdout.to_owned(),
            stderr: String::new(),
        }
    }

    /// A command that failed with `status` after printing `stderr`.
    pub fn failed(status: u32, stderr: &str) -> Self {
        Answer::Reply {
            status,
            stdout: String::new(),
            stderr: stderr.to_owned(),
        }
    }
}

/// What a [`Dialog`] does at one turn.
pub enum Turn {
    /// Print these lines and keep reading.
    Print(Vec<String>),
    /// Print these lines and end with this status.
    Exit(Vec<String>, u32),
    /// The connection is lost here.
    Lost(String),
}

/// A command that answers its input line by line, as the armed switch does.
pub trait Dialog: Send {
    /// The lines it prints when it starts.
    fn opening(&mut self) -> Vec<String>;
    /// Its answer to one line of input.
    fn answer(&mut self, line: &str) -> Turn;
    /// Its answer to the end of its input.
    fn closed(&mut self) -> Turn;
}

/// Decides, for each connection and each command of a run, what happens.
pub trait Interposer: Send + Sync {
    /// Called before `host` is connected to: an error is the connection's failure.
    fn connect(&self, _host: &Host) -> Result<(), TransportError> {
        Ok(())
    }

    /// Called before each command.
    fn command(&self, sent: &Sent<'_>) -> Answer;

    /// Called with the host's own answer to a short command this interposer let through.
    fn replied(&self, _sent: &Sent<'_>, _out: &Output) {}
}

/// A connection whose commands pass an interposer first.
pub struct Interposed {
    host: String,
    inner: Box<Connection>,
    by: Arc<dyn Interposer>,
}

impl Interposed {
    pub(super) fn new(host: &Host, inner: Connection, by: Arc<dyn Interposer>) -> Self {
        Interposed {
            host: host.name.clone(),
            inner: Box::new(inner),
            by,
        }
    }

    /// The real connection underneath.
    pub(super) fn inner(&self) -> &Connection {
        &self.inner
    }

    /// The same host reached through `inner` (a second connection for the agent), with the
    /// same interposer.
    pub(super) fn beside(&self, inner: Connection) -> Self {
        Interposed {
            host: self.host.clone(),
            inner: Box::new(inner),
            by: self.by.clone(),
        }
    }

    /// The interposer's answer to `script`.
    pub(super) fn ask(&self, purpose: Purpose<'_>, script: &str, stdin: Option<&[u8]>) -> Answer {
        self.by.command(&self.sent(purpose, script, stdin))
    }

    /// Tell the interposer what the host answered to a command it let through.
    pub(super) fn tell(
        &self,
        purpose: Purpose<'_>,
        script: &str,
        stdin: Option<&[u8]>,
        out: &Output,
    ) {
        self.by.replied(&self.sent(purpose, script, stdin), out);
    }

    fn sent<'a>(
        &'a self,
        purpose: Purpose<'a>,
        script: &'a str,
        stdin: Option<&'a [u8]>,
    ) -> Sent<'a> {
        Sent {
            host: &self.host,
            purpose,
            script,
            stdin,
        }
    }
}

/// A command answered by an interposer, as a [`super::Process`].
pub struct CannedProcess {
    collector: Option<Collector>,
    dialog: Option<Box<dyn Dialog>>,
    /// Input not yet a whole line.
    partial: Vec<u8>,
    /// How it ended, once it has.
    end: Option<Result<Output, TransportError>>,
    /// It never ends by itself.
    hangs: bool,
}

impl CannedProcess {
    /// A process for `answer` (not [`Answer::Pass`]), its output going to `on_line`.
    pub(super) fn new(answer: Answer, on_line: Option<OnLine>) -> Self {
        let mut p = CannedProcess {
            collector: Some(Collector::new(on_line)),
            dialog: None,
            partial: Vec::new(),
            end: None,
            hangs: false,
        };
        match answer {
            Answer::Pass | Answer::Hang => p.hangs = true,
            Answer::Fail(e) => p.end = Some(Err(e)),
            Answer::Reply {
                status,
                stdout,
                stderr,
            } => {
                p.print_bytes(Stream::Stdout, stdout.as_bytes());
                p.print_bytes(Stream::Stderr, stderr.as_bytes());
                p.finish(Ok((Some(status), None)));
            }
            Answer::Dialog(mut d) => {
                let lines = d.opening();
                p.print(lines);
                p.dialog = Some(d);
            }
        }
        p
    }

    fn print_bytes(&mut self, stream: Stream, data: &[u8]) {
        if let Some(c) = &mut self.collector {
            c.push(stream, data);
        }
    }

    fn print(&mut self, lines: Vec<String>) {
        for l in lines {
            self.print_bytes(Stream::Stdout, format!("{l}\n").as_bytes());
        }
    }

    fn finish(&mut self, how: Result<(Option<u32>, Option<String>), TransportError>) {
        if self.end.is_some() {
            return;
        }
        self.end = Some(match how {
            Ok((status, signal)) => match self.collector.take() {
                Some(c) => Ok(c.finish(status, signal)),
                None => Err(TransportError::Other("the command already ended".into())),
            },
            Err(e) => Err(e),
        });
    }

    fn turn(&mut self, t: Turn) {
        match t {
            Turn::Print(lines) => self.print(lines),
            Turn::Exit(lines, status) => {
                self.print(lines);
                self.finish(Ok((Some(status), None)));
            }
            Turn::Lost(why) => self.finish(Err(TransportError::Lost(why))),
        }
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<(), TransportError> {
        if let Some(Err(e)) = &self.end {
            return Err(e.clone());
        }
        self.partial.extend_from_slice(data);
        while let Some(i) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            let line = String::from_utf8_lossy(&line[..i]).into_owned();
            if self.end.is_some() {
                break;
            }
            if let Some(mut d) = self.dialog.take() {
                let t = d.answer(&line);
                self.dialog = Some(d);
                self.turn(t);
            }
        }
        Ok(())
    }

    pub async fn close_stdin(&mut self) -> Result<(), TransportError> {
        if self.end.is_none() {
            if let Some(mut d) = self.dialog.take() {
                let t = d.closed();
                self.turn(t);
            }
        }
        Ok(())
    }

    /// Stopped by the controller: a command that hangs ends here, as a stopped step does.
    pub(super) fn stop(&mut self) -> Result<Output, TransportError> {
        self.dialog = None;
        self.finish(Ok((None, Some("SIGTERM".into()))));
        self.end
            .clone()
            .unwrap_or_else(|| Err(TransportError::Other("the command never ended".into())))
    }

    pub async fn wait(&mut self) -> Result<Output, TransportError> {
        match &self.end {
            Some(r) => r.clone(),
            None if self.hangs || self.dialog.is_some() => std::future::pending().await,
            None => Err(TransportError::Other("the command never ended".into())),
        }
    }
}

/// Every command of a run as it was sent, for the dry run and for tests.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Recorded {
    pub host: String,
    pub phase: String,
    pub name: String,
    pub changes: bool,
    pub script: String,
    /// How many bytes followed the script on its stdin, when known at the start.
    pub stdin_bytes: Option<usize>,
}

/// An interposer that records every command, then asks `then` (or lets it through).
pub struct Recording {
    log: Mutex<Vec<Recorded>>,
    then: Option<Arc<dyn Interposer>>,
}

impl Recording {
    pub fn new(then: Option<Arc<dyn Interposer>>) -> Self {
        Recording {
            log: Mutex::new(Vec::new()),
            then,
        }
    }

    /// What was sent so far, in order.
    pub fn commands(&self) -> Vec<Recorded> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Interposer for Recording {
    fn connect(&self, host: &Host) -> Result<(), TransportError> {
        match &self.then {
            Some(t) => t.connect(host),
            None => Ok(()),
        }
    }

    fn replied(&self, sent: &Sent<'_>, out: &Output) {
        if let Some(t) = &self.then {
            t.replied(sent, out);
        }
    }

    fn command(&self, sent: &Sent<'_>) -> Answer {
        if let Ok(mut l) = self.log.lock() {
            l.push(Recorded {
                host: sent.host.to_owned(),
                phase: sent.purpose.phase.to_owned(),
                name: sent.purpose.name.to_owned(),
                changes: sent.purpose.changes,
                script: sent.script.to_owned(),
                stdin_bytes: sent.stdin.map(<[u8]>::len),
            });
        }
        match &self.then {
            Some(t) => t.command(sent),
            None => Answer::Pass,
        }
    }
}
