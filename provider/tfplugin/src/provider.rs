//! The provider-facing API: the traits a provider implements and the request/response types
//! its handlers see.
//!
//! A provider is a [`Provider`] plus the [`Resource`]s, [`DataSource`]s,
//! [`EphemeralResource`]s and [`Function`]s it lists. The server ([`crate::serve`]) does
//! the protocol work around them: it decodes every `DynamicValue` with the schema's implied
//! type, plans computed attributes as unknown, computes `requires_replace`, passes private
//! state through, removes write-only values from anything that becomes state, and maps
//! [`Diagnostics`] onto the wire. Handlers only see decoded [`Value`]s; use
//! [`crate::binding`] to turn them into plain Rust structs.
//!
//! Every handler receives a [`Context`]: it carries the cancellation token that Terraform's
//! `StopProvider` (Ctrl-C) cancels, the client's capabilities, and the data the provider
//! returned from [`Provider::configure`].

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::diag::Diagnostics;
use crate::path::AttributePath;
use crate::schema::Schema;
use crate::types::Type;
use crate::value::Value;

/// Optional protocol features the client (Terraform) announced for this call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientCapabilities {
    /// The client can handle deferred changes.
    pub deferral_allowed: bool,
    /// The client supports write-only attributes on managed resources (Terraform >= 1.11).
    pub write_only_attributes_allowed: bool,
}

impl ClientCapabilities {
    /// Capabilities with every flag set as given.
    pub fn new(deferral_allowed: bool, write_only_attributes_allowed: bool) -> Self {
        Self {
            deferral_allowed,
            write_only_attributes_allowed,
        }
    }
}

/// Data a provider hands from [`Provider::configure`] to every later handler, typically an
/// API client. Retrieve it with [`Context::provider_data`].
pub type ProviderData = Arc<dyn Any + Send + Sync>;

/// Per-call context handed to every handler.
#[derive(Clone)]
pub struct Context {
    cancel: CancellationToken,
    capabilities: ClientCapabilities,
    provider_data: Option<ProviderData>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("cancelled", &self.cancel.is_cancelled())
            .field("capabilities", &self.capabilities)
            .field("configured", &self.provider_data.is_some())
            .finish()
    }
}

impl Context {
    /// A context for calling handlers directly, e.g. from unit tests of a provider.
    pub fn new(
        cancel: CancellationToken,
        capabilities: ClientCapabilities,
        provider_data: Option<ProviderData>,
    ) -> Self {
        Self {
            cancel,
            capabilities,
            provider_data,
        }
    }

    /// The token that is cancelled when Terraform asks the provider to stop (`StopProvider`,
    /// sent on Ctrl-C). Long operations should `select!` on [`CancellationToken::cancelled`]
    /// and return an error diagnostic when it fires.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Whether Terraform has asked the provider to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when Terraform asks the provider to stop.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// The client's capabilities for this call (default when the call carries none).
    pub fn client_capabilities(&self) -> ClientCapabilities {
        self.capabilities
    }

    /// The data [`Provider::configure`] returned, downcast to `T`; `None` before the provider
    /// is configured or when the type does not match.
    pub fn provider_data<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.provider_data.clone()?.downcast::<T>().ok()
    }
}

/// Result of [`Provider::configure`].
#[derive(Default)]
#[non_exhaustive]
pub struct ConfigureResponse {
    /// Data made available to later handlers through [`Context::provider_data`].
    pub provider_data: Option<ProviderData>,
    /// Warnings and errors; an error fails the configuration.
    pub diagnostics: Diagnostics,
}

impl ConfigureResponse {
    /// A successful configuration that makes `data` available to handlers.
    pub fn with_data<T: Any + Send + Sync>(data: T) -> Self {
        Self {
            provider_data: Some(Arc::new(data)),
            diagnostics: Diagnostics::new(),
        }
    }

    /// A failed (or warned) configuration.
    pub fn from_diagnostics(diagnostics: Diagnostics) -> Self {
        Self {
            provider_data: None,
            diagnostics,
        }
    }
}

