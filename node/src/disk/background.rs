//! Formats a blank state disk in the background so that the agent's servers start at once.
//!
//! Formatting (LUKS2 with dm-integrity: the initial tag wipe touches every sector, plus
//! argon2id) takes tens of seconds on a small VM without hardware acceleration, and nothing
//! needs the disk before Init or a join ticket arrives. [`BackgroundPrepare::prepare`] therefore
//! answers [`BootState::Fresh`] for an uninitialised disk right away and formats it on a thread;
//! every other method waits for that to finish first (they already run on blocking threads).
//! An initialised disk is handled synchronously: that is fast (a header read).

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use super::{BootState, DiskError, DiskKey, StateDisk};

#[derive(Debug)]
enum Job {
    Idle,
    Running,
    /// The background format failed with this message (retried by the next `prepare`).
    Failed(String),
}

/// Wraps a [`StateDisk`] whose `prepare` of a blank disk runs in the background.
pub struct BackgroundPrepare {
    inner: Arc<dyn StateDisk>,
    device: String,
    job: Arc<(Mutex<Job>, Condvar)>,
}

impl std::fmt::Debug for BackgroundPrepare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundPrepare")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl BackgroundPrepare {
    /// Wraps `inner`; `device` names it in errors.
    pub fn new(inner: Arc<dyn StateDisk>, device: impl Into<String>) -> Self {
        Self {
            inner,
            device: device.into(),
            job: Arc::new((Mutex::new(Job::Idle), Condvar::new())),
        }
    }

    /// Blocks while a background format runs; reports its failure.
    fn wait(&self, operation: &'static str) -> Result<(), DiskError> {
        let (lock, cv) = &*self.job;
        let mut job = lock.lock().unwrap_or_else(|e| e.into_inner());
        while matches!(*job, Job::Running) {
            job = cv.wait(job).unwrap_or_else(|e| e.into_inner());
        }
        match &*job {
            Job::Failed(msg) => Err(DiskError::InvalidState {
                device: self.device.clone(),
                operation,
                reason: format!("formatting the blank disk at boot failed: {msg}"),
            }),
            _ => Ok(()),
        }
    }
}

impl StateDisk for BackgroundPrepare {
    fn prepare(&self) -> Result<BootState, DiskError> {
        // A previous failure is retried: wait for a running job, ignore its outcome.
        let _ = self.wait("prepare");
        if self.inner.is_initialized()? {
            return self.inner.prepare();
        }
        let (lock, _) = &*self.job;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = Job::Running;
        let inner = self.inner.clone();
        let job = self.job.clone();
        std::thread::Builder::new()
            .name("state-disk-format".into())
            .spawn(move || {
                let t0 = std::time::Instant::now();
                let result = inner.prepare();
                let (lock, cv) = &*job;
                let mut j = lock.lock().unwrap_or_else(|e| e.into_inner());
                *j = match result {
                    Ok(BootState::Fresh) => {
                        tracing::info!(
                            seconds = t0.elapsed().as_secs_f64(),
                            "state disk formatted with a boot-time key"
                        );
                        Job::Idle
                    }
                    // Someone initialised it meanwhile (cannot happen in one agent); say so.
                    Ok(other) => Job::Failed(format!("disk became {other:?} while formatting")),
                    Err(e) => {
                        tracing::error!(error = %e, "formatting the state disk failed");
                        Job::Failed(e.to_string())
                    }
                };
                cv.notify_all();
            })
            .map_err(|e| DiskError::InvalidState {
                device: self.device.clone(),
                operation: "prepare",
                reason: format!("cannot start the formatting thread: {e}"),
            })?;
        Ok(BootState::Fresh)
    }

    fn remember_join_endpoints(&self, endpoints: &[String]) -> Result<(), DiskError> {
        self.wait("remember join endpoints")?;
        self.inner.remember_join_endpoints(endpoints)
    }

    fn remembered_join_endpoints(&self) -> Result<Vec<String>, DiskError> {
        // A disk being formatted was blank: nothing remembered, and no reason to wait.
        let (lock, _) = &*self.job;
        if matches!(
            *lock.lock().unwrap_or_else(|e| e.into_inner()),
            Job::Running
        ) {
            return Ok(Vec::new());
        }
        self.inner.remembered_join_endpoints()
    }

    fn uuid(&self) -> Result<String, DiskError> {
        self.wait("uuid")?;
        self.inner.uuid()
    }

    fn is_initialized(&self) -> Result<bool, DiskError> {
        self.wait("is_initialized")?;
        self.inner.is_initialized()
    }

    fn rekey(&self, derived_key: &DiskKey) -> Result<(), DiskError> {
        self.wait("rekey")?;
        self.inner.rekey(derived_key)
    }

    fn unlock(&self, derived_key: &DiskKey) -> Result<(), DiskError> {
        self.wait("unlock")?;
        self.inner.unlock(derived_key)
    }

    fn mount(&self) -> Result<PathBuf, DiskError> {
        self.wait("mount")?;
        self.inner.mount()
    }

    fn close(&self) -> Result<(), DiskError> {
        self.wait("close")?;
        self.inner.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::HostDirectoryDisk;

    #[test]
    fn fresh_disk_is_prepared_in_the_background_and_operations_wait() {
        let d = tempfile::tempdir().unwrap();
        let inner: Arc<dyn StateDisk> = Arc::new(HostDirectoryDisk::new(d.path()));
        let disk = BackgroundPrepare::new(inner, "test");
        assert_eq!(disk.prepare().unwrap(), BootState::Fresh);
        // uuid waits for the background prepare, then answers like the inner disk.
        let uuid = disk.uuid().unwrap();
        assert!(!uuid.is_empty());
        disk.rekey(&DiskKey::from_slice(&[7; 32])).unwrap();
        assert!(disk.is_initialized().unwrap());
        // Initialised: prepare is synchronous and reports Locked.
        let again = BackgroundPrepare::new(Arc::new(HostDirectoryDisk::new(d.path())), "test");
        assert_eq!(again.prepare().unwrap(), BootState::Locked);
    }
}
