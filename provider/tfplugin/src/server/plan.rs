//! Default planning: which planned values become unknown, and which changes force
//! replacement.

use crate::path::{AttributePath, PathStep};
use crate::schema::{Attribute, AttributeType, Block, BlockNesting, ObjectNesting};
use crate::value::Value;

/// Sets every computed attribute that the configuration leaves null to unknown ("known
/// after apply"), through nested attributes and nested blocks.
///
/// Nested values are aligned with the configuration by list index and map key. Set
/// elements cannot be aligned with configuration elements, so inside sets only computed
/// attributes that are null in the plan become unknown (there a null plan value implies a
/// null configuration value).
pub(crate) fn mark_computed_unknown(
    block: &Block,
    planned: Value,
    config: Option<&Value>,
) -> Value {
    let Value::Object(mut attrs) = planned else {
        return planned;
    };
    for attribute in &block.attributes {
        if let Some(value) = attrs.remove(&attribute.name) {
            let cfg = config.map(|c| c.get_attr(&attribute.name));
            attrs.insert(
                attribute.name.clone(),
                attribute_value(attribute, value, cfg),
            );
        }
    }
    for nested in &block.block_types {
        if let Some(value) = attrs.remove(&nested.type_name) {
            let cfg = config.and_then(|c| c.get_attr(&nested.type_name));
            let mapped = match nested.nesting {
                BlockNesting::Single | BlockNesting::Group => {
                    mark_computed_unknown(&nested.block, value, cfg.or(config.map(|_| &NULL)))
                }
                BlockNesting::List => map_elements(value, cfg, |v, c| {
                    mark_computed_unknown(&nested.block, v, c)
                }),
                BlockNesting::Map => map_entries(value, cfg, |v, c| {
                    mark_computed_unknown(&nested.block, v, c)
                }),
                BlockNesting::Set => {
                    map_set(value, |v| mark_computed_unknown(&nested.block, v, None))
                }
            };
            attrs.insert(nested.type_name.clone(), mapped);
        }
    }
    Value::Object(attrs)
}

static NULL: Value = Value::Null;

/// `config`: `None` when the configuration cannot be aligned (inside sets);
/// `Some(None)` when the configuration object lacks the attribute; `Some(Some(v))` otherwise.
fn attribute_value(attribute: &Attribute, value: Value, config: Option<Option<&Value>>) -> Value {
    let unset_in_config = match config {
        Some(cfg) => cfg.is_none_or(Value::is_null),
        None => value.is_null(),
    };
    if attribute.computed && unset_in_config {
        return Value::unknown();
    }
    let AttributeType::Nested(nested) = &attribute.ty else {
        return value;
    };
    let cfg = config.flatten();
    let aligned = config.is_some();
    let object = |v: Value, c: Option<&Value>| nested_object(&nested.attributes, v, c);
    match nested.nesting {
        ObjectNesting::Single => object(
            value,
            if aligned {
                Some(cfg.unwrap_or(&NULL))
            } else {
                None
            },
        ),
        ObjectNesting::List if aligned => map_elements(value, cfg, object),
        ObjectNesting::Map if aligned => map_entries(value, cfg, object),
        _ => map_set(value, |v| object(v, None)),
    }
}

fn nested_object(attributes: &[Attribute], value: Value, config: Option<&Value>) -> Value {
    let Value::Object(mut attrs) = value else {
        return value;
    };
    for attribute in attributes {
        if let Some(v) = attrs.remove(&attribute.name) {
            let cfg = config.map(|c| c.get_attr(&attribute.name));
            attrs.insert(attribute.name.clone(), attribute_value(attribute, v, cfg));
        }
    }
    Value::Object(attrs)
}

fn map_elements(
    value: Value,
    config: Option<&Value>,
    f: impl Fn(Value, Option<&Value>) -> Value,
) -> Value {
    let Value::List(elements) = value else {
        return value;
    };
    let cfg = config.and_then(Value::as_elements);
    Value::List(
        elements
            .into_iter()
            .enumerate()
            .map(|(i, v)| f(v, Some(cfg.and_then(|c| c.get(i)).unwrap_or(&NULL))))
            .collect(),
    )
}

fn map_entries(
    value: Value,
    config: Option<&Value>,
    f: impl Fn(Value, Option<&Value>) -> Value,
) -> Value {
    let Value::Map(entries) = value else {
        return value;
    };
    let cfg = config.and_then(Value::as_map);
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| {
                let c = cfg.and_then(|c| c.get(&k)).unwrap_or(&NULL);
                let mapped = f(v, Some(c));
                (k, mapped)
            })
            .collect(),
    )
}

fn map_set(value: Value, f: impl Fn(Value) -> Value) -> Value {
    match value {
        Value::Set(elements) => Value::Set(elements.into_iter().map(f).collect()),
        other => other,
    }
}

/// The paths among `candidates` whose value differs between `prior` and `planned`
/// (an unknown planned value counts as a change). Duplicates are removed.
pub(crate) fn changed_paths(
    prior: &Value,
    planned: &Value,
    candidates: impl IntoIterator<Item = AttributePath>,
) -> Vec<AttributePath> {
    let mut out: Vec<AttributePath> = Vec::new();
    for path in candidates {
        if out.contains(&path) {
            continue;
        }
        let before = prior.get(&path);
        let after = planned.get(&path);
        let changed = match (before, after) {
            (None, None) => false,
            (Some(b), Some(a)) => a.is_unknown() || b != a,
            (Some(b), None) => !b.is_null(),
            (None, Some(a)) => !a.is_null(),
        };
        if changed {
            out.push(path);
        }
    }
    out
}

