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
    /// Starts `command` as the leader of a new process group with piped output, with SIGINT and
    /// SIGTERM at their default disposition whatever this process inherited.
    pub(crate) fn spawn(command: Command, args: Vec<String>) -> Result<Self, HarnessError> {
        let program = command.get_program().to_string_lossy().into_owned();
        let mut command = if inherits_ignored(&[Signal::SIGINT, Signal::SIGTERM]) {
            with_default_signals(&command)
        } else {
            command
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
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

/// True when any of `signals` is ignored in this process (read from `/proc/self/status`; false
/// where that cannot be read). An ignored signal stays ignored across `exec`, and a shell cannot
/// trap a signal that was ignored when it started: a test run launched from a background job of a
/// non-interactive shell would hand terraform a SIGINT it can never receive.
fn inherits_ignored(signals: &[Signal]) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let Some(mask) = ignored_mask(&status) else {
        return false;
    };
    signals.iter().any(|s| {
        let bit = *s as i32 - 1;
        (0..64).contains(&bit) && mask & (1u64 << bit) != 0
    })
}

/// The `SigIgn` bit mask of a `/proc/<pid>/status` text (bit n-1 for signal n).
fn ignored_mask(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// `command` run through `env --default-signal=INT,TERM` (GNU coreutils), which resets both
/// signals to their default disposition and then executes the program in place (same pid, so
/// the process group is unchanged). Resetting them in the child directly would need `unsafe`
/// (`pre_exec`, `sigaction`), which the workspace forbids.
fn with_default_signals(command: &Command) -> Command {
    let mut wrapped = Command::new("env");
    wrapped
        .arg("--default-signal=INT,TERM")
        .arg("--")
        .arg(command.get_program())
        .args(command.get_args());
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
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
    fn ignored_mask_is_read_from_proc_status() {
        let status = "Name:\tcargo\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000004002\n";
        let mask = ignored_mask(status).unwrap();
        assert_eq!(
            mask,
            (1 << (Signal::SIGINT as i32 - 1)) | (1 << (Signal::SIGTERM as i32 - 1))
        );
        assert_eq!(ignored_mask("Name:\tx\n"), None);
    }

    #[test]
    fn wrapped_command_keeps_arguments_directory_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo \"$(pwd -P) $A ${HOME-unset}\"; exit 3"])
            .current_dir(dir.path())
            .env("A", "a b")
            .env_remove("HOME");
        let out = Running::spawn(with_default_signals(&cmd), Vec::new())
            .unwrap()
            .wait(Duration::from_secs(60))
            .unwrap();
        let pwd = dir.path().canonicalize().unwrap();
        assert_eq!(out.stdout, format!("{} a b unset\n", pwd.display()));
        assert_eq!(out.status.code(), Some(3));
    }

    /// The interrupt test again, in a child test process that starts with SIGINT and SIGTERM
    /// ignored (as under `trap "" INT` in a non-interactive shell).
    #[test]
    fn interrupt_reaches_the_group_when_the_test_process_ignores_sigint() {
        let out = Command::new("env")
            .arg("--ignore-signal=INT,TERM")
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", "process::tests::interrupt_reaches_the_group"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("1 passed"), "{stdout}");
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
