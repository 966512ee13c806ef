//! The `tfplugin6.Provider` service: decodes requests with the schemas' implied types,
//! calls the provider's handlers, and encodes their results.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::plan;
use super::proto::tfplugin6 as pb;
use crate::convert::{
    diagnostics_to_proto, function_error_to_proto, path_to_proto, schema_to_proto,
    signature_to_proto,
};
use crate::diag::{Diagnostic, Diagnostics};
use crate::provider::{
    ApplyRequest, ClientCapabilities, Context, DataSource, EphemeralResource, Function,
    FunctionError, MoveStateRequest, PlanRequest, PlanResponse, Provider, ProviderData, RawState,
    ReadRequest, Resource, Signature,
};
use crate::schema::Schema;
use crate::types::Type;
use crate::value::Value;

/// A registered type with its schema and implied value type, computed once.
struct Registered<T: ?Sized> {
    imp: Arc<T>,
    schema: Schema,
    ty: Type,
}

impl<T: ?Sized> Registered<T> {
    fn new(imp: Arc<T>, schema: Schema) -> Self {
        let ty = schema.value_type();
        Self { imp, schema, ty }
    }
}

/// The tfplugin6 `Provider` service around a [`Provider`].
pub struct ProviderService {
    provider: Arc<dyn Provider>,
    schema: Schema,
    ty: Type,
    meta: Option<(Schema, Type)>,
    resources: HashMap<String, Registered<dyn Resource>>,
    data_sources: HashMap<String, Registered<dyn DataSource>>,
    ephemeral: HashMap<String, Registered<dyn EphemeralResource>>,
    functions: HashMap<String, (Arc<dyn Function>, Signature)>,
    provider_data: RwLock<Option<ProviderData>>,
    stop: Mutex<CancellationToken>,
}

