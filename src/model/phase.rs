//! The shutdown vocabulary of SPEC §4: phases, triggers, modes and outcomes, with their wire names.

use super::wire_enum;

wire_enum!(
    /// Where a worker is in its life. Only the phase machine moves it forward.
    Phase {
        /// Building: not ready yet.
        Starting => "starting",
        /// Claiming and running jobs; ready.
        Running => "running",
        /// Not ready and claiming nothing; held jobs handed back, `--drain-delay` waited out (in
        /// `finish` mode, running jobs may complete).
        Draining => "draining",
        /// Running jobs asked to stop at their next checkpoint.
        Checkpointing => "checkpointing",
        /// Jobs handed back to the store with their checkpoints.
        Releasing => "releasing",
        /// The worker row marked stopped and the shutdown recorded.
        Deregistering => "deregistering",
        /// Done; the process may exit.
        Stopped => "stopped",
    }
);

wire_enum!(
    /// What started a shutdown.
    Trigger {
        /// SIGTERM.
        Sigterm => "sigterm",
        /// SIGINT (Ctrl-C).
        Sigint => "sigint",
        /// SIGHUP (a closed terminal).
        Sighup => "sighup",
        /// A drain asked for over HTTP (or by an embedding program through its handle).
        Http => "http",
        /// A drain request written into the store (`handover drain`).
        Remote => "remote",
        /// An essential task of the worker failed.
        Internal => "internal",
    }
);

wire_enum!(
    /// How in-flight jobs are treated during a drain.
    Mode {
        /// Checkpoint running jobs and hand them back.
        Handoff => "handoff",
        /// Let running jobs complete within the finish budget, then checkpoint and hand back the rest.
        Finish => "finish",
    }
);

wire_enum!(
    /// How a shutdown ended.
    Outcome {
        /// Every step finished within the grace period.
        Clean => "clean",
        /// The grace period ran out, or a second signal came.
        Forced => "forced",
    }
);

impl Trigger {
    /// Signal-started and internal drains cannot be cancelled (SPEC §4, §10).
    pub fn is_cancellable(self) -> bool {
        matches!(self, Trigger::Http | Trigger::Remote)
    }

    /// Whether this trigger is an operating-system signal.
    pub fn is_signal(self) -> bool {
        matches!(self, Trigger::Sigterm | Trigger::Sigint | Trigger::Sighup)
    }
}

impl Phase {
    /// The phases a shutdown passes through, in order.
    pub const SHUTDOWN: &'static [Phase] = &[
        Phase::Draining,
        Phase::Checkpointing,
        Phase::Releasing,
        Phase::Deregistering,
    ];

    /// True once a drain has begun (the worker will not claim again unless it is cancelled).
    pub fn is_shutting_down(self) -> bool {
        !matches!(self, Phase::Starting | Phase::Running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for phase in Phase::ALL {
            assert_eq!(phase.as_str().parse::<Phase>().unwrap(), *phase);
            assert_eq!(
                serde_json::to_string(phase).unwrap(),
                format!("\"{}\"", phase.as_str())
            );
        }
        for mode in Mode::ALL {
            assert_eq!(mode.as_str().parse::<Mode>().unwrap(), *mode);
        }
        for trigger in Trigger::ALL {
            assert_eq!(
                serde_json::to_string(trigger).unwrap(),
                format!("\"{}\"", trigger.as_str())
            );
        }
    }

    #[test]
    fn unknown_names_are_rejected_with_the_choices() {
        let err = "pause".parse::<Mode>().unwrap_err();
        assert!(err.contains("handoff, finish"), "{err}");
    }

    #[test]
    fn only_http_and_remote_drains_can_be_cancelled() {
        assert!(Trigger::Http.is_cancellable());
        assert!(Trigger::Remote.is_cancellable());
        assert!(!Trigger::Sigterm.is_cancellable());
        assert!(!Trigger::Sigint.is_cancellable());
        assert!(!Trigger::Internal.is_cancellable());
        assert!(!Trigger::Internal.is_signal());
    }
}
