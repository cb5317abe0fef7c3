//! Personal data sealed per stream, so that it can be forgotten (crypto-shredding).
//!
//! An aggregate whose streams hold personal data declares it ([`crate::domain::DomainEvent::FORGOTTEN`]:
//! the event type that forgets a stream); the registry gathers the declarations into a
//! [`Personal`]. [`Sealed`] wraps a store (and each of its transactions) and, for the streams of
//! those categories only:
//!
//! * gives each stream a key of its own (256 random bits from the operating system), kept in the
//!   store's key store: the documents of collection [`KEYS`], keyed `category/id`, apart from the
//!   events, written in the transaction of the stream's first sealed event;
//! * seals every event's data and every snapshot's state under that key with the stream's
//!   cipher, which its key document names ([`KeyFormat`]): AES-256-GCM for every key made since
//!   it came in (a random 12-byte nonce each), XChaCha20-Poly1305 for the keys made before (a
//!   24-byte nonce each: those streams keep it for ever, so one key serves one algorithm); the
//!   event type and version, or `snapshot` and the version, as associated data, so a ciphertext
//!   cannot be moved to another place of the stream; stored as a JSON string:
//!   `"base64(nonce ‖ ciphertext ‖ tag)"`;
//! * destroys the key (its document becomes the empty string, a tombstone) in the transaction
//!   that appends the forgetting event, whose own data is kept in clear (it holds nothing
//!   personal);
//! * opens everything on the way out. Once the key is destroyed, every event of the stream but
//!   the forgetting one reads with data `null`, and its snapshots read as absent.
//!
//! Events stored in clear before sealing existed (no key document) read as stored; the first
//! event appended to such a stream gives it a key, and forgetting it hides its old events in every
//! answer, but cannot erase their clear bytes from the log (docs/forgetting.md).
//!
//! Everything else (documents, checkpoints, positions) is the inner store's, forwarded.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;

use aes_gcm::aead::consts::U12;
use aes_gcm::aes::Aes256Enc;
use aes_gcm::AesGcm;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::generic_array::typenum::Unsigned;
use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use super::*;

mod b64;

/// The key store's collection: one document per sealed stream, `category/id` to its key (see
/// [`KeyFormat`]), or to `""` once the key was destroyed.
pub const KEYS: &str = "keys";

/// What a key document says before the base64 of an AES-256-GCM key. A key document written
/// before AES-256-GCM came in is the base64 of its 32 bytes alone (44 characters of `A-Z a-z
/// 0-9 + / =`): it never holds a `:`, so the two can never be taken for each other.
pub const AES_256_GCM: &str = "aes-256-gcm:";

/// A collection of documents (a read model's) that hold personal data: each document belongs
/// to one stream of `category`, named by the document's key, and is sealed under that stream's
/// key, like its events.
#[derive(Clone, Copy, Debug)]
pub struct PersonalDocuments {
    pub collection: &'static str,
    pub category: &'static str,
    /// The id of the stream a document belongs to, from the document's key (`None`: a key of
    /// no stream, refused as damaged).
    pub owner: fn(&str) -> Option<Cow<'_, str>>,
}

impl PersonalDocuments {
    /// An [`owner`](Self::owner) for documents keyed by their stream's id itself.
    pub fn keyed_by_id(key: &str) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(key))
    }

    /// The stream a document of this collection belongs to.
    fn stream(&self, key: &str) -> Result<StreamId> {
        match (self.owner)(key) {
            Some(id) => Ok(StreamId::new(self.category, id.into_owned())),
            None => Err(StoreError::Corrupt(format!(
                "document {key:?} of {} names no {} stream",
                self.collection, self.category
            ))),
        }
    }
}

/// The categories whose streams hold personal data, each with the event type that forgets one.
#[derive(Clone, Debug, Default)]
pub struct Personal {
    kinds: Vec<(&'static str, &'static str)>,
    /// The read models' collections that hold personal data.
    documents: Vec<PersonalDocuments>,
    /// The operator's master key, which wraps every key in the key store (super::master).
    master: Option<super::MasterKey>,
}

impl Personal {
    pub fn new() -> Self {
        Self::default()
    }

    /// Streams of `category` are sealed; an event of type `forgotten` destroys a stream's key.
    pub fn add(&mut self, category: &'static str, forgotten: &'static str) {
        assert!(
            self.forgotten(category).is_none(),
            "category '{category}' declared personal twice"
        );
        self.kinds.push((category, forgotten));
    }

    /// The documents of `documents.collection` are sealed under their streams' keys.
    pub fn add_documents(&mut self, documents: PersonalDocuments) {
        assert!(
            self.documents_of(documents.collection).is_none(),
            "collection '{}' declared personal twice",
            documents.collection
        );
        self.documents.push(documents);
    }

    /// How the documents of `collection` are sealed, if they hold personal data.
    fn documents_of(&self, collection: &str) -> Option<&PersonalDocuments> {
        self.documents.iter().find(|d| d.collection == collection)
    }

    /// Keys are kept wrapped by `master` (see [`super::master`]).
    pub fn set_master_key(&mut self, master: super::MasterKey) {
        self.master = Some(master);
    }

    /// The operator's master key, if one was given.
    pub fn master_key(&self) -> Option<&super::MasterKey> {
        self.master.as_ref()
    }

    /// The forgetting event type of `category`, if its streams are sealed.
    pub fn forgotten(&self, category: &str) -> Option<&'static str> {
        self.kinds
            .iter()
            .find(|(c, _)| *c == category)
            .map(|&(_, f)| f)
    }
}

/// A stream's key, as the key store has it.
#[doc(hidden)]
pub enum KeyState {
    /// No key: the stream has nothing sealed (events written before sealing, or none yet).
    None,
    Live(Arc<Cipher>, StreamKey),
    /// Forgotten.
    Destroyed,
}

/// A stream's key, as bytes.
type RawKey = [u8; 32];

/// Which cipher a stream's key seals with: its key document says it, and every sealed text of
/// the stream is in it.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    /// Keys made before AES-256-GCM came in (their document: the key's base64):
    /// XChaCha20-Poly1305, a 24-byte nonce per text. Still read, and still sealed with, for
    /// the streams that have such a key.
    XChaCha20Poly1305,
    /// Every key made since (their document: [`AES_256_GCM`], then the key's base64):
    /// AES-256-GCM, a random 12-byte nonce per text.
    Aes256Gcm,
}

/// A stream's key and its format.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct StreamKey {
    format: KeyFormat,
    key: RawKey,
}

impl StreamKey {
    /// A new key (256 bits from the operating system), for AES-256-GCM.
    fn generate() -> Self {
        let mut key = RawKey::default();
        OsRng.fill_bytes(&mut key);
        Self {
            format: KeyFormat::Aes256Gcm,
            key,
        }
    }

    /// The key document's text.
    fn text(&self) -> String {
        match self.format {
            KeyFormat::XChaCha20Poly1305 => B64.encode(self.key),
            KeyFormat::Aes256Gcm => {
                let mut t = String::with_capacity(AES_256_GCM.len() + 44);
                t.push_str(AES_256_GCM);
                B64.encode_string(self.key, &mut t);
                t
            }
        }
    }

