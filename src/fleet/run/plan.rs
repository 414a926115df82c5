//! The dry run: every command a run would send to each host, with the hosts' real state.

use super::*;

/// One command a run would send to a host.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlannedCommand {
    pub phase: Phase,
    pub name: String,
    pub script: String,
}

/// Everything a deploy would run on one host, in order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostPlan {
    pub host: String,
    /// Why the host could not be inspected (its commands are then not known).
    pub error: Option<String>,
    pub commands: Vec<PlannedCommand>,
}

/// What `ship deploy --dry-run` prints: the commands of a deploy, rendered by the same code a
/// real run uses, from the hosts' actual state (read, never changed).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunPlan {
    pub stage: String,
    pub release: String,
    pub revision: String,
    pub canary: Vec<String>,
    pub run_once_host: Option<String>,
    pub hosts: Vec<HostPlan>,
}

/// Inspect the hosts (read-only) and render every command a deploy would send to each.
pub async fn plan(d: Deploy) -> RunPlan {
    let Job::Deploy(source) = &d.job else {
        return RunPlan {
            stage: d.stage.name.clone(),
            release: String::new(),
            revision: String::new(),
            canary: Vec::new(),
            run_once_host: None,
            hosts: Vec::new(),
        };
    };
    let started_unix = util::unix_now();
    let mut hosts: Vec<HostRun> = d.stage.hosts.iter().map(HostRun::new).collect();
    let mut ctx = Ctx::new(
        &d,
        Arc::new(crate::report::Recorder::default()),
        CancellationToken::new(),
        started_unix,
    );
    let all: Vec<usize> = (0..hosts.len()).collect();
    connect(&all, &mut hosts, &ctx, &d).await;
    ctx.release = free_release_id(started_unix, &hosts);
    ctx.token = format!("ship-{}-{}", ctx.release, std::process::id());
    ctx.outcome = Some(Outcome::Deployed);
    let options = protocol_options(&d);
    let owner = owner_record(&ctx);
    let mut out = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        if let Some(f) = &h.failure {
            out.push(HostPlan {
                host: h.host.name.clone(),
                error: Some(f.message.clone()),
                commands: Vec::new(),
            });
            continue;
        }
        let d_to = &h.host.config.deploy_to;
        let plan = remote::Plan {
            inline_payload: Some(&source.payload),
            ..plan_for(h, &ctx, &source.delivery)
        };
        // Secrets are masked here as in every output.
        let cmd = |phase, name: &str, script: String| PlannedCommand {
            phase,
            name: ctx.masker.mask(name),
            script: ctx.masker.mask(&script),
        };
        let mut commands = vec![cmd(Phase::Lock, "lock", remote::lock(d_to, &owner))];
        for step in remote::prepare(&plan) {
            commands.push(cmd(Phase::Prepare, &step.name, step.script));
        }
        if options.run_once == Some(i) {
            for step in run_once_steps(&plan, &h.host) {
                commands.push(cmd(Phase::RunOnce, &step.name, step.script));
            }
        }
        commands.push(cmd(
            Phase::Switch,
            "switch",
            remote::armed_switch(d_to, &ctx.release),
        ));
        for step in verify_steps(&plan, &h.host) {
            commands.push(cmd(Phase::Verify, &step.name, step.script));
        }
        commands.push(cmd(
            Phase::Cleanup,
            "journal, old releases and unlock",
            finish_script(h, &ctx),
        ));
        out.push(HostPlan {
            host: h.host.name.clone(),
            error: None,
            commands,
        });
    }
    for h in &hosts {
        if let Some(c) = &h.conn {
            c.close().await;
        }
    }
    RunPlan {
        stage: d.stage.name.clone(),
        release: ctx.release.clone(),
        revision: ctx.revision.clone(),
        canary: canary_names(&d),
        run_once_host: options
            .run_once
            .and_then(|i| d.stage.hosts.get(i).map(|h| h.name.clone())),
        hosts: out,
    }
}