impl std::fmt::Debug for ProviderService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderService")
            .field("resources", &self.resources.keys().collect::<Vec<_>>())
            .field(
                "data_sources",
                &self.data_sources.keys().collect::<Vec<_>>(),
            )
            .field(
                "ephemeral_resources",
                &self.ephemeral.keys().collect::<Vec<_>>(),
            )
            .field("functions", &self.functions.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn unknown_type(kind: &str, name: &str) -> Diagnostic {
    Diagnostic::error(
        format!("Unknown {kind} type"),
        format!(
            "This provider has no {kind} type {name:?}. Check the type name in the configuration \
             and that the provider version in use offers it."
        ),
    )
}

fn client_caps(caps: Option<&pb::ClientCapabilities>) -> ClientCapabilities {
    caps.map(|c| ClientCapabilities::new(c.deferral_allowed, c.write_only_attributes_allowed))
        .unwrap_or_default()
}

/// Decodes a DynamicValue; an absent or empty one is null.
fn decode(dv: Option<&pb::DynamicValue>, ty: &Type, what: &str) -> Result<Value, Diagnostic> {
    let Some(dv) = dv else {
        return Ok(Value::Null);
    };
    let result = if !dv.msgpack.is_empty() {
        crate::msgpack::decode(&dv.msgpack, ty)
    } else if !dv.json.is_empty() {
        crate::json::decode(&dv.json, ty)
    } else {
        return Ok(Value::Null);
    };
    result.map_err(|e| {
        Diagnostic::error(
            format!("Invalid {what}"),
            format!(
                "The provider could not decode the {what} Terraform sent: {e}. Check that the \
                 Terraform version is supported by this provider; otherwise report this as a bug."
            ),
        )
        .with_path(e.path().clone())
    })
}

/// Encodes a value as msgpack DynamicValue.
fn encode(value: &Value, ty: &Type, what: &str) -> Result<pb::DynamicValue, Diagnostic> {
    crate::msgpack::encode(value, ty)
        .map(|msgpack| pb::DynamicValue {
            msgpack,
            json: Vec::new(),
        })
        .map_err(|e| {
            Diagnostic::error(
                format!("Provider returned an invalid {what}"),
                format!(
                    "The {what} does not match the schema: {e}. This is a bug in the provider."
                ),
            )
            .with_path(e.path().clone())
        })
}

/// Encodes into an optional DynamicValue, recording failures in `diags`.
fn encode_into(
    value: &Value,
    ty: &Type,
    what: &str,
    diags: &mut Diagnostics,
) -> Option<pb::DynamicValue> {
    match encode(value, ty, what) {
        Ok(dv) => Some(dv),
        Err(d) => {
            diags.push(d);
            None
        }
    }
}

impl ProviderService {
    /// Builds the service, computing every schema and implied type once.
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        let schema = provider.schema();
        let ty = schema.value_type();
        let meta = provider.provider_meta_schema().map(|s| {
            let t = s.value_type();
            (s, t)
        });
        let resources = provider
            .resources()
            .into_iter()
            .map(|r| {
                (
                    r.type_name().to_owned(),
                    Registered::new(r.clone(), r.schema()),
                )
            })
            .collect();
        let data_sources = provider
            .data_sources()
            .into_iter()
            .map(|r| {
                (
                    r.type_name().to_owned(),
                    Registered::new(r.clone(), r.schema()),
                )
            })
            .collect();
        let ephemeral = provider
            .ephemeral_resources()
            .into_iter()
            .map(|r| {
                (
                    r.type_name().to_owned(),
                    Registered::new(r.clone(), r.schema()),
                )
            })
            .collect();
        let functions = provider
            .functions()
            .into_iter()
            .map(|f| (f.name().to_owned(), (f.clone(), f.signature())))
            .collect();
        Self {
            provider,
            schema,
            ty,
            meta,
            resources,
            data_sources,
            ephemeral,
            functions,
            provider_data: RwLock::new(None),
            stop: Mutex::new(CancellationToken::new()),
        }
    }

    /// Cancels every in-flight operation (as `StopProvider` does). Later calls get a fresh
    /// token.
    pub fn stop(&self) {
        let mut token = self
            .stop
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        token.cancel();
        *token = CancellationToken::new();
    }

    fn context(&self, caps: ClientCapabilities) -> Context {
        let cancel = self
            .stop
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .child_token();
        let data = self
            .provider_data
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        Context::new(cancel, caps, data)
    }

    fn capabilities() -> pb::ServerCapabilities {
        pb::ServerCapabilities {
            plan_destroy: true,
            // The server needs no GetProviderSchema call before other RPCs (schemas are built at
            // start), so Terraform may reuse its cached copy: every provider start after the
            // first within one command skips a schema transfer and decode.
            get_provider_schema_optional: true,
            move_resource_state: true,
        }
    }

    fn decode_meta(&self, dv: Option<&pb::DynamicValue>) -> Result<Value, Diagnostic> {
        match &self.meta {
            Some((_, ty)) => decode(dv, ty, "provider_meta"),
            None => Ok(Value::Null),
        }
    }

    fn resource(&self, name: &str) -> Result<&Registered<dyn Resource>, Diagnostics> {
        self.resources
            .get(name)
            .ok_or_else(|| unknown_type("resource", name).into())
    }
}

/// Shorthand: a diagnostics-only response through `Default`.
macro_rules! diags_only {
    ($t:ty, $d:expr) => {
        Ok(Response::new(<$t>::default()).map(|mut r| {
            r.diagnostics = diagnostics_to_proto(&$d);
            r
        }))
    };
}

/// Unwraps a `Result<T, Diagnostic(s)>` or returns a diagnostics-only response.
macro_rules! tri {
    ($e:expr, $t:ty) => {
        match $e {
            Ok(v) => v,
            Err(d) => {
                let d: Diagnostics = d.into();
                return diags_only!($t, d);
            }
        }
    };
}

#[tonic::async_trait]
impl pb::provider_server::Provider for ProviderService {
    async fn get_metadata(
        &self,
        _request: Request<pb::get_metadata::Request>,
    ) -> Result<Response<pb::get_metadata::Response>, Status> {
        use pb::get_metadata as m;
        Ok(Response::new(m::Response {
            server_capabilities: Some(Self::capabilities()),
            diagnostics: Vec::new(),
            data_sources: self
                .data_sources
                .keys()
                .map(|n| m::DataSourceMetadata {
                    type_name: n.clone(),
                })
                .collect(),
            resources: self
                .resources
                .keys()
                .map(|n| m::ResourceMetadata {
                    type_name: n.clone(),
                })
                .collect(),
            functions: self
                .functions
                .keys()
                .map(|n| m::FunctionMetadata { name: n.clone() })
                .collect(),
            ephemeral_resources: self
                .ephemeral
                .keys()
                .map(|n| m::EphemeralMetadata {
                    type_name: n.clone(),
                })
                .collect(),
        }))
    }

