//! End-to-end image tests: reproducibility, bad input, and predicted PCRs against a real
//! OVMF + swtpm boot of the built disk.
//!
//! The node agent is stood in for by the `constellation-init` binary (the boots here use the
//! `constellation.dump_tpm=1` test hook of `/init`, which prints the PCRs and the firmware event
//! log and powers off before the agent would start), so these tests do not need a release build
//! of the agent.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use constellation_attest::eventlog::EventLog;
use constellation_image::build::{BuildConfig, BuildOutput, DEFAULT_CMDLINE, build};
use constellation_image::debian::{Cache, Lock};
use constellation_image::vm::Guest;

const INIT: &str = env!("CARGO_BIN_EXE_constellation-init");

fn have(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok()
}

fn build_variant(out: &Path, cmdline_variant: u8, initramfs_variant: u8) -> BuildOutput {
    let mut cfg = BuildConfig::new(INIT.into(), INIT.into(), out.to_path_buf());
    cfg.cmdline = format!(
        "{DEFAULT_CMDLINE} constellation.dump_tpm=1 constellation.variant={cmdline_variant}"
    );
    cfg.extra_files = vec![("etc/variant".into(), vec![b'0' + initramfs_variant])];
    build(&cfg).expect("image builds")
}

#[test]
fn two_builds_in_different_directories_are_identical() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let oa = build_variant(a.path(), 0, 0);
    let ob = build_variant(&b.path().join("nested/out"), 0, 0);
    for f in [
        "constellation.efi",
        "disk.raw",
        "measurements.json",
        "manifest.json",
    ] {
        let x = std::fs::read(a.path().join(f)).unwrap();
        let y = std::fs::read(b.path().join("nested/out").join(f)).unwrap();
        assert!(x == y, "{f} differs between the two builds");
    }
    assert_eq!(oa.manifest.uki_sha256, ob.manifest.uki_sha256);
    let manifest = std::fs::read_to_string(a.path().join("manifest.json")).unwrap();
    assert!(manifest.contains("no Kubernetes"), "{manifest}");
    assert!(manifest.contains("systemd-boot-efi"), "{manifest}");
    assert!(manifest.contains("libc6"), "{manifest}");
}

#[test]
fn tampered_debian_package_stops_the_build_naming_it() {
    let cache_dir = tempfile::tempdir().unwrap();
    let lock = Lock::default_lock();
    let pin = lock.pins().first().unwrap().clone();
    // A cached .deb with the pinned name but different bytes (as a compromised mirror or a
    // corrupted cache would leave it).
    let debs = cache_dir.path().join("debs");
    std::fs::create_dir_all(&debs).unwrap();
    std::fs::write(
        debs.join(format!("{}_{}.deb", pin.name, &pin.sha256[..16])),
        b"tampered",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut cfg = BuildConfig::new(INIT.into(), INIT.into(), out.path().to_path_buf());
    cfg.cache = Cache::at(cache_dir.path());
    let err = build(&cfg).unwrap_err().to_string();
    assert!(err.contains(&pin.name), "{err}");
    assert!(err.contains("SHA-256 mismatch"), "{err}");
    assert!(!out.path().join("disk.raw").exists());
}

#[test]
fn kubernetes_flavour_fails_clearly_when_download_site_is_unreachable() {
    let out = tempfile::tempdir().unwrap();
    let mut cfg = BuildConfig::new(INIT.into(), INIT.into(), out.path().to_path_buf());
    cfg.kubernetes = Some("1.33.7".into());
    // A closed port on loopback stands in for the unreachable download sites.
    cfg.kubernetes_mirror = Some("http://127.0.0.1:9".into());
    let err = build(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("cannot fetch kubeadm (kubeadm 1.33.7) for Kubernetes 1.33.7"),
        "{err}"
    );
    assert!(err.contains("http://127.0.0.1:9/dl.k8s.io/"), "{err}");
    assert!(err.contains("place the file"), "{err}");
}

struct Dump {
    pcrs: BTreeMap<u32, [u8; 32]>,
    log: Vec<u8>,
    /// The serial console without the event log lines, for failure messages.
    console: String,
}

/// Parses the `/init` dump; `None` when it is incomplete (e.g. the guest kernel's TPM driver
/// timed out talking to swtpm on an overloaded host, so there are no PCR files).
fn parse_dump(serial: &str) -> Option<Dump> {
    let mut pcrs = BTreeMap::new();
    let mut log_hex = String::new();
    for line in serial.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("PCR-SHA256 ") {
            let (i, v) = rest.split_once(' ')?;
            let bytes: [u8; 32] = hex::decode(v).ok()?.try_into().ok()?;
            pcrs.insert(i.parse().ok()?, bytes);
        } else if let Some(rest) = line.strip_prefix("EVENTLOG ") {
            log_hex.push_str(rest);
        }
    }
    if !serial.contains("TPM-DUMP-END") || pcrs.len() < 24 {
        return None;
    }
    let console: Vec<&str> = serial
        .lines()
        .filter(|l| !l.trim().starts_with("EVENTLOG "))
        .collect();
    Some(Dump {
        pcrs,
        log: hex::decode(log_hex).ok()?,
        console: console.join("\n"),
    })
}

