//! The Constellation Terraform provider: data sources that resolve a node image and build the
//! attestation config from it, and functions for attestation policies.
//!
//! One file per data source / function, each with its tests. The cluster resource and the
//! cluster verification data source come with the local QEMU backend (see the issue tracker).

mod data_source_attestation;
mod data_source_image;
mod function_expected_pcr15;
mod measurements_attr;

use std::sync::Arc;

use tfplugin::provider::{ConfigureResponse, Context, DataSource, Function, Provider};
use tfplugin::{Block, Schema, Value};

pub use data_source_attestation::AttestationDataSource;
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

    fn data_sources(&self) -> Vec<Arc<dyn DataSource>> {
        vec![Arc::new(ImageDataSource), Arc::new(AttestationDataSource)]
    }

    fn functions(&self) -> Vec<Arc<dyn Function>> {
        vec![Arc::new(ExpectedPcr15)]
    }
}
