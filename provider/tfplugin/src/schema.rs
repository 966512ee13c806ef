//! The schema model: what attributes and nested blocks a provider, resource, data
//! source or ephemeral resource has, and the value type Terraform derives from them.
//!
//! Schemas read well in code through the builder methods:
//!
//! ```
//! use tfplugin::schema::{Attribute, Block, NestedAttributes, NestedBlock, Schema};
//! use tfplugin::Type;
//!
//! let schema = Schema::new(
//!     Block::new()
//!         .description("A **greeting**.")
//!         .attribute(Attribute::required("name", Type::String).description("Who to greet."))
//!         .attribute(Attribute::computed("id", Type::String))
//!         .attribute(Attribute::optional("password", Type::String).sensitive().write_only())
//!         .attribute(Attribute::optional(
//!             "ports",
//!             NestedAttributes::map([Attribute::required("number", Type::Number)]),
//!         ))
//!         .block(NestedBlock::list("rule", Block::new().attribute(Attribute::required("cidr", Type::String))).max_items(3)),
//! );
//! assert!(schema.validate().is_empty());
//! let ty = schema.value_type();
//! assert!(ty.object_attributes().unwrap().contains_key("rule"));
//! ```

use std::collections::BTreeMap;

use crate::path::{AttributePath, PathStep};
use crate::types::{ObjectType, Type};
use crate::value::Value;

/// A versioned schema (the version drives `UpgradeResourceState`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schema {
    /// Schema version; bump it when the stored state's shape changes.
    pub version: i64,
    /// The top-level block.
    pub block: Block,
}

/// How a description string is formatted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StringKind {
    /// Plain text.
    #[default]
    Plain,
    /// Markdown.
    Markdown,
}

/// A block: attributes plus nested blocks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Block {
    /// Attributes, in declaration order (names must be unique within the block).
    pub attributes: Vec<Attribute>,
    /// Nested block types, in declaration order.
    pub block_types: Vec<NestedBlock>,
    /// Description of the block.
    pub description: String,
    /// Format of `description`.
    pub description_kind: StringKind,
    /// Whether the whole block is deprecated.
    pub deprecated: bool,
}

/// The type of an attribute: a plain cty type or nested attributes.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeType {
    /// A cty type.
    Type(Type),
    /// Nested attributes (protocol v6 "nested_type").
    Nested(NestedAttributes),
}

impl From<Type> for AttributeType {
    fn from(t: Type) -> Self {
        AttributeType::Type(t)
    }
}

impl From<NestedAttributes> for AttributeType {
    fn from(n: NestedAttributes) -> Self {
        AttributeType::Nested(n)
    }
}

/// One attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    /// Attribute name.
    pub name: String,
    /// Its type.
    pub ty: AttributeType,
    /// Description.
    pub description: String,
    /// Format of `description`.
    pub description_kind: StringKind,
    /// Must be set in configuration.
    pub required: bool,
    /// May be set in configuration.
    pub optional: bool,
    /// Set by the provider (possibly in addition to `optional`).
    pub computed: bool,
    /// Hidden in Terraform's output.
    pub sensitive: bool,
    /// Only in configuration, never persisted to plan or state (Terraform ≥ 1.11).
    pub write_only: bool,
    /// Deprecated.
    pub deprecated: bool,
}

/// How nested attributes (or a nested block) repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectNesting {
    /// A single object.
    Single,
    /// A list of objects.
    List,
    /// A set of objects.
    Set,
    /// A map of objects.
    Map,
}

/// Nested attributes: an object type defined by attributes, repeated per `nesting`.
#[derive(Debug, Clone, PartialEq)]
pub struct NestedAttributes {
    /// How the object repeats.
    pub nesting: ObjectNesting,
    /// The object's attributes.
    pub attributes: Vec<Attribute>,
}

/// How a nested block repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockNesting {
    /// At most one block; null when absent.
    Single,
    /// A list of blocks.
    List,
    /// A set of blocks.
    Set,
    /// Labelled blocks: a map keyed by the label.
    Map,
    /// Exactly one block that is never null: absent means all attributes null.
    Group,
}