/// A Terraform provider: its own configuration schema and the types it offers.
///
/// Type names of resources, data sources and ephemeral resources are full names including
/// the provider prefix (`example_file`); function names carry no prefix.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The schema of the `provider "…" {}` block.
    fn schema(&self) -> Schema;

    /// The schema of `provider_meta` in modules, if the provider supports it.
    fn provider_meta_schema(&self) -> Option<Schema> {
        None
    }

    /// Checks the provider configuration beyond what the schema enforces. The config may
    /// contain unknown values.
    async fn validate(&self, _ctx: &Context, _config: &Value) -> Diagnostics {
        Diagnostics::new()
    }

    /// Configures the provider. `config` may contain unknown values when it depends on
    /// resources not yet created. `terraform_version` is the client's version string.
    async fn configure(
        &self,
        ctx: &Context,
        terraform_version: &str,
        config: Value,
    ) -> ConfigureResponse;

    /// The managed resource types.
    fn resources(&self) -> Vec<Arc<dyn Resource>> {
        Vec::new()
    }

    /// The data source types.
    fn data_sources(&self) -> Vec<Arc<dyn DataSource>> {
        Vec::new()
    }

    /// The ephemeral resource types.
    fn ephemeral_resources(&self) -> Vec<Arc<dyn EphemeralResource>> {
        Vec::new()
    }

    /// The provider functions.
    fn functions(&self) -> Vec<Arc<dyn Function>> {
        Vec::new()
    }
}

/// State as stored by an older provider version, handed to [`Resource::upgrade_state`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RawState {
    /// The JSON state document of the resource instance (Terraform >= 0.12).
    Json(Vec<u8>),
    /// The legacy flatmap form (`"list.#" = "2"`, `"list.0" = "a"`) of pre-0.12 state.
    Flatmap(HashMap<String, String>),
}

/// Input to [`Resource::read`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReadRequest {
    /// The state Terraform has recorded.
    pub current_state: Value,
    /// Private state the provider stored with it.
    pub private: Vec<u8>,
    /// `provider_meta` of the calling module (null when not supported or not set).
    pub provider_meta: Value,
}

/// State of a managed resource returned by read, create, update and import.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StateResponse {
    /// The new state. Return [`Value::Null`] from [`Resource::read`] when the remote object
    /// no longer exists; Terraform then plans to create it again.
    pub state: Value,
    /// Private state to store with it, opaque to Terraform. `None` keeps the previous one.
    pub private: Option<Vec<u8>>,
    /// Warnings and errors.
    pub diagnostics: Diagnostics,
}

impl Default for StateResponse {
    /// A null state without diagnostics.
    fn default() -> Self {
        Self::new(Value::Null)
    }
}

impl StateResponse {
    /// A response carrying `state` and no diagnostics.
    pub fn new(state: Value) -> Self {
        Self {
            state,
            private: None,
            diagnostics: Diagnostics::new(),
        }
    }

    /// A response that only carries diagnostics (the state stays unchanged on error).
    pub fn from_diagnostics(diagnostics: Diagnostics) -> Self {
        Self {
            state: Value::Null,
            private: None,
            diagnostics,
        }
    }

    /// A failed create or update that still reports what exists: `state` together with the
    /// error `diagnostics`.
    ///
    /// From [`Resource::create`] this is how a half-made object stays known: Terraform saves
    /// the state, marks it tainted, and the next `destroy` (or the apply that replaces it)
    /// calls [`Resource::delete`] with it. Without it, whatever the create made is in no
    /// state and nothing ever removes it. Values still unknown in `state` are stored as null.
    pub fn partial(state: Value, diagnostics: Diagnostics) -> Self {
        Self {
            state,
            private: None,
            diagnostics,
        }
    }

    /// Sets the private state.
    pub fn with_private(mut self, private: Vec<u8>) -> Self {
        self.private = Some(private);
        self
    }
}

/// Input to [`Resource::modify_plan`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PlanRequest {
    /// The prior state; null when the resource is being created.
    pub prior_state: Value,
    /// Terraform's proposed new state (config merged with prior computed values); null when
    /// the resource is being destroyed.
    pub proposed_new_state: Value,
    /// The configuration; null when the resource is being destroyed. Unlike the states it
    /// contains write-only values.
    pub config: Value,
    /// The private state stored with the prior state.
    pub prior_private: Vec<u8>,
    /// `provider_meta` of the calling module.
    pub provider_meta: Value,
}

impl PlanRequest {
    /// Whether this plan creates the resource.
    pub fn is_create(&self) -> bool {
        self.prior_state.is_null() && !self.proposed_new_state.is_null()
    }

    /// Whether this plan destroys the resource.
    pub fn is_destroy(&self) -> bool {
        self.proposed_new_state.is_null()
    }
}

/// The planned change, prepared by the server's default planning and adjustable by
/// [`Resource::modify_plan`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PlanResponse {
    /// The planned new state: config values, prior values of unchanged computed attributes,
    /// and unknown values for computed attributes that will only be known after apply.
    pub planned_state: Value,
    /// Attributes whose change forces replacement, in addition to the ones the server
    /// derives from [`Resource::requires_replace`].
    pub requires_replace: Vec<AttributePath>,
    /// Private state to hand to apply; starts as the prior private state.
    pub planned_private: Vec<u8>,
    /// Warnings and errors.
    pub diagnostics: Diagnostics,
}

