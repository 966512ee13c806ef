//! Data sources: `tfexample_file` (reads a file) and `tfexample_provider_info` (what the
//! provider was configured with, without revealing the token).

use tfplugin::provider::{Context, DataSource, StateResponse};
use tfplugin::{Attribute, AttributePath, Block, Diagnostics, Number, Schema, Type, Value};

use super::{configured, read_file, resolve, sha256_hex, str_attr};

/// `tfexample_file` data source.
pub struct FileData;

/// `tfexample_provider_info` data source.
pub struct ProviderInfo;

#[async_trait::async_trait]
impl DataSource for FileData {
    fn type_name(&self) -> &str {
        "tfexample_file"
    }

    fn schema(&self) -> Schema {
        Schema::new(
            Block::new()
                .description("Reads a file under the provider's root directory.")
                .attribute(
                    Attribute::required("name", Type::String)
                        .description("Path relative to the root."),
                )
                .attribute(
                    Attribute::computed("content", Type::String).description("Text content."),
                )
                .attribute(
                    Attribute::computed("sha256", Type::String)
                        .description("SHA-256 of the content (hex)."),
                )
                .attribute(Attribute::computed("size", Type::Number).description("Size in bytes.")),
        )
    }

    async fn read(&self, ctx: &Context, config: Value, _provider_meta: Value) -> StateResponse {
        let result = (|| {
            let cfg = configured(ctx)?;
            let name = str_attr(&config, "name").unwrap_or_default();
            let path = resolve(cfg.root()?, name, AttributePath::new("name"))?;
            let Some(bytes) = read_file(&path)? else {
                let mut d = Diagnostics::new();
                d.error_at(
                    AttributePath::new("name"),
                    "File not found",
                    format!(
                        "{} does not exist under the provider's root directory.",
                        path.display()
                    ),
                );
                return Err(d);
            };
            Ok(Value::object([
                ("name", Value::string(name)),
                (
                    "content",
                    Value::string(String::from_utf8_lossy(&bytes).into_owned()),
                ),
                ("sha256", Value::string(sha256_hex(&bytes))),
                ("size", Value::number(Number::from_u64(bytes.len() as u64))),
            ]))
        })();
        match result {
            Ok(state) => StateResponse::new(state),
            Err(d) => StateResponse::from_diagnostics(d),
        }
    }
}

#[async_trait::async_trait]
impl DataSource for ProviderInfo {
    fn type_name(&self) -> &str {
        "tfexample_provider_info"
    }

    fn schema(&self) -> Schema {
        Schema::new(
            Block::new()
                .description("What the provider was configured with.")
                .attribute(
                    Attribute::computed("root", Type::String).description("The root directory."),
                )
                .attribute(
                    Attribute::computed("token_sha256", Type::String)
                        .description("SHA-256 (hex) of the configured token, null without one."),
                ),
        )
    }

    async fn read(&self, ctx: &Context, _config: Value, _provider_meta: Value) -> StateResponse {
        let result = (|| {
            let cfg = configured(ctx)?;
            Ok::<_, Diagnostics>(Value::object([
                ("root", Value::string(cfg.root()?.display().to_string())),
                (
                    "token_sha256",
                    cfg.token_sha256.clone().map_or(Value::Null, Value::string),
                ),
            ]))
        })();
        match result {
            Ok(state) => StateResponse::new(state),
            Err(d) => StateResponse::from_diagnostics(d),
        }
    }
}
