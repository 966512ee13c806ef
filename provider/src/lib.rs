//! The Constellation Terraform provider: data sources that resolve a node image and build the
//! attestation config from it, and functions for attestation policies.
//!
//! One file per resource / data source / function, each with its tests. Machines come from a
//! [`cloud::Cloud`] backend (the local QEMU backend so far); the node API clients are in
//! `node_client`.

pub mod cloud;
mod cluster;
mod cluster_config;
mod create_marker;
mod data_source_attestation;
mod data_source_cluster_verification;
mod data_source_image;
mod function_expected_pcr15;
mod measurements_attr;
mod node_client;

use std::sync::Arc;

use tfplugin::provider::{ConfigureResponse, Context, DataSource, Function, Provider, Resource};
use tfplugin::{Block, Schema, Value};

pub use cluster::{ClusterRecord, ClusterResource};
pub use data_source_attestation::AttestationDataSource;
pub use data_source_cluster_verification::ClusterVerificationDataSource;
pub use data_source_image::ImageDataSource;
pub use function_expected_pcr15::ExpectedPcr15;

/// A typed-binding error as a diagnostic at its attribute path.
pub(crate) fn binding_diag(e: tfplugin::binding::Error) -> tfplugin::Diagnostics {
    tfplugin::Diagnostics::from(tfplugin::Diagnostic::from(e))
}

/// The provider. It keeps no configuration yet: every data source is self-contained.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConstellationProvider;

#[tfplugin::async_trait]
impl Provider for ConstellationProvider {
    fn schema(&self) -> Schema {
        Schema::new(Block::new().description(
            "The **constellation** provider creates confidential Kubernetes clusters whose nodes \
             prove by remote attestation that they run a measured node image, and re-verifies \
             them at any time. The local QEMU backend is the default for trying it.",
        ))
    }

    async fn configure(
        &self,
        _ctx: &Context,
        _tf_version: &str,
        _config: Value,
    ) -> ConfigureResponse {
        ConfigureResponse::default()
    }

    fn resources(&self) -> Vec<Arc<dyn Resource>> {
        vec![Arc::new(ClusterResource)]
    }

    fn data_sources(&self) -> Vec<Arc<dyn DataSource>> {
        vec![
            Arc::new(ImageDataSource),
            Arc::new(AttestationDataSource),
            Arc::new(ClusterVerificationDataSource),
        ]
    }

    fn functions(&self) -> Vec<Arc<dyn Function>> {
        vec![Arc::new(ExpectedPcr15)]
    }
}
