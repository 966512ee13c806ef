//! `tfexample_document`: a JSON document under the root directory whose schema uses every
//! nesting mode of nested attributes (single, list, set, map) and of blocks (single, list,
//! set, map, group), with computed attributes that are unknown until apply.
//!
//! The model is a plain Rust struct bound with `tfplugin::binding` (serde).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tfplugin::binding::Attr;
use tfplugin::provider::{ApplyRequest, Context, ReadRequest, Resource, StateResponse};
use tfplugin::{
    Attribute, AttributePath, Block, Diagnostics, NestedAttributes, NestedBlock, Schema, Type,
    Value,
};

use super::{configured, read_file, remove_file, resolve, sha256_hex, str_attr, write_file};

pub const TYPE_NAME: &str = "tfexample_document";

/// The resource type.
pub struct DocumentResource;

#[derive(Debug, Serialize, Deserialize)]
struct Document {
    name: String,
    revision: Attr<i64>,
    digest: Attr<String>,
    settings: Option<Settings>,
    rules: Option<Vec<Rule>>,
    members: Option<Vec<Member>>,
    endpoints: Option<BTreeMap<String, Endpoint>>,
    owner: Option<Owner>,
    permission: Vec<Permission>,
    label: Vec<Label>,
    limits: Limits,
    volume: BTreeMap<String, Volume>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Settings {
    mode: String,
    enabled: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Rule {
    port: i64,
    protocol: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Member {
    name: String,
    role: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Endpoint {
    url: String,
    weight: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Owner {
    name: String,
    email: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Permission {
    principal: String,
    scopes: Option<BTreeMap<String, Scope>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Scope {
    level: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Label {
    key: String,
    value: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Limits {
    cpu: Option<i64>,
    memory: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Volume {
    size: i64,
    read_only: Option<bool>,
}

const LEVELS: [&str; 3] = ["read", "write", "admin"];

fn schema() -> Schema {
    Schema::new(
        Block::new()
            .description(
                "A JSON document under the root directory. Its schema shows every nesting mode of \
                 nested attributes and blocks.",
            )
            .attribute(Attribute::required("name", Type::String).description(
                "File name (relative to the root, `.json` is appended). Changing it replaces the document.",
            ))
            .attribute(Attribute::computed("revision", Type::Number).description(
                "Incremented by every change; known only after apply.",
            ))
            .attribute(Attribute::computed("digest", Type::String).description(
                "SHA-256 of the stored document; known only after apply.",
            ))
            .attribute(
                Attribute::optional(
                    "settings",
                    NestedAttributes::single([
                        Attribute::required("mode", Type::String).description("Operating mode."),
                        Attribute::optional("enabled", Type::Bool).description("Whether it is on."),
                    ]),
                )
                .description("Single nested attribute."),
            )
            .attribute(
                Attribute::optional(
                    "rules",
                    NestedAttributes::list([
                        Attribute::required("port", Type::Number).description("Port, 1 to 65535."),
                        Attribute::optional("protocol", Type::String).description("`tcp` or `udp`."),
                    ]),
                )
                .description("List nested attribute."),
            )
            .attribute(
                Attribute::optional(
                    "members",
                    NestedAttributes::set([
                        Attribute::required("name", Type::String).description("Member name."),
                        Attribute::optional("role", Type::String).description("Member role."),
                    ]),
                )
                .description("Set nested attribute."),
            )
            .attribute(
                Attribute::optional(
                    "endpoints",
                    NestedAttributes::map([
                        Attribute::required("url", Type::String).description("Endpoint URL."),
                        Attribute::optional("weight", Type::Number).description("Load-balancing weight."),
                    ]),
                )
                .description("Map nested attribute."),
            )
            .block(
                NestedBlock::single(
                    "owner",
                    Block::new()
                        .description("Single block.")
                        .attribute(Attribute::required("name", Type::String).description("Owner name."))
                        .attribute(Attribute::optional("email", Type::String).description("Owner e-mail.")),
                ),
            )
            .block(
                NestedBlock::list(
                    "permission",
                    Block::new()
                        .description("List block.")
                        .attribute(Attribute::required("principal", Type::String).description("Who."))
                        .attribute(
                            Attribute::optional(
                                "scopes",
                                NestedAttributes::map([Attribute::required("level", Type::String)
                                    .description("One of `read`, `write`, `admin`.")]),
                            )
                            .description("Scopes by name."),
                        ),
                )
                .max_items(10),
            )
            .block(NestedBlock::set(
                "label",
                Block::new()
                    .description("Set block.")
                    .attribute(Attribute::required("key", Type::String).description("Label key."))
                    .attribute(Attribute::required("value", Type::String).description("Label value.")),
            ))
            .block(NestedBlock::group(
                "limits",
                Block::new()
                    .description("Group block (never null).")
                    .attribute(Attribute::optional("cpu", Type::Number).description("CPU limit."))
                    .attribute(Attribute::optional("memory", Type::Number).description("Memory limit.")),
            ))
            .block(NestedBlock::map(
                "volume",
                Block::new()
                    .description("Map block, keyed by its label.")
                    .attribute(Attribute::required("size", Type::Number).description("Size in GiB."))
                    .attribute(Attribute::optional("read_only", Type::Bool).description("Mount read-only.")),
            )),
    )
}

fn diags_from<E: Into<tfplugin::Diagnostic>>(e: E) -> Diagnostics {
    let mut d = Diagnostics::new();
    d.push(e.into());
    d
}

impl DocumentResource {
    fn path(ctx: &Context, name: &str) -> Result<std::path::PathBuf, Diagnostics> {
        let cfg = configured(ctx)?;
        resolve(
            cfg.root()?,
            &format!("{name}.json"),
            AttributePath::new("name"),
        )
    }

    /// Stores the planned document with the next revision and its digest.
    fn write(ctx: &Context, request: &ApplyRequest) -> Result<Value, Diagnostics> {
        let ty = schema().value_type();
        let mut doc: Document = tfplugin::from_value(&request.planned_state).map_err(diags_from)?;
        let prior_revision = request
            .prior_state
            .get_attr("revision")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        doc.revision = Attr::Known(prior_revision + 1);
        // The digest covers everything but itself.
        doc.digest = Attr::Null;
        let body = tfplugin::json::encode(&tfplugin::to_value(&doc, &ty).map_err(diags_from)?, &ty)
            .map_err(diags_from)?;
        doc.digest = Attr::Known(sha256_hex(&body));
        let state = tfplugin::to_value(&doc, &ty).map_err(diags_from)?;
        let stored = tfplugin::json::encode(&state, &ty).map_err(diags_from)?;
        write_file(&Self::path(ctx, &doc.name)?, &stored)?;
        Ok(state)
    }
}

#[async_trait::async_trait]
impl Resource for DocumentResource {
    fn type_name(&self) -> &str {
        TYPE_NAME
    }

    fn schema(&self) -> Schema {
        schema()
    }

    fn requires_replace(&self) -> Vec<AttributePath> {
        vec![AttributePath::new("name")]
    }

    async fn validate(&self, _ctx: &Context, config: &Value) -> Diagnostics {
        let mut d = Diagnostics::new();
        // Values may be unknown here; only known ones are checked.
        if let Some(perms) = config.get_attr("permission").and_then(Value::as_elements) {
            for (i, perm) in perms.iter().enumerate() {
                let Some(scopes) = perm.get_attr("scopes").and_then(Value::as_map) else {
                    continue;
                };
                for (key, scope) in scopes {
                    if let Some(level) = str_attr(scope, "level")
                        && !LEVELS.contains(&level)
                    {
                        let index = i64::try_from(i).unwrap_or(i64::MAX);
                        // Terraform maps a path to source only down to one index step into an
                        // attribute's expression, so the scope entry (not its `level`) is the
                        // most precise location it can highlight.
                        d.error_at(
                            AttributePath::new("permission")
                                .index(index)
                                .attr("scopes")
                                .key(key.as_str()),
                            "Invalid scope level",
                            format!(
                                "Scope `{key}` has `level` = `{level}`; use one of {}.",
                                LEVELS.join(", ")
                            ),
                        );
                    }
                }
            }
        }
        if let Some(rules) = config.get_attr("rules").and_then(Value::as_elements) {
            for (i, rule) in rules.iter().enumerate() {
                if let Some(port) = rule.get_attr("port").and_then(Value::as_i64)
                    && !(1..=65535).contains(&port)
                {
                    let index = i64::try_from(i).unwrap_or(i64::MAX);
                    d.error_at(
                        AttributePath::new("rules").index(index),
                        "Invalid port",
                        format!("`port` {port} is outside 1 to 65535."),
                    );
                }
            }
        }
        d
    }

    async fn read(&self, ctx: &Context, request: ReadRequest) -> StateResponse {
        let result = (|| {
            let name = str_attr(&request.current_state, "name").unwrap_or_default();
            let Some(bytes) = read_file(&Self::path(ctx, name)?)? else {
                return Ok(Value::Null);
            };
            let ty = schema().value_type();
            tfplugin::json::decode(&bytes, &ty).map_err(|e| {
                let mut d = Diagnostics::new();
                d.error(
                    "Corrupt document",
                    format!("The stored document `{name}.json` does not match the schema ({e}); delete it or fix it by hand."),
                );
                d
            })
        })();
        match result {
            Ok(state) => StateResponse::new(state),
            Err(d) => StateResponse::from_diagnostics(d),
        }
    }

    async fn create(&self, ctx: &Context, request: ApplyRequest) -> StateResponse {
        match Self::write(ctx, &request) {
            Ok(s) => StateResponse::new(s),
            Err(d) => StateResponse::from_diagnostics(d),
        }
    }

    async fn update(&self, ctx: &Context, request: ApplyRequest) -> StateResponse {
        match Self::write(ctx, &request) {
            Ok(s) => StateResponse::new(s),
            Err(d) => StateResponse::from_diagnostics(d),
        }
    }

    async fn delete(&self, ctx: &Context, request: ApplyRequest) -> Diagnostics {
        let name = str_attr(&request.prior_state, "name").unwrap_or_default();
        match Self::path(ctx, name) {
            Ok(p) => remove_file(&p).err().unwrap_or_default(),
            Err(d) => d,
        }
    }
}
