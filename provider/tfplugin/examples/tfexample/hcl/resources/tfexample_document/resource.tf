resource "tfexample_document" "app" {
  name     = "app"
  settings = { mode = "fast", enabled = true }
  rules    = [{ port = 443, protocol = "tcp" }]
  members  = [{ name = "alice", role = "admin" }]
  endpoints = {
    primary = { url = "https://a.example", weight = 10 }
  }

  owner {
    name = "ops"
  }

  permission {
    principal = "alice"
    scopes    = { repo = { level = "write" } }
  }

  label {
    key   = "env"
    value = "prod"
  }

  limits {
    cpu = 2
  }

  volume "data" {
    size = 10
  }
}
