//! `constellation-image`: builds the node image, predicts its measurements and boots it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use constellation_image::{build, debian, measure, vm};

/// Node image tool.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Downloads (or verifies in the cache) every pinned Debian package.
    Fetch,
    /// Prints a debian.lock line for an installed package (downloads it to hash it).
    Pin {
        /// Package names.
        packages: Vec<String>,
    },
    /// Builds constellation.efi, disk.raw, measurements.json and manifest.json.
    Build {
        /// The node agent binary (release build).
        #[arg(long)]
        agent: PathBuf,
        /// The constellation-init binary.
        #[arg(long)]
        init: PathBuf,
        /// Output directory.
        #[arg(long, default_value = "image/out")]
        out: PathBuf,
        /// Timestamp for archive entries; defaults to $SOURCE_DATE_EPOCH, else 0.
        #[arg(long)]
        source_date_epoch: Option<u32>,
        /// Kernel command line (default: the product's).
        #[arg(long)]
        cmdline: Option<String>,
        /// Include the pinned Kubernetes binaries of this version.
        #[arg(long)]
        kubernetes: Option<String>,
        /// Replace https://dl.k8s.io with this base URL.
        #[arg(long)]
        kubernetes_mirror: Option<String>,
    },
    /// Prints the predicted PCRs of a UKI as measurements JSON.
    Predict {
        /// The UKI (constellation.efi).
        uki: PathBuf,
    },
    /// Replays a binary TCG event log and prints the SHA-256 PCRs.
    Replay {
        /// The event log (binary_bios_measurements).
        log: PathBuf,
    },
    /// Lists the events of a binary TCG event log.
    Events {
        /// The event log (binary_bios_measurements).
        log: PathBuf,
    },
    /// Boots a disk image with OVMF and a swtpm vTPM, streaming the serial console to stdout.
    Run {
        /// The disk image.
        #[arg(long, default_value = "image/out/disk.raw")]
        disk: PathBuf,
        /// Guest RAM in MiB.
        #[arg(long, default_value_t = 2048)]
        memory: u32,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// QEMU fw_cfg items for the agent's metadata, `name=value`
        /// (e.g. `opt/constellation/role=control-plane`); repeatable.
        #[arg(long = "fw-cfg")]
        fw_cfg: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Fetch => {
            let cache = debian::Cache::from_env();
            for pin in debian::Lock::default_lock().pins() {
                let p = cache.deb(pin)?;
                println!("{} {} {}", pin.name, pin.version, p.display());
            }
        }
        Cmd::Pin { packages } => {
            for p in packages {
                println!("{}", build::pin_line(&p)?);
            }
        }
        Cmd::Build {
            agent,
            init,
            out,
            source_date_epoch,
            cmdline,
            kubernetes,
            kubernetes_mirror,
        } => {
            let mut cfg = build::BuildConfig::new(agent, init, out);
            cfg.source_date_epoch = match source_date_epoch {
                Some(v) => v,
                None => match std::env::var("SOURCE_DATE_EPOCH") {
                    Ok(v) => v.parse().context("SOURCE_DATE_EPOCH is not a number")?,
                    Err(_) => 0,
                },
            };
            if let Some(c) = cmdline {
                cfg.cmdline = c;
            }
            cfg.kubernetes = kubernetes;
            cfg.kubernetes_mirror = kubernetes_mirror;
            let o = build::build(&cfg)?;
            println!(
                "built {} ({} bytes, sha256 {})",
                o.uki.display(),
                o.manifest.uki_size,
                o.manifest.uki_sha256
            );
            println!(
                "built {} (sha256 {})",
                o.disk.display(),
                o.manifest.disk_sha256
            );
            println!("{}", o.manifest.kubernetes_note);
            println!(
                "{}",
                serde_json::to_string_pretty(&o.measurements.to_json())?
            );
        }
        Cmd::Predict { uki } => {
            let bytes =
                std::fs::read(&uki).with_context(|| format!("reading {}", uki.display()))?;
            let m = measure::predict(&bytes)?;
            println!("{}", serde_json::to_string_pretty(&m.to_json())?);
        }
        Cmd::Replay { log } => {
            let bytes =
                std::fs::read(&log).with_context(|| format!("reading {}", log.display()))?;
            let pcrs = measure::replay(&measure::parse_event_log(&bytes)?);
            for (i, p) in pcrs.iter().enumerate() {
                println!("{i:2} {}", hex::encode(p));
            }
        }
        Cmd::Events { log } => {
            let bytes =
                std::fs::read(&log).with_context(|| format!("reading {}", log.display()))?;
            for e in measure::parse_event_log(&bytes)? {
                let printable: String = e
                    .data
                    .iter()
                    .take(64)
                    .map(|b| {
                        if b.is_ascii_graphic() || *b == b' ' {
                            *b as char
                        } else {
                            '.'
                        }
                    })
                    .collect();
                println!(
                    "pcr {:2} type {:#010x} sha256 {} data[{}] {printable}",
                    e.pcr,
                    e.event_type,
                    e.sha256.map(hex::encode).unwrap_or_default(),
                    e.data.len()
                );
            }
        }
        Cmd::Run {
            disk,
            memory,
            timeout,
            fw_cfg,
        } => {
            anyhow::ensure!(
                disk.exists(),
                "{} does not exist; run `make image` first",
                disk.display()
            );
            // Boot a copy so the built image stays pristine (its hash is in manifest.json).
            let work = tempfile::tempdir()?;
            let copy = work.path().join("disk.raw");
            std::fs::copy(&disk, &copy)?;
            let mut builder = vm::Guest::builder();
            for item in &fw_cfg {
                let (k, v) = item
                    .split_once('=')
                    .with_context(|| format!("--fw-cfg {item}: expected name=value"))?;
                builder = builder.fw_cfg(k, v);
            }
            let mut g = builder
                .name("image-run")
                .uefi_disk(&copy)
                .tpm()
                .memory_mib(memory)
                .timeout(Duration::from_secs(timeout))
                .spawn()?;
            let mut shown = 0;
            let deadline = std::time::Instant::now() + Duration::from_secs(timeout);
            while !g.has_exited() && std::time::Instant::now() < deadline {
                let log = g.serial_so_far();
                if let Some(new) = log.get(shown..) {
                    print!("{new}");
                    std::io::Write::flush(&mut std::io::stdout())?;
                }
                shown = log.len();
                std::thread::sleep(Duration::from_millis(200));
            }
            let out = g.wait()?;
            if let Some(new) = out.serial_log.get(shown..) {
                print!("{new}");
            }
        }
    }
    Ok(())
}
