//! Redaction of secret values from every text that leaves the engine: the journal, events,
//! log lines, errors, action outputs and plugin results.
//!
//! A secret rarely leaves in its raw form only: an HTTP client puts it in a URL
//! (percent-encoded), a `Basic` header (base64 of `user:secret`), a JSON body (escaped), a
//! signature (hex). [`Redactor`] knows these forms of every secret it holds and replaces them
//! all, in one pass over the text.
//!
//! ```
//! use pao_core::redact::Redactor;
//! use base64::Engine as _;
//!
//! let redactor = Redactor::new();
//! redactor.add("hunter2/very-secret");
//! let basic = base64::engine::general_purpose::STANDARD.encode("ada:hunter2/very-secret");
//! let text = format!("401 for Basic {basic} at /login?p=hunter2%2Fvery-secret");
//! assert_eq!(
//!     redactor.redact_str(&text),
//!     "401 for Basic YWRhOm[REDACTED]Q= at /login?p=[REDACTED]"
//! );
//! ```

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};

/// What a secret (or any form of it) is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// A secret shorter than this (in characters) is not redacted at all: it would match too
/// much innocent text.
pub const MIN_SECRET_CHARS: usize = 3;

/// A derived form (encoded, escaped) shorter than this (in characters) is not looked for.
pub const MIN_DERIVED_CHARS: usize = 4;

/// The secret values of a run, and every form of them that [`Redactor::redact_str`] replaces
/// by [`REDACTED`].
///
/// Cloning is cheap and shares the set: an action that fetches a secret during its attempt
/// adds it ([`Redactor::add`]) to the run's redactor, and everything the engine stores from
/// then on is redacted with it. `Debug` prints how many secrets it holds, never a value.
///
/// For every secret of at least [`MIN_SECRET_CHARS`] characters (and for its trimmed value when
/// it has leading or trailing whitespace), these forms are replaced:
///
/// - the raw value;
/// - JSON-escaped, as it appears inside a serialized JSON string (a quote, a backslash, a
///   control character; also with non-ASCII characters as `\uXXXX`);
/// - percent-encoded, as a query component (everything but `A-Z a-z 0-9 - . _ ~`), as HTML form
///   data (space as `+`), as JavaScript's `encodeURIComponent`, and as a URL's path segment,
///   query and user info encode it; with upper and lower case hex digits;
/// - base64, standard and URL-safe alphabets, with and without padding, standing alone or
///   inside a longer base64 text at any of the 3 byte alignments (the `Basic` header's
///   `base64("user:" + secret)`): there, the characters that depend only on the secret's bytes
///   are replaced, and the one or two characters at each end that mix in neighbouring bytes
///   are left;
/// - hex, lower and upper case.
///
/// A derived form shorter than [`MIN_DERIVED_CHARS`] characters is not looked for. A secret
/// transformed in other ways (hashed, encrypted, split, reversed, re-cased) cannot be
/// recognised. When forms overlap, the longest match starting first wins. [`REDACTED`]
/// itself is left as it is, so redacting twice changes nothing.
#[derive(Clone, Default)]
pub struct Redactor {
    inner: Arc<RwLock<Needles>>,
}

#[derive(Default)]
struct Needles {
    /// The secrets added, raw.
    secrets: BTreeSet<String>,
    /// Every form of every secret.
    forms: BTreeSet<String>,
    /// Finds [`REDACTED`] (pattern 0) and the forms, leftmost-longest. `None` with no secret.
    matcher: Option<AhoCorasick>,
    /// The longest form, in bytes.
    longest: usize,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.read().secrets.len())
            .finish()
    }
}

impl<S: AsRef<str>> FromIterator<S> for Redactor {
    fn from_iter<I: IntoIterator<Item = S>>(secrets: I) -> Redactor {
        let r = Redactor::new();
        r.add_all(secrets);
        r
    }
}

impl Redactor {
    /// A redactor with no secret: it changes nothing.
    pub fn new() -> Redactor {
        Redactor::default()
    }