    /// A key document's key (not the tombstone), or `None` if it is damaged.
    fn parse(text: &str) -> Option<Self> {
        let (format, b64) = match text.strip_prefix(AES_256_GCM) {
            Some(b64) => (KeyFormat::Aes256Gcm, b64),
            None => (KeyFormat::XChaCha20Poly1305, text),
        };
        let key = RawKey::try_from(B64.decode(b64.as_bytes()).ok()?).ok()?;
        Some(Self { format, key })
    }
}

/// AES-256-GCM with a 12-byte nonce, on the encrypting half of the AES key schedule (GCM never
/// decrypts a block): the same cipher as `aes_gcm::Aes256Gcm`, made ready in fewer steps.
type Aes256Gcm = AesGcm<Aes256Enc, U12>;

/// A key made ready to seal and open (an AES key schedule, or the XChaCha key).
#[doc(hidden)]
pub enum Cipher {
    XChaCha20Poly1305(Box<XChaCha20Poly1305>),
    Aes256Gcm(Box<Aes256Gcm>),
}

impl Cipher {
    fn new(key: &StreamKey) -> Self {
        match key.format {
            KeyFormat::XChaCha20Poly1305 => {
                Self::XChaCha20Poly1305(Box::new(XChaCha20Poly1305::new(&key.key.into())))
            }
            KeyFormat::Aes256Gcm => Self::Aes256Gcm(Box::new(Aes256Gcm::new(&key.key.into()))),
        }
    }
}

thread_local! {
    /// The cipher made ready last on this thread, and its key: a command seals its event and
    /// its user's documents under one key, which is made ready (an AES key schedule) once.
    static READY: std::cell::RefCell<Option<(StreamKey, Arc<Cipher>)>> =
        const { std::cell::RefCell::new(None) };
}

fn live(key: StreamKey) -> KeyState {
    READY.with_borrow_mut(|ready| match ready {
        Some((k, cipher)) if k.format == key.format && k.key == key.key => {
            KeyState::Live(cipher.clone(), key)
        }
        _ => {
            let cipher = Arc::new(Cipher::new(&key));
            *ready = Some((key, cipher.clone()));
            KeyState::Live(cipher, key)
        }
    })
}

/// Drops the ready cipher of this thread (a key was just destroyed: none is kept after it).
fn forget_ready() {
    READY.with_borrow_mut(|ready| *ready = None);
}

/// Most keys kept in memory; past it the cache starts again empty (a key is then read from
/// the store on its stream's next append).
const CACHE_CAPACITY: usize = 100_000;

type Hasher = foldhash::fast::RandomState;

/// The live keys this process wrote or read while appending, so that an append to a known
/// stream reads nothing from the key store; each with the stream's version after the last
/// append this process made with it.
///
/// On a store only this node writes, every key here is live (only this node destroys keys, and
/// its commits update the cache), for reads and appends alike. On a shared store another node
/// may destroy a key at any time, so reads never use the cache, and an append uses a cached key
/// only when it expects the stream at exactly the cached version: a key is destroyed only in
/// the transaction that appends the stream's `UserForgotten`, so a stream still at that version
/// has not been forgotten since; if it moved, the append fails its version check (under the
/// store's write lock) and nothing sealed with the stale key is stored.
#[derive(Default)]
pub struct KeyCache {
    keys: HashMap<StreamId, (StreamKey, Version), Hasher>,
}

impl KeyCache {
    fn get(&self, stream: &StreamId) -> Option<KeyState> {
        self.keys.get(stream).map(|(k, _)| live(*k))
    }
}

/// A transaction's view of the key cache: the keys it added and destroyed (`None`), applied to
/// the cache only when it commits.
pub struct TxKeys<'a> {
    cache: &'a mut KeyCache,
    /// The store is shared: see [`KeyCache`].
    shared: bool,
    changed: HashMap<StreamId, Option<(StreamKey, Version)>, Hasher>,
}

impl TxKeys<'_> {
    fn get(&self, stream: &StreamId) -> Option<KeyState> {
        match self.changed.get(stream) {
            Some(Some((k, _))) => Some(live(*k)),
            Some(None) => Some(KeyState::Destroyed),
            None if self.shared => None,
            None => self.cache.get(stream),
        }
    }

    /// The key an append expecting `expected` may seal with, if known (see [`KeyCache`]).
    fn for_append(&self, stream: &StreamId, expected: ExpectedVersion) -> Option<KeyState> {
        if !self.shared || self.changed.contains_key(stream) {
            return self.get(stream);
        }
        match (self.cache.keys.get(stream), expected) {
            (Some((k, at)), ExpectedVersion::Exact(v)) if *at == v => Some(live(*k)),
            _ => None,
        }
    }
}

/// Where a store or a transaction finds keys before it asks the key store.
pub trait Keys {
    /// The cached state of a stream's key, for a read (`shared`: of a shared store).
    #[doc(hidden)]
    fn cached(&self, stream: &StreamId, shared: bool) -> Option<KeyState>;
}

impl Keys for KeyCache {
    fn cached(&self, stream: &StreamId, shared: bool) -> Option<KeyState> {
        match shared {
            true => None,
            false => self.get(stream),
        }
    }
}

impl Keys for TxKeys<'_> {
    fn cached(&self, stream: &StreamId, _shared: bool) -> Option<KeyState> {
        self.get(stream)
    }
}

/// The key store's document key of a stream.
pub fn key_name(stream: &StreamId) -> String {
    let mut k = String::with_capacity(stream.category.len() + 1 + stream.id.len());
    k.push_str(&stream.category);
    k.push('/');
    k.push_str(&stream.id);
    k
}

fn key_state(
    store: &(impl StoreRead + ?Sized),
    personal: &Personal,
    stream: &StreamId,
) -> Result<KeyState> {
    let name = key_name(stream);
    let document = store.document(KEYS, &name)?;
    read_key(personal, stream, &name, document)
}

/// A stream's key from its key document (`name`, as the key store has it).
fn read_key(
    personal: &Personal,
    stream: &StreamId,
    name: &str,
    document: Option<String>,
) -> Result<KeyState> {
    Ok(match document {
        None => KeyState::None,
        Some(v) if v.is_empty() => KeyState::Destroyed,
        Some(v) => {
            let v = super::master::unwrap(personal.master_key(), name, &v)?;
            let Some(key) = StreamKey::parse(&v) else {
                return Err(StoreError::Corrupt(format!(
                    "the key of {}/{} is damaged",
                    stream.category, stream.id
                )));
            };
            live(key)
        }
    })
}

/// Whether stored data is sealed (a JSON string; clear data is a JSON object or `null`).
fn is_sealed(data: &str) -> bool {
    data.starts_with('"')
}

/// The associated data of a sealed text: what it is (an event type, or `snapshot`) and the
/// version it belongs to. Built on the stack for names of up to 119 bytes.
fn with_aad<T>(what: &str, version: Version, f: impl FnOnce(&[u8]) -> T) -> T {
    let n = what.len();
    if n <= 119 {
        let mut a = [0u8; 128];
        a[..n].copy_from_slice(what.as_bytes());
        a[n + 1..n + 9].copy_from_slice(&version.to_be_bytes());
        f(&a[..n + 9])
    } else {
        let mut a = Vec::with_capacity(n + 9);
        a.extend_from_slice(what.as_bytes());
        a.push(0);
        a.extend_from_slice(&version.to_be_bytes());
        f(&a)
    }
}

