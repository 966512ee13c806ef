//! `constellation_cluster` and `constellation_cluster_verification` end to end: the real
//! terraform CLI, the real provider, QEMU VMs with OVMF and swtpm booting the real node image.
//!
//! The image comes from `make image` (`scripts/test.sh` builds it and sets
//! `CONSTELLATION_TEST_IMAGE_DIR`; `CONSTELLATION_TEST_TAMPERED_IMAGE_DIR` is the same image with
//! one file added to the initramfs). Without the variable the VM tests are skipped (a
//! failure under `CI=true`); the configuration checks run everywhere.
//!
//! VM tests run one at a time (a 2-core machine emulates every VM with TCG) and a guard kills
//! any QEMU/swtpm left behind by a failing test.

#![allow(clippy::unwrap_used)] // Test set-up: a failed step should stop the test loudly.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use acceptance::{Install, ProviderBinary, TfOutput, Workspace, require_terraform, workspace_root};
use serde_json::Value;

const SOURCE: &str = "registry.terraform.io/constellation-rs/constellation";
/// Serialises the VM tests of this binary.
static VMS: Mutex<()> = Mutex::new(());

fn provider() -> ProviderBinary {
    ProviderBinary::cargo_bin(
        "terraform-provider-constellation",
        "terraform-provider-constellation",
        SOURCE,
    )
    .expect("building terraform-provider-constellation")
}

fn image_dir(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(d) => {
            let d = PathBuf::from(d);
            assert!(
                d.join("disk.raw").is_file(),
                "{var}={} holds no disk.raw",
                d.display()
            );
            Some(d)
        }
        None => {
            acceptance::testkit::skip_current(
                &format!("{var} is not set"),
                "scripts/test.sh builds the node image and sets it",
            );
            None
        }
    }
}

/// Copies an image directory (so a test can swap its disk without touching the original).
fn copy_image(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["disk.raw", "manifest.json", "measurements.json"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

/// Processes (pid, command line) whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<(i32, String)> {
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
            out.push((pid, cmd));
        }
    }
    out
}

/// Kills every VM process of the workspace when dropped (a failed test must not leak VMs).
struct Reaper(String);

impl Drop for Reaper {
    fn drop(&mut self) {
        for (pid, _) in processes_mentioning(&self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

struct Cluster {
    workers: u32,
    control_planes: u32,
    secret: Option<String>,
    extra: String,
}

impl Cluster {
    fn hcl(&self, image: &Path) -> String {
        let secret = self.secret.as_ref().map_or(String::new(), |s| {
            format!("master_secret_wo = \"{s}\"\n  master_secret_wo_version = 1\n")
        });
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
  name                = "acc"
  image_reference     = data.constellation_image.local.reference
  attestation_config  = data.constellation_attestation.local.config_json
  control_plane_count = {cps}
  worker_count        = {workers}
  {secret}
  cloud {{
    qemu {{
      vcpus          = 1
      memory_mib     = 1024
      state_disk_mib = 256
    }}
  }}
  timeouts {{
    create = "25m"
    update = "25m"
  }}
}}

data "constellation_cluster_verification" "cp" {{
  endpoint           = constellation_cluster.local.verification_endpoint
  attestation_config = data.constellation_attestation.local.config_json
  cluster_id         = constellation_cluster.local.cluster_id
}}

output "cluster_id" {{
  value = constellation_cluster.local.cluster_id
}}

output "nodes" {{
  value = constellation_cluster.local.nodes
}}

output "verified" {{
  value = data.constellation_cluster_verification.cp.verified
}}

output "verified_pcr15" {{
  value = data.constellation_cluster_verification.cp.measurements["15"]
}}
{extra}
"#,
            image = image.display(),
            cps = self.control_planes,
            workers = self.workers,
            extra = self.extra,
        )
    }
}

fn vm_workspace(tf: &acceptance::Terraform) -> (Workspace, Reaper) {
    let p = provider();
    let mut ws = Workspace::new(tf, &[&p], Install::Mirror).unwrap();
    ws.set_timeout(Duration::from_secs(1800));
    let reaper = Reaper(ws.root().display().to_string());
    (ws, reaper)
}

