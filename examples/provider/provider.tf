terraform {
  required_providers {
    constellation = {
      source = "constellation-rs/constellation"
    }
  }
}

provider "constellation" {}
