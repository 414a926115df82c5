//! Reading a host without changing anything: the preflight script and its `key=value` reply.

use super::*;

/// How many journal lines a detailed preflight reads (rollback targets, `ship releases`).
pub const HISTORY_LINES: usize = 200;

/// Inspect a host without changing anything. Prints `key=value` lines read by
/// [`Preflight::parse`]. `detail` adds each release's revision and the journal's last
/// [`HISTORY_LINES`] lines (for rollback and `ship releases`).
pub fn preflight(deploy_to: &str, tools: &[&str], detail: bool) -> String {
    let detail = if detail {
        format!(
            "\x20 for r in releases/*; do [ -f \"$r/REVISION\" ] && read -r v < \"$r/REVISION\" && \
             echo \"revision=${{r#releases/}} $v\"; done\n\
             \x20 if [ -f .ship/history ]; then tail -n {HISTORY_LINES} .ship/history | \
             sed 's/^/history=/'; echo; fi\n"
        )
    } else {
        String::new()
    };
    // Few processes: the shell's own `read` and expansions do what `head` and `awk` would.
    let mut s = format!(
        "D={d}\n\
         if [ -d \"$D\" ]; then\n\
         \x20 cd \"$D\" || exit 1\n\
         \x20 if [ -w . ]; then echo writable=yes; else echo writable=no; fi\n\
         \x20 if [ -L current ]; then echo \"current=$(readlink current)\"; \
         [ -f current/REVISION ] && read -r v < current/REVISION && echo \"current_revision=$v\"; \
         elif [ -e current ]; then echo current_not_a_link=yes; fi\n\
         \x20 for r in releases/*; do [ -d \"$r\" ] || continue; echo \"release=${{r#releases/}}\"; \
         [ -e \"$r/REVISION\" ] || echo \"incomplete=${{r#releases/}}\"; done\n\
         \x20 for s in .ship/stage-*; do [ -d \"$s\" ] && echo \"staged=${{s#.ship/stage-}}\"; done\n\
         \x20 if [ -d .ship/lock ]; then echo \"lock=$(head -c 4000 .ship/lock/owner 2>/dev/null | tr '\\n' ' ')\"; fi\n\
         \x20 for b in .ship/bad/*; do [ -e \"$b\" ] && echo \"bad=${{b#.ship/bad/}}\"; done\n\
         \x20 for m in .ship/prepared/*; do [ -f \"$m\" ] && read -r k < \"$m\" && echo \"prepared=${{m##*/}} $k\"; done\n\
         {detail}\
         else\n\
         \x20 P=\"$D\"; while [ ! -d \"$P\" ]; do P=$(dirname \"$P\"); done\n\
         \x20 if [ -w \"$P\" ]; then echo writable=yes; else echo writable=no; fi\n\
         \x20 cd \"$P\" || exit 1\n\
         fi\n\
         df -Pk . 2>/dev/null | {{ read -r _; read -r _ _ _ a _; echo \"disk_free_kb=$a\"; }}\n",
        d = quote(deploy_to)
    );
    for tool in tools {
        s.push_str(&format!(
            "command -v {t} >/dev/null 2>&1 && echo tool={t}\n",
            t = quote(tool)
        ));
    }
    s.push_str("true\n");
    s
}

/// What [`preflight`] found on a host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preflight {
    pub writable: bool,
    /// Where `current` points, as written in the link.
    pub current: Option<String>,
    /// The `REVISION` of the release `current` points to.
    pub current_revision: Option<String>,
    /// `current` exists but is not a symlink (a server set up by hand).
    pub current_not_a_link: bool,
    /// Entries of `releases/`, sorted by name.
    pub releases: Vec<String>,
    /// Owner details of a held lock.
    pub lock: Option<String>,
    /// Releases without a `REVISION` file: their prepare never got past linking.
    pub incomplete: Vec<String>,
    /// Releases with a staged `current` link waiting in `.ship/`: prepared, never switched.
    pub staged: Vec<String>,
    /// With `detail`: the last line of `.ship/history`.
    pub last_journal: Option<String>,
    /// Releases marked bad (rolled back from): kept for inspection, never a rollback target.
    pub bad: Vec<String>,
    /// Releases built by a deploy that failed at the barrier, kept with their build key: a
    /// later deploy of the same build reuses them. Never a rollback target.
    pub prepared: Vec<(String, String)>,
    /// With `detail`: each release's `REVISION`, by id.
    pub revisions: Vec<(String, String)>,
    /// With `detail`: the journal's last lines, oldest first.
    pub history: Vec<String>,
    pub tools: Vec<String>,
    pub disk_free_kb: Option<u64>,
}

impl Preflight {
    /// Read the `key=value` lines printed by [`preflight`]; unknown lines are ignored.
    pub fn parse(output: &str) -> Self {
        let mut p = Preflight::default();
        for line in output.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key {
                "writable" => p.writable = value == "yes",
                "current" => p.current = Some(value.to_owned()),
                "current_revision" => p.current_revision = Some(value.trim().to_owned()),
                "current_not_a_link" => p.current_not_a_link = true,
                "release" => p.releases.push(value.to_owned()),
                "lock" => p.lock = Some(value.trim().to_owned()),
                "incomplete" => p.incomplete.push(value.to_owned()),
                "staged" => p.staged.push(value.to_owned()),
                "tool" => p.tools.push(value.to_owned()),
                "bad" => p.bad.push(value.to_owned()),
                "prepared" => {
                    if let Some((id, key)) = value.split_once(' ') {
                        p.prepared.push((id.to_owned(), key.trim().to_owned()));
                    }
                }
                "revision" => {
                    if let Some((id, rev)) = value.split_once(' ') {
                        p.revisions.push((id.to_owned(), rev.trim().to_owned()));
                    }
                }
                "history" => p.history.push(value.to_owned()),
                "disk_free_kb" => p.disk_free_kb = value.trim().parse().ok(),
                _ => {}
            }
        }
        p.releases.sort();
        p.last_journal = p
            .history
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_owned());
        p
    }

    /// Whether the host has this release, completely prepared (its `REVISION` written).
    pub fn has_complete(&self, id: &str) -> bool {
        self.releases.iter().any(|r| r == id) && !self.incomplete.iter().any(|r| r == id)
    }

    /// The release id `current` points to, when it points into `releases/`.
    pub fn current_release(&self) -> Option<&str> {
        let target = self.current.as_deref()?.trim_end_matches('/');
        let (_, id) = target.rsplit_once("releases/")?;
        (!id.is_empty() && !id.contains('/')).then_some(id)
    }
}
