//! The shutdown vocabulary of SPEC §4: phases, triggers, modes and outcomes, with their wire names.

/// Declares a fieldless enum whose variants have one lowercase wire name each,
/// used alike in JSON, the store, metric labels and the command line.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in declaration order (used to initialise metric label sets).
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} {other:?}; expected one of: {}",
                        stringify!($name).to_lowercase(),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}
pub(crate) use wire_enum;

wire_enum!(
    /// Where a worker is in its life. Only the phase machine moves it forward.
    Phase {
        Starting => "starting",
        Running => "running",
        Draining => "draining",
        Checkpointing => "checkpointing",
        Releasing => "releasing",
        Deregistering => "deregistering",
        Stopped => "stopped",
    }
);

wire_enum!(
    /// What started a shutdown.
    Trigger {
        Sigterm => "sigterm",
        Sigint => "sigint",
        Sighup => "sighup",
        Http => "http",
        Remote => "remote",
    }
);

wire_enum!(
    /// How in-flight jobs are treated during a drain.
    Mode {
        Handoff => "handoff",
        Finish => "finish",
    }
);

wire_enum!(
    /// How a shutdown ended.
    Outcome {
        Clean => "clean",
        Forced => "forced",
    }
);

impl Trigger {
    /// Signal-started drains cannot be cancelled (SPEC §4).
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
    }
}
