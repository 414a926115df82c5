//! ship: fleet-atomic deploys over SSH.
//!
//! The library never prints: it reports through [`report::Reporter`]; only the CLI chooses how
//! events are shown.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod error;
pub mod fleet;
pub mod hooks;
pub mod inventory;
pub mod mask;
pub mod remote;
pub mod report;
pub mod source;
pub mod transport;
pub mod util;

pub mod cli;