    // A poisoned lock still holds a sound set: redaction must go on.
    fn read(&self) -> RwLockReadGuard<'_, Needles> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Needles> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a secret value (shared by every clone). A value shorter than
    /// [`MIN_SECRET_CHARS`] characters is ignored.
    pub fn add(&self, secret: &str) {
        self.add_all([secret]);
    }

    /// Adds several secret values at once (one rebuild of the matcher).
    pub fn add_all<I, S>(&self, secrets: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut n = self.write();
        let mut changed = false;
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.chars().count() < MIN_SECRET_CHARS || n.secrets.contains(secret) {
                continue;
            }
            n.secrets.insert(secret.to_string());
            let mut forms = forms_of(secret);
            let trimmed = secret.trim();
            if trimmed != secret && trimmed.chars().count() >= MIN_SECRET_CHARS {
                forms.extend(forms_of(trimmed));
            }
            n.forms.extend(forms);
            changed = true;
        }
        if changed {
            n.rebuild();
        }
    }

    /// Whether it holds no secret.
    pub fn is_empty(&self) -> bool {
        self.read().secrets.is_empty()
    }

    /// How many secrets it holds.
    pub fn len(&self) -> usize {
        self.read().secrets.len()
    }

    /// The length in bytes of the longest form it looks for (0 with no secret).
    pub fn longest_form(&self) -> usize {
        self.read().longest
    }

    /// Whether `text` holds a secret, in any of the forms it knows.
    pub fn contains_secret(&self, text: &str) -> bool {
        let n = self.read();
        let Some(m) = &n.matcher else { return false };
        m.find_iter(text).any(|hit| hit.pattern().as_usize() != 0)
    }

    /// `text` with every form of every secret replaced by [`REDACTED`]; borrowed when nothing
    /// was replaced.
    pub fn redact_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let n = self.read();
        let Some(m) = &n.matcher else {
            return Cow::Borrowed(text);
        };
        let mut out = String::new();
        let mut copied = 0;
        for hit in m.find_iter(text) {
            if hit.pattern().as_usize() == 0 {
                continue;
            }
            if copied == 0 && out.is_empty() {
                out.reserve(text.len());
            }
            out.push_str(&text[copied..hit.start()]);
            out.push_str(REDACTED);
            copied = hit.end();
        }
        if copied == 0 && out.is_empty() {
            return Cow::Borrowed(text);
        }
        out.push_str(&text[copied..]);
        Cow::Owned(out)
    }

    /// `value` with its strings and object keys redacted; a number whose text holds a secret
    /// becomes the string [`REDACTED`].
    pub fn redact_json(&self, value: &Value) -> Value {
        let mut v = value.clone();
        self.redact_json_in_place(&mut v);
        v
    }

    /// [`Redactor::redact_json`], in place.
    pub fn redact_json_in_place(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => {
                if let Cow::Owned(r) = self.redact_str(s) {
                    *s = r;
                }
            }
            Value::Number(x) => {
                if self.contains_secret(&x.to_string()) {
                    *value = Value::String(REDACTED.to_string());
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.redact_json_in_place(x)),
            Value::Object(m) => {
                if m.keys().any(|k| self.contains_secret(k)) {
                    let old = std::mem::take(m);
                    *m = old
                        .into_iter()
                        .map(|(k, x)| (self.redact_str(&k).into_owned(), x))
                        .collect::<Map<String, Value>>();
                }
                m.values_mut().for_each(|x| self.redact_json_in_place(x));
            }
            Value::Null | Value::Bool(_) => {}
        }
    }
}

impl Needles {
    fn rebuild(&mut self) {
        let patterns: Vec<&str> = std::iter::once(REDACTED)
            .chain(self.forms.iter().map(String::as_str))
            .collect();
        self.longest = self.forms.iter().map(String::len).max().unwrap_or(0);
        // Building fails only past the automaton's size limits, far beyond any set of secrets;
        // should it happen, the raw values alone are still looked for.
        self.matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .or_else(|_| {
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(std::iter::once(REDACTED).chain(self.secrets.iter().map(String::as_str)))
            })
            .ok();
    }
}

