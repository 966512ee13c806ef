# The import ID is the cluster's working directory (its `id`); it holds no secret.
terraform import constellation_cluster.local .constellation/demo
