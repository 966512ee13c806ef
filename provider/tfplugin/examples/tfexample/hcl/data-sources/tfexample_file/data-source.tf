data "tfexample_file" "motd" {
  name = "etc/motd"
}

output "motd_sha256" {
  value = data.tfexample_file.motd.sha256
}