    async fn get_provider_schema(
        &self,
        _request: Request<pb::get_provider_schema::Request>,
    ) -> Result<Response<pb::get_provider_schema::Response>, Status> {
        Ok(Response::new(pb::get_provider_schema::Response {
            provider: Some(schema_to_proto(&self.schema)),
            resource_schemas: self
                .resources
                .iter()
                .map(|(n, r)| (n.clone(), schema_to_proto(&r.schema)))
                .collect(),
            data_source_schemas: self
                .data_sources
                .iter()
                .map(|(n, r)| (n.clone(), schema_to_proto(&r.schema)))
                .collect(),
            diagnostics: Vec::new(),
            provider_meta: self.meta.as_ref().map(|(s, _)| schema_to_proto(s)),
            server_capabilities: Some(Self::capabilities()),
            functions: self
                .functions
                .iter()
                .map(|(n, (_, sig))| (n.clone(), signature_to_proto(sig)))
                .collect(),
            ephemeral_resource_schemas: self
                .ephemeral
                .iter()
                .map(|(n, r)| (n.clone(), schema_to_proto(&r.schema)))
                .collect(),
        }))
    }

    async fn validate_provider_config(
        &self,
        request: Request<pb::validate_provider_config::Request>,
    ) -> Result<Response<pb::validate_provider_config::Response>, Status> {
        type R = pb::validate_provider_config::Response;
        let req = request.into_inner();
        tracing::debug!("ValidateProviderConfig");
        let config = tri!(
            decode(req.config.as_ref(), &self.ty, "provider configuration"),
            R
        );
        let ctx = self.context(ClientCapabilities::default());
        let diags = self.provider.validate(&ctx, &config).await;
        diags_only!(R, diags)
    }

    async fn validate_resource_config(
        &self,
        request: Request<pb::validate_resource_config::Request>,
    ) -> Result<Response<pb::validate_resource_config::Response>, Status> {
        type R = pb::validate_resource_config::Response;
        let req = request.into_inner();
        tracing::debug!(type_name = %req.type_name, "ValidateResourceConfig");
        let res = tri!(self.resource(&req.type_name), R);
        let caps = client_caps(req.client_capabilities.as_ref());
        let config = tri!(
            decode(req.config.as_ref(), &res.ty, "resource configuration"),
            R
        );
        let mut diags = Diagnostics::new();
        if !caps.write_only_attributes_allowed {
            for path in res.schema.block.write_only_paths(&config) {
                diags.error_at(
                    path,
                    "Write-only attribute not supported",
                    "This attribute is write-only, which needs Terraform 1.11 or newer. Upgrade \
                     Terraform or remove the attribute from the configuration.",
                );
            }
        }
        let ctx = self.context(caps);
        diags.extend(res.imp.validate(&ctx, &config).await);
        diags_only!(R, diags)
    }

    async fn validate_data_resource_config(
        &self,
        request: Request<pb::validate_data_resource_config::Request>,
    ) -> Result<Response<pb::validate_data_resource_config::Response>, Status> {
        type R = pb::validate_data_resource_config::Response;
        let req = request.into_inner();
        tracing::debug!(type_name = %req.type_name, "ValidateDataResourceConfig");
        let ds = tri!(
            self.data_sources
                .get(&req.type_name)
                .ok_or_else(|| unknown_type("data source", &req.type_name)),
            R
        );
        let config = tri!(
            decode(req.config.as_ref(), &ds.ty, "data source configuration"),
            R
        );
        let ctx = self.context(ClientCapabilities::default());
        let diags = ds.imp.validate(&ctx, &config).await;
        diags_only!(R, diags)
    }

