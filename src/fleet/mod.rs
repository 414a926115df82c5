pub mod check;
pub mod clock;
pub mod history;
pub mod inspect;
pub mod lock;
pub mod maintenance;
pub mod protocol;
pub mod run;

pub use crate::mask::Masker;
pub use run::{Deploy, HostPlan, Job, PlannedCommand, RunPlan, deploy, masker_for, plan};
