//! Every catchable terminating signal has a handler: SIGTERM, SIGINT and SIGHUP (a closed terminal)
//! go to the phase machine every time they arrive (the second one forces); SIGUSR1, SIGUSR2 and
//! SIGALRM are logged and ignored, so none of them kills the worker without a hand-back.

use super::{MachineHandle, Trigger};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Signal handlers installed early; signals arriving before `forward_to` are kept, not lost.
pub struct SignalListener {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
    /// Signals whose default action would end the process, which a worker has no use for.
    ignored: Vec<(&'static str, Signal)>,
}

impl SignalListener {
    /// Replaces the default (fatal) action of every signal named above.
    pub fn install() -> std::io::Result<SignalListener> {
        Ok(SignalListener {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
            ignored: vec![
                ("SIGUSR1", signal(SignalKind::user_defined1())?),
                ("SIGUSR2", signal(SignalKind::user_defined2())?),
                ("SIGALRM", signal(SignalKind::alarm())?),
            ],
        })
    }

    /// Sends every signal, from now on and any already received, to the machine, until `stop` is
    /// cancelled.
    pub async fn forward_to(mut self, machine: MachineHandle, stop: CancellationToken) {
        loop {
            let ignored =
                futures_util::future::select_all(self.ignored.iter_mut().map(|(name, signal)| {
                    Box::pin(async move { signal.recv().await.map(|()| *name) })
                }));
            let trigger = tokio::select! {
                Some(()) = self.terminate.recv() => Trigger::Sigterm,
                Some(()) = self.interrupt.recv() => Trigger::Sigint,
                Some(()) = self.hangup.recv() => Trigger::Sighup,
                (Some(name), _, _) = ignored => {
                    tracing::warn!(signal = name, "signal received and ignored; send SIGTERM to drain this worker");
                    continue;
                }
                _ = stop.cancelled() => return,
            };
            tracing::info!(signal = %trigger, "signal received");
            machine.signal(trigger);
        }
    }
}
