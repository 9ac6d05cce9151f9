//! Built-in functions and the registry embedders add their own to. Names are resolved and
//! arities checked when a template is compiled; literal regex patterns are compiled then too.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, SecondsFormat, TimeZone, Utc};
use hmac::Mac;
use serde_json::{Map, Value};
use sha2::Digest;

use super::ast::{Call, Expr, Func, Scope};
use super::error::{VarError, VarErrorKind};
use super::eval::{Context, State, contains, eval};
use super::parser::compile_regex;
use super::value::{Val, compare, equals};

/// The signature of an embedder's function: JSON arguments in, JSON out, or a message.
pub type CustomFn = dyn Fn(&[Value]) -> Result<Value, String> + Send + Sync;

/// A function registered by the embedder.
pub struct CustomFunction {
    name: String,
    min_args: usize,
    max_args: usize,
    f: Box<CustomFn>,
}

impl fmt::Debug for CustomFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomFunction")
            .field("name", &self.name)
            .field("min_args", &self.min_args)
            .field("max_args", &self.max_args)
            .finish()
    }
}

macro_rules! builtins {
    ($( $variant:ident = $name:literal ($min:expr, $max:expr) $([$($alias:literal),*])? ; )*) => {
        /// A built-in function.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Builtin { $( #[doc = $name] $variant, )* }

        /// Every built-in: name, function, min and max arity.
        pub(crate) const BUILTINS: &[(&str, Builtin, usize, usize)] = &[
            $( ($name, Builtin::$variant, $min, $max), $($( ($alias, Builtin::$variant, $min, $max), )*)? )*
        ];

        impl Builtin {
            /// The canonical (snake_case) name.
            pub fn name(&self) -> &'static str {
                match self { $( Builtin::$variant => $name, )* }
            }
        }
    };
}

const MANY: usize = usize::MAX;

builtins! {
    Lower = "lower" (1, 1);
    Upper = "upper" (1, 1);
    Title = "title" (1, 1);
    Trim = "trim" (1, 2);
    Replace = "replace" (3, 3);
    Split = "split" (2, 2);
    Join = "join" (1, 2);
    Slugify = "slugify" (1, 1);
    Truncate = "truncate" (2, 3);
    Length = "length" (1, 1) ["len"];
    Default = "default" (2, 2);
    Coalesce = "coalesce" (1, MANY);
    Contains = "contains" (2, 2);
    StartsWith = "starts_with" (2, 2) ["startsWith"];
    EndsWith = "ends_with" (2, 2) ["endsWith"];
    Matches = "matches" (2, 2);
    RegexReplace = "regex_replace" (3, 3) ["regexReplace"];
    ToJson = "to_json" (1, 2) ["toJSON", "toJson"];
    FromJson = "from_json" (1, 1) ["fromJSON", "fromJson"];
    Base64Encode = "base64_encode" (1, 1) ["base64Encode"];
    Base64Decode = "base64_decode" (1, 1) ["base64Decode"];
    Sha256 = "sha256" (1, 1);
    HmacSha256 = "hmac_sha256" (2, 2) ["hmacSha256"];
    Uuid = "uuid" (0, 1);
    Now = "now" (0, 0);
    FormatDate = "format_date" (2, 2) ["formatDate"];
    AddDuration = "add_duration" (2, 2) ["addDuration"];
    Min = "min" (1, MANY);
    Max = "max" (1, MANY);
    Round = "round" (1, 2);
    Int = "int" (1, 1);
    Float = "float" (1, 1);
    String = "string" (1, 1);
    Keys = "keys" (1, 1);
    Values = "values" (1, 1);
    Merge = "merge" (1, MANY);
    Unique = "unique" (1, 1);
    Sort = "sort" (1, 1);
    First = "first" (1, 1);
    Last = "last" (1, 1);
    Abs = "abs" (1, 1);
    Reverse = "reverse" (1, 1);
    UrlEncode = "url_encode" (1, 1) ["urlEncode"];
    Range = "range" (1, 3);
}

impl Builtin {
    /// The argument that is a regex pattern, compiled at load time when literal.
    pub(crate) fn regex_arg(&self) -> Option<usize> {
        matches!(self, Builtin::Matches | Builtin::RegexReplace).then_some(1)
    }

