//! The msgpack encoding of values in the protocol's `DynamicValue` messages.
//!
//! The encoding is type-directed and matches go-cty's (what Terraform uses):
//!
//! * null is msgpack nil; bools, strings as usual;
//! * numbers are the most compact integer if integral and within `i64`, else float64 if
//!   that is exact, else a decimal string;
//! * lists, sets and tuples are arrays; maps are maps (keys sorted); objects are maps
//!   keyed by attribute name (sorted);
//! * unknown values are the extension type 0 (`d4 00 00`), or extension type 12 whose
//!   payload is a msgpack map of refinements;
//! * a value where the type is `dynamic` is a 2-element array: the JSON type description
//!   (as msgpack bin) and the value encoded with that type.
//!
//! Decoding is defensive: input comes from another process and is checked for type,
//! truncation, trailing bytes, nesting depth and length prefixes that exceed the input,
//! with the attribute path in every error. It never panics and never allocates more
//! than the input size justifies.

use std::collections::BTreeMap;

use rmp::Marker;

use crate::path::{AttributePath, PathStep};
use crate::types::Type;
use crate::value::{
    CodecError, MAX_DEPTH, Number, NumberError, NumberRepr, Refinements, Value, exact_f64_decimal,
};

/// Extension type of an unknown value with refinements.
const EXT_REFINED_UNKNOWN: i8 = 0x0c;
/// Largest accepted refinement payload (as go-cty).
const MAX_REFINEMENT_LEN: u32 = 1024;

const KEY_NULLNESS: i64 = 1;
const KEY_STRING_PREFIX: i64 = 2;
const KEY_NUMBER_MIN: i64 = 3;
const KEY_NUMBER_MAX: i64 = 4;
const KEY_LENGTH_MIN: i64 = 5;
const KEY_LENGTH_MAX: i64 = 6;

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

/// Encode `value` as msgpack according to `ty`.
///
/// Objects may omit attributes (they are encoded as null) but must not have attributes
/// the type lacks. Any sequence variant is accepted for list/set/tuple types and either
/// map variant for map/object types.
pub fn encode(value: &Value, ty: &Type) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    let mut path = AttributePath::root();
    enc(value, ty, &mut path, &mut out, 0)?;
    Ok(out)
}

// rmp's writers only fail when the underlying writer fails; a Vec<u8> never does.
macro_rules! w {
    ($e:expr) => {
        let _ = $e;
    };
}

fn wrong(path: &AttributePath, ty: &Type, v: &Value) -> CodecError {
    CodecError::WrongType {
        path: path.clone(),
        expected: ty.to_string(),
        found: v.kind_name().to_owned(),
    }
}

fn len_u32(path: &AttributePath, n: usize) -> Result<u32, CodecError> {
    u32::try_from(n).map_err(|_| CodecError::LengthTooLarge {
        path: path.clone(),
        length: u64::try_from(n).unwrap_or(u64::MAX),
        remaining: u32::MAX as usize,
    })
}

