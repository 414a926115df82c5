//! A maintenance lock: `ship lock acquire` takes every host's deploy lock on purpose, with a
//! message, so that no deploy or rollback starts until `ship lock release` lifts it (a database
//! migration by hand, an incident). Deploys refuse it at once; `--lock-wait` does not wait for it.

use serde::Serialize;

use super::inspect::each_host;
use super::lock::HeldLock;
use crate::inventory::Stage;
use crate::remote::{self, LOCK_HELD, LockOwner, MAINTENANCE};
use crate::transport::{ConnectOptions, Purpose};
use crate::util;

/// What became of the maintenance lock on one host.
#[derive(Debug, Clone, Serialize)]
pub struct Acquired {
    pub host: String,
    /// Ours now (and kept: every host was taken).
    pub locked: bool,
    /// Another run or maintenance holds it: who.
    pub held_by: Option<String>,
    pub error: Option<String>,
}

/// The owner record of a maintenance lock taken now by this operator.
pub fn owner(message: &str) -> LockOwner {
    let now = util::unix_now();
    LockOwner {
        token: format!("ship-maintenance-{now}-{}", std::process::id()),
        kind: MAINTENANCE.to_owned(),
        user: super::run::operator(),
        controller: super::run::controller_name(),
        // Tied to no process: it is not "dead" when ship exits.
        pid: 0,
        release: String::new(),
        started: util::rfc3339(now),
        ci_job: None,
        ci_url: None,
        message: Some(message.to_owned()),
    }
}

/// Take the lock of every host of `stage` for maintenance. Every host or none: when a host is
/// held by another run (or cannot be reached), the locks taken are given back. The second
/// value says whether every host is locked now.
pub async fn acquire(
    stage: &Stage,
    options: &ConnectOptions,
    owner: &LockOwner,
) -> (Vec<Acquired>, bool) {
    let record = serde_json::to_string(owner).unwrap_or_default();
    let controller = super::run::controller_name();
    let results = each_host(stage, options, |host, conn| {
        let record = record.clone();
        let controller = controller.clone();
        async move {
            let mut a = Acquired {
                host: host.name.clone(),
                locked: false,
                held_by: None,
                error: None,
            };
            let conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    a.error = Some(e);
                    return a;
                }
            };
            let script = remote::lock(&host.config.deploy_to, &record);
            let t = host
                .config
                .timeouts
                .connect
                .max(host.config.timeouts.switch);
            match conn
                .run(Purpose::changes("lock", "lock"), &script, None, None, t)
                .await
            {
                Ok(o) if o.success() => a.locked = true,
                Ok(o) if o.status == Some(LOCK_HELD) => {
                    let raw = remote::parse_lock_held(&o.stdout_text());
                    a.held_by = Some(HeldLock::read(&raw, &controller).who());
                }
                Ok(o) => a.error = Some(o.last_lines(3).join(" / ")),
                Err(e) => a.error = Some(e.to_string()),
            }
            conn.close().await;
            a
        }
    })
    .await;
    if results.iter().all(|a| a.locked) {
        return (results, true);
    }
    // Not every host: give back what was taken, so the fleet is as it was.
    let taken: Vec<String> = results
        .iter()
        .filter(|a| a.locked)
        .map(|a| a.host.clone())
        .collect();
    let mut give_back = stage.clone();
    give_back.hosts.retain(|h| taken.contains(&h.name));
    let token = owner.token.clone();
    let back = each_host(&give_back, options, |host, conn| {
        let token = token.clone();
        async move {
            let ok = match conn {
                Ok(c) => {
                    let script = remote::unlock(&host.config.deploy_to, &token);
                    let r = c
                        .run(
                            Purpose::changes("unlock", "give back"),
                            &script,
                            None,
                            None,
                            host.config.timeouts.connect,
                        )
                        .await;
                    c.close().await;
                    matches!(r, Ok(o) if o.success())
                }
                Err(_) => false,
            };
            (host.name.clone(), ok)
        }
    })
    .await;
    let results = results
        .into_iter()
        .map(|mut a| {
            if a.locked {
                let given = back.iter().any(|(h, ok)| *h == a.host && *ok);
                a.locked = !given;
                if !given {
                    a.error = Some(
                        "locked, and the lock could not be given back: `ship lock release` lifts \
                         it"
                        .into(),
                    );
                }
            }
            a
        })
        .collect();
    (results, false)
}
