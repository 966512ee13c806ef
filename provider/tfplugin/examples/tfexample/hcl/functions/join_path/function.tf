output "path" {
  value = provider::tfexample::join_path("base", "a", "b.txt") # "base/a/b.txt"
}
