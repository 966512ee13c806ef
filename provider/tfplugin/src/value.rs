//! Terraform values: null, unknown (with refinements) and known values of every cty type.
//!
//! [`Value`] is untyped: the [`Type`] that describes it is supplied when it is encoded or
//! decoded ([`crate::msgpack`], [`crate::json`]). The only place a value carries its own
//! type is a dynamically-typed position, where Terraform sends the type along with the
//! value; there the decoder produces [`Value::Dynamic`] so that re-encoding reproduces
//! exactly the same type.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};

use crate::path::{AttributePath, PathStep};
use crate::types::{Type, TypeError};

/// Deepest value nesting the decoders accept (dynamic values can nest types inside
/// values inside types, so this bounds the total). Deeper input is rejected with
/// [`CodecError::TooDeep`] instead of exhausting the stack.
pub const MAX_DEPTH: usize = 64;

/// Longest decimal-string number accepted (characters, after expanding any exponent).
/// Terraform's numbers have 512 bits of precision, about 155 significant digits.
pub const MAX_NUMBER_DIGITS: usize = 4096;

// ---------------------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------------------

/// An arbitrary-precision number as Terraform exchanges it.
///
/// Terraform sends integers that fit 64 bits as msgpack integers, other values that a
/// float64 represents exactly as float64, and everything else as a decimal string. This
/// type keeps each form losslessly, so a value read from Terraform is written back
/// bit-for-bit, and compares numbers by their exact decimal value (`1`, `1.0` and `"1"`
/// are equal).
#[derive(Clone)]
pub struct Number(NumRepr);

#[derive(Clone)]
enum NumRepr {
    Int(i64),
    /// Only values above `i64::MAX`.
    UInt(u64),
    /// Never NaN; never an integer in `i64` range.
    Float(f64),
    /// Canonical plain decimal (`-?digits(.digits)?`, no redundant zeros), never an
    /// integer that fits `i64`/`u64`.
    Decimal(Box<str>),
}

/// A string could not be parsed as a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NumberError {
    /// Not a decimal number (`-12.5e3` style).
    #[error("{0:?} is not a decimal number")]
    Syntax(String),
    /// More digits (after expanding the exponent) than [`MAX_NUMBER_DIGITS`].
    #[error("number has more than {MAX_NUMBER_DIGITS} digits")]
    TooLong,
    /// NaN is not a Terraform number.
    #[error("NaN is not a number Terraform accepts")]
    NaN,
}

impl Number {
    /// An integer.
    pub fn from_i64(v: i64) -> Self {
        Number(NumRepr::Int(v))
    }

    /// An unsigned integer.
    pub fn from_u64(v: u64) -> Self {
        match i64::try_from(v) {
            Ok(i) => Number(NumRepr::Int(i)),
            Err(_) => Number(NumRepr::UInt(v)),
        }
    }

