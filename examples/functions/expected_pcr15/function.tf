# PCR 15 of any node that belongs to the cluster with this ID.
output "pcr15" {
  value = provider::constellation::expected_pcr15("c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00")
}
