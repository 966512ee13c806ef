//! Guest tier: the LUKS2 state disk inside a QEMU guest (VM harness `constellation_image::vm`).
//!
//! Boot 1 formats a blank virtio disk (LUKS2, integrity), writes a file, re-keys to the
//! HKDF-derived key. Boot 2 (a "reboot": a new guest on the same disk file) must find the disk
//! locked, refuse a wrong key, open it with the derived key and read the file back. The host then
//! checks the disk file: a LUKS2 header and no plaintext of the file anywhere.
#![cfg(target_os = "linux")]

use std::time::Duration;

use constellation_image::vm::{Guest, GuestOutput, create_raw_disk};

const GUEST_BIN: &str = env!("CARGO_BIN_EXE_guest-tests");

fn run(name: &str, disk: &std::path::Path, args: &[&str]) -> GuestOutput {
    let out = Guest::builder()
        .name(name)
        .binary(GUEST_BIN, args)
        .executable("/sbin/mke2fs", "sbin/mkfs.ext4")
        .env("CONSTELLATION_GUEST_TESTS", "1")
        // No udev in the guest: libdevmapper creates /dev/mapper nodes itself.
        .env("DM_DISABLE_UDEV", "1")
        .disk(disk)
        .memory_mib(768)
        .timeout(Duration::from_secs(900))
        .boot()
        .expect("boot guest");
    assert!(
        out.success(),
        "guest {name} failed (exit {:?}):\n{}\n--- qemu stderr:\n{}",
        out.exit_code,
        out.serial_log,
        out.qemu_stderr
    );
    out
}

fn checks(out: &GuestOutput) -> Vec<String> {
    out.serial_log
        .lines()
        .filter_map(|l| l.trim().strip_prefix("GUEST-CHECK ").map(str::to_owned))
        .collect()
}

#[test]
fn luks2_state_disk_survives_reboot_and_refuses_wrong_key() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("state.raw");
    // Small: formatting with integrity writes every sector once (slow under TCG).
    create_raw_disk(&disk, 64).unwrap();
    let master = hex::encode(rand_bytes());
    let salt = hex::encode(rand_bytes());

    let first = run(
        "g-disk-boot1",
        &disk,
        &["disk-init", "/dev/vda", &master, &salt, "/mnt/state"],
    );
    let c = checks(&first);
    for want in [
        "luks2-format ok",
        "prepare-idempotent ok",
        "mount-write ok",
        "endpoints-token-written ok",
        "rekey ok",
        "second-rekey-refused ok",
        "wrong-key-refused-while-open ok",
        "close ok",
    ] {
        assert!(c.iter().any(|l| l == want), "missing {want:?} in {c:?}");
    }
    let uuid = first
        .serial_log
        .lines()
        .find_map(|l| l.trim().strip_prefix("GUEST-UUID="))
        .expect("uuid line")
        .to_string();

    let second = run(
        "g-disk-boot2",
        &disk,
        &[
            "disk-reboot",
            "/dev/vda",
            &master,
            &salt,
            "/mnt/state",
            &uuid,
        ],
    );
    let c = checks(&second);
    for want in [
        "locked-after-reboot ok",
        "endpoints-readable-while-locked ok",
        "uuid-stable ok",
        "wrong-key-refused ok",
        "unlock-derived-key ok",
        "data-survived-reboot ok",
    ] {
        assert!(c.iter().any(|l| l == want), "missing {want:?} in {c:?}");
    }

    // At rest: a LUKS2 header, and the file's plaintext nowhere on the disk.
    let bytes = std::fs::read(&disk).unwrap();
    assert_eq!(bytes.get(..6), Some(&b"LUKS\xba\xbe"[..]), "no LUKS magic");
    assert_eq!(bytes.get(6..8), Some(&[0u8, 2][..]), "not LUKS version 2");
    let needle = b"constellation state written before reboot";
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle),
        "plaintext of the state file found on the raw disk"
    );
    // The derived key never reaches the serial console.
    assert!(!first.serial_log.contains(&master) && !second.serial_log.contains(&master));
}

/// The host rewrites the LUKS2 header (both copies, checksums fixed): a keyslot whose area
/// cipher is `cipher_null` and holds the volume key in plaintext (opens with any passphrase
/// in libcryptsetup 2.6.1), and separately a data segment without integrity. The right and a
/// wrong key must both be refused with a header-policy error naming the field, and no
/// `/dev/mapper/state` may exist afterwards; the genuine header, restored, unlocks again.
#[test]
fn altered_luks2_header_is_refused_before_unlock() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("state.raw");
    create_raw_disk(&disk, 64).unwrap();
    let master = hex::encode(rand_bytes());
    let salt = hex::encode(rand_bytes());
    let out = run(
        "g-disk-tamper",
        &disk,
        &["disk-tamper", "/dev/vda", &master, &salt, "/mnt/state"],
    );
    for l in out.serial_log.lines().filter(|l| l.contains("GUEST-INFO")) {
        eprintln!("{}", l.trim());
    }
    let c = checks(&out);
    for want in [
        "tamper-setup ok",
        "null-cipher-keyslot-refused ok",
        "segment-without-integrity-refused ok",
        "genuine-header-unlocks ok",
    ] {
        assert!(c.iter().any(|l| l == want), "missing {want:?} in {c:?}");
    }
    assert!(!out.serial_log.contains(&master));
}

fn rand_bytes() -> [u8; 32] {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}
