//! `constellation_cluster`: boots measured nodes, validates the first control plane by
//! attestation, initialises the cluster over aTLS, waits for every node to join, and keeps
//! the cluster in step with the configuration (scaling, rolling upgrades, attestation
//! config, restarting crashed machines, recovery after a power loss).
//!
//! The cluster's working directory holds a record (`cluster.json`, no secrets) of what was
//! created; Read, Delete and Import start from it, so state and machines cannot drift apart
//! silently. Secrets (master secret, owner key, kubeconfig) live only in Terraform state as
//! sensitive values — or, with `master_secret_wo`, the master secret lives nowhere but the
//! configuration and the nodes.
//!
//! | module | what it holds |
//! |---|---|
//! | `schema` | schema, configuration echo for import, state from a record |
//! | `record` | the versioned, backend-neutral record and its durable save |
//! | `planner` | pure: desired configuration + observation → ordered steps |
//! | `executor` | update: observe, plan, carry steps out through `Cloud` and node clients |
//! | `nodes` | add a member, retire, replace, forget a dead node; next node's spec |
//! | `owner` | owner credential derived from the master secret (manage after import) |
//! | `recovery` | restart machines that are off, recover a control plane |
//! | `create` | create: boot, attest, Init, wait for joins |
//! | `model` | typed binding of the state (prior state, `nodes`) |
//! | `membership` | members, refusals at join, attested membership |
//! | `read` | read with drift, delete, import |
//! | `common` | diagnostics and waiting shared by all |

mod common;
mod create;
mod executor;
mod membership;
mod model;
mod nodes;
mod owner;
mod planner;
mod read;
pub mod record;
mod recovery;
mod schema;

use tfplugin::provider::{
    ApplyRequest, Context, ImportResponse, PlanRequest, PlanResponse, ReadRequest, Resource,
    StateResponse,
};
use tfplugin::{AttributePath, Diagnostics, Schema, Value};

use crate::cluster_config;
pub use record::ClusterRecord;

/// Type name.
pub const TYPE_NAME: &str = "constellation_cluster";

/// The resource type.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClusterResource;

#[tfplugin::async_trait]
impl Resource for ClusterResource {
    fn type_name(&self) -> &str {
        TYPE_NAME
    }

    fn schema(&self) -> Schema {
        schema::schema_v0()
    }

    fn requires_replace(&self) -> Vec<AttributePath> {
        [
            "name",
            "cloud",
            "kubernetes_version",
            "network",
            "master_secret_wo_version",
        ]
        .into_iter()
        .map(AttributePath::new)
        .collect()
    }

    async fn validate(&self, _ctx: &Context, config: &Value) -> Diagnostics {
        cluster_config::parse(config).1
    }

    async fn modify_plan(&self, _ctx: &Context, request: &PlanRequest, plan: &mut PlanResponse) {
        if request.is_create() || request.is_destroy() {
            return;
        }
        // A new image replaces nodes (rolling), so what names nodes and endpoints changes.
        let image_changed = request.prior_state.get_attr("image_reference")
            != request.proposed_new_state.get_attr("image_reference");
        // Read marks stopped or vanished nodes as not joined: apply restarts or replaces them,
        // and a restarted machine may get new loopback ports if its old ones were taken.
        let repairing = request
            .prior_state
            .get_attr("nodes")
            .and_then(Value::as_elements)
            .is_some_and(|nodes| {
                nodes
                    .iter()
                    .any(|n| n.get_attr("joined").and_then(Value::as_bool) == Some(false))
            });
        // Values fixed at creation stay as they are on other in-place updates.
        for a in [
            "id",
            "cluster_id",
            "image_version",
            "management_endpoint",
            "verification_endpoint",
            "cluster_ca_pem",
            "owner_certificate_pem",
            "owner_private_key_pem",
            "kubeconfig",
            "kubernetes_status",
            "master_secret",
            "master_salt",
        ] {
            if image_changed
                && matches!(
                    a,
                    "image_version" | "management_endpoint" | "verification_endpoint"
                )
            {
                continue;
            }
            if repairing && matches!(a, "management_endpoint" | "verification_endpoint") {
                continue;
            }
            plan.use_prior_if_unknown(&request.prior_state, &AttributePath::new(a));
        }
        let same =
            |a: &str| request.prior_state.get_attr(a) == request.proposed_new_state.get_attr(a);
        if !image_changed && same("worker_count") && same("control_plane_count") {
            plan.use_prior_if_unknown(&request.prior_state, &AttributePath::new("nodes"));
        }
    }

    async fn update(&self, ctx: &Context, request: ApplyRequest) -> StateResponse {
        match executor::update(ctx, &request).await {
            Ok(state) => StateResponse::new(state),
            Err(d) => StateResponse::from_diagnostics(d),
        }
    }

    async fn read(&self, ctx: &Context, request: ReadRequest) -> StateResponse {
        read::read(ctx, request).await
    }

    async fn create(&self, ctx: &Context, request: ApplyRequest) -> StateResponse {
        create::create(ctx, request).await
    }

    async fn delete(&self, ctx: &Context, request: ApplyRequest) -> Diagnostics {
        read::delete(ctx, request).await
    }

    async fn import(&self, ctx: &Context, id: &str) -> ImportResponse {
        read::import(ctx, id).await
    }
}
