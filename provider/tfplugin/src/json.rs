//! JSON encodings of values: the `json` field of `DynamicValue`, raw resource state in
//! `UpgradeResourceState`, and the legacy "flatmap" state of SDKv1-era providers.
//!
//! The JSON form matches go-cty's: null, bools, numbers (with full precision), strings,
//! arrays for lists/sets/tuples, objects for maps/objects, and `{"value": V, "type": T}`
//! where the type is `dynamic`. Unknown values cannot occur in JSON.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::value::RawValue;

use crate::path::{AttributePath, PathStep};
use crate::types::Type;
use crate::value::{CodecError, MAX_DEPTH, Number, NumberRepr, Value};

/// Options for [`decode_with`].
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct JsonOptions {
    /// Drop object attributes the type does not declare instead of failing. Use this
    /// for state written by an older schema version (attributes may have been removed).
    pub ignore_undefined_attributes: bool,
}

impl JsonOptions {
    /// Options that ignore attributes the type does not declare.
    pub fn lenient() -> Self {
        Self {
            ignore_undefined_attributes: true,
        }
    }
}

/// Decode JSON as a value of type `ty`, rejecting undeclared object attributes.
pub fn decode(bytes: &[u8], ty: &Type) -> Result<Value, CodecError> {
    decode_with(bytes, ty, JsonOptions::default())
}

/// Decode JSON as a value of type `ty` with options.
pub fn decode_with(bytes: &[u8], ty: &Type, options: JsonOptions) -> Result<Value, CodecError> {
    let root = AttributePath::root();
    let raw: &RawValue = serde_json::from_slice(bytes).map_err(|e| syntax(&root, &e))?;
    let mut path = root;
    dec(raw, ty, &mut path, 0, options)
}

fn syntax(path: &AttributePath, e: &serde_json::Error) -> CodecError {
    CodecError::Syntax {
        path: path.clone(),
        message: format!("invalid JSON: {e}"),
    }
}

fn wrong(path: &AttributePath, ty: &Type, text: &str) -> CodecError {
    let found = match text.as_bytes().first() {
        Some(b'{') => "a JSON object",
        Some(b'[') => "a JSON array",
        Some(b'"') => "a JSON string",
        Some(b't' | b'f') => "a JSON bool",
        Some(b'n') => "null",
        _ => "a JSON number",
    };
    CodecError::WrongType {
        path: path.clone(),
        expected: ty.to_string(),
        found: found.to_owned(),
    }
}

