//! `/init` of the node image: mounts the kernel's API file systems, loads the kernel modules
//! listed in `/lib/modules/<release>/modules.load` and replaces itself (keeping PID 1) with the
//! node agent `/usr/bin/constellation-node`. No shell is involved.
//!
//! Test hook: with `constellation.dump_tpm=1` on the kernel command line it prints the SHA-256
//! PCR bank and the firmware's TCG event log to the console and powers off instead. That flag
//! lives in the UKI's measured `.cmdline`, so an image built with it can never produce the
//! production image's PCR 11 and pass attestation as one.

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::kmod::{ModuleInitFlags, finit_module};
use nix::mount::{MsFlags, mount};

const AGENT: &str = "/usr/bin/constellation-node";

fn mount_fs(source: &str, target: &str, fstype: &str, flags: MsFlags) {
    if let Err(e) = fs::create_dir_all(target) {
        eprintln!("init: mkdir {target}: {e}");
    }
    if let Err(e) = mount(Some(source), target, Some(fstype), flags, None::<&str>) {
        eprintln!("init: mount {fstype} on {target}: {e}");
    }
}

fn load_modules() {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let dir = format!("/lib/modules/{}", release.trim());
    let list = fs::read_to_string(format!("{dir}/modules.load")).unwrap_or_default();
    for rel in list.lines().filter(|l| !l.is_empty()) {
        let path = format!("{dir}/{rel}");
        let result = fs::File::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|f| {
                finit_module(&f, c"", ModuleInitFlags::empty()).map_err(|e| e.to_string())
            });
        // EEXIST: already loaded; ENODEV: hardware absent (e.g. AES-NI) — both harmless.
        if let Err(e) = result {
            eprintln!("init: module {rel}: {e}");
        }
    }
}

fn dump_tpm() {
    for i in 0..24 {
        if let Ok(v) = fs::read_to_string(format!("/sys/class/tpm/tpm0/pcr-sha256/{i}")) {
            println!("PCR-SHA256 {i} {}", v.trim().to_ascii_lowercase());
        }
    }
    match fs::read("/sys/kernel/security/tpm0/binary_bios_measurements") {
        Ok(log) => {
            for chunk in log.chunks(256) {
                println!("EVENTLOG {}", hex::encode(chunk));
            }
        }
        Err(e) => println!("EVENTLOG-ERROR {e}"),
    }
    println!("TPM-DUMP-END");
    // The serial driver transmits asynchronously; wait until everything is on the wire before
    // powering off.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let _ = nix::sys::termios::tcdrain(std::io::stdout());
}

fn main() {
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", "/proc", "proc", nodev);
    mount_fs("sysfs", "/sys", "sysfs", nodev);
    mount_fs("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID);
    mount_fs("securityfs", "/sys/kernel/security", "securityfs", nodev);
    mount_fs(
        "tmpfs",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    );
    mount_fs(
        "tmpfs",
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    );
    // Marks the end of the kernel's own boot for the boot-time bench (image/benches).
    println!("init: loading modules");
    load_modules();

    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if cmdline
        .split_whitespace()
        .any(|a| a == "constellation.dump_tpm=1")
    {
        dump_tpm();
        let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
        return;
    }
    println!("init: starting {AGENT}");
    // The kernel starts PID 1 without PATH. No udev in the image: libdevmapper must create
    // the /dev/mapper nodes itself (DM_DISABLE_UDEV).
    let err = Command::new(AGENT)
        .args(std::env::args_os().skip(1))
        .env("PATH", "/usr/sbin:/usr/bin")
        .env("DM_DISABLE_UDEV", "1")
        .exec();
    eprintln!("init: cannot execute {AGENT}: {err}");
    std::process::exit(1);
}
