//! The shared vocabulary: phases, triggers, modes, outcomes, job statuses, release reasons, task
//! names, and the records every layer passes around. It imports nothing of the crate, and
//! everything else imports it.

mod wire;

pub mod control;
pub mod job;
pub mod phase;
pub mod retention;
pub mod shutdown;
pub mod task;
pub mod worker;

pub(crate) use self::wire::wire_enum;

pub use self::control::{
    CancelOutcome, CompletionRecord, JobEvent, JobEventKind, QueueCount, RetryOutcome,
    BUILT_IN_KINDS, QUEUE_STATUSES,
};
pub use self::job::{
    AttemptOutcome, ClaimedJob, FailOutcome, Job, JobId, JobStatus, Lease, NewJob, ReleaseReason,
    DEFAULT_MAX_ATTEMPTS,
};
pub use self::phase::{Mode, Outcome, Phase, Trigger};
pub use self::retention::{PruneReport, PrunedTable, Retention};
pub use self::shutdown::{PhaseSpan, ShutdownRecord};
pub use self::task::Task;
pub use self::worker::{
    DrainCost, DrainQueued, DrainRequest, HeartbeatReport, QueuedDrain, WorkerRegistration,
    WorkerRow,
};
