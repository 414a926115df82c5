//! `ship check`'s proof, in a scratch directory, that the switch is an atomic rename here; and
//! `ship exec`'s command.

use super::*;

/// What [`check`] answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReply {
    /// `Ok`: `current` is replaced by one rename here; `Err`: why not.
    pub rename: Option<Result<(), String>>,
    pub shared_missing: Vec<String>,
    pub shared_ok: Vec<String>,
    /// nginx configuration files that serve `deploy_to/current`: each with whether it passes
    /// PHP the release's real path (`$realpath_root`) rather than the path through `current`.
    pub web: Vec<(String, bool)>,
}

impl CheckReply {
    pub fn parse(stdout: &str) -> Self {
        let mut r = CheckReply::default();
        for line in stdout.lines() {
            if let Some(v) = line.strip_prefix("rename=") {
                r.rename = Some(if v == "atomic" {
                    Ok(())
                } else {
                    Err(v.to_owned())
                });
            } else if let Some(p) = line.strip_prefix("shared_missing=") {
                r.shared_missing.push(p.to_owned());
            } else if let Some(p) = line.strip_prefix("shared_ok=") {
                r.shared_ok.push(p.to_owned());
            } else if let Some(f) = line.strip_prefix("web_realpath=") {
                r.web.push((f.to_owned(), true));
            } else if let Some(f) = line.strip_prefix("web_document_root=") {
                r.web.push((f.to_owned(), false));
            }
        }
        r
    }
}

/// A proof, in a scratch directory under `deploy_to`, that the switch is an atomic rename here:
/// the staged link keeps its inode when moved over the old one (an unlink and a new symlink
/// would make a new inode), and the old link is replaced in one step. Also checks that the
/// shared paths exist. Prints `key=value` lines.
pub fn check(deploy_to: &str, shared_files: &[String], shared_dirs: &[String]) -> String {
    // deploy_to may not exist yet on a new host: the proof runs where it will live.
    let mut s = format!(
        "mkdir -p {q}/.ship && {cd} || exit 1\n\
         ino() {{ stat -c %i \"$1\" 2>/dev/null || ls -di \"$1\" | awk '{{print $1}}'; }}\n\
         t=.ship/check-$$; rm -rf \"$t\"; mkdir -p \"$t/stage\" \"$t/a\" \"$t/b\" || {{ echo rename=cannot-create; exit 0; }}\n\
         ln -s a \"$t/current\" && ln -s b \"$t/stage/current\" && before=$(ino \"$t/stage/current\") && \
         mv -f \"$t/stage/current\" \"$t/\" && after=$(ino \"$t/current\") && \
         if [ \"$(readlink \"$t/current\")\" = b ] && [ \"$before\" = \"$after\" ] && \
         [ ! -e \"$t/stage/current\" ]; then echo rename=atomic; \
         else echo \"rename=not-atomic $before $after\"; fi\n\
         rm -rf \"$t\"\n",
        cd = cd(deploy_to),
        q = quote(deploy_to),
    );
    for (path, test) in shared_files
        .iter()
        .map(|f| (f, "-f"))
        .chain(shared_dirs.iter().map(|d| (d, "-d")))
    {
        s.push_str(&format!(
            "if [ {test} {p} ]; then printf 'shared_ok=%s\\n' {q}; \
             else printf 'shared_missing=%s\\n' {q}; fi\n",
            p = quote(&format!("shared/{path}")),
            q = quote(path),
        ));
    }
    // The web server, where it can be read: an nginx file that serves `current` and hands
    // requests to PHP (fastcgi) passes either `$realpath_root` or, through `current`, the path
    // OPcache keeps serving the old release under.
    s.push_str(&format!(
        "for f in /etc/nginx/nginx.conf /etc/nginx/conf.d/*.conf /etc/nginx/sites-enabled/*; do \
         [ -f \"$f\" ] && [ -r \"$f\" ] || continue; grep -qF {cur} \"$f\" || continue; \
         if grep -q 'realpath_root' \"$f\"; then printf 'web_realpath=%s\\n' \"$f\"; \
         elif grep -q 'fastcgi' \"$f\"; then printf 'web_document_root=%s\\n' \"$f\"; fi; \
         done\n",
        cur = quote(&format!("{deploy_to}/current"))
    ));
    s.push_str("true\n");
    s
}