/// A nested block type inside a [`Block`].
#[derive(Debug, Clone, PartialEq)]
pub struct NestedBlock {
    /// Block type name (the HCL block keyword).
    pub type_name: String,
    /// The block's content.
    pub block: Block,
    /// How it repeats.
    pub nesting: BlockNesting,
    /// Minimum number of blocks (list/set); 0 for none.
    pub min_items: i64,
    /// Maximum number of blocks (list/set); 0 for unlimited.
    pub max_items: i64,
}

// ---------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------

impl Schema {
    /// A version-0 schema.
    pub fn new(block: Block) -> Self {
        Self { version: 0, block }
    }

    /// A schema with the given version.
    pub fn versioned(version: i64, block: Block) -> Self {
        Self { version, block }
    }

    /// The object type of values that conform to this schema.
    pub fn value_type(&self) -> Type {
        self.block.implied_type()
    }

    /// Problems that make the schema invalid (empty if it is fine). Terraform rejects
    /// invalid schemas too, but with less helpful messages.
    pub fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.block.validate_into(&AttributePath::root(), &mut out);
        out
    }
}

impl Block {
    /// An empty block.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an attribute.
    #[must_use]
    pub fn attribute(mut self, attribute: Attribute) -> Self {
        self.attributes.push(attribute);
        self
    }

    /// Add several attributes.
    #[must_use]
    pub fn attributes(mut self, attributes: impl IntoIterator<Item = Attribute>) -> Self {
        self.attributes.extend(attributes);
        self
    }

    /// Add a nested block type.
    #[must_use]
    pub fn block(mut self, block: NestedBlock) -> Self {
        self.block_types.push(block);
        self
    }

