//! An interrupted, timed-out or killed create of `constellation_cluster` leaks nothing: the
//! real terraform CLI and provider, one QEMU control plane booting the node image from
//! `CONSTELLATION_TEST_IMAGE_DIR` (skipped without it).
//!
//! One test function runs the three cases in sequence (each VM boot under TCG takes about a
//! minute on a shared 2-core machine).

#![allow(clippy::unwrap_used)] // Test set-up: a failed step should stop the test loudly.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use acceptance::{Install, ProviderBinary, Workspace, process_group_members, require_terraform};

const SOURCE: &str = "registry.terraform.io/constellation-rs/constellation";

fn hcl(image: &Path, timeout: &str) -> String {
    format!(
        r#"
terraform {{
  required_providers {{
    constellation = {{ source = "{SOURCE}" }}
  }}
}}
data "constellation_image" "local" {{
  path = "{image}"
}}
data "constellation_attestation" "local" {{
  variant      = "qemu-vtpm"
  measurements = data.constellation_image.local.measurements
}}
resource "constellation_cluster" "local" {{
  name                = "intr"
  image_reference     = data.constellation_image.local.reference
  attestation_config  = data.constellation_attestation.local.config_json
  control_plane_count = 1
  worker_count        = 0
  cloud {{
    qemu {{
      vcpus          = 1
      memory_mib     = 1024
      state_disk_mib = 256
    }}
  }}
  timeouts {{
    create = "{timeout}"
  }}
}}
"#,
        image = image.display()
    )
}

/// Pids of processes (other than this test) whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) && !cmd.contains("cargo") && pid != std::process::id() as i32 {
            out.push(pid);
        }
    }
    out
}

fn qemus(dir: &Path) -> Vec<i32> {
    processes_mentioning(&dir.join(".constellation/intr").display().to_string())
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("qemu-system"))
        })
        .collect()
}

/// Kills every VM process of the workspace when dropped.
struct Reaper(String);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in processes_mentioning(&self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn assert_nothing_left(ws: &Workspace) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !processes_mentioning(&ws.dir().join(".constellation").display().to_string()).is_empty()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let left = processes_mentioning(&ws.dir().join(".constellation").display().to_string());
    assert!(left.is_empty(), "processes left: {left:?}");
    assert!(
        !ws.dir().join(".constellation/intr").exists(),
        "files of the cluster left"
    );
}

/// Starts `terraform apply`, lets the create run for `after`, then calls `stop` on it.
fn apply_for(ws: &Workspace, after: Duration) -> acceptance::Running {
    let run = ws
        .spawn(&["apply", "-auto-approve", "-input=false", "-no-color"])
        .unwrap();
    std::thread::sleep(after);
    run
}

#[test]
fn interrupted_timed_out_and_killed_creates_leak_nothing() {
    let tf = require_terraform!();
    let Some(image) = std::env::var_os("CONSTELLATION_TEST_IMAGE_DIR").map(PathBuf::from) else {
        eprintln!("SKIPPED: CONSTELLATION_TEST_IMAGE_DIR is not set");
        return;
    };
    let built = ProviderBinary::cargo_bin(
        "terraform-provider-constellation",
        "terraform-provider-constellation",
        SOURCE,
    )
    .unwrap();
    // A private copy: a rebuild in the shared target directory during the test would no
    // longer match the checksums `terraform init` locked.
    let copy = tempfile::tempdir().unwrap();
    let exe = copy.path().join(built.path.file_name().unwrap());
    std::fs::copy(&built.path, &exe).unwrap();
    let p = ProviderBinary::from_path(&exe, SOURCE).unwrap();
    let mut ws = Workspace::new(&tf, &[&p], Install::Mirror).unwrap();
    ws.set_timeout(Duration::from_secs(1200));
    let _reaper = Reaper(ws.root().display().to_string());
    ws.write("main.tf", &hcl(&image, "25m")).unwrap();
    ws.init().unwrap().assert_success();

    // (a) SIGINT 20 s into the create: terraform exits within 30 s with the cluster tainted.
    let run = apply_for(&ws, Duration::from_secs(20));
    assert!(!qemus(ws.dir()).is_empty(), "the VM runs 20 s in");
    let t = Instant::now();
    run.interrupt().unwrap();
    let out = run.wait(Duration::from_secs(30)).unwrap();
    eprintln!("(a) terraform exited {:?} after the interrupt", t.elapsed());
    out.assert_failure();
    let list = ws.run(&["state", "list"]).unwrap();
    assert!(
        list.stdout.contains("constellation_cluster.local"),
        "{}",
        list.combined()
    );
    assert!(ws.state_raw().unwrap().contains("tainted"));
    ws.destroy().unwrap().assert_success();
    assert_nothing_left(&ws);

    // (b) the same through `timeouts.create`.
    ws.write("main.tf", &hcl(&image, "30s")).unwrap();
    let t = Instant::now();
    let out = ws.apply().unwrap();
    eprintln!(
        "(b) create with a 30 s timeout returned after {:?}",
        t.elapsed()
    );
    out.assert_failure();
    assert!(t.elapsed() < Duration::from_secs(90), "{}", out.combined());
    assert!(ws.state_raw().unwrap().contains("tainted"));
    ws.destroy().unwrap().assert_success();
    assert_nothing_left(&ws);

    // (c) the provider is killed mid-create: nothing is recorded; the next apply removes the
    // leftover before it creates (never a second cluster beside it), destroy removes the rest.
    ws.write("main.tf", &hcl(&image, "25m")).unwrap();
    let run = apply_for(&ws, Duration::from_secs(20));
    let leaked = qemus(ws.dir());
    assert_eq!(leaked.len(), 1, "one VM runs 20 s in");
    let provider: Vec<i32> = process_group_members(run.pgid())
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c).contains("terraform-provider-constellation")
            })
        })
        .collect();
    assert_eq!(provider.len(), 1, "{provider:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(provider[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (out, _group) = run.wait_leader(Duration::from_secs(60)).unwrap();
    out.assert_failure();
    assert!(
        !ws.state_raw()
            .unwrap_or_default()
            .contains("constellation_cluster")
    );
    assert_eq!(qemus(ws.dir()), leaked, "the killed create's VM is left");
    let next = ws
        .spawn(&["apply", "-auto-approve", "-input=false", "-no-color"])
        .unwrap();
    // Never two clusters at once: the leaked VM is gone before a new one starts.
    let deadline = Instant::now() + Duration::from_secs(1200);
    let mut replaced = false;
    while Instant::now() < deadline && process_group_members(next.pgid()).contains(&next.pgid()) {
        let now = qemus(ws.dir());
        assert!(now.len() <= 1, "two clusters' VMs at once: {now:?}");
        if now.len() == 1 && now != leaked {
            replaced = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = next.wait(Duration::from_secs(60)).unwrap();
    out.assert_success();
    assert!(replaced, "a fresh VM replaced the leaked one");
    ws.destroy().unwrap().assert_success();
    assert_nothing_left(&ws);
}
