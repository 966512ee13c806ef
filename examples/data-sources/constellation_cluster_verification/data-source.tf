# Verify every node of a cluster; any failure stops the plan with the list of mismatches.
data "constellation_cluster_verification" "node" {
  for_each = { for n in constellation_cluster.local.nodes : n.name => n }

  endpoint           = each.value.verification_endpoint
  attestation_config = data.constellation_attestation.local.config_json
  cluster_id         = constellation_cluster.local.cluster_id
}