impl Default for PlanResponse {
    /// A null plan without diagnostics.
    fn default() -> Self {
        Self {
            planned_state: Value::Null,
            requires_replace: Vec::new(),
            planned_private: Vec::new(),
            diagnostics: Diagnostics::new(),
        }
    }
}

impl PlanResponse {
    /// Sets the planned value at `path` to unknown ("known after apply").
    ///
    /// Returns false when the path does not exist in the planned state.
    pub fn set_unknown(&mut self, path: &AttributePath) -> bool {
        self.planned_state.set_at(path, Value::unknown()).is_ok()
    }

    /// Sets the planned value at `path`. Returns false when the path does not exist.
    pub fn set(&mut self, path: &AttributePath, value: Value) -> bool {
        self.planned_state.set_at(path, value).is_ok()
    }

    /// Keeps the prior state's value at `path` where the default planning made it unknown
    /// (the "use state for unknown" pattern for computed attributes that never change once
    /// set, such as ids). Does nothing on create or when the prior has no value there.
    pub fn use_prior_if_unknown(&mut self, prior_state: &Value, path: &AttributePath) {
        let planned_unknown = self
            .planned_state
            .get(path)
            .is_some_and(|value| value.is_unknown());
        if !planned_unknown {
            return;
        }
        if let Some(prior) = prior_state.get(path)
            && !prior.is_null()
        {
            let _ = self.planned_state.set_at(path, prior.clone());
        }
    }

    /// Marks `path` as forcing replacement when it changes.
    pub fn require_replace(&mut self, path: AttributePath) {
        self.requires_replace.push(path);
    }
}

/// Input to [`Resource::create`], [`Resource::update`] and [`Resource::delete`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApplyRequest {
    /// The prior state; null on create.
    pub prior_state: Value,
    /// The planned state; null on delete. May contain unknown values, which the result must
    /// replace with known values. Write-only attributes are null here: read them from
    /// `config`.
    pub planned_state: Value,
    /// The configuration, including write-only values; null on delete.
    pub config: Value,
    /// The private state from the plan.
    pub planned_private: Vec<u8>,
    /// `provider_meta` of the calling module.
    pub provider_meta: Value,
}

/// Result of [`Resource::import`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ImportResponse {
    /// The imported objects; usually one. Terraform reads each one afterwards, so a state
    /// with just the identifying attributes set is enough.
    pub resources: Vec<ImportedResource>,
    /// Warnings and errors.
    pub diagnostics: Diagnostics,
}

/// One object produced by an import.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ImportedResource {
    /// The resource type of the object (usually the importing resource's own type).
    pub type_name: String,
    /// Its state.
    pub state: Value,
    /// Its private state.
    pub private: Vec<u8>,
}

impl ImportedResource {
    /// An imported object of type `type_name` with `state` and no private state.
    pub fn new(type_name: impl Into<String>, state: Value) -> Self {
        Self {
            type_name: type_name.into(),
            state,
            private: Vec::new(),
        }
    }
}

impl ImportResponse {
    /// A response with one imported object.
    pub fn single(type_name: impl Into<String>, state: Value) -> Self {
        Self {
            resources: vec![ImportedResource::new(type_name, state)],
            diagnostics: Diagnostics::new(),
        }
    }

    /// A failed import.
    pub fn from_diagnostics(diagnostics: Diagnostics) -> Self {
        Self {
            resources: Vec::new(),
            diagnostics,
        }
    }
}

/// Input to [`Resource::move_state`]: a resource instance moved with a `moved` block from
/// another type (possibly of another provider) to this one.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MoveStateRequest {
    /// Address of the source provider, e.g. `registry.terraform.io/hashicorp/random`.
    pub source_provider_address: String,
    /// The source resource type.
    pub source_type_name: String,
    /// The schema version of the source state.
    pub source_schema_version: i64,
    /// The source state as JSON.
    pub source_state_json: Vec<u8>,
    /// The source private state.
    pub source_private: Vec<u8>,
}

