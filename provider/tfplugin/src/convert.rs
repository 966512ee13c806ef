//! Conversions between this crate's model (schemas, diagnostics, paths, function
//! signatures) and the tfplugin6 wire messages.

use crate::diag::{Diagnostic, Diagnostics, Severity};
use crate::path::{AttributePath, PathStep};
use crate::provider::{FunctionError, Parameter, Signature};
use crate::schema::{
    Attribute, AttributeType, Block, BlockNesting, NestedBlock, ObjectNesting, Schema, StringKind,
};
use crate::server::proto::tfplugin6 as pb;

/// A schema as the wire message.
pub fn schema_to_proto(schema: &Schema) -> pb::Schema {
    pb::Schema {
        version: schema.version,
        block: Some(block_to_proto(&schema.block, schema.version)),
    }
}

fn string_kind(kind: StringKind) -> i32 {
    match kind {
        StringKind::Plain => pb::StringKind::Plain as i32,
        StringKind::Markdown => pb::StringKind::Markdown as i32,
    }
}

fn block_to_proto(block: &Block, version: i64) -> pb::schema::Block {
    pb::schema::Block {
        version,
        attributes: block.attributes.iter().map(attribute_to_proto).collect(),
        block_types: block
            .block_types
            .iter()
            .map(nested_block_to_proto)
            .collect(),
        description: block.description.clone(),
        description_kind: string_kind(block.description_kind),
        deprecated: block.deprecated,
    }
}

fn attribute_to_proto(attribute: &Attribute) -> pb::schema::Attribute {
    let (ty, nested_type) = match &attribute.ty {
        AttributeType::Type(ty) => (ty.to_json_bytes(), None),
        AttributeType::Nested(nested) => {
            let nesting = match nested.nesting {
                ObjectNesting::Single => pb::schema::object::NestingMode::Single,
                ObjectNesting::List => pb::schema::object::NestingMode::List,
                ObjectNesting::Set => pb::schema::object::NestingMode::Set,
                ObjectNesting::Map => pb::schema::object::NestingMode::Map,
            };
            #[allow(deprecated)] // min/max_items are deprecated wire fields, left at zero
            let object = pb::schema::Object {
                attributes: nested.attributes.iter().map(attribute_to_proto).collect(),
                nesting: nesting as i32,
                min_items: 0,
                max_items: 0,
            };
            (Vec::new(), Some(object))
        }
    };
    pb::schema::Attribute {
        name: attribute.name.clone(),
        r#type: ty,
        nested_type,
        description: attribute.description.clone(),
        required: attribute.required,
        optional: attribute.optional,
        computed: attribute.computed,
        sensitive: attribute.sensitive,
        description_kind: string_kind(attribute.description_kind),
        deprecated: attribute.deprecated,
        write_only: attribute.write_only,
    }
}

fn nested_block_to_proto(block: &NestedBlock) -> pb::schema::NestedBlock {
    use pb::schema::nested_block::NestingMode;
    let nesting = match block.nesting {
        BlockNesting::Single => NestingMode::Single,
        BlockNesting::List => NestingMode::List,
        BlockNesting::Set => NestingMode::Set,
        BlockNesting::Map => NestingMode::Map,
        BlockNesting::Group => NestingMode::Group,
    };
    pb::schema::NestedBlock {
        type_name: block.type_name.clone(),
        // Nested blocks carry no version of their own; Terraform ignores it there.
        block: Some(block_to_proto(&block.block, 0)),
        nesting: nesting as i32,
        min_items: block.min_items,
        max_items: block.max_items,
    }
}

/// An attribute path as the wire message.
pub fn path_to_proto(path: &AttributePath) -> pb::AttributePath {
    use pb::attribute_path::step::Selector;
    pb::AttributePath {
        steps: path
            .steps()
            .iter()
            .map(|step| pb::attribute_path::Step {
                selector: Some(match step {
                    PathStep::Attribute(name) => Selector::AttributeName(name.clone()),
                    PathStep::ElementKeyString(key) => Selector::ElementKeyString(key.clone()),
                    PathStep::ElementKeyInt(index) => Selector::ElementKeyInt(*index),
                }),
            })
            .collect(),
    }
}

/// A wire attribute path in our model; steps without a selector are dropped.
pub fn path_from_proto(path: &pb::AttributePath) -> AttributePath {
    use pb::attribute_path::step::Selector;
    path.steps
        .iter()
        .filter_map(|step| {
            Some(match step.selector.as_ref()? {
                Selector::AttributeName(name) => PathStep::Attribute(name.clone()),
                Selector::ElementKeyString(key) => PathStep::ElementKeyString(key.clone()),
                Selector::ElementKeyInt(index) => PathStep::ElementKeyInt(*index),
            })
        })
        .collect()
}

/// One diagnostic as the wire message. An empty path is sent as no path, so Terraform
/// attributes the diagnostic to the whole block rather than to a nonexistent attribute.
pub fn diagnostic_to_proto(diagnostic: &Diagnostic) -> pb::Diagnostic {
    let severity = match diagnostic.severity {
        Severity::Error => pb::diagnostic::Severity::Error,
        Severity::Warning => pb::diagnostic::Severity::Warning,
    };
    pb::Diagnostic {
        severity: severity as i32,
        summary: diagnostic.summary.clone(),
        detail: diagnostic.detail.clone(),
        attribute: diagnostic
            .attribute
            .as_ref()
            .filter(|path| !path.is_empty())
            .map(path_to_proto),
    }
}

/// Diagnostics as wire messages.
pub fn diagnostics_to_proto(diagnostics: &Diagnostics) -> Vec<pb::Diagnostic> {
    diagnostics.iter().map(diagnostic_to_proto).collect()
}