    /// Arguments that must be strings.
    pub(crate) fn string_args(&self) -> &'static [usize] {
        match self {
            Builtin::Lower | Builtin::Upper | Builtin::Title | Builtin::Slugify => &[0],
            Builtin::Replace | Builtin::RegexReplace => &[0, 1, 2],
            Builtin::Split | Builtin::StartsWith | Builtin::EndsWith | Builtin::Matches => &[0, 1],
            Builtin::Join => &[1],
            Builtin::FormatDate => &[1],
            Builtin::FromJson | Builtin::Base64Decode | Builtin::UrlEncode => &[0],
            _ => &[],
        }
    }
}

/// The functions a template can call: the built-ins plus the embedder's own.
#[derive(Clone, Default)]
pub struct Functions {
    custom: BTreeMap<String, Arc<CustomFunction>>,
}

impl fmt::Debug for Functions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Functions")
            .field("custom", &self.custom.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Functions {
    /// Registers a function callable as `name(args)` or `x | name(args)`.
    ///
    /// Fails when the name is taken by a built-in or is not an identifier.
    pub fn register<F>(
        &mut self,
        name: &str,
        min_args: usize,
        max_args: usize,
        f: F,
    ) -> Result<(), VarError>
    where
        F: Fn(&[Value]) -> Result<Value, String> + Send + Sync + 'static,
    {
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(VarError::new(
                VarErrorKind::BadArguments,
                format!("`{name}` is not a valid function name"),
            ));
        }
        if BUILTINS.iter().any(|(n, ..)| *n == name) || Scope::from_name(name).is_some() {
            return Err(VarError::new(
                VarErrorKind::BadArguments,
                format!("`{name}` is a built-in name and cannot be redefined"),
            ));
        }
        if min_args > max_args {
            return Err(VarError::new(
                VarErrorKind::BadArguments,
                "min_args is larger than max_args",
            ));
        }
        self.custom.insert(
            name.to_string(),
            Arc::new(CustomFunction {
                name: name.to_string(),
                min_args,
                max_args,
                f: Box::new(f),
            }),
        );
        Ok(())
    }

    pub(crate) fn resolve(&self, name: &str) -> Option<(Func, usize, usize)> {
        if let Some((_, b, min, max)) = BUILTINS.iter().find(|(n, ..)| *n == name) {
            return Some((Func::Builtin(*b), *min, *max));
        }
        self.custom
            .get(name)
            .map(|c| (Func::Custom(c.clone()), c.min_args, c.max_args))
    }

    /// Every callable name, built-ins and aliases first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        BUILTINS
            .iter()
            .map(|(n, ..)| *n)
            .chain(self.custom.keys().map(String::as_str))
    }
}

#[inline]
pub(crate) fn write_val(v: &Val, out: &mut String) {
    v.write_to(out);
}

fn err(call: &Call, kind: VarErrorKind, msg: impl Into<String>) -> VarError {
    VarError::at(kind, call.span, format!("{}: {}", call.name, msg.into()))
}

fn want_str<'v>(call: &Call, v: &'v Val, what: &str) -> Result<&'v str, VarError> {
    v.as_str().ok_or_else(|| {
        err(
            call,
            VarErrorKind::Type,
            format!("expected a string for {what}, got a {}", v.type_name()),
        )
    })
}

fn want_int(call: &Call, v: &Val, what: &str) -> Result<i64, VarError> {
    match v {
        Val::Int(i) => Ok(*i),
        Val::Float(f) if f.fract() == 0.0 => Ok(*f as i64),
        other => Err(err(
            call,
            VarErrorKind::Type,
            format!("expected an int for {what}, got a {}", other.type_name()),
        )),
    }
}

fn list_of<'v>(call: &Call, v: &'v Val) -> Result<&'v Vec<Value>, VarError> {
    v.as_array().ok_or_else(|| {
        err(
            call,
            VarErrorKind::Type,
            format!("expected a list, got a {}", v.type_name()),
        )
    })
}

