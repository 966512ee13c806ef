//! The create marker: who is creating a cluster in a working directory right now.
//!
//! A create writes `creating.json` into the cluster's working directory before anything of
//! the cluster exists and removes it when it hands its result (the state, or a partial state
//! with the error) to Terraform. A marker whose writer is gone therefore means the create
//! never reported what it made: the provider was killed (SIGKILL, OOM, host crash) and
//! Terraform recorded nothing, so no `destroy` will ever see it. The next create of the same
//! cluster adopts such a directory and removes everything in it before it starts afresh —
//! never a directory it cannot attribute (no marker, or a live or foreign writer).
//!
//! [`decide`] is the whole policy, without effects; [`inspect`] gathers its inputs.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Name of the marker file in the working directory.
pub const MARKER_FILE: &str = "creating.json";

/// Identity of the process running a create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateMarker {
    /// Cluster name.
    pub name: String,
    /// Host name of the machine the provider ran on.
    pub host: String,
    /// Kernel boot ID at the time (a reboot kills every process of the create).
    pub boot_id: String,
    /// Provider pid.
    pub pid: i32,
    /// The process's start time in clock ticks since boot (pids get reused).
    pub start_ticks: u64,
}

impl CreateMarker {
    /// The marker for this process creating cluster `name`.
    pub fn for_this_process(name: &str) -> Self {
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        Self {
            name: name.to_owned(),
            host: host_name(),
            boot_id: boot_id(),
            pid,
            start_ticks: start_ticks(pid).unwrap_or(0),
        }
    }

    /// Whether the process that wrote the marker still runs: same host, same boot, and the
    /// pid belongs to a process started at the recorded time. `None` when that cannot be
    /// told (another host shares the directory).
    pub fn writer_alive(&self) -> Option<bool> {
        if self.host != host_name() {
            return None;
        }
        if self.boot_id != boot_id() {
            return Some(false);
        }
        Some(start_ticks(self.pid) == Some(self.start_ticks))
    }

    /// Reads the marker in `dir` (None when absent or unreadable).
    pub fn load(dir: &Path) -> Option<Self> {
        let bytes = fs::read(dir.join(MARKER_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes the marker into `dir` (created if missing), durably: it must exist before any
    /// machine does.
    pub fn write(&self, dir: &Path) -> Result<(), String> {
        let path = dir.join(MARKER_FILE);
        let write = || -> std::io::Result<()> {
            fs::create_dir_all(dir)?;
            let tmp = path.with_extension("json.tmp");
            let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
            let f = fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut &f, &bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| format!("writing {}: {e}", path.display()))
    }

    /// Removes the marker from `dir` (the create reported its result).
    pub fn remove(dir: &Path) {
        let _ = fs::remove_file(dir.join(MARKER_FILE));
    }
}

fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Field 22 of `/proc/<pid>/stat` (start time), None for a missing or zombie process.
fn start_ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let mut fields = rest.split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    // `rest` starts at field 3 (state); start time is field 22.
    fields.nth(18)?.parse().ok()
}

/// What a working directory holds when a create of cluster `name` is about to start there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The directory exists and is not empty.
    pub occupied: bool,
    /// It holds a cluster record.
    pub record: bool,
    /// The record's nodes all have nothing left (no process, no disks); vacuously true for a
    /// record without nodes.
    pub record_all_gone: bool,
    /// The create marker, if any.
    pub marker: Option<CreateMarker>,
    /// For a marker: whether its writer runs (None: cannot be told).
    pub writer_alive: Option<bool>,
}

/// What a create does with what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing there: create.
    Create,
    /// Remains of this cluster that no state records: remove them all, then create.
    RemoveLeftovers {
        /// Why they are known to be unrecorded remains of this cluster.
        reason: String,
    },
    /// Something that is not attributably ours, or still in use: stop with this reason.
    Refuse(String),
}

