//! The git steps of a release: the host's mirror (`repo/`) fetched, the resolved commit
//! exported into the release (with its submodules); credentials kept out of git's arguments,
//! and git's stale lock files in the mirror cleared.

use super::*;

/// The ssh command git uses: never prompts, checks the server's host key strictly (against
/// `known_hosts` when given).
pub fn git_ssh_command(known_hosts: Option<&str>) -> String {
    let mut s = "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes".to_owned();
    if let Some(k) = known_hosts {
        s.push_str(&format!(" -o UserKnownHostsFile={}", quote(k)));
    }
    s
}

/// The steps that put `commit` of the repository at `url` into the release: `create` (the
/// release directory), the fetch into the mirror, and the checkout.
pub(super) fn git_steps(
    plan: &ReleasePlan,
    url: &str,
    commit: &str,
    known_hosts: Option<&str>,
    create: String,
) -> Vec<Step> {
    let rel = format!("releases/{}", plan.release_id);
    let q_rel = quote(&rel).into_owned();
    let cd = cd(plan.deploy_to);
    let mut steps = Vec::new();
    steps.push(Step {
        name: "create".into(),
        script: create,
        takes_payload: false,
        reaches_git: false,
        quick: true,
        parallel: None,
    });
    // Every git command that may reach the server: never prompts, checks the server's
    // host key strictly. Credentials in an https URL never reach git's arguments nor
    // the mirror's config: the URL goes without them, and `g` (git with a credential
    // helper reading them from its environment) answers the server's challenge.
    let kh_path = format!("{}/.ship/git_known_hosts", plan.deploy_to);
    let ssh = git_ssh_command(known_hosts.as_ref().map(|_| kh_path.as_str()));
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
        parallel: None,
    });
    let tmp = quote(&scratch_tar(plan.release_id)).into_owned();
    let work = quote(&scratch_work(plan.release_id)).into_owned();
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
        parallel: None,
    });
    steps
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
pub(super) const STALE_GIT_LOCKS: &str = "{ l=$(find repo -name '*.lock' -type f 2>/dev/null | head -n 1); \
    [ -z \"$l\" ] || { \
    [ -d /proc/self ] || { echo \"$l exists and this host has no /proc to tell whether a git \
    still runs (hint: if none does, remove it: rm $PWD/$l)\"; exit 1; }; \
    h=$PWD; for p in /proc/[0-9]*; do case $(readlink \"$p/exe\" 2>/dev/null) in */git|*/git-*) \
    case $(readlink \"$p/cwd\" 2>/dev/null) in \"$h\"|\"$h\"/*) echo \"$l exists and git \
    (pid ${p#/proc/}) still runs in $h (hint: wait for it to end, or stop it, then deploy \
    again)\"; exit 1;; esac;; esac; done; \
    find repo -name '*.lock' -type f -exec rm -f {} + && \
    echo \"removed git's lock files in repo/ left by a git that was stopped\"; }; }";
