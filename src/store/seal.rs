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
//! * seals every event's data and every snapshot's state with XChaCha20-Poly1305 under that key
//!   (a random 24-byte nonce each; the event type and version, or `snapshot` and the version, as
//!   associated data, so a ciphertext cannot be moved to another place of the stream), stored as
//!   a JSON string: `"base64(nonce ‖ ciphertext ‖ tag)"`;
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

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

use super::*;

/// The key store's collection: one document per sealed stream, `category/id` to the base64 of
/// its key, or to `""` once the key was destroyed.
pub const KEYS: &str = "keys";

/// Bytes of an XChaCha20 nonce.
const NONCE: usize = 24;

/// The categories whose streams hold personal data, each with the event type that forgets one.
#[derive(Clone, Debug, Default)]
pub struct Personal {
    kinds: Vec<(&'static str, &'static str)>,
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
    Live(Box<XChaCha20Poly1305>, RawKey),
    /// Forgotten.
    Destroyed,
}

/// A stream's key, as bytes.
type RawKey = [u8; 32];

fn live(key: RawKey) -> KeyState {
    KeyState::Live(Box::new(XChaCha20Poly1305::new(Key::from_slice(&key))), key)
}

/// Most keys kept in memory; past it the cache starts again empty (a key is then read from
/// the store on its stream's next append).
const CACHE_CAPACITY: usize = 100_000;

type Hasher = foldhash::fast::RandomState;

/// The live keys this process wrote or read while appending, so that an append to a known
/// stream reads nothing from the key store. Off on a shared store (another node may destroy a
/// key at any time).
#[derive(Default)]
pub struct KeyCache {
    keys: HashMap<StreamId, RawKey, Hasher>,
}

impl KeyCache {
    fn get(&self, stream: &StreamId) -> Option<KeyState> {
        self.keys.get(stream).map(|k| live(*k))
    }
}

/// A transaction's view of the key cache: the keys it added and destroyed (`None`), applied to
/// the cache only when it commits.
pub struct TxKeys<'a> {
    /// `None` on a shared store.
    cache: Option<&'a mut KeyCache>,
    changed: HashMap<StreamId, Option<RawKey>, Hasher>,
}

impl TxKeys<'_> {
    fn get(&self, stream: &StreamId) -> Option<KeyState> {
        match self.changed.get(stream) {
            Some(Some(k)) => Some(live(*k)),
            Some(None) => Some(KeyState::Destroyed),
            None => self.cache.as_ref().and_then(|c| c.get(stream)),
        }
    }
}

/// Where a store or a transaction finds keys before it asks the key store.
pub trait Keys {
    #[doc(hidden)]
    fn cached(&self, stream: &StreamId) -> Option<KeyState>;
}

impl Keys for KeyCache {
    fn cached(&self, stream: &StreamId) -> Option<KeyState> {
        self.get(stream)
    }
}

