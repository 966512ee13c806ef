//! Typed binding: a resource's model is a plain Rust struct with serde derives.
//!
//! [`from_value`] turns a decoded [`Value`] into any `DeserializeOwned` type and
//! [`to_value`] turns a `Serialize` type into a [`Value`] shaped by a [`Type`] (so a
//! Rust `Vec` becomes a list, set or tuple as the schema says, and struct fields become
//! object attributes). Attributes that may be unknown during planning use [`Attr`];
//! `Option<T>` covers null-or-known.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use tfplugin::binding::{Attr, from_value, to_value};
//! use tfplugin::{Type, Value};
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct Model {
//!     name: String,
//!     size: Option<i64>,
//!     id: Attr<String>,
//! }
//!
//! let ty = Type::object([("name", Type::String), ("size", Type::Number), ("id", Type::String)]);
//! let planned = Value::object([("name", Value::from("a")), ("size", Value::Null), ("id", Value::unknown())]);
//! let mut m: Model = from_value(&planned).unwrap();
//! assert!(m.id.is_unknown());
//! m.id = Attr::Known("a-1".into());
//! let state = to_value(&m, &ty).unwrap();
//! assert_eq!(state.get_attr("id"), Some(&Value::from("a-1")));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, IntoDeserializer};
use serde::ser::{self, Impossible};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::path::AttributePath;
use crate::types::Type;
use crate::value::{Number, Value};

/// Marker names that let [`Attr`] talk to this module's serializer and deserializer
/// through serde's data model (other serde formats see a plain option/unit).
const ATTR_MAGIC: &str = "$tfplugin::private::Attr";
const UNKNOWN_MAGIC: &str = "$tfplugin::private::Unknown";
const VALUE_MAGIC: &str = "$tfplugin::private::Value";

// ---------------------------------------------------------------------------------------
// Value as a model field
// ---------------------------------------------------------------------------------------

/// A [`Value`] can be a model field (for dynamically-typed attributes or parts the
/// model does not want to type). Through [`to_value`]/[`from_value`] it passes unchanged,
/// including unknown parts and the concrete type of dynamic values. It travels through
/// serde as the msgpack bytes of a `dynamic` value, so other serde formats see bytes.
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Raw(Vec<u8>);
        impl Serialize for Raw {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }
        let bytes = crate::msgpack::encode(self, &Type::Dynamic).map_err(ser::Error::custom)?;
        s.serialize_newtype_struct(VALUE_MAGIC, &Raw(bytes))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a tfplugin value")
            }
            fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<Value, E> {
                crate::msgpack::decode(b, &Type::Dynamic).map_err(E::custom)
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
                d.deserialize_bytes(V)
            }
        }
        d.deserialize_newtype_struct(VALUE_MAGIC, V)
    }
}

// ---------------------------------------------------------------------------------------
// Attr
// ---------------------------------------------------------------------------------------

/// A model field that may be null, unknown (during planning) or known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum Attr<T> {
    /// Null / not set.
    #[default]
    Null,
    /// Not known until apply.
    Unknown,
    /// A known value.
    Known(T),
}

impl<T> Attr<T> {
    /// True for [`Attr::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Attr::Null)
    }

    /// True for [`Attr::Unknown`].
    pub fn is_unknown(&self) -> bool {
        matches!(self, Attr::Unknown)
    }

    /// True for [`Attr::Known`].
    pub fn is_known(&self) -> bool {
        matches!(self, Attr::Known(_))
    }

    /// The known value, if any.
    pub fn known(&self) -> Option<&T> {
        match self {
            Attr::Known(v) => Some(v),
            _ => None,
        }
    }

    /// Consume into the known value, if any.
    pub fn into_known(self) -> Option<T> {
        match self {
            Attr::Known(v) => Some(v),
            _ => None,
        }
    }

    /// Borrow the content.
    pub fn as_ref(&self) -> Attr<&T> {
        match self {
            Attr::Null => Attr::Null,
            Attr::Unknown => Attr::Unknown,
            Attr::Known(v) => Attr::Known(v),
        }
    }

    /// Map the known value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Attr<U> {
        match self {
            Attr::Null => Attr::Null,
            Attr::Unknown => Attr::Unknown,
            Attr::Known(v) => Attr::Known(f(v)),
        }
    }

    /// Replace an unknown value with `f()`; null and known values stay as they are.
    /// Typical in apply: `model.id = model.id.or_known_with(|| created.id.clone())`.
    pub fn or_known_with(self, f: impl FnOnce() -> T) -> Attr<T> {
        match self {
            Attr::Unknown => Attr::Known(f()),
            other => other,
        }
    }
}

