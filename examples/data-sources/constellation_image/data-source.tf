# The image `make image` built for the local QEMU backend.
data "constellation_image" "this" {
  cloud = "qemu"
  path  = "${path.root}/../../image/out"
}

output "image_version" {
  value = data.constellation_image.this.version
}
