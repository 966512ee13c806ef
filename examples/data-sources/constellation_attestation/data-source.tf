data "constellation_image" "this" {
  path = "${path.root}/../../image/out"
}

# The attestation config every node of the cluster must satisfy.
data "constellation_attestation" "this" {
  variant      = "qemu-vtpm"
  measurements = data.constellation_image.this.measurements
}

output "attestation_config" {
  value = data.constellation_attestation.this.config_json
}
