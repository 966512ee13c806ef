# The import ID is the cluster's working directory (its `id`); it holds no secret.
# With `master_secret_wo` in the configuration the owner credential is derived again, so the
# imported cluster can be changed (scaled, upgraded, recovered); without it, it is read-only.
terraform import constellation_cluster.local .constellation/demo
