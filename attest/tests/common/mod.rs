//! Shared by the integration tests: the real-evidence testdata folder, synthetic SEV-SNP, TDX and
//! vTPM evidence, and a local HTTP server standing in for cloud APIs.
#![allow(dead_code, clippy::unwrap_used)]

pub mod http;
pub mod synth;
pub mod synth_tdx;
pub mod synth_tpm;

use std::path::PathBuf;

/// The shared real-evidence folder: `../shared/testdata` next to the repository clone, or
/// `CONSTELLATION_SHARED_TESTDATA` when set.
pub fn testdata_dir() -> PathBuf {
    std::env::var_os("CONSTELLATION_SHARED_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/testdata"
            ))
        })
}

/// Skips the running test (a failure under CI=true) because a file of the shared testdata folder
/// cannot be read (one report per test, whichever file it was).
pub fn testdata_missing() {
    constellation_testkit::skip_current(
        &format!(
            "the shared testdata folder ../shared/testdata is absent or incomplete (looked in {})",
            testdata_dir().display()
        ),
        "put the shared testdata folder at ../shared/testdata next to the repository clone, \
         or set CONSTELLATION_SHARED_TESTDATA to it",
    );
}

/// True when the shared testdata folder is present; otherwise skips the running test (a failure
/// under CI=true) and returns false.
pub fn have_testdata() -> bool {
    let manifest = testdata_dir().join("MANIFEST.md");
    let present = manifest.is_file();
    if !present {
        testdata_missing();
    }
    present
}

/// Reads a testdata file, or skips the running test (a failure under CI=true) and returns None
/// when it cannot be read.
pub fn td(rel: &str) -> Option<Vec<u8>> {
    let p = testdata_dir().join(rel);
    match std::fs::read(&p) {
        Ok(b) => Some(b),
        Err(_) => {
            testdata_missing();
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
