//! `handover-watch`: one small process per worker that SIGKILLs the process groups of its
//! children when the worker dies, even by SIGKILL (PDEATHSIG reaches only the direct child).
//!
//! It is a fork of the worker that closes every descriptor but the read end of a pipe, its
//! lifeline, on which the spawner thread writes the groups it starts and ends. When the worker
//! dies the kernel closes the write end; the watchdog reads EOF, kills every group still listed,
//! and exits. Only the spawner thread talks to it.

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::libc;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Process groups the watchdog process tracks at most (far above any sane concurrency).
const WATCHDOG_CAPACITY: usize = 8192;
/// After the watchdog process could not be started, how long before trying again.
const WATCHDOG_RETRY: Duration = Duration::from_secs(10);

/// The worker's side of the `handover-watch` process.
#[derive(Default)]
pub(super) struct Watchdog {
    process: Option<(Pid, OwnedFd)>,
    groups: HashSet<i32>,
    retry_at: Option<Instant>,
}

impl Watchdog {
    pub(super) fn watch(&mut self, pgid: i32) {
        self.groups.insert(pgid);
        self.record(pgid);
    }

    pub(super) fn forget(&mut self, pgid: i32) {
        if self.groups.remove(&pgid) {
            self.record(-pgid);
        }
    }

    fn record(&mut self, record: i32) {
        let written = self
            .process
            .as_ref()
            .is_some_and(|(_, lifeline)| write_record(lifeline, record));
        if !written {
            self.restart();
        }
    }

    /// Replaces a missing, dead or stuck watchdog with a new one that knows every live group.
    fn restart(&mut self) {
        if let Some((pid, lifeline)) = self.process.take() {
            // Kill it first: closing its lifeline alone would make it kill every live group. Only
            // while it is surely still our unreaped child (a PID-1 orphan sweep may have reaped
            // it, and its pid been reused).
            if waitpid(pid, Some(WaitPidFlag::WNOHANG)) == Ok(WaitStatus::StillAlive) {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
            }
            drop(lifeline);
            tracing::warn!("the handover-watch process was gone or stuck; starting a new one");
        }
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        match start_watchdog() {
            Ok((pid, lifeline)) => {
                self.retry_at = None;
                if !self.groups.iter().all(|g| write_record(&lifeline, *g)) {
                    tracing::error!("cannot hand the live process groups to handover-watch");
                }
                self.process = Some((pid, lifeline));
            }
            Err(err) => {
                self.retry_at = Some(Instant::now() + WATCHDOG_RETRY);
                tracing::error!(%err, "cannot start handover-watch: if this worker is killed, processes its jobs started may survive it");
            }
        }
    }
}

/// Writes one record without blocking; false if the watchdog is gone or not reading.
fn write_record(lifeline: &OwnedFd, record: i32) -> bool {
    let bytes = record.to_ne_bytes();
    nix::unistd::write(lifeline, &bytes) == Ok(bytes.len())
}

/// Forks the watchdog process; returns its pid and the write end of its lifeline.
fn start_watchdog() -> io::Result<(Pid, OwnedFd)> {
    // Close-on-exec from the start: a job child that inherited the write end would keep the
    // lifeline open after the worker died.
    let (read_end, write_end) = cloexec_pipe()?;
    // A watchdog that stops reading must never block a spawn.
    fcntl(&write_end, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    let (read_fd, write_fd) = (read_end.as_raw_fd(), write_end.as_raw_fd());
    // SAFETY: the child only runs `watchdog_main`, which makes async-signal-safe calls and never
    // returns.
    match unsafe { fork() }? {
        ForkResult::Child => unsafe { watchdog_main(read_fd, write_fd) },
        ForkResult::Parent { child } => {
            drop(read_end);
            Ok((child, write_end))
        }
    }
}

#[cfg(target_os = "linux")]
fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

#[cfg(not(target_os = "linux"))]
fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::FdFlag;
    let (read_end, write_end) = nix::unistd::pipe()?;
    for end in [&read_end, &write_end] {
        fcntl(end, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    }
    Ok((read_end, write_end))
}

/// The watchdog process: a fork of the worker that keeps only its lifeline. Records are native
/// i32s: `+pgid` watch, `-pgid` forget. EOF means the worker is gone: SIGKILL what is left.
///
/// Raw `libc` throughout: this runs in the child of a multi-threaded fork, where only
/// async-signal-safe system calls on the stack's data are allowed, and the descriptors it works
/// on are not owned by anything here.
///
/// # Safety
/// Only in a freshly forked child. Everything here is async-signal-safe: system calls on the
/// stack's data, no allocation, no locks.
unsafe fn watchdog_main(read_fd: RawFd, write_fd: RawFd) -> ! {
    let mut all: libc::sigset_t = std::mem::zeroed();
    libc::sigfillset(&mut all);
    libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
    // Out of the worker's group, so a terminal's Ctrl-C or Ctrl-Z is not for it.
    libc::setpgid(0, 0);
    #[cfg(target_os = "linux")]
    libc::prctl(
        libc::PR_SET_NAME,
        c"handover-watch".as_ptr() as libc::c_ulong,
        0,
        0,
        0,
    );
    libc::close(write_fd);
    if read_fd != 0 {
        libc::dup2(read_fd, 0);
    }
    close_from(1);
    libc::chdir(c"/".as_ptr());

    let mut groups = [0 as libc::pid_t; WATCHDOG_CAPACITY];
    let mut count = 0usize;
    let mut buf = [0u8; 4096];
    let mut filled = 0usize;
    loop {
        let n = libc::read(0, buf.as_mut_ptr().add(filled).cast(), buf.len() - filled);
        if n == 0 {
            break;
        }
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        filled += n as usize;
        let whole = filled - filled % 4;
        let mut at = 0;
        while at < whole {
            let record = i32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
            at += 4;
            if record > 0 {
                if count < groups.len() {
                    groups[count] = record;
                    count += 1;
                }
            } else if record < 0 {
                let mut i = 0;
                while i < count {
                    if groups[i] == -record {
                        count -= 1;
                        groups[i] = groups[count];
                        break;
                    }
                    i += 1;
                }
            }
        }
        buf.copy_within(whole..filled, 0);
        filled -= whole;
    }
    let mut i = 0;
    while i < count {
        libc::kill(-groups[i], libc::SIGKILL);
        i += 1;
    }
    libc::_exit(0)
}

/// Closes every descriptor from `first` up (async-signal-safe, for the forked child).
unsafe fn close_from(first: libc::c_int) {
    #[cfg(target_os = "linux")]
    if libc::syscall(
        libc::SYS_close_range,
        first as libc::c_uint,
        libc::c_uint::MAX,
        0,
    ) == 0
    {
        return;
    }
    let mut limit: libc::rlimit = std::mem::zeroed();
    let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
        limit.rlim_cur.min(1 << 20) as libc::c_int
    } else {
        1024
    };
    let mut fd = first;
    while fd < max {
        libc::close(fd);
        fd += 1;
    }
}
