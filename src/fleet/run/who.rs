//! Who runs a deploy and from where: the operator (a CI's actor, `$USER`, git's `user.name`),
//! this machine's name, and the CI job and its page — read once per run, written to the lock
//! and the journal.

pub(crate) fn controller_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

pub(super) fn ci_job() -> Option<String> {
    [
        "GITHUB_RUN_ID",
        "CI_JOB_ID",
        "BUILD_ID",
        "BUILDKITE_JOB_ID",
        "CIRCLE_WORKFLOW_JOB_ID",
    ]
    .iter()
    .find_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}")))
}

/// Who runs this deploy, as the journal, the lock and `ship releases` say: in a CI job, the
/// person the CI names (its `$USER` is the runner's account); else `$USER` (or `$LOGNAME`); else
/// git's `user.name`.
pub(crate) fn operator() -> String {
    operator_from(&|k| std::env::var(k).ok(), git_user_name)
}

pub(super) fn operator_from(
    env: &dyn Fn(&str) -> Option<String>,
    git_user: impl FnOnce() -> Option<String>,
) -> String {
    let get = |k: &str| {
        env(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    [
        "GITHUB_ACTOR",
        "GITLAB_USER_LOGIN",
        "BUILDKITE_BUILD_CREATOR",
        "CIRCLE_USERNAME",
        "BUILD_REQUESTEDFOR",
        "CHANGE_AUTHOR",
        "DRONE_COMMIT_AUTHOR",
        "CI_COMMIT_AUTHOR",
        "USER",
        "LOGNAME",
    ]
    .iter()
    .find_map(|k| get(k))
    .or_else(git_user)
    .unwrap_or_else(|| "unknown".into())
}

/// git's `user.name` on this machine, if it has one.
fn git_user_name() -> Option<String> {
    crate::util::git_output(&["config", "--get", "user.name"])
}

/// The CI run's page, when the CI gives one.
pub(super) fn ci_url() -> Option<String> {
    ci_url_from(&|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

pub(super) fn ci_url_from(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    if let (Some(server), Some(repo), Some(run)) = (
        env("GITHUB_SERVER_URL"),
        env("GITHUB_REPOSITORY"),
        env("GITHUB_RUN_ID"),
    ) {
        return Some(format!("{server}/{repo}/actions/runs/{run}"));
    }
    [
        "CI_JOB_URL",
        "BUILDKITE_BUILD_URL",
        "CIRCLE_BUILD_URL",
        "BUILD_URL",
    ]
    .iter()
    .find_map(|k| env(k))
}
