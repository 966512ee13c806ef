//! Helpers for the plan benchmarks: a peak-RSS meter around a provider executable and the
//! "plan with the provider vs. the same shape without" comparison, printed as figures.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{HarnessError, ProviderBinary, Terraform, Workspace};

/// A provider wrapped in GNU time, which appends its peak RSS (KiB) to a log on every exit.
#[derive(Debug)]
pub struct RssMeter {
    _dir: tempfile::TempDir,
    log: PathBuf,
    /// The wrapper, installable like the provider itself.
    pub provider: ProviderBinary,
}

impl RssMeter {
    /// Wraps `real` (its executable name and source address are kept).
    pub fn wrap(real: &ProviderBinary) -> Result<Self, HarnessError> {
        let dir =
            tempfile::tempdir().map_err(HarnessError::io("creating", std::env::temp_dir()))?;
        let log = dir.path().join("rss.log");
        let wrapper = dir
            .path()
            .join(format!("terraform-provider-{}", real.type_name));
        let script = format!(
            "#!/bin/sh\nexec /usr/bin/time -f '%M' -a -o '{}' '{}' \"$@\"\n",
            log.display(),
            real.path.display()
        );
        std::fs::write(&wrapper, script).map_err(HarnessError::io("writing", &wrapper))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
            .map_err(HarnessError::io("making executable", &wrapper))?;
        if !Path::new("/usr/bin/time").exists() {
            eprintln!(
                "note: /usr/bin/time missing (Debian package `time`); RSS will not be reported"
            );
        }
        let provider = ProviderBinary::from_path(&wrapper, &real.source())?;
        Ok(Self {
            _dir: dir,
            log,
            provider,
        })
    }

    /// Forgets the starts so far (e.g. of init and apply).
    pub fn reset(&self) {
        let _ = std::fs::remove_file(&self.log);
    }

    /// Peak RSS (KiB) of every provider start since the last reset, sorted.
    pub fn samples(&self) -> Vec<u64> {
        let mut v: Vec<u64> = std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        v.sort_unstable();
        v
    }
}

/// Median of durations.
pub fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `runs` plans alternately in `with` (the provider's configuration) and `without` (the
/// same shape without any provider) and prints medians, the difference, and the meter's
/// peak RSS. Both workspaces must already be applied (plans show no changes).
pub fn compare_plans(
    tf: &Terraform,
    label: &str,
    with: &Workspace,
    without: &Workspace,
    meter: &RssMeter,
    runs: usize,
) -> Result<(), HarnessError> {
    meter.reset();
    let plan = ["plan", "-input=false", "-no-color", "-lock=false"];
    let mut t_with = Vec::new();
    let mut t_without = Vec::new();
    // Alternate so that background load hits both series alike.
    for _ in 0..runs {
        for (ws, out) in [(with, &mut t_with), (without, &mut t_without)] {
            let t0 = Instant::now();
            let r = ws.run(&plan)?;
            out.push(t0.elapsed());
            r.assert_success();
            assert!(r.stdout.contains("No changes"), "{}", r.combined());
        }
    }
    let m_with = median(&mut t_with);
    let m_without = median(&mut t_without);
    println!("terraform: {}", tf.version().unwrap_or_default());
    println!("plan runs per configuration: {runs}");
    // Figures scale with machine load; record it next to them.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average at end: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("median plan without provider: {:>8.1} ms", ms(m_without));
    println!("median plan with {label:<12} {:>8.1} ms", ms(m_with));
    println!(
        "added by the provider:        {:>8.1} ms (goal <= 50 ms)",
        ms(m_with) - ms(m_without)
    );
    let rss = meter.samples();
    if let (Some(max), Some(mid)) = (rss.last(), rss.get(rss.len() / 2)) {
        println!(
            "provider peak RSS: max {:.1} MiB, median {:.1} MiB over {} starts (goal <= 20 MiB)",
            *max as f64 / 1024.0,
            *mid as f64 / 1024.0,
            rss.len()
        );
        println!(
            "provider starts per plan: {:.1}",
            rss.len() as f64 / runs as f64
        );
    } else {
        println!("provider peak RSS: not measured");
    }
    Ok(())
}