/// A managed resource type.
#[async_trait]
pub trait Resource: Send + Sync + 'static {
    /// The full type name, e.g. `example_file`.
    fn type_name(&self) -> &str;

    /// The schema. Its `version` is the state version that [`Resource::upgrade_state`]
    /// upgrades to.
    fn schema(&self) -> Schema;

    /// Attributes whose change forces a replacement (destroy and create) instead of an
    /// in-place update. The server compares prior and planned values at these paths.
    fn requires_replace(&self) -> Vec<AttributePath> {
        Vec::new()
    }

    /// Checks the configuration beyond what the schema enforces; it may contain unknowns.
    async fn validate(&self, _ctx: &Context, _config: &Value) -> Diagnostics {
        Diagnostics::new()
    }

    /// Upgrades state stored with schema version `version` (older than the current one) to
    /// the current schema. The server handles state already at the current version itself.
    async fn upgrade_state(&self, _ctx: &Context, version: i64, _raw: RawState) -> StateResponse {
        let mut diagnostics = Diagnostics::new();
        diagnostics.error(
            "Unsupported state version",
            format!(
                "Resource type {} cannot upgrade state from schema version {version}. \
                 Use the provider version that wrote this state, or remove the resource from \
                 the state and import it again.",
                self.type_name()
            ),
        );
        StateResponse::from_diagnostics(diagnostics)
    }

    /// Refreshes the state from the real object. Return a null state when it is gone.
    async fn read(&self, ctx: &Context, request: ReadRequest) -> StateResponse;

    /// Adjusts the plan the server prepared (see [`PlanResponse`]). Called for create,
    /// update and destroy (see [`PlanRequest::is_destroy`]); the default keeps it as is.
    async fn modify_plan(&self, _ctx: &Context, _request: &PlanRequest, _plan: &mut PlanResponse) {}

    /// Creates the object. The returned state must keep every known planned value and
    /// resolve every unknown one. A create that fails after it made something returns the
    /// state of what exists with its errors ([`StateResponse::partial`]); it is cancelled
    /// through [`Context::cancelled`] when Terraform is interrupted and should then return
    /// such a state promptly.
    async fn create(&self, ctx: &Context, request: ApplyRequest) -> StateResponse;

    /// Updates the object in place (only attributes not forcing replacement changed).
    async fn update(&self, ctx: &Context, request: ApplyRequest) -> StateResponse;

    /// Deletes the object.
    async fn delete(&self, ctx: &Context, request: ApplyRequest) -> Diagnostics;

    /// Imports an existing object identified by the user-supplied `id`.
    async fn import(&self, _ctx: &Context, _id: &str) -> ImportResponse {
        let mut diagnostics = Diagnostics::new();
        diagnostics.error(
            "Import not supported",
            format!(
                "Resource type {} does not support import.",
                self.type_name()
            ),
        );
        ImportResponse::from_diagnostics(diagnostics)
    }

    /// Converts the state of another resource type into this one (`moved` blocks across
    /// types). Return `None` when the source is not one this resource accepts.
    async fn move_state(
        &self,
        _ctx: &Context,
        _request: MoveStateRequest,
    ) -> Option<StateResponse> {
        None
    }
}

/// A data source type.
#[async_trait]
pub trait DataSource: Send + Sync + 'static {
    /// The full type name, e.g. `example_file`.
    fn type_name(&self) -> &str;

    /// The schema.
    fn schema(&self) -> Schema;

    /// Checks the configuration beyond what the schema enforces; it may contain unknowns.
    async fn validate(&self, _ctx: &Context, _config: &Value) -> Diagnostics {
        Diagnostics::new()
    }

    /// Reads the data. `config` is fully known. The returned state must keep every
    /// configured value and fill in the computed ones.
    async fn read(&self, ctx: &Context, config: Value, provider_meta: Value) -> StateResponse;
}

/// Result of [`EphemeralResource::open`] and [`EphemeralResource::renew`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EphemeralResponse {
    /// The value (open only; ignored for renew). Never stored in state or plan.
    pub result: Value,
    /// Private data handed back to renew and close.
    pub private: Option<Vec<u8>>,
    /// When Terraform should call renew, if ever.
    pub renew_at: Option<SystemTime>,
    /// Warnings and errors.
    pub diagnostics: Diagnostics,
}

impl Default for EphemeralResponse {
    /// A null result without diagnostics.
    fn default() -> Self {
        Self::new(Value::Null)
    }
}

impl EphemeralResponse {
    /// A response carrying `result`.
    pub fn new(result: Value) -> Self {
        Self {
            result,
            private: None,
            renew_at: None,
            diagnostics: Diagnostics::new(),
        }
    }

    /// A response that only carries diagnostics.
    pub fn from_diagnostics(diagnostics: Diagnostics) -> Self {
        Self {
            result: Value::Null,
            private: None,
            renew_at: None,
            diagnostics,
        }
    }
}

