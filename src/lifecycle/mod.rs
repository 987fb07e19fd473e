//! The shutdown phase machine (SPEC §4): what happens on SIGTERM, Ctrl-C, an HTTP drain or a remote
//! drain. Only [`machine::PhaseMachine`] changes the phase; everything else sends it commands.

pub mod machine;
pub mod phase;
pub mod signals;
pub mod status;

pub use self::machine::{
    CancelRefused, DrainAnswer, DrainOrder, MachineHandle, MachineSettings, PhaseMachine,
    ShutdownSummary, WorkerParts,
};
pub use self::phase::{Mode, Outcome, Phase, Trigger};
pub use self::status::Status;