    async fn upgrade_resource_state(
        &self,
        request: Request<pb::upgrade_resource_state::Request>,
    ) -> Result<Response<pb::upgrade_resource_state::Response>, Status> {
        type R = pb::upgrade_resource_state::Response;
        let req = request.into_inner();
        tracing::debug!(type_name = %req.type_name, "UpgradeResourceState");
        let res = tri!(self.resource(&req.type_name), R);
        let raw = req.raw_state.unwrap_or_default();
        let current = res.schema.version;
        if req.version > current {
            let d = Diagnostic::error(
                "State written by a newer provider",
                format!(
                    "The state of this {} was written with schema version {}, but this provider \
                     only knows versions up to {current}. Use the newer provider version.",
                    req.type_name, req.version
                ),
            );
            return diags_only!(R, Diagnostics::from(d));
        }
        let mut diags = Diagnostics::new();
        let state = if req.version == current && !raw.json.is_empty() {
            // Same version: only decode. Attributes no longer in the schema are dropped, as
            // Terraform expects from providers that removed optional attributes.
            let options = crate::json::JsonOptions::lenient();
            tri!(
                crate::json::decode_with(&raw.json, &res.ty, options).map_err(|e| {
                    Diagnostic::error(
                        "Invalid stored state",
                        format!("The stored state does not match the resource schema: {e}."),
                    )
                    .with_path(e.path().clone())
                }),
                R
            )
        } else {
            let raw_state = if raw.json.is_empty() {
                RawState::Flatmap(raw.flatmap)
            } else {
                RawState::Json(raw.json)
            };
            let ctx = self.context(ClientCapabilities::default());
            let resp = res.imp.upgrade_state(&ctx, req.version, raw_state).await;
            diags.extend(resp.diagnostics);
            if diags.has_errors() {
                return diags_only!(R, diags);
            }
            resp.state
        };
        let state = res.schema.block.null_write_only(state);
        let upgraded_state = encode_into(&state, &res.ty, "upgraded state", &mut diags);
        Ok(Response::new(R {
            upgraded_state,
            diagnostics: diagnostics_to_proto(&diags),
        }))
    }

    async fn get_resource_identity_schemas(
        &self,
        _request: Request<pb::get_resource_identity_schemas::Request>,
    ) -> Result<Response<pb::get_resource_identity_schemas::Response>, Status> {
        // Resource identity (protocol 6.9) is not offered: no resource has an identity.
        Ok(Response::new(
            pb::get_resource_identity_schemas::Response::default(),
        ))
    }

    async fn upgrade_resource_identity(
        &self,
        request: Request<pb::upgrade_resource_identity::Request>,
    ) -> Result<Response<pb::upgrade_resource_identity::Response>, Status> {
        type R = pb::upgrade_resource_identity::Response;
        let name = request.into_inner().type_name;
        let d = Diagnostic::error(
            "Resource identity not supported",
            format!("Resource type {name} has no identity schema; there is nothing to upgrade."),
        );
        diags_only!(R, Diagnostics::from(d))
    }

    async fn configure_provider(
        &self,
        request: Request<pb::configure_provider::Request>,
    ) -> Result<Response<pb::configure_provider::Response>, Status> {
        type R = pb::configure_provider::Response;
        let req = request.into_inner();
        tracing::debug!("ConfigureProvider");
        let config = tri!(
            decode(req.config.as_ref(), &self.ty, "provider configuration"),
            R
        );
        let ctx = self.context(client_caps(req.client_capabilities.as_ref()));
        let resp = self
            .provider
            .configure(&ctx, &req.terraform_version, config)
            .await;
        if !resp.diagnostics.has_errors() {
            *self
                .provider_data
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = resp.provider_data;
        }
        diags_only!(R, resp.diagnostics)
    }

    async fn read_resource(
        &self,
        request: Request<pb::read_resource::Request>,
    ) -> Result<Response<pb::read_resource::Response>, Status> {
        type R = pb::read_resource::Response;
        let req = request.into_inner();
        tracing::debug!(type_name = %req.type_name, "ReadResource");
        let res = tri!(self.resource(&req.type_name), R);
        let current = tri!(
            decode(req.current_state.as_ref(), &res.ty, "current state"),
            R
        );
        let meta = tri!(self.decode_meta(req.provider_meta.as_ref()), R);
        let ctx = self.context(client_caps(req.client_capabilities.as_ref()));
        let resp = res
            .imp
            .read(
                &ctx,
                ReadRequest {
                    current_state: current.clone(),
                    private: req.private.clone(),
                    provider_meta: meta,
                },
            )
            .await;
        let mut diags = resp.diagnostics;
        // On failure keep what Terraform has, so an error never drops a resource from state.
        let state = if diags.has_errors() {
            current
        } else {
            res.schema.block.null_write_only(resp.state)
        };
        if !diags.has_errors()
            && let Some(path) = plan::first_unknown(&state)
        {
            diags.error_at(
                path,
                "Provider returned an unknown value from read",
                "Read must return known values only. This is a bug in the provider.",
            );
        }
        let new_state = encode_into(&state, &res.ty, "state", &mut diags);
        Ok(Response::new(R {
            new_state,
            diagnostics: diagnostics_to_proto(&diags),
            private: resp.private.unwrap_or(req.private),
            deferred: None,
            new_identity: None,
        }))
    }

