//! Sealed secrets: values a request needs later (its `secret` form fields, and the inputs of
//! completed actions that a rollback replays) stored encrypted, so that any replica can run
//! the request and a restart loses nothing.
//!
//! Envelope encryption with AES-256-GCM:
//! - each request has its own random **data key**, which seals the request's values; the
//!   associated data binds each sealed value to its request and name, so a value copied to
//!   another request or name does not open;
//! - the data key is stored **wrapped** (encrypted) by a **key-encryption key** (KEK) that
//!   lives outside the database, in the secret provider. A wrapped key names its KEK by
//!   fingerprint ([`Kek::id`]);
//! - rotation: the operator makes a new KEK current and keeps the old one as previous; data
//!   keys are re-wrapped under the current KEK ([`Keyring::rewrap`], run by
//!   `Orchestrator::rewrap_sealed`) while requests keep running, and the old KEK can be
//!   dropped once nothing is wrapped by it.

use std::fmt;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Length of a key (AES-256), in bytes.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// Why sealing or opening failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// A key-encryption key is not 32 bytes of base64 or hex.
    #[error("key-encryption key: {0}")]
    BadKey(String),
    /// The data key is wrapped by a KEK this keyring does not hold.
    #[error(
        "sealed with key-encryption key `{0}`, which this server does not hold (configure it as the current or a previous key)"
    )]
    UnknownKek(String),
    /// The ciphertext does not open with the key: altered, or sealed for another request or name.
    #[error("sealed value `{0}` does not open: altered, or not sealed for this request")]
    Corrupt(String),
}

/// A key-encryption key.
#[derive(Clone)]
pub struct Kek {
    id: String,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek").field("id", &self.id).finish()
    }
}

impl Kek {
    /// A KEK from 32 raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Kek {
        let digest = Sha256::digest(
            b"pao-kek-id\0"
                .iter()
                .chain(bytes.iter())
                .copied()
                .collect::<Vec<u8>>(),
        );
        Kek {
            id: format!("kek-{}", hex::encode(&digest[..8])),
            key: Zeroizing::new(bytes),
        }
    }

    /// A KEK from its text form: 32 bytes as base64 (standard or URL-safe, padded or not) or as
    /// 64 hex digits, surrounding whitespace ignored. `openssl rand -base64 32` makes one.
    pub fn parse(text: &str) -> Result<Kek, SealError> {
        let t = text.trim();
        let bytes: Zeroizing<Vec<u8>> = if t.len() == 2 * KEY_LEN
            && t.bytes().all(|b| b.is_ascii_hexdigit())
        {
            Zeroizing::new(hex::decode(t).map_err(|e| SealError::BadKey(e.to_string()))?)
        } else {
            let engines = [
                base64::engine::general_purpose::STANDARD,
                base64::engine::general_purpose::STANDARD_NO_PAD,
                base64::engine::general_purpose::URL_SAFE,
                base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ];
            let decoded = engines
                .iter()
                .find_map(|e| e.decode(t).ok())
                .ok_or_else(|| SealError::BadKey("neither base64 nor 64 hex digits".to_string()))?;
            Zeroizing::new(decoded)
        };
        let arr: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
            SealError::BadKey(format!("{} bytes; a key has {KEY_LEN}", bytes.len()))
        })?;
        Ok(Kek::from_bytes(arr))
    }

    /// A random KEK (for tests and for a process that keeps its sealed values to itself).
    pub fn generate() -> Kek {
        let key = Aes256Gcm::generate_key(OsRng);
        let mut bytes = [0u8; KEY_LEN];
        bytes.copy_from_slice(&key);
        Kek::from_bytes(bytes)
    }

    /// The key's fingerprint: stored next to every data key it wraps. It reveals nothing of
    /// the key.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(self.key.as_slice()))
    }
}

