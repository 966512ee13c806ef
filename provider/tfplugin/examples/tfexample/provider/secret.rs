//! `tfexample_secret`: an ephemeral resource that reads a secret file. Its value can feed a
//! provider configuration and never reaches plan or state.

use tfplugin::provider::{Context, EphemeralResource, EphemeralResponse};
use tfplugin::{Attribute, AttributePath, Block, Diagnostics, Schema, Type, Value};

use super::{configured, read_file, resolve, str_attr};

/// The ephemeral resource type.
pub struct Secret;

#[async_trait::async_trait]
impl EphemeralResource for Secret {
    fn type_name(&self) -> &str {
        "tfexample_secret"
    }

    fn schema(&self) -> Schema {
        Schema::new(
            Block::new()
                .description(
                    "Reads a secret from a file under the root directory, for this run only.",
                )
                .attribute(
                    Attribute::required("name", Type::String)
                        .description("Path relative to the root."),
                )
                .attribute(
                    Attribute::computed("value", Type::String)
                        .sensitive()
                        .description("The file's content without trailing newline."),
                ),
        )
    }

    async fn open(&self, ctx: &Context, config: Value) -> EphemeralResponse {
        let result = (|| {
            let cfg = configured(ctx)?;
            let name = str_attr(&config, "name").unwrap_or_default();
            let path = resolve(cfg.root()?, name, AttributePath::new("name"))?;
            let Some(bytes) = read_file(&path)? else {
                let mut d = Diagnostics::new();
                d.error_at(
                    AttributePath::new("name"),
                    "Secret not found",
                    format!("{} does not exist.", path.display()),
                );
                return Err(d);
            };
            let value = String::from_utf8_lossy(&bytes)
                .trim_end_matches(['\r', '\n'])
                .to_owned();
            Ok(Value::object([
                ("name", Value::string(name)),
                ("value", Value::string(value)),
            ]))
        })();
        match result {
            Ok(v) => EphemeralResponse::new(v),
            Err(d) => EphemeralResponse::from_diagnostics(d),
        }
    }
}