impl Keys for TxKeys<'_> {
    fn cached(&self, stream: &StreamId) -> Option<KeyState> {
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
    Ok(match store.document(KEYS, &name)? {
        None => KeyState::None,
        Some(v) if v.is_empty() => KeyState::Destroyed,
        Some(v) => {
            let v = super::master::unwrap(personal.master_key(), &name, &v)?;
            let bytes = B64.decode(v.as_bytes()).ok();
            let Some(bytes) = bytes.and_then(|b| RawKey::try_from(b).ok()) else {
                return Err(StoreError::Corrupt(format!(
                    "the key of {}/{} is damaged",
                    stream.category, stream.id
                )));
            };
            live(bytes)
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

/// A fresh nonce: 16 bytes drawn from the operating system once per process, then a counter
/// of the nonces this process made. Unique under any key: two processes collide only if they
/// draw the same 128 random bits. (A getrandom call per nonce cost about 5% of the node's time.)
fn nonce() -> XNonce {
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

fn seal(cipher: &XChaCha20Poly1305, what: &str, version: Version, plain: &str) -> String {
    let nonce = nonce();
    // One buffer: nonce, then the text sealed in place, then the tag.
    let mut bytes = Vec::with_capacity(NONCE + plain.len() + 16);
    bytes.extend_from_slice(&nonce);
    bytes.extend_from_slice(plain.as_bytes());
    let tag = with_aad(what, version, |aad| {
        cipher.encrypt_in_place_detached(&nonce, aad, &mut bytes[NONCE..])
    })
    .expect("XChaCha20-Poly1305 seals any message of this size");
    bytes.extend_from_slice(&tag);
    let mut out = String::with_capacity(2 + bytes.len().div_ceil(3) * 4);
    out.push('"');
    B64.encode_string(&bytes, &mut out);
    out.push('"');
    out
}

/// The clear text of sealed data, or `None` if it does not open (damaged, or another key).
fn open(cipher: &XChaCha20Poly1305, what: &str, version: Version, data: &str) -> Option<String> {
    let inner = data.strip_prefix('"')?.strip_suffix('"')?;
    let mut bytes = B64.decode(inner.as_bytes()).ok()?;
    if bytes.len() < NONCE + 16 {
        return None;
    }
    let tag_at = bytes.len() - 16;
    let tag = chacha20poly1305::Tag::clone_from_slice(&bytes[tag_at..]);
    let nonce = XNonce::clone_from_slice(&bytes[..NONCE]);
    with_aad(what, version, |aad| {
        cipher.decrypt_in_place_detached(&nonce, aad, &mut bytes[NONCE..tag_at], &tag)
    })
    .ok()?;
    bytes.truncate(tag_at);
    bytes.drain(..NONCE);
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
        match self.keys.cached(stream) {
            Some(state) => Ok(state),
            None => key_state(&self.inner, &self.personal, stream),
        }
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

    fn document(&self, collection: &str, key: &str) -> Result<Option<String>> {
        self.inner.document(collection, key)
    }

    fn documents(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        self.inner.documents(collection, after, limit)
    }

    fn document_range(
        &self,
        collection: &str,
        from: std::ops::Bound<&str>,
        to: std::ops::Bound<&str>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        self.inner
            .document_range(collection, from, to, direction, limit)
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
        let mut state = if expected == ExpectedVersion::Exact(0) {
            KeyState::None
        } else {
            self.key(stream)?
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
                let key: RawKey = XChaCha20Poly1305::generate_key(&mut OsRng).into();
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
        if forgets {
            // A tombstone, even for a stream that had no key (all in clear, written before
            // sealing): its events read as forgotten from now on.
            self.inner.put_document(KEYS, &key_name(stream), Some(""))?;
            self.keys.changed.insert(stream.clone(), None);
        } else if let Some(key) = new_key {
            let name = key_name(stream);
            let document = match self.personal.master_key() {
                Some(master) => master.wrap(&name, &B64.encode(key)),
                None => B64.encode(key),
            };
            self.inner.put_document(KEYS, &name, Some(&document))?;
            self.keys.changed.insert(stream.clone(), Some(key));
        } else if let (KeyState::Live(_, key), Some(_)) = (&state, &self.keys.cache) {
            if self.keys.get(stream).is_none() {
                // Read from the key store: kept for the stream's next append.
                self.keys.changed.insert(stream.clone(), Some(*key));
            }
        }
        Ok(recorded)
    }

    fn put_document(&mut self, collection: &str, key: &str, value: Option<&str>) -> Result<()> {
        self.inner.put_document(collection, key, value)
    }

    fn put_cold_document(&mut self, collection: &str, key: &str, value: &str) -> Result<()> {
        self.inner.put_cold_document(collection, key, value)
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
        let TxKeys { cache, changed } = self.keys;
        if let Some(cache) = cache {
            if cache.keys.len() + changed.len() > CACHE_CAPACITY {
                cache.keys.clear();
            }
            for (stream, key) in changed {
                match key {
                    Some(key) => cache.keys.insert(stream, key),
                    None => cache.keys.remove(&stream),
                };
            }
        }
        Ok(())
    }
}

impl<S: EventStore> EventStore for Sealed<S> {
    type Tx<'a>
        = Sealed<S::Tx<'a>, &'a Personal, TxKeys<'a>>
    where
        Self: 'a;

    fn begin(&mut self) -> Result<Self::Tx<'_>> {
        // On a shared store another node may destroy a key at any time: always ask the store.
        let shared = self.inner.shared();
        Ok(Sealed {
            inner: self.inner.begin()?,
            personal: &*self.personal,
            keys: TxKeys {
                cache: (!shared).then_some(&mut self.keys),
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

    #[test]
    fn a_sealed_event_does_not_open_at_another_place_or_under_another_key() {
        let key = XChaCha20Poly1305::new(&XChaCha20Poly1305::generate_key(&mut OsRng));
        let other = XChaCha20Poly1305::new(&XChaCha20Poly1305::generate_key(&mut OsRng));
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
    }
}
