//! State disk throughput inside a QEMU guest: raw virtio disk vs LUKS2 without integrity vs LUKS2
//! with hmac(sha256) integrity, sequential 1 MiB writes (+fsync) and reads (caches dropped).
//!
//! Run: `cargo bench -p constellation-node --bench guest_disk` (env GUEST_DISK_BENCH_MIB sets the
//! data size, default 192). Under TCG the absolute numbers measure QEMU's emulation, not a
//! real disk; the ratios between the three rows are what this benchmark is for.

#[cfg(target_os = "linux")]
fn main() {
    use std::time::Duration;

    use constellation_image::vm::{Guest, create_raw_disk};

    // `cargo bench` passes `--bench`; with harness = false we just ignore arguments.
    let mib: u64 = std::env::var("GUEST_DISK_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(192);
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = dir.path().join("bench.raw");
    // Room for the data plus LUKS2 header and dm-integrity tags/journal.
    create_raw_disk(&disk, mib + mib / 4 + 64).expect("create disk");
    let out = Guest::builder()
        .name("g-disk-bench")
        .binary(
            env!("CARGO_BIN_EXE_guest-tests"),
            &["bench-disk", "/dev/vda", &mib.to_string()],
        )
        .executable("/sbin/mke2fs", "sbin/mkfs.ext4")
        .env("CONSTELLATION_GUEST_TESTS", "1")
        .env("DM_DISABLE_UDEV", "1")
        .disk(&disk)
        .memory_mib(768)
        .timeout(Duration::from_secs(1800))
        .boot()
        .expect("boot bench guest");
    let rows: Vec<&str> = out
        .serial_log
        .lines()
        .filter_map(|l| l.trim().strip_prefix("GUEST-BENCH "))
        .collect();
    if !out.success() || rows.len() != 3 {
        eprintln!("{}", out.serial_log);
        panic!("bench guest failed (exit {:?})", out.exit_code);
    }
    let field = |row: &str, key: &str| -> f64 {
        row.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
            .unwrap_or(f64::NAN)
    };
    for info in out
        .serial_log
        .lines()
        .filter_map(|l| l.trim().strip_prefix("GUEST-BENCH-INFO "))
    {
        println!("guest crypto: {info}");
    }
    let (raw_w, raw_r) = (field(rows[0], "write_mib_s"), field(rows[0], "read_mib_s"));
    println!("state disk throughput in guest ({mib} MiB sequential, 1 MiB blocks):");
    for row in &rows {
        let name = row.split_whitespace().next().unwrap_or("?");
        let (w, r) = (field(row, "write_mib_s"), field(row, "read_mib_s"));
        println!(
            "  {name:<15} write {w:8.1} MiB/s ({:5.1} % of raw)   read {r:8.1} MiB/s ({:5.1} % of raw)",
            100.0 * w / raw_w,
            100.0 * r / raw_r
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("guest_disk bench: Linux only");
}
