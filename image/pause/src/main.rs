//! The pod sandbox's placeholder process, doing what Kubernetes' `pause` does: it holds the pod's
//! namespaces open, reaps any child re-parented to it (it is PID 1 of a pod with a shared PID
//! namespace), and exits 0 on SIGINT or SIGTERM. Built static (`-C target-feature=+crt-static`)
//! so the image needs no libc.

use std::process::ExitCode;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("-v") {
        println!("pause.rs {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if std::process::id() != 1 {
        eprintln!("Warning: pause should be the first process");
    }
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGCHLD] {
        set.add(s);
    }
    // Blocked signals are taken one at a time with sigwait: no handler runs concurrently.
    if let Err(e) = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        eprintln!("pause: blocking signals failed: {e}");
        return ExitCode::FAILURE;
    }
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => reap(),
            Ok(sig) => {
                eprintln!("Shutting down, got signal: {sig}");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("pause: sigwait failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
}

/// Collects every child that has exited; one SIGCHLD may stand for several.
fn reap() {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                eprintln!("pause: waitpid failed: {e}");
                return;
            }
        }
    }
}