    /// The exact binary value of `v` (as a float64 on the wire). `None` for NaN.
    ///
    /// Use this for values that came from Terraform as float64. For numbers computed in
    /// Rust, [`from_f64`](Self::from_f64) is usually what you want.
    pub fn from_f64_exact(v: f64) -> Option<Self> {
        if v.is_nan() {
            return None;
        }
        if v.fract() == 0.0
            && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&v)
        {
            // In range and integral, so the cast is exact.
            #[allow(clippy::cast_possible_truncation)]
            return Some(Number(NumRepr::Int(v as i64)));
        }
        Some(Number(NumRepr::Float(v)))
    }

    /// The decimal number `v` prints as (its shortest round-trip representation), so
    /// `0.1_f64` becomes exactly 0.1, matching what a user writes in configuration.
    /// `None` for NaN.
    pub fn from_f64(v: f64) -> Option<Self> {
        if v.is_nan() {
            return None;
        }
        if v.is_infinite() || v.fract() == 0.0 {
            return Self::from_f64_exact(v);
        }
        let shortest = format!("{v}");
        if shortest == exact_f64_decimal(v) {
            Some(Number(NumRepr::Float(v)))
        } else {
            Number::parse(&shortest).ok()
        }
    }

    /// Parse a decimal number: `-?digits(.digits)?([eE][+-]?digits)?`.
    pub fn parse(s: &str) -> Result<Self, NumberError> {
        let canon = canonical_decimal(s)?;
        if !canon.contains('.') {
            if let Ok(i) = canon.parse::<i64>() {
                return Ok(Number(NumRepr::Int(i)));
            }
            if let Ok(u) = canon.parse::<u64>() {
                return Ok(Number(NumRepr::UInt(u)));
            }
        }
        Ok(Number(NumRepr::Decimal(canon.into_boxed_str())))
    }

    /// The value as `i64` if it is an integer in range.
    pub fn as_i64(&self) -> Option<i64> {
        match &self.0 {
            NumRepr::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The value as `u64` if it is a non-negative integer in range.
    pub fn as_u64(&self) -> Option<u64> {
        match &self.0 {
            NumRepr::Int(i) => u64::try_from(*i).ok(),
            NumRepr::UInt(u) => Some(*u),
            _ => None,
        }
    }

    /// The nearest `f64` (infinite if out of range).
    pub fn as_f64(&self) -> f64 {
        match &self.0 {
            #[allow(clippy::cast_precision_loss)]
            NumRepr::Int(i) => *i as f64,
            #[allow(clippy::cast_precision_loss)]
            NumRepr::UInt(u) => *u as f64,
            NumRepr::Float(f) => *f,
            // A canonical decimal always parses.
            NumRepr::Decimal(d) => d.parse().unwrap_or(f64::NAN),
        }
    }

    /// True if the value is a whole number.
    pub fn is_integer(&self) -> bool {
        match &self.0 {
            NumRepr::Int(_) | NumRepr::UInt(_) => true,
            NumRepr::Float(f) => f.fract() == 0.0,
            NumRepr::Decimal(d) => !d.contains('.'),
        }
    }

    /// The exact value as a plain decimal string (`inf`/`-inf` for infinities).
    pub fn to_decimal_string(&self) -> String {
        match &self.0 {
            NumRepr::Int(i) => i.to_string(),
            NumRepr::UInt(u) => u.to_string(),
            NumRepr::Float(f) => exact_f64_decimal(*f),
            NumRepr::Decimal(d) => d.to_string(),
        }
    }

    pub(crate) fn repr(&self) -> NumberRepr<'_> {
        match &self.0 {
            NumRepr::Int(i) => NumberRepr::Int(*i),
            NumRepr::UInt(u) => NumberRepr::UInt(*u),
            NumRepr::Float(f) => NumberRepr::Float(*f),
            NumRepr::Decimal(d) => NumberRepr::Decimal(d),
        }
    }
}

/// Crate-internal view of a number's wire form.
pub(crate) enum NumberRepr<'a> {
    Int(i64),
    UInt(u64),
    Float(f64),
    Decimal(&'a str),
}

/// Exact decimal expansion of a float (`inf`/`-inf` for infinities).
pub(crate) fn exact_f64_decimal(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // v = m * 2^e with m odd has exactly -e fractional decimal digits when e < 0, and
    // Rust's fixed-precision formatting is exact, so this prints the exact value.
    let bits = v.to_bits();
    let exp_bits = i32::try_from((bits >> 52) & 0x7ff).unwrap_or(0);
    let mut mant = bits & ((1u64 << 52) - 1);
    let mut exp = if exp_bits == 0 {
        -1074
    } else {
        exp_bits - 1075
    };
    if exp_bits != 0 {
        mant |= 1u64 << 52;
    }
    if mant == 0 {
        return "0".into();
    }
    let tz = mant.trailing_zeros();
    exp += i32::try_from(tz).unwrap_or(0);
    let frac_digits = usize::try_from(-exp).unwrap_or(0);
    let s = format!("{v:.frac_digits$}");
    if s == "-0" { "0".into() } else { s }
}

/// Validate a decimal literal and rewrite it without exponent or redundant zeros.
fn canonical_decimal(s: &str) -> Result<String, NumberError> {
    let err = || NumberError::Syntax(s.chars().take(40).collect());
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
        || (mantissa.contains('.') && frac_part.is_empty() && int_part.is_empty())
    {
        return Err(err());
    }
    let exp: i64 = match exponent {
        None => 0,
        Some(e) => {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            if digits.len() > 6 {
                return Err(NumberError::TooLong);
            }
            e.parse().map_err(|_| err())?
        }
    };
    // All digits, with the decimal point at `point` (may be outside the digit range).
    let digits: String = int_part.chars().chain(frac_part.chars()).collect();
    let point = i64::try_from(int_part.len()).map_err(|_| NumberError::TooLong)? + exp;
    let first_nz = digits.find(|c| c != '0');
    let Some(first_nz) = first_nz else {
        return Ok("0".into());
    };
    let last_nz = digits.rfind(|c| c != '0').unwrap_or(first_nz);
    let first = i64::try_from(first_nz).map_err(|_| NumberError::TooLong)?;
    let last = i64::try_from(last_nz).map_err(|_| NumberError::TooLong)?;
    // Length of the output: integer digits (at least 1) + fraction digits.
    let int_len = point.max(1);
    let frac_len = (last + 1 - point).max(0);
    if int_len + frac_len > i64::try_from(MAX_NUMBER_DIGITS).unwrap_or(i64::MAX) {
        return Err(NumberError::TooLong);
    }
    let digit_at = |i: i64| -> char {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.as_bytes().get(i))
            .map_or('0', |b| char::from(*b))
    };
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if point <= first {
        out.push('0');
    } else {
        for i in first..point {
            out.push(digit_at(i));
        }
    }
    if last >= point {
        out.push('.');
        for i in point..=last {
            out.push(digit_at(i));
        }
    }
    Ok(out)
}

