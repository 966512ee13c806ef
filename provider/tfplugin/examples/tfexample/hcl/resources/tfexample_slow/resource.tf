resource "tfexample_slow" "wait" {
  name    = "wait"
  seconds = 30
}
