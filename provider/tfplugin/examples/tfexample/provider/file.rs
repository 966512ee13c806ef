//! `tfexample_file`: a text file under the root directory, with a sensitive attribute and a
//! write-only password stored (hashed) in a metadata file next to it.
//!
//! Schema version 1. Version 0 called the attributes `filename` and `body`; state written by
//! it is upgraded from both the JSON and the legacy flatmap form.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tfplugin::provider::{
    ApplyRequest, Context, ImportResponse, MoveStateRequest, PlanRequest, PlanResponse, RawState,
    ReadRequest, Resource, StateResponse,
};
use tfplugin::{Attribute, AttributePath, Block, Diagnostics, Number, Schema, Type, Value};

use super::{configured, read_file, remove_file, resolve, sha256_hex, str_attr, write_file};

pub const TYPE_NAME: &str = "tfexample_file";

/// The resource type.
pub struct FileResource;

/// What the metadata file `<root>/.tfexample-meta/<name>.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Meta {
    secret: Option<String>,
    /// SHA-256 of the write-only password: proves it reached the provider without storing it.
    password_sha256: Option<String>,
}

fn meta_path(root: &Path, name: &str) -> PathBuf {
    root.join(".tfexample-meta").join(format!("{name}.json"))
}

/// A state with only `name` and `id` set; Read fills in the rest.
fn identity_state(name: &str) -> Value {
    let mut state = Value::object(
        [
            "name",
            "content",
            "secret",
            "password_wo",
            "password_wo_version",
            "id",
            "sha256",
            "size",
        ]
        .map(|a| (a, Value::Null)),
    );
    let _ = state.set_at(&AttributePath::new("name"), Value::string(name));
    let _ = state.set_at(&AttributePath::new("id"), Value::string(name));
    state
}

fn v0_type() -> Type {
    Type::object([
        ("id", Type::String),
        ("filename", Type::String),
        ("body", Type::String),
    ])
}

impl FileResource {
    fn schema_v1() -> Schema {
        Schema::versioned(
            1,
            Block::new()
                .description("A text file under the provider's root directory.")
                .attribute(Attribute::required("name", Type::String).description(
                    "Path of the file relative to the root directory. Changing it replaces the file.",
                ))
                .attribute(Attribute::optional("content", Type::String).description("Text content."))
                .attribute(
                    Attribute::optional("secret", Type::String)
                        .sensitive()
                        .description("A secret kept in the file's metadata (never shown in plans)."),
                )
                .attribute(Attribute::optional("password_wo", Type::String).write_only().description(
                    "A password that is hashed into the metadata and never stored in Terraform state.",
                ))
                .attribute(Attribute::optional("password_wo_version", Type::Number).description(
                    "Change this to apply a new `password_wo`.",
                ))
                .attribute(Attribute::computed("id", Type::String).description("Same as `name`."))
                .attribute(Attribute::computed("sha256", Type::String).description("SHA-256 of `content` (hex)."))
                .attribute(Attribute::computed("size", Type::Number).description("Size of the file in bytes.")),
        )
    }

    /// Writes file and metadata for the planned state and returns the new state.
    fn write(ctx: &Context, req: &ApplyRequest) -> Result<Value, Diagnostics> {
        let cfg = configured(ctx)?;
        let root = cfg.root()?;
        let planned = &req.planned_state;
        let name = str_attr(planned, "name").unwrap_or_default();
        let path = resolve(root, name, AttributePath::new("name"))?;
        let content = str_attr(planned, "content").unwrap_or_default();
        write_file(&path, content.as_bytes())?;

        let mpath = meta_path(root, name);
        let mut meta: Meta = read_file(&mpath)?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        meta.secret = str_attr(planned, "secret").map(str::to_owned);
        // A new password is taken only on create or when its version changes.
        let version_changed = req.prior_state.is_null()
            || req.prior_state.get_attr("password_wo_version")
                != planned.get_attr("password_wo_version");
        if version_changed {
            meta.password_sha256 =
                str_attr(&req.config, "password_wo").map(|p| sha256_hex(p.as_bytes()));
        }
        let json = serde_json::to_vec(&meta).unwrap_or_default();
        write_file(&mpath, &json)?;

        let mut state = planned.clone();
        let sets = [
            ("id", Value::string(name)),
            ("sha256", Value::string(sha256_hex(content.as_bytes()))),
            (
                "size",
                Value::number(Number::from_u64(content.len() as u64)),
            ),
        ];
        for (attr, v) in sets {
            let _ = state.set_at(&AttributePath::new(attr), v);
        }
        Ok(state)
    }
}