/// Calls a function.
pub(crate) fn call<'a>(
    call: &'a Call,
    ctx: &Context<'a>,
    st: &mut State<'a>,
    lenient: bool,
) -> Result<Val<'a>, VarError> {
    let b = match &call.func {
        Func::Builtin(b) => *b,
        Func::Custom(c) => {
            let mut args = Vec::with_capacity(call.args.len());
            for a in call.args.iter() {
                let v = eval(a, ctx, st, lenient)?;
                if matches!(v, Val::Undef) {
                    return Ok(Val::Undef);
                }
                args.push(v.into_value());
            }
            let v = (c.f)(&args)
                .map(Val::from_owned)
                .map_err(|m| err(call, VarErrorKind::Function, m))?;
            st.charge(size_cost(&v), call.span)?;
            return Ok(v);
        }
    };
    // Guards evaluate their first arguments leniently and short-circuit.
    match b {
        Builtin::Default => {
            let v = eval(&call.args[0], ctx, st, true)?;
            return if v.is_absent() {
                eval(&call.args[1], ctx, st, lenient)
            } else {
                Ok(v)
            };
        }
        Builtin::Coalesce => {
            for a in call.args.iter() {
                let v = eval(a, ctx, st, true)?;
                if !v.is_absent() {
                    return Ok(v);
                }
            }
            return Ok(Val::Null);
        }
        _ => {}
    }
    let mut argv: [Val<'a>; 3] = [Val::Null, Val::Null, Val::Null];
    let many = call.args.len() > 3;
    let mut rest: Vec<Val<'a>> = Vec::new();
    for (i, a) in call.args.iter().enumerate() {
        let v = eval(a, ctx, st, lenient)?;
        if matches!(v, Val::Undef) {
            return Ok(Val::Undef);
        }
        if many {
            rest.push(v);
        } else {
            argv[i] = v;
        }
    }
    let n = call.args.len();
    let args: &[Val<'a>] = if many { &rest } else { &argv[..n] };
    let v = builtin(b, call, args, ctx, st)?;
    // These pay as they go, before they allocate.
    if !matches!(
        b,
        Builtin::Replace | Builtin::RegexReplace | Builtin::Join | Builtin::Range
    ) {
        st.charge(size_cost(&v), call.span)?;
    }
    Ok(v)
}

/// Bytes of new text that one unit of fuel pays for.
pub(crate) const BYTES_PER_FUEL: usize = 64;

/// The fuel a newly made value costs: one unit per [`BYTES_PER_FUEL`] bytes of text, one per
/// item of a list or object. Without it, `x | replace('a', 'aaaa') | replace(...)` could grow
/// a string to terabytes for the price of a few operations.
pub(crate) fn size_cost(v: &Val) -> u64 {
    match v {
        Val::String(s) => (s.len() / BYTES_PER_FUEL) as u64,
        Val::Owned(Value::Array(a)) => a.len() as u64,
        Val::Owned(Value::Object(m)) => m.len() as u64,
        _ => 0,
    }
}

fn builtin<'a>(
    b: Builtin,
    call: &'a Call,
    args: &[Val<'a>],
    ctx: &Context<'a>,
    st: &mut State<'a>,
) -> Result<Val<'a>, VarError> {
    let a0: &Val<'a> = args.first().unwrap_or(&NULL_VAL);
    Ok(match b {
        Builtin::Lower => Val::String(want_str(call, a0, "the text")?.to_lowercase()),
        Builtin::Upper => Val::String(want_str(call, a0, "the text")?.to_uppercase()),
        Builtin::Title => Val::String(title(want_str(call, a0, "the text")?)),
        Builtin::Trim => {
            let s = want_str(call, a0, "the text")?;
            match args.get(1) {
                Some(chars) => {
                    let chars = want_str(call, chars, "the characters to trim")?;
                    Val::String(s.trim_matches(|c| chars.contains(c)).to_string())
                }
                None => match a0 {
                    Val::Str(s) => Val::Str(s.trim()),
                    _ => Val::String(s.trim().to_string()),
                },
            }
        }
        Builtin::Replace => {
            let s = want_str(call, a0, "the text")?;
            let from = want_str(call, &args[1], "the text to find")?;
            if from.is_empty() {
                return Err(err(
                    call,
                    VarErrorKind::BadArguments,
                    "the text to find is empty",
                ));
            }
            let to = want_str(call, &args[2], "the replacement")?;
            // The exact length only matters when the text can grow.
            let len = if to.len() <= from.len() {
                s.len()
            } else {
                let hits = s.matches(from).count();
                s.len()
                    .saturating_add(hits.saturating_mul(to.len() - from.len()))
            };
            st.charge((len / BYTES_PER_FUEL) as u64, call.span)?;
            Val::String(s.replace(from, to))
        }
        Builtin::Split => {
            let s = want_str(call, a0, "the text")?;
            let sep = want_str(call, &args[1], "the separator")?;
            let parts: Vec<Value> = if sep.is_empty() {
                s.chars().map(|c| Value::String(c.to_string())).collect()
            } else {
                s.split(sep).map(|p| Value::String(p.to_string())).collect()
            };
            Val::Owned(Value::Array(parts))
        }
        Builtin::Join => {
            let items = list_of(call, a0)?;
            let sep = match args.get(1) {
                Some(s) => want_str(call, s, "the separator")?,
                None => "",
            };
            let mut out = String::new();
            let mut owed = 0;
            for (i, item) in items.iter().enumerate() {
                let before = out.len();
                if i > 0 {
                    out.push_str(sep);
                }
                Val::from_ref(item).write_to(&mut out);
                owed += out.len() - before;
                st.charge((owed / BYTES_PER_FUEL) as u64, call.span)?;
                owed %= BYTES_PER_FUEL;
            }
            Val::String(out)
        }
        Builtin::Slugify => Val::String(slugify(want_str(call, a0, "the text")?)),
        Builtin::Truncate => {
            let s = want_str(call, a0, "the text")?;
            let n = want_int(call, &args[1], "the length")?;
            let n = usize::try_from(n)
                .map_err(|_| err(call, VarErrorKind::BadArguments, "negative length"))?;
            let end = match args.get(2) {
                Some(e) => want_str(call, e, "the ending")?,
                None => "",
            };
            if s.chars().count() <= n {
                return Ok(a0.clone());
            }
            let keep = n.saturating_sub(end.chars().count());
            let mut out: String = s.chars().take(keep).collect();
            out.push_str(end);
            Val::String(out)
        }
        Builtin::Length => Val::Int(match a0 {
            v if v.as_str().is_some() => v.as_str().map(|s| s.chars().count()).unwrap_or(0) as i64,
            v if v.as_array().is_some() => v.as_array().map(Vec::len).unwrap_or(0) as i64,
            v if v.as_object().is_some() => v.as_object().map(Map::len).unwrap_or(0) as i64,
            other => {
                return Err(err(
                    call,
                    VarErrorKind::Type,
                    format!("a {} has no length", other.type_name()),
                ));
            }
        }),
        Builtin::Default | Builtin::Coalesce => {
            unreachable!("handled before arguments are evaluated")
        }
        Builtin::Contains => Val::Bool(contains(a0, &args[1]).ok_or_else(|| {
            err(
                call,
                VarErrorKind::Type,
                format!(
                    "cannot look for a {} in a {}",
                    args[1].type_name(),
                    a0.type_name()
                ),
            )
        })?),
        Builtin::StartsWith => Val::Bool(want_str(call, a0, "the text")?.starts_with(want_str(
            call,
            &args[1],
            "the prefix",
        )?)),
        Builtin::EndsWith => Val::Bool(want_str(call, a0, "the text")?.ends_with(want_str(
            call,
            &args[1],
            "the suffix",
        )?)),
        Builtin::Matches => {
            let s = want_str(call, a0, "the text")?;
            let re = regex_for(call, &args[1])?;
            Val::Bool(re.is_match(s))
        }
        Builtin::RegexReplace => {
            let s = want_str(call, a0, "the text")?;
            let re = regex_for(call, &args[1])?;
            let rep = want_str(call, &args[2], "the replacement")?;
            // What `replace_all` does, paying for each piece before writing it: a replacement
            // like `$0$0$0` multiplies the text. A piece is at most the replacement plus, for
            // each `$`, the whole match.
            let refs = rep.matches('$').count();
            let mut out = String::with_capacity(s.len());
            let mut owed = s.len();
            let mut last = 0;
            for caps in re.captures_iter(s) {
                let Some(m) = caps.get(0) else { continue };
                owed = owed
                    .saturating_add(rep.len())
                    .saturating_add(refs.saturating_mul(m.len()));
                st.charge((owed / BYTES_PER_FUEL) as u64, call.span)?;
                owed %= BYTES_PER_FUEL;
                out.push_str(&s[last..m.start()]);
                caps.expand(rep, &mut out);
                last = m.end();
            }
            st.charge((owed / BYTES_PER_FUEL) as u64, call.span)?;
            out.push_str(&s[last..]);
            Val::String(out)
        }
        Builtin::ToJson => {
            let pretty = matches!(args.get(1), Some(v) if v.truthy());
            let v = a0.to_value();
            let s = if pretty {
                serde_json::to_string_pretty(&v)
            } else {
                serde_json::to_string(&v)
            };
            Val::String(s.map_err(|e| err(call, VarErrorKind::Function, e.to_string()))?)
        }
        Builtin::FromJson => {
            let s = want_str(call, a0, "the JSON text")?;
            let v: Value = serde_json::from_str(s)
                .map_err(|e| err(call, VarErrorKind::Function, format!("invalid JSON: {e}")))?;
            Val::from_owned(v)
        }
        Builtin::Base64Encode => {
            let text = a0.to_text();
            Val::String(base64::engine::general_purpose::STANDARD.encode(text.as_bytes()))
        }
        Builtin::Base64Decode => {
            let s = want_str(call, a0, "the base64 text")?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s.trim()))
                .map_err(|e| err(call, VarErrorKind::Function, format!("invalid base64: {e}")))?;
            Val::String(String::from_utf8(bytes).map_err(|_| {
                err(
                    call,
                    VarErrorKind::Function,
                    "decoded bytes are not UTF-8 text",
                )
            })?)
        }
        Builtin::Sha256 => Val::String(hex::encode(sha2::Sha256::digest(a0.to_text().as_bytes()))),
        Builtin::HmacSha256 => {
            let msg = a0.to_text();
            let key = want_str(call, &args[1], "the key")?;
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes())
                .map_err(|e| err(call, VarErrorKind::Function, e.to_string()))?;
            mac.update(msg.as_bytes());
            Val::String(hex::encode(mac.finalize().into_bytes()))
        }
        Builtin::Uuid => match args.first() {
            Some(name) => {
                let name = name.to_text();
                Val::String(uuid::Uuid::new_v5(&PAO_NAMESPACE, name.as_bytes()).to_string())
            }
            None => Val::String(uuid::Uuid::new_v4().to_string()),
        },
        Builtin::Now => {
            let system = ctx.get(Scope::System);
            match system.get("now") {
                Some(Value::String(s)) => Val::Str(s),
                _ => Val::String(Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)),
            }
        }
        Builtin::FormatDate => {
            let dt = parse_date(call, a0)?;
            let fmt = want_str(call, &args[1], "the format")?;
            let items: Vec<chrono::format::Item> =
                chrono::format::StrftimeItems::new(fmt).collect();
            if items
                .iter()
                .any(|i| matches!(i, chrono::format::Item::Error))
            {
                return Err(err(
                    call,
                    VarErrorKind::BadArguments,
                    format!("invalid date format `{fmt}`"),
                ));
            }
            Val::String(dt.format_with_items(items.into_iter()).to_string())
        }
        Builtin::AddDuration => {
            let dt = parse_date(call, a0)?;
            let secs_ms = match &args[1] {
                Val::Int(s) => s.checked_mul(1000),
                v => Some(
                    parse_duration_ms(want_str(call, v, "the duration")?).ok_or_else(|| {
                        err(
                            call,
                            VarErrorKind::BadArguments,
                            "invalid duration: write it like 90s, 15m, 2h30m, 7d or -1h",
                        )
                    })?,
                ),
            };
            let out = secs_ms
                .and_then(|ms| dt.checked_add_signed(chrono::Duration::milliseconds(ms)))
                .ok_or_else(|| err(call, VarErrorKind::Arithmetic, "date out of range"))?;
            Val::String(out.to_rfc3339_opts(SecondsFormat::Secs, true))
        }
        Builtin::Min | Builtin::Max => {
            let want = if b == Builtin::Min {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            };
            let pick = |items: &mut dyn Iterator<Item = Val<'a>>| -> Result<Val<'a>, VarError> {
                let mut best: Option<Val<'a>> = None;
                for v in items {
                    best = Some(match best {
                        None => v,
                        Some(cur) => match compare(&v, &cur) {
                            Some(o) if o == want => v,
                            Some(_) => cur,
                            None => {
                                return Err(err(
                                    call,
                                    VarErrorKind::Type,
                                    format!(
                                        "cannot compare a {} with a {}",
                                        v.type_name(),
                                        cur.type_name()
                                    ),
                                ));
                            }
                        },
                    });
                }
                Ok(best.unwrap_or(Val::Null))
            };
            if args.len() == 1 {
                let items = list_of(call, a0)?;
                match a0 {
                    Val::Ref(Value::Array(items)) => pick(&mut items.iter().map(Val::from_ref))?,
                    _ => pick(&mut items.clone().into_iter().map(Val::from_owned))?,
                }
            } else {
                pick(&mut args.iter().cloned())?
            }
        }
        Builtin::Round => {
            let x = a0.as_f64().ok_or_else(|| {
                err(
                    call,
                    VarErrorKind::Type,
                    format!("cannot round a {}", a0.type_name()),
                )
            })?;
            let digits = match args.get(1) {
                Some(d) => want_int(call, d, "the digits")?.clamp(-15, 15),
                None => 0,
            };
            let factor = 10f64.powi(digits as i32);
            Val::Float((x * factor).round() / factor)
        }
        Builtin::Int => Val::Int(match a0 {
            Val::Int(i) => *i,
            Val::Float(f) if f.is_finite() && f.abs() < 9.2e18 => f.trunc() as i64,
            Val::Bool(b) => i64::from(*b),
            v if v.as_str().is_some() => {
                let s = v.as_str().unwrap_or("").trim();
                s.parse::<i64>()
                    .or_else(|_| s.parse::<f64>().map(|f| f.trunc() as i64))
                    .map_err(|_| not_a_number(call, s))?
            }
            other => {
                return Err(err(
                    call,
                    VarErrorKind::Type,
                    format!("cannot convert a {} to int", other.type_name()),
                ));
            }
        }),
        Builtin::Float => Val::Float(match a0 {
            Val::Int(i) => *i as f64,
            Val::Float(f) => *f,
            v if v.as_str().is_some() => {
                let s = v.as_str().unwrap_or("").trim();
                s.parse::<f64>().map_err(|_| not_a_number(call, s))?
            }
            other => {
                return Err(err(
                    call,
                    VarErrorKind::Type,
                    format!("cannot convert a {} to float", other.type_name()),
                ));
            }
        }),
        Builtin::String => match a0 {
            Val::Str(s) => Val::Str(s),
            other => Val::String(other.to_text().into_owned()),
        },
        Builtin::Keys => {
            let m = a0.as_object().ok_or_else(|| {
                err(
                    call,
                    VarErrorKind::Type,
                    format!("expected an object, got a {}", a0.type_name()),
                )
            })?;
            Val::Owned(Value::Array(m.keys().cloned().map(Value::String).collect()))
        }
        Builtin::Values => {
            let m = a0.as_object().ok_or_else(|| {
                err(
                    call,
                    VarErrorKind::Type,
                    format!("expected an object, got a {}", a0.type_name()),
                )
            })?;
            Val::Owned(Value::Array(m.values().cloned().collect()))
        }
        Builtin::Merge => {
            let mut out = Map::new();
            for a in args {
                let m = a.as_object().ok_or_else(|| {
                    err(
                        call,
                        VarErrorKind::Type,
                        format!("can only merge objects, got a {}", a.type_name()),
                    )
                })?;
                for (k, v) in m {
                    out.insert(k.clone(), v.clone());
                }
            }
            Val::Owned(Value::Object(out))
        }
        Builtin::Unique => {
            let items = list_of(call, a0)?;
            let mut out: Vec<Value> = Vec::with_capacity(items.len());
            for item in items {
                // One operation per comparison: the work is quadratic.
                st.charge(out.len() as u64, call.span)?;
                if !out
                    .iter()
                    .any(|o| equals(&Val::from_ref(o), &Val::from_ref(item)))
                {
                    out.push(item.clone());
                }
            }
            Val::Owned(Value::Array(out))
        }
        Builtin::Sort => {
            let items = list_of(call, a0)?;
            // Only one kind of value has an order; checked first, because sorting with a
            // comparison that is not a total order panics.
            let kind = |v: &Value| match v {
                Value::Number(_) => 1,
                Value::String(_) => 2,
                Value::Bool(_) => 3,
                _ => 0,
            };
            if items.len() > 1
                && items
                    .iter()
                    .any(|v| kind(v) == 0 || kind(v) != kind(&items[0]))
            {
                return Err(err(
                    call,
                    VarErrorKind::Type,
                    "can only sort a list of numbers or a list of strings",
                ));
            }
            let mut items = items.clone();
            items.sort_by(|x, y| {
                compare(&Val::from_ref(x), &Val::from_ref(y)).unwrap_or(std::cmp::Ordering::Equal)
            });
            Val::Owned(Value::Array(items))
        }
        Builtin::First | Builtin::Last => {
            let pick_first = b == Builtin::First;
            match a0 {
                Val::Ref(Value::Array(items)) => {
                    let v = if pick_first {
                        items.first()
                    } else {
                        items.last()
                    };
                    v.map(Val::from_ref).unwrap_or(Val::Null)
                }
                Val::Owned(Value::Array(items)) => {
                    let v = if pick_first {
                        items.first()
                    } else {
                        items.last()
                    };
                    v.cloned().map(Val::from_owned).unwrap_or(Val::Null)
                }
                v if v.as_str().is_some() => {
                    let s = v.as_str().unwrap_or("");
                    let c = if pick_first {
                        s.chars().next()
                    } else {
                        s.chars().next_back()
                    };
                    c.map(|c| Val::String(c.to_string())).unwrap_or(Val::Null)
                }
                other => {
                    return Err(err(
                        call,
                        VarErrorKind::Type,
                        format!("expected a list or string, got a {}", other.type_name()),
                    ));
                }
            }
        }
        Builtin::Abs => match a0 {
            Val::Int(i) => Val::Int(
                i.checked_abs()
                    .ok_or_else(|| err(call, VarErrorKind::Arithmetic, "integer overflow"))?,
            ),
            Val::Float(f) => Val::Float(f.abs()),
            other => {
                return Err(err(
                    call,
                    VarErrorKind::Type,
                    format!("expected a number, got a {}", other.type_name()),
                ));
            }
        },
        Builtin::Reverse => match a0 {
            v if v.as_str().is_some() => {
                Val::String(v.as_str().unwrap_or("").chars().rev().collect())
            }
            v if v.as_array().is_some() => {
                let mut items = v.as_array().cloned().unwrap_or_default();
                items.reverse();
                Val::Owned(Value::Array(items))
            }
            other => {
                return Err(err(
                    call,
                    VarErrorKind::Type,
                    format!("expected a list or string, got a {}", other.type_name()),
                ));
            }
        },
        Builtin::UrlEncode => Val::String(url_encode(want_str(call, a0, "the text")?)),
        Builtin::Range => {
            let ints: Vec<i64> = args
                .iter()
                .map(|a| want_int(call, a, "range bounds"))
                .collect::<Result<_, _>>()?;
            let (start, end, step) = match ints.as_slice() {
                [e] => (0, *e, 1),
                [s, e] => (*s, *e, 1),
                [s, e, st] => (*s, *e, *st),
                _ => (0, 0, 1),
            };
            if step == 0 {
                return Err(err(call, VarErrorKind::BadArguments, "step cannot be 0"));
            }
            let mut out = Vec::new();
            let mut i = start;
            while (step > 0 && i < end) || (step < 0 && i > end) {
                st.tick(call.span)?;
                if out.len() >= 100_000 {
                    return Err(err(
                        call,
                        VarErrorKind::Limit,
                        "range larger than 100000 items",
                    ));
                }
                out.push(Value::from(i));
                i = match i.checked_add(step) {
                    Some(n) => n,
                    None => break,
                };
            }
            Val::Owned(Value::Array(out))
        }
    })
}