    /// Set a markdown description.
    #[must_use]
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self.description_kind = StringKind::Markdown;
        self
    }

    /// Set a plain-text description.
    #[must_use]
    pub fn plain_description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self.description_kind = StringKind::Plain;
        self
    }

    /// Mark deprecated.
    #[must_use]
    pub fn deprecated(mut self) -> Self {
        self.deprecated = true;
        self
    }

    /// The attribute named `name`.
    pub fn get_attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }

    /// The nested block type named `name`.
    pub fn get_block(&self, name: &str) -> Option<&NestedBlock> {
        self.block_types.iter().find(|b| b.type_name == name)
    }

    /// The object type Terraform derives from this block (what values look like).
    ///
    /// Nested attributes become objects (in lists, sets or maps); nested blocks become
    /// an object (single, group), list, set or map of objects. As in Terraform, a list or
    /// map block whose content contains a dynamically-typed attribute is itself `dynamic`
    /// (its elements may differ in type).
    pub fn implied_type(&self) -> Type {
        let mut attrs = BTreeMap::new();
        for a in &self.attributes {
            attrs.insert(a.name.clone(), a.value_type());
        }
        for b in &self.block_types {
            attrs.insert(b.type_name.clone(), b.value_type());
        }
        Type::Object(ObjectType {
            attributes: attrs,
            optional: Default::default(),
        })
    }

    fn validate_into(&self, path: &AttributePath, out: &mut Vec<String>) {
        let mut names = std::collections::BTreeSet::new();
        for a in &self.attributes {
            let p = path.clone().attr(&a.name);
            if !names.insert(a.name.as_str()) {
                out.push(format!("{p}: duplicate name"));
            }
            a.validate_into(&p, out);
        }
        for b in &self.block_types {
            let p = path.clone().attr(&b.type_name);
            if !names.insert(b.type_name.as_str()) {
                out.push(format!("{p}: duplicate name"));
            }
            if !valid_name(&b.type_name) {
                out.push(format!(
                    "{p}: invalid name (use lower-case letters, digits and underscores)"
                ));
            }
            if b.min_items < 0 || b.max_items < 0 || (b.max_items > 0 && b.min_items > b.max_items)
            {
                out.push(format!(
                    "{p}: min_items/max_items must be >= 0 and min <= max"
                ));
            }
            if matches!(
                b.nesting,
                BlockNesting::Single | BlockNesting::Group | BlockNesting::Map
            ) && (b.min_items != 0 || b.max_items != 0)
            {
                out.push(format!(
                    "{p}: min_items/max_items only apply to list and set blocks"
                ));
            }
            b.block.validate_into(&p, out);
        }
    }

    /// Visit every attribute value in `value` with its schema and concrete path (into
    /// nested attributes and nested blocks; list/set elements by position, maps by key).
    pub fn walk_attributes<F: FnMut(&AttributePath, &Attribute, &Value)>(
        &self,
        value: &Value,
        mut f: F,
    ) {
        walk_block(self, value, &mut AttributePath::root(), &mut f);
    }

    /// Paths of attributes selected by `pred` that are present (non-null) in `value`.
    pub fn paths_where(
        &self,
        value: &Value,
        pred: impl Fn(&Attribute) -> bool,
    ) -> Vec<AttributePath> {
        let mut out = Vec::new();
        self.walk_attributes(value, |p, a, v| {
            if pred(a) && !v.is_null() {
                out.push(p.clone());
            }
        });
        out
    }

    /// Paths of sensitive attributes that have a value in `value`.
    pub fn sensitive_paths(&self, value: &Value) -> Vec<AttributePath> {
        self.paths_where(value, |a| a.sensitive)
    }

    /// Paths of write-only attributes that have a value in `value`.
    pub fn write_only_paths(&self, value: &Value) -> Vec<AttributePath> {
        self.paths_where(value, |a| a.write_only)
    }

    /// `value` with every write-only attribute set to null. Servers apply this to
    /// planned and new state so write-only values never reach Terraform's state.
    pub fn null_write_only(&self, value: Value) -> Value {
        map_block(
            self,
            value,
            None,
            &mut AttributePath::root(),
            &mut |_, a, v, _| {
                if a.write_only { Value::Null } else { v }
            },
        )
    }

    /// `planned` with every computed attribute that is null in `config` set to unknown
    /// (what a plan shows as "known after apply"). Nested values are aligned with the
    /// configuration by list index and map key; set elements cannot be aligned, so
    /// computed attributes inside sets are left alone.
    pub fn unknown_computed(&self, planned: Value, config: &Value) -> Value {
        map_block(
            self,
            planned,
            Some(config),
            &mut AttributePath::root(),
            &mut |_, a, v, c| {
                let unset_in_config = c.is_none_or(Value::is_null);
                if a.computed && unset_in_config && v.is_null() {
                    Value::unknown()
                } else {
                    v
                }
            },
        )
    }

    /// The attribute at `path` (through nested attributes and nested blocks; element
    /// steps are skipped over).
    pub fn attribute_at(&self, path: &AttributePath) -> Option<&Attribute> {
        let mut block = self;
        let mut nested: Option<&[Attribute]> = None;
        let mut found: Option<&Attribute> = None;
        for step in path.steps() {
            let PathStep::Attribute(name) = step else {
                continue;
            };
            let a = match (found, nested) {
                // Inside a plain (non-nested) attribute of object type: the path points
                // into its value, which belongs to that attribute.
                (Some(a), None) => return Some(a),
                (_, Some(attrs)) => attrs.iter().find(|a| &a.name == name)?,
                (None, None) => match block.get_attribute(name) {
                    Some(a) => a,
                    None => {
                        block = &block.get_block(name)?.block;
                        continue;
                    }
                },
            };
            found = Some(a);
            nested = match &a.ty {
                AttributeType::Nested(n) => Some(&n.attributes),
                AttributeType::Type(_) => None,
            };
        }
        found
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes().first().is_some_and(u8::is_ascii_digit)
}

impl Attribute {
    fn with_flags(
        name: impl Into<String>,
        ty: impl Into<AttributeType>,
        required: bool,
        optional: bool,
        computed: bool,
    ) -> Self {
        Self {
            name: name.into(),
            ty: ty.into(),
            description: String::new(),
            description_kind: StringKind::Plain,
            required,
            optional,
            computed,
            sensitive: false,
            write_only: false,
            deprecated: false,
        }
    }

    /// A required attribute.
    pub fn required(name: impl Into<String>, ty: impl Into<AttributeType>) -> Self {
        Self::with_flags(name, ty, true, false, false)
    }

