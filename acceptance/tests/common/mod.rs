//! Shared set-up for the tfplugin example-provider acceptance tests (included with `mod`).

#![allow(dead_code)]

use acceptance::{Install, ProviderBinary, Terraform, Workspace};
use std::path::PathBuf;

pub const SOURCE: &str = "example.com/tfplugin/tfexample";

/// The example provider, built once per test binary.
pub fn provider() -> ProviderBinary {
    ProviderBinary::cargo_example("tfplugin", "terraform-provider-tfexample", SOURCE)
        .expect("building the tfplugin example provider")
}

/// A workspace plus the provider's root directory (`<tmp>/data`).
pub struct Env {
    pub ws: Workspace,
    pub data: PathBuf,
}

impl Env {
    pub fn new(tf: &Terraform, install: Install) -> Self {
        let p = provider();
        let ws = Workspace::new(tf, &[&p], install).expect("creating the workspace");
        let data = ws.root().join("data");
        std::fs::create_dir_all(&data).expect("acceptance set-up step failed");
        Self { ws, data }
    }

    /// `required_providers` + the default provider block pointing at the data directory.
    pub fn header(&self) -> String {
        format!(
            "terraform {{\n  required_providers {{\n    tfexample = {{ source = \"{SOURCE}\" }}\n  }}\n}}\n\n\
             provider \"tfexample\" {{\n  root = \"{}\"\n}}\n\n",
            self.data.display()
        )
    }

    /// Writes main.tf = header + `body`.
    pub fn config(&self, body: &str) {
        self.ws
            .write("main.tf", &format!("{}{body}", self.header()))
            .expect("acceptance set-up step failed");
    }

    /// `terraform show -json` values of a root-module resource.
    pub fn values(&self, address: &str) -> serde_json::Value {
        self.ws
            .resource_values(address)
            .expect("acceptance set-up step failed")
            .unwrap_or_else(|| panic!("{address} not in state"))
    }

    /// plan -out + show -json of that plan.
    pub fn saved_plan(&self) -> serde_json::Value {
        self.ws
            .run(&["plan", "-input=false", "-no-color", "-out=tfplan"])
            .expect("acceptance set-up step failed")
            .assert_success();
        let out = self
            .ws
            .run(&["show", "-json", "-no-color", "tfplan"])
            .expect("acceptance set-up step failed");
        out.assert_success();
        out.json().expect("acceptance set-up step failed")
    }
}

pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}