impl PartialEq for Number {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (NumRepr::Int(a), NumRepr::Int(b)) => a == b,
            (NumRepr::UInt(a), NumRepr::UInt(b)) => a == b,
            (NumRepr::Float(a), NumRepr::Float(b)) => a == b,
            (NumRepr::Decimal(a), NumRepr::Decimal(b)) => a == b,
            _ => self.to_decimal_string() == other.to_decimal_string(),
        }
    }
}

impl Eq for Number {}

impl Hash for Number {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.to_decimal_string().hash(state);
    }
}

impl fmt::Debug for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            NumRepr::Float(v) => write!(f, "{v:?}"),
            _ => f.write_str(&self.to_decimal_string()),
        }
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            // Shortest form for humans; the exact expansion of 0.1f64 is 55 digits long.
            NumRepr::Float(v) => write!(f, "{v}"),
            _ => f.write_str(&self.to_decimal_string()),
        }
    }
}

impl From<i64> for Number {
    fn from(v: i64) -> Self {
        Number::from_i64(v)
    }
}

impl From<i32> for Number {
    fn from(v: i32) -> Self {
        Number::from_i64(v.into())
    }
}

impl From<u64> for Number {
    fn from(v: u64) -> Self {
        Number::from_u64(v)
    }
}

impl From<u32> for Number {
    fn from(v: u32) -> Self {
        Number::from_i64(v.into())
    }
}

impl std::str::FromStr for Number {
    type Err = NumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Number::parse(s)
    }
}

// ---------------------------------------------------------------------------------------
// Refinements
// ---------------------------------------------------------------------------------------

/// What is already known about an unknown value (Terraform ≥ 1.6 "refinements").
///
/// Terraform only sends the refinements that apply to the value's type; the encoder
/// likewise drops those that do not apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refinements {
    /// `Some(false)`: the value will definitely not be null. (`Some(true)` is legal on
    /// the wire but pointless: such a value would simply be null.)
    pub nullness: Option<bool>,
    /// Strings: the final value starts with this prefix.
    pub string_prefix: Option<String>,
    /// Numbers: lower bound and whether it is inclusive.
    pub number_lower: Option<(Number, bool)>,
    /// Numbers: upper bound and whether it is inclusive.
    pub number_upper: Option<(Number, bool)>,
    /// Collections: minimum number of elements.
    pub length_lower: Option<i64>,
    /// Collections: maximum number of elements.
    pub length_upper: Option<i64>,
}

impl Refinements {
    /// No refinements.
    pub fn none() -> Self {
        Self::default()
    }

    /// Only "definitely not null".
    pub fn not_null() -> Self {
        Self {
            nullness: Some(false),
            ..Self::default()
        }
    }

    /// True if the value is known to be non-null.
    pub fn is_not_null(&self) -> bool {
        self.nullness == Some(false)
    }

    /// True if no refinement is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

// ---------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------

/// A Terraform value.
///
/// Collections keep the variant that matches their type (a value decoded as a set is
/// [`Value::Set`]); encoders accept any sequence variant for list, set and tuple types and
/// either map variant for map and object types, so hand-built values stay simple.
#[derive(Debug, Clone, Default)]
pub enum Value {
    /// Null (absent). The default.
    #[default]
    Null,
    /// Not known until apply; may carry refinements.
    Unknown(Box<Refinements>),
    /// A bool.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string.
    String(String),
    /// A list's elements.
    List(Vec<Value>),
    /// A set's elements (order is not significant; equality ignores it).
    Set(Vec<Value>),
    /// A tuple's elements.
    Tuple(Vec<Value>),
    /// A map's elements.
    Map(BTreeMap<String, Value>),
    /// An object's attributes.
    Object(BTreeMap<String, Value>),
    /// A value in a dynamically-typed position together with its concrete type. Decoders
    /// produce this for every value found where the schema type is
    /// [`Type::Dynamic`]; it is transparent for accessors and equality.
    Dynamic(Type, Box<Value>),
}

impl Value {
    /// An unknown value without refinements.
    pub fn unknown() -> Self {
        Value::Unknown(Box::default())
    }

