//! Pausing a process with SIGSTOP: a registry, control plane or Envoy that is alive (its
//! sockets open, connections accepted by the kernel) but answers nothing, as under a long GC
//! pause, a frozen VM or a debugger. [`pause`] returns a guard that sends SIGCONT when it
//! is dropped, so a failing test never leaves a stopped process behind. [`terminate`] stops a
//! child for good: SIGTERM, SIGKILL after a grace period, reaped either way.

use std::io;
use std::process::Child;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// A process stopped by [`pause`]; resumed by [`Paused::resume`] or on drop.
#[derive(Debug)]
#[must_use = "dropping the guard resumes the process at once"]
pub struct Paused {
    pid: Pid,
    resumed: bool,
}

/// Stops process `pid` (SIGSTOP) until the guard is resumed or dropped.
pub fn pause(pid: u32) -> io::Result<Paused> {
    let pid = to_pid(pid)?;
    kill_process(pid, Signal::STOP)?;
    Ok(Paused {
        pid,
        resumed: false,
    })
}

impl Paused {
    /// Continues the process (SIGCONT).
    pub fn resume(mut self) -> io::Result<()> {
        self.resumed = true;
        Ok(kill_process(self.pid, Signal::CONT)?)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if !self.resumed {
            // The process may have been killed meanwhile; nothing is left to resume then.
            let _ = kill_process(self.pid, Signal::CONT);
        }
    }
}

/// Whether process `pid` is stopped (state `T` in `/proc/PID/stat`), e.g. by [`pause`].
pub fn is_stopped(pid: u32) -> io::Result<bool> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The state follows the command name, which is in parentheses and may contain spaces.
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
        .ok_or_else(|| io::Error::other(format!("unexpected /proc/{pid}/stat: {stat}")))?;
    Ok(state == 'T')
}

/// Stops `child` (a sidecar, a control plane): SIGTERM so it can clean up (deregister, stop
/// its Envoy), SIGKILL once `grace` has passed without it exiting; reaped either way. Nothing
/// to do when it has already exited.
pub fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = to_pid(child.id()) {
        let _ = kill_process(pid, Signal::TERM);
    }
    let deadline = Instant::now() + grace;
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn to_pid(pid: u32) -> io::Result<Pid> {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("not a pid: {pid}")))
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command};
    use std::time::Duration;

    use super::*;
    use crate::poll::eventually_blocking;

    const WAIT: Duration = Duration::from_secs(5);

    /// A child that is killed and reaped whatever happens.
    struct Sleeper(Child);

    impl Sleeper {
        fn start() -> Sleeper {
            Sleeper(
                Command::new("sleep")
                    .arg("60")
                    .spawn()
                    .expect("spawn sleep"),
            )
        }

        fn pid(&self) -> u32 {
            self.0.id()
        }

        fn wait_stopped(&self, stopped: bool) {
            eventually_blocking(&format!("stopped == {stopped}"), WAIT, || match is_stopped(
                self.pid(),
            ) {
                Ok(s) if s == stopped => Ok(()),
                other => Err(format!("{other:?}")),
            });
        }
    }

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn pause_stops_and_resume_continues_a_real_child() {
        let child = Sleeper::start();
        child.wait_stopped(false);
        let paused = pause(child.pid()).expect("SIGSTOP");
        child.wait_stopped(true);
        paused.resume().expect("SIGCONT");
        child.wait_stopped(false);
    }

    #[test]
    fn the_guard_resumes_on_drop_even_when_a_test_panics() {
        let child = Sleeper::start();
        let pid = child.pid();
        let unwound = std::panic::catch_unwind(|| {
            let _paused = pause(pid).expect("SIGSTOP");
            panic!("a failing assertion while paused");
        });
        assert!(unwound.is_err());
        child.wait_stopped(false);
    }

    #[test]
    fn pausing_a_process_that_does_not_exist_fails() {
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("reap");
        assert!(pause(pid).is_err());
        assert!(
            pause(0).is_err(),
            "pid 0 would signal the whole process group"
        );
    }
}