fn dec(
    raw: &RawValue,
    ty: &Type,
    path: &mut AttributePath,
    depth: usize,
    opts: JsonOptions,
) -> Result<Value, CodecError> {
    if depth > MAX_DEPTH {
        return Err(CodecError::TooDeep { path: path.clone() });
    }
    let text = raw.get();
    if text == "null" {
        return Ok(Value::Null);
    }
    let first = text.as_bytes().first().copied().unwrap_or(b' ');
    match ty {
        Type::Dynamic => {
            if first != b'{' {
                return Err(CodecError::WrongType {
                    path: path.clone(),
                    expected: "a {\"value\": ..., \"type\": ...} object for a dynamic value".into(),
                    found: wrong(path, ty, text).to_string(),
                });
            }
            let m: BTreeMap<String, &RawValue> =
                serde_json::from_str(text).map_err(|e| syntax(path, &e))?;
            let (Some(t), Some(v)) = (m.get("type"), m.get("value")) else {
                return Err(CodecError::Syntax {
                    path: path.clone(),
                    message: "a dynamic value needs \"type\" and \"value\"".into(),
                });
            };
            let t =
                Type::from_json(t.get().as_bytes()).map_err(|source| CodecError::InvalidType {
                    path: path.clone(),
                    source,
                })?;
            let v = dec(v, &t, path, depth + 1, opts)?;
            Ok(Value::Dynamic(t, Box::new(v)))
        }
        Type::Bool => match first {
            b't' | b'f' => Ok(Value::Bool(
                serde_json::from_str(text).map_err(|e| syntax(path, &e))?,
            )),
            // go-cty converts strings to the primitive type when decoding JSON.
            b'"' => {
                let s: String = serde_json::from_str(text).map_err(|e| syntax(path, &e))?;
                match s.as_str() {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    _ => Err(wrong(path, ty, text)),
                }
            }
            _ => Err(wrong(path, ty, text)),
        },
        Type::Number => {
            let s = match first {
                b'"' => serde_json::from_str::<String>(text).map_err(|e| syntax(path, &e))?,
                b'-' | b'0'..=b'9' => text.to_owned(),
                _ => return Err(wrong(path, ty, text)),
            };
            let n = Number::parse(&s).map_err(|source| CodecError::InvalidNumber {
                path: path.clone(),
                source,
            })?;
            Ok(Value::Number(n))
        }
        Type::String => match first {
            b'"' => Ok(Value::String(
                serde_json::from_str(text).map_err(|e| syntax(path, &e))?,
            )),
            b't' | b'f' | b'-' | b'0'..=b'9' => Ok(Value::String(text.to_owned())),
            _ => Err(wrong(path, ty, text)),
        },
        Type::List(et) | Type::Set(et) => {
            if first != b'[' {
                return Err(wrong(path, ty, text));
            }
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| syntax(path, &e))?;
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                path.push(PathStep::ElementKeyInt(
                    i64::try_from(i).unwrap_or(i64::MAX),
                ));
                out.push(dec(item, et, path, depth + 1, opts)?);
                path.pop();
            }
            Ok(if matches!(ty, Type::Set(_)) {
                Value::Set(out)
            } else {
                Value::List(out)
            })
        }
        Type::Tuple(ets) => {
            if first != b'[' {
                return Err(wrong(path, ty, text));
            }
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| syntax(path, &e))?;
            if items.len() != ets.len() {
                return Err(CodecError::TupleLength {
                    path: path.clone(),
                    expected: ets.len(),
                    found: items.len(),
                });
            }
            let mut out = Vec::with_capacity(items.len());
            for (i, (item, et)) in items.into_iter().zip(ets).enumerate() {
                path.push(PathStep::ElementKeyInt(
                    i64::try_from(i).unwrap_or(i64::MAX),
                ));
                out.push(dec(item, et, path, depth + 1, opts)?);
                path.pop();
            }
            Ok(Value::Tuple(out))
        }
        Type::Map(et) => {
            if first != b'{' {
                return Err(wrong(path, ty, text));
            }
            let items: BTreeMap<String, &RawValue> =
                serde_json::from_str(text).map_err(|e| syntax(path, &e))?;
            let mut out = BTreeMap::new();
            for (k, item) in items {
                path.push(PathStep::ElementKeyString(k));
                let v = dec(item, et, path, depth + 1, opts)?;
                if let Some(PathStep::ElementKeyString(k)) = path.pop() {
                    out.insert(k, v);
                }
            }
            Ok(Value::Map(out))
        }
        Type::Object(o) => {
            if first != b'{' {
                return Err(wrong(path, ty, text));
            }
            let items: BTreeMap<String, &RawValue> =
                serde_json::from_str(text).map_err(|e| syntax(path, &e))?;
            let mut out = BTreeMap::new();
            for (k, item) in items {
                let Some(at) = o.attributes.get(&k) else {
                    if opts.ignore_undefined_attributes {
                        continue;
                    }
                    return Err(CodecError::UnsupportedAttribute {
                        path: path.clone(),
                        name: k,
                    });
                };
                path.push(PathStep::Attribute(k));
                let v = dec(item, at, path, depth + 1, opts)?;
                if let Some(PathStep::Attribute(k)) = path.pop() {
                    out.insert(k, v);
                }
            }
            for k in o.attributes.keys() {
                out.entry(k.clone()).or_insert(Value::Null);
            }
            Ok(Value::Object(out))
        }
    }
}

/// Encode a value as JSON according to `ty`. Unknown values are an error.
pub fn encode(value: &Value, ty: &Type) -> Result<Vec<u8>, CodecError> {
    let mut out = String::new();
    enc(value, ty, &mut AttributePath::root(), &mut out, 0)?;
    Ok(out.into_bytes())
}

