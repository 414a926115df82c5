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
    s.push_str("true\n");
    s
}

/// `ship exec`: the operator's `command`, as written, in `deploy_to/current` (or `deploy_to`
/// when there is no current release yet, or wherever the login lands when neither exists).
pub fn exec(deploy_to: &str, command: &str) -> String {
    let d = quote(deploy_to);
    format!("cd {d}/current 2>/dev/null || cd {d} 2>/dev/null || true\n{command}")
}
