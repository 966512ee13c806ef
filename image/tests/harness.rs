//! Self-test of the guest harness: boots real QEMU guests with the pinned kernel.

use std::time::Duration;

use constellation_image::vm::{Guest, Network, create_raw_disk};

fn have(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok()
}

#[test]
fn guest_runs_dynamic_binary_and_reports_exit_code() {
    if !have("qemu-system-x86_64") {
        constellation_testkit::skip_current(
            "qemu-system-x86_64 is not on PATH",
            "run scripts/install-deps.sh",
        );
        return;
    }
    // sha256sum is dynamically linked: proves shared-library resolution works in the guest.
    let out = Guest::builder()
        .name("selftest")
        .binary("/usr/bin/sha256sum", &["/proc/version"])
        .timeout(Duration::from_secs(600))
        .boot()
        .expect("guest boots");
    assert!(
        out.success(),
        "exit {:?}\n{}\n{}",
        out.exit_code,
        out.serial_log,
        out.qemu_stderr
    );
    assert!(
        out.serial_log.contains("/proc/version"),
        "{}",
        out.serial_log
    );
    eprintln!("direct-boot guest ran in {:?}", out.elapsed);

    let out = Guest::builder()
        .shell("echo failing on purpose; exit 7")
        .timeout(Duration::from_secs(600))
        .boot()
        .expect("guest boots");
    assert_eq!(out.exit_code, Some(7), "{}", out.serial_log);
}

#[test]
fn guest_disk_persists_and_modules_load_and_tpm_answers() {
    if !have("qemu-system-x86_64") || !have("swtpm") {
        constellation_testkit::skip_current(
            "qemu-system-x86_64 or swtpm is not on PATH",
            "run scripts/install-deps.sh",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("state.raw");
    create_raw_disk(&disk, 16).unwrap();
    let first = Guest::builder()
        .disk(&disk)
        .tpm()
        .modules(&["isofs"])
        .fw_cfg("opt/constellation/role", "control-plane")
        .shell(
            "set -e\n\
             echo persisted-marker | dd of=/dev/vda bs=512 count=1 conv=sync 2>/dev/null\n\
             grep -q '^dm_crypt' /proc/modules\n\
             grep -q '^wireguard' /proc/modules\n\
             grep -q '^dm_integrity' /proc/modules\n\
             grep -q '^ext4' /proc/modules\n\
             grep -q '^isofs' /proc/modules\n\
             grep -qx control-plane /sys/firmware/qemu_fw_cfg/by_name/opt/constellation/role/raw\n\
             test -c /dev/tpm0 -o -c /dev/tpmrm0\n\
             cat /sys/class/tpm/tpm0/pcr-sha256/0\n",
        )
        .timeout(Duration::from_secs(600))
        .boot()
        .unwrap();
    assert!(first.success(), "{}", first.serial_log);
    let second = Guest::builder()
        .disk(&disk)
        .shell("dd if=/dev/vda bs=512 count=1 2>/dev/null | grep -q persisted-marker")
        .timeout(Duration::from_secs(600))
        .boot()
        .unwrap();
    assert!(second.success(), "{}", second.serial_log);
}

#[test]
fn two_guests_talk_over_private_network_with_pcap() {
    if !have("qemu-system-x86_64") {
        constellation_testkit::skip_current(
            "qemu-system-x86_64 is not on PATH",
            "run scripts/install-deps.sh",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("a.pcap");
    let (a, b) = Network::pair().unwrap();
    // b's kernel answers pings; a pings b until it answers (b may boot later than a).
    let server = Guest::builder()
        .name("b")
        .net(b, Some("10.9.0.2/24"))
        .shell("sleep 900")
        .timeout(Duration::from_secs(900))
        .spawn()
        .unwrap();
    let client = Guest::builder()
        .name("a")
        .net_with_pcap(a, Some("10.9.0.1/24"), &pcap)
        .shell(
            "for i in $(seq 1 500); do ping -c 1 -W 1 10.9.0.2 >/dev/null && exit 0; done; exit 1",
        )
        .timeout(Duration::from_secs(900))
        .spawn()
        .unwrap();
    let client = client.wait().unwrap();
    drop(server); // b has served its purpose; killing it also proves cleanup on drop.
    assert!(client.success(), "{}", client.serial_log);
    let bytes = std::fs::read(&pcap).unwrap();
    // pcap magic (little-endian) followed by at least one frame.
    assert!(
        bytes.len() > 24 + 16,
        "pcap too small: {} bytes",
        bytes.len()
    );
    assert_eq!(bytes.get(..4), Some(&[0xd4, 0xc3, 0xb2, 0xa1][..]));
}
