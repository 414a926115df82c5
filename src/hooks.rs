//! Local hooks: commands run on the controller around a deploy (`hooks:` in the inventory),
//! e.g. to post to a chat webhook. They get the run's details in their environment.

use std::path::Path;
use std::time::Duration;

/// Upper bound for one hook command.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// Run `commands` one after the other with `sh -c` in `dir`, with `env` added to the
/// environment. Their output goes to stderr (stdout stays free for `--json`). The first
/// failure stops the list and is returned as a message naming the command.
pub async fn run(
    which: &str,
    commands: &[String],
    env: &[(&str, String)],
    dir: &Path,
) -> Result<(), String> {
    for cmd in commands {
        let mut c = tokio::process::Command::new("sh");
        c.arg("-c")
            .arg(cmd)
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::io::stderr())
            .stderr(std::io::stderr())
            .kill_on_drop(true);
        for (k, v) in env {
            c.env(k, v);
        }
        let status = match tokio::time::timeout(HOOK_TIMEOUT, c.status()).await {
            Err(_) => {
                return Err(format!(
                    "{which} hook `{cmd}` did not finish within {}s",
                    HOOK_TIMEOUT.as_secs()
                ));
            }
            Ok(Err(e)) => return Err(format!("{which} hook `{cmd}` could not start: {e}")),
            Ok(Ok(s)) => s,
        };
        if !status.success() {
            let how = status
                .code()
                .map_or_else(|| "was killed".to_owned(), |c| format!("exited with {c}"));
            return Err(format!("{which} hook `{cmd}` {how}"));
        }
    }
    Ok(())
}
