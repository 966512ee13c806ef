//! Provider functions: `provider::tfexample::sha256(s)` and
//! `provider::tfexample::join_path(base, parts...)`.

use std::path::{Component, Path};

use tfplugin::provider::{Context, Function, FunctionError, Parameter, Signature};
use tfplugin::{Type, Value};

use super::sha256_hex;

/// `sha256(input string) string`.
pub struct Sha256;

/// `join_path(base string, parts... string) string`.
pub struct JoinPath;

#[async_trait::async_trait]
impl Function for Sha256 {
    fn name(&self) -> &str {
        "sha256"
    }

    fn signature(&self) -> Signature {
        Signature::new(
            vec![Parameter::new("input", Type::String).description("Text to hash.")],
            Type::String,
        )
        .summary("SHA-256 of a string")
        .description("Returns the lowercase hex SHA-256 digest of the UTF-8 bytes of `input`.")
    }

    async fn call(&self, _ctx: &Context, arguments: Vec<Value>) -> Result<Value, FunctionError> {
        let input = arguments
            .first()
            .and_then(Value::as_str)
            .ok_or_else(|| FunctionError::argument(0, "input must be a known string"))?;
        Ok(Value::string(sha256_hex(input.as_bytes())))
    }
}

#[async_trait::async_trait]
impl Function for JoinPath {
    fn name(&self) -> &str {
        "join_path"
    }

    fn signature(&self) -> Signature {
        Signature::new(
            vec![Parameter::new("base", Type::String).description("Leading path.")],
            Type::String,
        )
        .variadic(
            Parameter::new("parts", Type::String).description("Relative parts; `..` is refused."),
        )
        .summary("Join path segments")
        .description(
            "Joins `base` and each of `parts` with `/`, refusing parts that climb out with `..`.",
        )
    }

    async fn call(&self, _ctx: &Context, arguments: Vec<Value>) -> Result<Value, FunctionError> {
        let mut out = String::new();
        for (i, arg) in arguments.iter().enumerate() {
            let part = arg
                .as_str()
                .ok_or_else(|| FunctionError::argument(i, "must be a known string"))?;
            if i > 0
                && !Path::new(part)
                    .components()
                    .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
            {
                return Err(FunctionError::argument(
                    i,
                    format!("part `{part}` must be relative and must not contain `..`"),
                ));
            }
            if i > 0 && !out.ends_with('/') && !out.is_empty() {
                out.push('/');
            }
            out.push_str(part);
        }
        Ok(Value::string(out))
    }
}
