output "digest" {
  value = provider::tfexample::sha256("abc")
}