/// `ship exec`: the operator's `command`, as written, in `deploy_to/current` (or `deploy_to`
/// when there is no current release yet, or wherever the login lands when neither exists).
pub fn exec(deploy_to: &str, command: &str) -> String {
    let d = quote(deploy_to);
    format!("cd {d}/current 2>/dev/null || cd {d} 2>/dev/null || true\n{command}")
}

/// What a deploy's steps will need on a host, checked without running them: each program the
/// steps start (`command -v`, in the same non-login shell the steps get), `sudo -n` when a step
/// uses sudo, and curl or wget for an HTTP health check. Prints `cmd_ok=`, `cmd_missing=`,
/// `sudo=ok|password`, `health_tool=curl|wget|none` lines.
pub fn needs(programs: &[String], sudo: bool, http_probe: bool) -> String {
    let mut s = String::new();
    if !programs.is_empty() {
        let words: Vec<String> = programs.iter().map(|p| quote(p).into_owned()).collect();
        s.push_str(&format!(
            "for w in {}; do if command -v \"$w\" >/dev/null 2>&1; then echo \"cmd_ok=$w\"; \
             else echo \"cmd_missing=$w\"; fi; done\n",
            words.join(" ")
        ));
    }
    if sudo {
        s.push_str(
            "if sudo -n true >/dev/null 2>&1; then echo sudo=ok; else echo sudo=password; fi\n",
        );
    }
    if http_probe {
        s.push_str(
            "if command -v curl >/dev/null 2>&1; then echo health_tool=curl; \
             elif command -v wget >/dev/null 2>&1; then echo health_tool=wget; \
             else echo health_tool=none; fi\n",
        );
    }
    s.push_str("true\n");
    s
}

/// What [`needs`] answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NeedsReply {
    pub found: Vec<String>,
    pub missing: Vec<String>,
    /// `Some(true)`: `sudo -n` works; `Some(false)`: it wants a password.
    pub sudo: Option<bool>,
    pub health_tool: Option<String>,
}

impl NeedsReply {
    pub fn parse(stdout: &str) -> Self {
        let mut r = NeedsReply::default();
        for line in stdout.lines() {
            match line.split_once('=') {
                Some(("cmd_ok", w)) => r.found.push(w.to_owned()),
                Some(("cmd_missing", w)) => r.missing.push(w.to_owned()),
                Some(("sudo", v)) => r.sudo = Some(v == "ok"),
                Some(("health_tool", t)) => r.health_tool = Some(t.to_owned()),
                _ => {}
            }
        }
        r
    }
}

/// The program a step's command starts, when that can be told from its text: the first word
/// after any `VAR=value` assignments, unless it is a shell builtin or keyword, a path into the
/// release (`./vendor/bin/…`), or made by an expansion.
pub fn program_of(command: &str) -> Option<String> {
    const SHELL: &[&str] = &[
        "cd", "export", "echo", "printf", "test", "[", "true", "false", "set", "exec", ".",
        "source", "if", "for", "while", "until", "case", "{", "(", "!", "eval", "command", "umask",
        "ulimit", "trap", "exit", "return", "read", "wait", "kill", "unset", "shift",
    ];
    let words = shlex::split(command)?;
    let word = words
        .into_iter()
        .find(|w| !(w.contains('=') && !w.starts_with('=') && !w.starts_with('/')))?;
    let plain = word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '/'));
    let in_release = !word.starts_with('/') && word.contains('/');
    (plain && !in_release && !SHELL.contains(&word.as_str())).then_some(word)
}

/// The command of `ship ssh`: an interactive login shell in `deploy_to/current` (or
/// `deploy_to` before the first deploy).
pub fn interactive_shell(deploy_to: &str) -> String {
    let d = quote(deploy_to);
    format!("cd {d}/current 2>/dev/null || cd {d} || exit 1; exec \"${{SHELL:-/bin/sh}}\" -l")
}
