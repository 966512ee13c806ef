# A local confidential cluster: QEMU VMs with OVMF and swtpm booting the measured node image.
# Build the image first (`make image`), then `terraform init && terraform apply` here, or
# simply `make demo`.
terraform {
  required_version = ">= 1.11"
  required_providers {
    constellation = {
      source = "constellation-rs/constellation"
    }
  }
}

variable "image_dir" {
  description = "Output directory of `make image`."
  type        = string
  default     = "../../image/out"
}

variable "worker_count" {
  type    = number
  default = 2
}

provider "constellation" {}

data "constellation_image" "local" {
  cloud = "qemu"
  path  = abspath(var.image_dir)
}

data "constellation_attestation" "local" {
  variant      = "qemu-vtpm"
  measurements = data.constellation_image.local.measurements
}

resource "constellation_cluster" "local" {
  name                = "demo"
  image_reference     = data.constellation_image.local.reference
  attestation_config  = data.constellation_attestation.local.config_json
  control_plane_count = 1
  worker_count        = var.worker_count

  cloud {
    qemu {
      vcpus          = 1
      memory_mib     = 1024
      state_disk_mib = 256
    }
  }
}

# Re-verifies the first control plane on every plan: a pipeline stops here if it no longer
# attests, or no longer belongs to this cluster.
data "constellation_cluster_verification" "control_plane" {
  endpoint           = constellation_cluster.local.verification_endpoint
  attestation_config = data.constellation_attestation.local.config_json
  cluster_id         = constellation_cluster.local.cluster_id
}

output "cluster_id" {
  value = constellation_cluster.local.cluster_id
}

output "nodes" {
  value = constellation_cluster.local.nodes
}

output "verified" {
  value = data.constellation_cluster_verification.control_plane.verified
}