    async fn plan_resource_change(
        &self,
        request: Request<pb::plan_resource_change::Request>,
    ) -> Result<Response<pb::plan_resource_change::Response>, Status> {
        type R = pb::plan_resource_change::Response;
        let req = request.into_inner();
        tracing::debug!(type_name = %req.type_name, "PlanResourceChange");
        let res = tri!(self.resource(&req.type_name), R);
        let prior = tri!(decode(req.prior_state.as_ref(), &res.ty, "prior state"), R);
        let proposed = tri!(
            decode(
                req.proposed_new_state.as_ref(),
                &res.ty,
                "proposed new state"
            ),
            R
        );
        let config = tri!(decode(req.config.as_ref(), &res.ty, "configuration"), R);
        let meta = tri!(self.decode_meta(req.provider_meta.as_ref()), R);
        let ctx = self.context(client_caps(req.client_capabilities.as_ref()));
        let block = &res.schema.block;

        let proposed = block.null_write_only(proposed);
        let planned = if proposed.is_null() {
            Value::Null
        } else if prior.is_null() || proposed != prior {
            plan::mark_computed_unknown(block, proposed.clone(), Some(&config))
        } else {
            // Nothing changed: the plan must equal the prior state exactly.
            prior.clone()
        };
        let plan_request = PlanRequest {
            prior_state: prior.clone(),
            proposed_new_state: proposed,
            config,
            prior_private: req.prior_private.clone(),
            provider_meta: meta,
        };
        let mut plan = PlanResponse {
            planned_state: planned,
            requires_replace: Vec::new(),
            planned_private: req.prior_private,
            diagnostics: Diagnostics::new(),
        };
        res.imp.modify_plan(&ctx, &plan_request, &mut plan).await;

        let mut diags = plan.diagnostics;
        let destroy = plan_request.is_destroy();
        // A destroy stays a destroy whatever the handler did; write-only never planned.
        let planned = if destroy {
            Value::Null
        } else {
            block.null_write_only(plan.planned_state)
        };
        let requires_replace = if prior.is_null() || destroy {
            Vec::new()
        } else {
            let mut candidates = res.imp.requires_replace();
            candidates.extend(plan.requires_replace);
            candidates.retain(plan::is_attribute_path);
            plan::changed_paths(&prior, &planned, candidates)
        };
        let planned_state = encode_into(&planned, &res.ty, "planned state", &mut diags);
        Ok(Response::new(R {
            planned_state,
            requires_replace: requires_replace.iter().map(path_to_proto).collect(),
            planned_private: plan.planned_private,
            diagnostics: diagnostics_to_proto(&diags),
            legacy_type_system: false,
            deferred: None,
            planned_identity: None,
        }))
    }

