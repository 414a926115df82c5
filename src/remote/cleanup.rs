//! Removing what a run made: a failed release and its scratch files, old releases beyond
//! `keep_releases` (the retention policy), and the end of a run in one command.

use super::*;

/// ship's scratch paths for a release in `.ship/`: the tarball a checkout (or a zstd upload)
/// unpacks from, and the work tree of a checkout with submodules. Named by the release, so that
/// the discard and `lock release` find what an interrupted step left.
pub(super) fn scratch(release_id: &str) -> String {
    format!(
        "{} {}",
        quote(&scratch_tar(release_id)),
        quote(&scratch_work(release_id))
    )
}

/// The tarball a checkout (or a zstd upload) of `release_id` unpacks from.
pub(super) fn scratch_tar(release_id: &str) -> String {
    format!(".ship/{release_id}.tar")
}

/// The work tree of a checkout of `release_id` with submodules.
pub(super) fn scratch_work(release_id: &str) -> String {
    format!(".ship/work-{release_id}")
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

/// What [`finish`] prints when removing old releases failed: this, then `rm`'s exit status.
pub const CLEANUP_STATUS: &str = "ship-cleanup-status=";

/// The end of a deploy on a host, in one command: the journal line, the prepared mark of `live`
/// (the release now current) if it has one, then the old releases (ids
/// chosen by [`releases_to_remove`]) and our lock removed by one `rm` (the lock only if its
/// owner record still carries `token`). When the `rm` fails and an old release is still there,
/// it prints [`CLEANUP_STATUS`] and the status; whatever happened to them, it then makes sure
/// the lock is gone, and exits non-zero only if our lock could not be removed (or `deploy_to`
/// cannot be entered: then nothing is done, rather than removing paths relative to elsewhere).
pub fn finish(deploy_to: &str, live: &str, token: &str, json_line: &str, old: &[String]) -> String {
    // The release now live is no longer a prepared one (if it was taken up as such).
    let mut s = format!(
        "{} || exit 1; {}; rm -f {}; {READ_LOCK_OWNER}; case $o in *{}*) l=.ship/lock;; \
         *) l=;; esac; ",
        cd(deploy_to),
        append_journal(json_line),
        quote(&prepared_marker(live)),
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
    // A removed release's marks (bad, prepared) go with it.
    let marks: Vec<String> = old
        .iter()
        .flat_map(|id| [format!(".ship/bad/{id}"), prepared_marker(id)])
        .map(|m| quote(&m).into_owned())
        .collect();
    let marks = marks.join(" ");
    s.push_str(&format!(
        "rm -rf {paths} $l; c=$?; rm -f {marks}; if [ $c -ne 0 ]; then \
         for r in {paths}; do if [ -e \"$r\" ] || [ -L \"$r\" ]; then echo {CLEANUP_STATUS}$c; break; fi; done; \
         [ -z \"$l\" ] || [ ! -e .ship/lock ] || rm -rf .ship/lock; fi"
    ));
    s
}

/// The end of a rollback on a host: the releases rolled back from (`from`) marked bad and
/// `target` no longer marked (see [`mark_bad`]), then the journal line and our lock released.
/// A failed mark prints [`CLEANUP_STATUS`] and its status; the unlock runs whatever happened.
pub fn finish_rollback(
    deploy_to: &str,
    from: &[&str],
    target: &str,
    token: &str,
    json_line: &str,
) -> String {
    format!(
        "({})\necho {CLEANUP_STATUS}$?\n{}",
        mark_bad(deploy_to, from, Some(target)),
        super::journal_and_unlock(deploy_to, json_line, token)
    )
}

/// The status of the cleanup in the answer of [`finish`] or [`finish_rollback`], when it failed.
pub fn failed_cleanup(stdout: &str) -> Option<&str> {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix(CLEANUP_STATUS))
        .filter(|rc| *rc != "0")
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

/// Where a release built completely by a deploy that then failed at the barrier is marked
/// prepared, with its build key: `.ship/prepared/<id>`.
pub fn prepared_marker(release_id: &str) -> String {
    format!(".ship/prepared/{release_id}")
}

/// A deploy failed, but this host's release is whole (it built it completely before another
/// host's build failed, or it took it up prepared): keep the release, marked prepared with
/// `build_key` (a later deploy of the same build reuses it), and remove its staged link and
/// scratch files. Never marks the release `current` points to.
pub fn keep_prepared(deploy_to: &str, release_id: &str, build_key: &str) -> String {
    let rel = quote(&format!("releases/{release_id}")).into_owned();
    format!(
        "{} && rm -rf {} {} && if [ \"$(readlink current 2>/dev/null)\" != {rel} ]; then \
         mkdir -p .ship/prepared && (umask 077; printf '%s\\n' {} > {}); fi",
        cd(deploy_to),
        quote(&stage_dir(release_id)),
        scratch(release_id),
        quote(build_key),
        quote(&prepared_marker(release_id)),
    )
}

/// Take up a prepared release for this deploy instead of building it: it must still be whole
/// (its `REVISION` is `revision`). Its mark stays until it is live (see [`finish`]): a run that
/// stops before leaves it prepared.
pub fn reuse_prepared(deploy_to: &str, release_id: &str, revision: &str) -> Step {
    let rel = quote(&format!("releases/{release_id}")).into_owned();
    Step {
        name: "reuse the prepared release".into(),
        script: format!(
            "{} && [ -d {rel} ] && [ ! -L {rel}/REVISION ] && [ -f {rel}/REVISION ] && \
             read -r v < {rel}/REVISION && [ \"$v\" = {} ] || \
             {{ echo 'the prepared release is not whole any more: deploy with --rebuild' >&2; \
             exit 1; }}",
            cd(deploy_to),
            quote(revision),
        ),
        takes_payload: false,
        reaches_git: false,
        quick: true,
        parallel: None,
    }
}
