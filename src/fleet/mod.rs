pub mod clock;
pub mod inspect;
pub mod lock;
pub mod protocol;
pub mod run;

pub use run::{Deploy, HostPlan, Job, Masker, PlannedCommand, RunPlan, deploy, masker_for, plan};