    /// An optional attribute.
    pub fn optional(name: impl Into<String>, ty: impl Into<AttributeType>) -> Self {
        Self::with_flags(name, ty, false, true, false)
    }

    /// A computed (provider-set, read-only) attribute.
    pub fn computed(name: impl Into<String>, ty: impl Into<AttributeType>) -> Self {
        Self::with_flags(name, ty, false, false, true)
    }

    /// An optional attribute the provider fills in when it is not configured.
    pub fn optional_computed(name: impl Into<String>, ty: impl Into<AttributeType>) -> Self {
        Self::with_flags(name, ty, false, true, true)
    }

    /// Set a markdown description.
    #[must_use]
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self.description_kind = StringKind::Markdown;
        self
    }

    /// Set a plain-text description.
    #[must_use]
    pub fn plain_description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self.description_kind = StringKind::Plain;
        self
    }

    /// Mark sensitive.
    #[must_use]
    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }

    /// Mark write-only.
    #[must_use]
    pub fn write_only(mut self) -> Self {
        self.write_only = true;
        self
    }

    /// Mark deprecated.
    #[must_use]
    pub fn deprecated(mut self) -> Self {
        self.deprecated = true;
        self
    }

    /// The type of this attribute's values.
    pub fn value_type(&self) -> Type {
        match &self.ty {
            AttributeType::Type(t) => t.clone(),
            AttributeType::Nested(n) => n.value_type(),
        }
    }

    fn validate_into(&self, p: &AttributePath, out: &mut Vec<String>) {
        if !valid_name(&self.name) {
            out.push(format!(
                "{p}: invalid name (use lower-case letters, digits and underscores)"
            ));
        }
        match (self.required, self.optional, self.computed) {
            (true, false, false) | (false, true, _) | (false, false, true) => {}
            _ => out.push(format!(
                "{p}: set exactly one of required, optional, computed (optional may be combined with computed)"
            )),
        }
        if self.write_only && self.computed {
            out.push(format!("{p}: a write-only attribute cannot be computed"));
        }
        if let AttributeType::Nested(n) = &self.ty {
            let mut names = std::collections::BTreeSet::new();
            for a in &n.attributes {
                let ap = p.clone().attr(&a.name);
                if !names.insert(a.name.as_str()) {
                    out.push(format!("{ap}: duplicate name"));
                }
                a.validate_into(&ap, out);
            }
        }
    }
}

impl NestedAttributes {
    /// A single nested object.
    pub fn single(attributes: impl IntoIterator<Item = Attribute>) -> Self {
        Self {
            nesting: ObjectNesting::Single,
            attributes: attributes.into_iter().collect(),
        }
    }

    /// A list of nested objects.
    pub fn list(attributes: impl IntoIterator<Item = Attribute>) -> Self {
        Self {
            nesting: ObjectNesting::List,
            attributes: attributes.into_iter().collect(),
        }
    }

    /// A set of nested objects.
    pub fn set(attributes: impl IntoIterator<Item = Attribute>) -> Self {
        Self {
            nesting: ObjectNesting::Set,
            attributes: attributes.into_iter().collect(),
        }
    }

    /// A map of nested objects.
    pub fn map(attributes: impl IntoIterator<Item = Attribute>) -> Self {
        Self {
            nesting: ObjectNesting::Map,
            attributes: attributes.into_iter().collect(),
        }
    }

    /// The nested object type with its optional attributes marked, as a type
    /// constraint (Terraform's `specType`).
    pub fn object_type_constraint(&self) -> Type {
        let mut o = ObjectType::default();
        for a in &self.attributes {
            let t = match &a.ty {
                AttributeType::Type(t) => t.clone(),
                AttributeType::Nested(n) => n.type_constraint(),
            };
            o.attributes.insert(a.name.clone(), t);
            if a.optional || a.computed {
                o.optional.insert(a.name.clone());
            }
        }
        Type::Object(o)
    }