impl<T> From<T> for Attr<T> {
    fn from(v: T) -> Self {
        Attr::Known(v)
    }
}

impl<T> From<Option<T>> for Attr<T> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Attr::Null, Attr::Known)
    }
}

impl<T: Serialize> Serialize for Attr<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Attr::Null => s.serialize_none(),
            Attr::Unknown => s.serialize_newtype_struct(UNKNOWN_MAGIC, &()),
            Attr::Known(v) => s.serialize_some(v),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Attr<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> de::Visitor<'de> for V<T> {
            type Value = Attr<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a null, unknown or known value")
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Attr::Null)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Attr::Unknown)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                T::deserialize(d).map(Attr::Known)
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<Self::Value, D::Error> {
                T::deserialize(d).map(Attr::Known)
            }
        }
        d.deserialize_newtype_struct(ATTR_MAGIC, V(PhantomData))
    }
}

// ---------------------------------------------------------------------------------------
// Error
// ---------------------------------------------------------------------------------------

/// A value did not fit the Rust type, or a Rust value did not fit the schema type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    path: Option<AttributePath>,
    message: String,
}

impl Error {
    fn at(path: &Loc<'_>, message: impl Into<String>) -> Self {
        Self {
            path: Some(path.materialize()),
            message: message.into(),
        }
    }

    /// Attach `path` if the error does not know its location yet.
    fn located(mut self, path: &Loc<'_>) -> Self {
        if self.path.is_none() {
            self.path = Some(path.materialize());
        }
        self
    }

    /// The attribute path of the problem.
    pub fn path(&self) -> AttributePath {
        self.path.clone().unwrap_or_default()
    }

    /// What was wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {}: {}", self.path(), self.message)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self {
            path: None,
            message: msg.to_string(),
        }
    }
}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self {
            path: None,
            message: msg.to_string(),
        }
    }
}

impl From<Error> for crate::diag::Diagnostic {
    fn from(e: Error) -> Self {
        let path = e.path();
        let d = crate::diag::Diagnostic::error(
            "Value does not match the provider's model",
            format!("{}. This is a bug in the provider.", e.message),
        );
        if path.is_root() { d } else { d.with_path(path) }
    }
}

