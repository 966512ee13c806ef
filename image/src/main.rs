//! `constellation-image`: builds the node image, predicts its measurements and boots it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use constellation_attest::eventlog::EventLog;
use constellation_image::{build, debian, measure, nodevm};

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
        /// Fetch the Kubernetes files from this mirror: `https://HOST/PATH` becomes
        /// `<mirror>/HOST/PATH` (one mirror for dl.k8s.io and github.com).
        #[arg(long)]
        kubernetes_mirror: Option<String>,
        /// Adds a file to the initramfs, `<path in image>=<host file>` (repeatable). Changes
        /// PCRs 4, 9 and 11; the tests build a tampered image with it.
        #[arg(long = "extra-file")]
        extra_files: Vec<String>,
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
    /// Boots the node image like the provider's QEMU backend (OVMF, swtpm, blank state disk,
    /// host NIC with port forwards, private NIC, fw_cfg metadata) and streams the serial console.
    Run {
        /// The disk image (attached read-only).
        #[arg(long, default_value = "image/out/disk.raw")]
        disk: PathBuf,
        /// Guest RAM in MiB.
        #[arg(long, default_value_t = 2048)]
        memory: u32,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// `control-plane` or `worker`.
        #[arg(long, default_value = "control-plane")]
        role: constellation_node_api::metadata::Role,
        /// Node name.
        #[arg(long, default_value = "cp-0")]
        name: String,
        /// Private network address (/24).
        #[arg(long, default_value = "10.42.0.11")]
        private_ip: std::net::Ipv4Addr,
        /// Multicast group:port of the private network.
        #[arg(long, default_value = "239.255.42.1:42042")]
        private_net: String,
        /// State disk file (default: a blank temporary one).
        #[arg(long)]
        state_disk: Option<PathBuf>,
        /// Size of a newly created state disk in MiB.
        #[arg(long, default_value_t = 256)]
        state_disk_mib: u64,
        /// Further QEMU fw_cfg items, `name=value`
        /// (e.g. `opt/constellation/join-endpoints=10.42.0.11:30090`); repeatable.
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
            extra_files,
        } => {
            let mut cfg = build::BuildConfig::new(agent, init, out);
            for item in extra_files {
                let (guest, host) = item.split_once('=').with_context(|| {
                    format!("--extra-file {item:?}: use <path in image>=<host file>")
                })?;
                let data =
                    std::fs::read(host).with_context(|| format!("--extra-file: reading {host}"))?;
                cfg.extra_files
                    .push((guest.trim_start_matches('/').to_owned(), data));
            }
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
            println!("{}", serde_json::to_string_pretty(&o.measurements)?);
        }
        Cmd::Predict { uki } => {
            let bytes =
                std::fs::read(&uki).with_context(|| format!("reading {}", uki.display()))?;
            let m = measure::predict(&bytes)?;
            println!("{}", serde_json::to_string_pretty(&m)?);
        }
        Cmd::Replay { log } => {
            let bytes =
                std::fs::read(&log).with_context(|| format!("reading {}", log.display()))?;
            // PCRs the log does not extend are absent, not zero: the log says nothing of them.
            for (i, p) in EventLog::parse(&bytes)?.replay_sha256()? {
                println!("{i:2} {}", hex::encode(p));
            }
        }
        Cmd::Events { log } => {
            let bytes =
                std::fs::read(&log).with_context(|| format!("reading {}", log.display()))?;
            for e in EventLog::parse(&bytes)?.events {
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
                    e.sha256().map(hex::encode).unwrap_or_default(),
                    e.data.len()
                );
            }
        }
        Cmd::Run {
            disk,
            memory,
            timeout,
            role,
            name,
            private_ip,
            private_net,
            state_disk,
            state_disk_mib,
            fw_cfg,
        } => {
            anyhow::ensure!(
                disk.exists(),
                "{} does not exist; run `make image` first",
                disk.display()
            );
            let work = tempfile::tempdir()?;
            let mut opts = nodevm::NodeVmOptions::control_plane(
                &disk,
                state_disk.unwrap_or_else(|| work.path().join("state.raw")),
            );
            opts.state_disk_mib = state_disk_mib;
            opts.role = role;
            opts.name = name;
            opts.private_ip = private_ip;
            opts.private_group = private_net;
            opts.memory_mib = memory;
            opts.timeout = Duration::from_secs(timeout);
            for item in &fw_cfg {
                let (k, v) = item
                    .split_once('=')
                    .with_context(|| format!("--fw-cfg {item}: expected name=value"))?;
                opts.extra_fw_cfg.push((k.to_owned(), v.to_owned()));
            }
            for (what, host, guest) in opts.forward_free_ports()? {
                eprintln!("image-run: {what}: 127.0.0.1:{host} -> guest {guest}");
            }
            let mut g = opts.builder()?.spawn()?;
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
            if !g.has_exited() {
                // The agent never powers off by itself: the timeout is the normal end.
                eprintln!("image-run: stopping the guest after {timeout} s");
                drop(g);
                return Ok(());
            }
            let out = g.wait()?;
            if let Some(new) = out.serial_log.get(shown..) {
                print!("{new}");
            }
        }
    }
    Ok(())
}