fn push_json_str(out: &mut String, s: &str) {
    // Serialising a &str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

fn enc(
    v: &Value,
    ty: &Type,
    path: &mut AttributePath,
    out: &mut String,
    depth: usize,
) -> Result<(), CodecError> {
    if depth > MAX_DEPTH {
        return Err(CodecError::TooDeep { path: path.clone() });
    }
    let mismatch = |path: &AttributePath| CodecError::WrongType {
        path: path.clone(),
        expected: ty.to_string(),
        found: v.kind_name().to_owned(),
    };
    if *ty == Type::Dynamic {
        let (vty, inner) = match v {
            Value::Dynamic(t, inner) => (t.clone(), inner.as_ref()),
            other => (other.infer_type(), other),
        };
        match inner.inner() {
            Value::Unknown(_) => return Err(CodecError::UnknownNotAllowed { path: path.clone() }),
            Value::Null if vty == Type::Dynamic => {
                out.push_str("null");
                return Ok(());
            }
            _ => {}
        }
        out.push_str("{\"value\":");
        enc(inner, &vty, path, out, depth + 1)?;
        out.push_str(",\"type\":");
        out.push_str(&String::from_utf8_lossy(&vty.to_json_bytes()));
        out.push('}');
        return Ok(());
    }
    match v {
        Value::Dynamic(_, inner) => enc(inner, ty, path, out, depth),
        Value::Unknown(_) => Err(CodecError::UnknownNotAllowed { path: path.clone() }),
        Value::Null => {
            out.push_str("null");
            Ok(())
        }
        Value::Bool(b) if *ty == Type::Bool => {
            out.push_str(if *b { "true" } else { "false" });
            Ok(())
        }
        Value::Number(n) if *ty == Type::Number => {
            match n.repr() {
                NumberRepr::Float(f) if f.is_infinite() => {
                    return Err(CodecError::WrongType {
                        path: path.clone(),
                        expected: "a finite number (JSON has no infinity)".into(),
                        found: n.to_string(),
                    });
                }
                _ => out.push_str(&n.to_decimal_string()),
            }
            Ok(())
        }
        Value::String(s) if *ty == Type::String => {
            push_json_str(out, s);
            Ok(())
        }
        Value::List(vs) | Value::Set(vs) | Value::Tuple(vs) => {
            let ety = |i: usize| -> Option<&Type> {
                match ty {
                    Type::List(t) | Type::Set(t) => Some(t),
                    Type::Tuple(ts) => ts.get(i),
                    _ => None,
                }
            };
            if let Type::Tuple(ts) = ty
                && ts.len() != vs.len()
            {
                return Err(CodecError::TupleLength {
                    path: path.clone(),
                    expected: ts.len(),
                    found: vs.len(),
                });
            }
            if ety(0).is_none() && !matches!(ty, Type::Tuple(_)) {
                return Err(mismatch(path));
            }
            out.push('[');
            for (i, e) in vs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let et = ety(i).ok_or_else(|| mismatch(path))?;
                path.push(PathStep::ElementKeyInt(
                    i64::try_from(i).unwrap_or(i64::MAX),
                ));
                enc(e, et, path, out, depth + 1)?;
                path.pop();
            }
            out.push(']');
            Ok(())
        }
        Value::Map(m) | Value::Object(m) => {
            out.push('{');
            match ty {
                Type::Map(et) => {
                    for (i, (k, e)) in m.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        push_json_str(out, k);
                        out.push(':');
                        path.push(PathStep::ElementKeyString(k.clone()));
                        enc(e, et, path, out, depth + 1)?;
                        path.pop();
                    }
                }
                Type::Object(o) => {
                    if let Some(extra) = m.keys().find(|k| !o.attributes.contains_key(*k)) {
                        return Err(CodecError::UnsupportedAttribute {
                            path: path.clone(),
                            name: extra.clone(),
                        });
                    }
                    for (i, (k, at)) in o.attributes.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        push_json_str(out, k);
                        out.push(':');
                        path.push(PathStep::Attribute(k.clone()));
                        match m.get(k) {
                            Some(e) => enc(e, at, path, out, depth + 1)?,
                            None => out.push_str("null"),
                        }
                        path.pop();
                    }
                }
                _ => return Err(mismatch(path)),
            }
            out.push('}');
            Ok(())
        }
        _ => Err(mismatch(path)),
    }
}