fn guest(name: &str, disk: &Path) -> constellation_image::vm::RunningGuest {
    Guest::builder()
        .name(name)
        .uefi_disk(disk)
        .tpm()
        .memory_mib(1024)
        .timeout(Duration::from_secs(900))
        .spawn()
        .expect("guest starts")
}

/// Boots all disks concurrently; a guest whose dump is incomplete because of a host-load
/// induced TPM timeout is booted again on its own (twice at most). Anything else fails.
fn boot_and_dump(disks: &[&Path]) -> Vec<Dump> {
    let running: Vec<_> = disks
        .iter()
        .enumerate()
        .map(|(i, d)| guest(&format!("image-v{i}"), d))
        .collect();
    let outputs: Vec<_> = running
        .into_iter()
        .map(|g| g.wait().expect("guest powers off"))
        .collect();
    let mut dumps = Vec::new();
    for (i, mut out) in outputs.into_iter().enumerate() {
        let mut attempt = 0;
        loop {
            eprintln!("OVMF boot v{i} to power-off: {:?}", out.elapsed);
            if let Some(d) = parse_dump(&out.serial_log) {
                dumps.push(d);
                break;
            }
            attempt += 1;
            let tpm_flake = out.serial_log.contains("tpm tpm0: Operation Timed out");
            assert!(
                tpm_flake && attempt <= 2,
                "incomplete dump from guest v{i}:\n{}",
                out.serial_log
            );
            eprintln!("guest v{i}: TPM timed out under host load; booting it again");
            out = guest(&format!("image-v{i}-retry{attempt}"), disks[i])
                .wait()
                .expect("guest powers off");
        }
    }
    dumps
}

#[test]
fn predicted_pcrs_equal_ovmf_boot_and_event_log_replays() {
    if !have("qemu-system-x86_64") || !have("swtpm") || !Path::new(measure_ovmf()).exists() {
        constellation_testkit::skip_current(
            "qemu-system-x86_64, swtpm or OVMF missing",
            "run scripts/install-deps.sh",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // base, one initramfs byte changed, one command-line byte changed
    let variants = [(0u8, 0u8), (0, 1), (1, 0)];
    let outs: Vec<BuildOutput> = variants
        .iter()
        .enumerate()
        .map(|(i, (c, r))| build_variant(&dir.path().join(format!("v{i}")), *c, *r))
        .collect();
    let disks: Vec<&Path> = outs.iter().map(|o| o.disk.as_path()).collect();
    let dumps = boot_and_dump(&disks);

    for (o, d) in outs.iter().zip(&dumps) {
        for (idx, e) in &o.measurements.0 {
            let got = d
                .pcrs
                .get(idx)
                .unwrap_or_else(|| panic!("PCR {idx} missing from the dump:\n{}", d.console));
            if e.warn_only && *idx != 5 {
                if got.as_slice() != e.expected {
                    eprintln!(
                        "warning: firmware PCR {idx} differs from the reference (warn-only): {}",
                        hex::encode(got)
                    );
                }
                continue;
            }
            assert_eq!(
                hex::encode(got),
                hex::encode(&e.expected),
                "PCR {idx}: predicted vs measured"
            );
        }
        let replayed = EventLog::parse(&d.log).unwrap().replay_sha256().unwrap();
        for i in (0..=9).chain(11..=15) {
            let value = replayed.get(&i).copied().unwrap_or([0u8; 32]);
            assert_eq!(
                hex::encode(value),
                hex::encode(d.pcrs[&i]),
                "PCR {i}: event log replay vs PCR value"
            );
        }
    }
    let pred = |v: usize, i: u32| outs[v].measurements.0[&i].expected.clone();
    let meas = |v: usize, i: u32| dumps[v].pcrs[&i];
    // One initramfs byte: the initrd measurements (PCR 9, 11) and the UKI hash (PCR 4) change,
    // predicted and measured alike; PCR 12 does not.
    for v in [1, 2] {
        for i in [4, 9, 11] {
            assert_ne!(pred(0, i), pred(v, i), "variant {v} PCR {i}");
            assert_ne!(meas(0, i), meas(v, i), "variant {v} PCR {i}");
        }
        assert_eq!(meas(0, 12), meas(v, 12));
    }
}

fn measure_ovmf() -> &'static str {
    constellation_image::vm::OVMF_CODE
}
