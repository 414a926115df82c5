//! Remote commands as data.
//!
//! Every command ship runs on a host is rendered here, by pure functions from typed inputs, so
//! the exact shell text is reviewable and unit-tested without SSH, and `--dry-run` can print the
//! same commands a real run sends. Values are quoted in one place ([`quote`]). Paths inside
//! `deploy_to` are relative to it (every script starts with `cd`), and every link ship makes is
//! relative, so a deploy directory can be inspected or moved without dangling links.

mod quote;
mod script;

pub use quote::quote;
pub use script::{READ_SCRIPT, SCRIPT_CUT, channel_command, on_stdin, supervised};

use crate::inventory::{EnvVar, HealthCheck, Probe, StepSpec, Writable, WritableMode};

/// Exit status a lock command uses when the lock is held by someone else.
pub const LOCK_HELD: u32 = 75;
/// Exit status of the armed switch when it was told not to switch (controller went away).
pub const SWITCH_CANCELLED: u32 = 76;
/// Exit status of the armed switch when its rename failed: `current` is unchanged. Any other
/// failure (the shell killed, no status at all) leaves it unknown whether the rename ran.
pub const SWITCH_RENAME_FAILED: u32 = 77;
/// The line the armed switch prints once it waits for the word: the controller fires only when
/// every host has printed it, so slow shell start-up (login rc files) cannot spread the switch.
pub const SWITCH_READY: &str = "ship-switch-ready";
/// The ready line of an armed switch that can be scheduled: it answers `t` with its clock and
/// takes `at <unix µs>` (see [`armed_switch`]).
pub const SWITCH_READY_AT: &str = "ship-switch-ready at";
/// Most a scheduled switch waits for its instant, whatever it was told: a bad clock estimate
/// delays the host's switch by at most this much.
pub const SWITCH_MAX_WAIT_MS: u64 = 1000;
/// Exit status of [`stage_existing`] when the release to switch to is missing or incomplete.
pub const RELEASE_MISSING: u32 = 78;
/// Exit status of [`release_lock`] when the lock on the host is no longer the one shown.
pub const LOCK_CHANGED: u32 = 79;

/// A step of the prepare phase: a name for progress and errors, and the script to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub script: String,
    /// The step reads the release payload on stdin.
    pub takes_payload: bool,
    /// The step talks to the git server: with `forward_agent`, it gets the controller's agent.
    pub reaches_git: bool,
    /// One of ship's own short steps (a few `mkdir`/`ln`): it runs as it is, not supervised as a
    /// stoppable build step is, and an interruption waits the milliseconds it takes.
    pub quick: bool,
}

/// The credential helper git steps use when the git URL held credentials: it answers from
/// `SHIP_GIT_USER` and `SHIP_GIT_PASSWORD` in its environment (set by the step, never in an
/// argument list; git runs the helper with this text, which holds no value).
pub const GIT_CREDENTIAL_HELPER: &str = "!f() { test \"$1\" = get && printf 'username=%s\\npassword=%s\\n' \"$SHIP_GIT_USER\" \"$SHIP_GIT_PASSWORD\"; }; f";

/// In `deploy_to`, under our deploy lock: git's lock files in the mirror (`repo/config.lock`,
/// `repo/packed-refs.lock`, a ref's `.lock`…) left by a git that was stopped half-way (a deploy
/// interrupted during its fetch) would make every later fetch fail with "File exists". They are
/// removed when no git runs in `deploy_to` (no process whose program is git and whose working
/// directory is in `deploy_to`, from `/proc`); while one does, or where that cannot be told (no
/// `/proc`), the step stops and says what to do.
const STALE_GIT_LOCKS: &str = "{ l=$(find repo -name '*.lock' -type f 2>/dev/null | head -n 1); \
    [ -z \"$l\" ] || { \
    [ -d /proc/self ] || { echo \"$l exists and this host has no /proc to tell whether a git \
    still runs (hint: if none does, remove it: rm $PWD/$l)\"; exit 1; }; \
    h=$PWD; for p in /proc/[0-9]*; do case $(readlink \"$p/exe\" 2>/dev/null) in */git|*/git-*) \
    case $(readlink \"$p/cwd\" 2>/dev/null) in \"$h\"|\"$h\"/*) echo \"$l exists and git \
    (pid ${p#/proc/}) still runs in $h (hint: wait for it to end, or stop it, then deploy \
    again)\"; exit 1;; esac;; esac; done; \
    find repo -name '*.lock' -type f -exec rm -f {} + && \
    echo \"removed git's lock files in repo/ left by a git that was stopped\"; }; }";

/// How a streamed tarball is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    /// Needs `zstd` on the host.
    Zstd,
}

/// What a release is made from, as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A tarball streamed on stdin.
    Tarball { compression: Compression },
    /// A git repository mirrored in `repo/`, exported at `commit` (with its submodules).
    /// `known_hosts`: the git server's host keys, written to `.ship/git_known_hosts` and used
    /// instead of the host's own known_hosts.
    Git {
        url: String,
        commit: String,
        known_hosts: Option<String>,
    },
}

/// Everything the commands of one release on one host are built from.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    pub deploy_to: &'a str,
    pub release_id: &'a str,
    pub revision: &'a str,
    pub delivery: &'a Delivery,
    pub shared_files: &'a [String],
    pub shared_dirs: &'a [String],
    /// Paths copied from the current release into the new one before the build steps.
    pub copy_from_previous: &'a [String],
    pub build: &'a [StepSpec],
    pub writable: Option<&'a Writable>,
    pub env: &'a [EnvVar],
    /// The tarball itself, when the upload may carry it in its command (see [`INLINE_MAX`]).
    pub inline_payload: Option<&'a [u8]>,
}

/// A tarball up to this size (as sent) travels inside the upload command, in the host's one
/// shell, instead of through a channel of its own: a channel costs a process start on the
/// host (and the login shell's rc files), which outweighs a few more bytes of command.
pub const INLINE_MAX: usize = 32 * 1024;

/// `bytes` as a single-quoted `printf` format that prints exactly them: letters and digits as
/// they are, every other byte as a three-digit octal escape (NUL included; dash, bash and
/// BusyBox's printf all take them).
pub fn printf_bytes(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 4 + 2);
    s.push('\'');
    for &b in bytes {
        if b.is_ascii_alphanumeric() {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\{b:03o}"));
        }
    }
    s.push('\'');
    s
}