/// Where the (de)serialiser is, as a chain of borrowed steps: building an
/// [`AttributePath`] for every field would allocate on the hot path, and the path is only
/// needed when something fails.
#[derive(Clone, Copy)]
enum Loc<'a> {
    Root,
    Attr(&'a Loc<'a>, &'a str),
    Key(&'a Loc<'a>, &'a str),
    Index(&'a Loc<'a>, usize),
}

impl Loc<'_> {
    fn materialize(&self) -> AttributePath {
        match self {
            Loc::Root => AttributePath::root(),
            Loc::Attr(parent, name) => parent.materialize().attr(*name),
            Loc::Key(parent, key) => parent.materialize().key(*key),
            Loc::Index(parent, i) => parent
                .materialize()
                .index(i64::try_from(*i).unwrap_or(i64::MAX)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// to_value
// ---------------------------------------------------------------------------------------

/// Convert a Rust value into a [`Value`] of type `ty`.
///
/// Sequences become lists, sets or tuples, maps and structs become maps or objects, as
/// `ty` says; struct fields missing from `ty` are an error and attributes of `ty` the
/// struct lacks are null. Unit enum variants become strings. `Option::None` is null and
/// [`Attr::Unknown`] is unknown.
pub fn to_value<T: Serialize + ?Sized>(value: &T, ty: &Type) -> Result<Value, Error> {
    let path = Loc::Root;
    value
        .serialize(Ser::new(ty, &path))
        .map_err(|e| e.located(&path))
}

struct Ser<'a> {
    ty: &'a Type,
    path: &'a Loc<'a>,
    /// Set while serialising a [`Value`] field: its bytes are a msgpack dynamic value.
    passthrough: bool,
}

impl<'a> Ser<'a> {
    fn new(ty: &'a Type, path: &'a Loc<'a>) -> Self {
        Self {
            ty,
            path,
            passthrough: false,
        }
    }

    fn prim(&self, want: Type, v: Value) -> Result<Value, Error> {
        if *self.ty == want || *self.ty == Type::Dynamic {
            Ok(v)
        } else {
            Err(Error::at(
                self.path,
                format!("a Rust {want} does not fit the schema type {}", self.ty),
            ))
        }
    }

    fn mismatch(&self, what: &str) -> Error {
        Error::at(
            self.path,
            format!("a Rust {what} does not fit the schema type {}", self.ty),
        )
    }
}

impl<'a> Serializer for Ser<'a> {
    type Ok = Value;
    type Error = Error;
    type SerializeSeq = SeqSer<'a>;
    type SerializeTuple = SeqSer<'a>;
    type SerializeTupleStruct = SeqSer<'a>;
    type SerializeTupleVariant = Impossible<Value, Error>;
    type SerializeMap = MapSer<'a>;
    type SerializeStruct = MapSer<'a>;
    type SerializeStructVariant = Impossible<Value, Error>;

    fn serialize_bool(self, v: bool) -> Result<Value, Error> {
        self.prim(Type::Bool, Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, Error> {
        self.serialize_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<Value, Error> {
        self.serialize_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<Value, Error> {
        self.serialize_i64(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<Value, Error> {
        self.prim(Type::Number, Value::Number(Number::from_i64(v)))
    }
    fn serialize_i128(self, v: i128) -> Result<Value, Error> {
        let n = Number::parse(&v.to_string()).map_err(|e| Error::at(self.path, e.to_string()))?;
        self.prim(Type::Number, Value::Number(n))
    }
    fn serialize_u8(self, v: u8) -> Result<Value, Error> {
        self.serialize_u64(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<Value, Error> {
        self.serialize_u64(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<Value, Error> {
        self.serialize_u64(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<Value, Error> {
        self.prim(Type::Number, Value::Number(Number::from_u64(v)))
    }
    fn serialize_u128(self, v: u128) -> Result<Value, Error> {
        let n = Number::parse(&v.to_string()).map_err(|e| Error::at(self.path, e.to_string()))?;
        self.prim(Type::Number, Value::Number(n))
    }
    fn serialize_f32(self, v: f32) -> Result<Value, Error> {
        // Through the shortest decimal of the f32, so 0.1f32 means 0.1.
        let n = Number::parse(&v.to_string()).map_err(|e| Error::at(self.path, e.to_string()));
        match n {
            Ok(n) if v.is_finite() => self.prim(Type::Number, Value::Number(n)),
            _ => self.serialize_f64(v.into()),
        }
    }
    fn serialize_f64(self, v: f64) -> Result<Value, Error> {
        let n =
            Number::from_f64(v).ok_or_else(|| Error::at(self.path, "NaN is not a valid number"))?;
        self.prim(Type::Number, Value::Number(n))
    }
    fn serialize_char(self, v: char) -> Result<Value, Error> {
        self.prim(Type::String, Value::String(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value, Error> {
        self.prim(Type::String, Value::String(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, Error> {
        if self.passthrough {
            let value = crate::msgpack::decode(v, &Type::Dynamic)
                .map_err(|e| Error::at(self.path, e.to_string()))?;
            // In a typed position the dynamic wrapper is redundant: the type decides.
            return Ok(if *self.ty == Type::Dynamic {
                value
            } else {
                value.into_inner()
            });
        }
        Err(Error::at(
            self.path,
            "byte strings have no Terraform type; encode them as a string (e.g. base64)",
        ))
    }
    fn serialize_none(self) -> Result<Value, Error> {
        Ok(Value::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, Error> {
        Ok(Value::Null)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, Error> {
        Ok(Value::Null)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, Error> {
        self.prim(Type::String, Value::String(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<Value, Error> {
        if name == UNKNOWN_MAGIC {
            return Ok(Value::unknown());
        }
        if name == VALUE_MAGIC {
            return value.serialize(Ser {
                passthrough: true,
                ..self
            });
        }
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<Value, Error> {
        Err(self.mismatch("enum variant with data"))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqSer<'a>, Error> {
        match self.ty {
            Type::List(_) | Type::Set(_) | Type::Tuple(_) | Type::Dynamic => Ok(SeqSer {
                ty: self.ty,
                path: self.path,
                out: Vec::with_capacity(len.unwrap_or(0).min(1024)),
            }),
            _ => Err(self.mismatch("sequence")),
        }
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqSer<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<SeqSer<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Impossible<Value, Error>, Error> {
        Err(self.mismatch("enum variant with data"))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<MapSer<'a>, Error> {
        match self.ty {
            Type::Map(_) | Type::Object(_) | Type::Dynamic => Ok(MapSer {
                ty: self.ty,
                path: self.path,
                out: BTreeMap::new(),
                key: None,
            }),
            _ => Err(self.mismatch("map or struct")),
        }
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<MapSer<'a>, Error> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Impossible<Value, Error>, Error> {
        Err(self.mismatch("enum variant with data"))
    }
}

#[doc(hidden)]
pub struct SeqSer<'a> {
    ty: &'a Type,
    path: &'a Loc<'a>,
    out: Vec<Value>,
}

impl SeqSer<'_> {
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let i = self.out.len();
        let et = match self.ty {
            Type::List(t) | Type::Set(t) => t.as_ref(),
            Type::Tuple(ts) => ts.get(i).ok_or_else(|| {
                Error::at(
                    self.path,
                    format!("more than the {} elements of {}", ts.len(), self.ty),
                )
            })?,
            _ => &Type::Dynamic,
        };
        let path = Loc::Index(self.path, i);
        let v = value
            .serialize(Ser::new(et, &path))
            .map_err(|e| e.located(&path))?;
        self.out.push(v);
        Ok(())
    }

    fn finish(self) -> Result<Value, Error> {
        Ok(match self.ty {
            Type::Set(_) => Value::Set(self.out),
            Type::Tuple(ts) => {
                if ts.len() != self.out.len() {
                    return Err(Error::at(
                        self.path,
                        format!(
                            "{} elements given but {} needs {}",
                            self.out.len(),
                            self.ty,
                            ts.len()
                        ),
                    ));
                }
                Value::Tuple(self.out)
            }
            _ => Value::List(self.out),
        })
    }
}

impl ser::SerializeSeq for SeqSer<'_> {
    type Ok = Value;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.push(value)
    }
    fn end(self) -> Result<Value, Error> {
        self.finish()
    }
}

impl ser::SerializeTuple for SeqSer<'_> {
    type Ok = Value;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.push(value)
    }
    fn end(self) -> Result<Value, Error> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for SeqSer<'_> {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.push(value)
    }
    fn end(self) -> Result<Value, Error> {
        self.finish()
    }
}

#[doc(hidden)]
pub struct MapSer<'a> {
    ty: &'a Type,
    path: &'a Loc<'a>,
    out: BTreeMap<String, Value>,
    key: Option<String>,
}

impl MapSer<'_> {
    fn entry<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), Error> {
        let (vt, path) = match self.ty {
            Type::Map(t) => (t.as_ref(), Loc::Key(self.path, key)),
            Type::Object(o) => {
                let t = o.attributes.get(key).ok_or_else(|| {
                    Error::at(
                        self.path,
                        format!("field {key:?} is not an attribute of {}", self.ty),
                    )
                })?;
                (t, Loc::Attr(self.path, key))
            }
            _ => (&Type::Dynamic, Loc::Attr(self.path, key)),
        };
        let v = value
            .serialize(Ser::new(vt, &path))
            .map_err(|e| e.located(&path))?;
        self.out.insert(key.to_owned(), v);
        Ok(())
    }

    fn finish(mut self) -> Result<Value, Error> {
        Ok(match self.ty {
            Type::Map(_) => Value::Map(self.out),
            Type::Object(o) => {
                for k in o.attributes.keys() {
                    self.out.entry(k.clone()).or_insert(Value::Null);
                }
                Value::Object(self.out)
            }
            _ => Value::Object(self.out),
        })
    }
}

impl ser::SerializeMap for MapSer<'_> {
    type Ok = Value;
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        let k = key
            .serialize(Ser::new(&Type::String, self.path))
            .map_err(|_| Error::at(self.path, "map keys must be strings"))?;
        match k {
            Value::String(s) => {
                self.key = Some(s);
                Ok(())
            }
            _ => Err(Error::at(self.path, "map keys must be strings")),
        }
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self
            .key
            .take()
            .ok_or_else(|| Error::at(self.path, "map value without a key"))?;
        self.entry(&key, value)
    }
    fn end(self) -> Result<Value, Error> {
        self.finish()
    }
}

impl ser::SerializeStruct for MapSer<'_> {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.entry(key, value)
    }
    fn end(self) -> Result<Value, Error> {
        self.finish()
    }
}

// ---------------------------------------------------------------------------------------
// from_value
// ---------------------------------------------------------------------------------------

/// Convert a [`Value`] into a Rust value.
///
/// Null becomes `None`/[`Attr::Null`] (or an error for non-optional fields), unknown
/// becomes [`Attr::Unknown`] (an error anywhere else), lists/sets/tuples deserialize as
/// sequences, maps/objects as maps or structs. Numbers convert with range checks.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, Error> {
    let path = Loc::Root;
    T::deserialize(De {
        v: value,
        path: &path,
    })
    .map_err(|e| e.located(&path))
}

struct De<'v> {
    v: &'v Value,
    path: &'v Loc<'v>,
}

impl De<'_> {
    fn unknown_err(&self) -> Error {
        Error::at(
            self.path,
            "value is unknown (known only after apply); declare the field as Attr<T> to accept unknown values",
        )
    }
}

impl<'de> Deserializer<'de> for De<'_> {
    type Error = Error;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = match self.v.inner() {
            Value::Null => visitor.visit_unit(),
            Value::Unknown(_) => return Err(self.unknown_err()),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else {
                    visitor.visit_f64(n.as_f64())
                }
            }
            Value::String(s) => visitor.visit_str(s),
            Value::List(vs) | Value::Set(vs) | Value::Tuple(vs) => visitor.visit_seq(SeqDe {
                it: vs.iter().enumerate(),
                path: self.path,
            }),
            Value::Map(m) => visitor.visit_map(MapDe {
                it: m.iter(),
                pending: None,
                path: self.path,
                attrs: false,
            }),
            Value::Object(m) => visitor.visit_map(MapDe {
                it: m.iter(),
                pending: None,
                path: self.path,
                attrs: true,
            }),
            Value::Dynamic(..) => {
                return Err(Error::at(self.path, "internal: unwrapped dynamic value"));
            }
        };
        r.map_err(|e| e.located(self.path))
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.v.inner() {
            Value::Null => visitor.visit_none(),
            Value::Unknown(_) => Err(self.unknown_err()),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        if name == VALUE_MAGIC {
            let bytes = crate::msgpack::encode(self.v, &Type::Dynamic)
                .map_err(|e| Error::at(self.path, e.to_string()))?;
            return visitor.visit_bytes(&bytes);
        }
        if name == ATTR_MAGIC {
            return match self.v.inner() {
                Value::Null => visitor.visit_none(),
                Value::Unknown(_) => visitor.visit_unit(),
                _ => visitor.visit_some(self),
            };
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_unit<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.v.inner() {
            Value::Null => visitor.visit_unit(),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.v.inner() {
            Value::String(s) => visitor
                .visit_enum(s.as_str().into_deserializer())
                .map_err(|e: Error| e.located(self.path)),
            Value::Unknown(_) => Err(self.unknown_err()),
            other => Err(Error::at(
                self.path,
                format!(
                    "expected a string naming an enum variant, found {}",
                    other.kind_name()
                ),
            )),
        }
    }

    fn deserialize_ignored_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit_struct seq tuple tuple_struct map struct identifier
    }
}

struct SeqDe<'v, I: Iterator<Item = (usize, &'v Value)>> {
    it: I,
    path: &'v Loc<'v>,
}

impl<'de, 'v, I: Iterator<Item = (usize, &'v Value)>> de::SeqAccess<'de> for SeqDe<'v, I> {
    type Error = Error;
    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some((i, v)) = self.it.next() else {
            return Ok(None);
        };
        let path = Loc::Index(self.path, i);
        seed.deserialize(De { v, path: &path })
            .map(Some)
            .map_err(|e| e.located(&path))
    }
}

struct MapDe<'v> {
    it: std::collections::btree_map::Iter<'v, String, Value>,
    pending: Option<(&'v String, &'v Value)>,
    path: &'v Loc<'v>,
    attrs: bool,
}

impl<'de, 'v> de::MapAccess<'de> for MapDe<'v> {
    type Error = Error;
    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((k, v)) = self.it.next() else {
            return Ok(None);
        };
        self.pending = Some((k, v));
        let kd: de::value::StrDeserializer<'_, Error> = k.as_str().into_deserializer();
        seed.deserialize(kd)
            .map(Some)
            .map_err(|e| e.located(self.path))
    }
    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let (k, v) = self
            .pending
            .take()
            .ok_or_else(|| Error::at(self.path, "map value requested before its key"))?;
        let path = if self.attrs {
            Loc::Attr(self.path, k)
        } else {
            Loc::Key(self.path, k)
        };
        seed.deserialize(De { v, path: &path })
            .map_err(|e| e.located(&path))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::schema::{Attribute, Block, NestedAttributes, NestedBlock, Schema};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Fast,
        Safe,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Rule {
        cidr: String,
        port: u16,
        note: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Model {
        name: String,
        id: Attr<String>,
        size: Option<i64>,
        ratio: f64,
        mode: Mode,
        enabled: bool,
        tags: HashMap<String, String>,
        zones: BTreeSet<String>,
        rule: Vec<Rule>,
        endpoints: BTreeMap<String, Rule>,
        pair: (String, u8),
        owner: Option<Rule>,
        addresses: Attr<Vec<String>>,
    }

    fn schema() -> Schema {
        let rule_attrs = || {
            [
                Attribute::required("cidr", Type::String),
                Attribute::required("port", Type::Number),
                Attribute::optional("note", Type::String),
            ]
        };
        Schema::new(
            Block::new()
                .attribute(Attribute::required("name", Type::String))
                .attribute(Attribute::computed("id", Type::String))
                .attribute(Attribute::optional("size", Type::Number))
                .attribute(Attribute::required("ratio", Type::Number))
                .attribute(Attribute::required("mode", Type::String))
                .attribute(Attribute::required("enabled", Type::Bool))
                .attribute(Attribute::optional("tags", Type::map(Type::String)))
                .attribute(Attribute::optional("zones", Type::set(Type::String)))
                .attribute(Attribute::optional(
                    "endpoints",
                    NestedAttributes::map(rule_attrs()),
                ))
                .attribute(Attribute::optional(
                    "pair",
                    Type::tuple([Type::String, Type::Number]),
                ))
                .attribute(Attribute::optional(
                    "owner",
                    NestedAttributes::single(rule_attrs()),
                ))
                .attribute(Attribute::computed("addresses", Type::list(Type::String)))
                .block(NestedBlock::list(
                    "rule",
                    Block::new().attributes(rule_attrs()),
                )),
        )
    }

    fn model() -> Model {
        Model {
            name: "web".into(),
            id: Attr::Unknown,
            size: None,
            ratio: 0.1,
            mode: Mode::Safe,
            enabled: true,
            tags: [("env".to_owned(), "prod".to_owned())].into(),
            zones: ["a".to_owned(), "b".to_owned()].into(),
            rule: vec![Rule {
                cidr: "10.0.0.0/8".into(),
                port: 22,
                note: Some("ssh".into()),
            }],
            endpoints: [(
                "http".to_owned(),
                Rule {
                    cidr: "0.0.0.0/0".into(),
                    port: 80,
                    note: None,
                },
            )]
            .into(),
            pair: ("x".into(), 7),
            owner: None,
            addresses: Attr::Unknown,
        }
    }

    #[test]
    fn struct_round_trips_through_values_and_msgpack() {
        let ty = schema().value_type();
        let m = model();
        let v = to_value(&m, &ty).unwrap();
        // The schema shapes the value: sets are sets, tuples are tuples, unknowns unknown.
        assert!(matches!(v.get_attr("zones"), Some(Value::Set(_))));
        assert!(matches!(v.get_attr("pair"), Some(Value::Tuple(_))));
        assert!(v.get_attr("id").unwrap().is_unknown());
        assert!(v.get_attr("owner").unwrap().is_null());
        assert_eq!(v.get_attr("mode"), Some(&Value::from("safe")));
        assert_eq!(
            v.get_attr("ratio")
                .unwrap()
                .as_number()
                .unwrap()
                .to_decimal_string(),
            "0.1"
        );
        assert_eq!(
            v.get(&AttributePath::new("endpoints").key("http").attr("port")),
            Some(&Value::from(80))
        );
        let bytes = crate::msgpack::encode(&v, &ty).unwrap();
        let back = crate::msgpack::decode(&bytes, &ty).unwrap();
        let m2: Model = from_value(&back).unwrap();
        assert_eq!(m2, m);

        // After apply every unknown is known.
        let mut applied = m;
        applied.id = applied.id.or_known_with(|| "web-1".into());
        applied.addresses = Attr::Known(vec!["10.0.0.1".into()]);
        let v = to_value(&applied, &ty).unwrap();
        assert!(v.is_fully_known());
        let m3: Model = from_value(&v).unwrap();
        assert_eq!(m3.id.known().map(String::as_str), Some("web-1"));
    }

    #[test]
    fn errors_carry_paths() {
        let ty = schema().value_type();
        let mut v = to_value(&model(), &ty).unwrap();
        // A port that does not fit u16.
        v.set_at(
            &AttributePath::new("rule").index(0).attr("port"),
            Value::from(70000),
        )
        .unwrap();
        let e = from_value::<Model>(&v).unwrap_err();
        assert_eq!(
            e.path(),
            AttributePath::new("rule").index(0).attr("port"),
            "{e}"
        );
        // Unknown where the model cannot hold one.
        v.set_at(
            &AttributePath::new("rule").index(0).attr("port"),
            Value::unknown(),
        )
        .unwrap();
        let e = from_value::<Model>(&v).unwrap_err();
        assert_eq!(e.path().to_string(), "rule[0].port");
        assert!(e.message().contains("Attr<T>"), "{e}");
        // Null for a required field.
        v.set_at(&AttributePath::new("name"), Value::Null).unwrap();
        assert_eq!(
            from_value::<Model>(&v).unwrap_err().path().to_string(),
            "name"
        );
        // Serialising into a wrong schema type.
        let e = to_value(&model(), &Type::object([("name", Type::Number)])).unwrap_err();
        assert_eq!(e.path().to_string(), "name");
        let e = to_value(&("a", 1), &Type::tuple([Type::String])).unwrap_err();
        assert!(e.message().contains("elements"), "{e}");
        let e = to_value(&model(), &Type::object([("name", Type::Number)])).unwrap_err();
        // Diagnostics point at the attribute.
        let d: crate::Diagnostic = e.into();
        assert!(d.attribute.is_some());
    }

    #[test]
    fn attr_and_option_semantics() {
        let ty = Type::object([
            ("a", Type::String),
            ("b", Type::String),
            ("c", Type::String),
        ]);
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct M {
            a: Attr<String>,
            b: Attr<String>,
            c: Option<String>,
        }
        let v = Value::object([
            ("a", Value::Null),
            ("b", Value::unknown()),
            ("c", Value::from("x")),
        ]);
        let m: M = from_value(&v).unwrap();
        assert_eq!(
            m,
            M {
                a: Attr::Null,
                b: Attr::Unknown,
                c: Some("x".into())
            }
        );
        assert_eq!(to_value(&m, &ty).unwrap(), v);
        // Other serde formats see Attr as an option.
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"a":null,"b":null,"c":"x"}"#
        );
        // Dynamic type: values are inferred.
        let v = to_value(&vec![1, 2], &Type::Dynamic).unwrap();
        assert_eq!(v.infer_type(), Type::list(Type::Number));
    }
}

#[cfg(test)]
mod value_field_tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct WithDynamic {
        name: String,
        any: Value,
        raw: Value,
    }

    #[test]
    fn value_fields_pass_through_unchanged() {
        let ty = Type::object([
            ("name", Type::String),
            ("any", Type::Dynamic),
            ("raw", Type::set(Type::String)),
        ]);
        let any = Value::dynamic(
            Type::tuple([Type::String, Type::list(Type::Number)]),
            Value::tuple([
                Value::from("a"),
                Value::list([Value::from(1), Value::unknown()]),
            ]),
        );
        let raw = Value::set([Value::from("x"), Value::unknown()]);
        let v = Value::object([
            ("name", Value::from("n")),
            ("any", any.clone()),
            ("raw", raw.clone()),
        ]);
        let bytes = crate::msgpack::encode(&v, &ty).unwrap();
        let decoded = crate::msgpack::decode(&bytes, &ty).unwrap();
        let m: WithDynamic = from_value(&decoded).unwrap();
        assert_eq!(m.any, any);
        assert_eq!(m.raw, raw);
        let back = to_value(&m, &ty).unwrap();
        assert_eq!(back, v);
        // The dynamic attribute keeps its exact type: re-encoding gives the same bytes.
        assert_eq!(crate::msgpack::encode(&back, &ty).unwrap(), bytes);
        // A null Value field.
        let m = WithDynamic {
            name: "n".into(),
            any: Value::Null,
            raw: Value::Null,
        };
        let v = to_value(&m, &ty).unwrap();
        assert!(v.get_attr("any").unwrap().is_null());
        assert_eq!(from_value::<WithDynamic>(&v).unwrap(), m);
    }
}