/// A fresh XChaCha20 nonce (for the streams whose key is of that format): 16 bytes drawn from
/// the operating system once per process, then a counter of the nonces this process made.
/// Unique under any key: two processes collide only if they draw the same 128 random bits.
fn xnonce() -> XNonce {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<[u8; 16]> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let n = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        n[..16].try_into().expect("24 bytes")
    });
    let mut nonce = XNonce::default();
    nonce[..16].copy_from_slice(prefix);
    nonce[16..].copy_from_slice(&COUNT.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    nonce
}

/// AES-256-GCM nonces drawn from the operating system in one call.
const POOL: usize = 256;

/// A fresh AES-256-GCM nonce: 12 bytes from the operating system (drawn for 256 nonces at a
/// time, a getrandom call per nonce cost about 5% of the node's time), each used once. A
/// 96-bit nonce is too short for a counter behind a random prefix: nodes sharing a store (and
/// so its keys) and restarts would each need a prefix of their own. Drawn at random, every
/// nonce is independent of every other, in any process on any node, so under one key that seals
/// `n` texts two of them share a nonce with probability at most `n² / 2⁹⁷` (docs/forgetting.md).
fn aes_nonce() -> aes_gcm::Nonce<<Aes256Gcm as AeadCore>::NonceSize> {
    use std::cell::RefCell;
    thread_local! {
        static NONCES: RefCell<(usize, Box<[u8; 12 * POOL]>)> =
            RefCell::new((POOL, Box::new([0; 12 * POOL])));
    }
    NONCES.with_borrow_mut(|(next, pool)| {
        if *next == POOL {
            OsRng.fill_bytes(&mut pool[..]);
            *next = 0;
        }
        let at = *next * 12;
        *next += 1;
        aes_gcm::Nonce::clone_from_slice(&pool[at..at + 12])
    })
}

fn seal(cipher: &Cipher, what: &str, version: Version, plain: &str) -> String {
    match cipher {
        Cipher::Aes256Gcm(c) => seal_with(&**c, &aes_nonce(), what, version, plain),
        Cipher::XChaCha20Poly1305(c) => seal_with(&**c, &xnonce(), what, version, plain),
    }
}

fn seal_with<A: AeadInPlace>(
    aead: &A,
    nonce: &chacha20poly1305::aead::Nonce<A>,
    what: &str,
    version: Version,
    plain: &str,
) -> String {
    let n = nonce.len();
    let tag_len = A::TagSize::USIZE;
    // One buffer: nonce, then the text sealed in place, then the tag.
    let mut bytes = Vec::with_capacity(n + plain.len() + tag_len);
    bytes.extend_from_slice(nonce);
    bytes.extend_from_slice(plain.as_bytes());
    let tag = with_aad(what, version, |aad| {
        aead.encrypt_in_place_detached(nonce, aad, &mut bytes[n..])
    })
    .expect("the AEAD seals any message of this size");
    bytes.extend_from_slice(&tag);
    // The quotes and the base64: one allocation.
    let mut out = String::with_capacity(2 + bytes.len().div_ceil(3) * 4);
    out.push('"');
    b64::encode_into(&bytes, &mut out);
    out.push('"');
    out
}

/// The clear text of sealed data, or `None` if it does not open (damaged, or another key).
fn open(cipher: &Cipher, what: &str, version: Version, data: &str) -> Option<String> {
    match cipher {
        Cipher::Aes256Gcm(c) => open_with(&**c, what, version, data),
        Cipher::XChaCha20Poly1305(c) => open_with(&**c, what, version, data),
    }
}

fn open_with<A: AeadInPlace>(aead: &A, what: &str, version: Version, data: &str) -> Option<String> {
    let n = A::NonceSize::USIZE;
    let tag_len = A::TagSize::USIZE;
    let inner = data.strip_prefix('"')?.strip_suffix('"')?;
    let mut bytes = b64::decode(inner.as_bytes())?;
    if bytes.len() < n + tag_len {
        return None;
    }
    let tag_at = bytes.len() - tag_len;
    let tag = chacha20poly1305::aead::Tag::<A>::clone_from_slice(&bytes[tag_at..]);
    let nonce = chacha20poly1305::aead::Nonce::<A>::clone_from_slice(&bytes[..n]);
    with_aad(what, version, |aad| {
        aead.decrypt_in_place_detached(&nonce, aad, &mut bytes[n..tag_at], &tag)
    })
    .ok()?;
    bytes.truncate(tag_at);
    bytes.drain(..n);
    String::from_utf8(bytes).ok()
}

/// An event's data as it reads: opened, `null` once forgotten, or as stored.
fn open_event<'d>(
    state: &KeyState,
    forgotten: &str,
    stream: &StreamId,
    event_type: &str,
    version: Version,
    data: &'d str,
) -> Result<Cow<'d, str>> {
    match state {
        KeyState::Destroyed if event_type != forgotten => Ok(Cow::Borrowed("null")),
        KeyState::Live(cipher, _) if is_sealed(data) => open(cipher, event_type, version, data)
            .map(Cow::Owned)
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "event {version} of {}/{} ({event_type}) does not open under its key",
                    stream.category, stream.id
                ))
            }),
        KeyState::None if is_sealed(data) => Err(StoreError::Corrupt(format!(
            "event {version} of {}/{} ({event_type}) is sealed, but its stream has no key",
            stream.category, stream.id
        ))),
        _ => Ok(Cow::Borrowed(data)),
    }
}

/// What a sealed document's associated data names: its collection and key (a NUL between,
/// which no event type holds, so that no document's text opens as an event's).
fn document_aad(collection: &str, key: &str) -> String {
    let mut what = String::with_capacity(collection.len() + 1 + key.len());
    what.push_str(collection);
    what.push('\0');
    what.push_str(key);
    what
}

/// A personal document as it reads: opened, absent once its stream was forgotten, or as
/// stored (clear, written before documents were sealed).
fn open_document(
    state: &KeyState,
    stream: &StreamId,
    collection: &str,
    key: &str,
    value: String,
) -> Result<Option<String>> {
    if !is_sealed(&value) {
        return Ok(Some(value));
    }
    match state {
        KeyState::Live(cipher, _) => open(cipher, &document_aad(collection, key), 0, &value)
            .map(Some)
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "document {key:?} of {collection} does not open under the key of {}/{}",
                    stream.category, stream.id
                ))
            }),
        KeyState::Destroyed => Ok(None),
        KeyState::None => Err(StoreError::Corrupt(format!(
            "document {key:?} of {collection} is sealed, but {}/{} has no key",
            stream.category, stream.id
        ))),
    }
}

/// A store (or a transaction) whose personal streams are sealed: see the module docs.
pub struct Sealed<S, P = Arc<Personal>, K = KeyCache> {
    inner: S,
    personal: P,
    keys: K,
}

impl<S> Sealed<S> {
    pub fn new(inner: S, personal: Arc<Personal>) -> Self {
        Self {
            inner,
            personal,
            keys: KeyCache::default(),
        }
    }
}