    async fn apply_resource_change(
        &self,
        request: Request<pb::apply_resource_change::Request>,
    ) -> Result<Response<pb::apply_resource_change::Response>, Status> {
        type R = pb::apply_resource_change::Response;
        let req = request.into_inner();
        tracing::debug!(type_name = %req.type_name, "ApplyResourceChange");
        let res = tri!(self.resource(&req.type_name), R);
        let prior = tri!(decode(req.prior_state.as_ref(), &res.ty, "prior state"), R);
        let planned = tri!(
            decode(req.planned_state.as_ref(), &res.ty, "planned state"),
            R
        );
        let config = tri!(decode(req.config.as_ref(), &res.ty, "configuration"), R);
        let meta = tri!(self.decode_meta(req.provider_meta.as_ref()), R);
        let ctx = self.context(ClientCapabilities::default());
        let block = &res.schema.block;
        let apply = ApplyRequest {
            prior_state: prior.clone(),
            planned_state: planned.clone(),
            config,
            planned_private: req.planned_private.clone(),
            provider_meta: meta,
        };

        let (state, private, mut diags) = if planned.is_null() {
            let diags = res.imp.delete(&ctx, apply).await;
            // A failed delete keeps the object in state so it can be retried.
            let state = if diags.has_errors() {
                prior
            } else {
                Value::Null
            };
            (state, req.planned_private, diags)
        } else {
            let creating = prior.is_null();
            let resp = if creating {
                res.imp.create(&ctx, apply).await
            } else {
                res.imp.update(&ctx, apply).await
            };
            let failed = resp.diagnostics.has_errors();
            let state = if failed && resp.state.is_null() && !creating {
                // A failed update that returns nothing must not make Terraform forget it.
                prior
            } else if failed {
                // A partial state with the error (Terraform saves it, tainted on create).
                // Terraform rejects unknown values in any applied state, so what the handler
                // could not resolve before failing is stored as null.
                block.null_write_only(unknown_as_null(resp.state))
            } else {
                block.null_write_only(resp.state)
            };
            let private = resp.private.unwrap_or(req.planned_private);
            (state, private, resp.diagnostics)
        };
        if !diags.has_errors()
            && let Some(path) = plan::first_unknown(&state)
        {
            diags.error_at(
                path,
                "Provider left a value unknown after apply",
                "Every value must be known once apply finishes. This is a bug in the provider.",
            );
        }
        let new_state = encode_into(&state, &res.ty, "new state", &mut diags);
        Ok(Response::new(R {
            new_state,
            private,
            diagnostics: diagnostics_to_proto(&diags),
            legacy_type_system: false,
            new_identity: None,
        }))
    }

    async fn import_resource_state(
        &self,
        request: Request<pb::import_resource_state::Request>,
    ) -> Result<Response<pb::import_resource_state::Response>, Status> {
        type R = pb::import_resource_state::Response;
        let req = request.into_inner();
        tracing::debug!(type_name = %req.type_name, "ImportResourceState");
        let res = tri!(self.resource(&req.type_name), R);
        let ctx = self.context(client_caps(req.client_capabilities.as_ref()));
        let resp = res.imp.import(&ctx, &req.id).await;
        let mut diags = resp.diagnostics;
        let mut imported = Vec::new();
        if !diags.has_errors() {
            for object in resp.resources {
                let Some(target) = self.resources.get(&object.type_name) else {
                    diags.push(unknown_type("resource", &object.type_name));
                    continue;
                };
                let state = target.schema.block.null_write_only(object.state);
                if let Some(dv) = encode_into(&state, &target.ty, "imported state", &mut diags) {
                    imported.push(pb::import_resource_state::ImportedResource {
                        type_name: object.type_name,
                        state: Some(dv),
                        private: object.private,
                        identity: None,
                    });
                }
            }
        }
        Ok(Response::new(R {
            imported_resources: imported,
            diagnostics: diagnostics_to_proto(&diags),
            deferred: None,
        }))
    }

    async fn move_resource_state(
        &self,
        request: Request<pb::move_resource_state::Request>,
    ) -> Result<Response<pb::move_resource_state::Response>, Status> {
        type R = pb::move_resource_state::Response;
        let req = request.into_inner();
        tracing::debug!(type_name = %req.target_type_name, "MoveResourceState");
        let res = tri!(self.resource(&req.target_type_name), R);
        let ctx = self.context(ClientCapabilities::default());
        let move_request = MoveStateRequest {
            source_provider_address: req.source_provider_address.clone(),
            source_type_name: req.source_type_name.clone(),
            source_schema_version: req.source_schema_version,
            source_state_json: req.source_state.map(|s| s.json).unwrap_or_default(),
            source_private: req.source_private,
        };
        let Some(resp) = res.imp.move_state(&ctx, move_request).await else {
            let d = Diagnostic::error(
                "Unsupported resource move",
                format!(
                    "Resource type {} cannot be moved from {} (provider {}). Remove the `moved` \
                     block and import the object instead.",
                    req.target_type_name, req.source_type_name, req.source_provider_address
                ),
            );
            return diags_only!(R, Diagnostics::from(d));
        };
        let mut diags = resp.diagnostics;
        let target_state = if diags.has_errors() {
            None
        } else {
            let state = res.schema.block.null_write_only(resp.state);
            encode_into(&state, &res.ty, "moved state", &mut diags)
        };
        Ok(Response::new(R {
            target_state,
            diagnostics: diagnostics_to_proto(&diags),
            target_private: resp.private.unwrap_or_default(),
            target_identity: None,
        }))
    }