/// A data key as stored: wrapped by the KEK `kek_id`.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The fingerprint of the KEK that wraps it.
    pub kek_id: String,
    /// Nonce and ciphertext.
    pub wrapped: Vec<u8>,
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("kek_id", &self.kek_id)
            .finish_non_exhaustive()
    }
}

/// A request's data key, in memory only.
#[derive(Clone)]
pub struct DataKey {
    request_id: String,
    key: Zeroizing<[u8; KEY_LEN]>,
    wrapped: WrappedKey,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("request_id", &self.request_id)
            .field("kek_id", &self.wrapped.kek_id)
            .finish_non_exhaustive()
    }
}

fn seal_with(cipher: &Aes256Gcm, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let mut out = nonce.to_vec();
    // Encryption with a valid key and nonce cannot fail for inputs below GCM's 64 GiB limit.
    let ct = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .unwrap_or_default();
    out.extend_from_slice(&ct);
    out
}

fn open_with(cipher: &Aes256Gcm, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
}

fn key_aad(request_id: &str) -> Vec<u8> {
    [b"pao-data-key\0".as_slice(), request_id.as_bytes()].concat()
}

fn value_aad(request_id: &str, name: &str) -> Vec<u8> {
    [
        b"pao-sealed\0".as_slice(),
        request_id.as_bytes(),
        b"\0",
        name.as_bytes(),
    ]
    .concat()
}

impl DataKey {
    /// The key as stored.
    pub fn wrapped(&self) -> &WrappedKey {
        &self.wrapped
    }

    /// The request it belongs to.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(self.key.as_slice()))
    }

    /// Seals `plaintext` as the value `name` of this request.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> Vec<u8> {
        seal_with(
            &self.cipher(),
            &value_aad(&self.request_id, name),
            plaintext,
        )
    }

    /// Opens the value `name` of this request.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        open_with(&self.cipher(), &value_aad(&self.request_id, name), sealed)
            .map(Zeroizing::new)
            .ok_or_else(|| SealError::Corrupt(name.to_string()))
    }
}

/// The KEKs a server holds: the current one, which wraps new data keys, and previous ones,
/// which still open data keys wrapped before a rotation.
#[derive(Clone, Debug)]
pub struct Keyring {
    current: Kek,
    previous: Vec<Kek>,
}

impl Keyring {
    /// A keyring with one key.
    pub fn new(current: Kek) -> Keyring {
        Keyring {
            current,
            previous: Vec::new(),
        }
    }

    /// Adds a previous KEK (still opens what it wrapped; wraps nothing new).
    pub fn with_previous(mut self, kek: Kek) -> Keyring {
        if kek.id != self.current.id && !self.previous.iter().any(|k| k.id == kek.id) {
            self.previous.push(kek);
        }
        self
    }

    /// A keyring with a random key, for a process that keeps its sealed values to itself.
    pub fn ephemeral() -> Keyring {
        Keyring::new(Kek::generate())
    }