/// Unreserved characters of RFC 3986 stay; everything else is encoded (`url_encode`,
/// `encodeURIComponent` in the strict sense, most HTTP clients' query encoders).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// `application/x-www-form-urlencoded` (space becomes `+` afterwards).
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');
/// JavaScript's `encodeURIComponent`.
const JS_COMPONENT: &AsciiSet = &COMPONENT
    .remove(b'!')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');
/// A URL's query, as the WHATWG URL standard encodes it.
const QUERY: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'\'');
/// A URL's path segment, as the WHATWG URL standard encodes it (and `%`, `/`).
const PATH_SEGMENT: &AsciiSet = &QUERY
    .remove(b'\'')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'%');
/// A URL's user info (`user:password@`).
const USERINFO: &AsciiSet = &PATH_SEGMENT
    .add(b':')
    .add(b';')
    .add(b'=')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'|');

/// Every form of `secret` worth looking for: the raw value, and the derived forms of at least
/// [`MIN_DERIVED_CHARS`] characters.
fn forms_of(secret: &str) -> BTreeSet<String> {
    let mut derived = BTreeSet::new();
    derived.extend(json_escaped(secret));
    for (set, plus_for_space) in [
        (COMPONENT, false),
        (FORM, true),
        (JS_COMPONENT, false),
        (QUERY, false),
        (PATH_SEGMENT, false),
        (USERINFO, false),
    ] {
        let encoded = utf8_percent_encode(secret, set).to_string();
        let encoded = if plus_for_space {
            // `%` itself is encoded, so `%20` can only be a space.
            encoded.replace("%20", "+")
        } else {
            encoded
        };
        derived.insert(lower_hex_escapes(&encoded));
        derived.insert(encoded);
    }
    derived.extend(base64_forms(secret.as_bytes()));
    derived.insert(hex::encode(secret));
    derived.insert(hex::encode_upper(secret));
    let mut forms: BTreeSet<String> = derived
        .into_iter()
        .filter(|f| f.chars().count() >= MIN_DERIVED_CHARS)
        .collect();
    forms.insert(secret.to_string());
    forms
}

