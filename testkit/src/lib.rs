//! What a test does when something it needs is missing: a tool (terraform, swtpm, QEMU, cpio),
//! firmware (OVMF), the node images or the shared testdata folder.
//!
//! - Under `CI=true` a missing prerequisite is a failure, never a pass: [`skip`] panics with a
//!   message naming what is missing and how to provide it.
//! - Otherwise [`skip`] prints one line `SKIPPED <test>: <what> (<how>)` on stderr and appends
//!   `<test>: <what> (<how>)` to the file named by `CONSTELLATION_SKIP_LOG` when that variable is
//!   set; `scripts/test.sh` lists those lines at the end of a run, so a skip is never silent (the
//!   test harness captures the output of passing tests).
//!
//! The caller returns right after [`skip`]:
//!
//! ```no_run
//! fn needs_swtpm() {
//!     if std::process::Command::new("swtpm").arg("--version").output().is_err() {
//!         constellation_testkit::skip_current("swtpm is not on PATH", "run scripts/install-deps.sh");
//!         return;
//!     }
//!     // ... the test proper
//! }
//! ```

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;

/// Environment variable naming the file that receives one line per skipped test.
pub const SKIP_LOG_ENV: &str = "CONSTELLATION_SKIP_LOG";

/// Entries already reported by this process: a test that checks several files of one missing
/// folder reports the folder once.
static REPORTED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// True when the `CI` environment variable says this is a CI run (`true` or `1`).
pub fn in_ci() -> bool {
    is_ci(std::env::var_os("CI").as_deref())
}

fn is_ci(value: Option<&OsStr>) -> bool {
    value
        .and_then(OsStr::to_str)
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Reports that `test` cannot run because `what` is missing; `how` says how to provide it.
///
/// Panics under `CI=true` (see the crate documentation); otherwise prints and logs the skip and
/// returns, and the caller returns too. Also panics when the skip cannot be written to the
/// `CONSTELLATION_SKIP_LOG` file, since an unrecorded skip would pass unnoticed.
pub fn skip(test: &str, what: &str, how: &str) {
    let log = std::env::var_os(SKIP_LOG_ENV).filter(|v| !v.is_empty());
    skip_with(in_ci(), log.as_deref().map(Path::new), test, what, how);
}

/// [`skip`] for the running test, named by [`current_test`].
pub fn skip_current(what: &str, how: &str) {
    skip(&current_test(), what, how);
}

/// The running test as `<test binary>::<test path>`, e.g.
/// `attest_verify_cli::snp_report_verifies` (the test harness names each test's thread after
/// the test). Code on the main thread (benchmarks, `harness = false`) gets the binary's name.
pub fn current_test() -> String {
    let binary = binary_name();
    let thread = std::thread::current();
    match (binary, thread.name().filter(|n| *n != "main")) {
        (Some(b), Some(t)) => format!("{b}::{t}"),
        (Some(b), None) => b,
        (None, Some(t)) => t.to_owned(),
        (None, None) => "unnamed test".to_owned(),
    }
}

/// The executable's name without the `-<16 hex digits>` suffix cargo gives test binaries.
fn binary_name() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let stem = exe.file_stem()?.to_str()?;
    let name = match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name
        }
        _ => stem,
    };
    Some(name.to_owned())
}

/// [`skip`] with the environment passed in (tests cannot change this process's environment
/// safely while other tests run).
fn skip_with(ci: bool, log: Option<&Path>, test: &str, what: &str, how: &str) {
    if ci {
        panic!(
            "{test}: missing prerequisite: {what} ({how}); under CI=true a missing prerequisite \
             fails the test instead of skipping it"
        );
    }
    let entry = format!("{test}: {what} ({how})");
    let first = REPORTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(entry.clone());
    if !first {
        return;
    }
    eprintln!("SKIPPED {entry}");
    if let Some(log) = log {
        // One write of a whole line in append mode: lines of concurrent tests do not interleave.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .and_then(|mut f| f.write_all(format!("{entry}\n").as_bytes()));
        if let Err(e) = written {
            panic!(
                "{test}: cannot record the skip in {SKIP_LOG_ENV}={}: {e}",
                log.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        let err = std::panic::catch_unwind(f).unwrap_err();
        err.downcast_ref::<String>()
            .cloned()
            .or_else(|| err.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap()
    }

    #[test]
    fn ci_values() {
        assert!(is_ci(Some(OsStr::new("true"))));
        assert!(is_ci(Some(OsStr::new("TRUE"))));
        assert!(is_ci(Some(OsStr::new("1"))));
        assert!(!is_ci(Some(OsStr::new("false"))));
        assert!(!is_ci(Some(OsStr::new(""))));
        assert!(!is_ci(None));
    }

    #[test]
    fn under_ci_a_missing_prerequisite_fails_naming_it_and_the_remedy() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("skipped");
        let msg = panic_message(|| {
            skip_with(
                true,
                Some(&log),
                "t::under_ci",
                "swtpm is not on PATH",
                "run scripts/install-deps.sh",
            );
        });
        assert!(msg.contains("t::under_ci"), "{msg}");
        assert!(msg.contains("swtpm is not on PATH"), "{msg}");
        assert!(msg.contains("run scripts/install-deps.sh"), "{msg}");
        assert!(msg.contains("CI=true"), "{msg}");
        assert!(!log.exists(), "a failure is not logged as a skip");
    }

    #[test]
    fn outside_ci_a_skip_is_logged_once_per_test_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("skipped");
        std::fs::write(&log, "earlier: x (y)\n").unwrap();
        let skip = |test, what| skip_with(false, Some(&log), test, what, "set Z");
        skip("t::outside_a", "A is missing");
        skip("t::outside_a", "A is missing");
        skip("t::outside_a", "B is missing");
        skip("t::outside_b", "A is missing");
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "earlier: x (y)\n\
             t::outside_a: A is missing (set Z)\n\
             t::outside_a: B is missing (set Z)\n\
             t::outside_b: A is missing (set Z)\n"
        );
    }

    #[test]
    fn an_unwritable_log_fails_the_test() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("no-such-dir/skipped");
        let msg = panic_message(|| skip_with(false, Some(&log), "t::unwritable", "A", "B"));
        assert!(msg.contains(SKIP_LOG_ENV), "{msg}");
    }

    #[test]
    fn current_test_names_binary_and_test() {
        assert_eq!(
            current_test(),
            "constellation_testkit::tests::current_test_names_binary_and_test"
        );
    }
}
