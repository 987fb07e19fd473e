//! handover: a job worker whose shutdown is safe, fast and visible.
//!
//! Embed it with your own job kinds: implement [`jobs::Handler`], add it to a [`jobs::Registry`],
//! and run [`app::App`]. The `handover` binary is a thin wrapper around the same pieces.
//!
//! The embedding surface is [`jobs`] (handlers and their context), [`app`] (configuration and the
//! worker), [`store`] (opening a store, submitting and reading jobs), [`model`] (the records and
//! names those pass around), [`lifecycle`] (signals, drains and the shutdown's summary) and
//! [`telemetry`] (logs and trace export). `examples/embed.rs` is a complete program.

#![warn(missing_docs)]

pub mod app;
// Public for the binary and the integration tests, not part of the embedding surface.
#[doc(hidden)]
pub mod cli;
// Public for the binary and the integration tests, not part of the embedding surface.
#[doc(hidden)]
pub mod commands;
// Public for the binary and the integration tests, not part of the embedding surface.
#[doc(hidden)]
pub mod http;
pub mod jobs;
pub mod lifecycle;
pub mod model;
// Public for the binary and the integration tests, not part of the embedding surface.
#[doc(hidden)]
pub mod process;
pub mod store;
pub mod telemetry;
// Public for the binary and the integration tests, not part of the embedding surface.
#[doc(hidden)]
pub mod text;
// Public for the binary and the integration tests, not part of the embedding surface.
#[doc(hidden)]
pub mod worker;
