//! The operator's master key: when one is given (`--master-key-file`), every user key in the
//! key store is kept wrapped by it, so that the store's files alone open nothing.
//!
//! * The master key is 32 bytes, given as a file of 64 hexadecimal digits (made with, e.g.,
//!   `openssl rand -hex 32 > master.key`); it is never written into the store.
//! * A key document (`keys/category/id`, see [`super::seal`]) is then `m1:` followed by the
//!   base64 of a 24-byte random nonce, the document's text sealed with XChaCha20-Poly1305 under
//!   the master key (the document's name as associated data, so a wrapped key cannot be moved to
//!   another user), and the tag. A document without the prefix is a key in clear (a store made
//!   without a master key); the tombstone of a forgotten key (`""`) is never wrapped.
//! * The store remembers that it is wrapped: the document [`MARKER`] of the key store holds a
//!   wrapped check value. A node given no master key refuses a store that has one, and a node
//!   given another master key refuses it too, both at start ([`open`], before any request).
//! * The first time a store is opened with a master key, every key in clear is wrapped, in the
//!   transaction that writes the marker.
//!
//! What it protects against, and what not: docs/forgetting.md.

use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

use super::seal::KEYS;
use super::{EventStore, Result, StoreError, StoreRead, StoreWrite};

/// The prefix of a wrapped key document.
const WRAPPED: &str = "m1:";

/// The key store's document that says the store's keys are wrapped (a stream's key document
/// is named `category/id`: a name without `/` is never one).
pub const MARKER: &str = "master-key";

/// What the marker holds, wrapped.
const CHECK: &str = "cqrs master key check";

/// Bytes of an XChaCha20 nonce.
const NONCE: usize = 24;

/// The operator's master key.
#[derive(Clone)]
pub struct MasterKey {
    cipher: Arc<XChaCha20Poly1305>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// The master key of `bytes`.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self {
            cipher: Arc::new(XChaCha20Poly1305::new(Key::from_slice(&bytes))),
        }
    }

    /// Reads a master key file: 64 hexadecimal digits, surrounding white space allowed.
    ///
    /// # Errors
    /// The file cannot be read, or does not hold exactly 64 hexadecimal digits.
    pub fn from_file(path: &Path) -> std::result::Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("master key file {}: {e}", path.display()))?;
        Self::from_hex(text.trim()).map_err(|e| format!("master key file {}: {e}", path.display()))
    }

    /// A master key from its 64 hexadecimal digits.
    ///
    /// # Errors
    /// Anything else than 64 hexadecimal digits.
    pub fn from_hex(hex: &str) -> std::result::Result<Self, String> {
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "a master key is 64 hexadecimal digits (32 bytes; e.g. `openssl rand -hex 32`), \
                 not {} characters",
                hex.chars().count()
            ));
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex digits");
        }
        Ok(Self::new(bytes))
    }

    /// `text` (a key document named `name`) wrapped.
    pub fn wrap(&self, name: &str, text: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: text.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 seals a key document");
        let mut bytes = Vec::with_capacity(NONCE + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        let mut out = String::from(WRAPPED);
        B64.encode_string(&bytes, &mut out);
        out
    }

    /// The text of a wrapped document named `name`, or `None` if it does not open under this
    /// master key (another key, or damaged).
    fn open(&self, name: &str, wrapped: &str) -> Option<String> {
        let bytes = B64.decode(wrapped.strip_prefix(WRAPPED)?).ok()?;
        if bytes.len() < NONCE {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(NONCE);
        let clear = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: name.as_bytes(),
                },
            )
            .ok()?;
        String::from_utf8(clear).ok()
    }
}

/// Whether a key document is wrapped by a master key.
pub fn is_wrapped(document: &str) -> bool {
    document.starts_with(WRAPPED)
}

/// The text of the key document `name` as stored (`document`): opened if it is wrapped.
///
/// # Errors
/// A wrapped document and no master key, or one it does not open under.
pub fn unwrap(master: Option<&MasterKey>, name: &str, document: &str) -> Result<String> {
    if !is_wrapped(document) {
        return Ok(document.to_string());
    }
    let Some(master) = master else {
        return Err(StoreError::MasterKey(format!(
            "the key of {name} is wrapped by a master key, and none was given"
        )));
    };
    master.open(name, document).ok_or_else(|| {
        StoreError::MasterKey(format!(
            "the key of {name} does not open under the master key given"
        ))
    })
}

