//! What a rollback switches to (the release named, or the one before the last deploy, from the
//! hosts' journals), and staging its link on every host.

use super::*;

/// Where a rollback goes.
pub(super) struct Target {
    pub(super) release: String,
    pub(super) revision: String,
    /// It is newer than what every host is on: a move forward, not back (nothing is marked bad).
    pub(super) forward: bool,
}

/// Why a rollback does not happen.
pub(super) enum Refusal {
    /// Every host already is on this release.
    AlreadyThere(String),
    /// Per host, why it cannot go to the target (when the target is known).
    Hosts {
        target: Option<String>,
        problems: Vec<(usize, String)>,
    },
}

/// The release a rollback switches to, and its revision; or why it cannot.
pub(super) fn rollback_target(hosts: &[HostRun], to: Option<&str>) -> Result<Target, Refusal> {
    let unknown = |problems| Refusal::Hosts {
        target: None,
        problems,
    };
    let target = match to {
        Some(t) => t.to_owned(),
        None => {
            let mut found: Vec<(usize, Result<String, String>)> = Vec::new();
            for (i, h) in hosts.iter().enumerate() {
                found.push((i, journal_target(&h.preflight)));
            }
            let errors: Vec<(usize, String)> = found
                .iter()
                .filter_map(|(i, r)| r.as_ref().err().map(|e| (*i, e.clone())))
                .collect();
            if !errors.is_empty() {
                return Err(unknown(errors));
            }
            let targets: Vec<(usize, String)> = found
                .into_iter()
                .filter_map(|(i, r)| r.ok().map(|t| (i, t)))
                .collect();
            let first = targets.first().map(|(_, t)| t.clone()).unwrap_or_default();
            let disagree: Vec<(usize, String)> = targets
                .iter()
                .filter(|(_, t)| *t != first)
                .map(|(i, t)| {
                    (
                        *i,
                        format!(
                            "this host's previous release is {t}, but {} has {first}; the fleet \
                             does not agree on what to roll back to (hint: name it with --to)",
                            hosts[0].host.name
                        ),
                    )
                })
                .collect();
            if !disagree.is_empty() {
                return Err(unknown(disagree));
            }
            first
        }
    };
    if !remote::is_release_id(&target) {
        return Err(unknown(vec![(
            0,
            format!("`{target}` is not a release id (they look like 20261122153000)"),
        )]));
    }
    let known = |problems| Refusal::Hosts {
        target: Some(target.clone()),
        problems,
    };
    // A release a failed deploy left prepared was never live anywhere: it is deployed (and
    // reused) by deploying its build again, not rolled back to.
    let prepared: Vec<(usize, String)> = hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| h.preflight.prepared.iter().any(|(id, _)| *id == target))
        .map(|(i, _)| {
            (
                i,
                format!(
                    "releases/{target} was built by a deploy that failed and never went live; \
                     nothing was changed on any host (hint: deploy the same revision again: \
                     hosts that built it take it up without building)"
                ),
            )
        })
        .collect();
    if !prepared.is_empty() {
        return Err(known(prepared));
    }
    let missing: Vec<(usize, String)> = hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| !h.preflight.has_complete(&target))
        .map(|(i, h)| {
            let why = if h.preflight.releases.contains(&target) {
                "is incomplete (its deploy never finished)"
            } else {
                "does not exist"
            };
            (
                i,
                format!(
                    "releases/{target} {why} on this host; nothing was changed on any host \
                     (hint: `ship releases` lists what every host has; name another with --to)"
                ),
            )
        })
        .collect();
    if !missing.is_empty() {
        return Err(known(missing));
    }
    if hosts
        .iter()
        .all(|h| h.preflight.current_release() == Some(target.as_str()))
    {
        return Err(Refusal::AlreadyThere(target));
    }
    // One release id on every host, but is it one release? Two deploys to different hosts in
    // the same second can give one id to two revisions.
    let revisions: Vec<(usize, String)> = hosts
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            h.preflight
                .revisions
                .iter()
                .find(|(id, _)| *id == target)
                .map(|(_, r)| (i, r.clone()))
        })
        .collect();
    let revision = revisions
        .first()
        .map(|(_, r)| r.clone())
        .unwrap_or_default();
    let differ: Vec<(usize, String)> = revisions
        .iter()
        .filter(|(_, r)| *r != revision)
        .map(|(i, r)| {
            (
                *i,
                format!(
                    "releases/{target} here is revision {r}, but on {} it is {revision}: the \
                     fleet does not agree on what {target} is, and nothing was changed on any \
                     host (hint: deploy the revision you want instead)",
                    hosts[revisions[0].0].host.name
                ),
            )
        })
        .collect();
    if !differ.is_empty() {
        return Err(known(differ));
    }
    // Release ids are timestamps: a target newer than every host's current release is a move
    // forward (`--to` a release rolled back from), not a rollback.
    let forward = hosts.iter().all(|h| {
        h.preflight
            .current_release()
            .is_some_and(|c| c < target.as_str())
    });
    Ok(Target {
        release: target,
        revision,
        forward,
    })
}