// ---------------------------------------------------------------------------------------
// Flatmap
// ---------------------------------------------------------------------------------------

/// The placeholder legacy SDKs stored for unknown values in flatmap state.
pub const FLATMAP_UNKNOWN: &str = "74D93920-ED26-11E3-AC10-0800200C9A66";

/// Decode legacy flatmap state (`{"name": "x", "tags.%": "1", "tags.a": "b",
/// "list.#": "2", "list.0": "p", "list.1": "q"}`) as a value of the object type `ty`.
///
/// Lists and tuples use `.#` counts and `.N` indices; sets use `.#` counts and arbitrary
/// element keys (hashes); maps use `.%` counts. Missing keys mean null. Dynamic types
/// cannot be represented in flatmap and are an error.
pub fn decode_flatmap(map: &HashMap<String, String>, ty: &Type) -> Result<Value, CodecError> {
    let Type::Object(_) = ty else {
        return Err(CodecError::WrongType {
            path: AttributePath::root(),
            expected: "an object type for flatmap state".into(),
            found: ty.to_string(),
        });
    };
    // A sorted copy makes prefix scans cheap and the result deterministic.
    let sorted: BTreeMap<&str, &str> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // Nested counts could otherwise multiply: a few keys claiming large counts at every
    // level would make the decoder build far more values than the input holds.
    let budget = sorted.len().saturating_mul(4).saturating_add(1024);
    let ctx = Flat {
        map: sorted,
        budget: std::cell::Cell::new(budget),
    };
    flat_object(&ctx, "", ty, &mut AttributePath::root(), 0)
}

struct Flat<'a> {
    map: BTreeMap<&'a str, &'a str>,
    /// Values that may still be produced.
    budget: std::cell::Cell<usize>,
}

impl Flat<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).copied()
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn spend(&self, path: &AttributePath) -> Result<(), CodecError> {
        let left = self.budget.get();
        if left == 0 {
            return Err(CodecError::LengthTooLarge {
                path: path.clone(),
                length: u64::try_from(self.map.len()).unwrap_or(u64::MAX),
                remaining: 0,
            });
        }
        self.budget.set(left - 1);
        Ok(())
    }
}

fn keys_under<'a>(m: &'a Flat<'a>, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    m.map
        .range(prefix..)
        .take_while(move |(k, _)| k.starts_with(prefix))
        .map(|(k, _)| *k)
}

fn flat_object(
    m: &Flat<'_>,
    prefix: &str,
    ty: &Type,
    path: &mut AttributePath,
    depth: usize,
) -> Result<Value, CodecError> {
    let Type::Object(o) = ty else {
        return Err(CodecError::WrongType {
            path: path.clone(),
            expected: "an object".into(),
            found: ty.to_string(),
        });
    };
    m.spend(path)?;
    let mut out = BTreeMap::new();
    for (name, at) in &o.attributes {
        path.push(PathStep::Attribute(name.clone()));
        let key = format!("{prefix}{name}");
        let v = flat_value(m, &key, at, path, depth + 1)?;
        path.pop();
        out.insert(name.clone(), v);
    }
    Ok(Value::Object(out))
}

fn flat_count(
    m: &Flat<'_>,
    key: &str,
    path: &AttributePath,
) -> Result<Option<Option<usize>>, CodecError> {
    match m.get(key) {
        None => Ok(None),
        Some(FLATMAP_UNKNOWN) => Ok(Some(None)),
        Some(s) => {
            let n: usize = s.parse().map_err(|_| CodecError::Syntax {
                path: path.clone(),
                message: format!("flatmap count {key:?} is not a number: {s:?}"),
            })?;
            // Every element needs at least one key, which bounds allocation by input size.
            if n > m.len() {
                return Err(CodecError::LengthTooLarge {
                    path: path.clone(),
                    length: u64::try_from(n).unwrap_or(u64::MAX),
                    remaining: m.len(),
                });
            }
            Ok(Some(Some(n)))
        }
    }
}