    /// An unknown value with refinements.
    pub fn unknown_refined(refinements: Refinements) -> Self {
        Value::Unknown(Box::new(refinements))
    }

    /// A string.
    pub fn string(s: impl Into<String>) -> Self {
        Value::String(s.into())
    }

    /// A number.
    pub fn number(n: impl Into<Number>) -> Self {
        Value::Number(n.into())
    }

    /// A list.
    pub fn list(elements: impl IntoIterator<Item = Value>) -> Self {
        Value::List(elements.into_iter().collect())
    }

    /// A set.
    pub fn set(elements: impl IntoIterator<Item = Value>) -> Self {
        Value::Set(elements.into_iter().collect())
    }

    /// A tuple.
    pub fn tuple(elements: impl IntoIterator<Item = Value>) -> Self {
        Value::Tuple(elements.into_iter().collect())
    }

    /// A map.
    pub fn map<K: Into<String>>(elements: impl IntoIterator<Item = (K, Value)>) -> Self {
        Value::Map(elements.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// An object.
    pub fn object<K: Into<String>>(attributes: impl IntoIterator<Item = (K, Value)>) -> Self {
        Value::Object(attributes.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// A value with an explicit concrete type, for dynamically-typed positions.
    pub fn dynamic(ty: Type, value: Value) -> Self {
        Value::Dynamic(ty, Box::new(value))
    }

    /// The value without any [`Value::Dynamic`] wrappers.
    pub fn inner(&self) -> &Value {
        let mut v = self;
        while let Value::Dynamic(_, inner) = v {
            v = inner;
        }
        v
    }

    /// Consume the value, removing any [`Value::Dynamic`] wrappers.
    pub fn into_inner(self) -> Value {
        let mut v = self;
        while let Value::Dynamic(_, inner) = v {
            v = *inner;
        }
        v
    }

    /// True for null.
    pub fn is_null(&self) -> bool {
        matches!(self.inner(), Value::Null)
    }

    /// True for an unknown value (the value itself, not something nested in it).
    pub fn is_unknown(&self) -> bool {
        matches!(self.inner(), Value::Unknown(_))
    }

    /// True unless the value itself is unknown (nested values may still be unknown).
    pub fn is_known(&self) -> bool {
        !self.is_unknown()
    }

    /// True if neither the value nor anything nested in it is unknown.
    pub fn is_fully_known(&self) -> bool {
        match self.inner() {
            Value::Unknown(_) => false,
            Value::List(v) | Value::Set(v) | Value::Tuple(v) => v.iter().all(Value::is_fully_known),
            Value::Map(m) | Value::Object(m) => m.values().all(Value::is_fully_known),
            _ => true,
        }
    }

    /// The refinements of an unknown value.
    pub fn refinements(&self) -> Option<&Refinements> {
        match self.inner() {
            Value::Unknown(r) => Some(r),
            _ => None,
        }
    }

    /// The bool, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self.inner() {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_number(&self) -> Option<&Number> {
        match self.inner() {
            Value::Number(n) => Some(n),
            _ => None,
        }
    }

    /// The number as `i64`, if this is an integer in range.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_number().and_then(Number::as_i64)
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self.inner() {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements of a list, set or tuple.
    pub fn as_elements(&self) -> Option<&[Value]> {
        match self.inner() {
            Value::List(v) | Value::Set(v) | Value::Tuple(v) => Some(v),
            _ => None,
        }
    }

    /// The entries of a map or the attributes of an object.
    pub fn as_map(&self) -> Option<&BTreeMap<String, Value>> {
        match self.inner() {
            Value::Map(m) | Value::Object(m) => Some(m),
            _ => None,
        }
    }

    /// An object attribute (or map entry) by name.
    pub fn get_attr(&self, name: &str) -> Option<&Value> {
        self.as_map()?.get(name)
    }

    /// The part of the value at `path` (`None` if the path does not exist, for example
    /// through a null or unknown value). Set elements are addressed by position.
    pub fn get(&self, path: &AttributePath) -> Option<&Value> {
        let mut v = self;
        for step in path.steps() {
            v = v.child(step)?;
        }
        Some(v)
    }

    /// Mutable access to the part of the value at `path`.
    pub fn get_mut(&mut self, path: &AttributePath) -> Option<&mut Value> {
        let mut v = self;
        for step in path.steps() {
            v = v.child_mut(step)?;
        }
        Some(v)
    }

    /// Replace the part of the value at `path`; returns the old part, or gives `new` back
    /// as the error if the path does not exist.
    pub fn set_at(&mut self, path: &AttributePath, new: Value) -> Result<Value, Value> {
        match self.get_mut(path) {
            Some(slot) => Ok(std::mem::replace(slot, new)),
            None => Err(new),
        }
    }

    fn child(&self, step: &PathStep) -> Option<&Value> {
        match (self.inner(), step) {
            (
                Value::Object(m) | Value::Map(m),
                PathStep::Attribute(k) | PathStep::ElementKeyString(k),
            ) => m.get(k),
            (Value::List(v) | Value::Set(v) | Value::Tuple(v), PathStep::ElementKeyInt(i)) => {
                v.get(usize::try_from(*i).ok()?)
            }
            _ => None,
        }
    }

    fn child_mut(&mut self, step: &PathStep) -> Option<&mut Value> {
        let mut v = self;
        while let Value::Dynamic(_, inner) = v {
            v = inner;
        }
        match (v, step) {
            (
                Value::Object(m) | Value::Map(m),
                PathStep::Attribute(k) | PathStep::ElementKeyString(k),
            ) => m.get_mut(k),
            (Value::List(v) | Value::Set(v) | Value::Tuple(v), PathStep::ElementKeyInt(i)) => {
                v.get_mut(usize::try_from(*i).ok()?)
            }
            _ => None,
        }
    }

    /// A short name of the value's kind for error messages ("string", "list", "null", ...).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Unknown(_) => "unknown",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::List(_) => "list",
            Value::Set(_) => "set",
            Value::Tuple(_) => "tuple",
            Value::Map(_) => "map",
            Value::Object(_) => "object",
            Value::Dynamic(_, v) => v.kind_name(),
        }
    }

    /// The most specific type this value can be described by, used when a value is
    /// encoded in a dynamically-typed position without an explicit [`Value::Dynamic`]
    /// type. Null, unknown and empty collections give `dynamic` where the type cannot
    /// be known; wrap the value with [`Value::dynamic`] to control the type exactly.
    pub fn infer_type(&self) -> Type {
        fn unify(ts: impl Iterator<Item = Type>) -> Type {
            let mut out: Option<Type> = None;
            for t in ts {
                out = match out {
                    None => Some(t),
                    Some(o) if o == t || t == Type::Dynamic => Some(o),
                    Some(Type::Dynamic) => Some(t),
                    Some(_) => return Type::Dynamic,
                };
            }
            out.unwrap_or(Type::Dynamic)
        }
        match self {
            Value::Null | Value::Unknown(_) => Type::Dynamic,
            Value::Bool(_) => Type::Bool,
            Value::Number(_) => Type::Number,
            Value::String(_) => Type::String,
            Value::List(v) => Type::list(unify(v.iter().map(Value::infer_type))),
            Value::Set(v) => Type::set(unify(v.iter().map(Value::infer_type))),
            Value::Tuple(v) => Type::Tuple(v.iter().map(Value::infer_type).collect()),
            Value::Map(m) => Type::map(unify(m.values().map(Value::infer_type))),
            Value::Object(m) => Type::object(m.iter().map(|(k, v)| (k.clone(), v.infer_type()))),
            Value::Dynamic(t, _) => t.clone(),
        }
    }

    /// Visit the value and everything nested in it, parents before children, with the
    /// path of each part. Set elements get index steps by position.
    pub fn walk<F: FnMut(&AttributePath, &Value)>(&self, mut f: F) {
        fn go<F: FnMut(&AttributePath, &Value)>(v: &Value, path: &mut AttributePath, f: &mut F) {
            f(path, v);
            match v.inner() {
                Value::List(vs) | Value::Set(vs) | Value::Tuple(vs) => {
                    for (i, e) in vs.iter().enumerate() {
                        path.push(PathStep::ElementKeyInt(
                            i64::try_from(i).unwrap_or(i64::MAX),
                        ));
                        go(e, path, f);
                        path.pop();
                    }
                }
                Value::Map(m) => {
                    for (k, e) in m {
                        path.push(PathStep::ElementKeyString(k.clone()));
                        go(e, path, f);
                        path.pop();
                    }
                }
                Value::Object(m) => {
                    for (k, e) in m {
                        path.push(PathStep::Attribute(k.clone()));
                        go(e, path, f);
                        path.pop();
                    }
                }
                _ => {}
            }
        }
        go(self, &mut AttributePath::root(), &mut f);
    }

    /// Rebuild the value bottom-up: `f` sees every part after its children were
    /// transformed, with its path, and returns the replacement. Errors stop the walk.
    ///
    /// ```
    /// use tfplugin::{AttributePath, Value};
    /// // Replace every null inside "computed" with an unknown value.
    /// let v = Value::object([("computed", Value::Null), ("set", Value::string("x"))]);
    /// let planned = v.transform(|path, v| {
    ///     Ok::<_, ()>(if path == &AttributePath::new("computed") && v.is_null() { Value::unknown() } else { v })
    /// }).unwrap();
    /// assert!(planned.get_attr("computed").unwrap().is_unknown());
    /// ```
    pub fn transform<E, F: FnMut(&AttributePath, Value) -> Result<Value, E>>(
        self,
        mut f: F,
    ) -> Result<Value, E> {
        fn go<E, F: FnMut(&AttributePath, Value) -> Result<Value, E>>(
            v: Value,
            path: &mut AttributePath,
            f: &mut F,
        ) -> Result<Value, E> {
            let seq =
                |vs: Vec<Value>, path: &mut AttributePath, f: &mut F| -> Result<Vec<Value>, E> {
                    vs.into_iter()
                        .enumerate()
                        .map(|(i, e)| {
                            path.push(PathStep::ElementKeyInt(
                                i64::try_from(i).unwrap_or(i64::MAX),
                            ));
                            let r = go(e, path, f);
                            path.pop();
                            r
                        })
                        .collect()
                };
            let rebuilt = match v {
                Value::List(vs) => Value::List(seq(vs, path, f)?),
                Value::Set(vs) => Value::Set(seq(vs, path, f)?),
                Value::Tuple(vs) => Value::Tuple(seq(vs, path, f)?),
                Value::Map(m) => Value::Map(
                    m.into_iter()
                        .map(|(k, e)| {
                            path.push(PathStep::ElementKeyString(k.clone()));
                            let r = go(e, path, f);
                            path.pop();
                            r.map(|e| (k, e))
                        })
                        .collect::<Result<_, E>>()?,
                ),
                Value::Object(m) => Value::Object(
                    m.into_iter()
                        .map(|(k, e)| {
                            path.push(PathStep::Attribute(k.clone()));
                            let r = go(e, path, f);
                            path.pop();
                            r.map(|e| (k, e))
                        })
                        .collect::<Result<_, E>>()?,
                ),
                Value::Dynamic(t, inner) => {
                    // The wrapper is transparent: transform its content at the same path.
                    return go(*inner, path, f).map(|v| Value::Dynamic(t, Box::new(v)));
                }
                other => other,
            };
            f(path, rebuilt)
        }
        go(self, &mut AttributePath::root(), &mut f)
    }

    /// Paths of every unknown part of the value.
    pub fn unknown_paths(&self) -> Vec<AttributePath> {
        let mut out = Vec::new();
        self.walk(|p, v| {
            if v.is_unknown() {
                out.push(p.clone());
            }
        });
        out
    }
}

impl PartialEq for Value {
    /// Structural equality: sets compare without regard to order, numbers by value,
    /// [`Value::Dynamic`] wrappers are looked through.
    fn eq(&self, other: &Self) -> bool {
        match (self.inner(), other.inner()) {
            (Value::Null, Value::Null) => true,
            (Value::Unknown(a), Value::Unknown(b)) => a == b,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Number(a), Value::Number(b)) => a == b,
            (Value::String(a), Value::String(b)) => a == b,
            (Value::List(a), Value::List(b)) | (Value::Tuple(a), Value::Tuple(b)) => a == b,
            (Value::Set(a), Value::Set(b)) => {
                a.len() == b.len()
                    && a.iter().all(|x| b.contains(x))
                    && b.iter().all(|x| a.contains(x))
            }
            (Value::Map(a), Value::Map(b)) | (Value::Object(a), Value::Object(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::String(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Number(Number::from_i64(v))
    }
}

impl From<Number> for Value {
    fn from(v: Number) -> Self {
        Value::Number(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// A value could not be encoded or decoded. Every variant names the attribute path
/// where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The input (or the value being encoded) has a different kind than the type demands.
    #[error("at {path}: expected {expected}, found {found}")]
    WrongType {
        /// Where.
        path: AttributePath,
        /// The type (or wire form) that was expected.
        expected: String,
        /// What was found instead.
        found: String,
    },
    /// The input ended in the middle of a value.
    #[error("at {path}: input ends in the middle of a value")]
    Truncated {
        /// Where.
        path: AttributePath,
    },
    /// Bytes remain after the value.
    #[error("{count} unexpected bytes after the value at offset {offset}")]
    TrailingBytes {
        /// Offset of the first unexpected byte.
        offset: usize,
        /// How many bytes remain.
        count: usize,
    },
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("at {path}: value nests deeper than {MAX_DEPTH} levels")]
    TooDeep {
        /// Where.
        path: AttributePath,
    },
    /// A length prefix claims more data than the input holds.
    #[error("at {path}: length {length} exceeds the remaining {remaining} bytes of input")]
    LengthTooLarge {
        /// Where.
        path: AttributePath,
        /// The claimed length.
        length: u64,
        /// Bytes left in the input.
        remaining: usize,
    },
    /// A string is not valid UTF-8.
    #[error("at {path}: string is not valid UTF-8")]
    InvalidUtf8 {
        /// Where.
        path: AttributePath,
    },
    /// A number is malformed or out of range.
    #[error("at {path}: invalid number: {source}")]
    InvalidNumber {
        /// Where.
        path: AttributePath,
        /// Why.
        source: NumberError,
    },
    /// An object has an attribute its type does not declare.
    #[error("at {path}: unsupported attribute {name:?}")]
    UnsupportedAttribute {
        /// Path of the object.
        path: AttributePath,
        /// The unexpected attribute.
        name: String,
    },
    /// A tuple has the wrong number of elements.
    #[error("at {path}: tuple needs {expected} elements, found {found}")]
    TupleLength {
        /// Where.
        path: AttributePath,
        /// Elements the type has.
        expected: usize,
        /// Elements found.
        found: usize,
    },
    /// The type description of a dynamic value is invalid.
    #[error("at {path}: invalid type of a dynamic value: {source}")]
    InvalidType {
        /// Where.
        path: AttributePath,
        /// Why.
        source: TypeError,
    },
    /// An unknown value where the format cannot carry one (JSON state, flatmap encoding).
    #[error("at {path}: unknown values cannot be represented here")]
    UnknownNotAllowed {
        /// Where.
        path: AttributePath,
    },
    /// A malformed unknown-value extension or refinement.
    #[error("at {path}: invalid unknown value: {reason}")]
    InvalidUnknown {
        /// Where.
        path: AttributePath,
        /// Why.
        reason: String,
    },
    /// Malformed JSON (or flatmap) input.
    #[error("at {path}: {message}")]
    Syntax {
        /// Where.
        path: AttributePath,
        /// The parser's message.
        message: String,
    },
}

impl CodecError {
    /// The attribute path the error is about (root for trailing bytes).
    pub fn path(&self) -> &AttributePath {
        static ROOT: AttributePath = AttributePath::root();
        match self {
            CodecError::WrongType { path, .. }
            | CodecError::Truncated { path }
            | CodecError::TooDeep { path }
            | CodecError::LengthTooLarge { path, .. }
            | CodecError::InvalidUtf8 { path }
            | CodecError::InvalidNumber { path, .. }
            | CodecError::UnsupportedAttribute { path, .. }
            | CodecError::TupleLength { path, .. }
            | CodecError::InvalidType { path, .. }
            | CodecError::UnknownNotAllowed { path }
            | CodecError::InvalidUnknown { path, .. }
            | CodecError::Syntax { path, .. } => path,
            CodecError::TrailingBytes { .. } => &ROOT,
        }
    }
}

impl From<CodecError> for crate::diag::Diagnostic {
    fn from(e: CodecError) -> Self {
        let path = e.path().clone();
        let d = crate::diag::Diagnostic::error(
            "Invalid value",
            format!(
                "The provider could not process a value: {e}. This is a bug in Terraform or in the provider."
            ),
        );
        if path.is_root() { d } else { d.with_path(path) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_forms() {
        assert_eq!(Number::parse("12").unwrap().as_i64(), Some(12));
        assert_eq!(Number::parse("-0").unwrap().as_i64(), Some(0));
        assert_eq!(Number::parse("1.50").unwrap().to_decimal_string(), "1.5");
        assert_eq!(Number::parse("0.001e3").unwrap().as_i64(), Some(1));
        assert_eq!(Number::parse("1e2").unwrap().as_i64(), Some(100));
        assert_eq!(
            Number::parse("12.5e-3").unwrap().to_decimal_string(),
            "0.0125"
        );
        assert_eq!(Number::parse("-.5").unwrap().to_decimal_string(), "-0.5");
        assert_eq!(
            Number::parse("18446744073709551615").unwrap().as_u64(),
            Some(u64::MAX)
        );
        assert_eq!(
            Number::parse("18446744073709551616")
                .unwrap()
                .to_decimal_string(),
            "18446744073709551616"
        );
        for bad in [
            "",
            "-",
            ".",
            "1..2",
            "1e",
            "abc",
            "1e+",
            "0x10",
            "1 ",
            "1e9999999",
        ] {
            assert!(Number::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Number::parse("1e5000"), Err(NumberError::TooLong));
    }

    #[test]
    fn number_equality_across_forms() {
        assert_eq!(
            Number::from_f64_exact(0.5).unwrap(),
            Number::parse("0.5").unwrap()
        );
        assert_eq!(Number::from_f64_exact(3.0).unwrap(), Number::from_i64(3));
        assert_ne!(
            Number::from_f64_exact(0.1).unwrap(),
            Number::parse("0.1").unwrap()
        );
        assert_eq!(
            Number::from_f64(0.1).unwrap(),
            Number::parse("0.1").unwrap()
        );
        assert_eq!(
            Number::from_f64_exact(0.1).unwrap().to_decimal_string(),
            "0.1000000000000000055511151231257827021181583404541015625"
        );
        assert_eq!(Number::from_u64(5), Number::from_i64(5));
        assert!(Number::from_f64(f64::NAN).is_none());
        assert_eq!(
            Number::from_f64(f64::INFINITY).unwrap().to_decimal_string(),
            "inf"
        );
        assert_eq!(Number::from_f64(1e300).unwrap().as_f64(), 1e300);
        assert_eq!(exact_f64_decimal(-2.5), "-2.5");
        assert_eq!(exact_f64_decimal(5e-324).len(), 2 + 1074);
    }

    #[test]
    fn set_equality_ignores_order_and_dynamic_is_transparent() {
        let a = Value::set([Value::from("a"), Value::from("b")]);
        let b = Value::set([Value::from("b"), Value::from("a")]);
        assert_eq!(a, b);
        assert_ne!(a, Value::list([Value::from("a"), Value::from("b")]));
        assert_eq!(
            Value::dynamic(Type::String, Value::from("x")),
            Value::from("x")
        );
    }

    #[test]
    fn paths_walk_and_transform() {
        let mut v = Value::object([
            ("a", Value::list([Value::from(1), Value::unknown()])),
            ("m", Value::map([("k", Value::from("v"))])),
        ]);
        assert!(!v.is_fully_known());
        assert_eq!(v.unknown_paths(), vec![AttributePath::new("a").index(1)]);
        let p = AttributePath::new("m").key("k");
        assert_eq!(v.get(&p).unwrap().as_str(), Some("v"));
        assert_eq!(v.set_at(&p, Value::from("w")).unwrap(), Value::from("v"));
        assert!(v.set_at(&AttributePath::new("zz"), Value::Null).is_err());
        let mut count = 0;
        v.walk(|_, _| count += 1);
        assert_eq!(count, 6);
        let known = v
            .transform(|_, x| Ok::<_, ()>(if x.is_unknown() { Value::from(2) } else { x }))
            .unwrap();
        assert!(known.is_fully_known());
        assert_eq!(
            known
                .get(&AttributePath::new("a").index(1))
                .unwrap()
                .as_i64(),
            Some(2)
        );
    }

    #[test]
    fn infer_type() {
        let v = Value::object([
            ("l", Value::list([Value::from("x"), Value::Null])),
            ("e", Value::List(vec![])),
        ]);
        assert_eq!(
            v.infer_type(),
            Type::object([
                ("l", Type::list(Type::String)),
                ("e", Type::list(Type::Dynamic))
            ])
        );
    }

    #[test]
    fn codec_error_to_diagnostic_keeps_path() {
        let d: crate::diag::Diagnostic = CodecError::Truncated {
            path: AttributePath::new("x"),
        }
        .into();
        assert_eq!(d.attribute, Some(AttributePath::new("x")));
    }
}