/// The policy: remove only what is provably an unrecorded remain of this cluster.
pub fn decide(name: &str, found: &Found) -> Decision {
    if let Some(m) = &found.marker {
        if m.name != name {
            return Decision::Refuse(format!(
                "it is being (or was) created as cluster {:?} by another configuration",
                m.name
            ));
        }
        return match found.writer_alive {
            Some(false) => Decision::RemoveLeftovers {
                reason: format!(
                    "a create of this cluster (provider pid {} on {}) ended without reporting \
                     it to Terraform (killed or crashed)",
                    m.pid, m.host
                ),
            },
            Some(true) => Decision::Refuse(format!(
                "another provider process (pid {}) is creating this cluster right now",
                m.pid
            )),
            None => Decision::Refuse(format!(
                "it is being (or was) created from another host ({}); destroy it there",
                m.host
            )),
        };
    }
    if found.record {
        if found.record_all_gone {
            return Decision::RemoveLeftovers {
                reason: "its cluster record names no machine that still exists".into(),
            };
        }
        return Decision::Refuse(
            "it holds another cluster. Import it (`terraform import` with that directory as \
             ID) and destroy it, or choose another name or working_dir"
                .into(),
        );
    }
    if found.occupied {
        return Decision::Refuse(
            "it holds files but no cluster record or create marker, so it was not made by this \
             provider; remove it or choose another working_dir"
                .into(),
        );
    }
    Decision::Create
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(marker: Option<CreateMarker>, alive: Option<bool>, record: bool) -> Found {
        Found {
            occupied: marker.is_some() || record,
            record,
            record_all_gone: false,
            marker,
            writer_alive: alive,
        }
    }

    #[test]
    fn only_provable_unrecorded_remains_are_removed() {
        let m = CreateMarker::for_this_process("demo");
        assert_eq!(decide("demo", &found(None, None, false)), Decision::Create);
        assert!(matches!(
            decide("demo", &found(Some(m.clone()), Some(false), true)),
            Decision::RemoveLeftovers { .. }
        ));
        // Killed before the record was written: the marker alone is enough.
        assert!(matches!(
            decide("demo", &found(Some(m.clone()), Some(false), false)),
            Decision::RemoveLeftovers { .. }
        ));
        // A live writer, a foreign host or another cluster's marker: never touched.
        for (alive, name) in [(Some(true), "demo"), (None, "demo"), (Some(false), "other")] {
            assert!(matches!(
                decide(name, &found(Some(m.clone()), alive, true)),
                Decision::Refuse(_)
            ));
        }
        // A finished create (record, no marker) is some state's cluster: refuse.
        assert!(matches!(
            decide("demo", &found(None, None, true)),
            Decision::Refuse(_)
        ));
        // ... unless nothing of its machines is left (the state dropped it on refresh).
        let mut shell = found(None, None, true);
        shell.record_all_gone = true;
        assert!(matches!(
            decide("demo", &shell),
            Decision::RemoveLeftovers { .. }
        ));
        // Files that are not ours.
        let mut foreign = found(None, None, false);
        foreign.occupied = true;
        assert!(matches!(decide("demo", &foreign), Decision::Refuse(_)));
    }

    #[test]
    fn this_process_is_alive_and_a_dead_or_reused_pid_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = CreateMarker::for_this_process("demo");
        assert!(m.start_ticks > 0);
        m.write(dir.path()).unwrap();
        let loaded = CreateMarker::load(dir.path()).unwrap();
        assert_eq!(loaded, m);
        assert_eq!(loaded.writer_alive(), Some(true));
        // Same pid, other start time: the pid was reused.
        m.start_ticks += 1;
        assert_eq!(m.writer_alive(), Some(false));
        m.start_ticks -= 1;
        m.boot_id = "another boot".into();
        assert_eq!(m.writer_alive(), Some(false));
        m.host = "elsewhere".into();
        assert_eq!(m.writer_alive(), None);
        CreateMarker::remove(dir.path());
        assert!(CreateMarker::load(dir.path()).is_none());
    }
}
