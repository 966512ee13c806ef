data "constellation_image" "local" {
  path = abspath("${path.root}/../../image/out")
}

data "constellation_attestation" "local" {
  variant      = "qemu-vtpm"
  measurements = data.constellation_image.local.measurements
}

resource "constellation_cluster" "local" {
  name               = "demo"
  image_reference    = data.constellation_image.local.reference
  attestation_config = data.constellation_attestation.local.config_json
  worker_count       = 2

  cloud {
    qemu {}
  }

  timeouts {
    create = "20m"
  }
}