/// The first path in `value` that holds an unknown value, if any.
pub(crate) fn first_unknown(value: &Value) -> Option<AttributePath> {
    let mut found = None;
    value.walk(|path, v| {
        if found.is_none() && v.is_unknown() {
            found = Some(path.clone());
        }
    });
    found
}

/// Whether `path` starts at an attribute (the form requires-replace paths must have).
pub(crate) fn is_attribute_path(path: &AttributePath) -> bool {
    matches!(path.steps().first(), Some(PathStep::Attribute(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{NestedAttributes, NestedBlock, Schema};
    use crate::types::Type;

    fn schema() -> Schema {
        Schema::new(
            Block::new()
                .attribute(Attribute::required("name", Type::String))
                .attribute(Attribute::computed("id", Type::String))
                .attribute(Attribute::optional_computed("mode", Type::String))
                .attribute(Attribute::optional("secret", Type::String).write_only())
                .attribute(Attribute::optional(
                    "items",
                    NestedAttributes::list([
                        Attribute::required("key", Type::String),
                        Attribute::computed("hash", Type::String),
                    ]),
                ))
                .block(NestedBlock::list(
                    "rule",
                    Block::new()
                        .attribute(Attribute::required("cidr", Type::String))
                        .attribute(Attribute::computed("rule_id", Type::String)),
                ))
                .block(NestedBlock::set(
                    "tag",
                    Block::new()
                        .attribute(Attribute::required("k", Type::String))
                        .attribute(Attribute::computed("seen", Type::Bool)),
                )),
        )
    }

    fn config() -> Value {
        Value::object([
            ("name", Value::string("a")),
            ("id", Value::Null),
            ("mode", Value::string("fast")),
            ("secret", Value::string("s3cr3t")),
            (
                "items",
                Value::list([Value::object([
                    ("key", Value::string("k1")),
                    ("hash", Value::Null),
                ])]),
            ),
            (
                "rule",
                Value::list([Value::object([
                    ("cidr", Value::string("10.0.0.0/8")),
                    ("rule_id", Value::Null),
                ])]),
            ),
            (
                "tag",
                Value::set([Value::object([
                    ("k", Value::string("x")),
                    ("seen", Value::Null),
                ])]),
            ),
        ])
    }

    #[test]
    fn create_marks_unset_computed_unknown_everywhere() {
        let s = schema();
        let planned = s.block.null_write_only(config());
        let planned = mark_computed_unknown(&s.block, planned, Some(&config()));
        let at = |p: AttributePath| planned.get(&p).unwrap().clone();
        assert!(at(AttributePath::new("id")).is_unknown());
        assert_eq!(at(AttributePath::new("mode")), Value::string("fast"));
        assert!(
            at(AttributePath::new("secret")).is_null(),
            "write-only nulled"
        );
        assert!(at(AttributePath::new("items").index(0).attr("hash")).is_unknown());
        assert_eq!(
            at(AttributePath::new("items").index(0).attr("key")),
            Value::string("k1")
        );
        assert!(at(AttributePath::new("rule").index(0).attr("rule_id")).is_unknown());
        let tags = planned.get_attr("tag").unwrap().as_elements().unwrap();
        assert!(tags[0].get_attr("seen").unwrap().is_unknown());
        assert_eq!(tags[0].get_attr("k").unwrap(), &Value::string("x"));
    }

    #[test]
    fn optional_computed_unset_becomes_unknown_and_prior_values_are_replaced() {
        let s = schema();
        let mut cfg = config();
        cfg.set_at(&AttributePath::new("mode"), Value::Null)
            .unwrap();
        // Proposed new state on update carries prior computed values.
        let mut proposed = s.block.null_write_only(cfg.clone());
        proposed
            .set_at(&AttributePath::new("id"), Value::string("id-1"))
            .unwrap();
        proposed
            .set_at(&AttributePath::new("mode"), Value::string("slow"))
            .unwrap();
        let planned = mark_computed_unknown(&s.block, proposed, Some(&cfg));
        assert!(planned.get(&AttributePath::new("id")).unwrap().is_unknown());
        assert!(
            planned
                .get(&AttributePath::new("mode"))
                .unwrap()
                .is_unknown()
        );
    }

    #[test]
    fn requires_replace_only_for_changed_paths() {
        let prior = Value::object([("name", Value::string("a")), ("size", Value::number(1))]);
        let planned = Value::object([("name", Value::string("b")), ("size", Value::number(1))]);
        let paths = changed_paths(
            &prior,
            &planned,
            [
                AttributePath::new("name"),
                AttributePath::new("size"),
                AttributePath::new("name"),
            ],
        );
        assert_eq!(paths, vec![AttributePath::new("name")]);

        let planned_unknown =
            Value::object([("name", Value::string("a")), ("size", Value::unknown())]);
        let paths = changed_paths(&prior, &planned_unknown, [AttributePath::new("size")]);
        assert_eq!(paths, vec![AttributePath::new("size")]);
    }

    #[test]
    fn first_unknown_finds_nested_unknowns() {
        let v = Value::object([("a", Value::list([Value::object([("b", Value::unknown())])]))]);
        assert_eq!(
            first_unknown(&v),
            Some(AttributePath::new("a").index(0).attr("b"))
        );
        assert_eq!(
            first_unknown(&Value::object([("a", Value::string("x"))])),
            None
        );
        assert!(is_attribute_path(&AttributePath::new("a")));
        assert!(!is_attribute_path(&AttributePath::root()));
    }
}