    async fn read_data_source(
        &self,
        request: Request<pb::read_data_source::Request>,
    ) -> Result<Response<pb::read_data_source::Response>, Status> {
        type R = pb::read_data_source::Response;
        let req = request.into_inner();
        tracing::debug!(type_name = %req.type_name, "ReadDataSource");
        let ds = tri!(
            self.data_sources
                .get(&req.type_name)
                .ok_or_else(|| unknown_type("data source", &req.type_name)),
            R
        );
        let config = tri!(
            decode(req.config.as_ref(), &ds.ty, "data source configuration"),
            R
        );
        let meta = tri!(self.decode_meta(req.provider_meta.as_ref()), R);
        let ctx = self.context(client_caps(req.client_capabilities.as_ref()));
        let resp = ds.imp.read(&ctx, config, meta).await;
        let mut diags = resp.diagnostics;
        let state = if diags.has_errors() {
            None
        } else {
            let state = ds.schema.block.null_write_only(resp.state);
            encode_into(&state, &ds.ty, "data source state", &mut diags)
        };
        Ok(Response::new(R {
            state,
            diagnostics: diagnostics_to_proto(&diags),
            deferred: None,
        }))
    }

    async fn validate_ephemeral_resource_config(
        &self,
        request: Request<pb::validate_ephemeral_resource_config::Request>,
    ) -> Result<Response<pb::validate_ephemeral_resource_config::Response>, Status> {
        type R = pb::validate_ephemeral_resource_config::Response;
        let req = request.into_inner();
        tracing::debug!(type_name = %req.type_name, "ValidateEphemeralResourceConfig");
        let er = tri!(
            self.ephemeral
                .get(&req.type_name)
                .ok_or_else(|| unknown_type("ephemeral resource", &req.type_name)),
            R
        );
        let config = tri!(
            decode(
                req.config.as_ref(),
                &er.ty,
                "ephemeral resource configuration"
            ),
            R
        );
        let ctx = self.context(ClientCapabilities::default());
        let diags = er.imp.validate(&ctx, &config).await;
        diags_only!(R, diags)
    }

    async fn open_ephemeral_resource(
        &self,
        request: Request<pb::open_ephemeral_resource::Request>,
    ) -> Result<Response<pb::open_ephemeral_resource::Response>, Status> {
        type R = pb::open_ephemeral_resource::Response;
        let req = request.into_inner();
        tracing::debug!(type_name = %req.type_name, "OpenEphemeralResource");
        let er = tri!(
            self.ephemeral
                .get(&req.type_name)
                .ok_or_else(|| unknown_type("ephemeral resource", &req.type_name)),
            R
        );
        let config = tri!(
            decode(
                req.config.as_ref(),
                &er.ty,
                "ephemeral resource configuration"
            ),
            R
        );
        let ctx = self.context(client_caps(req.client_capabilities.as_ref()));
        let resp = er.imp.open(&ctx, config).await;
        let mut diags = resp.diagnostics;
        let result = if diags.has_errors() {
            None
        } else {
            encode_into(&resp.result, &er.ty, "ephemeral result", &mut diags)
        };
        Ok(Response::new(R {
            diagnostics: diagnostics_to_proto(&diags),
            renew_at: resp.renew_at.map(prost_types::Timestamp::from),
            result,
            private: resp.private,
            deferred: None,
        }))
    }

    async fn renew_ephemeral_resource(
        &self,
        request: Request<pb::renew_ephemeral_resource::Request>,
    ) -> Result<Response<pb::renew_ephemeral_resource::Response>, Status> {
        type R = pb::renew_ephemeral_resource::Response;
        let req = request.into_inner();
        tracing::debug!(type_name = %req.type_name, "RenewEphemeralResource");
        let er = tri!(
            self.ephemeral
                .get(&req.type_name)
                .ok_or_else(|| unknown_type("ephemeral resource", &req.type_name)),
            R
        );
        let ctx = self.context(ClientCapabilities::default());
        let resp = er.imp.renew(&ctx, req.private).await;
        Ok(Response::new(R {
            diagnostics: diagnostics_to_proto(&resp.diagnostics),
            renew_at: resp.renew_at.map(prost_types::Timestamp::from),
            private: resp.private,
        }))
    }

