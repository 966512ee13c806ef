//! Boot-to-agent-ready time of the node image, booted like the provider boots it (OVMF, swtpm,
//! blank state disk, two NICs, fw_cfg metadata). Prints when each boot stage first shows on
//! the serial console; nothing is asserted.
//!
//! `cargo bench -p constellation-image --bench boot_time -- [DISK] [RUNS]`
//! (default `image/out/disk.raw`, 3 runs; build it with `make image`). Accelerator:
//! `CONSTELLATION_ACCEL` (default tcg).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use constellation_image::nodevm::NodeVmOptions;

/// (label, serial text that marks the end of the stage)
const STAGES: [(&str, &str); 6] = [
    ("firmware init (OVMF to boot option)", "BdsDxe: loading"),
    ("UKI read + PCR 4 measured", "BdsDxe: starting"),
    (
        "systemd-stub + initrd measured",
        "EFI stub: Measured initrd",
    ),
    ("kernel to /init", "init: starting"),
    ("agent start", "node agent starting"),
    ("agent ready (servers listening)", "node agent ready"),
];

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let disk = args.first().map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/out/disk.raw")),
        PathBuf::from,
    );
    let runs: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(3);
    if !disk.exists() {
        eprintln!("{} missing: run `make image` first", disk.display());
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let mut totals: Vec<Vec<f64>> = vec![Vec::new(); STAGES.len()];
    for run in 0..runs {
        let state = work.path().join(format!("state-{run}.raw"));
        let mut opts = NodeVmOptions::control_plane(&disk, &state);
        opts.private_group = format!("239.255.77.{}:{}", run + 1, 42100 + run);
        opts.forward_free_ports().expect("ports");
        let g = opts.builder().expect("builder").spawn().expect("spawn");
        let t0 = Instant::now();
        let mut seen: Vec<Option<f64>> = vec![None; STAGES.len()];
        let deadline = t0 + Duration::from_secs(600);
        while seen.last().is_some_and(Option::is_none) && Instant::now() < deadline {
            let log = g.serial_so_far();
            for (i, (_, marker)) in STAGES.iter().enumerate() {
                if seen[i].is_none() && log.contains(marker) {
                    seen[i] = Some(t0.elapsed().as_secs_f64());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        println!("run {run}:");
        let mut prev = 0.0;
        for (i, (label, _)) in STAGES.iter().enumerate() {
            match seen[i] {
                Some(t) => {
                    println!("  {label:<34} at {t:6.2} s (+{:5.2} s)", t - prev);
                    totals[i].push(t);
                    prev = t;
                }
                None => println!("  {label:<34} not seen"),
            }
        }
        drop(g);
    }
    println!("median over {runs} runs (seconds since QEMU start):");
    for (i, (label, _)) in STAGES.iter().enumerate() {
        let mut v = totals[i].clone();
        v.sort_by(f64::total_cmp);
        if let Some(m) = v.get(v.len() / 2) {
            println!("  {label:<34} {m:6.2}");
        }
    }
}