#[async_trait::async_trait]
impl Resource for FileResource {
    fn type_name(&self) -> &str {
        TYPE_NAME
    }

    fn schema(&self) -> Schema {
        Self::schema_v1()
    }

    fn requires_replace(&self) -> Vec<AttributePath> {
        vec![AttributePath::new("name")]
    }

    async fn validate(&self, _ctx: &Context, config: &Value) -> Diagnostics {
        let mut d = Diagnostics::new();
        if let Some(name) = str_attr(config, "name")
            && let Err(e) = resolve(Path::new("/"), name, AttributePath::new("name"))
        {
            d.extend(e);
        }
        let has_password = config.get_attr("password_wo").is_some_and(|v| !v.is_null());
        let has_version = config
            .get_attr("password_wo_version")
            .is_some_and(|v| !v.is_null());
        if has_password && !has_version {
            d.error_at(
                AttributePath::new("password_wo_version"),
                "Missing password_wo_version",
                "Write-only values are not stored, so Terraform cannot see when they change: set \
                 `password_wo_version` and change it whenever `password_wo` changes.",
            );
        }
        d
    }

    async fn upgrade_state(&self, _ctx: &Context, version: i64, raw: RawState) -> StateResponse {
        let mut d = Diagnostics::new();
        if version != 0 {
            d.error(
                "Unsupported state version",
                format!("{TYPE_NAME} knows schema versions 0 and 1, not {version}; use a newer provider."),
            );
            return StateResponse::from_diagnostics(d);
        }
        let decoded = match raw {
            RawState::Json(bytes) => tfplugin::json::decode_with(
                &bytes,
                &v0_type(),
                tfplugin::json::JsonOptions::lenient(),
            ),
            RawState::Flatmap(map) => {
                let map: HashMap<String, String> = map.into_iter().collect();
                tfplugin::json::decode_flatmap(&map, &v0_type())
            }
            _ => {
                d.error(
                    "Unsupported state format",
                    "Only JSON and flatmap state can be upgraded.",
                );
                return StateResponse::from_diagnostics(d);
            }
        };
        let old = match decoded {
            Ok(v) => v,
            Err(e) => {
                d.push(e.into());
                return StateResponse::from_diagnostics(d);
            }
        };
        let name = str_attr(&old, "filename").unwrap_or_default().to_owned();
        let body = old.get_attr("body").cloned().unwrap_or(Value::Null);
        let digest = body.as_str().map(|b| (sha256_hex(b.as_bytes()), b.len()));
        StateResponse::new(Value::object([
            ("name", Value::string(name.clone())),
            ("content", body),
            ("secret", Value::Null),
            ("password_wo", Value::Null),
            ("password_wo_version", Value::Null),
            ("id", Value::string(name)),
            (
                "sha256",
                digest
                    .as_ref()
                    .map_or(Value::Null, |(h, _)| Value::string(h.clone())),
            ),
            (
                "size",
                digest.map_or(Value::Null, |(_, n)| {
                    Value::number(Number::from_u64(n as u64))
                }),
            ),
        ]))
    }

