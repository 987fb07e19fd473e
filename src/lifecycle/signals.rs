//! Forwards SIGTERM and SIGINT to the phase machine, every time they arrive (the second one forces).

use super::{MachineHandle, Trigger};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Signal handlers installed early; signals arriving before `forward_to` are kept, not lost.
pub struct SignalListener {
    terminate: Signal,
    interrupt: Signal,
}

impl SignalListener {
    /// Replaces the default (fatal) action of SIGTERM and SIGINT.
    pub fn install() -> std::io::Result<SignalListener> {
        Ok(SignalListener {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Sends every signal, from now on and any already received, to the machine.
    pub fn forward_to(mut self, machine: MachineHandle) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let trigger = tokio::select! {
                    Some(()) = self.terminate.recv() => Trigger::Sigterm,
                    Some(()) = self.interrupt.recv() => Trigger::Sigint,
                    else => return,
                };
                tracing::info!(signal = %trigger, "signal received");
                machine.signal(trigger);
            }
        })
    }
}
