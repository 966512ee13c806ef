//! The example provider: files under a root directory, plus one of every other kind of
//! provider item.

mod data;
mod document;
mod file;
mod functions;
mod secret;
mod slow;

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tfplugin::provider::{
    ConfigureResponse, Context, DataSource, EphemeralResource, Function, Provider, Resource,
};
use tfplugin::{Attribute, AttributePath, Block, Diagnostics, Schema, Type, Value};

/// The provider. Stateless: everything it manages lives under the configured root directory.
#[derive(Debug, Default, Clone, Copy)]
pub struct Example;

/// What [`Provider::configure`] hands to every handler.
#[derive(Debug)]
pub struct Configured {
    /// Root directory; `None` when the configuration was unknown during planning.
    root: Option<PathBuf>,
    /// SHA-256 (hex) of the configured token. The token itself is not kept.
    token_sha256: Option<String>,
}

impl Configured {
    /// The root directory, or an error diagnostic explaining why there is none.
    fn root(&self) -> Result<&Path, Diagnostics> {
        self.root.as_deref().ok_or_else(|| {
            let mut d = Diagnostics::new();
            d.error(
                "Provider root directory unknown",
                "The provider's `root` depends on values known only after apply; \
                 set it to a value known during planning.",
            );
            d
        })
    }
}

/// The configured provider data, or an error diagnostic if the provider was not configured.
fn configured(ctx: &Context) -> Result<Arc<Configured>, Diagnostics> {
    ctx.provider_data::<Configured>().ok_or_else(|| {
        let mut d = Diagnostics::new();
        d.error(
            "Provider not configured",
            "Terraform called a handler before ConfigureProvider.",
        );
        d
    })
}

/// Lowercase hex SHA-256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Resolves a user-supplied relative name under `root`, refusing absolute paths and `..` so a
/// configuration cannot reach outside the managed directory.
fn resolve(root: &Path, name: &str, at: AttributePath) -> Result<PathBuf, Diagnostics> {
    let rel = Path::new(name);
    let ok = !name.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(root.join(rel))
    } else {
        let mut d = Diagnostics::new();
        d.error_at(
            at,
            "Invalid file name",
            format!(
                "`{name}` must be a non-empty relative path without `..`, e.g. `dir/file.txt`."
            ),
        );
        Err(d)
    }
}

/// The string at attribute `name` of an object value, if known and not null.
fn str_attr<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.get_attr(name).and_then(Value::as_str)
}

/// Writes `bytes` to `path`, creating parent directories; errors become diagnostics.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Diagnostics> {
    let result = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(path, bytes));
    result.map_err(|e| io_diag("write", path, &e))
}

/// Reads `path`; `Ok(None)` when it does not exist.
fn read_file(path: &Path) -> Result<Option<Vec<u8>>, Diagnostics> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_diag("read", path, &e)),
    }
}

/// Removes `path`; a file that is already gone is fine.
fn remove_file(path: &Path) -> Result<(), Diagnostics> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_diag("remove", path, &e)),
    }
}

fn io_diag(action: &str, path: &Path, e: &std::io::Error) -> Diagnostics {
    let mut d = Diagnostics::new();
    d.error(
        format!("Cannot {action} file"),
        format!(
            "{action} {}: {e}. Check that the provider's root directory is writable.",
            path.display()
        ),
    );
    d
}

#[async_trait::async_trait]
impl Provider for Example {
    fn schema(&self) -> Schema {
        Schema::new(
            Block::new()
                .description(
                    "The **tfexample** provider manages files under a root directory. It is the \
                     example provider of the `tfplugin` library and exercises every feature of \
                     Terraform's plugin protocol 6.",
                )
                .attribute(Attribute::optional("root", Type::String).description(
                    "Directory that holds every managed file. Defaults to the `TFEXAMPLE_ROOT` \
                     environment variable.",
                ))
                .attribute(Attribute::optional("token", Type::String).sensitive().description(
                    "Access token, typically fed from the `tfexample_secret` ephemeral resource. \
                     Only its SHA-256 is ever exposed (data source `tfexample_provider_info`).",
                )),
        )
    }

    async fn validate(&self, _ctx: &Context, config: &Value) -> Diagnostics {
        let mut d = Diagnostics::new();
        if str_attr(config, "root").is_some_and(str::is_empty) {
            d.error_at(
                AttributePath::new("root"),
                "Empty root directory",
                "Set `root` to a directory path.",
            );
        }
        d
    }

    async fn configure(
        &self,
        _ctx: &Context,
        _terraform_version: &str,
        config: Value,
    ) -> ConfigureResponse {
        let root_value = config.get_attr("root").cloned().unwrap_or(Value::Null);
        let root = match root_value {
            Value::Unknown(_) => None,
            Value::String(s) => Some(PathBuf::from(s)),
            _ => match std::env::var_os("TFEXAMPLE_ROOT") {
                Some(dir) => Some(PathBuf::from(dir)),
                None => {
                    let mut d = Diagnostics::new();
                    d.error_at(
                        AttributePath::new("root"),
                        "Missing root directory",
                        "Set `root` in the provider block or the TFEXAMPLE_ROOT environment variable.",
                    );
                    return ConfigureResponse::from_diagnostics(d);
                }
            },
        };
        let token_sha256 = str_attr(&config, "token").map(|t| sha256_hex(t.as_bytes()));
        ConfigureResponse::with_data(Configured { root, token_sha256 })
    }

    fn resources(&self) -> Vec<Arc<dyn Resource>> {
        vec![
            Arc::new(file::FileResource),
            Arc::new(document::DocumentResource),
            Arc::new(slow::SlowResource),
        ]
    }

    fn data_sources(&self) -> Vec<Arc<dyn DataSource>> {
        vec![Arc::new(data::FileData), Arc::new(data::ProviderInfo)]
    }

    fn ephemeral_resources(&self) -> Vec<Arc<dyn EphemeralResource>> {
        vec![Arc::new(secret::Secret)]
    }

    fn functions(&self) -> Vec<Arc<dyn Function>> {
        vec![Arc::new(functions::Sha256), Arc::new(functions::JoinPath)]
    }
}
