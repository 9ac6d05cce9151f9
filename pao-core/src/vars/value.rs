//! The value the evaluator works with: borrowed from the context or the template wherever it
//! can be, owned only when an operation makes something new. This is what keeps rendering free
//! of allocations beyond the output buffer.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::Write;

use serde_json::{Map, Number, Value};

#[derive(Debug, Clone)]
pub(crate) enum Val<'a> {
    /// A missing path, only produced where it is allowed (`default`, `coalesce`).
    Undef,
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    String(String),
    /// A borrowed array or object.
    Ref(&'a Value),
    /// A constructed array or object.
    Owned(Value),
}

impl<'a> Val<'a> {
    pub(crate) fn from_ref(v: &'a Value) -> Val<'a> {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => number(n),
            Value::String(s) => Val::Str(s),
            _ => Val::Ref(v),
        }
    }

    pub(crate) fn from_owned(v: Value) -> Val<'a> {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(b),
            Value::Number(n) => number(&n),
            Value::String(s) => Val::String(s),
            other => Val::Owned(other),
        }
    }

    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Val::Undef => "undefined",
            Val::Null => "null",
            Val::Bool(_) => "bool",
            Val::Int(_) => "int",
            Val::Float(_) => "float",
            Val::Str(_) | Val::String(_) => "string",
            Val::Ref(_) | Val::Owned(_) => match self.as_json() {
                Some(Value::Array(_)) => "list",
                Some(Value::Object(_)) => "object",
                _ => "value",
            },
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            Val::String(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_json(&self) -> Option<&Value> {
        match self {
            Val::Ref(v) => Some(v),
            Val::Owned(v) => Some(v),
            _ => None,
        }
    }

    pub(crate) fn as_array(&self) -> Option<&Vec<Value>> {
        self.as_json().and_then(Value::as_array)
    }

    pub(crate) fn as_object(&self) -> Option<&Map<String, Value>> {
        self.as_json().and_then(Value::as_object)
    }

    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub(crate) fn is_absent(&self) -> bool {
        matches!(self, Val::Undef | Val::Null)
    }

    pub(crate) fn truthy(&self) -> bool {
        match self {
            Val::Undef | Val::Null => false,
            Val::Bool(b) => *b,
            Val::Int(i) => *i != 0,
            Val::Float(f) => *f != 0.0,
            Val::Str(s) => !s.is_empty(),
            Val::String(s) => !s.is_empty(),
            Val::Ref(_) | Val::Owned(_) => match self.as_json() {
                Some(Value::Array(a)) => !a.is_empty(),
                Some(Value::Object(o)) => !o.is_empty(),
                _ => true,
            },
        }
    }

    pub(crate) fn into_value(self) -> Value {
        match self {
            Val::Undef | Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(b),
            Val::Int(i) => Value::from(i),
            Val::Float(f) => Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Val::Str(s) => Value::String(s.to_owned()),
            Val::String(s) => Value::String(s),
            Val::Ref(v) => v.clone(),
            Val::Owned(v) => v,
        }
    }

    pub(crate) fn to_value(&self) -> Value {
        self.clone().into_value()
    }

    /// The text this value renders as inside a template.
    pub(crate) fn write_to(&self, out: &mut String) {
        match self {
            Val::Undef | Val::Null => {}
            Val::Bool(true) => out.push_str("true"),
            Val::Bool(false) => out.push_str("false"),
            Val::Int(i) => {
                let mut buf = itoa::Buffer::new();
                out.push_str(buf.format(*i));
            }
            Val::Float(f) => write_float(*f, out),
            Val::Str(s) => out.push_str(s),
            Val::String(s) => out.push_str(s),
            Val::Ref(v) => write_json(v, out),
            Val::Owned(v) => write_json(v, out),
        }
    }

    pub(crate) fn to_text(&self) -> Cow<'_, str> {
        match self {
            Val::Str(s) => Cow::Borrowed(s),
            Val::String(s) => Cow::Borrowed(s),
            other => {
                let mut s = String::new();
                other.write_to(&mut s);
                Cow::Owned(s)
            }
        }
    }
}

/// Writes borrowed JSON as `Val::from_ref(v).write_to(out)` would.
#[inline]
pub(crate) fn write_json_value(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Number(n) => match n.as_i64() {
            Some(i) => out.push_str(itoa::Buffer::new().format(i)),
            None => write_float(n.as_f64().unwrap_or(f64::NAN), out),
        },
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Null => {}
        Value::Array(_) | Value::Object(_) => write_json(v, out),
    }
}

fn number<'a>(n: &Number) -> Val<'a> {
    if let Some(i) = n.as_i64() {
        Val::Int(i)
    } else {
        Val::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}

pub(crate) fn write_float(f: f64, out: &mut String) {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 {
        let _ = write!(out, "{f:.1}");
    } else {
        let _ = write!(out, "{f}");
    }
}

fn write_json(v: &Value, out: &mut String) {
    // serde_json writes valid UTF-8 into the vector.
    let mut buf = Vec::new();
    if serde_json::to_writer(&mut buf, v).is_ok() {
        out.push_str(&String::from_utf8_lossy(&buf));
    }
}

/// Equality: numbers compare by value across int and float; different types are unequal.
pub(crate) fn equals(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Undef | Val::Null, Val::Undef | Val::Null) => true,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Int(x), Val::Int(y)) => x == y,
        (Val::Int(_) | Val::Float(_), Val::Int(_) | Val::Float(_)) => {
            compare(a, b) == Some(Ordering::Equal)
        }
        _ => match (a.as_str(), b.as_str()) {
            (Some(x), Some(y)) => x == y,
            (None, None) => match (a.as_json(), b.as_json()) {
                (Some(x), Some(y)) => json_equals(x, y),
                _ => false,
            },
            _ => false,
        },
    }
}

fn json_equals(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => equals(&number(x), &number(y)),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equals(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equals(v, w)))
        }
        _ => a == b,
    }
}

/// Ordering for `<` and friends and `sort`: numbers with numbers, strings with strings.
pub(crate) fn compare(a: &Val, b: &Val) -> Option<Ordering> {
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => Some(x.cmp(y)),
        (Val::Int(x), Val::Float(y)) => cmp_int_float(*x, *y),
        (Val::Float(x), Val::Int(y)) => cmp_int_float(*y, *x).map(Ordering::reverse),
        (Val::Float(x), Val::Float(y)) => x.partial_cmp(y),
        (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(y)),
        _ => Some(a.as_str()?.cmp(b.as_str()?)),
    }
}

/// Compares an int with a float exactly. Converting the int to a float rounds above 2^53,
/// which made `2^53 + 1` equal to `2^53` as a float but greater than `2^53` as an int: an
/// order that is not total, on which `sort` panicked.
fn cmp_int_float(i: i64, f: f64) -> Option<Ordering> {
    match (i as f64).partial_cmp(&f)? {
        // Rounding is monotonic, so a strict order survives it. Equal means `f` is a whole
        // number of at most 2^63, which converts exactly.
        Ordering::Equal => Some(i128::from(i).cmp(&(f as i128))),
        o => Some(o),
    }
}
