//! Shared helpers for helper D's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

pub mod http;
pub mod synth;
pub mod synth_tdx;
pub mod synth_tpm;

use std::path::PathBuf;

/// The shared real-evidence folder (next to the repository clone).
pub fn testdata_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata"
    ))
}

/// Reads a testdata file, or prints a skip notice and returns None when the folder is absent.
pub fn td(rel: &str) -> Option<Vec<u8>> {
    let p = testdata_dir().join(rel);
    match std::fs::read(&p) {
        Ok(b) => Some(b),
        Err(_) => {
            eprintln!(
                "SKIPPED: {} not present (shared testdata folder absent)",
                p.display()
            );
            None
        }
    }
}

/// Parses an RFC 3339 time.
pub fn t(s: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
}

/// "Current date" of the manifest.
pub fn now() -> time::OffsetDateTime {
    t("2026-11-25T12:00:00Z")
}
