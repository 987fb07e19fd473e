//! handover: a job worker whose shutdown is safe, fast and visible.
//!
//! Embed it with your own job kinds: implement [`jobs::Handler`], add it to a [`jobs::Registry`],
//! and run [`app::App`]. The `handover` binary is a thin wrapper around the same pieces.

pub mod app;
pub mod cli;
pub mod commands;
pub mod http;
pub mod jobs;
pub mod lifecycle;
pub mod model;
pub mod process;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod worker;