    fn type_constraint(&self) -> Type {
        let o = self.object_type_constraint();
        match self.nesting {
            ObjectNesting::Single => o,
            ObjectNesting::List => Type::list(o),
            ObjectNesting::Set => Type::set(o),
            ObjectNesting::Map => Type::map(o),
        }
    }

    /// The type of values: the object (without optional markers) in the nesting's
    /// collection.
    pub fn value_type(&self) -> Type {
        self.type_constraint().without_optional_attributes()
    }

    /// The object type of one element.
    pub fn object_type(&self) -> Type {
        self.object_type_constraint().without_optional_attributes()
    }
}

impl NestedBlock {
    fn new(type_name: impl Into<String>, block: Block, nesting: BlockNesting) -> Self {
        Self {
            type_name: type_name.into(),
            block,
            nesting,
            min_items: 0,
            max_items: 0,
        }
    }

    /// A single optional block.
    pub fn single(type_name: impl Into<String>, block: Block) -> Self {
        Self::new(type_name, block, BlockNesting::Single)
    }

    /// A repeatable block kept in order.
    pub fn list(type_name: impl Into<String>, block: Block) -> Self {
        Self::new(type_name, block, BlockNesting::List)
    }

    /// A repeatable block without order.
    pub fn set(type_name: impl Into<String>, block: Block) -> Self {
        Self::new(type_name, block, BlockNesting::Set)
    }

    /// A labelled block, keyed by its label.
    pub fn map(type_name: impl Into<String>, block: Block) -> Self {
        Self::new(type_name, block, BlockNesting::Map)
    }

    /// A block that is always present (never null).
    pub fn group(type_name: impl Into<String>, block: Block) -> Self {
        Self::new(type_name, block, BlockNesting::Group)
    }

    /// Set the minimum number of blocks.
    #[must_use]
    pub fn min_items(mut self, n: i64) -> Self {
        self.min_items = n;
        self
    }

    /// Set the maximum number of blocks.
    #[must_use]
    pub fn max_items(mut self, n: i64) -> Self {
        self.max_items = n;
        self
    }

