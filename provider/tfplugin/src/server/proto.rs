//! Generated protocol types and service stubs.
//!
//! Public so that tests, benchmarks and custom hosts can speak the protocol directly; the
//! provider-facing API does not require them.

/// Terraform plugin protocol 6 (`tfplugin6`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod tfplugin6 {
    tonic::include_proto!("tfplugin6");
}

/// go-plugin's controller and stdio services (`plugin`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod plugin {
    tonic::include_proto!("plugin");
}

/// The tonic request/response wrappers the generated services use, re-exported so that
/// callers of the generated types need no direct tonic dependency.
pub use tonic::{Request, Response, Status};