impl<S: StoreRead, P: Deref<Target = Personal>, K: Keys> Sealed<S, P, K> {
    /// A stream's key: from the cache, else from the key store.
    fn key(&self, stream: &StreamId) -> Result<KeyState> {
        match self.keys.cached(stream, self.inner.shared()) {
            Some(state) => Ok(state),
            None => key_state(&self.inner, &self.personal, stream),
        }
    }
}

impl<S: StoreRead, P: Deref<Target = Personal>, K: Keys> Sealed<S, P, K> {
    /// The stream a document of a personal collection belongs to (`None`: not personal).
    fn owner(&self, collection: &str, key: &str) -> Result<Option<StreamId>> {
        self.personal
            .documents_of(collection)
            .map(|documents| documents.stream(key))
            .transpose()
    }

    /// Documents of a personal collection, opened; those of forgotten streams left out.
    fn open_documents(
        &self,
        collection: &str,
        documents: Vec<(String, String)>,
    ) -> Result<Vec<(String, String)>> {
        let Some(personal) = self.personal.documents_of(collection) else {
            return Ok(documents);
        };
        let owners = documents
            .iter()
            .map(|(key, _)| personal.stream(key))
            .collect::<Result<Vec<StreamId>>>()?;
        // Each stream's key once (a user's filed documents come together), those not kept in
        // memory read together: one round trip on a server.
        let mut streams: Vec<&StreamId> = owners.iter().collect();
        streams.dedup();
        let states = self.keys_of(&streams)?;
        let mut opened = Vec::with_capacity(documents.len());
        let mut at = 0;
        for ((key, value), stream) in documents.into_iter().zip(&owners) {
            while streams[at] != stream {
                at += 1;
            }
            if let Some(value) = open_document(&states[at], stream, collection, &key, value)? {
                opened.push((key, value));
            }
        }
        Ok(opened)
    }

    /// The keys that open documents of `streams` (those the cache lacks read together).
    ///
    /// Unlike an event, a document never outlives its stream's key: the transaction that
    /// destroys the key deletes the stream's documents, and a stream's key never changes. So a
    /// document that a read finds belongs to a stream not forgotten as of that read, and a key
    /// kept in memory for it is its key, even on a store other nodes write to (where events are
    /// never opened with a kept key: see [`KeyCache`]).
    fn keys_of(&self, streams: &[&StreamId]) -> Result<Vec<KeyState>> {
        let mut states: Vec<Option<KeyState>> =
            streams.iter().map(|s| self.keys.cached(s, false)).collect();
        let missing: Vec<(usize, String)> = states
            .iter()
            .enumerate()
            .filter(|(_, state)| state.is_none())
            .map(|(i, _)| (i, key_name(streams[i])))
            .collect();
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|(_, n)| n.as_str()).collect();
            let documents = self.inner.documents_by_key(KEYS, &names)?;
            for ((i, name), document) in missing.iter().zip(documents) {
                states[*i] = Some(read_key(&self.personal, streams[*i], name, document)?);
            }
        }
        Ok(states
            .into_iter()
            .map(|state| state.expect("every key found"))
            .collect())
    }
}