const NULL_VAL: Val<'static> = Val::Null;

const PAO_NAMESPACE: uuid::Uuid = uuid::Uuid::from_bytes([
    0x8f, 0x2c, 0x4b, 0x1e, 0x6a, 0x0d, 0x5e, 0x21, 0x9a, 0x3b, 0x7c, 0x44, 0x1f, 0x0e, 0x6d, 0x52,
]);

fn regex_for<'c>(
    call: &'c Call,
    pattern: &Val,
) -> Result<std::borrow::Cow<'c, regex::Regex>, VarError> {
    if let Some(re) = &call.regex {
        return Ok(std::borrow::Cow::Borrowed(re));
    }
    let pat = want_str(call, pattern, "the pattern")?;
    compile_regex(pat)
        .map(std::borrow::Cow::Owned)
        .map_err(|e| e.with_span(call.span))
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if c.is_alphanumeric() {
            if start {
                out.extend(c.to_uppercase());
            } else {
                out.extend(c.to_lowercase());
            }
            start = false;
        } else {
            out.push(c);
            start = true;
        }
    }
    out
}

fn slugify(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut dash = false;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c.to_ascii_lowercase());
        } else {
            dash = true;
        }
    }
    out
}

/// The error of `int` and `float` on a text that is no number. It does not echo the text: it
/// may be a secret.
fn not_a_number(call: &Call, s: &str) -> VarError {
    err(
        call,
        VarErrorKind::Type,
        format!("a text of {} characters is not a number", s.chars().count()),
    )
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn parse_date(call: &Call, v: &Val) -> Result<DateTime<Utc>, VarError> {
    match v {
        Val::Int(secs) => Utc
            .timestamp_opt(*secs, 0)
            .single()
            .ok_or_else(|| err(call, VarErrorKind::BadArguments, "timestamp out of range")),
        v => {
            let s = want_str(call, v, "the date")?;
            if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
                return Ok(dt.with_timezone(&Utc));
            }
            if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
                && let Some(dt) = d.and_hms_opt(0, 0, 0)
            {
                return Ok(dt.and_utc());
            }
            Err(err(
                call,
                VarErrorKind::BadArguments,
                format!(
                    "`{s}` is not a date (RFC 3339 such as 2026-01-31T09:00:00Z, or 2026-01-31)"
                ),
            ))
        }
    }
}

