provider "tfexample" {
  alias = "bootstrap"
  root  = "${path.module}/files"
}

ephemeral "tfexample_secret" "token" {
  provider = tfexample.bootstrap
  name     = "token.txt"
}

# The token configures another provider instance and never reaches state.
provider "tfexample" {
  root  = "${path.module}/files"
  token = ephemeral.tfexample_secret.token.value
}
