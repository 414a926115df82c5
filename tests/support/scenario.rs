//! A scenario in one expression: the fleet, the faults per host and phase, the command, and
//! what every host must look like afterwards.
//!
//! ```ignore
//! Scenario::new(3)
//!     .deployed()
//!     .fault(1, Fault::FailBuild)
//!     .run(&["deploy", "production"])
//!     .exits(1)
//!     .says("aborted: no host was switched")
//!     .unchanged_but_prepared();
//! ```
//!
//! `deployed()` deploys once first and remembers the live release and every host's `shared/`;
//! the expectations check them on every host (current, releases, shared/ byte-identical, lock).

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use super::{Fleet, Run, TestHost, wait_until};

/// Something wrong on one host, set up before the command runs or while it runs.
pub enum Fault {
    /// The example app's build fails there (exit 3: `shared/FAIL_BUILD`).
    FailBuild,
    /// `mv` of the switch's staged link does this shell action instead of (or around) the
    /// rename (hosts then switch with `mv`, not perl).
    Switch(&'static str),
}

/// What happens to a host once every host is inside the build (a slow build is used).
pub enum DuringBuild {
    /// The host's sshd and every process of it are killed.
    Kill(usize),
    /// The host is frozen (SIGSTOP to all its processes).
    Freeze(usize),
    /// Every packet to and from the host is dropped.
    Cut(usize),
    /// ship gets this signal (`-INT`, `-TERM`, `-HUP`).
    Signal(&'static str),
}

/// The slow build step used for faults during the build: every host is inside it for 20 s.
pub const SLOW_BUILD: &str = "    build: [\"sh build.sh\", \"touch building; sleep 20\"]\n";

pub struct Scenario {
    hosts: usize,
    small_disk: Option<(usize, &'static str)>,
    defaults: String,
    stage: String,
    deployed: bool,
    faults: Vec<(usize, Fault)>,
    during_build: Option<DuringBuild>,
}

impl Scenario {
    pub fn new(hosts: usize) -> Self {
        Scenario {
            hosts,
            small_disk: None,
            defaults: String::new(),
            stage: String::new(),
            deployed: false,
            faults: Vec::new(),
            during_build: None,
        }
    }

    /// Host `i`'s deploy directory is on a tmpfs of `size` (`"3m"`).
    pub fn small_disk(mut self, i: usize, size: &'static str) -> Self {
        self.small_disk = Some((i, size));
        self
    }

    /// Lines added to the inventory's `defaults:` (indented by two spaces).
    pub fn defaults(mut self, lines: &str) -> Self {
        self.defaults.push_str(lines);
        self
    }

    /// Lines added to the stage (indented by four spaces).
    pub fn stage(mut self, lines: &str) -> Self {
        self.stage.push_str(lines);
        self
    }

    /// Deploy once before the scenario's command: that release is live on every host.
    pub fn deployed(mut self) -> Self {
        self.deployed = true;
        self
    }

    pub fn fault(mut self, host: usize, fault: Fault) -> Self {
        self.faults.push((host, fault));
        self
    }

    /// Once every host is inside the (slow) build, do this.
    pub fn during_build(mut self, what: DuringBuild) -> Self {
        self.stage.push_str(SLOW_BUILD);
        self.during_build = Some(what);
        self
    }

    /// Set the fleet up, run ship with `args`, and return what happened.
    pub fn run(self, args: &[&str]) -> Ran {
        let mut fleet = Fleet::start_with(self.hosts, self.small_disk);
        let mut live = None;
        if self.deployed {
            fleet.inventory("", "");
            live = Some(fleet.deploy_first());
        }
        fleet.inventory(&self.defaults, &self.stage);
        let snaps = fleet.hosts.iter().map(|h| h.shared_snapshot()).collect();
        for (i, fault) in &self.faults {
            let h = fleet.host(*i);
            match fault {
                Fault::FailBuild => fs::write(h.path("shared/FAIL_BUILD"), "").expect("marker"),
                Fault::Switch(action) => {
                    h.switch_through_mv();
                    h.fault(
                        "mv",
                        &format!(
                            "case \"$2\" in .ship/stage-*) {action} ;; esac\nexec /bin/mv \"$@\""
                        ),
                    );
                }
            }
        }
        // The faults' own files in shared/ are part of the scenario, not a change ship made.
        let snaps: Vec<BTreeMap<String, String>> = if self.faults.is_empty() {
            snaps
        } else {
            fleet.hosts.iter().map(|h| h.shared_snapshot()).collect()
        };
        let run = match self.during_build {
            None => fleet.ship(args),
            Some(what) => {
                let running = fleet.spawn_ship(args);
                wait_until(
                    "every host running the build",
                    Duration::from_secs(20),
                    || {
                        fleet.hosts.iter().all(|h| {
                            h.releases()
                                .iter()
                                .any(|r| h.path(&format!("releases/{r}/building")).exists())
                        })
                    },
                );
                match what {
                    DuringBuild::Kill(i) => fleet.hosts[i].kill(),
                    DuringBuild::Freeze(i) => fleet.hosts[i].freeze(),
                    DuringBuild::Cut(i) => fleet.hosts[i].cut(),
                    DuringBuild::Signal(sig) => running.signal(sig),
                }
                running.finish()
            }
        };
        Ran {
            fleet,
            run,
            live,
            snaps,
        }
    }
}

/// A scenario that ran: the fleet as it is now, ship's run, and what was there before.
pub struct Ran {
    pub fleet: Fleet,
    pub run: Run,
    /// The release live on every host before the command (with `deployed()`).
    pub live: Option<String>,
    /// Every host's `shared/` before the command.
    pub snaps: Vec<BTreeMap<String, String>>,
}

impl Ran {
    /// ship exited with `code`.
    pub fn exits(&self, code: i32) -> &Self {
        assert_eq!(self.run.code, code, "{}", self.run.all());
        self
    }

    /// ship's output (stdout and stderr) holds `text`.
    pub fn says(&self, text: &str) -> &Self {
        let all = self.run.all();
        assert!(all.contains(text), "expected {text:?} in:\n{all}");
        self
    }

    /// The release live before the command (the scenario deployed first).
    pub fn live(&self) -> &str {
        self.live
            .as_deref()
            .expect("the scenario deployed first (Scenario::deployed)")
    }

    /// Every host is exactly as before: on the live release and no other, `shared/`
    /// byte-identical, no lock.
    pub fn unchanged(&self) -> &Self {
        for (h, snap) in self.fleet.hosts.iter().zip(&self.snaps) {
            h.assert_as_before(self.live(), snap, false);
        }
        self
    }

    /// As [`Ran::unchanged`], except that a host may keep a release it built completely,
    /// whole and marked prepared (another host's build failed); `failed` hosts keep nothing.
    pub fn unchanged_but_prepared(&self, failed: &[usize]) -> &Self {
        for (i, (h, snap)) in self.fleet.hosts.iter().zip(&self.snaps).enumerate() {
            h.assert_as_before(self.live(), snap, !failed.contains(&i));
        }
        self
    }

    pub fn host(&self, i: usize) -> &TestHost {
        self.fleet.host(i)
    }
}
