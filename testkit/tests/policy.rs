//! The skip policy end to end: this test binary runs its own `missing_prerequisite` test as a
//! child process, once with `CI=true` and once without, with the environment a real run has.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

const WHAT: &str = "the probe prerequisite is missing";
const HOW: &str = "nothing provides it";

/// The child half of the tests below: a test whose prerequisite is always missing.
#[test]
#[ignore = "run as a child process by the other tests of this file"]
fn missing_prerequisite() {
    constellation_testkit::skip_current(WHAT, HOW);
}

fn run_child(ci: bool, log: &std::path::Path) -> Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--ignored",
        "--exact",
        "missing_prerequisite",
        "--nocapture",
    ])
    .env(constellation_testkit::SKIP_LOG_ENV, log);
    if ci {
        cmd.env("CI", "true");
    } else {
        cmd.env_remove("CI");
    }
    cmd.output().unwrap()
}

#[test]
fn under_ci_the_test_fails_naming_what_is_missing_and_how_to_provide_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("skipped");
    let out = run_child(true, &log);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains(WHAT) && text.contains(HOW), "{text}");
    assert!(text.contains("policy::missing_prerequisite"), "{text}");
    assert!(!text.contains("SKIPPED"), "{text}");
    assert!(!log.exists());
}

#[test]
fn outside_ci_the_test_passes_with_one_skipped_line_and_a_log_entry() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("skipped");
    let out = run_child(false, &log);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let entry = format!("policy::missing_prerequisite: {WHAT} ({HOW})");
    let skipped: Vec<&str> = stderr.lines().filter(|l| l.contains("SKIPPED")).collect();
    assert_eq!(skipped, [format!("SKIPPED {entry}")], "{stderr}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), format!("{entry}\n"));
}