/// Parses `90s`, `15m`, `2h30m`, `7d`, `1w`, `250ms`, `-1h` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    if rest.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    Some(if neg { -total } else { total })
}

/// Writes `upper`/`lower`/`trim` of a borrowed string straight into the output, so the
/// common filters cost no allocation.
pub(crate) fn stream<'a>(
    call: &'a Call,
    ctx: &Context<'a>,
    st: &mut State<'a>,
    out: &mut String,
) -> Option<Result<(), VarError>> {
    let Func::Builtin(b) = &call.func else {
        return None;
    };
    let streamable = matches!(b, Builtin::Upper | Builtin::Lower)
        || (*b == Builtin::Trim && call.args.len() == 1);
    if !streamable {
        return None;
    }
    let arg: &'a Expr = &call.args[0];
    let v = match eval(arg, ctx, st, false) {
        Ok(v) => v,
        Err(e) => return Some(Err(e)),
    };
    let Some(s) = v.as_str() else {
        return Some(Err(err(
            call,
            VarErrorKind::Type,
            format!("expected a string for the text, got a {}", v.type_name()),
        )));
    };
    match b {
        Builtin::Upper if s.is_ascii() => {
            out.reserve(s.len());
            out.extend(s.bytes().map(|c| c.to_ascii_uppercase() as char));
        }
        Builtin::Lower if s.is_ascii() => {
            out.reserve(s.len());
            out.extend(s.bytes().map(|c| c.to_ascii_lowercase() as char));
        }
        Builtin::Upper => out.extend(s.chars().flat_map(char::to_uppercase)),
        Builtin::Lower => out.push_str(&s.to_lowercase()),
        _ => out.push_str(s.trim()),
    }
    Some(Ok(()))
}