impl<S, P, K> Sealed<S, P, K> {
    /// The store itself: personal data as stored (sealed).
    pub fn inner(&self) -> &S {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: StoreRead, P: Deref<Target = Personal>, K: Keys> StoreRead for Sealed<S, P, K> {
    fn shared(&self) -> bool {
        self.inner.shared()
    }

    fn stream_version(&self, stream: &StreamId) -> Result<Version> {
        self.inner.stream_version(stream)
    }

    fn visit_stream(
        &self,
        stream: &StreamId,
        after: Version,
        upto: Upto,
        visit: &mut dyn FnMut(EventView<'_>) -> Result<()>,
    ) -> Result<()> {
        let Some(forgotten) = self.personal.forgotten(&stream.category) else {
            return self.inner.visit_stream(stream, after, upto, visit);
        };
        let state = self.key(stream)?;
        self.inner.visit_stream(stream, after, upto, &mut |e| {
            let data = open_event(&state, forgotten, stream, e.event_type, e.version, e.data)?;
            visit(EventView { data: &data, ..e })
        })
    }

    fn read_all(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>> {
        let mut events = self.inner.read_all(after, limit)?;
        let mut states: HashMap<StreamId, KeyState> = HashMap::new();
        for e in &mut events {
            let Some(forgotten) = self.personal.forgotten(&e.stream.category) else {
                continue;
            };
            if !states.contains_key(&e.stream) {
                states.insert(e.stream.clone(), self.key(&e.stream)?);
            }
            let state = &states[&e.stream];
            let opened = match open_event(
                state,
                forgotten,
                &e.stream,
                &e.event_type,
                e.version,
                &e.data,
            )? {
                Cow::Owned(data) => Some(data),
                Cow::Borrowed(data) if !std::ptr::eq(data, e.data.as_str()) => {
                    Some(data.to_string())
                }
                Cow::Borrowed(_) => None,
            };
            if let Some(data) = opened {
                e.data = data;
            }
        }
        Ok(events)
    }

    fn head(&self) -> Result<Position> {
        self.inner.head()
    }

    /// A snapshot that does not open (forgotten, damaged) reads as absent: snapshots are derived.
    fn snapshot(&self, stream: &StreamId, upto: Upto) -> Result<Option<Snapshot>> {
        if self.personal.forgotten(&stream.category).is_none() {
            return self.inner.snapshot(stream, upto);
        }
        let Some(mut snapshot) = self.inner.snapshot(stream, upto)? else {
            return Ok(None);
        };
        Ok(match self.key(stream)? {
            KeyState::Live(cipher, _) if is_sealed(&snapshot.state) => {
                open(&cipher, "snapshot", snapshot.version, &snapshot.state).map(|state| {
                    snapshot.state = state;
                    snapshot
                })
            }
            KeyState::None if !is_sealed(&snapshot.state) => Some(snapshot),
            _ => None,
        })
    }

    /// A personal document opens under its stream's key; once the stream is forgotten it
    /// reads as absent.
    fn document(&self, collection: &str, key: &str) -> Result<Option<String>> {
        let Some(value) = self.inner.document(collection, key)? else {
            return Ok(None);
        };
        match self.owner(collection, key)? {
            None => Ok(Some(value)),
            Some(stream) => {
                let state = self.keys_of(&[&stream])?.pop().expect("one key");
                open_document(&state, &stream, collection, key, value)
            }
        }
    }

    fn documents(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        let documents = self.inner.documents(collection, after, limit)?;
        self.open_documents(collection, documents)
    }

    fn document_range(
        &self,
        collection: &str,
        from: std::ops::Bound<&str>,
        to: std::ops::Bound<&str>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        let documents = self
            .inner
            .document_range(collection, from, to, direction, limit)?;
        self.open_documents(collection, documents)
    }

    fn checkpoint(&self, projection: &str) -> Result<Position> {
        self.inner.checkpoint(projection)
    }
}

impl<T: StoreWrite, P: Deref<Target = Personal>> StoreWrite for Sealed<T, P, TxKeys<'_>> {
    /// Seals the events of a personal stream (giving the stream a key if it has none), and
    /// destroys its key if one of them forgets it; the recorded events are handed back in clear.
    /// A forgotten stream takes no more personal data (refused as [`StoreError::Corrupt`]).
    fn append(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        mut events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>> {
        let Some(forgotten) = self.personal.forgotten(&stream.category) else {
            return self.inner.append(stream, expected, events);
        };
        let personal = |e: &NewEvent| e.event_type != forgotten && e.data != "null";
        let forgets = events.iter().any(|e| e.event_type == forgotten);
        // A stream with no events has no key (one is written only with its first events): a
        // create looks nothing up (on a conflict, nothing is written).
        // Whether the key was read from the key store (then kept for the next append).
        let mut from_store = false;
        let mut state = if expected == ExpectedVersion::Exact(0) {
            KeyState::None
        } else {
            match self.keys.for_append(stream, expected) {
                Some(state) => state,
                None => {
                    from_store = true;
                    key_state(&self.inner, &self.personal, stream)?
                }
            }
        };
        let mut new_key = None;
        match state {
            KeyState::Destroyed => {
                if events.iter().any(personal) {
                    return Err(StoreError::Corrupt(format!(
                        "{}/{} was forgotten: it takes no more personal data",
                        stream.category, stream.id
                    )));
                }
                return self.inner.append(stream, expected, events);
            }
            KeyState::None if events.iter().any(personal) => {
                let key = StreamKey::generate();
                state = live(key);
                new_key = Some(key);
            }
            _ => {}
        }
        let mut clear = Vec::new();
        if let KeyState::Live(cipher, _) = &state {
            let before = match expected {
                ExpectedVersion::Exact(v) => v,
                ExpectedVersion::Any => self.inner.stream_version(stream)?,
            };
            clear.reserve(events.len());
            for (i, e) in events.iter_mut().enumerate() {
                if personal(e) {
                    let sealed = seal(cipher, &e.event_type, before + 1 + i as u64, &e.data);
                    clear.push(Some(std::mem::replace(&mut e.data, sealed)));
                } else {
                    clear.push(None);
                }
            }
        }
        let mut recorded = self.inner.append(stream, expected, events)?;
        for (r, c) in recorded.iter_mut().zip(clear) {
            if let Some(c) = c {
                r.data = c;
            }
        }
        // The version the stream reached: what a kept key is valid for on a shared store.
        let at = recorded.last().map_or(0, |e| e.version);
        if forgets {
            // A tombstone, even for a stream that had no key (all in clear, written before
            // sealing): its events read as forgotten from now on.
            self.inner.put_document(KEYS, &key_name(stream), Some(""))?;
            self.keys.changed.insert(stream.clone(), None);
            forget_ready();
        } else if let Some(key) = new_key {
            let name = key_name(stream);
            let document = match self.personal.master_key() {
                Some(master) => master.wrap(&name, &key.text()),
                None => key.text(),
            };
            self.inner.put_document(KEYS, &name, Some(&document))?;
            self.keys.changed.insert(stream.clone(), Some((key, at)));
        } else if let KeyState::Live(_, key) = &state {
            // Read from the key store: kept for the stream's next append; on a shared store
            // kept again at each append, with the version the stream reached (see `KeyCache`).
            if from_store || self.keys.shared {
                self.keys.changed.insert(stream.clone(), Some((*key, at)));
            }
        }
        Ok(recorded)
    }

    /// Seals a document of a personal collection under its stream's key (in clear for a stream
    /// with no key, all of whose events are in clear); a forgotten stream takes none.
    fn put_document(&mut self, collection: &str, key: &str, value: Option<&str>) -> Result<()> {
        match value {
            Some(value) => match self.seal_document(collection, key, value)? {
                Some(sealed) => self.inner.put_document(collection, key, Some(&sealed)),
                None => self.inner.put_document(collection, key, Some(value)),
            },
            None => self.inner.put_document(collection, key, None),
        }
    }

    fn put_cold_document(&mut self, collection: &str, key: &str, value: &str) -> Result<()> {
        match self.seal_document(collection, key, value)? {
            Some(sealed) => self.inner.put_cold_document(collection, key, &sealed),
            None => self.inner.put_cold_document(collection, key, value),
        }
    }

    fn clear_collection(&mut self, collection: &str) -> Result<()> {
        self.inner.clear_collection(collection)
    }

    fn set_checkpoint(&mut self, projection: &str, position: Position) -> Result<()> {
        self.inner.set_checkpoint(projection, position)
    }

    /// Seals the state of a personal stream under its key; writes nothing for a stream with no
    /// live key (forgotten, or all in clear): snapshots are derived data.
    fn put_snapshot(&mut self, stream: &StreamId, snapshot: &Snapshot) -> Result<()> {
        if self.personal.forgotten(&stream.category).is_none() {
            return self.inner.put_snapshot(stream, snapshot);
        }
        match self.key(stream)? {
            KeyState::Live(cipher, _) => {
                let sealed = Snapshot {
                    state: seal(&cipher, "snapshot", snapshot.version, &snapshot.state),
                    ..snapshot.clone()
                };
                self.inner.put_snapshot(stream, &sealed)
            }
            _ => Ok(()),
        }
    }

    fn clear_snapshots(&mut self) -> Result<()> {
        self.inner.clear_snapshots()
    }

    /// Commits, then updates the key cache with what the transaction changed.
    fn commit(self) -> Result<()> {
        self.inner.commit()?;
        let TxKeys { cache, changed, .. } = self.keys;
        if cache.keys.len() + changed.len() > CACHE_CAPACITY {
            cache.keys.clear();
        }
        for (stream, key) in changed {
            match key {
                Some(key) => cache.keys.insert(stream, key),
                None => cache.keys.remove(&stream),
            };
        }
        Ok(())
    }
}

impl<T: StoreWrite, P: Deref<Target = Personal>> Sealed<T, P, TxKeys<'_>> {
    /// `value` sealed, if it is a document of a personal collection whose stream has a key
    /// (`None`: to be written as it is).
    fn seal_document(&self, collection: &str, key: &str, value: &str) -> Result<Option<String>> {
        let Some(stream) = self.owner(collection, key)? else {
            return Ok(None);
        };
        match self.key(&stream)? {
            KeyState::Live(cipher, _) => Ok(Some(seal(
                &cipher,
                &document_aad(collection, key),
                0,
                value,
            ))),
            KeyState::None => Ok(None),
            KeyState::Destroyed => Err(StoreError::Corrupt(format!(
                "{}/{} was forgotten: document {key:?} of {collection} would hold its data",
                stream.category, stream.id
            ))),
        }
    }
}

impl<S: EventStore> EventStore for Sealed<S> {
    type Tx<'a>
        = Sealed<S::Tx<'a>, &'a Personal, TxKeys<'a>>
    where
        Self: 'a;

    fn begin(&mut self) -> Result<Self::Tx<'_>> {
        // On a shared store another node may destroy a key at any time: see `KeyCache`.
        let shared = self.inner.shared();
        Ok(Sealed {
            inner: self.inner.begin()?,
            personal: &*self.personal,
            keys: TxKeys {
                cache: &mut self.keys,
                shared,
                changed: HashMap::default(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use crate::timestamp::Timestamp;

    fn personal() -> Arc<Personal> {
        let mut p = Personal::new();
        p.add("P", "Forgot");
        Arc::new(p)
    }

    fn event(kind: &str, data: String) -> NewEvent {
        NewEvent {
            event_type: kind.into(),
            schema: FIRST_SCHEMA,
            timestamp: Timestamp(1),
            data,
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Any appends (to personal streams and to others, several per transaction, some
        /// transactions dropped, some streams forgotten): every read path gives back exactly
        /// what was written to a live stream and to any stream of another category, `null` for
        /// every event of a forgotten stream but the forgetting one, and no snapshot of it; the
        /// inner store holds no personal data in clear, and no live key for a forgotten stream.
        #[test]
        fn what_is_written_reads_back_and_a_forgotten_stream_reads_null(
            steps in proptest::collection::vec(
                (0usize..4, proptest::bool::ANY, 0u8..8, proptest::bool::ANY), 1..40),
        ) {
            let streams = [
                StreamId::new("P", "a"),
                StreamId::new("P", "b"),
                StreamId::new("P", "c"),
                StreamId::new("Q", "a"),
            ];
            let mut store = Sealed::new(MemoryStore::new(), personal());
            // What each stream holds, as written (clear), and whether it was forgotten.
            let mut written: Vec<Vec<(String, String)>> = vec![Vec::new(); 4];
            let mut forgotten = [false; 4];
            let mut n = 0;
            for chunk in steps.chunks(3) {
                let mut tx = store.begin().unwrap();
                let mut pending = written.clone();
                let mut pending_forgotten = forgotten;
                let mut commit = true;
                for &(s, forget, payload, keep) in chunk {
                    commit &= keep || n % 5 != 0;
                    n += 1;
                    let stream = &streams[s];
                    let expected = ExpectedVersion::Exact(pending[s].len() as u64);
                    let (kind, data) = if forget && s < 3 {
                        ("Forgot".to_string(), "{}".to_string())
                    } else {
                        ("Made".to_string(), format!(r#"{{"secret":"sekrit-{n}-{payload}"}}"#))
                    };
                    let result = tx.append(stream, expected, vec![event(&kind, data.clone())]);
                    if pending_forgotten[s] && kind == "Made" {
                        proptest::prop_assert!(result.is_err(), "a forgotten stream takes no data");
                        continue;
                    }
                    let recorded = result.unwrap();
                    proptest::prop_assert_eq!(&recorded[0].data, &data, "handed back in clear");
                    if kind == "Forgot" {
                        pending_forgotten[s] = true;
                    }
                    pending[s].push((kind, data));
                    let version = pending[s].len() as u64;
                    tx.put_snapshot(stream, &Snapshot {
                        version,
                        timestamp: Timestamp(1),
                        state: format!("state-sekrit-{s}-{version}"),
                    }).unwrap();
                }
                if commit {
                    tx.commit().unwrap();
                    written = pending;
                    forgotten = pending_forgotten;
                }
            }
            let want = |s: usize| -> Vec<(String, String)> {
                written[s]
                    .iter()
                    .map(|(k, d)| {
                        let d = if forgotten[s] && k != "Forgot" { "null".to_string() } else { d.clone() };
                        (k.clone(), d)
                    })
                    .collect()
            };
            let all = store.read_all(0, usize::MAX).unwrap();
            for (s, stream) in streams.iter().enumerate() {
                let got: Vec<_> = store
                    .read_stream(stream, 0, Upto::End)
                    .unwrap()
                    .into_iter()
                    .map(|e| (e.event_type, e.data))
                    .collect();
                proptest::prop_assert_eq!(&got, &want(s));
                let logged: Vec<_> = all
                    .iter()
                    .filter(|e| &e.stream == stream)
                    .map(|e| (e.event_type.clone(), e.data.clone()))
                    .collect();
                proptest::prop_assert_eq!(&logged, &want(s));
                let snapshot = store.snapshot(stream, Upto::End).unwrap();
                if forgotten[s] || written[s].is_empty() {
                    proptest::prop_assert_eq!(snapshot, None);
                } else {
                    let v = written[s].len();
                    proptest::prop_assert_eq!(
                        snapshot.map(|x| x.state),
                        Some(format!("state-sekrit-{s}-{v}"))
                    );
                }
                // As stored: personal streams hold nothing in clear.
                let raw = store.inner().read_stream(stream, 0, Upto::End).unwrap();
                for e in &raw {
                    proptest::prop_assert_eq!(
                        e.data.contains("sekrit"),
                        stream.category == "Q",
                        "{:?}", e
                    );
                }
                let key = store.inner().document(KEYS, &key_name(stream)).unwrap();
                if forgotten[s] {
                    proptest::prop_assert_eq!(key.as_deref(), Some(""));
                }
                if let Some(raw_snapshot) = store.inner().snapshot(stream, Upto::End).unwrap() {
                    proptest::prop_assert!(!raw_snapshot.state.contains("sekrit") || stream.category == "Q");
                }
            }
            // A second view of the same store, with nothing cached, reads the same.
            let fresh = Sealed::new(store.into_inner(), personal());
            for (s, stream) in streams.iter().enumerate() {
                let got: Vec<_> = fresh
                    .read_stream(stream, 0, Upto::End)
                    .unwrap()
                    .into_iter()
                    .map(|e| (e.event_type, e.data))
                    .collect();
                proptest::prop_assert_eq!(&got, &want(s));
            }
        }
    }

    /// On a shared store an append seals with a cached key only when it expects the stream at
    /// the version the key was cached at; a stream that moved (another writer forgot it) is
    /// refused by its version check, and an append at the new version asks the key store.
    #[test]
    fn personal_documents_are_stored_sealed_open_where_they_were_put_and_go_with_the_key() {
        let people = || {
            let mut p = Personal::new();
            p.add("P", "Forgot");
            // Keys `<id>` and `<id>:<anything>` belong to stream P/<id>.
            p.add_documents(PersonalDocuments {
                collection: "people",
                category: "P",
                owner: |key| Some(Cow::Borrowed(key.split(':').next().unwrap_or(key))),
            });
            Arc::new(p)
        };
        let mut store = Sealed::new(MemoryStore::new(), people());
        let made = |n: u32| event("Made", format!(r#"{{"secret":"sekrit-{n}"}}"#));
        let mut tx = store.begin().unwrap();
        for id in ["a", "b"] {
            tx.append(
                &StreamId::new("P", id),
                ExpectedVersion::Exact(0),
                vec![made(1)],
            )
            .unwrap();
            tx.put_document("people", id, Some(&format!("doc of {id}")))
                .unwrap();
            tx.put_cold_document("people", &format!("{id}:old"), &format!("old doc of {id}"))
                .unwrap();
        }
        // Another collection is not sealed; a stream with no key keeps its document in clear.
        tx.put_document("other", "a", Some("plain")).unwrap();
        tx.put_document("people", "c", Some("c, before sealing"))
            .unwrap();
        // Within the transaction, its own writes open.
        assert_eq!(
            tx.document("people", "a").unwrap().as_deref(),
            Some("doc of a")
        );
        tx.commit().unwrap();

        // Read back opened, one by one, by key order and by range.
        assert_eq!(
            store.document("people", "a").unwrap().as_deref(),
            Some("doc of a")
        );
        let all = store.documents("people", None, 10).unwrap();
        let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            all,
            [
                ("a", "doc of a"),
                ("a:old", "old doc of a"),
                ("b", "doc of b"),
                ("b:old", "old doc of b"),
                ("c", "c, before sealing"),
            ]
        );
        let range = store
            .document_range(
                "people",
                Bound::Excluded("a"),
                Bound::Included("b"),
                Direction::Descending,
                10,
            )
            .unwrap();
        assert_eq!(range.len(), 2);
        assert_eq!(range[0].1, "doc of b");
        assert_eq!(range[1].1, "old doc of a");
        // Stored sealed: none of the personal documents in clear.
        let raw = store.inner().documents("people", None, 10).unwrap();
        for (key, value) in &raw[..4] {
            assert!(
                is_sealed(value) && !value.contains("doc of"),
                "{key}: {value}"
            );
        }
        assert_eq!(raw[4].1, "c, before sealing");
        assert_eq!(
            store.inner().document("other", "a").unwrap().as_deref(),
            Some("plain")
        );

        // A sealed document moved to another key (of the same stream, or of another) does not
        // open: damaged, never another's data.
        let a = store.inner().document("people", "a").unwrap().unwrap();
        {
            let inner = store.inner_mut();
            let mut tx = inner.begin().unwrap();
            tx.put_document("people", "a:moved", Some(&a)).unwrap();
            tx.put_document("people", "b:moved", Some(&a)).unwrap();
            tx.commit().unwrap();
        }
        for key in ["a:moved", "b:moved"] {
            let moved = store.document("people", key);
            assert!(
                matches!(moved, Err(StoreError::Corrupt(_))),
                "{key}: {moved:?}"
            );
        }
        {
            let inner = store.inner_mut();
            let mut tx = inner.begin().unwrap();
            tx.put_document("people", "a:moved", None).unwrap();
            tx.put_document("people", "b:moved", None).unwrap();
            tx.commit().unwrap();
        }

        // Once a is forgotten its documents read as absent (even those left in place), and
        // it takes no more.
        let mut tx = store.begin().unwrap();
        tx.append(
            &StreamId::new("P", "a"),
            ExpectedVersion::Exact(1),
            vec![event("Forgot", "{}".into())],
        )
        .unwrap();
        assert_eq!(tx.document("people", "a").unwrap(), None);
        let refused = tx.put_document("people", "a", Some("again"));
        assert!(
            matches!(refused, Err(StoreError::Corrupt(_))),
            "{refused:?}"
        );
        tx.put_document("people", "a", None).unwrap();
        tx.commit().unwrap();
        let left: Vec<String> = store
            .documents("people", None, 10)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(left, ["b", "b:old", "c"]);
        // ... and after a restart, when the key is read from the key store.
        let fresh = Sealed::new(store.into_inner(), people());
        assert_eq!(fresh.document("people", "a:old").unwrap(), None);
        assert_eq!(
            fresh.document("people", "b").unwrap().as_deref(),
            Some("doc of b")
        );
    }

    #[test]
    fn on_a_shared_store_documents_open_with_a_kept_key_and_go_with_a_forget_elsewhere() {
        use crate::store::FaultyStore;
        let mut p = Personal::new();
        p.add("P", "Forgot");
        p.add_documents(PersonalDocuments {
            collection: "people",
            category: "P",
            owner: PersonalDocuments::keyed_by_id,
        });
        let p = Arc::new(p);
        let inner = FaultyStore::new(MemoryStore::new());
        inner.faults().pretend_shared(true);
        let mut store = Sealed::new(inner, p.clone());
        let a = StreamId::new("P", "a");
        let mut tx = store.begin().unwrap();
        tx.append(
            &a,
            ExpectedVersion::Exact(0),
            vec![event("Made", "{}".into())],
        )
        .unwrap();
        tx.put_document("people", "a", Some("doc of a")).unwrap();
        tx.commit().unwrap();
        assert_eq!(
            store.document("people", "a").unwrap().as_deref(),
            Some("doc of a")
        );
        // Another node (no key in memory) reads it from the key store.
        let other = Sealed::new(store.inner().inner(), p.clone());
        assert_eq!(
            other.document("people", "a").unwrap().as_deref(),
            Some("doc of a")
        );
        // Another writer forgets a: the document goes in the same transaction as the key.
        {
            let mut tx = store.inner_mut().inner_mut().begin().unwrap();
            tx.append(
                &a,
                ExpectedVersion::Exact(1),
                vec![event("Forgot", "{}".into())],
            )
            .unwrap();
            tx.put_document(KEYS, &key_name(&a), Some("")).unwrap();
            tx.put_document("people", "a", None).unwrap();
            tx.commit().unwrap();
        }
        // The key this node kept is stale, and no document is left to open with it.
        assert_eq!(store.document("people", "a").unwrap(), None);
        assert!(store.documents("people", None, 10).unwrap().is_empty());
    }

    #[test]
    fn on_a_shared_store_a_cached_key_is_used_only_at_its_version() {
        use crate::store::faulty::{Op, Plan};
        use crate::store::FaultyStore;
        let inner = FaultyStore::new(MemoryStore::new());
        let faults = inner.faults();
        faults.pretend_shared(true);
        let mut store = Sealed::new(inner, personal());
        let s = StreamId::new("P", "a");
        let made = |n: u32| event("Made", format!(r#"{{"secret":"sekrit-{n}"}}"#));
        let append = |store: &mut Sealed<FaultyStore<MemoryStore>>, v: u64, e: NewEvent| {
            let mut tx = store.begin()?;
            tx.append(&s, ExpectedVersion::Exact(v), vec![e])?;
            tx.commit()
        };
        append(&mut store, 0, made(1)).unwrap();
        // Every read fails from now on: an append that asks the key store fails.
        faults.set(Op::Read, Plan::Always);
        append(&mut store, 1, made(2)).expect("the key cached at version 1 is used");
        // Another writer forgets the stream (version 3) and destroys its key.
        {
            let other = store.inner_mut().inner_mut();
            let mut tx = other.begin().unwrap();
            tx.append(
                &s,
                ExpectedVersion::Exact(2),
                vec![event("Forgot", "{}".into())],
            )
            .unwrap();
            tx.put_document(KEYS, &key_name(&s), Some("")).unwrap();
            tx.commit().unwrap();
        }
        // Decided on the stale version 2: the cached key seals, the version check refuses.
        let stale = append(&mut store, 2, made(3));
        assert!(
            matches!(stale, Err(StoreError::Conflict { actual: 3, .. })),
            "{stale:?}"
        );
        // At version 3 the cache is not used: the key store is asked (and fails, here)...
        let asked = append(&mut store, 3, made(4));
        assert!(matches!(asked, Err(StoreError::Io(_))), "{asked:?}");
        // ... and says the key is gone: no more personal data.
        faults.clear();
        let refused = append(&mut store, 3, made(5));
        assert!(
            matches!(refused, Err(StoreError::Corrupt(_))),
            "{refused:?}"
        );
        let raw = store.inner().inner().read_stream(&s, 0, Upto::End).unwrap();
        assert_eq!(raw.len(), 3, "nothing of the refused appends is stored");
    }

    fn cipher(format: KeyFormat) -> Cipher {
        let mut key = StreamKey::generate();
        key.format = format;
        Cipher::new(&key)
    }

    #[test]
    fn a_sealed_event_does_not_open_at_another_place_or_under_another_key() {
        for format in [KeyFormat::Aes256Gcm, KeyFormat::XChaCha20Poly1305] {
            let key = cipher(format);
            let other = cipher(format);
            let sealed = seal(&key, "Made", 3, r#"{"a":1}"#);
            assert!(is_sealed(&sealed));
            assert_eq!(
                open(&key, "Made", 3, &sealed).as_deref(),
                Some(r#"{"a":1}"#)
            );
            assert_eq!(open(&key, "Made", 4, &sealed), None, "another version");
            assert_eq!(open(&key, "Other", 3, &sealed), None, "another type");
            assert_eq!(open(&other, "Made", 3, &sealed), None, "another key");
            assert_ne!(
                sealed,
                seal(&key, "Made", 3, r#"{"a":1}"#),
                "a new nonce each time"
            );
            // Nonce, text, tag: 12 + 7 + 16 bytes for AES-256-GCM, 24 + 7 + 16 for XChaCha.
            let raw = if format == KeyFormat::Aes256Gcm {
                35
            } else {
                47
            };
            assert_eq!(
                sealed.len(),
                2 + 4 * (raw as usize).div_ceil(3),
                "{format:?}"
            );
        }
    }

    #[test]
    fn the_encrypt_only_key_schedule_seals_as_aes_256_gcm_does() {
        let key = StreamKey::generate();
        let ours = Cipher::new(&key);
        let theirs = aes_gcm::Aes256Gcm::new(&key.key.into());
        let nonce = aes_nonce();
        let mut a = b"{\"name\":\"x\"}".to_vec();
        let mut b = a.clone();
        let Cipher::Aes256Gcm(c) = &ours else {
            panic!("an AES key")
        };
        let tag_a = c.encrypt_in_place_detached(&nonce, b"aad", &mut a).unwrap();
        let tag_b = theirs
            .encrypt_in_place_detached(&nonce, b"aad", &mut b)
            .unwrap();
        assert_eq!((a, tag_a), (b, tag_b));
    }

    #[test]
    fn a_key_document_says_its_format_and_the_two_are_never_taken_for_each_other() {
        let key = StreamKey::generate();
        assert_eq!(
            key.format,
            KeyFormat::Aes256Gcm,
            "new keys are AES-256-GCM keys"
        );
        let text = key.text();
        assert!(text.starts_with("aes-256-gcm:"), "{text}");
        let read = StreamKey::parse(&text).unwrap();
        assert_eq!((read.format, read.key), (key.format, key.key));
        let old = B64.encode(key.key);
        let read = StreamKey::parse(&old).unwrap();
        assert_eq!(
            (read.format, read.key),
            (KeyFormat::XChaCha20Poly1305, key.key)
        );
        assert!(StreamKey::parse("aes-256-gcm:").is_none());
        assert!(StreamKey::parse(&old[1..]).is_none());
        // A text sealed under one format does not open under the other with the same bytes.
        let sealed = seal(&Cipher::new(&key), "Made", 1, "{}");
        assert_eq!(open(&Cipher::new(&read), "Made", 1, &sealed), None);
    }

    /// A store sealed by the XChaCha20-Poly1305 version (frozen bytes: the key document and the
    /// texts that version wrote, nonces included) reads back, takes new events sealed under the
    /// same key and format, and forgets.
    #[test]
    fn a_stream_sealed_in_the_xchacha_format_reads_takes_events_and_forgets() {
        const KEY: &str = "AwoRGB8mLTQ7QklQV15lbHN6gYiPlp2kq7K5wMfO1dw=";
        const MADE_1: &str = "\"MTAzMjU0NzY5ODs6PTw/PiEgIyIlJCcmJq2GylW7p8TM0oUphnsr2c6rwTccvep3iX4WJRHnFaGd7AxkUsVowPY=\"";
        const MADE_2: &str = "\"YmNgYWZnZGVqa2hpbm9sbXJzcHF2d3R1dklyzFmNx3eOA3wdqr9LwWZnMyZ5N9F3KKh/hzOqXed3KhJv19rohaY=\"";
        const SNAPSHOT_2: &str =
            "\"k5KRkJeWlZSbmpmYn56dnIOCgYCHhoWEZoRxyQaxW02HRWRJGfeIgkY4rRossCU3Hjx1\"";
        let stream = StreamId::new("P", "old");
        let mut inner = MemoryStore::new();
        {
            let mut tx = inner.begin().unwrap();
            tx.append(
                &stream,
                ExpectedVersion::Exact(0),
                vec![event("Made", MADE_1.into()), event("Made", MADE_2.into())],
            )
            .unwrap();
            tx.put_document(KEYS, &key_name(&stream), Some(KEY))
                .unwrap();
            tx.put_snapshot(
                &stream,
                &Snapshot {
                    version: 2,
                    timestamp: Timestamp(1),
                    state: SNAPSHOT_2.into(),
                },
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let data = |store: &Sealed<MemoryStore>| -> Vec<String> {
            store
                .read_stream(&stream, 0, Upto::End)
                .unwrap()
                .into_iter()
                .map(|e| e.data)
                .collect()
        };
        let mut store = Sealed::new(inner, personal());
        assert_eq!(
            data(&store),
            [
                r#"{"secret":"old-sekrit-1"}"#,
                r#"{"secret":"old-sekrit-2"}"#
            ]
        );
        assert_eq!(
            store.snapshot(&stream, Upto::End).unwrap().map(|s| s.state),
            Some("old-state-2".to_string())
        );
        // A new event: sealed under the stream's own key and format (its document unchanged).
        let mut tx = store.begin().unwrap();
        tx.append(
            &stream,
            ExpectedVersion::Exact(2),
            vec![event("Made", r#"{"secret":"new-sekrit-3"}"#.into())],
        )
        .unwrap();
        tx.commit().unwrap();
        let raw = store.inner().read_stream(&stream, 0, Upto::End).unwrap();
        assert!(!raw[2].data.contains("sekrit"));
        assert_eq!(
            raw[2].data.len(),
            2 + 4 * (24 + 25 + 16usize).div_ceil(3),
            "an XChaCha text: {}",
            raw[2].data
        );
        assert_eq!(
            store
                .inner()
                .document(KEYS, &key_name(&stream))
                .unwrap()
                .as_deref(),
            Some(KEY)
        );
        let fresh = Sealed::new(store.into_inner(), personal());
        assert_eq!(data(&fresh)[2], r#"{"secret":"new-sekrit-3"}"#);
        // Forgotten: the tombstone, every event null, no snapshot.
        let mut store = fresh;
        let mut tx = store.begin().unwrap();
        tx.append(
            &stream,
            ExpectedVersion::Exact(3),
            vec![event("Forgot", "{}".into())],
        )
        .unwrap();
        tx.commit().unwrap();
        assert_eq!(data(&store), ["null", "null", "null", "{}"]);
        assert_eq!(store.snapshot(&stream, Upto::End).unwrap(), None);
        assert_eq!(
            store
                .inner()
                .document(KEYS, &key_name(&stream))
                .unwrap()
                .as_deref(),
            Some("")
        );
    }
}
