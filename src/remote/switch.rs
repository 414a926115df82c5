//! The switch: the link staged ahead, the armed switch waiting for its word (perl where it is
//! installed, the shell otherwise), switching back, and marking releases bad.

use super::*;

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
pub(super) fn stage_dir(release_id: &str) -> String {
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
pub(super) fn stage_if_missing(release_id: &str) -> String {
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
pub(super) fn armed_switch_perl() -> String {
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