/// Checks that the master key given (if any) is the store's, and writes nothing: refuses a
/// store whose keys are wrapped when none or another one is given. Returns whether the store
/// still has to be wrapped (a master key given, and the store has none yet).
///
/// # Errors
/// [`StoreError::MasterKey`] as above; the store's own errors.
pub fn verify(store: &(impl StoreRead + ?Sized), master: Option<&MasterKey>) -> Result<bool> {
    let marker = store.document(KEYS, MARKER)?;
    match (marker, master) {
        (None, None) => Ok(false),
        (None, Some(_)) => Ok(true),
        (Some(_), None) => Err(StoreError::MasterKey(
            "this store's keys are wrapped by a master key: start with --master-key-file \
             (or CQRS_MASTER_KEY_FILE)"
                .into(),
        )),
        (Some(marker), Some(master)) => match master.open(MARKER, &marker) {
            Some(check) if check == CHECK => Ok(false),
            _ => Err(StoreError::MasterKey(
                "the master key given is not this store's (its keys do not open under it)".into(),
            )),
        },
    }
}

/// [`verify`], when a store is opened to be written; given a master key for a store that has
/// none yet, wraps every key in clear and writes the marker, in one transaction. Returns how
/// many keys it wrapped.
///
/// # Errors
/// As [`verify`]; the store's own errors.
pub fn open<S: EventStore>(store: &mut S, master: Option<&MasterKey>) -> Result<u64> {
    match (verify(store, master)?, master) {
        (false, _) | (true, None) => Ok(0),
        (true, Some(master)) => {
            let mut tx = store.begin()?;
            let mut wrapped = 0;
            let mut after: Option<String> = None;
            loop {
                let page = tx.documents(KEYS, after.as_deref(), 1000)?;
                let Some((last, _)) = page.last() else { break };
                after = Some(last.clone());
                for (name, document) in page {
                    if document.is_empty() || is_wrapped(&document) {
                        continue;
                    }
                    tx.put_document(KEYS, &name, Some(&master.wrap(&name, &document)))?;
                    wrapped += 1;
                }
            }
            tx.put_document(KEYS, MARKER, Some(&master.wrap(MARKER, CHECK)))?;
            tx.commit()?;
            Ok(wrapped)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn key(n: u8) -> MasterKey {
        MasterKey::new([n; 32])
    }

    #[test]
    fn a_wrapped_document_opens_under_its_master_key_and_name_only() {
        let wrapped = key(1).wrap("User/a", "c2VjcmV0");
        assert!(is_wrapped(&wrapped));
        assert!(!wrapped.contains("c2VjcmV0"));
        assert_eq!(
            unwrap(Some(&key(1)), "User/a", &wrapped).unwrap(),
            "c2VjcmV0"
        );
        for (master, name) in [(key(2), "User/a"), (key(1), "User/b")] {
            let e = unwrap(Some(&master), name, &wrapped).unwrap_err();
            assert!(matches!(e, StoreError::MasterKey(_)), "{e}");
        }
        let e = unwrap(None, "User/a", &wrapped).unwrap_err();
        assert!(e.to_string().contains("none was given"), "{e}");
        // A document in clear reads as it is, with or without a master key.
        assert_eq!(unwrap(Some(&key(1)), "User/a", "abc").unwrap(), "abc");
        assert_eq!(unwrap(None, "User/a", "").unwrap(), "");
        // Two wraps of the same text differ (a fresh nonce each).
        assert_ne!(key(1).wrap("User/a", "x"), key(1).wrap("User/a", "x"));
    }

    #[test]
    fn a_master_key_file_is_64_hex_digits() {
        assert!(MasterKey::from_hex(&"ab".repeat(32)).is_ok());
        for bad in [
            "",
            "abc",
            &"ab".repeat(31),
            &"zz".repeat(32),
            &"ab".repeat(33),
        ] {
            assert!(MasterKey::from_hex(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn opening_wraps_the_keys_in_clear_once_then_refuses_any_other_master_key() {
        let mut store = MemoryStore::new();
        {
            let mut tx = store.begin().unwrap();
            tx.put_document(KEYS, "User/a", Some("a-key")).unwrap();
            tx.put_document(KEYS, "User/b", Some("")).unwrap();
            tx.commit().unwrap();
        }
        assert_eq!(open(&mut store, None).unwrap(), 0);
        assert_eq!(open(&mut store, Some(&key(1))).unwrap(), 1);
        let a = store.document(KEYS, "User/a").unwrap().unwrap();
        assert!(is_wrapped(&a), "{a}");
        assert_eq!(unwrap(Some(&key(1)), "User/a", &a).unwrap(), "a-key");
        assert_eq!(store.document(KEYS, "User/b").unwrap().unwrap(), "");
        // Again with the same key: nothing to do; with another, or none: refused.
        assert_eq!(open(&mut store, Some(&key(1))).unwrap(), 0);
        for master in [Some(key(2)), None] {
            let e = open(&mut store, master.as_ref()).unwrap_err();
            assert!(matches!(e, StoreError::MasterKey(_)), "{e}");
        }
    }
}
