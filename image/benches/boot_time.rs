//! Boot-to-agent-ready time of the node image, booted like the provider boots it (OVMF, swtpm,
//! blank state disk, two NICs, fw_cfg metadata). Prints when each boot stage first shows on
//! the serial console, as wall time and as QEMU CPU time; nothing is asserted.
//!
//! `cargo bench -p constellation-image --bench boot_time -- [DISK] [RUNS]`
//! (default `image/out/disk.raw`, 3 runs; build it with `make image`). Accelerator:
//! `CONSTELLATION_ACCEL` (default tcg). Experiments: `BOOT_BENCH_CPUS`, `BOOT_BENCH_MEMORY_MIB`
//! and `BOOT_BENCH_QEMU_ARGS` (whitespace-separated, appended to the QEMU command line).
//!
//! QEMU's CPU time (user + system, all threads) is the figure to compare changes on a shared
//! host: wall time under TCG grows with whatever else runs, CPU time hardly does.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use constellation_image::nodevm::NodeVmOptions;

/// (label, serial text that marks the end of the stage)
const STAGES: [(&str, &str); 7] = [
    ("firmware init (OVMF to boot option)", "BdsDxe: loading"),
    ("UKI read + PCR 4 measured", "BdsDxe: starting"),
    (
        "systemd-stub + initrd measured",
        "EFI stub: Measured initrd",
    ),
    ("kernel boot to /init", "init: loading modules"),
    ("kernel modules loaded", "init: starting"),
    ("agent start", "node agent starting"),
    ("agent ready (servers listening)", "node agent ready"),
];

fn env_u32(key: &str) -> Option<u32> {
    std::env::var(key).ok().and_then(|v| v.parse().ok())
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

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
        constellation_testkit::skip_current(
            &format!("no node image at {}", disk.display()),
            "run `make image` or pass the disk as the first argument",
        );
        return;
    }
    let extra: Vec<String> = std::env::var("BOOT_BENCH_QEMU_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let work = tempfile::tempdir().expect("tempdir");
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); STAGES.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); STAGES.len()];
    for run in 0..runs {
        let state = work.path().join(format!("state-{run}.raw"));
        let mut opts = NodeVmOptions::control_plane(&disk, &state);
        opts.private_group = format!("239.255.77.{}:{}", run + 1, 42100 + run);
        if let Some(n) = env_u32("BOOT_BENCH_CPUS") {
            opts.cpus = n;
        }
        if let Some(m) = env_u32("BOOT_BENCH_MEMORY_MIB") {
            opts.memory_mib = m;
        }
        opts.forward_free_ports().expect("ports");
        let g = opts
            .builder()
            .expect("builder")
            .qemu_args(extra.clone())
            .spawn()
            .expect("spawn");
        let t0 = Instant::now();
        let mut seen: Vec<Option<(f64, f64)>> = vec![None; STAGES.len()];
        let deadline = t0 + Duration::from_secs(600);
        while seen.last().is_some_and(Option::is_none) && Instant::now() < deadline {
            let log = g.serial_so_far();
            let now = (
                t0.elapsed().as_secs_f64(),
                g.qemu_cpu_seconds().unwrap_or(0.0),
            );
            for (i, (_, marker)) in STAGES.iter().enumerate() {
                if seen[i].is_none() && log.contains(marker) {
                    seen[i] = Some(now);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        println!("run {run}:                          wall            QEMU CPU");
        let (mut pw, mut pc) = (0.0, 0.0);
        for (i, (label, _)) in STAGES.iter().enumerate() {
            match seen[i] {
                Some((w, c)) => {
                    println!(
                        "  {label:<34} {w:6.2} s (+{:5.2})  {c:6.2} s (+{:5.2})",
                        w - pw,
                        c - pc
                    );
                    wall[i].push(w);
                    cpu[i].push(c);
                    (pw, pc) = (w, c);
                }
                None => println!("  {label:<34} not seen"),
            }
        }
        drop(g);
    }
    println!("median over {runs} runs (seconds since QEMU start): wall, QEMU CPU");
    for (i, (label, _)) in STAGES.iter().enumerate() {
        if let (Some(w), Some(c)) = (median(&wall[i]), median(&cpu[i])) {
            println!("  {label:<34} {w:6.2}  {c:6.2}");
        }
    }
}
