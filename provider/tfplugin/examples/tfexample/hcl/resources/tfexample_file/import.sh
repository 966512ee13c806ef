# The import id is the file name relative to the provider's root directory.
terraform import tfexample_file.motd etc/motd
