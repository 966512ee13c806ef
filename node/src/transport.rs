//! The aTLS transport (attest crate) behind [`Transport`].
//!
//! Init and recovery: this node attests, clients validate it. Join and key: the client
//! attests and the server validates it with the cluster's current validators (shared
//! `Validators`, so management updates apply to the next handshake); as upstream, the join
//! server does not attest itself, the joiner's secrets are protected by the server's
//! validation of the joiner. A joiner cannot know its cluster's validators (measurements
//! change with every image), so what comes back is checked by the join client instead: a
//! rejoin ticket must open the disk and match its recorded cluster ID before PCR 15 is
//! extended, and `GetPeers` answers carry an authenticator keyed by the member's disk key.

use std::sync::Arc;

use constellation_attest::Validators;
use constellation_attest::atls::{AtlsClient, AtlsServer, ServerVerification};
use constellation_attest::validator::Issuer;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::Channel;

use crate::bootstrap::{BoxFut, Transport};

/// aTLS with this node's issuer.
#[derive(Clone)]
pub struct AtlsTransport {
    issuer: Arc<dyn Issuer>,
}

impl std::fmt::Debug for AtlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtlsTransport")
            .field("variant", &self.issuer.variant())
            .finish()
    }
}

/// The aTLS transport attesting with `issuer`.
pub fn atls(issuer: Arc<dyn Issuer>) -> Arc<dyn Transport> {
    Arc::new(AtlsTransport { issuer })
}

async fn serve(routes: Routes, listener: TcpListener, server: AtlsServer) -> Result<(), String> {
    constellation_attest::atls::serve_routes(routes, listener, server, std::future::pending())
        .await
        .map_err(|e| e.to_string())
}

impl Transport for AtlsTransport {
    fn serve_node_attested(
        &self,
        routes: Routes,
        listener: TcpListener,
    ) -> BoxFut<'static, Result<(), String>> {
        let server = AtlsServer::new(Some(self.issuer.clone()), None);
        Box::pin(async move { serve(routes, listener, server.map_err(|e| e.to_string())?).await })
    }

    fn serve_client_attested(
        &self,
        routes: Routes,
        listener: TcpListener,
        validators: Validators,
    ) -> BoxFut<'static, Result<(), String>> {
        let server = AtlsServer::new(None, Some(validators));
        Box::pin(async move { serve(routes, listener, server.map_err(|e| e.to_string())?).await })
    }

    fn connect_attesting(&self, endpoint: String) -> BoxFut<'static, Result<Channel, String>> {
        let client = AtlsClient::new(
            Some(self.issuer.clone()),
            ServerVerification::Unauthenticated,
        );
        Box::pin(async move {
            let client = client.map_err(|e| e.to_string())?;
            constellation_attest::atls::connect_channel(&format!("http://{endpoint}"), client)
                .await
                .map_err(|e| format!("aTLS connection to {endpoint} failed: {e}"))
        })
    }
}