fn flat_value(
    m: &Flat<'_>,
    key: &str,
    ty: &Type,
    path: &mut AttributePath,
    depth: usize,
) -> Result<Value, CodecError> {
    if depth > MAX_DEPTH {
        return Err(CodecError::TooDeep { path: path.clone() });
    }
    m.spend(path)?;
    let prim = |s: &str, path: &AttributePath| -> Result<Value, CodecError> {
        if s == FLATMAP_UNKNOWN {
            return Ok(Value::unknown());
        }
        match ty {
            Type::String => Ok(Value::String(s.to_owned())),
            Type::Bool => match s {
                "true" | "1" => Ok(Value::Bool(true)),
                "false" | "0" => Ok(Value::Bool(false)),
                _ => Err(CodecError::WrongType {
                    path: path.clone(),
                    expected: "bool".into(),
                    found: format!("{s:?}"),
                }),
            },
            _ => Number::parse(s)
                .map(Value::Number)
                .map_err(|source| CodecError::InvalidNumber {
                    path: path.clone(),
                    source,
                }),
        }
    };
    match ty {
        Type::String | Type::Bool | Type::Number => match m.get(key) {
            None => Ok(Value::Null),
            Some(s) => prim(s, path),
        },
        Type::Dynamic => Err(CodecError::WrongType {
            path: path.clone(),
            expected: "a static type (flatmap cannot hold dynamic values)".into(),
            found: "dynamic".into(),
        }),
        Type::List(_) | Type::Tuple(_) => {
            let Some(count) = flat_count(m, &format!("{key}.#"), path)? else {
                return Ok(Value::Null);
            };
            let Some(n) = count else {
                return Ok(Value::unknown());
            };
            if let Type::Tuple(ts) = ty
                && ts.len() != n
            {
                return Err(CodecError::TupleLength {
                    path: path.clone(),
                    expected: ts.len(),
                    found: n,
                });
            }
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let et = match ty {
                    Type::List(t) => t.as_ref(),
                    Type::Tuple(ts) => ts.get(i).unwrap_or(&Type::Dynamic),
                    _ => &Type::Dynamic,
                };
                path.push(PathStep::ElementKeyInt(
                    i64::try_from(i).unwrap_or(i64::MAX),
                ));
                out.push(flat_element(m, &format!("{key}.{i}"), et, path, depth)?);
                path.pop();
            }
            Ok(if matches!(ty, Type::Tuple(_)) {
                Value::Tuple(out)
            } else {
                Value::List(out)
            })
        }
        Type::Set(et) => {
            let Some(count) = flat_count(m, &format!("{key}.#"), path)? else {
                return Ok(Value::Null);
            };
            if count.is_none() {
                return Ok(Value::unknown());
            }
            let prefix = format!("{key}.");
            let mut ids = BTreeSet::new();
            for k in keys_under(m, &prefix) {
                let rest = &k[prefix.len()..];
                let id = rest.split('.').next().unwrap_or(rest);
                if id != "#" {
                    ids.insert(id.to_owned());
                }
            }
            let mut out = Vec::with_capacity(ids.len());
            for (i, id) in ids.iter().enumerate() {
                path.push(PathStep::ElementKeyInt(
                    i64::try_from(i).unwrap_or(i64::MAX),
                ));
                out.push(flat_element(m, &format!("{key}.{id}"), et, path, depth)?);
                path.pop();
            }
            Ok(Value::Set(out))
        }
        Type::Map(et) => {
            let Some(count) = flat_count(m, &format!("{key}.%"), path)? else {
                return Ok(Value::Null);
            };
            if count.is_none() {
                return Ok(Value::unknown());
            }
            let prefix = format!("{key}.");
            let mut names = BTreeSet::new();
            for k in keys_under(m, &prefix) {
                let rest = &k[prefix.len()..];
                if rest == "%" {
                    continue;
                }
                // Keys of primitive maps may contain dots; nested values end at the first dot.
                let name = if et.is_primitive() {
                    rest
                } else {
                    rest.split('.').next().unwrap_or(rest)
                };
                names.insert(name.to_owned());
            }
            let mut out = BTreeMap::new();
            for name in names {
                path.push(PathStep::ElementKeyString(name.clone()));
                let v = flat_element(m, &format!("{key}.{name}"), et, path, depth)?;
                path.pop();
                out.insert(name, v);
            }
            Ok(Value::Map(out))
        }
        Type::Object(_) => {
            let prefix = format!("{key}.");
            if keys_under(m, &prefix).next().is_none() {
                return Ok(Value::Null);
            }
            flat_object(m, &prefix, ty, path, depth + 1)
        }
    }
}

