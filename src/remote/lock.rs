//! The deploy lock on a host: taking it (and sweeping what dead runs left), its owner record,
//! giving it back, clearing a dead run's (`ship lock release`), and the journal lines written
//! under it.

use super::*;

/// Exit status a lock command uses when the lock is held by someone else.
pub const LOCK_HELD: u32 = 75;
/// Exit status of [`release_lock`] when the lock on the host is no longer the one shown.
pub const LOCK_CHANGED: u32 = 79;

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
    /// The CI run's page, when the CI gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci_url: Option<String>,
    /// Why a maintenance lock was taken (`ship lock acquire -m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The kind of a lock taken on purpose by `ship lock acquire`: it blocks deploys and rollbacks
/// until `ship lock release`, and nothing waits for it.
pub const MAINTENANCE: &str = "maintenance";

impl LockOwner {
    /// Read an owner record; `None` when it is not one (a lock made by hand, a torn write).
    pub fn parse(raw: &str) -> Option<LockOwner> {
        serde_json::from_str(raw.trim()).ok()
    }

    /// The release the holder was staging: a deploy's new release. A rollback stages nothing
    /// (its release is one the hosts already had), so it has none.
    pub fn is_maintenance(&self) -> bool {
        self.kind == MAINTENANCE
    }

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

/// What [`lock`] prints when it took the lock on a host with these releases.
pub fn lock_taken_reply(releases: &[String]) -> String {
    releases.iter().map(|r| format!("release={r}\n")).collect()
}

/// What [`lock`] prints (with exit status [`LOCK_HELD`]) when another run holds the lock.
pub fn lock_held_reply(owner_record: &str) -> String {
    format!("lock held: {owner_record}\n")
}

/// The owner record in the answer of [`lock`] when another run holds the lock.
pub fn parse_lock_held(stdout: &str) -> String {
    stdout
        .trim()
        .trim_start_matches("lock held:")
        .trim()
        .to_owned()
}

/// In `deploy_to`, holding the lock: what runs that died left in `.ship/` — staged links
/// (`stage-<id>`), a checkout's tarball and work tree, a revert's link — removed, each printed as
/// `removed=<path>`. While the lock is held no other run can be using them; a command of a dead
/// run can still reach its host late (a packet held by a cut network) and make one, which the
/// next run then sweeps. Starts no process when there is nothing to remove.
pub(super) const SWEEP: &str = "for f in .ship/stage-* .ship/*.tar .ship/work-* .ship/revert; do \
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

/// What [`release_lock`] answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Released {
    /// Paths it removed.
    pub removed: Vec<String>,
    /// Releases it kept because they are `current` there.
    pub kept_current: Vec<String>,
    /// Releases it kept because they are complete.
    pub kept_complete: Vec<String>,
    /// There was no lock any more: its holder ended on its own.
    pub gone: bool,
    /// The lock now there is another one: its owner record.
    pub changed_to: Option<String>,
}

impl Released {
    pub fn parse(stdout: &str) -> Self {
        let mut r = Released::default();
        for l in stdout.lines() {
            if let Some(p) = l.strip_prefix("removed=") {
                r.removed.push(p.trim_matches('\'').to_owned());
            } else if let Some(p) = l.strip_prefix("kept=") {
                r.kept_current.push(p.trim_matches('\'').to_owned());
            } else if let Some(p) = l.strip_prefix("complete=") {
                r.kept_complete.push(p.trim_matches('\'').to_owned());
            } else if let Some(p) = l.strip_prefix("lock-changed=") {
                r.changed_to = Some(p.to_owned());
            } else if l == "gone=.ship/lock" {
                r.gone = true;
            }
        }
        r
    }
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
pub(super) fn append_journal(json_line: &str) -> String {
    format!("printf '%s\\n' {} >> .ship/history", quote(json_line))
}

/// In `deploy_to`: `$o` set to the lock's owner record (one line; empty when there is none).
pub(super) const READ_LOCK_OWNER: &str =
    "o= && { [ ! -f .ship/lock/owner ] || read -r o < .ship/lock/owner; }";

/// The end of a run on a host that cleaned up nothing: its journal line, then its lock given
/// back (see [`unlock`]).
pub fn journal_and_unlock(deploy_to: &str, json_line: &str, token: &str) -> String {
    format!(
        "{}; {}",
        journal(deploy_to, json_line),
        unlock(deploy_to, token)
    )
}

/// [`release_lock`], then `json_line` appended to the journal.
pub fn release_lock_journaled(
    deploy_to: &str,
    release_id: Option<&str>,
    staged: bool,
    token: Option<&str>,
    json_line: &str,
) -> String {
    format!(
        "{}\n{}",
        release_lock(deploy_to, release_id, staged, token),
        journal(deploy_to, json_line)
    )
}