fn enc(
    v: &Value,
    ty: &Type,
    path: &mut AttributePath,
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<(), CodecError> {
    if depth > MAX_DEPTH {
        return Err(CodecError::TooDeep { path: path.clone() });
    }
    if *ty == Type::Dynamic {
        let (vty, inner) = match v {
            Value::Dynamic(t, inner) => (t.clone(), inner.as_ref()),
            other => (other.infer_type(), other),
        };
        if vty == Type::Dynamic {
            // Only null and wholly unknown values have no concrete type.
            return match inner.inner() {
                Value::Null => {
                    w!(rmp::encode::write_nil(out));
                    Ok(())
                }
                Value::Unknown(_) => {
                    out.extend_from_slice(&[0xd4, 0, 0]);
                    Ok(())
                }
                // A nested dynamic wrapper: keep its own type.
                _ => enc(inner, &Type::Dynamic, path, out, depth + 1),
            };
        }
        w!(rmp::encode::write_array_len(out, 2));
        w!(rmp::encode::write_bin(out, &vty.to_json_bytes()));
        return enc(inner, &vty, path, out, depth + 1);
    }
    match v {
        Value::Dynamic(_, inner) => enc(inner, ty, path, out, depth),
        Value::Null => {
            w!(rmp::encode::write_nil(out));
            Ok(())
        }
        Value::Unknown(r) => {
            enc_unknown(r, ty, out);
            Ok(())
        }
        Value::Bool(b) if *ty == Type::Bool => {
            w!(rmp::encode::write_bool(out, *b));
            Ok(())
        }
        Value::Number(n) if *ty == Type::Number => {
            enc_number(n, out);
            Ok(())
        }
        Value::String(s) if *ty == Type::String => {
            w!(rmp::encode::write_str(out, s));
            Ok(())
        }
        Value::List(vs) | Value::Set(vs) | Value::Tuple(vs) => match ty {
            Type::List(et) | Type::Set(et) => {
                w!(rmp::encode::write_array_len(out, len_u32(path, vs.len())?));
                for (i, e) in vs.iter().enumerate() {
                    path.push(PathStep::ElementKeyInt(
                        i64::try_from(i).unwrap_or(i64::MAX),
                    ));
                    enc(e, et, path, out, depth + 1)?;
                    path.pop();
                }
                Ok(())
            }
            Type::Tuple(ets) => {
                if ets.len() != vs.len() {
                    return Err(CodecError::TupleLength {
                        path: path.clone(),
                        expected: ets.len(),
                        found: vs.len(),
                    });
                }
                w!(rmp::encode::write_array_len(out, len_u32(path, vs.len())?));
                for (i, (e, et)) in vs.iter().zip(ets).enumerate() {
                    path.push(PathStep::ElementKeyInt(
                        i64::try_from(i).unwrap_or(i64::MAX),
                    ));
                    enc(e, et, path, out, depth + 1)?;
                    path.pop();
                }
                Ok(())
            }
            _ => Err(wrong(path, ty, v)),
        },
        Value::Map(m) | Value::Object(m) => match ty {
            Type::Map(et) => {
                w!(rmp::encode::write_map_len(out, len_u32(path, m.len())?));
                for (k, e) in m {
                    w!(rmp::encode::write_str(out, k));
                    path.push(PathStep::ElementKeyString(k.clone()));
                    enc(e, et, path, out, depth + 1)?;
                    path.pop();
                }
                Ok(())
            }
            Type::Object(o) => {
                if let Some(extra) = m.keys().find(|k| !o.attributes.contains_key(*k)) {
                    return Err(CodecError::UnsupportedAttribute {
                        path: path.clone(),
                        name: extra.clone(),
                    });
                }
                w!(rmp::encode::write_map_len(
                    out,
                    len_u32(path, o.attributes.len())?
                ));
                for (k, at) in &o.attributes {
                    w!(rmp::encode::write_str(out, k));
                    path.push(PathStep::Attribute(k.clone()));
                    match m.get(k) {
                        Some(e) => enc(e, at, path, out, depth + 1)?,
                        None => {
                            w!(rmp::encode::write_nil(out));
                        }
                    }
                    path.pop();
                }
                Ok(())
            }
            _ => Err(wrong(path, ty, v)),
        },
        _ => Err(wrong(path, ty, v)),
    }
}

fn enc_number(n: &Number, out: &mut Vec<u8>) {
    match n.repr() {
        NumberRepr::Int(i) => {
            w!(rmp::encode::write_sint(out, i));
        }
        NumberRepr::UInt(u) => {
            // go-cty: not an exact int64, so float64 if exact, else a decimal string.
            #[allow(clippy::cast_precision_loss)]
            let f = u as f64;
            if exact_f64_decimal(f) == u.to_string() {
                w!(rmp::encode::write_f64(out, f));
            } else {
                w!(rmp::encode::write_str(out, &u.to_string()));
            }
        }
        NumberRepr::Float(f) => {
            w!(rmp::encode::write_f64(out, f));
        }
        NumberRepr::Decimal(d) => match d.parse::<f64>() {
            Ok(f) if f.is_finite() && exact_f64_decimal(f) == d => {
                w!(rmp::encode::write_f64(out, f));
            }
            _ => {
                w!(rmp::encode::write_str(out, d));
            }
        },
    }
}

fn enc_unknown(r: &Refinements, ty: &Type, out: &mut Vec<u8>) {
    let mut body = Vec::new();
    let mut entries = 0u32;
    if *ty != Type::Dynamic {
        if let Some(is_null) = r.nullness {
            entries += 1;
            w!(rmp::encode::write_sint(&mut body, KEY_NULLNESS));
            w!(rmp::encode::write_bool(&mut body, is_null));
        }
        match ty {
            Type::Number => {
                for (key, bound) in [
                    (KEY_NUMBER_MIN, &r.number_lower),
                    (KEY_NUMBER_MAX, &r.number_upper),
                ] {
                    if let Some((n, inclusive)) = bound {
                        entries += 1;
                        w!(rmp::encode::write_sint(&mut body, key));
                        w!(rmp::encode::write_array_len(&mut body, 2));
                        enc_number(n, &mut body);
                        w!(rmp::encode::write_bool(&mut body, *inclusive));
                    }
                }
            }
            Type::String => {
                if let Some(p) = r.string_prefix.as_deref().filter(|p| !p.is_empty()) {
                    entries += 1;
                    w!(rmp::encode::write_sint(&mut body, KEY_STRING_PREFIX));
                    w!(rmp::encode::write_str(&mut body, p));
                }
            }
            t if t.is_collection() => {
                if let Some(n) = r.length_lower.filter(|n| *n > 0) {
                    entries += 1;
                    w!(rmp::encode::write_sint(&mut body, KEY_LENGTH_MIN));
                    w!(rmp::encode::write_sint(&mut body, n));
                }
                if let Some(n) = r.length_upper {
                    entries += 1;
                    w!(rmp::encode::write_sint(&mut body, KEY_LENGTH_MAX));
                    w!(rmp::encode::write_sint(&mut body, n));
                }
            }
            _ => {}
        }
    }
    if entries == 0 {
        // The compact "totally unknown" form.
        out.extend_from_slice(&[0xd4, 0, 0]);
        return;
    }
    let mut header = Vec::new();
    w!(rmp::encode::write_map_len(&mut header, entries));
    let len = u32::try_from(header.len() + body.len()).unwrap_or(u32::MAX);
    w!(rmp::encode::write_ext_meta(out, len, EXT_REFINED_UNKNOWN));
    out.extend_from_slice(&header);
    out.extend_from_slice(&body);
}

// ---------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------

/// Decode msgpack bytes as a value of type `ty`. The whole input must be one value.
pub fn decode(bytes: &[u8], ty: &Type) -> Result<Value, CodecError> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let mut path = AttributePath::root();
    let v = r.value(ty, &mut path, 0)?;
    if r.pos < bytes.len() {
        return Err(CodecError::TrailingBytes {
            offset: r.pos,
            count: bytes.len() - r.pos,
        });
    }
    Ok(v)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, path: &AttributePath) -> Result<&'a [u8], CodecError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or_else(|| CodecError::Truncated { path: path.clone() })?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| CodecError::Truncated { path: path.clone() })?;
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self, path: &AttributePath) -> Result<u8, CodecError> {
        Ok(self.take(1, path)?.first().copied().unwrap_or(0))
    }

    fn peek(&self, path: &AttributePath) -> Result<Marker, CodecError> {
        self.buf
            .get(self.pos)
            .map(|b| Marker::from_u8(*b))
            .ok_or_else(|| CodecError::Truncated { path: path.clone() })
    }

    fn be<const N: usize>(&mut self, path: &AttributePath) -> Result<[u8; N], CodecError> {
        let s = self.take(N, path)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, path: &AttributePath) -> Result<u64, CodecError> {
        Ok(u64::from(self.byte(path)?))
    }
    fn u16(&mut self, path: &AttributePath) -> Result<u64, CodecError> {
        Ok(u64::from(u16::from_be_bytes(self.be(path)?)))
    }
    fn u32(&mut self, path: &AttributePath) -> Result<u64, CodecError> {
        Ok(u64::from(u32::from_be_bytes(self.be(path)?)))
    }

    /// Check that `n` items of at least `min_size` bytes each can still follow.
    fn check_len(&self, n: u64, min_size: u64, path: &AttributePath) -> Result<usize, CodecError> {
        let needed = n.saturating_mul(min_size);
        if needed > u64::try_from(self.remaining()).unwrap_or(u64::MAX) {
            return Err(CodecError::LengthTooLarge {
                path: path.clone(),
                length: n,
                remaining: self.remaining(),
            });
        }
        usize::try_from(n).map_err(|_| CodecError::LengthTooLarge {
            path: path.clone(),
            length: n,
            remaining: self.remaining(),
        })
    }

    fn wrong(&self, expected: &str, m: Marker, path: &AttributePath) -> CodecError {
        CodecError::WrongType {
            path: path.clone(),
            expected: expected.to_owned(),
            found: marker_name(m).to_owned(),
        }
    }

    /// Reads a str or bin header and returns the payload bytes.
    fn str_or_bin(&mut self, expected: &str, path: &AttributePath) -> Result<&'a [u8], CodecError> {
        let m = self.peek(path)?;
        self.pos += 1;
        let n = match m {
            Marker::FixStr(n) => u64::from(n),
            Marker::Str8 | Marker::Bin8 => self.u8(path)?,
            Marker::Str16 | Marker::Bin16 => self.u16(path)?,
            Marker::Str32 | Marker::Bin32 => self.u32(path)?,
            other => {
                self.pos -= 1;
                return Err(self.wrong(expected, other, path));
            }
        };
        let n = self.check_len(n, 1, path)?;
        self.take(n, path)
    }

    fn string(&mut self, path: &AttributePath) -> Result<String, CodecError> {
        let bytes = self.str_or_bin("string", path)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| CodecError::InvalidUtf8 { path: path.clone() })
    }

    fn array_len(&mut self, expected: &str, path: &AttributePath) -> Result<usize, CodecError> {
        let m = self.peek(path)?;
        let n = match m {
            Marker::FixArray(n) => {
                self.pos += 1;
                u64::from(n)
            }
            Marker::Array16 => {
                self.pos += 1;
                self.u16(path)?
            }
            Marker::Array32 => {
                self.pos += 1;
                self.u32(path)?
            }
            other => return Err(self.wrong(expected, other, path)),
        };
        self.check_len(n, 1, path)
    }

    fn map_len(&mut self, expected: &str, path: &AttributePath) -> Result<usize, CodecError> {
        let m = self.peek(path)?;
        let n = match m {
            Marker::FixMap(n) => {
                self.pos += 1;
                u64::from(n)
            }
            Marker::Map16 => {
                self.pos += 1;
                self.u16(path)?
            }
            Marker::Map32 => {
                self.pos += 1;
                self.u32(path)?
            }
            other => return Err(self.wrong(expected, other, path)),
        };
        self.check_len(n, 2, path)
    }

    fn bool(&mut self, path: &AttributePath) -> Result<bool, CodecError> {
        match self.peek(path)? {
            Marker::True => {
                self.pos += 1;
                Ok(true)
            }
            Marker::False => {
                self.pos += 1;
                Ok(false)
            }
            other => Err(self.wrong("bool", other, path)),
        }
    }

    fn int(&mut self, path: &AttributePath) -> Result<i64, CodecError> {
        match self.number(path)?.as_i64() {
            Some(i) => Ok(i),
            None => Err(CodecError::WrongType {
                path: path.clone(),
                expected: "an integer".into(),
                found: "another number".into(),
            }),
        }
    }

    fn number(&mut self, path: &AttributePath) -> Result<Number, CodecError> {
        let m = self.peek(path)?;
        let bad = |source| CodecError::InvalidNumber {
            path: path.clone(),
            source,
        };
        let n = match m {
            Marker::FixPos(n) => {
                self.pos += 1;
                Number::from_i64(n.into())
            }
            Marker::FixNeg(n) => {
                self.pos += 1;
                Number::from_i64(n.into())
            }
            Marker::U8 | Marker::U16 | Marker::U32 | Marker::U64 => {
                self.pos += 1;
                let u = match m {
                    Marker::U8 => self.u8(path)?,
                    Marker::U16 => self.u16(path)?,
                    Marker::U32 => self.u32(path)?,
                    _ => u64::from_be_bytes(self.be(path)?),
                };
                Number::from_u64(u)
            }
            Marker::I8 | Marker::I16 | Marker::I32 | Marker::I64 => {
                self.pos += 1;
                let i = match m {
                    Marker::I8 => i64::from(i8::from_be_bytes(self.be(path)?)),
                    Marker::I16 => i64::from(i16::from_be_bytes(self.be(path)?)),
                    Marker::I32 => i64::from(i32::from_be_bytes(self.be(path)?)),
                    _ => i64::from_be_bytes(self.be(path)?),
                };
                Number::from_i64(i)
            }
            Marker::F32 => {
                self.pos += 1;
                let f = f32::from_be_bytes(self.be(path)?);
                Number::from_f64_exact(f.into()).ok_or_else(|| bad(NumberError::NaN))?
            }
            Marker::F64 => {
                self.pos += 1;
                let f = f64::from_be_bytes(self.be(path)?);
                Number::from_f64_exact(f).ok_or_else(|| bad(NumberError::NaN))?
            }
            Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => {
                let s = self.string(path)?;
                Number::parse(&s).map_err(bad)?
            }
            other => return Err(self.wrong("number", other, path)),
        };
        Ok(n)
    }

    fn value(
        &mut self,
        ty: &Type,
        path: &mut AttributePath,
        depth: usize,
    ) -> Result<Value, CodecError> {
        if depth > MAX_DEPTH {
            return Err(CodecError::TooDeep { path: path.clone() });
        }
        let m = self.peek(path)?;
        if is_ext(m) {
            return self.unknown(ty, path);
        }
        if *ty == Type::Dynamic {
            return self.dynamic(path, depth);
        }
        if m == Marker::Null {
            self.pos += 1;
            return Ok(Value::Null);
        }
        match ty {
            Type::Bool => Ok(Value::Bool(self.bool(path)?)),
            Type::Number => Ok(Value::Number(self.number(path)?)),
            Type::String => Ok(Value::String(self.string(path)?)),
            Type::Dynamic => self.dynamic(path, depth),
            Type::List(et) | Type::Set(et) => {
                let n = self.array_len(
                    if matches!(ty, Type::List(_)) {
                        "list"
                    } else {
                        "set"
                    },
                    path,
                )?;
                let vs = self.elements(n, |_| et, path, depth)?;
                Ok(if matches!(ty, Type::List(_)) {
                    Value::List(vs)
                } else {
                    Value::Set(vs)
                })
            }
            Type::Tuple(ets) => {
                let n = self.array_len("tuple", path)?;
                if n != ets.len() {
                    return Err(CodecError::TupleLength {
                        path: path.clone(),
                        expected: ets.len(),
                        found: n,
                    });
                }
                let vs = self.elements(n, |i| ets.get(i).unwrap_or(&Type::Dynamic), path, depth)?;
                Ok(Value::Tuple(vs))
            }
            Type::Map(et) => {
                let n = self.map_len("map", path)?;
                let mut out = BTreeMap::new();
                for _ in 0..n {
                    let k = self.string(path)?;
                    path.push(PathStep::ElementKeyString(k));
                    let v = self.value(et, path, depth + 1)?;
                    if let Some(PathStep::ElementKeyString(k)) = path.pop() {
                        out.insert(k, v);
                    }
                }
                Ok(Value::Map(out))
            }
            Type::Object(o) => {
                let n = self.map_len("object", path)?;
                let mut out = BTreeMap::new();
                for _ in 0..n {
                    let k = self.string(path)?;
                    let Some(at) = o.attributes.get(&k) else {
                        return Err(CodecError::UnsupportedAttribute {
                            path: path.clone(),
                            name: k,
                        });
                    };
                    path.push(PathStep::Attribute(k));
                    let v = self.value(at, path, depth + 1)?;
                    if let Some(PathStep::Attribute(k)) = path.pop() {
                        out.insert(k, v);
                    }
                }
                // Terraform always sends every attribute; be lenient and fill gaps with null.
                for k in o.attributes.keys() {
                    if !out.contains_key(k) {
                        out.insert(k.clone(), Value::Null);
                    }
                }
                Ok(Value::Object(out))
            }
        }
    }

    fn elements<'t>(
        &mut self,
        n: usize,
        ty_at: impl Fn(usize) -> &'t Type,
        path: &mut AttributePath,
        depth: usize,
    ) -> Result<Vec<Value>, CodecError> {
        // n is bounded by the remaining input, but each Value is larger than a byte:
        // grow as elements actually decode.
        let mut vs = Vec::with_capacity(n.min(64));
        for i in 0..n {
            path.push(PathStep::ElementKeyInt(
                i64::try_from(i).unwrap_or(i64::MAX),
            ));
            vs.push(self.value(ty_at(i), path, depth + 1)?);
            path.pop();
        }
        Ok(vs)
    }

    fn dynamic(&mut self, path: &mut AttributePath, depth: usize) -> Result<Value, CodecError> {
        if self.peek(path)? == Marker::Null {
            self.pos += 1;
            return Ok(Value::Null);
        }
        let n = self.array_len("a [type, value] array for a dynamic value", path)?;
        if n != 2 {
            return Err(CodecError::WrongType {
                path: path.clone(),
                expected: "a [type, value] array for a dynamic value".into(),
                found: format!("an array of {n} elements"),
            });
        }
        let ty_json = self.str_or_bin("JSON type description", path)?;
        let ty = Type::from_json(ty_json).map_err(|source| CodecError::InvalidType {
            path: path.clone(),
            source,
        })?;
        let v = self.value(&ty, path, depth + 1)?;
        Ok(Value::Dynamic(ty, Box::new(v)))
    }

    fn unknown(&mut self, ty: &Type, path: &AttributePath) -> Result<Value, CodecError> {
        let m = self.peek(path)?;
        self.pos += 1;
        let len = match m {
            Marker::FixExt1 => 1,
            Marker::FixExt2 => 2,
            Marker::FixExt4 => 4,
            Marker::FixExt8 => 8,
            Marker::FixExt16 => 16,
            Marker::Ext8 => self.u8(path)?,
            Marker::Ext16 => self.u16(path)?,
            _ => self.u32(path)?,
        };
        let ext_type = i8::from_be_bytes(self.be(path)?);
        let len = self.check_len(len, 1, path)?;
        let body = self.take(len, path)?;
        if len <= 1 {
            return Ok(Value::unknown());
        }
        let invalid = |reason: &str| CodecError::InvalidUnknown {
            path: path.clone(),
            reason: reason.to_owned(),
        };
        if ext_type != EXT_REFINED_UNKNOWN {
            return Err(invalid(&format!(
                "unsupported extension type {ext_type} of length {len}"
            )));
        }
        if len > MAX_REFINEMENT_LEN as usize {
            return Err(invalid("refinements larger than 1 KiB"));
        }
        let mut r = Reader { buf: body, pos: 0 };
        let entries = r
            .map_len("refinement map", path)
            .map_err(|_| invalid("payload is not a map"))?;
        let mut ref_ = Refinements::default();
        if *ty == Type::Dynamic {
            // Refinements of a value of unknown type are meaningless; Terraform drops them too.
            return Ok(Value::unknown());
        }
        for _ in 0..entries {
            let key = r
                .int(path)
                .map_err(|_| invalid("refinement key is not an integer"))?;
            match key {
                KEY_NULLNESS => {
                    ref_.nullness = Some(
                        r.bool(path)
                            .map_err(|_| invalid("nullness is not a bool"))?,
                    );
                }
                KEY_STRING_PREFIX => {
                    if *ty != Type::String {
                        return Err(invalid("string prefix for a non-string type"));
                    }
                    let prefix = r
                        .string(path)
                        .map_err(|_| invalid("string prefix is not a UTF-8 string"))?;
                    ref_.string_prefix = Some(prefix).filter(|p| !p.is_empty());
                }
                KEY_LENGTH_MIN | KEY_LENGTH_MAX => {
                    if !ty.is_collection() {
                        return Err(invalid("length bound for a non-collection type"));
                    }
                    let n = r
                        .int(path)
                        .map_err(|_| invalid("length bound is not an integer"))?;
                    if key == KEY_LENGTH_MIN {
                        // A lower bound of 0 (or less) says nothing; keep it canonical.
                        ref_.length_lower = Some(n).filter(|n| *n > 0);
                    } else {
                        ref_.length_upper = Some(n);
                    }
                }
                KEY_NUMBER_MIN | KEY_NUMBER_MAX => {
                    if *ty != Type::Number {
                        return Err(invalid("number bound for a non-number type"));
                    }
                    let bound_err = || invalid("number bound is not a [number, bool] array");
                    if r.array_len("bound", path).map_err(|_| bound_err())? != 2 {
                        return Err(bound_err());
                    }
                    let n = r.number(path).map_err(|_| bound_err())?;
                    let inclusive = r.bool(path).map_err(|_| bound_err())?;
                    if key == KEY_NUMBER_MIN {
                        ref_.number_lower = Some((n, inclusive));
                    } else {
                        ref_.number_upper = Some((n, inclusive));
                    }
                }
                _ => {
                    // Unknown keys are reserved for future refinements: skip their value.
                    r.skip(path, 0)
                        .map_err(|_| invalid("malformed refinement value"))?;
                }
            }
        }
        // Trailing bytes inside the extension are reserved by go-cty; ignore them.
        Ok(Value::unknown_refined(ref_))
    }

    /// Skip one msgpack item of any kind.
    fn skip(&mut self, path: &AttributePath, depth: usize) -> Result<(), CodecError> {
        if depth > MAX_DEPTH {
            return Err(CodecError::TooDeep { path: path.clone() });
        }
        let m = self.peek(path)?;
        match m {
            Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
                let n = self.array_len("array", path)?;
                for _ in 0..n {
                    self.skip(path, depth + 1)?;
                }
            }
            Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => {
                let n = self.map_len("map", path)?;
                for _ in 0..n * 2 {
                    self.skip(path, depth + 1)?;
                }
            }
            Marker::FixStr(_)
            | Marker::Str8
            | Marker::Str16
            | Marker::Str32
            | Marker::Bin8
            | Marker::Bin16
            | Marker::Bin32 => {
                self.str_or_bin("string", path)?;
            }
            Marker::Null | Marker::True | Marker::False | Marker::FixPos(_) | Marker::FixNeg(_) => {
                self.pos += 1
            }
            Marker::U8
            | Marker::I8
            | Marker::U16
            | Marker::I16
            | Marker::U32
            | Marker::I32
            | Marker::F32
            | Marker::U64
            | Marker::I64
            | Marker::F64 => {
                let n = match m {
                    Marker::U8 | Marker::I8 => 1,
                    Marker::U16 | Marker::I16 => 2,
                    Marker::U32 | Marker::I32 | Marker::F32 => 4,
                    _ => 8,
                };
                self.pos += 1;
                self.take(n, path)?;
            }
            m if is_ext(m) => {
                self.unknown(&Type::Dynamic, path)?;
            }
            other => return Err(self.wrong("a msgpack value", other, path)),
        }
        Ok(())
    }
}