/// An ephemeral resource type: a value opened for the duration of one Terraform run and
/// never persisted (e.g. a short-lived credential).
#[async_trait]
pub trait EphemeralResource: Send + Sync + 'static {
    /// The full type name, e.g. `example_token`.
    fn type_name(&self) -> &str;

    /// The schema.
    fn schema(&self) -> Schema;

    /// Checks the configuration beyond what the schema enforces; it may contain unknowns.
    async fn validate(&self, _ctx: &Context, _config: &Value) -> Diagnostics {
        Diagnostics::new()
    }

    /// Opens the resource and returns its value.
    async fn open(&self, ctx: &Context, config: Value) -> EphemeralResponse;

    /// Renews it before `renew_at`.
    async fn renew(&self, _ctx: &Context, _private: Option<Vec<u8>>) -> EphemeralResponse {
        EphemeralResponse::default()
    }

    /// Releases it at the end of the run.
    async fn close(&self, _ctx: &Context, _private: Option<Vec<u8>>) -> Diagnostics {
        Diagnostics::new()
    }
}

/// A positional (or variadic) parameter of a [`Function`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Parameter {
    /// Display name.
    pub name: String,
    /// Type constraint ([`Type::Dynamic`] accepts any value).
    pub ty: Type,
    /// Pass null arguments to the function instead of letting Terraform reject them.
    pub allow_null: bool,
    /// Pass unknown arguments to the function instead of Terraform returning unknown.
    pub allow_unknown: bool,
    /// Markdown documentation.
    pub description: String,
}

impl Parameter {
    /// A parameter that accepts only known, non-null values of `ty`.
    pub fn new(name: impl Into<String>, ty: Type) -> Self {
        Self {
            name: name.into(),
            ty,
            allow_null: false,
            allow_unknown: false,
            description: String::new(),
        }
    }

    /// Sets the description (Markdown).
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Lets null arguments through.
    pub fn allow_null(mut self) -> Self {
        self.allow_null = true;
        self
    }

    /// Lets unknown arguments through.
    pub fn allow_unknown(mut self) -> Self {
        self.allow_unknown = true;
        self
    }
}

/// The signature and documentation of a [`Function`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Signature {
    /// Positional parameters.
    pub parameters: Vec<Parameter>,
    /// A trailing parameter taking zero or more arguments.
    pub variadic: Option<Parameter>,
    /// The result type.
    pub return_type: Type,
    /// One-line summary.
    pub summary: String,
    /// Markdown documentation.
    pub description: String,
    /// When set, the function is deprecated with this message.
    pub deprecation_message: Option<String>,
}

impl Signature {
    /// A signature with the given parameters and return type.
    pub fn new(parameters: Vec<Parameter>, return_type: Type) -> Self {
        Self {
            parameters,
            variadic: None,
            return_type,
            summary: String::new(),
            description: String::new(),
            deprecation_message: None,
        }
    }

    /// Adds a variadic trailing parameter.
    pub fn variadic(mut self, parameter: Parameter) -> Self {
        self.variadic = Some(parameter);
        self
    }

    /// Sets the summary.
    pub fn summary(mut self, summary: impl Into<String>) -> Self {
        self.summary = summary.into();
        self
    }

    /// Sets the description (Markdown).
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Marks the function deprecated.
    pub fn deprecated(mut self, message: impl Into<String>) -> Self {
        self.deprecation_message = Some(message.into());
        self
    }
}

/// Error of a function call, shown by Terraform at the call site (or at the argument).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text}")]
#[non_exhaustive]
pub struct FunctionError {
    /// What went wrong.
    pub text: String,
    /// Index of the offending argument, if one argument is to blame.
    pub argument: Option<i64>,
}

impl FunctionError {
    /// An error about the call as a whole.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            argument: None,
        }
    }

    /// An error about argument `index` (0-based, variadic arguments continue the count).
    pub fn argument(index: usize, text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            argument: Some(i64::try_from(index).unwrap_or(i64::MAX)),
        }
    }
}

/// A provider function, called in configurations as `provider::<local name>::<name>(…)`.
#[async_trait]
pub trait Function: Send + Sync + 'static {
    /// The function name, without provider prefix.
    fn name(&self) -> &str;

    /// Parameters, return type and documentation.
    fn signature(&self) -> Signature;

    /// Computes the result. `arguments` holds one value per positional parameter followed
    /// by one value per variadic argument, each decoded with its parameter's type. The
    /// result must conform to the return type.
    async fn call(&self, ctx: &Context, arguments: Vec<Value>) -> Result<Value, FunctionError>;
}
