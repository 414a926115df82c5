//! How a script reaches a host's shell without appearing in any process's arguments.
//!
//! A process's arguments (`/proc/<pid>/cmdline`, what `ps aux` shows) are readable by every
//! account on a host; its environment is readable only by its own user and root. So ship never
//! puts a script in an argument list:
//!
//! - a channel (or a local `sh`) is started with the fixed text [`READ_SCRIPT`], which holds no
//!   value at all, and the script follows on its stdin ([`on_stdin`]); whatever comes after it
//!   on stdin (an artifact, the switch's word) is left for the script to read;
//! - the session's commands are lines on its shell's stdin already;
//! - a stoppable step ([`supervised`]) hands its script to the process group it starts through
//!   that process's environment, which the step's shell drops before running it.
//!
//! What a script then starts (`git`, `curl`, the operator's build commands) has arguments of its
//! own: the scripts keep credentials out of those too (see `git` and `health`).

use super::quote;

/// Exit status of [`READ_SCRIPT`] when its script did not arrive whole (nothing of it ran).
pub const SCRIPT_CUT: u32 = 97;

/// What a channel runs: read a line count, then that many lines, then run them. A script cut
/// short (the connection dropped) is never run in part. `read` takes one line at a time from a
/// pipe and nothing past it, so what follows the script on stdin stays there for it.
pub const READ_SCRIPT: &str = "IFS= read -r n || exit 97; s=; while [ \"$n\" -gt 0 ]; do \
     IFS= read -r l || exit 97; s=\"$s$l\n\"; n=$((n-1)); done; unset n l; eval \"$s\"";

/// The command line a channel is opened with: `sh -c` and [`READ_SCRIPT`], the same for every
/// command (so the user's login shell, even fish, does not matter).
pub fn channel_command() -> String {
    format!("sh -c {}", quote(READ_SCRIPT))
}

/// `script` as [`READ_SCRIPT`] reads it: its line count, then its lines.
pub fn on_stdin(script: &str) -> Vec<u8> {
    let body = script.strip_suffix('\n').unwrap_or(script);
    let lines = body.split('\n').count();
    let mut out = Vec::with_capacity(script.len() + 12);
    out.extend_from_slice(format!("{lines}\n").as_bytes());
    out.extend_from_slice(body.as_bytes());
    out.push(b'\n');
    out
}

/// Run `script` so that it lives only as long as the controller holds its stdin open: the
/// script runs in a session of its own (so its whole process tree can be signalled), and a
/// watcher waits for end-of-file on stdin. When stdin closes before the script ends (the
/// controller timed out, was interrupted, or died and took its connection with it), the
/// watcher sends SIGTERM to the script's process group (retrying while the group is still being
/// set up); a killer it starts first sends SIGKILL to what is left of the group 5 s later
/// (it ends early when nothing is left). The killer is on its own: the step's end, and the
/// session's next command, do not wait for it, and a process that ignores SIGTERM still dies. Without it, a build abandoned by a dead controller would
/// keep running, and writing into a release that is being removed. The exit status is the
/// script's (143 when stopped). Any line on stdin stops it too, and it ends only once the
/// watcher has: a session's next command line is never read by a leftover watcher.
///
/// The script travels to the group's shell in `SHIP_STEP`, set for that one command (never in
/// its arguments), and is removed from the environment before it runs: the step's own
/// processes do not inherit it.
pub fn supervised(script: &str) -> String {
    let run = quote("s=$SHIP_STEP; unset SHIP_STEP; eval \"$s\"");
    format!(
        "exec 3<&0 </dev/null\n\
         if command -v setsid >/dev/null 2>&1; then SHIP_STEP={s} setsid sh -c {run} & p=$!; g=-$p; \
         else SHIP_STEP={s} sh -c {run} & p=$!; g=$p; fi\n\
         {{ read -r _ <&3; \
         {{ i=0; while [ $i -lt 50 ] && {{ kill -0 $g || kill -0 $p; }}; do sleep 0.1 || {{ sleep 5; break; }}; i=$((i+1)); done; \
         kill -KILL $g; }} 3<&- & \
         while ! kill -TERM $g; do kill -0 $p || exit 0; sleep 1; done; }} >/dev/null 2>&1 & w=$!\n\
         exec 3<&-\n\
         wait $p; rc=$?\n\
         kill $w 2>/dev/null; wait $w 2>/dev/null\n\
         exit $rc\n",
        s = quote(script)
    )
}