    async fn close_ephemeral_resource(
        &self,
        request: Request<pb::close_ephemeral_resource::Request>,
    ) -> Result<Response<pb::close_ephemeral_resource::Response>, Status> {
        type R = pb::close_ephemeral_resource::Response;
        let req = request.into_inner();
        tracing::debug!(type_name = %req.type_name, "CloseEphemeralResource");
        let er = tri!(
            self.ephemeral
                .get(&req.type_name)
                .ok_or_else(|| unknown_type("ephemeral resource", &req.type_name)),
            R
        );
        let ctx = self.context(ClientCapabilities::default());
        let diags = er.imp.close(&ctx, req.private).await;
        diags_only!(R, diags)
    }

    async fn get_functions(
        &self,
        _request: Request<pb::get_functions::Request>,
    ) -> Result<Response<pb::get_functions::Response>, Status> {
        Ok(Response::new(pb::get_functions::Response {
            functions: self
                .functions
                .iter()
                .map(|(n, (_, sig))| (n.clone(), signature_to_proto(sig)))
                .collect(),
            diagnostics: Vec::new(),
        }))
    }

    async fn call_function(
        &self,
        request: Request<pb::call_function::Request>,
    ) -> Result<Response<pb::call_function::Response>, Status> {
        let req = request.into_inner();
        tracing::debug!(function = %req.name, "CallFunction");
        let fail = |e: FunctionError| {
            Ok(Response::new(pb::call_function::Response {
                result: None,
                error: Some(function_error_to_proto(&e)),
            }))
        };
        let Some((function, signature)) = self.functions.get(&req.name) else {
            return fail(FunctionError::new(format!(
                "This provider has no function {:?}.",
                req.name
            )));
        };
        let positional = signature.parameters.len();
        if req.arguments.len() < positional
            || (signature.variadic.is_none() && req.arguments.len() > positional)
        {
            return fail(FunctionError::new(format!(
                "Function {} takes {positional}{} argument(s), got {}.",
                req.name,
                if signature.variadic.is_some() {
                    " or more"
                } else {
                    ""
                },
                req.arguments.len()
            )));
        }
        let mut arguments = Vec::with_capacity(req.arguments.len());
        for (index, dv) in req.arguments.iter().enumerate() {
            let parameter = match signature.parameters.get(index) {
                Some(p) => p,
                // Checked above: beyond the positional ones there is a variadic parameter.
                None => match signature.variadic.as_ref() {
                    Some(p) => p,
                    None => return fail(FunctionError::new("too many arguments")),
                },
            };
            match decode(Some(dv), &parameter.ty, "argument") {
                Ok(v) => arguments.push(v),
                Err(d) => {
                    return fail(FunctionError::argument(
                        index,
                        format!(
                            "Invalid value for parameter {}: {}",
                            parameter.name, d.detail
                        ),
                    ));
                }
            }
        }
        let ctx = self.context(ClientCapabilities::default());
        match function.call(&ctx, arguments).await {
            Ok(result) => match encode(&result, &signature.return_type, "function result") {
                Ok(dv) => Ok(Response::new(pb::call_function::Response {
                    result: Some(dv),
                    error: None,
                })),
                Err(d) => fail(FunctionError::new(format!("{}: {}", d.summary, d.detail))),
            },
            Err(e) => fail(e),
        }
    }

    async fn stop_provider(
        &self,
        _request: Request<pb::stop_provider::Request>,
    ) -> Result<Response<pb::stop_provider::Response>, Status> {
        tracing::info!("StopProvider: cancelling in-flight operations");
        self.stop();
        Ok(Response::new(pb::stop_provider::Response {
            error: String::new(),
        }))
    }
}

/// `value` with every unknown part replaced by null.
fn unknown_as_null(value: Value) -> Value {
    value
        .transform(|_, v| {
            Ok::<_, std::convert::Infallible>(if v.is_unknown() { Value::Null } else { v })
        })
        .unwrap_or_else(|never| match never {})
}
