//! Hardware reports through the Linux configfs-tsm interface (`/sys/kernel/config/tsm/report`).
//!
//! Why configfs-tsm and not `/dev/sev-guest` / `/dev/tdx_guest`: those devices are driven by
//! ioctls, which need `unsafe` FFI, and the workspace forbids `unsafe`. configfs-tsm (Linux 6.7+)
//! exposes the same SNP extended report (report + certificate table) and TDX quote as plain
//! files: create an entry directory, write 64 bytes of REPORT_DATA to `inblob`, read `outblob`
//! (the SNP report or the TDX quote) and `auxblob` (SNP certificate table), then remove the
//! entry. The kernel bumps `generation` on every write, so reading it before and after tells
//! whether another writer raced us on the same entry.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::validator::IssueError;

/// Default configfs-tsm report root.
pub const DEFAULT_ROOT: &str = "/sys/kernel/config/tsm/report";

/// Largest `outblob`/`auxblob` read (an SNP certificate table is a few KiB, a quote ~5-8 KiB).
pub const MAX_BLOB: u64 = 1 << 20;

/// The configfs-tsm report interface below `root`.
#[derive(Debug, Clone)]
pub struct ConfigFsTsm {
    root: PathBuf,
    /// Use this existing entry instead of creating (and removing) one per report.
    existing: Option<PathBuf>,
}

impl Default for ConfigFsTsm {
    fn default() -> Self {
        Self::new(DEFAULT_ROOT)
    }
}

/// One report read from configfs-tsm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsmReport {
    /// `provider`: `sev_guest` or `tdx_guest`.
    pub provider: String,
    /// `outblob`: the SNP report (1184 bytes) or the TDX quote.
    pub outblob: Vec<u8>,
    /// `auxblob`: the SNP certificate table (GUID table of VCEK/VLEK, ASK, ARK), if any.
    pub auxblob: Option<Vec<u8>>,
}

fn io_err(what: &Path, source: io::Error) -> IssueError {
    IssueError::Io {
        what: format!("configfs-tsm {}", what.display()),
        source,
    }
}

fn read_limited(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    fs::File::open(path)?
        .take(MAX_BLOB + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > MAX_BLOB {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_BLOB} bytes"),
        ));
    }
    Ok(out)
}

fn read_generation(entry: &Path) -> Result<u64, IssueError> {
    let p = entry.join("generation");
    let s = fs::read_to_string(&p).map_err(|e| io_err(&p, e))?;
    s.trim().parse().map_err(|_| {
        io_err(
            &p,
            io::Error::new(io::ErrorKind::InvalidData, format!("not a number: {s:?}")),
        )
    })
}

/// Removes the entry directory when dropped (also on error paths).
struct Entry(PathBuf);

impl Drop for Entry {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir(&self.0) {
            tracing::warn!(entry = %self.0.display(), error = %e, "cannot remove configfs-tsm entry");
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl ConfigFsTsm {
    /// The interface below `root` (tests point it at a temporary directory).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            existing: None,
        }
    }

    /// Uses one existing entry directory for every report, without creating or removing it
    /// (an entry set up by a supervisor, or a recorded device response in tests). Reports are
    /// then only correct if nobody else writes to that entry; `generation` detects violations.
    pub fn existing_entry(entry: impl Into<PathBuf>) -> Self {
        let entry = entry.into();
        Self {
            root: entry.parent().map(Path::to_path_buf).unwrap_or_default(),
            existing: Some(entry),
        }
    }

    /// Creates a fresh entry, gets a report for `report_data` and removes the entry again.
    /// `privlevel` (SNP VMPL of the report) is written when given.
    pub fn report(
        &self,
        report_data: &[u8; 64],
        privlevel: Option<u32>,
    ) -> Result<TsmReport, IssueError> {
        if let Some(entry) = &self.existing {
            return Self::report_in(entry, report_data, privlevel);
        }
        let name = format!(
            "constellation-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = self.root.join(name);
        fs::create_dir(&dir).map_err(|e| io_err(&dir, e))?;
        let entry = Entry(dir);
        Self::report_in(&entry.0, report_data, privlevel)
    }

    /// Gets a report from an existing entry directory: writes `privlevel` and `inblob`, reads
    /// `outblob`, `auxblob` and `provider`, and fails if `generation` shows that another writer
    /// changed the entry in between (the report would then not be for our REPORT_DATA).
    pub fn report_in(
        entry: &Path,
        report_data: &[u8; 64],
        privlevel: Option<u32>,
    ) -> Result<TsmReport, IssueError> {
        let write = |name: &str, data: &[u8]| {
            let p = entry.join(name);
            fs::write(&p, data).map_err(|e| io_err(&p, e))
        };
        if let Some(level) = privlevel {
            write("privlevel", level.to_string().as_bytes())?;
        }
        write("inblob", report_data)?;
        let before = read_generation(entry)?;
        let out = entry.join("outblob");
        let outblob = read_limited(&out).map_err(|e| io_err(&out, e))?;
        let aux = entry.join("auxblob");
        let auxblob = match read_limited(&aux) {
            Ok(b) if b.is_empty() => None,
            Ok(b) => Some(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&aux, e)),
        };
        let prov = entry.join("provider");
        let provider = fs::read_to_string(&prov)
            .map_err(|e| io_err(&prov, e))?
            .trim()
            .to_string();
        let after = read_generation(entry)?;
        if before != after {
            return Err(io_err(
                entry,
                io::Error::new(
                    io::ErrorKind::Interrupted,
                    format!(
                        "another writer changed the entry (generation {before} -> {after}); the report may not carry our REPORT_DATA, retry"
                    ),
                ),
            ));
        }
        if outblob.is_empty() {
            return Err(io_err(
                &out,
                io::Error::new(io::ErrorKind::UnexpectedEof, "empty report"),
            ));
        }
        Ok(TsmReport {
            provider,
            outblob,
            auxblob,
        })
    }
}