    /// The fingerprint of the current KEK.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// The fingerprints of every KEK held, current first.
    pub fn ids(&self) -> Vec<&str> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(|k| k.id.as_str())
            .collect()
    }

    fn kek(&self, id: &str) -> Option<&Kek> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
    }

    /// A new random data key for `request_id`, wrapped by the current KEK.
    pub fn new_data_key(&self, request_id: &str) -> DataKey {
        let fresh = Aes256Gcm::generate_key(OsRng);
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&fresh);
        let wrapped = WrappedKey {
            kek_id: self.current.id.clone(),
            wrapped: seal_with(&self.current.cipher(), &key_aad(request_id), key.as_slice()),
        };
        DataKey {
            request_id: request_id.to_string(),
            key,
            wrapped,
        }
    }

    /// The data key of `request_id`, unwrapped.
    pub fn unwrap_key(&self, request_id: &str, wrapped: &WrappedKey) -> Result<DataKey, SealError> {
        let kek = self
            .kek(&wrapped.kek_id)
            .ok_or_else(|| SealError::UnknownKek(wrapped.kek_id.clone()))?;
        let plain = Zeroizing::new(
            open_with(&kek.cipher(), &key_aad(request_id), &wrapped.wrapped)
                .ok_or_else(|| SealError::Corrupt("data key".to_string()))?,
        );
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if plain.len() != KEY_LEN {
            return Err(SealError::Corrupt("data key".to_string()));
        }
        key.copy_from_slice(&plain);
        Ok(DataKey {
            request_id: request_id.to_string(),
            key,
            wrapped: wrapped.clone(),
        })
    }

    /// The data key of `request_id` wrapped by the current KEK, or `None` when it already is.
    pub fn rewrap(
        &self,
        request_id: &str,
        wrapped: &WrappedKey,
    ) -> Result<Option<WrappedKey>, SealError> {
        if wrapped.kek_id == self.current.id {
            return Ok(None);
        }
        let key = self.unwrap_key(request_id, wrapped)?;
        Ok(Some(WrappedKey {
            kek_id: self.current.id.clone(),
            wrapped: seal_with(
                &self.current.cipher(),
                &key_aad(request_id),
                key.key.as_slice(),
            ),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_opens_only_for_its_request_and_name() {
        let ring = Keyring::ephemeral();
        let dk = ring.new_data_key("r1");
        let sealed = dk.seal("field:password", b"hunter2-xyz");
        assert!(!sealed.windows(b"hunter2".len()).any(|w| w == b"hunter2"));
        let again = ring.unwrap_key("r1", dk.wrapped()).unwrap();
        assert_eq!(
            again.open("field:password", &sealed).unwrap().as_slice(),
            b"hunter2-xyz"
        );
        assert!(again.open("field:other", &sealed).is_err());
        // The data key of r1 does not unwrap as r2's.
        assert!(ring.unwrap_key("r2", dk.wrapped()).is_err());
        // A flipped bit is refused.
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(again.open("field:password", &bad).is_err());
    }

    #[test]
    fn rotation_rewraps_under_the_new_key_and_the_old_key_can_go() {
        let old = Kek::generate();
        let new = Kek::generate();
        let before = Keyring::new(old.clone());
        let dk = before.new_data_key("r1");
        let sealed = dk.seal("v", b"secret value");
        let during = Keyring::new(new.clone()).with_previous(old.clone());
        // Still opens while the old key is previous.
        assert!(during.unwrap_key("r1", dk.wrapped()).is_ok());
        let rewrapped = during.rewrap("r1", dk.wrapped()).unwrap().unwrap();
        assert_eq!(rewrapped.kek_id, new.id());
        assert_eq!(during.rewrap("r1", &rewrapped).unwrap(), None);
        let after = Keyring::new(new);
        let k = after.unwrap_key("r1", &rewrapped).unwrap();
        assert_eq!(k.open("v", &sealed).unwrap().as_slice(), b"secret value");
        assert_eq!(
            after.unwrap_key("r1", dk.wrapped()).unwrap_err(),
            SealError::UnknownKek(old.id().to_string())
        );
    }

    #[test]
    fn keys_parse_from_base64_or_hex_and_bad_ones_are_explained() {
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let hexed = hex::encode([7u8; 32]);
        assert_eq!(
            Kek::parse(&b64).unwrap().id(),
            Kek::parse(&hexed).unwrap().id()
        );
        assert_eq!(
            Kek::parse(&format!("{b64}\n")).unwrap().id(),
            Kek::from_bytes([7u8; 32]).id()
        );
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        assert!(
            Kek::parse(&short)
                .unwrap_err()
                .to_string()
                .contains("16 bytes")
        );
        assert!(Kek::parse("not a key!").is_err());
        // Debug shows the fingerprint only.
        let k = Kek::from_bytes([9u8; 32]);
        assert!(!format!("{k:?}").contains("9, 9"));
    }
}