fn parameter_to_proto(parameter: &Parameter) -> pb::function::Parameter {
    pb::function::Parameter {
        name: parameter.name.clone(),
        r#type: parameter.ty.to_json_bytes(),
        allow_null_value: parameter.allow_null,
        allow_unknown_values: parameter.allow_unknown,
        description: parameter.description.clone(),
        description_kind: pb::StringKind::Markdown as i32,
    }
}

/// A function signature as the wire message.
pub fn signature_to_proto(signature: &Signature) -> pb::Function {
    pb::Function {
        parameters: signature
            .parameters
            .iter()
            .map(parameter_to_proto)
            .collect(),
        variadic_parameter: signature.variadic.as_ref().map(parameter_to_proto),
        r#return: Some(pb::function::Return {
            r#type: signature.return_type.to_json_bytes(),
        }),
        summary: signature.summary.clone(),
        description: signature.description.clone(),
        description_kind: pb::StringKind::Markdown as i32,
        deprecation_message: signature.deprecation_message.clone().unwrap_or_default(),
    }
}

/// A function error as the wire message.
pub fn function_error_to_proto(error: &FunctionError) -> pb::FunctionError {
    pb::FunctionError {
        text: error.text.clone(),
        function_argument: error.argument,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::NestedAttributes;
    use crate::types::Type;

    fn sample_schema() -> Schema {
        Schema::versioned(
            2,
            Block::new()
                .description("A **thing**.")
                .attribute(Attribute::required("name", Type::String).description("The name."))
                .attribute(Attribute::computed("id", Type::String))
                .attribute(
                    Attribute::optional("secret", Type::String)
                        .sensitive()
                        .write_only(),
                )
                .attribute(Attribute::optional(
                    "ports",
                    NestedAttributes::map([Attribute::required("number", Type::Number)]),
                ))
                .block(
                    NestedBlock::list(
                        "rule",
                        Block::new().attribute(Attribute::required("cidr", Type::String)),
                    )
                    .max_items(3),
                )
                .block(NestedBlock::group("options", Block::new())),
        )
    }

    #[test]
    fn schema_conversion_keeps_every_flag() {
        let proto = schema_to_proto(&sample_schema());
        assert_eq!(proto.version, 2);
        let block = proto.block.unwrap();
        assert_eq!(block.version, 2);
        assert_eq!(block.description, "A **thing**.");
        assert_eq!(block.description_kind, pb::StringKind::Markdown as i32);

        let by_name = |n: &str| {
            block
                .attributes
                .iter()
                .find(|a| a.name == n)
                .unwrap()
                .clone()
        };
        let name = by_name("name");
        assert!(name.required && !name.optional && !name.computed);
        assert_eq!(name.r#type, b"\"string\"");
        let id = by_name("id");
        assert!(id.computed && !id.required);
        let secret = by_name("secret");
        assert!(secret.sensitive && secret.write_only && secret.optional);
        let ports = by_name("ports");
        assert!(ports.r#type.is_empty());
        let nested = ports.nested_type.unwrap();
        assert_eq!(nested.nesting, pb::schema::object::NestingMode::Map as i32);
        assert_eq!(nested.attributes[0].name, "number");
        assert_eq!(nested.attributes[0].r#type, b"\"number\"");

        let rule = &block.block_types[0];
        assert_eq!(rule.type_name, "rule");
        assert_eq!(
            rule.nesting,
            pb::schema::nested_block::NestingMode::List as i32
        );
        assert_eq!(rule.max_items, 3);
        assert_eq!(rule.block.as_ref().unwrap().attributes[0].name, "cidr");
        assert_eq!(
            block.block_types[1].nesting,
            pb::schema::nested_block::NestingMode::Group as i32
        );
    }

    #[test]
    fn path_round_trip_and_diagnostics() {
        let path = AttributePath::new("rule")
            .index(0)
            .attr("ports")
            .key("k")
            .attr("number");
        let proto = path_to_proto(&path);
        assert_eq!(proto.steps.len(), 5);
        assert_eq!(path_from_proto(&proto), path);

        let diag = Diagnostic::error("Bad port", "Use 1-65535.").with_path(path.clone());
        let proto = diagnostic_to_proto(&diag);
        assert_eq!(proto.severity, pb::diagnostic::Severity::Error as i32);
        assert_eq!(proto.summary, "Bad port");
        assert_eq!(proto.detail, "Use 1-65535.");
        assert_eq!(path_from_proto(proto.attribute.as_ref().unwrap()), path);

        let warn = Diagnostic::warning("w", "").with_path(AttributePath::root());
        let proto = diagnostic_to_proto(&warn);
        assert_eq!(proto.severity, pb::diagnostic::Severity::Warning as i32);
        assert!(proto.attribute.is_none());
    }

    #[test]
    fn function_signature_conversion() {
        let sig = Signature::new(
            vec![Parameter::new("input", Type::String).allow_null()],
            Type::list(Type::String),
        )
        .variadic(Parameter::new("more", Type::Dynamic).allow_unknown())
        .summary("Splits")
        .deprecated("use split()");
        let proto = signature_to_proto(&sig);
        assert_eq!(proto.parameters[0].name, "input");
        assert!(proto.parameters[0].allow_null_value);
        let variadic = proto.variadic_parameter.unwrap();
        assert!(variadic.allow_unknown_values);
        assert_eq!(variadic.r#type, b"\"dynamic\"");
        assert_eq!(proto.r#return.unwrap().r#type, br#"["list","string"]"#);
        assert_eq!(proto.deprecation_message, "use split()");

        let err = function_error_to_proto(&FunctionError::argument(1, "bad"));
        assert_eq!(err.function_argument, Some(1));
    }
}