    async fn read(&self, ctx: &Context, request: ReadRequest) -> StateResponse {
        let result = (|| {
            let cfg = configured(ctx)?;
            let root = cfg.root()?;
            let prior = &request.current_state;
            let name = str_attr(prior, "name")
                .or_else(|| str_attr(prior, "id"))
                .unwrap_or_default();
            let path = resolve(root, name, AttributePath::new("name"))?;
            let Some(bytes) = read_file(&path)? else {
                // Deleted outside Terraform: returning null makes Terraform plan to create it.
                return Ok(Value::Null);
            };
            let content = String::from_utf8_lossy(&bytes).into_owned();
            let meta: Meta = read_file(&meta_path(root, name))?
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            // An empty file for a null `content` is no drift.
            let content_value =
                if content.is_empty() && prior.get_attr("content").is_none_or(Value::is_null) {
                    Value::Null
                } else {
                    Value::string(content.clone())
                };
            Ok(Value::object([
                ("name", Value::string(name)),
                ("content", content_value),
                ("secret", meta.secret.map_or(Value::Null, Value::string)),
                ("password_wo", Value::Null),
                (
                    "password_wo_version",
                    prior
                        .get_attr("password_wo_version")
                        .cloned()
                        .unwrap_or(Value::Null),
                ),
                ("id", Value::string(name)),
                ("sha256", Value::string(sha256_hex(content.as_bytes()))),
                ("size", Value::number(Number::from_u64(bytes.len() as u64))),
            ]))
        })();
        match result {
            Ok(state) => StateResponse::new(state),
            Err(d) => StateResponse::from_diagnostics(d),
        }
    }

    async fn modify_plan(&self, _ctx: &Context, request: &PlanRequest, plan: &mut PlanResponse) {
        if request.is_create() || request.is_destroy() {
            return;
        }
        // The id never changes in place, and the digest only when the content does.
        plan.use_prior_if_unknown(&request.prior_state, &AttributePath::new("id"));
        if request.prior_state.get_attr("content") == request.proposed_new_state.get_attr("content")
        {
            plan.use_prior_if_unknown(&request.prior_state, &AttributePath::new("sha256"));
            plan.use_prior_if_unknown(&request.prior_state, &AttributePath::new("size"));
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
        let result = (|| {
            let cfg = configured(ctx)?;
            let root = cfg.root()?;
            let name = str_attr(&request.prior_state, "name").unwrap_or_default();
            remove_file(&resolve(root, name, AttributePath::new("name"))?)?;
            remove_file(&meta_path(root, name))
        })();
        result.err().unwrap_or_default()
    }

    async fn import(&self, ctx: &Context, id: &str) -> ImportResponse {
        let check = (|| {
            let cfg = configured(ctx)?;
            let path = resolve(cfg.root()?, id, AttributePath::root())?;
            if read_file(&path)?.is_none() {
                let mut d = Diagnostics::new();
                d.error(
                    "Cannot import non-existent file",
                    format!(
                        "{} does not exist; the import id is the file name relative to the root.",
                        path.display()
                    ),
                );
                return Err(d);
            }
            Ok(())
        })();
        if let Err(d) = check {
            return ImportResponse::from_diagnostics(d);
        }
        // Terraform reads the object right after import; name and id are enough here.
        ImportResponse::single(TYPE_NAME, identity_state(id))
    }

    async fn move_state(&self, _ctx: &Context, request: MoveStateRequest) -> Option<StateResponse> {
        // `moved { from = tfexample_document.x  to = tfexample_file.y }`: the document's JSON
        // file becomes a plain file with the same name.
        if request.source_type_name != super::document::TYPE_NAME
            || !request.source_provider_address.ends_with("/tfexample")
        {
            return None;
        }
        let mut d = Diagnostics::new();
        let src: serde_json::Value = match serde_json::from_slice(&request.source_state_json) {
            Ok(v) => v,
            Err(e) => {
                d.error(
                    "Cannot read moved state",
                    format!("The source state is not JSON: {e}"),
                );
                return Some(StateResponse::from_diagnostics(d));
            }
        };
        let Some(name) = src.get("name").and_then(serde_json::Value::as_str) else {
            d.error("Cannot read moved state", "The source state has no `name`.");
            return Some(StateResponse::from_diagnostics(d));
        };
        Some(StateResponse::new(identity_state(&format!("{name}.json"))))
    }
}
