//! Reading a deploy lock found on a host: who holds it, since when, and whether that holder
//! can still be running.

use crate::remote::LockOwner;
use crate::util;

/// Whether the run that holds a lock is still alive, as far as this controller can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// It runs on this machine and its process is alive.
    Running,
    /// It ran on this machine and its process is gone: it was killed before it finished.
    Dead,
    /// It runs elsewhere (another laptop, a CI runner), or the record is unreadable.
    Unknown,
}

/// What a held lock means, for messages and `ship status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLock {
    pub owner: Option<LockOwner>,
    pub raw: String,
    pub holder: Holder,
}

impl HeldLock {
    /// Interpret the raw owner record seen on a host from `controller` (this machine's name).
    pub fn read(raw: &str, controller: &str) -> HeldLock {
        let owner = LockOwner::parse(raw);
        let holder = match &owner {
            Some(o) if o.is_maintenance() => Holder::Unknown,
            Some(o) if o.controller == controller && o.pid != 0 => {
                if process_alive(o.pid) {
                    Holder::Running
                } else {
                    Holder::Dead
                }
            }
            _ => Holder::Unknown,
        };
        HeldLock {
            owner,
            raw: raw.trim().to_owned(),
            holder,
        }
    }

    /// One line: `deploy of 20261122101500 by alice on laptop (pid 4242), since … (5m ago)`.
    pub fn who(&self) -> String {
        let Some(o) = &self.owner else {
            if self.raw.is_empty() {
                return "a run that left no owner record (it died while taking the lock)".into();
            }
            return format!("an unreadable owner record: {:?}", self.raw);
        };
        if o.is_maintenance() {
            let mut s = format!("a maintenance lock by {}", o.user);
            if !o.controller.is_empty() {
                s.push_str(&format!(" on {}", o.controller));
            }
            if !o.started.is_empty() {
                s.push_str(&format!(", since {}", o.started));
            }
            if let Some(m) = &o.message {
                s.push_str(&format!(": {m:?}"));
            }
            return s;
        }
        let kind = if o.kind.is_empty() { "deploy" } else { &o.kind };
        let mut s = kind.to_owned();
        for (label, value) in [
            (" of ", &o.release),
            (" by ", &o.user),
            (" on ", &o.controller),
        ] {
            if !value.is_empty() {
                s.push_str(label);
                s.push_str(value);
            }
        }
        if o.pid != 0 {
            s.push_str(&format!(" (pid {})", o.pid));
        }
        match (&o.ci_url, &o.ci_job) {
            (Some(url), _) => s.push_str(&format!(", CI run {url}")),
            (None, Some(job)) => s.push_str(&format!(", CI job {job}")),
            (None, None) => {}
        }
        if !o.started.is_empty() {
            s.push_str(&format!(", since {}", o.started));
        }
        if let Some(age) = util::parse_rfc3339(&o.started)
            .and_then(|t| util::unix_now().checked_sub(t))
            .map(|secs| util::human_duration(std::time::Duration::from_secs(secs)))
        {
            s.push_str(&format!(" ({age} ago)"));
        }
        match self.holder {
            Holder::Dead => {
                s.push_str("; that process is no longer running: it was killed before it finished")
            }
            Holder::Running => s.push_str("; it is still running on this machine"),
            Holder::Unknown => {}
        }
        s
    }

    /// The release the holder was deploying or rolling back to, if the record names one.
    pub fn release(&self) -> Option<&str> {
        self.owner
            .as_ref()
            .map(|o| o.release.as_str())
            .filter(|r| !r.is_empty())
    }

    /// The release the holder was staging (a deploy's; a rollback stages none).
    pub fn staged_release(&self) -> Option<&str> {
        self.owner.as_ref().and_then(|o| o.staged_release())
    }

    /// A lock taken on purpose (`ship lock acquire`): nothing waits for it.
    pub fn is_maintenance(&self) -> bool {
        self.owner.as_ref().is_some_and(LockOwner::is_maintenance)
    }

    /// What the operator should do about it.
    pub fn hint(&self, stage: &str) -> String {
        if self.is_maintenance() {
            return format!(
                "hint: it was taken on purpose (`ship lock acquire`), and deploys wait for no such \
                 lock; `ship lock release {stage}` lifts it when the work is done"
            );
        }
        match self.holder {
            Holder::Dead if self.staged_release().is_some() => format!(
                "hint: `ship status {stage}` shows what it left on each host; \
                 `ship lock release {stage}` removes the lock and its unfinished release"
            ),
            Holder::Dead => format!(
                "hint: `ship status {stage}` shows what it left on each host; \
                 `ship lock release {stage}` removes the lock"
            ),
            _ => format!(
                "hint: wait for it to finish (or pass --lock-wait 10m); if it died, \
                 `ship status {stage}` shows what it left and `ship lock release {stage}` \
                 clears it"
            ),
        }
    }
}

fn process_alive(pid: u32) -> bool {
    let proc = std::path::Path::new("/proc");
    if !proc.join("self").exists() {
        return true; // cannot tell: assume the worst (alive)
    }
    proc.join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(controller: &str, pid: u32) -> String {
        serde_json::to_string(&LockOwner {
            token: "t".into(),
            kind: "deploy".into(),
            user: "alice".into(),
            controller: controller.into(),
            pid,
            release: "20261122101500".into(),
            started: "2026-01-02T10:15:00Z".into(),
            ci_job: Some("GITHUB_RUN_ID=7".into()),
            ci_url: None,
            message: None,
        })
        .unwrap_or_default()
    }

    #[test]
    fn a_dead_local_holder_is_recognised() {
        // pid 0 is never a process; a huge pid is beyond pid_max.
        let l = HeldLock::read(&owner("here", 4_000_000_000), "here");
        assert_eq!(l.holder, Holder::Dead);
        assert_eq!(l.release(), Some("20261122101500"));
        let who = l.who();
        assert!(
            who.starts_with(
                "deploy of 20261122101500 by alice on here (pid 4000000000), CI job \
                 GITHUB_RUN_ID=7, since 2026-01-02T10:15:00Z ("
            ),
            "{who}"
        );
        assert!(who.ends_with("it was killed before it finished"), "{who}");
        assert!(l.hint("prod").contains("`ship lock release prod`"));
    }

    #[test]
    fn a_live_or_remote_holder_is_not_called_dead() {
        let me = std::process::id();
        assert_eq!(
            HeldLock::read(&owner("here", me), "here").holder,
            Holder::Running
        );
        assert_eq!(
            HeldLock::read(&owner("elsewhere", 4_000_000_000), "here").holder,
            Holder::Unknown
        );
        let garbage = HeldLock::read("not json", "here");
        assert_eq!(garbage.holder, Holder::Unknown);
        assert!(garbage.who().contains("unreadable"));
    }
}
