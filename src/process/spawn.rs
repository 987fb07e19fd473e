//! Starting children: every one is forked by one long-lived spawner thread, in its own process
//! group, with PDEATHSIG set before it runs an instruction of its program, and under the watchdog.

use super::reaper::{spawn_registered, Registration};
use super::watchdog::Watchdog;
use nix::fcntl::{open, OFlag};
use nix::libc;
use nix::sys::signal::{killpg, SigSet, Signal};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::{mpsc, Mutex};
use tokio::sync::oneshot;

/// A started child, with the registration that keeps a PID-1 orphan sweep from reaping it
/// (and so stealing its exit status) until it has been waited for.
pub type Spawned = (tokio::process::Child, Registration);

struct Spawn {
    command: tokio::process::Command,
    /// The worker's copy of the descriptor passed to the child: open until the fork, closed right
    /// after.
    keep_open: OwnedFd,
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<io::Result<Spawned>>,
}

enum Request {
    Spawn(Box<Spawn>),
    /// A child's group is gone; the watchdog may forget it.
    Forget(i32),
}

/// Starts `command` on the spawner thread, in a process group of its own (led by the child: its
/// pgid is its pid) that the watchdog kills if this process dies. `pass` becomes the child's
/// descriptor `at` (made inheritable there); every descriptor above `at` is close-on-exec in the
/// child, and it starts with no signal blocked. Our copy of `pass` is closed once the child has
/// its own.
pub async fn spawn(
    mut command: tokio::process::Command,
    pass: OwnedFd,
    at: RawFd,
) -> io::Result<Spawned> {
    // setpgid(0, 0) in the child, before `child_setup` runs.
    command.process_group(0);
    let parent = std::process::id() as libc::pid_t;
    let fd = pass.as_raw_fd();
    // SAFETY: `child_setup` only makes async-signal-safe system calls (see there).
    unsafe {
        command.pre_exec(move || child_setup(parent, fd, at));
    }
    let (reply, answer) = oneshot::channel();
    let request = Request::Spawn(Box::new(Spawn {
        command,
        keep_open: pass,
        runtime: tokio::runtime::Handle::current(),
        reply,
    }));
    if !send(request, true) {
        return Err(io::Error::other(
            "the exec spawner thread cannot be started",
        ));
    }
    answer
        .await
        .map_err(|_| io::Error::other("the exec spawner thread failed"))?
}

/// Tells the watchdog that a child's group is gone (a no-op if the spawner never ran).
pub(super) fn forget(pgid: i32) {
    send(Request::Forget(pgid), false);
}

/// Runs in the child between fork and exec. A fork of a multi-threaded process may only make
/// async-signal-safe calls here: system calls, no allocation, no locks. The `nix` calls used are
/// thin wrappers of one system call each; `fcntl`, `dup2` and `close_range` are raw `libc` because
/// their `nix` forms want owned or borrowed descriptors, which `fd` and `at` are not in this
/// process (`at` is usually not open yet), or do not exist.
fn child_setup(parent: libc::pid_t, fd: RawFd, at: RawFd) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
        // The worker may have died between fork and prctl; then nothing would ever kill us.
        if nix::unistd::getppid().as_raw() != parent {
            // SAFETY: _exit is async-signal-safe and ends this process only.
            unsafe { libc::_exit(1) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = parent;
    // SAFETY: plain system calls on descriptors this process owns.
    unsafe {
        if fd == at {
            // dup2 onto itself would keep close-on-exec.
            if libc::fcntl(at, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
        } else if libc::dup2(fd, at) == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    // Descriptors the worker itself inherited without close-on-exec (a supervisor's or a CI
    // harness's pipes) are not the job's: mark everything above `at` close-on-exec. (Not closed
    // here: std reports a failed exec through one of them.)
    // SAFETY: a plain system call.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            at as libc::c_uint + 1,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    // std keeps the forking thread's signal mask; a job starts with nothing blocked.
    SigSet::empty().thread_set_mask()?;
    Ok(())
}

/// Sends a request to the spawner thread, starting it if needed (and allowed); false if it could
/// not be delivered.
fn send(request: Request, start: bool) -> bool {
    static SPAWNER: Mutex<Option<mpsc::Sender<Request>>> = Mutex::new(None);
    let mut spawner = SPAWNER.lock().unwrap_or_else(|e| e.into_inner());
    let mut request = request;
    if let Some(sender) = spawner.as_ref() {
        match sender.send(request) {
            Ok(()) => return true,
            Err(mpsc::SendError(back)) => {
                request = back;
                *spawner = None;
            }
        }
    }
    if !start {
        return false;
    }
    let (sender, requests) = mpsc::channel();
    let started = std::thread::Builder::new()
        .name("handover-exec".into())
        .spawn(move || spawner_loop(requests));
    if let Err(err) = started {
        tracing::error!(%err, "cannot start the exec spawner thread");
        return false;
    }
    let sent = sender.send(request).is_ok();
    *spawner = Some(sender);
    sent
}

/// The thread that forks every child, so that PDEATHSIG means "the worker died" (it fires when the
/// forking thread exits; this one lives as long as the process).
fn spawner_loop(requests: mpsc::Receiver<Request>) {
    ensure_stdio_open();
    let mut watchdog = Watchdog::default();
    for request in requests {
        // A panic must not end this thread: its exit would SIGKILL every child it forked.
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match request {
            Request::Spawn(spawn) => start_child(*spawn, &mut watchdog),
            Request::Forget(pgid) => watchdog.forget(pgid),
        }));
        if handled.is_err() {
            tracing::error!("the exec spawner recovered from a panic");
        }
    }
}

fn start_child(spawn: Spawn, watchdog: &mut Watchdog) {
    let Spawn {
        mut command,
        keep_open,
        runtime,
        reply,
    } = spawn;
    let _runtime = runtime.enter();
    let spawned = spawn_registered(|| command.spawn());
    // The child has its own copy now; ours must go (for a pipe: or it never reads EOF).
    drop(keep_open);
    match spawned {
        Ok((child, registration)) => {
            let pid = child.id().map(|p| p as i32);
            if let Some(pid) = pid {
                watchdog.watch(pid);
            }
            if let Err(Ok(spawned)) = reply.send(Ok((child, registration))) {
                // The job went away while its child started.
                if let Some(pid) = pid {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                    watchdog.forget(pid);
                }
                drop(spawned);
            }
        }
        Err(err) => {
            let _ = reply.send(Err(err));
        }
    }
}

/// Descriptors 0-2 must be open: otherwise a pipe created for a child could take one of those
/// numbers and be clobbered by the child's own stdio set-up. `open` takes the lowest free number,
/// so /dev/null is opened (and kept) until it lands above 2.
fn ensure_stdio_open() {
    while let Ok(null) = open(c"/dev/null", OFlag::O_RDWR, Mode::empty()) {
        if null.as_raw_fd() > 2 {
            break;
        }
        // Kept open for good, as that standard descriptor.
        let _ = null.into_raw_fd();
    }
}
