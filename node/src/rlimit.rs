//! The open-file limit of the agent. The kernel's default soft limit for PID 1 is 1024, which
//! a few hundred idle connections would exhaust, and then every operation that needs a file
//! descriptor fails (state saves, cryptsetup, outbound joins, kubeadm). The agent raises it at
//! start; the per-listener connection caps stay far below the result.

/// The open-file limit the agent asks for.
pub const WANTED_NOFILE: u64 = 65_536;

/// The (soft, hard) limits to set given the current ones: the soft limit goes up to
/// [`WANTED_NOFILE`]; the hard limit is raised to it only when `may_raise_hard` (root, as PID 1
/// is), never lowered. `None` when nothing would change.
pub fn nofile_target(soft: u64, hard: u64, may_raise_hard: bool) -> Option<(u64, u64)> {
    let new_hard = if may_raise_hard {
        hard.max(WANTED_NOFILE)
    } else {
        hard
    };
    let new_soft = soft.max(WANTED_NOFILE.min(new_hard));
    ((new_soft, new_hard) != (soft, hard)).then_some((new_soft, new_hard))
}

/// Raises the open-file limit (see [`nofile_target`]); returns the soft limit in effect.
#[cfg(target_os = "linux")]
pub fn raise_nofile() -> Result<u64, String> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| format!("reading RLIMIT_NOFILE failed: {e}"))?;
    let root = nix::unistd::geteuid().is_root();
    let Some((s, h)) = nofile_target(soft, hard, root) else {
        return Ok(soft);
    };
    match setrlimit(Resource::RLIMIT_NOFILE, s, h) {
        Ok(()) => Ok(s),
        // Without CAP_SYS_RESOURCE the hard limit stays; take what it allows.
        Err(_) if h != hard => match nofile_target(soft, hard, false) {
            Some((s, h)) => setrlimit(Resource::RLIMIT_NOFILE, s, h)
                .map(|()| s)
                .map_err(|e| format!("raising RLIMIT_NOFILE to {s} failed: {e}")),
            None => Ok(soft),
        },
        Err(e) => Err(format!("raising RLIMIT_NOFILE to {s} failed: {e}")),
    }
}

/// Raises the open-file limit (a no-op off Linux).
#[cfg(not(target_os = "linux"))]
pub fn raise_nofile() -> Result<u64, String> {
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nofile_targets() {
        for (soft, hard, root, want) in [
            // PID 1's defaults: both raised.
            (1024, 4096, true, Some((WANTED_NOFILE, WANTED_NOFILE))),
            // Unprivileged: the soft limit up to the hard one.
            (1024, 4096, false, Some((4096, 4096))),
            (1024, 1_048_576, false, Some((WANTED_NOFILE, 1_048_576))),
            // Already enough: untouched, never lowered.
            (WANTED_NOFILE, WANTED_NOFILE, true, None),
            (1_048_576, 1_048_576, true, None),
            (4096, 4096, false, None),
        ] {
            assert_eq!(
                nofile_target(soft, hard, root),
                want,
                "{soft}/{hard} root={root}"
            );
        }
    }
}
