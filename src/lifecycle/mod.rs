//! The shutdown phase machine (SPEC §4): what happens on SIGTERM, Ctrl-C, an HTTP drain, a remote
//! drain or a failed task. Only [`machine::PhaseMachine`] changes the phase; everything else sends
//! it commands through a [`MachineHandle`].

pub mod claims;
pub mod handle;
pub mod machine;
pub mod signals;
pub mod status;

pub use self::claims::ClaimControl;
pub use self::handle::{CancelRefused, DrainAnswer, DrainOrder, MachineHandle};
pub use self::machine::{MachineSettings, PhaseMachine, ShutdownSummary, WorkerParts};
pub use self::status::Status;
pub use crate::model::{Mode, Outcome, Phase, Trigger};
