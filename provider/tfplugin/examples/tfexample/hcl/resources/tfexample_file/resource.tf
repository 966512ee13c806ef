resource "tfexample_file" "motd" {
  name    = "etc/motd"
  content = "Welcome!\n"

  # Write-only: hashed into the file's metadata, never stored in state.
  password_wo         = var.password
  password_wo_version = 1
}