fn is_ext(m: Marker) -> bool {
    matches!(
        m,
        Marker::FixExt1
            | Marker::FixExt2
            | Marker::FixExt4
            | Marker::FixExt8
            | Marker::FixExt16
            | Marker::Ext8
            | Marker::Ext16
            | Marker::Ext32
    )
}

fn marker_name(m: Marker) -> &'static str {
    match m {
        Marker::Null => "nil",
        Marker::True | Marker::False => "bool",
        Marker::FixPos(_)
        | Marker::FixNeg(_)
        | Marker::U8
        | Marker::U16
        | Marker::U32
        | Marker::U64
        | Marker::I8
        | Marker::I16
        | Marker::I32
        | Marker::I64 => "integer",
        Marker::F32 | Marker::F64 => "float",
        Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => "string",
        Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => "binary",
        Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => "array",
        Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => "map",
        m if is_ext(m) => "extension",
        _ => "reserved byte 0xc1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Encodes to exactly `bytes` and decodes back to an equal value.
    fn vector(v: Value, ty: &Type, bytes: &str) {
        let want = hex(bytes);
        let got = encode(&v, ty).unwrap();
        assert_eq!(got, want, "encoding {v:?} as {ty}");
        let back = decode(&want, ty).unwrap();
        assert_eq!(back, v, "decoding {bytes} as {ty}");
        // Re-encoding the decoded value reproduces the bytes (lossless round trip).
        assert_eq!(encode(&back, ty).unwrap(), want);
    }

    #[test]
    fn primitives_match_go_cty() {
        vector(Value::Null, &Type::String, "c0");
        vector(Value::from("hello"), &Type::String, "a5 68656c6c6f");
        vector(Value::Bool(true), &Type::Bool, "c3");
        vector(Value::Bool(false), &Type::Bool, "c2");
        vector(Value::from(1), &Type::Number, "01");
        vector(Value::from(127), &Type::Number, "7f");
        vector(Value::from(128), &Type::Number, "cc 80");
        vector(Value::from(-1), &Type::Number, "ff");
        vector(Value::from(-32), &Type::Number, "e0");
        vector(Value::from(-33), &Type::Number, "d0 df");
        vector(Value::from(-200), &Type::Number, "d1 ff38");
        vector(Value::from(70000), &Type::Number, "ce 00011170");
        vector(Value::from(i64::MIN), &Type::Number, "d3 8000000000000000");
        vector(Value::from(i64::MAX), &Type::Number, "cf 7fffffffffffffff");
        vector(
            Value::Number(Number::from_f64_exact(0.5).unwrap()),
            &Type::Number,
            "cb 3fe0000000000000",
        );
        // 0.1 is not exact in float64: Terraform sends (and we send) the decimal string.
        vector(
            Value::Number(Number::parse("0.1").unwrap()),
            &Type::Number,
            "a3 302e31",
        );
        // 2^64 is exact in float64 but not an int64.
        vector(
            Value::Number(Number::parse("18446744073709551616").unwrap()),
            &Type::Number,
            "cb 43f0000000000000",
        );
        vector(
            Value::Number(Number::from_u64(u64::MAX)),
            &Type::Number,
            "b4 3138343436373434303733373039353531363135",
        );
        vector(
            Value::Number(Number::from_f64(f64::INFINITY).unwrap()),
            &Type::Number,
            "cb 7ff0000000000000",
        );
        // A Rust 0.1f64 means the decimal 0.1.
        assert_eq!(
            encode(
                &Value::Number(Number::from_f64(0.1).unwrap()),
                &Type::Number
            )
            .unwrap(),
            hex("a3 302e31")
        );
        // Strings of 32..=255 bytes use str8, as vmihailenco/msgpack does.
        let s = "x".repeat(40);
        let mut want = vec![0xd9, 40];
        want.extend(s.as_bytes());
        assert_eq!(
            encode(&Value::from(s.as_str()), &Type::String).unwrap(),
            want
        );
    }

    #[test]
    fn number_decoding_accepts_every_wire_form() {
        let n = |b: &str| decode(&hex(b), &Type::Number).unwrap();
        assert_eq!(n("cd 0100"), Value::from(256));
        assert_eq!(
            n("cf ffffffffffffffff"),
            Value::Number(Number::from_u64(u64::MAX))
        );
        assert_eq!(n("d2 ffffffff"), Value::from(-1));
        assert_eq!(
            n("ca 3f000000"),
            Value::Number(Number::from_f64_exact(0.5).unwrap())
        );
        assert_eq!(
            n("a4 312e3530"),
            Value::Number(Number::parse("1.5").unwrap())
        );
        assert!(matches!(
            decode(&hex("cb 7ff8000000000000"), &Type::Number),
            Err(CodecError::InvalidNumber { .. })
        ));
        assert!(matches!(
            decode(&hex("a3 616263"), &Type::Number),
            Err(CodecError::InvalidNumber { .. })
        ));
    }

    #[test]
    fn collections_and_structural_types() {
        vector(
            Value::list([Value::from("a"), Value::from("b")]),
            &Type::list(Type::String),
            "92 a161 a162",
        );
        vector(Value::List(vec![]), &Type::list(Type::String), "90");
        vector(
            Value::set([Value::from(1), Value::from(2)]),
            &Type::set(Type::Number),
            "92 01 02",
        );
        vector(
            Value::map([("z", Value::Bool(true)), ("a", Value::Bool(false))]),
            &Type::map(Type::Bool),
            "82 a161 c2 a17a c3",
        );
        vector(
            Value::tuple([Value::from("a"), Value::from(1)]),
            &Type::tuple([Type::String, Type::Number]),
            "92 a161 01",
        );
        let obj = Type::object([("b", Type::Number), ("a", Type::String)]);
        vector(
            Value::object([("b", Value::from(1)), ("a", Value::from("x"))]),
            &obj,
            "82 a161 a178 a162 01",
        );
        // Missing attributes are encoded as null.
        assert_eq!(
            encode(&Value::object([("a", Value::from("x"))]), &obj).unwrap(),
            hex("82 a161 a178 a162 c0")
        );
        // Extra attributes are an error naming the attribute.
        assert!(matches!(
            encode(&Value::object([("c", Value::from("x"))]), &obj),
            Err(CodecError::UnsupportedAttribute { name, .. }) if name == "c"
        ));
        // Nested: list of objects inside a map.
        let ty = Type::map(Type::list(Type::object([("n", Type::Number)])));
        vector(
            Value::map([("k", Value::list([Value::object([("n", Value::from(5))])]))]),
            &ty,
            "81 a16b 91 81 a16e 05",
        );
    }

    #[test]
    fn dynamic_values_carry_their_type() {
        // ["\"string\"" as bin8, "x"]
        vector(
            Value::dynamic(Type::String, Value::from("x")),
            &Type::Dynamic,
            "92 c408 22737472696e6722 a178",
        );
        // A typed null in a dynamic slot keeps its type; an untyped one is plain nil.
        vector(
            Value::dynamic(Type::String, Value::Null),
            &Type::Dynamic,
            "92 c408 22737472696e6722 c0",
        );
        vector(Value::Null, &Type::Dynamic, "c0");
        vector(Value::unknown(), &Type::Dynamic, "d4 0000");
        // Untyped values in a dynamic slot get an inferred type.
        assert_eq!(
            encode(&Value::list([Value::from(1)]), &Type::Dynamic).unwrap(),
            hex("92 c411 5b226c697374222c226e756d626572225d 91 01")
        );
        // Object attribute of dynamic type, holding a list of strings.
        let ty = Type::object([("d", Type::Dynamic)]);
        let v = decode(
            &hex("81 a164 92 c411 5b226c697374222c22737472696e67225d 91 a161"),
            &ty,
        )
        .unwrap();
        let d = v.get_attr("d").unwrap();
        assert!(matches!(d, Value::Dynamic(Type::List(_), _)));
        assert_eq!(d, &Value::list([Value::from("a")]));
        // str-typed type descriptions are accepted too.
        assert_eq!(
            decode(&hex("92 a8 22737472696e6722 a178"), &Type::Dynamic).unwrap(),
            Value::from("x")
        );
    }

    #[test]
    fn unknown_values_and_refinements() {
        vector(Value::unknown(), &Type::String, "d4 0000");
        vector(Value::unknown(), &Type::list(Type::String), "d4 0000");
        // Not-null string with a prefix: ext8, type 12, payload {1: false, 2: "ab"}.
        vector(
            Value::unknown_refined(Refinements {
                nullness: Some(false),
                string_prefix: Some("ab".into()),
                ..Refinements::default()
            }),
            &Type::String,
            "c7 07 0c 82 01c2 02a26162",
        );
        vector(
            Value::unknown_refined(Refinements::not_null()),
            &Type::Bool,
            "c7 03 0c 81 01c2",
        );
        // A four-byte payload uses fixext4.
        vector(
            Value::unknown_refined(Refinements {
                string_prefix: Some("a".into()),
                ..Refinements::default()
            }),
            &Type::String,
            "d6 0c 81 02a161",
        );
        vector(
            Value::unknown_refined(Refinements {
                nullness: Some(false),
                number_lower: Some((Number::from_i64(0), true)),
                number_upper: Some((Number::from_i64(10), false)),
                ..Refinements::default()
            }),
            &Type::Number,
            "c7 0b 0c 83 01c2 03 92 00 c3 04 92 0a c2",
        );
        vector(
            Value::unknown_refined(Refinements {
                length_lower: Some(1),
                length_upper: Some(5),
                ..Refinements::default()
            }),
            &Type::set(Type::String),
            "c7 05 0c 82 0501 0605",
        );
        // Refinements that do not apply to the type are not encoded.
        let r = Refinements {
            string_prefix: Some("x".into()),
            ..Refinements::default()
        };
        assert_eq!(
            encode(&Value::unknown_refined(r), &Type::Number).unwrap(),
            hex("d4 0000")
        );
        // Unknown future refinement keys are skipped.
        let v = decode(&hex("c7 07 0c 82 01c2 63 92 01 02"), &Type::String).unwrap();
        assert_eq!(v.refinements().unwrap(), &Refinements::not_null());
        // A zero-length extension (ext8 with length 0) is a plain unknown.
        assert!(
            decode(&hex("c7 00 00"), &Type::String)
                .unwrap()
                .is_unknown()
        );
        // Refinements on a dynamic value are dropped (meaningless).
        assert_eq!(
            decode(&hex("c7 03 0c 81 01c2"), &Type::Dynamic).unwrap(),
            Value::unknown()
        );
        // Malformed refinements.
        for bad in [
            "c7 03 0c 81 02c2",        // prefix not a string
            "c7 03 0c 81 05 01",       // length bound on a string
            "c7 03 05 81 01 c2",       // wrong extension type
            "c7 02 0c 01 02",          // payload not a map
            "c7 05 0c 81 03 92 01 01", // number bound on a string type
        ] {
            assert!(
                matches!(
                    decode(&hex(bad), &Type::String),
                    Err(CodecError::InvalidUnknown { .. })
                ),
                "{bad}"
            );
        }
        let mut big = hex("c8 0401 0c");
        big.extend(std::iter::repeat_n(0u8, 0x401));
        assert!(matches!(
            decode(&big, &Type::String),
            Err(CodecError::InvalidUnknown { .. })
        ));
    }

    #[test]
    fn malformed_input_is_rejected_with_a_path() {
        let ty = Type::object([("a", Type::list(Type::Number))]);
        // a[1] is a string that is not a number.
        let err = decode(&hex("81 a161 92 01 a178"), &ty).unwrap_err();
        assert_eq!(err.path(), &AttributePath::new("a").index(1));
        // Wrong kind.
        let err = decode(&hex("81 a161 92 01 c3"), &ty).unwrap_err();
        assert!(matches!(err, CodecError::WrongType { .. }), "{err}");
        assert_eq!(err.path().to_string(), "a[1]");
        // Unsupported attribute.
        assert!(matches!(
            decode(&hex("81 a162 c0"), &ty),
            Err(CodecError::UnsupportedAttribute { .. })
        ));
        // Truncation at every length.
        let good = hex("82 a161 92 01 02 a162 a3 616263");
        let ty2 = Type::object([("a", Type::list(Type::Number)), ("b", Type::String)]);
        assert!(decode(&good, &ty2).is_ok());
        for cut in 0..good.len() {
            let r = decode(&good[..cut], &ty2);
            assert!(
                matches!(
                    r,
                    Err(CodecError::Truncated { .. } | CodecError::LengthTooLarge { .. })
                ),
                "cut {cut}: {r:?}"
            );
        }
        // Trailing bytes.
        assert!(matches!(
            decode(&hex("01 01"), &Type::Number),
            Err(CodecError::TrailingBytes {
                offset: 1,
                count: 1
            })
        ));
        // Garbage / reserved marker.
        assert!(decode(&hex("c1"), &Type::String).is_err());
        assert!(decode(&[], &Type::String).is_err());
        // Invalid UTF-8.
        assert!(matches!(
            decode(&hex("a2 c328"), &Type::String),
            Err(CodecError::InvalidUtf8 { .. })
        ));
        // Tuple of the wrong length.
        assert!(matches!(
            decode(&hex("91 01"), &Type::tuple([Type::Number, Type::Number])),
            Err(CodecError::TupleLength { .. })
        ));
        // Dynamic values that are not [type, value].
        assert!(decode(&hex("93 c0 c0 c0"), &Type::Dynamic).is_err());
        assert!(matches!(
            decode(&hex("92 a3 626164 c0"), &Type::Dynamic),
            Err(CodecError::InvalidType { .. })
        ));
    }

    #[test]
    fn oversized_lengths_do_not_allocate() {
        // Array32 / Map32 / Str32 / Bin32 claiming ~4 billion items with no data.
        for (bytes, ty) in [
            ("dd ffffffff", Type::list(Type::String)),
            ("df ffffffff", Type::map(Type::String)),
            ("db ffffffff", Type::String),
            ("c6 ffffffff", Type::String),
            ("dc ffff 01", Type::set(Type::Number)),
        ] {
            assert!(
                matches!(
                    decode(&hex(bytes), &ty),
                    Err(CodecError::LengthTooLarge { .. })
                ),
                "{bytes}"
            );
        }
    }

    #[test]
    fn nesting_bombs_are_rejected() {
        // 10_000 nested dynamic values: ["\"dynamic\"", ["\"dynamic\"", ... ]].
        let mut bomb = Vec::new();
        for _ in 0..10_000 {
            bomb.extend(hex("92 c409 2264796e616d696322"));
        }
        bomb.push(0xc0);
        assert!(matches!(
            decode(&bomb, &Type::Dynamic),
            Err(CodecError::TooDeep { .. })
        ));
        // A deeply nested type description inside a dynamic value.
        let mut ty = String::new();
        for _ in 0..200 {
            ty.push_str("[\"list\",");
        }
        ty.push_str("\"string\"");
        ty.push_str(&"]".repeat(200));
        let mut b = hex("92 c5");
        b.extend(u16::try_from(ty.len()).unwrap().to_be_bytes());
        b.extend(ty.as_bytes());
        b.push(0xc0);
        assert!(matches!(
            decode(&b, &Type::Dynamic),
            Err(CodecError::InvalidType { .. })
        ));
        // Deeply nested values are rejected on encode as well.
        let mut v = Value::from("x");
        let mut t = Type::String;
        for _ in 0..100 {
            v = Value::list([v]);
            t = Type::list(t);
        }
        assert!(matches!(encode(&v, &t), Err(CodecError::TooDeep { .. })));
    }
}

