data "tfexample_provider_info" "current" {}