/// An element of a collection: objects are stored as `key.attr`, others at `key`.
fn flat_element(
    m: &Flat<'_>,
    key: &str,
    ty: &Type,
    path: &mut AttributePath,
    depth: usize,
) -> Result<Value, CodecError> {
    if let Type::Object(_) = ty {
        return flat_object(m, &format!("{key}."), ty, path, depth + 1);
    }
    flat_value(m, key, ty, path, depth + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_type() -> Type {
        Type::object([
            ("id", Type::String),
            ("size", Type::Number),
            ("on", Type::Bool),
            ("tags", Type::map(Type::String)),
            ("ports", Type::list(Type::Number)),
            ("names", Type::set(Type::String)),
            ("rule", Type::list(Type::object([("cidr", Type::String)]))),
            ("pair", Type::tuple([Type::String, Type::Number])),
            ("any", Type::Dynamic),
        ])
    }

    #[test]
    fn state_round_trip_keeps_precision() {
        let json = r#"{"any":{"value":["a"],"type":["list","string"]},"id":"x","names":["p","q"],"on":true,"pair":["a",1],"ports":[1,123456789012345678901234567890,0.1],"rule":[{"cidr":"10.0.0.0/8"}],"size":null,"tags":{"k":"v"}}"#;
        let ty = state_type();
        let v = decode(json.as_bytes(), &ty).unwrap();
        assert_eq!(
            v.get(&AttributePath::new("ports").index(1))
                .unwrap()
                .as_number()
                .unwrap()
                .to_decimal_string(),
            "123456789012345678901234567890"
        );
        assert_eq!(
            v.get(&AttributePath::new("ports").index(2)),
            Some(&Value::Number(Number::parse("0.1").unwrap()))
        );
        assert!(v.get_attr("size").unwrap().is_null());
        assert!(matches!(
            v.get_attr("any").unwrap(),
            Value::Dynamic(Type::List(_), _)
        ));
        assert_eq!(String::from_utf8(encode(&v, &ty).unwrap()).unwrap(), json);
        // The same value survives msgpack too.
        let mp = crate::msgpack::encode(&v, &ty).unwrap();
        assert_eq!(crate::msgpack::decode(&mp, &ty).unwrap(), v);
    }

    #[test]
    fn missing_attributes_are_null_and_undeclared_ones_configurable() {
        let ty = Type::object([("a", Type::String), ("b", Type::String)]);
        let v = decode(br#"{"a":"x"}"#, &ty).unwrap();
        assert!(v.get_attr("b").unwrap().is_null());
        let err = decode(br#"{"a":"x","gone":1}"#, &ty).unwrap_err();
        assert!(matches!(err, CodecError::UnsupportedAttribute { ref name, .. } if name == "gone"));
        let v = decode_with(br#"{"a":"x","gone":1}"#, &ty, JsonOptions::lenient()).unwrap();
        assert_eq!(v.get_attr("a"), Some(&Value::from("x")));
    }

    #[test]
    fn primitive_conversions_like_go_cty() {
        assert_eq!(decode(br#""12""#, &Type::Number).unwrap(), Value::from(12));
        assert_eq!(
            decode(br#""true""#, &Type::Bool).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(decode(b"12", &Type::String).unwrap(), Value::from("12"));
        assert_eq!(
            decode(b"false", &Type::String).unwrap(),
            Value::from("false")
        );
    }

    #[test]
    fn errors_name_the_path() {
        let ty = state_type();
        let err = decode(br#"{"rule":[{"cidr":5},{"cidr":{}}]}"#, &ty).unwrap_err();
        assert_eq!(err.path().to_string(), "rule[1].cidr");
        for bad in [
            &b"{"[..],
            b"[]",
            br#"{"id":"x"} x"#,
            br#"{"pair":["a"]}"#,
            br#"{"any":{"value":1}}"#,
            br#"{"any":{"value":1,"type":"nope"}}"#,
            br#"{"size":"ten"}"#,
            br#"{"on":"yes"}"#,
        ] {
            assert!(
                decode(bad, &ty).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        assert!(decode(deep.as_bytes(), &Type::list(Type::String)).is_err());
        assert!(matches!(
            encode(&Value::unknown(), &Type::String),
            Err(CodecError::UnknownNotAllowed { .. })
        ));
    }

    #[test]
    fn flatmap_state() {
        let ty = Type::object([
            ("id", Type::String),
            ("count", Type::Number),
            ("enabled", Type::Bool),
            ("tags", Type::map(Type::String)),
            ("ports", Type::list(Type::Number)),
            ("names", Type::set(Type::String)),
            (
                "rule",
                Type::list(Type::object([
                    ("cidr", Type::String),
                    ("port", Type::Number),
                ])),
            ),
            ("missing", Type::list(Type::String)),
            ("later", Type::String),
        ]);
        let m: HashMap<String, String> = [
            ("id", "abc"),
            ("count", "3"),
            ("enabled", "true"),
            ("tags.%", "2"),
            ("tags.a", "1"),
            ("tags.b.c", "2"),
            ("ports.#", "2"),
            ("ports.0", "80"),
            ("ports.1", "443"),
            ("names.#", "2"),
            ("names.1234", "x"),
            ("names.99", "y"),
            ("rule.#", "1"),
            ("rule.0.cidr", "10.0.0.0/8"),
            ("rule.0.port", "22"),
            ("later", FLATMAP_UNKNOWN),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let v = decode_flatmap(&m, &ty).unwrap();
        let want = Value::object([
            ("id", Value::from("abc")),
            ("count", Value::from(3)),
            ("enabled", Value::Bool(true)),
            (
                "tags",
                Value::map([("a", Value::from("1")), ("b.c", Value::from("2"))]),
            ),
            ("ports", Value::list([Value::from(80), Value::from(443)])),
            ("names", Value::set([Value::from("y"), Value::from("x")])),
            (
                "rule",
                Value::list([Value::object([
                    ("cidr", Value::from("10.0.0.0/8")),
                    ("port", Value::from(22)),
                ])]),
            ),
            ("missing", Value::Null),
            ("later", Value::unknown()),
        ]);
        assert_eq!(v, want);

        let bad: HashMap<String, String> = [("ports.#".to_owned(), "999999999".to_owned())].into();
        assert!(matches!(
            decode_flatmap(&bad, &ty),
            Err(CodecError::LengthTooLarge { .. })
        ));
        // Counts that multiply across nesting levels hit the value budget.
        let bomb_ty = Type::object([("a", Type::list(Type::list(Type::list(Type::String))))]);
        let mut bomb: HashMap<String, String> = HashMap::new();
        bomb.insert("a.#".into(), "500".into());
        for i in 0..500 {
            bomb.insert(format!("a.{i}.#"), "500".into());
        }
        for i in 0..500 {
            bomb.insert(format!("a.0.{i}.#"), "500".into());
        }
        assert!(matches!(
            decode_flatmap(&bomb, &bomb_ty),
            Err(CodecError::LengthTooLarge { .. })
        ));
        let bad: HashMap<String, String> = [("count".to_owned(), "x".to_owned())].into();
        assert_eq!(
            decode_flatmap(&bad, &ty).unwrap_err().path().to_string(),
            "count"
        );
    }
}