fn nodes(ws: &Workspace) -> Vec<Value> {
    ws.outputs().unwrap()["nodes"]["value"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn names(nodes: &[Value]) -> Vec<String> {
    nodes
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_owned())
        .collect()
}

fn assert_all_joined(nodes: &[Value], version: &str) {
    for n in nodes {
        assert_eq!(n["joined"], true, "{n}");
        assert_eq!(n["image_version"], version, "{n}");
    }
}

fn must(out: TfOutput) -> TfOutput {
    out.assert_success();
    out
}

#[test]
fn invalid_configuration_is_refused_at_the_attribute_without_vms() {
    let tf = require_terraform!();
    let p = provider();
    let ws = Workspace::new(&tf, &[&p], Install::Mirror).unwrap();
    // A syntactically complete image directory (nothing boots here).
    let image = ws.root().join("image");
    std::fs::create_dir_all(&image).unwrap();
    std::fs::write(image.join("disk.raw"), b"disk").unwrap();
    std::fs::write(
        image.join("manifest.json"),
        r#"{"version":"0.1.0","diskSha256":"00","kubernetes":null}"#,
    )
    .unwrap();
    std::fs::write(
        image.join("measurements.json"),
        format!(
            r#"{{"4":{{"expected":"{}","warnOnly":false}}}}"#,
            "ab".repeat(32)
        ),
    )
    .unwrap();
    let base = Cluster {
        workers: 1,
        control_planes: 1,
        secret: None,
        extra: String::new(),
    }
    .hcl(&image);
    ws.write("main.tf", &base).unwrap();
    must(ws.init().unwrap());

    let cases: Vec<(String, &str, &str)> = vec![
        (
            base.replace(
                "cloud {\n",
                "network = { node_cidr = \"10.42.0.1/24\" }\n  cloud {\n",
            ),
            "Invalid CIDR",
            "network",
        ),
        (
            base.replace("control_plane_count = 1", "control_plane_count = 0"),
            "Invalid control plane count",
            "control_plane_count",
        ),
        (
            base.replace("worker_count        = 1", "worker_count        = -1"),
            "Invalid worker count",
            "worker_count",
        ),
        (
            base.replace(
                "variant      = \"qemu-vtpm\"",
                "variant      = \"qemu-sev\"",
            ),
            "Unknown attestation variant",
            "variant",
        ),
        (
            base.replace(&image.display().to_string(), "/nonexistent/image"),
            "Image not found",
            "path",
        ),
        (
            base.replace(
                "data.constellation_image.local.reference",
                "\"/nonexistent/disk.raw\"",
            ),
            "Image missing",
            "image_reference",
        ),
        (
            base.replace("qemu {\n", "qemu {\n      accel = \"hvf\"\n"),
            "Invalid accelerator",
            "accel",
        ),
        (
            base.replace("create = \"25m\"", "create = \"soon\""),
            "Invalid timeout",
            "create",
        ),
    ];
    for (hcl, summary, attr) in cases {
        ws.write("main.tf", &hcl).unwrap();
        let out = ws.plan().unwrap();
        out.assert_failure();
        let errors = out.errors();
        let hit = errors
            .iter()
            .find(|e| e["summary"].as_str().is_some_and(|s| s.contains(summary)));
        let hit = hit.unwrap_or_else(|| panic!("no {summary:?} in {errors:#?}"));
        // Terraform shows the source of the attribute the diagnostic points at.
        let code = hit["snippet"]["code"].as_str().unwrap_or_default();
        assert!(
            code.contains(attr),
            "{summary}: points at {code:?}, want {attr}"
        );
        assert!(
            !ws.dir().join(".constellation").exists(),
            "{summary}: a failed plan must not create anything"
        );
        assert!(processes_mentioning(&ws.root().display().to_string()).is_empty());
    }
}

/// examples/local (1 control plane + 2 workers) with a write-only master secret; verification; stable plans;
/// scale 2 → 3 → 1; a crashed worker boots again from its disks and rejoins, a vanished one is
/// replaced; after a whole-host power loss apply recovers the cluster; a worker booted from a
/// tampered image is refused naming the PCR; import, then a scale-up of the imported cluster;
/// destroy leaves nothing.
#[test]
fn local_cluster_lifecycle() {
    let tf = require_terraform!();
    let Some(good) = image_dir("CONSTELLATION_TEST_IMAGE_DIR") else {
        return;
    };
    let tampered = image_dir("CONSTELLATION_TEST_TAMPERED_IMAGE_DIR");
    let _serial = VMS.lock().unwrap_or_else(|p| p.into_inner());
    let (mut ws, _reaper) = vm_workspace(&tf);
    let image = ws.root().join("image");
    copy_image(&good, &image);
    let version: Value =
        serde_json::from_slice(&std::fs::read(image.join("manifest.json")).unwrap()).unwrap();
    let version = version["version"].as_str().unwrap().to_owned();
    let secret = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e7c0de".to_string();
    // examples/local exactly as a user runs it, plus a write-only master secret (an override
    // file), the image copy and the worker count (tfvars) and one extra output.
    let example = std::fs::read_to_string(workspace_root().join("examples/local/main.tf")).unwrap();
    ws.write("main.tf", &example).unwrap();
    ws.write(
        "main_override.tf",
        &format!(
            "resource \"constellation_cluster\" \"local\" {{\n  master_secret_wo         = \"{secret}\"\n  master_secret_wo_version = 1\n}}\n"
        ),
    )
    .unwrap();
    ws.write(
        "test.tf",
        "output \"verified_pcr15\" {\n  value = data.constellation_cluster_verification.control_plane.measurements[\"15\"]\n}\n",
    )
    .unwrap();
    let set_workers = |ws: &Workspace, n: u32| {
        ws.write(
            "terraform.tfvars",
            &format!(
                "image_dir    = \"{}\"\nworker_count = {n}\n",
                image.display()
            ),
        )
        .unwrap();
    };
    set_workers(&ws, 2);
    must(ws.init().unwrap());
    let trace = ws.root().join("trace.log");
    ws.set_env("TF_LOG", "trace");
    ws.set_env("TF_LOG_PATH", &trace.display().to_string());
    // An unauthenticated neighbour floods the first control plane (idle connections and bogus
    // requests on every forwarded port) while the provider initialises the cluster and the
    // workers join through it.
    let cp0_dir = ws
        .dir()
        .canonicalize()
        .unwrap()
        .join(".constellation/demo/nodes/demo-cp-0");
    let flood = acceptance::flood::Flooder::start(&cp0_dir.display().to_string());
    let apply = must(ws.apply().unwrap());
    let flood = flood.stop();
    assert!(
        flood.ports.len() >= 4 && flood.idle_connections > 0 && flood.bogus_requests > 0,
        "the flood did not reach the first control plane: {flood:?}"
    );
    eprintln!("apply succeeded under a flood: {flood:?}");

    // Verified, with the cluster's ID; the state holds the nodes.
    let out = ws.outputs().unwrap();
    assert_eq!(out["verified"]["value"], true);
    let id = out["cluster_id"]["value"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 64);
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update([0u8; 32]);
    h.update(sha2::Sha256::digest(hex::decode(&id).unwrap()));
    assert_eq!(out["verified_pcr15"]["value"], hex::encode(h.finalize()));
    let n = nodes(&ws);
    assert_eq!(names(&n), ["demo-cp-0", "demo-worker-0", "demo-worker-1"]);
    assert_eq!(n[0]["role"], "control-plane");
    assert_eq!(n[1]["role"], "worker");
    assert_all_joined(&n, &version);

    // The write-only secret is nowhere: state, plan output, trace log, serial consoles.
    let plan = must(ws.plan().unwrap());
    assert!(plan.no_changes(), "{}", plan.stdout);
    let work = ws.dir().join(".constellation/demo");
    let mut haystacks = vec![
        ("terraform.tfstate", ws.state_raw().unwrap()),
        ("apply output", apply.combined()),
        ("plan output", plan.combined()),
        ("TF_LOG=trace", std::fs::read_to_string(&trace).unwrap()),
    ];
    for node in ["demo-cp-0", "demo-worker-0", "demo-worker-1"] {
        let log = work.join("nodes").join(node).join("serial.log");
        haystacks.push((
            "serial log",
            String::from_utf8_lossy(&std::fs::read(log).unwrap()).into_owned(),
        ));
    }
    for (what, text) in &haystacks {
        assert!(
            !text.contains(&secret),
            "the master secret leaked into the {what}"
        );
        assert!(!text.to_lowercase().contains(&secret[..24]), "{what}");
    }
    ws.set_env("TF_LOG", "");

    // Scale 2 → 3 → 1.
    set_workers(&ws, 3);
    must(ws.apply().unwrap());
    let n = nodes(&ws);
    assert_eq!(
        names(&n),
        [
            "demo-cp-0",
            "demo-worker-0",
            "demo-worker-1",
            "demo-worker-2"
        ]
    );
    assert_all_joined(&n, &version);
    set_workers(&ws, 1);
    must(ws.apply().unwrap());
    let n = nodes(&ws);
    assert_eq!(names(&n), ["demo-cp-0", "demo-worker-0"]);
    assert!(!work.join("nodes/demo-worker-2").exists());
    let plan = must(ws.plan().unwrap());
    assert!(plan.no_changes(), "{}", plan.stdout);

    // Kill the worker's QEMU (a crash): drift in the next plan; apply boots the same machine
    // again from its kept disks and it rejoins (same name, same state disk).
    let kill_qemu = |node: &str| {
        let pid: i32 = std::fs::read_to_string(work.join("nodes").join(node).join("qemu.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        std::thread::sleep(Duration::from_secs(1));
    };
    let serial = |node: &str| {
        String::from_utf8_lossy(
            &std::fs::read(work.join("nodes").join(node).join("serial.log")).unwrap(),
        )
        .into_owned()
    };
    // The console is a slow serial line: a log line may arrive after the apply that waited
    // for the state it reports (PCR 15 is extended before the line is written).
    let wait_serial = |node: &str, needle: &str| {
        let t0 = std::time::Instant::now();
        while !serial(node).contains(needle) {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{node}'s console never showed {needle:?}:\n{}",
                serial(node)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    kill_qemu("demo-worker-0");
    let plan = must(ws.plan().unwrap());
    assert!(!plan.no_changes(), "a dead worker must show as drift");
    assert!(
        !plan.messages_of("resource_drift").is_empty(),
        "terraform reports the change outside of Terraform: {}",
        plan.stdout
    );
    assert!(
        plan.combined().contains("Nodes are not running"),
        "{}",
        plan.combined()
    );
    assert_eq!(
        plan.change_summary().unwrap()["change"],
        1,
        "{}",
        plan.stdout
    );
    must(ws.apply().unwrap());
    let n = nodes(&ws);
    assert_eq!(names(&n), ["demo-cp-0", "demo-worker-0"]);
    assert_all_joined(&n, &version);
    // The restarted worker rejoined with its own disk.
    wait_serial("demo-worker-0", "rejoined the cluster");
    let plan = must(ws.plan().unwrap());
    assert!(plan.no_changes(), "{}", plan.stdout);

    // A worker whose machine is gone for good (disks too) is replaced by a new one.
    kill_qemu("demo-worker-0");
    std::fs::remove_dir_all(work.join("nodes/demo-worker-0")).unwrap();
    let plan = must(ws.plan().unwrap());
    assert_eq!(
        plan.change_summary().unwrap()["change"],
        1,
        "{}",
        plan.stdout
    );
    must(ws.apply().unwrap());
    let n = nodes(&ws);
    // Worker numbers are never reused: the replacement is number 3.
    assert_eq!(names(&n), ["demo-cp-0", "demo-worker-3"]);
    assert!(!work.join("nodes/demo-worker-0").exists());
    assert_all_joined(&n, &version);

    // A member is listed once its ticket is issued; the node sets up its disk right after.
    // Let it finish before pulling the plug (a node killed mid-join formats again and joins
    // anew, which is correct but not what this part tests).
    wait_serial("demo-worker-3", "joined the cluster");

    // Power loss of the whole host: every QEMU and swtpm dies. The cluster stays in state;
    // apply boots all machines from their disks, recovers the control plane with the
    // (write-only) master secret after it attested, and the worker rejoins through it.
    for (pid, _) in processes_mentioning(&work.display().to_string()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    let plan = must(ws.plan().unwrap());
    let text = plan.combined();
    assert!(
        text.contains("Nodes are not running") && text.contains("recovered"),
        "{text}"
    );
    let summary = plan.change_summary().unwrap();
    assert_eq!(summary["change"], 1, "{}", plan.stdout);
    assert_eq!(summary["remove"], 0, "{}", plan.stdout);
    assert_eq!(summary["add"], 0, "{}", plan.stdout);
    must(ws.apply().unwrap());
    let out = ws.outputs().unwrap();
    assert_eq!(out["verified"]["value"], true);
    assert_eq!(
        out["cluster_id"]["value"],
        id.as_str(),
        "the same cluster came back"
    );
    let n = nodes(&ws);
    assert_eq!(names(&n), ["demo-cp-0", "demo-worker-3"]);
    assert_all_joined(&n, &version);
    wait_serial("demo-cp-0", "recovered: state disk unlocked");
    wait_serial("demo-worker-3", "rejoined the cluster");
    let plan = must(ws.plan().unwrap());
    assert!(plan.no_changes(), "{}", plan.stdout);
    for node in ["demo-cp-0", "demo-worker-3"] {
        assert!(
            !serial(node).contains(&secret),
            "secret in {node}'s console"
        );
    }

    // A worker booted from a tampered image is refused at join, naming the PCR. The disk is
    // swapped by rename, so the running VMs keep the original.
    if let Some(bad) = &tampered {
        let tmp = image.join("disk.raw.tmp");
        std::fs::copy(bad.join("disk.raw"), &tmp).unwrap();
        std::fs::rename(&tmp, image.join("disk.raw")).unwrap();
        set_workers(&ws, 2);
        // The attestation config still comes from the good image's measurements.
        std::fs::copy(
            good.join("measurements.json"),
            image.join("measurements.json"),
        )
        .unwrap();
        let out = ws.apply().unwrap();
        out.assert_failure();
        let text = out.combined();
        assert!(text.contains("refused at join"), "{text}");
        assert!(
            text.contains("PCR 9") || text.contains("pcr 9") || text.contains("[9]"),
            "the PCR is named: {text}"
        );
        // The refused VM was removed again; the cluster is as before.
        assert!(!work.join("nodes/demo-worker-4").exists());
        std::fs::copy(good.join("disk.raw"), &tmp).unwrap();
        std::fs::rename(&tmp, image.join("disk.raw")).unwrap();
        set_workers(&ws, 1);
        let plan = must(ws.plan().unwrap());
        assert!(plan.no_changes(), "{}", plan.stdout);
        assert_eq!(names(&nodes(&ws)), ["demo-cp-0", "demo-worker-3"]);
    }

    // Import by the working directory (no secret in the ID), then no changes.
    let id_attr = ws
        .resource_values("constellation_cluster.local")
        .unwrap()
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!id_attr.contains(&secret));
    must(
        ws.run(&["state", "rm", "-no-color", "constellation_cluster.local"])
            .unwrap(),
    );
    must(ws.import("constellation_cluster.local", &id_attr).unwrap());
    let plan = must(ws.plan().unwrap());
    assert!(plan.no_changes(), "after import: {}", plan.stdout);
    let n = nodes(&ws);
    assert_all_joined(&n, &version);

    // The imported cluster is fully manageable: with the master secret in the configuration
    // the owner credential is derived again, and a scale-up applies and the new worker joins.
    set_workers(&ws, 2);
    must(ws.apply().unwrap());
    let n = nodes(&ws);
    let names_after = names(&n);
    assert_eq!(names_after.len(), 3, "{names_after:?}");
    assert_eq!(names_after[..2], ["demo-cp-0", "demo-worker-3"]);
    let added = names_after[2].clone();
    assert!(
        added.starts_with("demo-worker-") && added != "demo-worker-3",
        "{names_after:?}"
    );
    assert_all_joined(&n, &version);
    wait_serial(&added, "joined the cluster");
    let plan = must(ws.plan().unwrap());
    assert!(plan.no_changes(), "after scale-up: {}", plan.stdout);

    // Destroy: no process, nothing left of the cluster directory.
    must(ws.destroy().unwrap());
    assert!(!work.exists(), "{} survived destroy", work.display());
    assert!(
        !ws.dir().join(".constellation").exists(),
        "an empty .constellation directory survived destroy"
    );
    let left = processes_mentioning(&ws.root().display().to_string());
    assert!(left.is_empty(), "processes left after destroy: {left:?}");
}

/// A first control plane that boots a tampered image fails attestation: Init is never sent,
/// so the master secret never leaves the provider, and nothing is left behind.
#[test]
fn tampered_first_control_plane_never_gets_init() {
    let tf = require_terraform!();
    let (Some(good), Some(bad)) = (
        image_dir("CONSTELLATION_TEST_IMAGE_DIR"),
        image_dir("CONSTELLATION_TEST_TAMPERED_IMAGE_DIR"),
    ) else {
        return;
    };
    let _serial = VMS.lock().unwrap_or_else(|p| p.into_inner());
    let (ws, _reaper) = vm_workspace(&tf);
    let image = ws.root().join("image");
    copy_image(&bad, &image);
    // Expectations from the good image: the tampered initramfs shows in PCR 9.
    std::fs::copy(
        good.join("measurements.json"),
        image.join("measurements.json"),
    )
    .unwrap();
    ws.write(
        "main.tf",
        &Cluster {
            workers: 0,
            control_planes: 1,
            secret: None,
            extra: String::new(),
        }
        .hcl(&image),
    )
    .unwrap();
    must(ws.init().unwrap());
    let out = ws.apply().unwrap();
    out.assert_failure();
    let text = out.combined();
    assert!(text.contains("failed attestation"), "{text}");
    assert!(
        text.contains("PCR 9") || text.contains("[9]") || text.contains("pcr 9"),
        "{text}"
    );
    let serial = ws
        .dir()
        .join(".constellation/acc/nodes/acc-cp-0/serial.log");
    let log = String::from_utf8_lossy(&std::fs::read(&serial).unwrap()).into_owned();
    // The Init service logs under its module path; nothing of it may appear.
    assert!(
        !log.contains("services::init"),
        "Init must never reach the node: {log}"
    );
    // The failed create is kept in state (tainted), so destroy removes it entirely.
    let state = ws.state_raw().unwrap();
    assert!(
        state.contains("acc-cp-0") && state.contains("tainted"),
        "{state}"
    );
    must(ws.destroy().unwrap());
    assert!(!ws.dir().join(".constellation/acc").exists());
    assert!(processes_mentioning(&ws.dir().display().to_string()).is_empty());
}

/// Changing `image_reference` upgrades in place, one node at a time (control planes first):
/// while the attestation config still names the old image the new node is refused and
/// removed again, the cluster untouched; with the new image's measurements every node is
/// replaced, the cluster keeps its ID and verifies against the new measurements.
///
/// Then `control_plane_count` 1 → 2 → 1 in place: the new control plane joins and serves, the
/// newest goes again.
///
/// The second image is the test's "tampered" build (one extra initramfs file) with its own
/// `measurements.json`: a different, honestly measured image, exactly what an upgrade is.
#[test]
fn rolling_image_upgrade() {
    let tf = require_terraform!();
    let (Some(v1), Some(v2)) = (
        image_dir("CONSTELLATION_TEST_IMAGE_DIR"),
        image_dir("CONSTELLATION_TEST_TAMPERED_IMAGE_DIR"),
    ) else {
        return;
    };
    let _serial = VMS.lock().unwrap_or_else(|p| p.into_inner());
    let (ws, _reaper) = vm_workspace(&tf);
    let (img1, img2) = (ws.root().join("image-v1"), ws.root().join("image-v2"));
    copy_image(&v1, &img1);
    copy_image(&v2, &img2);
    let cluster = Cluster {
        workers: 1,
        control_planes: 1,
        secret: None,
        extra: String::new(),
    };
    ws.write("main.tf", &cluster.hcl(&img1)).unwrap();
    must(ws.init().unwrap());
    must(ws.apply().unwrap());
    let id = ws.outputs().unwrap()["cluster_id"]["value"].clone();
    assert_eq!(names(&nodes(&ws)), ["acc-cp-0", "acc-worker-0"]);

    // The plan is an in-place update, not a replacement.
    ws.write("main.tf", &cluster.hcl(&img2)).unwrap();
    let plan = must(ws.plan().unwrap());
    let summary = plan.change_summary().unwrap();
    assert_eq!(summary["change"], 1, "{}", plan.stdout);
    assert_eq!(summary["remove"], 0, "{}", plan.stdout);

    // New image, old measurements: the first replacement is refused and rolled back.
    let good_measurements = std::fs::read(img2.join("measurements.json")).unwrap();
    std::fs::copy(
        img1.join("measurements.json"),
        img2.join("measurements.json"),
    )
    .unwrap();
    let out = ws.apply().unwrap();
    out.assert_failure();
    let text = out.combined();
    assert!(text.contains("refused"), "{text}");
    assert!(text.contains("Rolling upgrade stopped"), "{text}");
    assert!(text.contains("PCR 9"), "{text}");
    let work = ws.dir().join(".constellation/acc/nodes");
    assert!(work.join("acc-cp-0").is_dir());
    assert!(
        !work.join("acc-cp-1").exists(),
        "the refused node is removed"
    );

    // The right measurements: every node replaced, control planes first.
    std::fs::write(img2.join("measurements.json"), good_measurements).unwrap();
    must(ws.apply().unwrap());
    let out = ws.outputs().unwrap();
    assert_eq!(out["verified"]["value"], true);
    assert_eq!(
        out["cluster_id"]["value"], id,
        "an upgrade keeps the cluster"
    );
    let n = nodes(&ws);
    assert_eq!(names(&n), ["acc-cp-2", "acc-worker-1"]);
    for node in &n {
        assert_eq!(node["joined"], true, "{node}");
    }
    for old in ["acc-cp-0", "acc-worker-0"] {
        assert!(!work.join(old).exists(), "{old} is gone");
    }
    let plan = must(ws.plan().unwrap());
    assert!(plan.no_changes(), "{}", plan.stdout);

    // Control planes scale in place too: a second one joins (and serves), then the newest goes.
    let two = Cluster {
        control_planes: 2,
        ..cluster
    };
    ws.write("main.tf", &two.hcl(&img2)).unwrap();
    let plan = must(ws.plan().unwrap());
    assert_eq!(
        plan.change_summary().unwrap()["remove"],
        0,
        "{}",
        plan.stdout
    );
    must(ws.apply().unwrap());
    let n = nodes(&ws);
    assert_eq!(names(&n), ["acc-cp-2", "acc-worker-1", "acc-cp-3"]);
    for node in &n {
        assert_eq!(node["joined"], true, "{node}");
    }
    let one = Cluster {
        control_planes: 1,
        ..two
    };
    ws.write("main.tf", &one.hcl(&img2)).unwrap();
    must(ws.apply().unwrap());
    assert_eq!(names(&nodes(&ws)), ["acc-cp-2", "acc-worker-1"]);
    assert!(!work.join("acc-cp-3").exists());
    assert_eq!(ws.outputs().unwrap()["verified"]["value"], true);
    let plan = must(ws.plan().unwrap());
    assert!(plan.no_changes(), "{}", plan.stdout);
    must(ws.destroy().unwrap());
}
