//! The tfplugin example provider driven by the real terraform CLI (issue 2 acceptance).
//!
//! Every terraform run goes through `acceptance::Workspace::run`, which fails the test if
//! terraform ever reports "Provider produced inconsistent result".

mod common;

use acceptance::{Install, process_group_members, require_terraform};
use common::{Env, SOURCE, sha256_hex};
use serde_json::json;
use std::time::{Duration, Instant};

const FILE_CONFIG: &str = r#"
resource "tfexample_file" "a" {
  name                = "dir/a.txt"
  content             = "hello"
  secret              = "s3cr3t-value"
  password_wo         = "pw-write-only-1"
  password_wo_version = 1
}

data "tfexample_file" "a" {
  name = tfexample_file.a.name
}

output "digest" {
  value = data.tfexample_file.a.sha256
}
"#;

#[test]
fn init_validate_plan_apply_refresh_destroy() {
    let tf = require_terraform!();
    let env = Env::new(&tf, Install::Mirror);
    env.config(FILE_CONFIG);
    env.ws.init().unwrap().assert_success();
    let lock = std::fs::read_to_string(env.ws.dir().join(".terraform.lock.hcl")).unwrap();
    assert!(lock.contains(SOURCE), "{lock}");

    let v = env.ws.validate().unwrap();
    v.assert_success();
    assert_eq!(v.json().unwrap()["valid"], true);

    let plan = env.ws.plan().unwrap();
    plan.assert_success();
    assert_eq!(plan.change_summary().unwrap()["add"], 1, "{}", plan.stdout);
    // The secret is sensitive: never printed in a plan.
    assert!(!plan.contains("s3cr3t-value"));

    env.ws.apply().unwrap().assert_success();
    let path = env.data.join("dir/a.txt");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello");
    let vals = env.values("tfexample_file.a");
    assert_eq!(vals["sha256"], sha256_hex("hello"));
    assert_eq!(vals["size"], 5);
    assert_eq!(vals["id"], "dir/a.txt");
    assert_eq!(
        env.ws.outputs().unwrap()["digest"]["value"],
        sha256_hex("hello")
    );
    assert!(env.ws.plan().unwrap().assert_success().no_changes());

    // Drift: edit the file behind terraform's back; refresh records it, plan reverts it.
    std::fs::write(&path, "changed outside").unwrap();
    let refresh = env.ws.refresh().unwrap();
    refresh.assert_success();
    assert!(
        !refresh.messages_of("resource_drift").is_empty(),
        "{}",
        refresh.stdout
    );
    assert_eq!(env.values("tfexample_file.a")["content"], "changed outside");
    let plan = env.ws.plan().unwrap();
    plan.assert_success();
    assert_eq!(
        plan.change_summary().unwrap()["change"],
        1,
        "{}",
        plan.stdout
    );
    env.ws.apply().unwrap().assert_success();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello");
    assert!(env.ws.plan().unwrap().assert_success().no_changes());

    // requires_replace on name.
    env.config(&FILE_CONFIG.replace("dir/a.txt", "dir/b.txt"));
    let plan = env.ws.plan().unwrap();
    plan.assert_success();
    let changes = plan.messages_of("planned_change");
    assert!(
        changes.iter().any(|c| c["change"]["action"] == "replace"),
        "{}",
        plan.stdout
    );
    env.ws.apply().unwrap().assert_success();
    assert!(!path.exists());
    assert!(env.data.join("dir/b.txt").exists());

    env.ws.destroy().unwrap().assert_success();
    assert!(!env.data.join("dir/b.txt").exists());
    assert!(
        env.ws.state_file().unwrap()["resources"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn unknown_values_during_plan_resolve_after_apply() {
    let tf = require_terraform!();
    let env = Env::new(&tf, Install::Mirror);
    env.config(
        r#"
resource "tfexample_file" "a" {
  name    = "a.txt"
  content = "one"
}

resource "tfexample_document" "d" {
  name     = "doc"
  settings = { mode = tfexample_file.a.sha256 }
}
"#,
    );
    env.ws.init().unwrap().assert_success();
    let plan = env.saved_plan();
    let changes = plan["resource_changes"].as_array().unwrap();
    let file = changes
        .iter()
        .find(|c| c["address"] == "tfexample_file.a")
        .unwrap();
    for attr in ["id", "sha256", "size"] {
        assert_eq!(
            file["change"]["after_unknown"][attr], true,
            "{attr}: {file}"
        );
    }
    let doc = changes
        .iter()
        .find(|c| c["address"] == "tfexample_document.d")
        .unwrap();
    assert_eq!(doc["change"]["after_unknown"]["revision"], true, "{doc}");
    assert_eq!(doc["change"]["after_unknown"]["digest"], true, "{doc}");
    // A value that depends on another resource's unknown is unknown too.
    assert_eq!(
        doc["change"]["after_unknown"]["settings"]["mode"], true,
        "{doc}"
    );

    env.ws
        .run(&["apply", "-input=false", "-no-color", "-json", "tfplan"])
        .unwrap()
        .assert_success();
    let d = env.values("tfexample_document.d");
    assert_eq!(d["revision"], 1);
    assert_eq!(d["settings"]["mode"], sha256_hex("one"));
    assert_eq!(d["digest"].as_str().unwrap().len(), 64);

    // An in-place update makes the computed attributes unknown again, then known.
    env.config(
        r#"
resource "tfexample_file" "a" {
  name    = "a.txt"
  content = "two"
}

resource "tfexample_document" "d" {
  name     = "doc"
  settings = { mode = tfexample_file.a.sha256 }
}
"#,
    );
    let plan = env.saved_plan();
    let doc = plan["resource_changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "tfexample_document.d")
        .unwrap()
        .clone();
    assert_eq!(doc["change"]["actions"], json!(["update"]), "{doc}");
    assert_eq!(doc["change"]["after_unknown"]["revision"], true, "{doc}");
    let file = plan["resource_changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "tfexample_file.a")
        .unwrap()
        .clone();
    // id never changes in place: planned from the prior state, not unknown.
    assert_eq!(file["change"]["after"]["id"], "a.txt", "{file}");
    env.ws
        .run(&["apply", "-input=false", "-no-color", "-json", "tfplan"])
        .unwrap()
        .assert_success();
    assert_eq!(env.values("tfexample_document.d")["revision"], 2);
    assert!(env.ws.plan().unwrap().assert_success().no_changes());
}

const DOCUMENT: &str = r#"
resource "tfexample_document" "all" {
  name     = "all"
  settings = { mode = "fast", enabled = true }
  rules = [
    { port = 443, protocol = "tcp" },
    { port = 53 },
  ]
  members = [
    { name = "alice", role = "admin" },
    { name = "bob" },
  ]
  endpoints = {
    primary   = { url = "https://a.example", weight = 10 }
    secondary = { url = "https://b.example" }
  }

  owner {
    name  = "ops"
    email = "ops@example.com"
  }

  permission {
    principal = "alice"
    scopes    = { repo = { level = "write" }, wiki = { level = "read" } }
  }
  permission {
    principal = "bob"
  }

  label {
    key   = "env"
    value = "test"
  }
  label {
    key   = "team"
    value = "core"
  }

  limits {
    cpu = 2
  }

  volume "data" {
    size = 10
  }
  volume "logs" {
    size      = 1
    read_only = true
  }
}
"#;

#[test]
fn nested_attributes_and_blocks_of_every_nesting_mode_round_trip() {
    let tf = require_terraform!();
    let env = Env::new(&tf, Install::Mirror);
    env.config(DOCUMENT);
    env.ws.init().unwrap().assert_success();
    env.ws.apply().unwrap().assert_success();
    assert!(env.ws.plan().unwrap().assert_success().no_changes());

    let v = env.values("tfexample_document.all");
    assert_eq!(v["settings"], json!({"mode": "fast", "enabled": true}));
    assert_eq!(
        v["rules"],
        json!([{"port": 443, "protocol": "tcp"}, {"port": 53, "protocol": null}])
    );
    let mut members: Vec<String> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect();
    members.sort();
    assert_eq!(members, ["alice", "bob"]);
    assert_eq!(
        v["endpoints"]["secondary"],
        json!({"url": "https://b.example", "weight": null})
    );
    // Single and group blocks are objects; the group block is never null.
    assert_eq!(
        v["owner"],
        json!({"name": "ops", "email": "ops@example.com"})
    );
    assert_eq!(v["permission"][0]["scopes"]["repo"]["level"], "write");
    assert_eq!(v["permission"][1]["scopes"], serde_json::Value::Null);
    assert_eq!(v["label"].as_array().unwrap().len(), 2);
    assert_eq!(v["limits"], json!({"cpu": 2, "memory": null}));
    assert_eq!(v["volume"]["logs"]["read_only"], true);
    assert_eq!(v["revision"], 1);

    // The stored document is what Read returns: the file on disk carries every nesting mode.
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.data.join("all.json")).unwrap()).unwrap();
    assert_eq!(stored["volume"]["data"]["size"], 10);

    // Change one element of each collection kind, plan shows an update, apply converges.
    let changed = DOCUMENT
        .replace("{ name = \"bob\" }", "{ name = \"bob\", role = \"dev\" }")
        .replace("weight = 10", "weight = 20")
        .replace("value = \"core\"", "value = \"platform\"")
        .replace("size = 10", "size = 11");
    env.config(&changed);
    let plan = env.ws.plan().unwrap();
    plan.assert_success();
    assert_eq!(
        plan.change_summary().unwrap()["change"],
        1,
        "{}",
        plan.stdout
    );
    env.ws.apply().unwrap().assert_success();
    assert!(env.ws.plan().unwrap().assert_success().no_changes());
    let v = env.values("tfexample_document.all");
    assert_eq!(v["revision"], 2);
    assert_eq!(v["endpoints"]["primary"]["weight"], 20);
    assert_eq!(v["volume"]["data"]["size"], 11);

    env.ws.destroy().unwrap().assert_success();
    assert!(!env.data.join("all.json").exists());
}

#[test]
fn write_only_value_never_reaches_the_state_file() {
    let tf = require_terraform!();
    let env = Env::new(&tf, Install::Mirror);
    env.config(FILE_CONFIG);
    env.ws.init().unwrap().assert_success();
    let apply = env.ws.apply().unwrap();
    apply.assert_success();
    assert!(!apply.contains("pw-write-only-1"));
    let raw = env.ws.state_raw().unwrap();
    assert!(
        !raw.contains("pw-write-only-1"),
        "write-only value in state:\n{raw}"
    );
    let state = env.ws.state_file().unwrap();
    let managed = state["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["mode"] == "managed")
        .unwrap();
    let attrs = &managed["instances"][0]["attributes"];
    assert_eq!(attrs["password_wo"], serde_json::Value::Null, "{attrs}");
    assert_eq!(attrs["password_wo_version"], 1);
    // It did reach the provider: the metadata holds its hash.
    let meta = std::fs::read_to_string(env.data.join(".tfexample-meta/dir/a.txt.json")).unwrap();
    assert!(meta.contains(&sha256_hex("pw-write-only-1")), "{meta}");
    assert!(env.ws.plan().unwrap().assert_success().no_changes());

    // A new password is applied when the version changes, and still never stored.
    env.config(
        &FILE_CONFIG
            .replace("pw-write-only-1", "pw-write-only-2")
            .replace("password_wo_version = 1", "password_wo_version = 2"),
    );
    env.ws.apply().unwrap().assert_success();
    let raw = env.ws.state_raw().unwrap();
    assert!(!raw.contains("pw-write-only-2"));
    let meta = std::fs::read_to_string(env.data.join(".tfexample-meta/dir/a.txt.json")).unwrap();
    assert!(meta.contains(&sha256_hex("pw-write-only-2")), "{meta}");
}

#[test]
fn ephemeral_value_configures_the_provider_but_never_reaches_state() {
    let tf = require_terraform!();
    let env = Env::new(&tf, Install::Mirror);
    let token = "ephemeral-token-7f3a";
    std::fs::write(env.data.join("token.txt"), format!("{token}\n")).unwrap();
    // The ephemeral resource needs a configured provider itself: a second, aliased instance.
    let body = format!(
        r#"
provider "tfexample" {{
  alias = "bootstrap"
  root  = "{root}"
}}

ephemeral "tfexample_secret" "token" {{
  provider = tfexample.bootstrap
  name     = "token.txt"
}}

provider "tfexample" {{
  alias = "authed"
  root  = "{root}"
  token = ephemeral.tfexample_secret.token.value
}}

data "tfexample_provider_info" "authed" {{
  provider = tfexample.authed
}}

resource "tfexample_file" "f" {{
  provider = tfexample.authed
  name     = "via-authed.txt"
  content  = data.tfexample_provider_info.authed.token_sha256
}}

output "token_sha256" {{
  value = data.tfexample_provider_info.authed.token_sha256
}}
"#,
        root = env.data.display()
    );
    env.config(&body);
    env.ws.init().unwrap().assert_success();
    let apply = env.ws.apply().unwrap();
    apply.assert_success();
    assert!(!apply.contains(token));
    let expected = sha256_hex(token);
    assert_eq!(env.ws.outputs().unwrap()["token_sha256"]["value"], expected);
    assert_eq!(
        std::fs::read_to_string(env.data.join("via-authed.txt")).unwrap(),
        expected
    );
    let raw = env.ws.state_raw().unwrap();
    assert!(!raw.contains(token), "ephemeral value in state:\n{raw}");
    let state = env.ws.state_file().unwrap();
    let types: Vec<&str> = state["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert!(
        !types.contains(&"tfexample_secret"),
        "ephemeral resource in state: {types:?}"
    );
    let plan = env.ws.plan().unwrap();
    plan.assert_success();
    assert!(plan.no_changes(), "{}", plan.stdout);
    assert!(!plan.contains(token));
}

#[test]
fn provider_functions_return_values_and_argument_errors() {
    let tf = require_terraform!();
    // dev_overrides: no init needed.
    let env = Env::new(&tf, Install::DevOverrides);
    env.config(
        r#"
output "digest" {
  value = provider::tfexample::sha256("abc")
}

output "joined" {
  value = provider::tfexample::join_path("base", "a", "b.txt")
}
"#,
    );
    let apply = env.ws.apply().unwrap();
    apply.assert_success();
    // Terraform warns that overrides are in effect; init still works (the mirror is configured).
    assert!(
        apply.contains("Provider development overrides are in effect"),
        "{}",
        apply.combined()
    );
    env.ws.init().unwrap().assert_success();
    let outputs = env.ws.outputs().unwrap();
    assert_eq!(
        outputs["digest"]["value"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(outputs["joined"]["value"], "base/a/b.txt");

    env.config(
        r#"
output "bad" {
  value = provider::tfexample::join_path("base", "ok", "../escape")
}
"#,
    );
    let plan = env.ws.plan().unwrap();
    plan.assert_failure();
    let errors = plan.errors();
    let e = errors
        .iter()
        .find(|d| {
            d["detail"]
                .as_str()
                .is_some_and(|s| s.contains("must not contain `..`"))
        })
        .unwrap_or_else(|| panic!("{}", plan.combined()));
    // The error points at the offending (third) argument.
    assert!(
        e["snippet"]["code"]
            .as_str()
            .unwrap_or_default()
            .contains("../escape"),
        "{e}"
    );
    let start = e["range"]["start"]["column"].as_u64().unwrap();
    let line = e["snippet"]["code"].as_str().unwrap();
    // HCL ranges of a quoted literal cover its content, without the quotes.
    let col_of_arg = line.find("../escape").unwrap() as u64 + 1;
    assert_eq!(start, col_of_arg, "{e}");
}

#[test]
fn validation_diagnostic_points_at_the_nested_attribute() {
    let tf = require_terraform!();
    let env = Env::new(&tf, Install::Mirror);
    env.config(
        r#"
resource "tfexample_document" "bad" {
  name = "bad"

  permission {
    principal = "alice"
    scopes    = { repo = { level = "read" } }
  }
  permission {
    principal = "bob"
    scopes = {
      wiki = { level = "write" }
      ci   = { level = "superuser" }
    }
  }
}
"#,
    );
    env.ws.init().unwrap().assert_success();
    let v = env.ws.validate().unwrap();
    v.assert_failure();
    let errors = v.errors();
    assert_eq!(errors.len(), 1, "{}", v.stdout);
    let e = &errors[0];
    assert_eq!(e["summary"], "Invalid scope level");
    assert!(
        e["detail"]
            .as_str()
            .unwrap()
            .contains("`ci` has `level` = `superuser`"),
        "{e}"
    );
    // Terraform resolved permission[1].scopes["ci"] to the exact source range: the second
    // permission block (not the first, which has a `read` scope), its `ci` entry.
    let main_tf = std::fs::read_to_string(env.ws.dir().join("main.tf")).unwrap();
    let line = main_tf
        .lines()
        .position(|l| l.contains("superuser"))
        .unwrap()
        + 1;
    assert_eq!(e["range"]["filename"], "main.tf");
    assert_eq!(e["range"]["start"]["line"], line as u64, "{e}");
    assert!(
        e["snippet"]["code"].as_str().unwrap().contains("superuser"),
        "{e}"
    );
    let col = main_tf
        .lines()
        .nth(line - 1)
        .unwrap()
        .find("{ level")
        .unwrap() as u64
        + 1;
    assert_eq!(e["range"]["start"]["column"], col, "{e}");

    // The same diagnostic fails plan (streaming form, with the resource address).
    let plan = env.ws.plan().unwrap();
    plan.assert_failure();
    let e = plan
        .errors()
        .into_iter()
        .find(|d| d["summary"] == "Invalid scope level")
        .unwrap();
    assert_eq!(e["address"], "tfexample_document.bad");
    assert_eq!(e["range"]["start"]["line"], line as u64);
}

#[test]
fn import_existing_file() {
    let tf = require_terraform!();
    let env = Env::new(&tf, Install::Mirror);
    std::fs::write(env.data.join("existing.txt"), "already here").unwrap();
    env.config(
        r#"
resource "tfexample_file" "imp" {
  name    = "existing.txt"
  content = "already here"
}
"#,
    );
    env.ws.init().unwrap().assert_success();
    let missing = env.ws.import("tfexample_file.imp", "nope.txt").unwrap();
    missing.assert_failure();
    assert!(
        missing.contains("Cannot import non-existent file"),
        "{}",
        missing.combined()
    );

    env.ws
        .import("tfexample_file.imp", "existing.txt")
        .unwrap()
        .assert_success();
    let v = env.values("tfexample_file.imp");
    assert_eq!(v["content"], "already here");
    assert_eq!(v["sha256"], sha256_hex("already here"));
    assert!(env.ws.plan().unwrap().assert_success().no_changes());
}

#[test]
fn state_upgrade_from_schema_v0_json_and_flatmap() {
    let tf = require_terraform!();
    let env = Env::new(&tf, Install::Mirror);
    std::fs::write(env.data.join("old.txt"), "old body").unwrap();
    std::fs::write(env.data.join("flat.txt"), "flat body").unwrap();
    env.config(
        r#"
resource "tfexample_file" "old" {
  name    = "old.txt"
  content = "old body"
}

resource "tfexample_file" "flat" {
  name    = "flat.txt"
  content = "flat body"
}
"#,
    );
    env.ws.init().unwrap().assert_success();
    let provider = format!("provider[\"{SOURCE}\"]");
    env.ws
        .write_state(&json!({
            "version": 4,
            "terraform_version": "1.11.4",
            "serial": 1,
            "lineage": "3c1f7a52-9d1e-4b55-8a0e-6b0d1e2f3a4b",
            "outputs": {},
            "resources": [
                {
                    "mode": "managed", "type": "tfexample_file", "name": "old", "provider": provider,
                    "instances": [{"schema_version": 0, "attributes": {"id": "old.txt", "filename": "old.txt", "body": "old body"}}]
                },
                {
                    "mode": "managed", "type": "tfexample_file", "name": "flat", "provider": provider,
                    "instances": [{"schema_version": 0, "attributes_flat": {"id": "flat.txt", "filename": "flat.txt", "body": "flat body"}}]
                }
            ],
            "check_results": null
        }))
        .unwrap();
    let plan = env.ws.plan().unwrap();
    plan.assert_success();
    // Terraform reports "drift" here only because the old state lacks the sensitivity mark of
    // the v1 `secret` attribute (before == after); nothing is planned.
    let summary = plan.change_summary().unwrap();
    assert_eq!(
        (&summary["add"], &summary["change"], &summary["remove"]),
        (&json!(0), &json!(0), &json!(0)),
        "{}",
        plan.stdout
    );
    assert!(
        plan.messages_of("planned_change").is_empty(),
        "upgraded state should match the config:\n{}",
        plan.stdout
    );
    env.ws.apply().unwrap().assert_success();
    assert!(env.ws.plan().unwrap().assert_success().no_changes());
    let state = env.ws.state_file().unwrap();
    for r in state["resources"].as_array().unwrap() {
        let inst = &r["instances"][0];
        assert_eq!(inst["schema_version"], 1, "{inst}");
        assert!(inst["attributes"]["name"].is_string(), "{inst}");
        assert!(inst["attributes"].get("filename").is_none(), "{inst}");
    }
    assert_eq!(env.values("tfexample_file.flat")["content"], "flat body");
    assert_eq!(
        env.values("tfexample_file.old")["sha256"],
        sha256_hex("old body")
    );
}

#[test]
fn ctrl_c_during_slow_apply_stops_the_provider_cleanly() {
    let tf = require_terraform!();
    let env = Env::new(&tf, Install::Mirror);
    env.config(
        r#"
resource "tfexample_slow" "s" {
  name    = "slow"
  seconds = 900
}
"#,
    );
    env.ws.init().unwrap().assert_success();
    let mut running = env
        .ws
        .spawn(&[
            "apply",
            "-auto-approve",
            "-input=false",
            "-no-color",
            "-json",
        ])
        .unwrap();
    assert!(
        running.wait_for_stdout("\"type\":\"apply_start\"", Duration::from_secs(300)),
        "apply never started:\n{}",
        running.stdout_so_far()
    );
    // The provider marks the creation in progress: only then is StopProvider sure to hit it.
    let progress = env.data.join(".tfexample-slow/slow.creating");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !progress.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        progress.exists(),
        "creation never started:\n{}",
        running.stdout_so_far()
    );
    let interrupted_at = Instant::now();
    running.interrupt().unwrap();
    let (out, group) = running.wait_leader(Duration::from_secs(300)).unwrap();
    assert!(
        !out.success(),
        "an interrupted apply must fail:\n{}",
        out.combined()
    );
    assert!(
        interrupted_at.elapsed() < Duration::from_secs(900),
        "terraform waited for the full creation"
    );
    assert!(
        out.contains("Creation interrupted"),
        "the provider's cancellation diagnostic is missing:\n{}",
        out.combined()
    );
    assert!(
        !out.contains("plugin crashed") && !out.contains("panic"),
        "{}",
        out.combined()
    );
    assert!(!out.contains("inconsistent"), "{}", out.combined());
    // The provider exits after terraform: nothing of the process group may remain.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !process_group_members(group.pgid()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        process_group_members(group.pgid()),
        Vec::<i32>::new(),
        "leftover processes"
    );
    assert!(!env.data.join(".tfexample-slow/slow").exists());
    assert!(
        !progress.exists(),
        "the cancelled creation did not clean up"
    );
    // Nothing was created, so nothing is in state.
    let state = env
        .ws
        .state_file()
        .map(|s| s["resources"].as_array().map_or(0, Vec::len))
        .unwrap_or(0);
    assert_eq!(state, 0);
}

#[test]
fn move_state_from_document_to_file() {
    let tf = require_terraform!();
    let env = Env::new(&tf, Install::Mirror);
    env.config("resource \"tfexample_document\" \"d\" {\n  name = \"moved\"\n}\n");
    env.ws.init().unwrap().assert_success();
    env.ws.apply().unwrap().assert_success();
    let stored = std::fs::read_to_string(env.data.join("moved.json")).unwrap();
    let body = format!(
        "moved {{\n  from = tfexample_document.d\n  to   = tfexample_file.f\n}}\n\n\
         resource \"tfexample_file\" \"f\" {{\n  name    = \"moved.json\"\n  content = {}\n}}\n",
        serde_json::to_string(&stored).unwrap().replace("${", "$${")
    );
    env.config(&body);
    let plan = env.ws.plan().unwrap();
    plan.assert_success();
    assert!(
        plan.no_changes()
            || plan
                .change_summary()
                .is_some_and(|c| c["change"] == 0 && c["add"] == 0 && c["remove"] == 0),
        "{}",
        plan.stdout
    );
    env.ws.apply().unwrap().assert_success();
    assert_eq!(
        env.values("tfexample_file.f")["content"].as_str().unwrap(),
        stored
    );
}

#[test]
fn running_the_provider_by_hand_explains_itself() {
    let p = common::provider();
    let out = std::process::Command::new(&p.path)
        .env_remove("TF_PLUGIN_MAGIC_COOKIE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("plugin") && text.to_lowercase().contains("terraform"),
        "{text}"
    );
}
