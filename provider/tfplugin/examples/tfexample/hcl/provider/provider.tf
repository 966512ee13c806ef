terraform {
  required_providers {
    tfexample = {
      source = "example.com/tfplugin/tfexample"
    }
  }
}

provider "tfexample" {
  root = "${path.module}/files"
}
