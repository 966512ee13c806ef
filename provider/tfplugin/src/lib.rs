//! A Terraform plugin protocol v6 server library.
//!
//! `tfplugin` lets a Rust binary be a Terraform (or OpenTofu) provider. It speaks the
//! plugin protocol 6 of Terraform 1.11 (wire 6.9) over gRPC, including go-plugin's
//! handshake, AutoMTLS, health, stdio and controller services, and does the generic
//! protocol work — value codecs, default planning, `requires_replace`, write-only
//! handling, diagnostics — so that a provider only implements its resources.
//!
//! # Quick start
//!
//! ```no_run
//! use std::sync::Arc;
//! use tfplugin::schema::{Attribute, Block, Schema};
//! use tfplugin::{
//!     ApplyRequest, ConfigureResponse, Context, Diagnostics, Provider, ReadRequest, Resource,
//!     StateResponse, Type, Value,
//! };
//!
//! struct Example;
//!
//! #[tfplugin::async_trait]
//! impl Provider for Example {
//!     fn schema(&self) -> Schema {
//!         Schema::new(Block::new())
//!     }
//!     async fn configure(&self, _: &Context, _: &str, _: Value) -> ConfigureResponse {
//!         ConfigureResponse::default()
//!     }
//!     fn resources(&self) -> Vec<Arc<dyn Resource>> {
//!         vec![Arc::new(Greeting)]
//!     }
//! }
//!
//! /// `example_greeting`: a computed greeting for a name.
//! struct Greeting;
//!
//! #[tfplugin::async_trait]
//! impl Resource for Greeting {
//!     fn type_name(&self) -> &str {
//!         "example_greeting"
//!     }
//!     fn schema(&self) -> Schema {
//!         Schema::new(
//!             Block::new()
//!                 .attribute(Attribute::required("name", Type::String))
//!                 .attribute(Attribute::computed("text", Type::String)),
//!         )
//!     }
//!     async fn read(&self, _: &Context, request: ReadRequest) -> StateResponse {
//!         StateResponse::new(request.current_state)
//!     }
//!     async fn create(&self, _: &Context, request: ApplyRequest) -> StateResponse {
//!         // The planned state has `text` unknown; the result must make it known.
//!         let name = request.config.get_attr("name").and_then(Value::as_str).unwrap_or("");
//!         let mut state = request.planned_state;
//!         let text = Value::string(format!("Hello, {name}!"));
//!         let _ = state.set_at(&tfplugin::AttributePath::new("text"), text);
//!         StateResponse::new(state)
//!     }
//!     async fn update(&self, ctx: &Context, request: ApplyRequest) -> StateResponse {
//!         self.create(ctx, request).await
//!     }
//!     async fn delete(&self, _: &Context, _: ApplyRequest) -> Diagnostics {
//!         Diagnostics::new()
//!     }
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> std::process::ExitCode {
//!     match tfplugin::serve(Example).await {
//!         Ok(()) => std::process::ExitCode::SUCCESS,
//!         Err(error) => {
//!             eprintln!("{error}");
//!             std::process::ExitCode::FAILURE
//!         }
//!     }
//! }
//! ```
//!
//! Name the binary `terraform-provider-<name>`; Terraform starts it (running it by hand
//! prints an explanation and exits non-zero). `TF_LOG=debug` (or `TF_LOG_PROVIDER`) shows
//! the provider's `tracing` events in Terraform's log.
//!
//! # Modules
//!
//! - [`provider`]: the traits a provider implements and the request/response types.
//! - [`server`]: [`serve`]/[`serve_with`], and the generated protocol types.
//! - [`schema`], [`types`], [`value`], [`binding`]: schemas, cty types and values, typed
//!   binding to Rust structs; [`msgpack`] and [`json`]: the wire codecs.
//! - [`diag`], [`path`]: diagnostics pointing at attributes.
//! - [`handshake`], [`tls`], [`logging`]: go-plugin handshake, AutoMTLS, hclog-style logs.

// Data layer: values, types, schema, codecs, typed binding.
pub mod binding;
pub mod diag;
pub mod json;
pub mod msgpack;
pub mod path;
pub mod schema;
pub mod types;
pub mod value;

pub use binding::{Attr, from_value, to_value};
pub use diag::{Diagnostic, Diagnostics, Severity};
pub use path::{AttributePath, PathStep};
pub use schema::{
    Attribute, AttributeType, Block, BlockNesting, NestedAttributes, NestedBlock, ObjectNesting,
    Schema, StringKind,
};
pub use types::{ObjectType, Type, TypeError};
pub use value::{CodecError, Number, NumberError, Refinements, Value};

// Protocol server, handshake, AutoMTLS, logging, provider traits.
pub mod convert;
pub mod handshake;
pub mod logging;
pub mod provider;
pub mod server;
pub mod tls;

pub use async_trait::async_trait;
pub use provider::{
    ApplyRequest, ClientCapabilities, ConfigureResponse, Context, DataSource, EphemeralResource,
    EphemeralResponse, Function, FunctionError, ImportResponse, ImportedResource, MoveStateRequest,
    Parameter, PlanRequest, PlanResponse, Provider, ProviderData, RawState, ReadRequest, Resource,
    Signature, StateResponse,
};
pub use server::{ServeError, ServeOptions, serve, serve_with};
pub use tokio_util::sync::CancellationToken;

// Docs generator: registry-style Markdown pages from provider schemas.
pub mod docs;