fn cd(deploy_to: &str) -> String {
    format!("cd {}", quote(deploy_to))
}

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
         elif [ -e current ]; then echo current_not_a_link=yes; fi\n\
         \x20 for r in releases/*; do [ -d \"$r\" ] || continue; echo \"release=${{r#releases/}}\"; \
         [ -e \"$r/REVISION\" ] || echo \"incomplete=${{r#releases/}}\"; done\n\
         \x20 for s in .ship/stage-*; do [ -d \"$s\" ] && echo \"staged=${{s#.ship/stage-}}\"; done\n\
         \x20 if [ -d .ship/lock ]; then echo \"lock=$(head -c 4000 .ship/lock/owner 2>/dev/null | tr '\\n' ' ')\"; fi\n\
         \x20 for b in .ship/bad/*; do [ -e \"$b\" ] && echo \"bad=${{b#.ship/bad/}}\"; done\n\
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
                "current_not_a_link" => p.current_not_a_link = true,
                "release" => p.releases.push(value.to_owned()),
                "lock" => p.lock = Some(value.trim().to_owned()),
                "incomplete" => p.incomplete.push(value.to_owned()),
                "staged" => p.staged.push(value.to_owned()),
                "tool" => p.tools.push(value.to_owned()),
                "bad" => p.bad.push(value.to_owned()),
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

/// The lock's owner record (`.ship/lock/owner`, one JSON object): who holds the lock, from
/// where, for which release. Unknown or missing fields are tolerated (older or newer ship).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LockOwner {
    /// Unique per run: only the run that took the lock releases it.
    pub token: String,
    /// `deploy` or `rollback`: what the holder was doing.
    pub kind: String,
    pub user: String,
    /// Host name of the machine ship ran on.
    pub controller: String,
    pub pid: u32,
    /// The release being deployed (staged), or rolled back to (a release that exists).
    pub release: String,
    /// RFC 3339, UTC.
    pub started: String,
    pub ci_job: Option<String>,
}

impl LockOwner {
    /// Read an owner record; `None` when it is not one (a lock made by hand, a torn write).
    pub fn parse(raw: &str) -> Option<LockOwner> {
        serde_json::from_str(raw.trim()).ok()
    }

    /// The release the holder was staging: a deploy's new release. A rollback stages nothing
    /// (its release is one the hosts already had), so it has none.
    pub fn staged_release(&self) -> Option<&str> {
        (self.kind.is_empty() || self.kind == "deploy")
            .then_some(self.release.as_str())
            .filter(|r| !r.is_empty())
    }
}

/// Take the deploy lock: an atomic `mkdir`, then the owner details. Creates the directory
/// skeleton on a first deploy. Exits [`LOCK_HELD`] and prints the holder when already locked.
pub fn lock(deploy_to: &str, owner_json: &str) -> String {
    format!(
        "{{ {{ [ -d {d}/releases ] && [ -d {d}/shared ] && [ -d {d}/.ship ]; }} || \
         mkdir -p {d}/releases {d}/shared {d}/.ship; }} && {cd} && \
         if mkdir .ship/lock 2>/dev/null; then printf '%s\\n' {owner} > .ship/lock/owner; \
         else echo \"lock held: $(head -c 4000 .ship/lock/owner 2>/dev/null)\"; exit {held}; fi && \
         {SWEEP} && \
         for r in releases/*; do [ -d \"$r\" ] && echo \"release=${{r#releases/}}\"; done; true",
        d = quote(deploy_to),
        cd = cd(deploy_to),
        owner = quote(owner_json),
        held = LOCK_HELD,
    )
}

/// In `deploy_to`, holding the lock: what runs that died left in `.ship/` — staged links
/// (`stage-<id>`), a checkout's tarball and work tree, a revert's link — removed, each printed as
/// `removed=<path>`. While the lock is held no other run can be using them; a command of a dead
/// run can still reach its host late (a packet held by a cut network) and make one, which the
/// next run then sweeps. Starts no process when there is nothing to remove.
const SWEEP: &str = "for f in .ship/stage-* .ship/*.tar .ship/work-* .ship/revert; do \
    if [ -e \"$f\" ] || [ -L \"$f\" ]; then rm -rf \"$f\" && echo \"removed=$f\"; fi; done";

/// Rewrite our lock's owner record (the release id changed while we waited for the lock).
pub fn relock(deploy_to: &str, token: &str, owner_json: &str) -> String {
    format!(
        "{cd} && grep -qF {t} .ship/lock/owner && printf '%s\\n' {owner} > .ship/lock/owner",
        cd = cd(deploy_to),
        t = quote(token),
        owner = quote(owner_json),
    )
}

/// Release the lock, but only if it is still ours (its owner record, one line, carries our
/// token).
pub fn unlock(deploy_to: &str, token: &str) -> String {
    format!(
        "{cd} && {READ_LOCK_OWNER}; case $o in *{t}*) rm -rf .ship/lock;; esac",
        cd = cd(deploy_to),
        t = quote(token),
    )
}

/// Clear what a run that died left behind (`ship lock release`): its lock, what it left in
/// `.ship/` (staged links, a checkout's scratch files: see [`SWEEP`]), and, when `release_id`
/// was `staged` (a deploy's new release, never a rollback's target), that release.
/// The release is removed only while it is incomplete (no `REVISION`: its prepare never
/// finished); one that is `current` here is kept (`kept=`), and so is a complete one
/// (`complete=`): ship never deletes a finished release the operator did not name. Prints what
/// it removed. Nothing in `shared/` is touched.
///
/// Only the lock that was shown to the operator goes: `token` is the one its owner record had
/// (`None`: it had no owner record ship could read). When the lock now on the host is another
/// one (its holder finished and a new run took the lock in between), nothing is removed: it
/// prints `lock-changed=<owner record>` and exits [`LOCK_CHANGED`]. When there is no lock any
/// more, nothing is removed either (`gone=.ship/lock`): its holder ended on its own.
pub fn release_lock(
    deploy_to: &str,
    release_id: Option<&str>,
    staged: bool,
    token: Option<&str>,
) -> String {
    let same = match token {
        Some(t) => format!("case $o in *{}*) ;; *) false;; esac", quote(t)),
        // A record that has a token now is another run's lock.
        None => "case $o in *'\"token\"'*) false;; esac".to_owned(),
    };
    let mut s = format!(
        "{cd} || exit 1\n\
         [ -d .ship/lock ] || {{ echo gone=.ship/lock; exit 0; }}\n\
         {READ_LOCK_OWNER}; {same} || {{ echo \"lock-changed=$o\"; exit {LOCK_CHANGED}; }}\n",
        cd = cd(deploy_to),
    );
    s.push_str(SWEEP);
    s.push('\n');
    if let Some(id) = release_id.filter(|id| staged && is_release_id(id)) {
        let rel = quote(&format!("releases/{id}")).into_owned();
        s.push_str(&format!(
            "if [ -d {rel} ]; then if [ \"$(readlink current 2>/dev/null)\" = {rel} ]; then \
             echo kept={rel}; elif [ -f {rel}/REVISION ]; then echo complete={rel}; \
             else rm -rf {rel} && echo removed={rel}; fi; fi\n"
        ));
    }
    // The lock last, read again: while it stood no other run could start here.
    s.push_str(&format!(
        "{READ_LOCK_OWNER}; if {same}; then rm -rf .ship/lock && echo removed=.ship/lock; \
         else echo \"lock-changed=$o\"; exit {LOCK_CHANGED}; fi\n"
    ));
    s
}

/// Append one line to the host's deploy journal.
pub fn journal(deploy_to: &str, json_line: &str) -> String {
    format!("{} && {}", cd(deploy_to), append_journal(json_line))
}

/// In `deploy_to`: append `json_line` to the journal.
fn append_journal(json_line: &str) -> String {
    format!("printf '%s\\n' {} >> .ship/history", quote(json_line))
}

/// In `deploy_to`: `$o` set to the lock's owner record (one line; empty when there is none).
const READ_LOCK_OWNER: &str =
    "o= && { [ ! -f .ship/lock/owner ] || read -r o < .ship/lock/owner; }";

/// The link target for a shared path, relative to where the link sits in the release.
pub fn shared_link_target(path: &str) -> String {
    let depth = path.split('/').count();
    format!("{}shared/{}", "../".repeat(depth + 1), path)
}

fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(p, _)| p)
}

/// The steps that stage a release on a host, in order. Nothing here touches `current`, and
/// nothing in `shared/` is ever overwritten or removed: a shared path is only created when it
/// does not exist yet (seeded from the release when the release has it).
pub fn prepare(plan: &Plan) -> Vec<Step> {
    let rel = format!("releases/{}", plan.release_id);
    let q_rel = quote(&rel).into_owned();
    let cd = cd(plan.deploy_to);
    // No -p: an existing release directory is never written into.
    let create = format!("{cd} && mkdir {q_rel}");
    let mut steps = Vec::new();
    let inline = plan
        .inline_payload
        .filter(|p| p.len() <= INLINE_MAX)
        .map(|p| format!("printf {} | ", printf_bytes(p)));
    match plan.delivery {
        // The release directory is made by the command the tarball goes into: inside it when
        // small (quick, in the host's shell), else streamed to it through a channel.
        Delivery::Tarball { compression } => {
            let untar = match compression {
                Compression::None => Some("tar -xf -"),
                Compression::Gzip => Some("tar -xzf -"),
                Compression::Zstd => None,
            };
            let (script, inline) = match (untar, inline) {
                (Some(untar), Some(printf)) => {
                    (format!("{create} && {printf}{untar} -C {q_rel}"), true)
                }
                (Some(untar), None) => (format!("{create} && {untar} -C {q_rel}"), false),
                // Through a file, not a pipe: a failed decompression must fail the step.
                (None, _) => {
                    let tmp = quote(&format!(".ship/{}.tar", plan.release_id)).into_owned();
                    let script = format!(
                        "{create} && zstd -q -d -c > {tmp} && tar -xf {tmp} -C {q_rel}; rc=$?; \
                         rm -f {tmp}; exit $rc"
                    );
                    (script, false)
                }
            };
            steps.push(Step {
                name: "upload".into(),
                script,
                takes_payload: !inline,
                reaches_git: false,
                quick: inline,
            });
        }
        Delivery::Git {
            url,
            commit,
            known_hosts,
        } => {
            steps.push(Step {
                name: "create".into(),
                script: create,
                takes_payload: false,
                reaches_git: false,
                quick: true,
            });
            // Every git command that may reach the server: never prompts, checks the server's
            // host key strictly. Credentials in an https URL never reach git's arguments nor
            // the mirror's config: the URL goes without them, and `g` (git with a credential
            // helper reading them from its environment) answers the server's challenge.
            let kh_path = format!("{}/.ship/git_known_hosts", plan.deploy_to);
            let ssh =
                crate::source::git_ssh_command(known_hosts.as_ref().map(|_| kh_path.as_str()));
            let (public_url, credentials) = crate::mask::split_credentials(url);
            let mut env = format!(
                "export GIT_TERMINAL_PROMPT=0 GIT_SSH_COMMAND={}",
                quote(&ssh)
            );
            match &credentials {
                Some((user, password)) => env.push_str(&format!(
                    " SHIP_GIT_USER={} SHIP_GIT_PASSWORD={} && g() {{ git -c credential.helper= \
                     -c credential.helper={} \"$@\"; }}",
                    quote(user),
                    quote(password),
                    quote(GIT_CREDENTIAL_HELPER)
                )),
                None => env.push_str(" && g() { git \"$@\"; }"),
            }
            let write_kh = match known_hosts {
                Some(k) => format!(
                    "mkdir -p .ship && printf '%s\\n' {} > .ship/git_known_hosts && ",
                    quote(k)
                ),
                None => String::new(),
            };
            let u = quote(&public_url);
            // The mirror's config is rewritten only when the URL changed (a write takes git's
            // config.lock, which a stopped git would leave behind), and git's own lock files
            // left by a git that was stopped are cleared first (see `STALE_GIT_LOCKS`).
            steps.push(Step {
                name: "fetch".into(),
                script: format!(
                    "{cd} && {write_kh}{env} && if [ -d repo ]; then \
                     {STALE_GIT_LOCKS} && \
                     {{ [ \"$(git --git-dir=repo config --get remote.origin.url)\" = {u} ] || \
                     git --git-dir=repo remote set-url origin {u}; }} && \
                     g --git-dir=repo fetch --quiet --prune origin; \
                     else g clone --quiet --mirror {u} repo; fi"
                ),
                takes_payload: false,
                reaches_git: true,
                quick: false,
            });
            let tmp = quote(&format!(".ship/{}.tar", plan.release_id)).into_owned();
            let work = quote(&format!(".ship/work-{}", plan.release_id)).into_owned();
            let c = quote(commit);
            steps.push(Step {
                name: "checkout".into(),
                script: format!(
                    "{cd} && {env} && git --git-dir=repo cat-file -e {c}^{{commit}} || exit 1\n\
                     if git --git-dir=repo cat-file -e {c}:.gitmodules 2>/dev/null; then\n\
                     \x20 rm -rf {work} && git clone --quiet --no-checkout repo {work} && \
                     (cd {work} && git remote set-url origin {u} && git checkout --quiet {c} && \
                     g submodule --quiet update --init --recursive && \
                     tar -cf - --exclude=.git . | tar -xf - -C ../../{q_rel}); rc=$?; \
                     rm -rf {work}; exit $rc\n\
                     fi\n\
                     git --git-dir=repo archive --format=tar -o {tmp} {c} && \
                     tar -xf {tmp} -C {q_rel}; rc=$?; rm -f {tmp}; exit $rc"
                ),
                takes_payload: false,
                reaches_git: true,
                quick: false,
            });
        }
    }
    let mut link = vec![cd.clone()];
    // The links themselves come last, one `ln -s` per directory they go in (a link takes its
    // target's name, which is the shared path's own).
    let mut links: Vec<(String, Vec<String>)> = Vec::new();
    for (path, is_dir) in plan
        .shared_files
        .iter()
        .map(|p| (p, false))
        .chain(plan.shared_dirs.iter().map(|p| (p, true)))
    {
        let shared = quote(&format!("shared/{path}")).into_owned();
        let in_release = quote(&format!("{rel}/{path}")).into_owned();
        let key = if is_dir {
            "shared.dirs"
        } else {
            "shared.files"
        };
        link.extend(refuse_links(&parents_in(&rel, path), key, path));
        if let Some(dir) = parent(path) {
            for d in [format!("shared/{dir}"), format!("{rel}/{dir}")] {
                let d = quote(&d).into_owned();
                link.push(format!("{{ [ -d {d} ] || mkdir -p {d}; }}"));
            }
        }
        let seed = if is_dir {
            format!(
                "if [ -d {in_release} ] && [ ! -L {in_release} ]; then cp -Rp {in_release} {shared}; \
                 else mkdir -p {shared}; fi"
            )
        } else {
            format!(
                "if [ -f {in_release} ] && [ ! -L {in_release} ]; then cp -p {in_release} {shared}; \
                 else : > {shared}; fi"
            )
        };
        link.push(format!(
            "{{ [ -e {shared} ] || [ -L {shared} ] || {{ {seed}; }}; }}"
        ));
        // Only what the release brought is removed (an `rm` less on most deploys).
        link.push(format!(
            "{{ {{ [ ! -e {in_release} ] && [ ! -L {in_release} ]; }} || rm -rf {in_release}; }}"
        ));
        let dir = match parent(path) {
            Some(d) => format!("{rel}/{d}/"),
            None => format!("{rel}/"),
        };
        let target = quote(&shared_link_target(path)).into_owned();
        match links.iter_mut().find(|(d, _)| *d == dir) {
            Some((_, targets)) => targets.push(target),
            None => links.push((dir, vec![target])),
        }
    }
    for (dir, targets) in links {
        link.push(format!("ln -s {} {}", targets.join(" "), quote(&dir)));
    }
    let mut after_link = Vec::new();
    after_link.extend(copy_from_previous(plan));
    for spec in plan.build {
        after_link.push(release_step(plan, "build", spec));
    }
    if let Some(w) = plan.writable {
        let shared: Vec<String> = plan
            .shared_files
            .iter()
            .chain(plan.shared_dirs)
            .cloned()
            .collect();
        after_link.push(writable(plan.deploy_to, plan.release_id, w, &shared));
    }
    // `REVISION` is written last: a release that has it is complete (prepared to the end), and
    // only a complete release is ever switched to, rolled back to or kept by `lock release`.
    let complete = format!(
        "{{ [ ! -L {r} ] || rm -f {r}; }} && printf '%s\\n' {} > {r}",
        quote(plan.revision),
        r = quote(&format!("{rel}/REVISION"))
    );
    if after_link.is_empty() {
        link.push(complete.clone());
    }
    steps.push(Step {
        name: "link".into(),
        script: link.join(" && "),
        takes_payload: false,
        reaches_git: false,
        quick: true,
    });
    if !after_link.is_empty() {
        steps.extend(after_link);
        steps.push(Step {
            name: "complete".into(),
            script: format!("{cd} && {complete}"),
            takes_payload: false,
            reaches_git: false,
            quick: true,
        });
    }
    steps
}

/// The directories on the way to `path` inside `base`: `base/a`, `base/a/b` for `a/b/c`.
fn parents_in(base: &str, path: &str) -> Vec<String> {
    let parts: Vec<&str> = path.split('/').collect();
    (1..parts.len())
        .map(|n| format!("{base}/{}", parts[..n].join("/")))
        .collect()
}

/// A check that stops the script (exit 1, saying why) when one of `paths` is a symlink: the
/// release brought a link where ship must write, and writing through it would reach outside
/// the release (`conf -> /etc` with a shared file `conf/app.ini`). `None` for no paths.
fn refuse_links(paths: &[String], key: &str, value: &str) -> Option<String> {
    refuse_links_in("", paths, key, value)
}

/// [`refuse_links`] for paths relative to `prefix`, shell text that may expand (`$prev/`).
fn refuse_links_in(prefix: &str, paths: &[String], key: &str, value: &str) -> Option<String> {
    if paths.is_empty() {
        return None;
    }
    let list: Vec<String> = paths.iter().map(|p| quote(p).into_owned()).collect();
    Some(format!(
        "{{ for p in {}; do p=\"{prefix}$p\"; if [ -L \"$p\" ]; then printf '%s is a symlink in the release \
         (%s: %s): ship does not write through links it did not make (hint: remove the link \
         from the release, or choose a path that is not under it)\\n' \"$p\" {} {}; exit 1; \
         fi; done; }}",
        list.join(" "),
        quote(key),
        quote(value)
    ))
}

/// Copy `copy_from_previous` paths from the release `current` points to into the new one, so
/// `composer install` / `npm ci` only do the incremental work. A copy, never hard links: tools
/// rewrite files in place (composer's autoload files), and through a hard link that would change
/// the live release. Where the filesystem can share blocks copy-on-write (btrfs, XFS), GNU cp's
/// `--reflink=auto` makes the copy nearly free; elsewhere it is a plain copy. Paths the new
/// release already has, or the current one lacks, are skipped; so is a first deploy.
pub fn copy_from_previous(plan: &Plan) -> Option<Step> {
    if plan.copy_from_previous.is_empty() {
        return None;
    }
    let rel = format!("releases/{}", plan.release_id);
    let mut s = format!(
        "{} || exit 1
         prev=$(readlink current 2>/dev/null) || exit 0
         [ -d \"$prev\" ] || exit 0
         cpf='cp -a'; cp --reflink=auto --version >/dev/null 2>&1 && cpf='cp -a --reflink=auto'
",
        cd(plan.deploy_to)
    );
    for path in plan.copy_from_previous {
        let dst = quote(&format!("{rel}/{path}")).into_owned();
        let src = quote(path).into_owned();
        // Neither release may lead the copy through a link it brought: reading through one
        // would copy from outside, writing through one would write outside.
        let key = "copy_from_previous";
        let on_the_way = parents_in("", path);
        let on_the_way: Vec<String> = on_the_way.iter().map(|p| p[1..].to_owned()).collect();
        for guard in [
            refuse_links_in("$prev/", &on_the_way, key, path),
            refuse_links(&parents_in(&rel, path), key, path),
        ]
        .into_iter()
        .flatten()
        {
            s.push_str(&guard);
            s.push('\n');
        }
        let mkparent = parent(path)
            .map(|d| format!("mkdir -p {} && ", quote(&format!("{rel}/{d}"))))
            .unwrap_or_default();
        s.push_str(&format!(
            "if [ -e \"$prev\"/{src} ] && [ ! -e {dst} ] && [ ! -L {dst} ]; then \
             {mkparent}$cpf \"$prev\"/{src} {dst} || exit 1; printf 'copied %s\\n' {src}; fi\n"
        ));
    }
    Some(Step {
        name: "copy from previous".into(),
        script: s,
        takes_payload: false,
        reaches_git: false,
        quick: false,
    })
}

/// Make `writable` paths writable for the web server, after the build steps. A path that is
/// shared (`shared` lists the shared files and dirs) is changed on its target in `shared/`,
/// never through the release's link. Only files the deploy user owns are touched: files the web
/// server created there (logs, caches, uploads) belong to it and are left alone, so a second
/// deploy never fails where the first let another user write. A path missing from the release
/// is created.
///
/// Nothing is changed through a link ship did not make: a link on the way to a path, or the
/// path itself being a link, stops the step (see [`refuse_links`]); links found inside a path
/// are neither followed (`find` does not) nor changed (`! -type l`: `chmod` and `setfacl`
/// would change their targets).
pub fn writable(deploy_to: &str, release_id: &str, w: &Writable, shared: &[String]) -> Step {
    let mut s = format!("{} || exit 1\nme=$(id -u)\n", cd(deploy_to));
    if let WritableMode::Acl(_) = &w.mode {
        s.push_str(
            "command -v setfacl >/dev/null 2>&1 || { echo 'writable: setfacl is not installed on \
             this host (hint: install the acl package, or use mode: chmod)'; exit 1; }\n",
        );
    }
    for path in &w.paths {
        let root = shared
            .iter()
            .find(|r| *path == **r || path.starts_with(&format!("{r}/")));
        let (t, guarded) = match root {
            // The shared path itself is the operator's (it may be a link they made, to a
            // mounted volume): only what lies below it is checked.
            Some(r) => {
                let below: Vec<String> = parents_in("shared", &format!("{path}/x"))
                    .into_iter()
                    .skip(r.split('/').count())
                    .collect();
                (format!("shared/{path}/"), below)
            }
            None => {
                let rel = format!("releases/{release_id}");
                (
                    format!("{rel}/{path}"),
                    parents_in(&rel, &format!("{path}/x")),
                )
            }
        };
        if let Some(guard) = refuse_links(&guarded, "writable", path) {
            s.push_str(&guard);
            s.push('\n');
        }
        let t = quote(&t).into_owned();
        s.push_str(&format!("[ -e {t} ] || mkdir -p {t} || exit 1\n"));
        match &w.mode {
            WritableMode::Chmod(mode) => s.push_str(&format!(
                "find {t} -user \"$me\" ! -type l -exec chmod {m} {{}} + || exit 1\n",
                m = quote(mode)
            )),
            WritableMode::Acl(user) => {
                let acl = format!("{}\"$me\":rwX", quote(&format!("u:{user}:rwX,u:")));
                s.push_str(&format!(
                    "find {t} -user \"$me\" ! -type l -exec setfacl -m {acl} {{}} + && \
                     find {t} -user \"$me\" -type d -exec setfacl -d -m {acl} {{}} + || exit 1\n"
                ));
            }
        }
    }
    Step {
        name: "writable".into(),
        script: s,
        takes_payload: false,
        reaches_git: false,
        quick: false,
    }
}

/// A command run inside the release directory with the build environment: a build step, a
/// run-once step, an after-switch step. Named `<kind>: <command>`. With `sudo`, the command is
/// prefixed with `sudo -n` (which fails at once rather than prompt), so a sudoers rule can name
/// the exact command (`NOPASSWD: /usr/bin/systemctl reload php8.3-fpm`); like any sudo, it
/// runs with root's environment.
pub fn release_step(plan: &Plan, kind: &str, spec: &StepSpec) -> Step {
    let cmd = if spec.sudo {
        format!("sudo -n {}", spec.run)
    } else {
        spec.run.clone()
    };
    release_script(plan, format!("{kind}: {}", spec.run), &cmd)
}

fn release_script(plan: &Plan, name: String, cmd: &str) -> Step {
    let exports: String = build_env(plan)
        .iter()
        .map(|(k, v)| format!("export {k}={} && ", quote(v)))
        .collect();
    Step {
        name,
        script: format!(
            "cd {} && {exports}{cmd}",
            quote(&format!("{}/releases/{}", plan.deploy_to, plan.release_id))
        ),
        takes_payload: false,
        reaches_git: false,
        quick: false,
    }
}

/// The health check as one step run in the new release directory: up to `retries` attempts,
/// `interval` apart, each limited to `timeout`. Every failed attempt prints why. HTTP checks
/// use curl, else wget, on the host itself. `None` when the check has no probe.
pub fn health_step(plan: &Plan, check: &HealthCheck) -> Option<Step> {
    let timeout = check.timeout.as_secs().max(1);
    let attempt = match check.probe.as_ref()? {
        Probe::Command(cmd) => format!(
            "if command -v timeout >/dev/null 2>&1; then timeout {timeout} sh -c {c}; \
             else sh -c {c}; fi; rc=$?; [ $rc = 0 ] || echo \"health: attempt $i: the command \
             exited with status $rc\"; [ $rc = 0 ]",
            c = quote(cmd)
        ),
        Probe::Http {
            url,
            expect_status,
            expect_body,
        } => {
            let body_check = match expect_body {
                Some(b) => format!(
                    " && {{ grep -qF -- {b} \"$t\" || {{ echo \"health: attempt $i: status \
                     $code but the body does not contain \"{shown}; false; }}; }}",
                    b = quote(b),
                    shown = quote(&format!("'{b}'"))
                ),
                None => String::new(),
            };
            // The URL goes to curl (and, when it holds credentials, to wget) on stdin, never
            // in its arguments; messages show it with its credentials masked.
            let curl_config = format!(
                "url = \"{}\"",
                url.replace('\\', "\\\\").replace('"', "\\\"")
            );
            let wget_url = if crate::mask::url_secrets(url).is_empty() {
                format!("wget -q -S -O \"$t\" -T {timeout} {}", quote(url))
            } else {
                format!(
                    "printf '%s\\n' {} | wget -q -S -O \"$t\" -T {timeout} -i -",
                    quote(url)
                )
            };
            format!(
                "t=$(mktemp) && h=$(mktemp) || exit 1; \
                 if command -v curl >/dev/null 2>&1; then \
                 code=$(printf '%s\\n' {cfg} | curl -s -o \"$t\" -w '%{{http_code}}' --max-time {timeout} \
                 -K - 2>\"$h\"); \
                 elif command -v wget >/dev/null 2>&1; then \
                 {wget_url} 2>\"$h\"; \
                 code=$(awk '$1 ~ /^HTTP\\// {{c=$2}} END {{print c}}' \"$h\"); \
                 else echo 'health: neither curl nor wget is installed on this host'; exit 2; fi; \
                 [ -n \"$code\" ] || code=000; \
                 {{ [ \"$code\" = {expect_status} ] || {{ echo \"health: attempt $i: status $code \
                 (expected {expect_status}) from \"{shown}; false; }}; }}{body_check}; \
                 rc=$?; rm -f \"$t\" \"$h\"; [ $rc = 0 ]",
                cfg = quote(&curl_config),
                shown = quote(&crate::mask::mask_urls(url)),
            )
        }
    };
    let interval = check.interval.as_millis();
    let sleep = format!("sleep {}.{:03}", interval / 1000, interval % 1000);
    let script = format!(
        "i=0; while :; do i=$((i+1)); if {{ {attempt}; }}; then echo \"health: ok (attempt $i)\"; \
         exit 0; fi; [ $i -ge {n} ] && {{ echo \"health: failed after $i attempts\"; exit 1; }}; \
         {sleep}; done",
        n = check.retries
    );
    Some(release_script(plan, "health check".into(), &script))
}

/// The environment of build steps: ship's own variables, then the inventory's.
fn build_env(plan: &Plan) -> Vec<(String, String)> {
    let mut env = vec![
        ("SHIP_RELEASE_ID".to_owned(), plan.release_id.to_owned()),
        (
            "SHIP_RELEASE_PATH".to_owned(),
            format!("{}/releases/{}", plan.deploy_to, plan.release_id),
        ),
        ("SHIP_DEPLOY_TO".to_owned(), plan.deploy_to.to_owned()),
        ("SHIP_REVISION".to_owned(), plan.revision.to_owned()),
    ];
    env.extend(plan.env.iter().map(|v| (v.name.clone(), v.value.clone())));
    env
}

fn stage_dir(release_id: &str) -> String {
    format!(".ship/stage-{release_id}")
}

/// Make, ahead of the switch, the link that will become `current`: a link named `current` in a
/// staging directory, so that switching is a single rename into `deploy_to`.
pub fn stage_switch(deploy_to: &str, release_id: &str) -> String {
    let dir = quote(&stage_dir(release_id)).into_owned();
    format!(
        "{} && {{ [ ! -e {dir} ] || rm -rf {dir}; }} && mkdir -p {dir} && ln -s {} {dir}/current",
        cd(deploy_to),
        quote(&format!("releases/{release_id}"))
    )
}

/// Stage the link unless it is (with no process started where perl does it).
fn stage_if_missing(release_id: &str) -> String {
    let dir = quote(&stage_dir(release_id)).into_owned();
    format!(
        "[ -L {dir}/current ] || {{ [ -d {rel} ] && mkdir -p {dir} && ln -s {rel} {dir}/current; }}",
        rel = quote(&format!("releases/{release_id}"))
    )
}

/// The switch, armed: it stages the link that will become `current` if no one did yet (a
/// link named `current` in `.ship/stage-<id>`: nothing live changes; it exits
/// [`SWITCH_CANCELLED`] when the release directory is missing), prints [`SWITCH_READY`],
/// then waits for a line on stdin and renames
/// the staged link over `current` only if that line is `go`. A controller that dies or cancels
/// sends EOF or another line instead, and the host does not switch; it removes the staged link
/// then (nothing is left behind, even when the command reached the host after the controller
/// was gone). The rename is one
/// `rename(2)`: `current` never stops existing. The host's clock is read right after it, for
/// the switch spread.
///
/// Where perl is installed (it is on Debian, Ubuntu and most RHEL hosts), the process that
/// waits for the word is perl, already started: the word costs one read and one `rename(2)`,
/// with no process to start after it. With Time::HiRes (part of perl's core) it prints
/// [`SWITCH_READY_AT`] and also understands:
/// - `t`: it answers `t <its clock, Unix µs>` and waits on (the controller measures the host's
///   clock against its own);
/// - `at <Unix µs> [<settle µs>]`: the word, with the instant to rename at on the host's clock.
///   It sleeps until then (at most [`SWITCH_MAX_WAIT_MS`]; at once when the instant is past),
///   renames, and reports only `settle` later: where hosts share CPUs (containers or VMs on one
///   machine) and rename at the same instant, one host's report (its output, its exit, the
///   shell and sshd that relay them) must not delay another's rename.
///
/// So every host can rename at the same instant however long its word took to arrive.
/// Otherwise the shell waits, and `mv -f <dir>/current .` (GNU coreutils and BusyBox alike)
/// renames.
pub fn armed_switch(deploy_to: &str, release_id: &str) -> String {
    let dir = quote(&stage_dir(release_id)).into_owned();
    format!(
        "{} || exit {SWITCH_RENAME_FAILED}; \
         if command -v perl >/dev/null 2>&1; then exec perl -e {perl} {dir} {rel}; fi; \
         {stage} || exit {SWITCH_CANCELLED}; \
         echo {SWITCH_READY}; \
         read -r go && [ \"$go\" = go ] || {{ rm -f {dir}/current; rmdir {dir}; exit {SWITCH_CANCELLED}; }}; \
         mv -f {dir}/current . || exit {SWITCH_RENAME_FAILED}; date +%s%N; rmdir {dir}; exit 0",
        cd(deploy_to),
        perl = quote(&armed_switch_perl()),
        rel = quote(&format!("releases/{release_id}")),
        stage = stage_if_missing(release_id),
    )
}

/// The perl side of [`armed_switch`]: the staging directory and the release are its arguments. It reads its input
/// one byte at a time (nothing past the word is taken from stdin) and prints the host's clock
/// after the rename in nanoseconds (microsecond precision; `date` when Time::HiRes is missing).
/// Clock values in the exchange are whole microseconds, which a perl number holds exactly.
fn armed_switch_perl() -> String {
    format!(
        "$| = 1; my $d = $ARGV[0]; my $hires = eval {{ require Time::HiRes; 1 }}; \
         unless (-l \"$d/current\") {{ -d $ARGV[1] or exit {SWITCH_CANCELLED}; mkdir($d); \
         symlink($ARGV[1], \"$d/current\") or exit {SWITCH_CANCELLED}; }} \
         sub us {{ my ($s, $u) = Time::HiRes::gettimeofday(); return $s * 1000000 + $u; }} \
         sub cancel {{ unlink(\"$d/current\"); rmdir($d); exit {SWITCH_CANCELLED}; }} \
         print($hires ? \"{SWITCH_READY_AT}\\n\" : \"{SWITCH_READY}\\n\"); my ($c, $settle) = (\"\", 0); \
         while (1) {{ my $w = \"\"; \
         while (1) {{ cancel() unless sysread(STDIN, $c, 1) == 1; \
         last if $c eq \"\\n\"; $w .= $c; }} \
         if ($hires && $w eq \"t\") {{ printf(\"t %d\\n\", us()); next; }} \
         if ($hires && $w =~ /^at (\\d+)(?: (\\d+))?$/) {{ my $wait = ($1 - us()) / 1e6; \
         $settle = ($2 // 0) / 1e6; $settle = {max} if $settle > {max}; \
         $wait = {max} if $wait > {max}; Time::HiRes::sleep($wait) if $wait > 0; last; }} \
         last if $w eq \"go\"; cancel(); }} \
         rename(\"$d/current\", \"current\") or exit {SWITCH_RENAME_FAILED}; \
         if ($hires) {{ my ($s, $us) = Time::HiRes::gettimeofday(); \
         Time::HiRes::sleep($settle) if $settle > 0; \
         printf(\"%d%06d000\\n\", $s, $us); }} else {{ system(\"date\", \"+%s%N\"); }} \
         rmdir($d); exit 0;",
        max = SWITCH_MAX_WAIT_MS as f64 / 1000.0,
    )
}

/// Switch `current` back to `previous` (by rename), or remove it when there was no previous
/// release and it still points at `release_id`.
pub fn revert(deploy_to: &str, release_id: &str, previous: Option<&str>) -> String {
    match previous {
        Some(prev) => format!(
            "{} && rm -rf .ship/revert && mkdir -p .ship/revert && ln -s {} .ship/revert/current && \
             mv -f .ship/revert/current . && rmdir .ship/revert",
            cd(deploy_to),
            quote(prev)
        ),
        None => format!(
            "{} && if [ \"$(readlink current)\" = {} ]; then rm -f current; fi",
            cd(deploy_to),
            quote(&format!("releases/{release_id}"))
        ),
    }
}

/// ship's scratch paths for a release in `.ship/`: the tarball a checkout (or a zstd upload)
/// unpacks from, and the work tree of a checkout with submodules. Named by the release, so that
/// the discard and `lock release` find what an interrupted step left.
fn scratch(release_id: &str) -> String {
    format!(
        "{} {}",
        quote(&format!(".ship/{release_id}.tar")),
        quote(&format!(".ship/work-{release_id}"))
    )
}

/// Remove a staged release that never became current (abort), its staged link and its
/// scratch files.
pub fn discard(deploy_to: &str, release_id: &str) -> String {
    let rel = quote(&format!("releases/{release_id}")).into_owned();
    format!(
        "{} && if [ \"$(readlink current 2>/dev/null)\" != {rel} ]; then rm -rf {rel}; fi; \
         rm -rf {} {}",
        cd(deploy_to),
        quote(&stage_dir(release_id)),
        scratch(release_id)
    )
}

/// Remove only a failed release's scratch files (`--keep-failed` keeps the release itself).
pub fn discard_scratch(deploy_to: &str, release_id: &str) -> String {
    format!("{} && rm -rf {}", cd(deploy_to), scratch(release_id))
}

/// Check that an existing release can be switched to (rollback): it exists and is complete.
/// Prints its revision, then stages its link. Exits [`RELEASE_MISSING`] when it cannot.
pub fn stage_existing(deploy_to: &str, release_id: &str) -> String {
    let rel = quote(&format!("releases/{release_id}")).into_owned();
    format!(
        "{cd} || exit 1; [ -d {rel} ] || {{ printf '%s does not exist on this host\\n' {rel}; \
         exit {RELEASE_MISSING}; }}; [ -f {rel}/REVISION ] || {{ printf '%s is incomplete (no \
         REVISION: its deploy never finished)\\n' {rel}; exit {RELEASE_MISSING}; }}; \
         read -r v < {rel}/REVISION; echo \"revision=$v\"; {stage}",
        cd = cd(deploy_to),
        stage = stage_switch(deploy_to, release_id),
    )
}

/// Remove a staged link only (a rollback that did not happen: the release itself stays).
pub fn unstage(deploy_to: &str, release_id: &str) -> String {
    format!(
        "{} && rm -rf {}",
        cd(deploy_to),
        quote(&stage_dir(release_id))
    )
}

/// Mark releases bad (rolled back from) and clear the mark on `good` (switched to on purpose).
pub fn mark_bad(deploy_to: &str, bad: &[&str], good: Option<&str>) -> String {
    let mut s = format!("{} && mkdir -p .ship/bad", cd(deploy_to));
    for id in bad.iter().filter(|id| Some(**id) != good) {
        s.push_str(&format!(" && : > {}", quote(&format!(".ship/bad/{id}"))));
    }
    if let Some(good) = good {
        s.push_str(&format!(
            " && rm -f {}",
            quote(&format!(".ship/bad/{good}"))
        ));
    }
    s
}

/// A proof, in a scratch directory under `deploy_to`, that the switch is an atomic rename here:
/// the staged link keeps its inode when moved over the old one (an unlink and a new symlink
/// would make a new inode), and the old link is replaced in one step. Also checks that the
/// shared paths exist. Prints `key=value` lines.
pub fn check(deploy_to: &str, shared_files: &[String], shared_dirs: &[String]) -> String {
    let mut s = format!(
        "{cd} || exit 1\n\
         ino() {{ stat -c %i \"$1\" 2>/dev/null || ls -di \"$1\" | awk '{{print $1}}'; }}\n\
         t=.ship/check-$$; rm -rf \"$t\"; mkdir -p \"$t/stage\" \"$t/a\" \"$t/b\" || {{ echo rename=cannot-create; exit 0; }}\n\
         ln -s a \"$t/current\" && ln -s b \"$t/stage/current\" && before=$(ino \"$t/stage/current\") && \
         mv -f \"$t/stage/current\" \"$t/\" && after=$(ino \"$t/current\") && \
         if [ \"$(readlink \"$t/current\")\" = b ] && [ \"$before\" = \"$after\" ] && \
         [ ! -e \"$t/stage/current\" ]; then echo rename=atomic; \
         else echo \"rename=not-atomic $before $after\"; fi\n\
         rm -rf \"$t\"\n",
        cd = cd(deploy_to)
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

/// What [`finish`] prints when removing old releases failed: this, then `rm`'s exit status.
pub const CLEANUP_STATUS: &str = "ship-cleanup-status=";

/// The end of a deploy on a host, in one command: the journal line, then the old releases (ids
/// chosen by [`releases_to_remove`]) and our lock removed by one `rm` (the lock only if its
/// owner record still carries `token`). When the `rm` fails and an old release is still there,
/// it prints [`CLEANUP_STATUS`] and the status; whatever happened to them, it then makes sure
/// the lock is gone, and exits non-zero only if our lock could not be removed (or `deploy_to`
/// cannot be entered: then nothing is done, rather than removing paths relative to elsewhere).
pub fn finish(deploy_to: &str, token: &str, json_line: &str, old: &[String]) -> String {
    let mut s = format!(
        "{} || exit 1; {}; {READ_LOCK_OWNER}; case $o in *{}*) l=.ship/lock;; *) l=;; esac; ",
        cd(deploy_to),
        append_journal(json_line),
        quote(token),
    );
    if old.is_empty() {
        s.push_str("[ -z \"$l\" ] || rm -rf .ship/lock");
        return s;
    }
    let paths: Vec<String> = old
        .iter()
        .map(|id| quote(&format!("releases/{id}")).into_owned())
        .collect();
    let paths = paths.join(" ");
    s.push_str(&format!(
        "rm -rf {paths} $l; c=$?; if [ $c -ne 0 ]; then \
         for r in {paths}; do if [ -e \"$r\" ] || [ -L \"$r\" ]; then echo {CLEANUP_STATUS}$c; break; fi; done; \
         [ -z \"$l\" ] || [ ! -e .ship/lock ] || rm -rf .ship/lock; fi"
    ));
    s
}

/// Whether a directory name is a release id ship made (`YYYYMMDDHHMMSS`, optional `-N`).
/// Cleanup only ever considers these; anything else in `releases/` is left alone.
pub fn is_release_id(name: &str) -> bool {
    let (stamp, suffix) = match name.split_once('-') {
        Some((s, n)) => (s, Some(n)),
        None => (name, None),
    };
    stamp.len() == 14
        && stamp.bytes().all(|b| b.is_ascii_digit())
        && suffix.is_none_or(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Which releases to delete so that `keep` good ones remain: the oldest by id first, never
/// `current` nor `previous`, never anything that is not a release id. Bad releases (rolled back
/// from) do not count towards `keep`: they stay for inspection while they are newer than the
/// oldest release kept, and go with the releases of their time.
pub fn releases_to_remove(
    releases: &[String],
    keep: usize,
    current: &str,
    previous: Option<&str>,
    bad: &[String],
) -> Vec<String> {
    let mut ids: Vec<&String> = releases.iter().filter(|r| is_release_id(r)).collect();
    ids.sort();
    ids.dedup();
    let is_bad = |r: &str| bad.iter().any(|b| b == r);
    let good: Vec<&String> = ids.iter().filter(|r| !is_bad(r)).copied().collect();
    let excess = good.len().saturating_sub(keep);
    let oldest_kept = good.get(excess).map(|s| s.as_str());
    let mut out: Vec<String> = good
        .into_iter()
        .take(excess)
        .cloned()
        .chain(
            ids.iter()
                .filter(|r| is_bad(r) && oldest_kept.is_some_and(|k| r.as_str() < k))
                .map(|r| (*r).clone()),
        )
        .filter(|r| r.as_str() != current && Some(r.as_str()) != previous)
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests;