    /// The type of this block's value inside its parent.
    pub fn value_type(&self) -> Type {
        let o = self.block.implied_type();
        match self.nesting {
            BlockNesting::Single | BlockNesting::Group => o,
            BlockNesting::List if o.has_dynamic() => Type::Dynamic,
            BlockNesting::List => Type::list(o),
            BlockNesting::Set => Type::set(o),
            BlockNesting::Map if o.has_dynamic() => Type::Dynamic,
            BlockNesting::Map => Type::map(o),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Schema-directed walks
// ---------------------------------------------------------------------------------------

fn elements_of(v: &Value) -> Vec<(PathStep, &Value)> {
    match v.inner() {
        Value::List(vs) | Value::Set(vs) | Value::Tuple(vs) => vs
            .iter()
            .enumerate()
            .map(|(i, e)| {
                (
                    PathStep::ElementKeyInt(i64::try_from(i).unwrap_or(i64::MAX)),
                    e,
                )
            })
            .collect(),
        Value::Map(m) => m
            .iter()
            .map(|(k, e)| (PathStep::ElementKeyString(k.clone()), e))
            .collect(),
        _ => Vec::new(),
    }
}

fn walk_attrs<F: FnMut(&AttributePath, &Attribute, &Value)>(
    attrs: &[Attribute],
    obj: &Value,
    path: &mut AttributePath,
    f: &mut F,
) {
    let Some(m) = obj.as_map() else { return };
    for a in attrs {
        let Some(v) = m.get(&a.name) else { continue };
        path.push(PathStep::Attribute(a.name.clone()));
        f(path, a, v);
        if let AttributeType::Nested(n) = &a.ty {
            if n.nesting == ObjectNesting::Single {
                walk_attrs(&n.attributes, v, path, f);
            } else {
                for (step, e) in elements_of(v) {
                    path.push(step);
                    walk_attrs(&n.attributes, e, path, f);
                    path.pop();
                }
            }
        }
        path.pop();
    }
}

fn walk_block<F: FnMut(&AttributePath, &Attribute, &Value)>(
    block: &Block,
    obj: &Value,
    path: &mut AttributePath,
    f: &mut F,
) {
    walk_attrs(&block.attributes, obj, path, f);
    let Some(m) = obj.as_map() else { return };
    for b in &block.block_types {
        let Some(v) = m.get(&b.type_name) else {
            continue;
        };
        path.push(PathStep::Attribute(b.type_name.clone()));
        match b.nesting {
            BlockNesting::Single | BlockNesting::Group => walk_block(&b.block, v, path, f),
            _ => {
                for (step, e) in elements_of(v) {
                    path.push(step);
                    walk_block(&b.block, e, path, f);
                    path.pop();
                }
            }
        }
        path.pop();
    }
}

type MapFn<'a> = dyn FnMut(&AttributePath, &Attribute, Value, Option<&Value>) -> Value + 'a;

/// Apply `f` to each element of a collection value, aligning with `config` by index or
/// key (never for sets).
fn map_elements(
    v: Value,
    config: Option<&Value>,
    path: &mut AttributePath,
    mut each: impl FnMut(Value, Option<&Value>, &mut AttributePath) -> Value,
) -> Value {
    let was_tuple = matches!(v, Value::Tuple(_));
    match v {
        Value::Dynamic(t, inner) => {
            Value::Dynamic(t, Box::new(map_elements(*inner, config, path, each)))
        }
        Value::List(vs) | Value::Tuple(vs) => {
            let out: Vec<Value> = vs
                .into_iter()
                .enumerate()
                .map(|(i, e)| {
                    let c = config
                        .and_then(|c| c.as_elements())
                        .and_then(|cs| cs.get(i));
                    path.push(PathStep::ElementKeyInt(
                        i64::try_from(i).unwrap_or(i64::MAX),
                    ));
                    let r = each(e, c, path);
                    path.pop();
                    r
                })
                .collect();
            if was_tuple {
                Value::Tuple(out)
            } else {
                Value::List(out)
            }
        }
        Value::Set(vs) => Value::Set(
            vs.into_iter()
                .enumerate()
                .map(|(i, e)| {
                    path.push(PathStep::ElementKeyInt(
                        i64::try_from(i).unwrap_or(i64::MAX),
                    ));
                    let r = each(e, None, path);
                    path.pop();
                    r
                })
                .collect(),
        ),
        Value::Map(m) => Value::Map(
            m.into_iter()
                .map(|(k, e)| {
                    let c = config.and_then(|c| c.get_attr(&k));
                    path.push(PathStep::ElementKeyString(k.clone()));
                    let r = each(e, c, path);
                    path.pop();
                    (k, r)
                })
                .collect(),
        ),
        other => other,
    }
}

fn map_attrs(
    attrs: &[Attribute],
    obj: Value,
    config: Option<&Value>,
    path: &mut AttributePath,
    f: &mut MapFn<'_>,
) -> Value {
    let mut m = match obj {
        Value::Object(m) => m,
        Value::Dynamic(t, inner) => {
            return Value::Dynamic(t, Box::new(map_attrs(attrs, *inner, config, path, f)));
        }
        other => return other,
    };
    for a in attrs {
        let Some(v) = m.remove(&a.name) else { continue };
        let c = config.and_then(|c| c.get_attr(&a.name));
        path.push(PathStep::Attribute(a.name.clone()));
        let mut nv = f(path, a, v, c);
        if let AttributeType::Nested(n) = &a.ty {
            nv = if n.nesting == ObjectNesting::Single {
                map_attrs(&n.attributes, nv, c, path, f)
            } else {
                map_elements(nv, c, path, |e, ec, p| {
                    map_attrs(&n.attributes, e, ec, p, f)
                })
            };
        }
        path.pop();
        m.insert(a.name.clone(), nv);
    }
    Value::Object(m)
}

fn map_block(
    block: &Block,
    obj: Value,
    config: Option<&Value>,
    path: &mut AttributePath,
    f: &mut MapFn<'_>,
) -> Value {
    let obj = map_attrs(&block.attributes, obj, config, path, f);
    let mut m = match obj {
        Value::Object(m) => m,
        other => return other,
    };
    for b in &block.block_types {
        let Some(v) = m.remove(&b.type_name) else {
            continue;
        };
        let c = config.and_then(|c| c.get_attr(&b.type_name));
        path.push(PathStep::Attribute(b.type_name.clone()));
        let nv = match b.nesting {
            BlockNesting::Single | BlockNesting::Group => map_block(&b.block, v, c, path, f),
            _ => map_elements(v, c, path, |e, ec, p| map_block(&b.block, e, ec, p, f)),
        };
        path.pop();
        m.insert(b.type_name.clone(), nv);
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::versioned(
            1,
            Block::new()
                .attribute(Attribute::required("name", Type::String))
                .attribute(Attribute::computed("id", Type::String))
                .attribute(
                    Attribute::optional("password", Type::String)
                        .sensitive()
                        .write_only(),
                )
                .attribute(Attribute::optional(
                    "single",
                    NestedAttributes::single([
                        Attribute::required("a", Type::String),
                        Attribute::optional_computed("b", Type::Number),
                        Attribute::optional("secret", Type::String).sensitive(),
                    ]),
                ))
                .attribute(Attribute::optional(
                    "lst",
                    NestedAttributes::list([
                        Attribute::optional("token", Type::String).write_only()
                    ]),
                ))
                .attribute(Attribute::optional(
                    "st",
                    NestedAttributes::set([Attribute::required("x", Type::Bool)]),
                ))
                .attribute(Attribute::optional(
                    "mp",
                    NestedAttributes::map([Attribute::computed("c", Type::String)]),
                ))
                .block(NestedBlock::single(
                    "one",
                    Block::new().attribute(Attribute::optional("v", Type::String)),
                ))
                .block(
                    NestedBlock::list(
                        "rule",
                        Block::new().attribute(Attribute::required("cidr", Type::String)),
                    )
                    .max_items(2),
                )
                .block(NestedBlock::set(
                    "tag",
                    Block::new().attribute(Attribute::required("k", Type::String)),
                ))
                .block(NestedBlock::map(
                    "named",
                    Block::new().attribute(Attribute::optional("w", Type::Number)),
                ))
                .block(NestedBlock::group(
                    "grp",
                    Block::new().attribute(Attribute::optional("key", Type::String).sensitive()),
                ))
                .block(NestedBlock::list(
                    "dyn",
                    Block::new().attribute(Attribute::optional("any", Type::Dynamic)),
                )),
        )
    }

    #[test]
    fn implied_type_covers_every_nesting_mode() {
        let s = schema();
        assert!(s.validate().is_empty(), "{:?}", s.validate());
        let want = Type::object([
            ("name", Type::String),
            ("id", Type::String),
            ("password", Type::String),
            (
                "single",
                Type::object([
                    ("a", Type::String),
                    ("b", Type::Number),
                    ("secret", Type::String),
                ]),
            ),
            ("lst", Type::list(Type::object([("token", Type::String)]))),
            ("st", Type::set(Type::object([("x", Type::Bool)]))),
            ("mp", Type::map(Type::object([("c", Type::String)]))),
            ("one", Type::object([("v", Type::String)])),
            ("rule", Type::list(Type::object([("cidr", Type::String)]))),
            ("tag", Type::set(Type::object([("k", Type::String)]))),
            ("named", Type::map(Type::object([("w", Type::Number)]))),
            ("grp", Type::object([("key", Type::String)])),
            // A list block with a dynamic attribute is dynamic (its elements may differ).
            ("dyn", Type::Dynamic),
        ]);
        assert_eq!(s.value_type(), want);
        // The nested attribute's type constraint marks optional attributes.
        let AttributeType::Nested(n) = &s.block.get_attribute("single").unwrap().ty else {
            panic!("nested")
        };
        assert_eq!(
            n.object_type_constraint(),
            Type::object_with_optional(
                [
                    ("a", Type::String),
                    ("b", Type::Number),
                    ("secret", Type::String)
                ],
                ["b", "secret"]
            )
        );
    }

    fn value() -> Value {
        Value::object([
            ("name", Value::from("n")),
            ("id", Value::Null),
            ("password", Value::from("hunter2")),
            (
                "single",
                Value::object([
                    ("a", Value::from("a")),
                    ("b", Value::Null),
                    ("secret", Value::from("s")),
                ]),
            ),
            (
                "lst",
                Value::list([
                    Value::object([("token", Value::from("t0"))]),
                    Value::object([("token", Value::from("t1"))]),
                ]),
            ),
            ("st", Value::Null),
            (
                "mp",
                Value::map([("k", Value::object([("c", Value::Null)]))]),
            ),
            ("one", Value::Null),
            ("rule", Value::List(vec![])),
            ("tag", Value::Set(vec![])),
            ("named", Value::Map(BTreeMap::new())),
            ("grp", Value::object([("key", Value::from("g"))])),
            ("dyn", Value::Null),
        ])
    }

    #[test]
    fn sensitive_and_write_only_paths() {
        let s = schema();
        let v = value();
        let sens: Vec<String> = s
            .block
            .sensitive_paths(&v)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(sens, ["password", "single.secret", "grp.key"]);
        let wo: Vec<String> = s
            .block
            .write_only_paths(&v)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(wo, ["password", "lst[0].token", "lst[1].token"]);
        let cleaned = s.block.null_write_only(v);
        assert!(s.block.write_only_paths(&cleaned).is_empty());
        assert!(cleaned.get_attr("password").unwrap().is_null());
        assert_eq!(cleaned.get_attr("name"), Some(&Value::from("n")));
        // Still encodes with the schema type.
        crate::msgpack::encode(&cleaned, &s.value_type()).unwrap();
    }

    #[test]
    fn unknown_computed_marks_unset_computed_attributes() {
        let s = schema();
        let config = value();
        let planned = s.block.unknown_computed(value(), &config);
        assert!(planned.get_attr("id").unwrap().is_unknown());
        assert!(
            planned
                .get(&AttributePath::new("single").attr("b"))
                .unwrap()
                .is_unknown()
        );
        assert!(
            planned
                .get(&AttributePath::new("mp").key("k").attr("c"))
                .unwrap()
                .is_unknown()
        );
        assert_eq!(planned.get_attr("name"), Some(&Value::from("n")));
        // A configured optional+computed attribute stays as configured.
        let mut config2 = value();
        config2
            .set_at(&AttributePath::new("single").attr("b"), Value::from(3))
            .unwrap();
        let planned = s.block.unknown_computed(config2.clone(), &config2);
        assert_eq!(
            planned.get(&AttributePath::new("single").attr("b")),
            Some(&Value::from(3))
        );
    }

    #[test]
    fn attribute_lookup_by_path() {
        let s = schema();
        let a = s
            .block
            .attribute_at(&AttributePath::new("lst").index(3).attr("token"))
            .unwrap();
        assert!(a.write_only);
        assert_eq!(
            s.block
                .attribute_at(&AttributePath::new("rule").index(0).attr("cidr"))
                .unwrap()
                .name,
            "cidr"
        );
        assert!(s.block.attribute_at(&AttributePath::new("rule")).is_none());
        // A path into a plain object-typed attribute belongs to that attribute.
        let b = Block::new().attribute(Attribute::optional(
            "obj",
            Type::object([("inner", Type::String)]),
        ));
        assert_eq!(
            b.attribute_at(&AttributePath::new("obj").attr("inner"))
                .unwrap()
                .name,
            "obj"
        );
        assert!(s.block.attribute_at(&AttributePath::new("nope")).is_none());
    }

    #[test]
    fn validation_finds_mistakes() {
        let bad = Schema::new(
            Block::new()
                .attribute(Attribute::required("x", Type::String))
                .attribute(Attribute::optional("x", Type::String))
                .attribute(Attribute::optional_computed("Bad-Name", Type::String).write_only())
                .attribute(Attribute {
                    required: true,
                    computed: true,
                    ..Attribute::required("rc", Type::String)
                })
                .block(NestedBlock::single("s", Block::new()).max_items(1))
                .block(
                    NestedBlock::list("l", Block::new())
                        .min_items(3)
                        .max_items(2),
                ),
        );
        let problems = bad.validate();
        assert_eq!(problems.len(), 6, "{problems:#?}");
    }
}
