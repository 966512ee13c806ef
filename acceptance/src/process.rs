//! Running terraform in its own process group so that it and every provider it starts can be
//! signalled and reaped together.

use crate::{HarnessError, TfOutput};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A terraform process that is still running. Dropping it kills its whole process group.
#[derive(Debug)]
pub struct Running {
    args: Vec<String>,
    child: Child,
    pgid: i32,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    /// Stdout as far as it has been read, for [`Running::stdout_so_far`].
    live: Arc<Mutex<String>>,
    reaped: bool,
}

impl Running {
    /// Starts `command` as the leader of a new process group with piped output.
    pub(crate) fn spawn(mut command: Command, args: Vec<String>) -> Result<Self, HarnessError> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command
            .spawn()
            .map_err(|source| HarnessError::Spawn { program, source })?;
        let pgid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        // Pipes are drained on threads so a chatty process never blocks on a full pipe.
        let live = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().map(|r| drain(r, Some(live.clone())));
        let stderr = child.stderr.take().map(|r| drain(r, None));
        Ok(Self {
            args,
            child,
            pgid,
            stdout,
            stderr,
            live,
            reaped: false,
        })
    }

    /// The process group id (equal to terraform's pid).
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// What terraform has printed on stdout so far (e.g. to wait for an `apply_start` message).
    pub fn stdout_so_far(&self) -> String {
        self.live.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Polls [`Running::stdout_so_far`] until it contains `needle`; false after `timeout` or
    /// when terraform exited first.
    pub fn wait_for_stdout(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stdout_so_far().contains(needle) {
                return true;
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                // Exited; the drain thread may still be finishing the last chunk.
                std::thread::sleep(Duration::from_millis(100));
                return self.stdout_so_far().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Sends SIGINT to the whole process group, as a terminal's Ctrl-C does (terraform and the
    /// providers it started all receive it).
    pub fn interrupt(&self) -> Result<(), HarnessError> {
        killpg(Pid::from_raw(self.pgid), Signal::SIGINT).map_err(|source| HarnessError::Signal {
            pgid: self.pgid,
            source,
        })
    }

    /// Waits until terraform exits or `timeout` passes (then the group is killed and
    /// [`HarnessError::Timeout`] returned). Afterwards any process left in the group is killed.
    pub fn wait(mut self, timeout: Duration) -> Result<TfOutput, HarnessError> {
        let deadline = Instant::now() + timeout;
        let finished = loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break true,
                Ok(None) if Instant::now() >= deadline => break false,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(HarnessError::io("waiting for", "terraform")(e)),
            }
        };
        // Whatever terraform left behind (it should leave nothing) dies with the group, which
        // also closes the pipes so the drain threads finish.
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        let status = self
            .child
            .wait()
            .map_err(HarnessError::io("waiting for", "terraform"))?;
        self.reaped = true;
        let stdout = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let output = TfOutput {
            args: std::mem::take(&mut self.args),
            status,
            stdout,
            stderr,
        };
        if !finished {
            return Err(HarnessError::Timeout {
                args: output.args.join(" "),
                secs: timeout.as_secs(),
                output: output.combined(),
            });
        }
        Ok(output)
    }

    /// Waits for terraform's exit, returning what it printed, while leaving any other process
    /// of the group alive so a test can check for leftovers with [`process_group_members`].
    /// The group is still killed when the returned guard (`self`) would have been dropped.
    pub fn wait_leader(
        mut self,
        timeout: Duration,
    ) -> Result<(TfOutput, GroupGuard), HarnessError> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
                    let _ = self.child.wait();
                    self.reaped = true;
                    return Err(HarnessError::Timeout {
                        args: self.args.join(" "),
                        secs: timeout.as_secs(),
                        output: String::new(),
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(HarnessError::io("waiting for", "terraform")(e)),
            }
        };
        self.reaped = true;
        // A surviving provider would keep the pipes open; read with a bound so we do not hang.
        let stdout = join_bounded(self.stdout.take(), deadline);
        let stderr = join_bounded(self.stderr.take(), deadline);
        let output = TfOutput {
            args: std::mem::take(&mut self.args),
            status,
            stdout,
            stderr,
        };
        Ok((output, GroupGuard { pgid: self.pgid }))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Kills a process group when dropped (returned by [`Running::wait_leader`]).
#[derive(Debug)]
pub struct GroupGuard {
    pgid: i32,
}

impl GroupGuard {
    /// The process group id.
    pub fn pgid(&self) -> i32 {
        self.pgid
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
    }
}

fn drain(
    mut r: impl Read + Send + 'static,
    live: Option<Arc<Mutex<String>>>,
) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let got = chunk.get(..n).unwrap_or_default();
                    buf.extend_from_slice(got);
                    if let Some(live) = &live
                        && let Ok(mut s) = live.lock()
                    {
                        *s = String::from_utf8_lossy(&buf).into_owned();
                    }
                }
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn join_bounded(handle: Option<JoinHandle<String>>, deadline: Instant) -> String {
    let Some(handle) = handle else {
        return String::new();
    };
    while !handle.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if handle.is_finished() {
        handle.join().unwrap_or_default()
    } else {
        "<output pipe still held open by a leftover process>".into()
    }
}

/// Pids of live (not zombie) processes whose process group is `pgid`, read from `/proc`.
pub fn process_group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // The command name (field 2) may contain spaces; fields after its ')' are fixed.
            let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 1..)) else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|f| f.parse::<i32>().ok());
            state != Some("Z") && pgrp == Some(pgid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Running {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        Running::spawn(cmd, vec![script.to_owned()]).unwrap()
    }

    fn wait_until_gone(pgid: i32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if process_group_members(pgid).is_empty() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    #[test]
    fn wait_collects_output_and_status() {
        let out = sh("echo out; echo err >&2; exit 3")
            .wait(Duration::from_secs(60))
            .unwrap();
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.status.code(), Some(3));
    }

    #[test]
    fn drop_kills_the_whole_group() {
        let r = sh("sleep 300 & sleep 300 & wait");
        let pgid = r.pgid();
        // Give the shell a moment to fork its children; then they must be in the group.
        let deadline = Instant::now() + Duration::from_secs(30);
        while process_group_members(pgid).len() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(process_group_members(pgid).len() >= 3);
        drop(r);
        assert!(
            wait_until_gone(pgid),
            "processes left: {:?}",
            process_group_members(pgid)
        );
    }

    #[test]
    fn timeout_kills_and_reports() {
        let err = sh("echo started; sleep 300")
            .wait(Duration::from_millis(300))
            .unwrap_err();
        match err {
            HarnessError::Timeout { output, .. } => assert!(output.contains("started")),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn interrupt_reaches_the_group() {
        let r = sh("trap 'echo got-int; exit 7' INT; while true; do sleep 0.05; done");
        std::thread::sleep(Duration::from_millis(300));
        r.interrupt().unwrap();
        let out = r.wait(Duration::from_secs(60)).unwrap();
        assert_eq!(out.status.code(), Some(7), "{}", out.combined());
        assert!(out.stdout.contains("got-int"));
    }
}