/// Randomised round trips: random types, random conforming values (including unknowns,
/// refinements, nulls and dynamic values), through msgpack and (when fully known) JSON.
#[cfg(test)]
mod roundtrip {
    use super::*;

    /// xorshift64*: deterministic and dependency-free.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn usize(&mut self, n: usize) -> usize {
            usize::try_from(self.below(n as u64)).unwrap()
        }
    }

    fn name(r: &mut Rng) -> String {
        ["a", "b", "name", "x_y", "ünï", ""][r.usize(6)].to_owned()
    }

    fn gen_type(r: &mut Rng, depth: u32) -> Type {
        let leaf = depth >= 3;
        match r.below(if leaf { 4 } else { 10 }) {
            0 => Type::Bool,
            1 => Type::Number,
            2 => Type::String,
            3 => Type::Dynamic,
            4 => Type::list(gen_type(r, depth + 1)),
            5 => Type::set(gen_type(r, depth + 1)),
            6 => Type::map(gen_type(r, depth + 1)),
            7 => Type::Tuple((0..r.below(3)).map(|_| gen_type(r, depth + 1)).collect()),
            _ => Type::object((0..r.below(4)).map(|_| (name(r), gen_type(r, depth + 1)))),
        }
    }

    fn gen_number(r: &mut Rng) -> Number {
        match r.below(6) {
            0 => Number::from_i64(r.next() as i64),
            1 => Number::from_i64(r.below(300) as i64 - 150),
            2 => Number::from_u64(r.next()),
            3 => Number::from_f64_exact(f64::from_bits(r.next())).unwrap_or(Number::from_i64(0)),
            4 => Number::parse(&format!("{}.{}", r.next(), r.below(1000) + 1)).unwrap(),
            _ => Number::from_f64(r.below(1000) as f64 / 7.0).unwrap(),
        }
    }

    fn gen_value(r: &mut Rng, ty: &Type, depth: u32) -> Value {
        match r.below(10) {
            0 => return Value::Null,
            1 => {
                let mut refn = Refinements::default();
                if r.below(2) == 0 {
                    refn.nullness = Some(false);
                }
                match ty {
                    Type::String if r.below(2) == 0 => {
                        refn.string_prefix = Some(name(r)).filter(|p| !p.is_empty())
                    }
                    Type::Number if r.below(2) == 0 => {
                        refn.number_lower = Some((gen_number(r), r.below(2) == 0));
                    }
                    t if t.is_collection() && r.below(2) == 0 => {
                        refn.length_lower = Some(r.below(3) as i64 + 1);
                        refn.length_upper = Some(r.below(3) as i64 + 4);
                    }
                    _ => {}
                }
                if *ty == Type::Dynamic {
                    refn = Refinements::default();
                }
                return Value::unknown_refined(refn);
            }
            _ => {}
        }
        match ty {
            Type::Bool => Value::Bool(r.below(2) == 0),
            Type::Number => Value::Number(gen_number(r)),
            Type::String => Value::String(format!("{}{}", name(r), r.below(100))),
            Type::Dynamic => {
                let t = if depth >= 4 {
                    Type::String
                } else {
                    gen_type(r, depth + 1)
                };
                let v = gen_value(r, &t, depth + 1);
                if matches!(v, Value::Unknown(_)) {
                    Value::dynamic(t, Value::unknown())
                } else {
                    Value::dynamic(t, v)
                }
            }
            Type::List(et) => Value::List(
                (0..r.below(3))
                    .map(|_| gen_value(r, et, depth + 1))
                    .collect(),
            ),
            Type::Set(et) => Value::Set(
                (0..r.below(3))
                    .map(|_| gen_value(r, et, depth + 1))
                    .collect(),
            ),
            Type::Map(et) => Value::Map(
                (0..r.below(3))
                    .map(|_| (name(r), gen_value(r, et, depth + 1)))
                    .collect(),
            ),
            Type::Tuple(ets) => {
                Value::Tuple(ets.iter().map(|t| gen_value(r, t, depth + 1)).collect())
            }
            Type::Object(o) => Value::Object(
                o.attributes
                    .iter()
                    .map(|(k, t)| (k.clone(), gen_value(r, t, depth + 1)))
                    .collect(),
            ),
        }
    }

    #[test]
    fn random_values_round_trip() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let mut json_checked = 0;
        for i in 0..3000 {
            let ty = gen_type(&mut r, 0);
            let v = gen_value(&mut r, &ty, 0);
            let bytes =
                encode(&v, &ty).unwrap_or_else(|e| panic!("case {i}: encode {v:?} as {ty}: {e}"));
            let back = decode(&bytes, &ty)
                .unwrap_or_else(|e| panic!("case {i}: decode {v:?} as {ty}: {e}"));
            assert_eq!(back, v, "case {i}: {ty}");
            assert_eq!(
                encode(&back, &ty).unwrap(),
                bytes,
                "case {i}: re-encoding differs"
            );
            let finite = {
                let mut ok = true;
                v.walk(|_, x| {
                    if let Some(n) = x.as_number() {
                        ok &= n.as_f64().is_finite();
                    }
                });
                ok
            };
            if v.is_fully_known() && finite {
                let json = crate::json::encode(&v, &ty).unwrap();
                let back = crate::json::decode(&json, &ty).unwrap();
                assert_eq!(back, v, "case {i}: JSON {}", String::from_utf8_lossy(&json));
                json_checked += 1;
            }
        }
        assert!(json_checked > 500, "{json_checked}");
    }
}