/// The JSON string escapes of `secret` (without the quotes): as `serde_json` writes them, and
/// with every non-ASCII character as `\uXXXX` as ASCII-only serializers write them.
fn json_escaped(secret: &str) -> Vec<String> {
    let quoted = serde_json::to_string(secret).unwrap_or_default();
    let escaped = quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(secret)
        .to_string();
    let mut ascii = String::with_capacity(escaped.len());
    for c in escaped.chars() {
        if c.is_ascii() {
            ascii.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                ascii.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    vec![escaped, ascii]
}

/// `%2F` → `%2f`: some encoders write lower case hex digits.
fn lower_hex_escapes(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut after_percent = 0;
    for c in encoded.chars() {
        if c == '%' {
            after_percent = 2;
            out.push(c);
        } else if after_percent > 0 {
            after_percent -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The base64 forms of `secret`, in both alphabets: standing alone (with and without padding),
/// and the characters that depend only on its bytes when it sits at each of the 3 byte
/// alignments of a longer base64 text.
fn base64_forms(secret: &[u8]) -> Vec<String> {
    let mut out = vec![
        STANDARD.encode(secret),
        STANDARD_NO_PAD.encode(secret),
        URL_SAFE.encode(secret),
        URL_SAFE_NO_PAD.encode(secret),
    ];
    for offset in 0..3usize {
        let mut bytes = vec![0u8; offset];
        bytes.extend_from_slice(secret);
        // Character i holds bits 6i..6i+6 of the text: those of the secret are bits
        // 8·offset..8·(offset+len).
        let first = (8 * offset).div_ceil(6);
        let end = 8 * (offset + secret.len()) / 6;
        if end <= first {
            continue;
        }
        for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
            let text = engine.encode(&bytes);
            if let Some(inner) = text.get(first..end) {
                out.push(inner.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const S: &str = "hunter2-very-secret";

    fn redactor(secrets: &[&str]) -> Redactor {
        secrets.iter().collect()
    }

    #[test]
    fn the_raw_value_is_replaced_and_debug_hides_it() {
        let r = redactor(&[S]);
        assert_eq!(r.redact_str(&format!("pw={S}!")), "pw=[REDACTED]!");
        assert!(!format!("{r:?}").contains("hunter2"));
        assert_eq!(format!("{r:?}"), "Redactor { secrets: 1 }");
    }

    #[test]
    fn text_without_a_secret_is_borrowed() {
        let r = redactor(&[S]);
        assert!(matches!(r.redact_str("nothing here"), Cow::Borrowed(_)));
        assert!(matches!(
            Redactor::new().redact_str("nothing here"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn clones_share_secrets_added_later() {
        let r = Redactor::new();
        let clone = r.clone();
        assert!(clone.is_empty());
        r.add(S);
        assert_eq!(clone.len(), 1);
        assert!(clone.contains_secret(&format!("x{S}x")));
    }

    #[test]
    fn short_secrets_follow_the_thresholds() {
        let r = redactor(&["ab", "abc"]);
        assert_eq!(r.len(), 1, "a 2-character secret is ignored");
        assert_eq!(r.redact_str("xabcx ab"), "x[REDACTED]x ab");
        // base64("abc") = "YWJj" (4 characters) is looked for; hex "616263" too.
        assert_eq!(r.redact_str("YWJj 616263"), "[REDACTED] [REDACTED]");
        // At offsets 1 and 2 only 3 characters depend on the secret alone: not looked for.
        assert_eq!(r.redact_str("eGFiYw"), "eGFiYw");
    }

    #[test]
    fn json_escaped_forms_are_replaced() {
        let secret = "pa\"ss\\wo\nrd";
        let r = redactor(&[secret]);
        let body = serde_json::to_string(&json!({ "password": secret })).unwrap();
        assert_eq!(r.redact_str(&body), r#"{"password":"[REDACTED]"}"#);
        let unicode = "clé-secrète";
        let r = redactor(&[unicode]);
        assert_eq!(
            r.redact_str(r#"{"k":"cl\u00e9-secr\u00e8te"}"#),
            r#"{"k":"[REDACTED]"}"#
        );
    }

    #[test]
    fn url_encoded_forms_are_replaced() {
        let secret = "p@ss w/rd&x=1";
        let r = redactor(&[secret]);
        for text in [
            "q=p%40ss%20w%2Frd%26x%3D1",
            "q=p%40ss+w%2Frd%26x%3D1",
            "q=p%40ss%20w%2frd%26x%3d1",
            "/users/p@ss%20w%2Frd&x=1/",
        ] {
            assert!(
                !r.redact_str(text).contains("ss"),
                "{text} → {}",
                r.redact_str(text)
            );
        }
    }

    #[test]
    fn base64_inside_a_longer_text_is_replaced_at_every_alignment() {
        let r = redactor(&[S]);
        for prefix in ["", "u", "us", "user:", "ada:", "a-longer-user:"] {
            let basic = STANDARD.encode(format!("{prefix}{S}"));
            let clean = r.redact_str(&basic);
            assert!(clean.contains(REDACTED), "{prefix}: {basic} → {clean}");
            // What is left is at most 2 characters at each end of the secret's part.
            let left = clean.replace(REDACTED, "");
            let prefix_chars = STANDARD_NO_PAD.encode(prefix).len();
            assert!(left.len() <= prefix_chars + 2 + 4, "{prefix}: {clean}");
        }
    }

    #[test]
    fn hex_forms_are_replaced() {
        let r = redactor(&[S]);
        let text = format!("{} {}", hex::encode(S), hex::encode_upper(S));
        assert_eq!(r.redact_str(&text), "[REDACTED] [REDACTED]");
    }

    #[test]
    fn a_trimmed_secret_is_found_too() {
        let r = redactor(&["  tok-123456\n"]);
        assert_eq!(r.redact_str("Bearer tok-123456"), "Bearer [REDACTED]");
    }

    #[test]
    fn the_longest_match_wins_and_redacting_twice_changes_nothing() {
        let r = redactor(&["secret", "secret-longer"]);
        assert_eq!(r.redact_str("a secret-longer b"), "a [REDACTED] b");
        let r = redactor(&["RED", "ACTED"]);
        let once = r.redact_str("RED ACTED").into_owned();
        assert_eq!(once, "[REDACTED] [REDACTED]");
        assert_eq!(r.redact_str(&once), once);
        assert!(!r.contains_secret(&once));
    }

    #[test]
    fn json_strings_keys_and_numbers_are_redacted() {
        let r = redactor(&[S, "987654321"]);
        let v = json!({
            "a": [S, { S: format!("x{S}"), "n": 987654321, "m": 5 }],
            "b": true,
        });
        assert_eq!(
            r.redact_json(&v),
            json!({
                "a": ["[REDACTED]", { "[REDACTED]": "x[REDACTED]", "n": "[REDACTED]", "m": 5 }],
                "b": true,
            })
        );
    }

    #[test]
    fn many_secrets_in_a_long_text() {
        let secrets: Vec<String> = (0..50).map(|i| format!("secret-number-{i:03}")).collect();
        let r: Redactor = secrets.iter().collect();
        let mut text = String::new();
        for (i, s) in secrets.iter().enumerate() {
            text.push_str(&"lorem ipsum ".repeat(100));
            if i % 2 == 0 {
                text.push_str(s);
            } else {
                text.push_str(&STANDARD.encode(format!("user:{s}")));
            }
        }
        let clean = r.redact_str(&text);
        assert!(!clean.contains("secret-number"));
        assert_eq!(clean.matches(REDACTED).count(), 50);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn forms(secret: &str, prefix: &str, suffix: &str) -> Vec<String> {
            let joined = format!("{prefix}{secret}{suffix}");
            vec![
                secret.to_string(),
                serde_json::to_string(secret).unwrap(),
                utf8_percent_encode(secret, COMPONENT).to_string(),
                utf8_percent_encode(secret, FORM)
                    .to_string()
                    .replace("%20", "+"),
                utf8_percent_encode(secret, PATH_SEGMENT).to_string(),
                STANDARD.encode(secret),
                URL_SAFE_NO_PAD.encode(secret),
                STANDARD.encode(&joined),
                URL_SAFE.encode(&joined),
                hex::encode(secret),
            ]
        }

        proptest! {
            #[test]
            fn no_form_of_a_secret_survives(
                secret in "[ -~]{6,40}",
                prefix in "[ -~]{0,12}",
                suffix in "[ -~]{0,12}",
                before in "[ -~]{0,30}",
                after in "[ -~]{0,30}",
            ) {
                let r = Redactor::new();
                r.add(&secret);
                for form in forms(&secret, &prefix, &suffix) {
                    let text = format!("{before}{form}{after}");
                    let clean = r.redact_str(&text);
                    prop_assert!(clean.contains(REDACTED), "{text} → {clean}");
                    // No 8 consecutive characters of what the secret contributes are left,
                    // and the raw value is gone.
                    prop_assert!(!clean.contains(secret.as_str()), "{text} → {clean}");
                }
                // Inside a base64 text, what is left of the secret's part is at most
                // 2 characters at each end.
                let joined = format!("{prefix}{secret}{suffix}");
                let b64 = STANDARD_NO_PAD.encode(&joined);
                let clean = r.redact_str(&b64);
                let kept = clean.replace(REDACTED, "");
                let outside = STANDARD_NO_PAD.encode(&prefix).len()
                    + STANDARD_NO_PAD.encode(&suffix).len();
                prop_assert!(kept.len() <= outside + 4, "{b64} → {clean}");
            }
        }
    }
}
