# A small configuration for the tfplugin example provider, run by `make demo`
# (scripts/demo.sh builds the provider and serves it to terraform from a local mirror).

terraform {
  required_providers {
    tfexample = {
      source = "example.com/tfplugin/tfexample"
    }
  }
}

provider "tfexample" {
  # Files managed by the demo live inside terraform's data directory (gitignored).
  root = abspath("${path.module}/.terraform/demo-files")
}

resource "tfexample_file" "hello" {
  name    = "hello.txt"
  content = "Hello from a Terraform provider written in Rust!\n"
}

resource "tfexample_document" "app" {
  name     = "app"
  settings = { mode = "demo", enabled = true }
  rules    = [{ port = 443, protocol = "tcp" }]

  owner {
    name = "demo"
  }

  volume "data" {
    size = 1
  }
}

data "tfexample_file" "hello" {
  name = tfexample_file.hello.name
}

output "hello_path" {
  value = "${abspath("${path.module}/.terraform/demo-files")}/${tfexample_file.hello.name}"
}

output "hello_sha256" {
  value = data.tfexample_file.hello.sha256
}

output "hello_sha256_by_function" {
  value = provider::tfexample::sha256(tfexample_file.hello.content)
}

output "document_revision" {
  value = tfexample_document.app.revision
}