/// The session's driver, written to its `sh -s` once (POSIX sh: dash, bash, BusyBox ash): it
/// runs each command line ([`session_command`]) in a subshell and prints an end marker with
/// the exit status, `<token> <id> <status>`, on stdout and on stderr.
/// `stop` and `go` are no-ops at the prompt, for a word that arrives after its command ended.
pub fn session_driver(token: &str) -> String {
    format!(
        "S={token}\n\
         stop() {{ :; }}\n\
         go() {{ :; }}\n\
         ship_end() {{ printf '%s %s %s\\n' \"$S\" \"$1\" \"$2\"; \
         printf '%s %s %s\\n' \"$S\" \"$1\" \"$2\" >&2; }}\n\
         ship_q() {{ ship_s=$2; ( set --; eval \"$ship_s\" ) </dev/null; ship_end \"$1\" $?; }}\n\
         ship_i() {{ ship_s=$2; ( set --; eval \"$ship_s\" ); ship_end \"$1\" $?; }}\n\
         ship_end 0 0\n"
    )
}

/// The line that runs `script` as command `id` in a session: with `line_input`, the script reads
/// the lines the controller writes; otherwise its stdin is `/dev/null`. The script is one
/// quoted word on the session shell's stdin, never in any process's arguments.
pub fn session_command(id: u64, script: &str, line_input: bool) -> String {
    let f = if line_input { "ship_i" } else { "ship_q" };
    format!("{f} {id} {}\n", quote(script))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// `sh -c READ_SCRIPT` fed `input`, then end-of-file: its output and exit status.
    fn run(input: &[u8]) -> (String, Option<i32>) {
        let mut child = Command::new("sh")
            .args(["-c", READ_SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh starts");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input).expect("write");
        drop(stdin);
        let out = child.wait_with_output().expect("sh ends");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status.code(),
        )
    }

    #[test]
    fn a_script_on_stdin_runs_whole_and_leaves_the_rest_of_stdin_to_it() {
        let script = "printf '%s\\n' 'a  b' \"$HOME\" >/dev/null\n\
                      echo 'x\\y'\nwhile IFS= read -r l; do echo \"got $l\"; done\nexit 3";
        let mut input = on_stdin(script);
        input.extend_from_slice(b"one\ntwo\n");
        assert_eq!(
            run(&input),
            ("x\\y\ngot one\ngot two\n".to_owned(), Some(3))
        );
    }

    #[test]
    fn a_script_cut_short_never_runs_in_part() {
        let full = on_stdin("echo first\necho second\n");
        assert_eq!(
            run(&full[..full.len() - 8]),
            (String::new(), Some(SCRIPT_CUT as i32))
        );
    }

    #[test]
    fn the_channel_command_holds_no_value() {
        assert!(!channel_command().contains("SECRET"));
        assert_eq!(channel_command(), format!("sh -c {}", quote(READ_SCRIPT)));
    }

    #[test]
    fn a_supervised_script_is_not_in_any_argument_list() {
        let script = "echo \"$SHIP_STEP\" | grep -c . ; echo token-7f3a9 >/dev/null";
        let wrapped = supervised(script);
        let mut child = Command::new("sh")
            .args(["-c", &wrapped])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh runs");
        // Stdin held open while it runs: closing it would stop the step.
        let stdin = child.stdin.take();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out)
            .expect("read");
        drop(stdin);
        child.wait().expect("sh ends");
        // The step's own shell dropped SHIP_STEP before running: nothing inherits it.
        assert_eq!(out.trim(), "0");
        assert!(!wrapped.contains(&format!("sh -c {}", quote(script))));
    }
}