/// From a host's journal: the release that was current before the deploy that made the
/// current release current, skipping releases marked bad.
pub(super) fn journal_target(pf: &Preflight) -> Result<String, String> {
    let Some(mut cur) = pf.current_release().map(str::to_owned) else {
        return Err("current does not point at a release here; nothing to roll back from".into());
    };
    let entries: Vec<serde_json::Value> = pf
        .history
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for _ in 0..entries.len().max(1) {
        let deployed = entries.iter().rev().find(|e| {
            e["kind"] == "deploy" && e["outcome"] == "deployed" && e["release"] == cur.as_str()
        });
        let Some(e) = deployed else {
            return Err(format!(
                "the journal (.ship/history) does not say what was current before {cur} \
                 (hint: name the release with --to; `ship releases` lists them)"
            ));
        };
        let Some(prev) = e["previous"].as_str().map(str::to_owned) else {
            return Err(format!(
                "{cur} was the first release deployed here; there is nothing before it"
            ));
        };
        if pf.bad.contains(&prev) {
            cur = prev;
            continue;
        }
        return Ok(prev);
    }
    Err("no earlier good release in the journal (hint: name one with --to)".into())
}

/// Rollback's prepare: check the target on every host (under the lock) and stage its link.
pub(super) async fn stage_target(ids: &[usize], hosts: &mut [HostRun], ctx: &RunCtx) -> Vec<Fact> {
    let mut events: Vec<Fact> = ids.iter().map(|&i| Fact::Staging(i)).collect();
    let results = join_all(ids.iter().map(|&i| {
        let h = &hosts[i];
        let conn = h.connection();
        let script = remote::stage_existing(&h.host.config.deploy_to, &ctx.release);
        let name = h.host.name.clone();
        let t = h.host.config.timeouts.step.min(SHORT_COMMAND);
        async move {
            ctx.phase(&name, Phase::Prepare);
            let t0 = Instant::now();
            let what = Purpose::changes("prepare", "stage the target");
            let r = run_short(conn, what, &script, t).await;
            if matches!(&r, Ok(o) if o.success()) {
                ctx.reporter.report(&Event::Prepared {
                    host: name,
                    elapsed_ms: t0.elapsed().as_millis() as u64,
                });
            }
            (i, r)
        }
    }))
    .await;
    for (i, r) in results {
        match r {
            Ok(o) if o.success() => events.push(Fact::Prepared(i)),
            Ok(o) => {
                let mut f = command_failure(ctx, Phase::Prepare, Some("stage"), &o);
                if o.status == Some(RELEASE_MISSING) {
                    f.message = o.stdout_text().trim().to_owned();
                }
                hosts[i].fail(ctx, f);
                events.push(Fact::PrepareFailed(i));
            }
            Err(e) => {
                let f = transport_failure(ctx, Phase::Prepare, Some("stage"), &e);
                hosts[i].fail(ctx, f);
                events.push(Fact::PrepareFailed(i));
            }
        }
    }
    events
}
