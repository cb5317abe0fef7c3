//! [`Attributes`]: a small ordered map of JSON values, kept as one vector.
//!
//! A user has at most [`super::user::MAX_ATTRIBUTES`] attributes, usually a handful. For maps
//! that small a linear scan beats hashing: `serde_json::Map` (an `IndexMap` with SipHash) hashed
//! every key on every lookup, insert and parse, and kept a hash table beside the entries, which
//! cost a cache miss more each time a cold user was touched. Here the entries are one
//! allocation, compared in place.
//!
//! It behaves as `serde_json::Map` with `preserve_order` did: insertion order is kept, setting a
//! key that is already there replaces its value in place, a key given twice in JSON counts once
//! with its last value, and equality ignores order.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

#[derive(Clone, Default)]
pub struct Attributes(Vec<(String, Value)>);

impl Attributes {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    pub fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.0.iter().position(|(k, _)| k == key)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Sets `key`: in place if it is there (returning the old value), else at the end.
    pub fn insert(&mut self, key: String, value: Value) -> Option<Value> {
        match self.position(&key) {
            Some(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            None => {
                self.0.push((key, value));
                None
            }
        }
    }

    /// Removes `key`, keeping the order of the others.
    pub fn shift_remove(&mut self, key: &str) -> Option<Value> {
        let i = self.position(key)?;
        Some(self.0.remove(i).1)
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The attributes as a compact JSON object: what `serde_json::to_string` gives, faster.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(64 + 32 * self.0.len());
        out.push(b'{');
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            crate::json::write_str(&mut out, k);
            out.push(b':');
            crate::json::write_value(&mut out, v);
        }
        out.push(b'}');
        // SAFETY: every byte comes from a `&str` or from serde_json's writer, and ASCII
        // punctuation was added between them, so the text is UTF-8 (the unit tests below
        // compare it with serde_json::to_string).
        unsafe { String::from_utf8_unchecked(out) }
    }
}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Equal when they hold the same keys with the same values, in any order.
impl PartialEq for Attributes {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

/// The value of a key that must be there (panics otherwise, as `serde_json::Map` does).
impl std::ops::Index<&str> for Attributes {
    type Output = Value;
    fn index(&self, key: &str) -> &Value {
        self.get(key).expect("no such attribute")
    }
}

impl Extend<(String, Value)> for Attributes {
    fn extend<I: IntoIterator<Item = (String, Value)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl FromIterator<(String, Value)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        let mut a = Attributes::new();
        a.extend(iter);
        a
    }
}

impl IntoIterator for Attributes {
    type Item = (String, Value);
    type IntoIter = std::vec::IntoIter<(String, Value)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Attributes {
    type Item = (&'a String, &'a Value);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, Value)>,
        fn(&'a (String, Value)) -> (&'a String, &'a Value),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

/// A parsed JSON object: its keys are already unique.
impl From<Map<String, Value>> for Attributes {
    fn from(map: Map<String, Value>) -> Self {
        Self(map.into_iter().collect())
    }
}

impl Serialize for Attributes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AttributesVisitor;
        impl<'de> Visitor<'de> for AttributesVisitor {
            type Value = Attributes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut access: M) -> Result<Attributes, M::Error> {
                let mut a = Attributes::with_capacity(access.size_hint().unwrap_or(0).min(16));
                while let Some((k, v)) = access.next_entry::<String, Value>()? {
                    a.insert(k, v);
                }
                Ok(a)
            }
        }
        deserializer.deserialize_map(AttributesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_replaces_in_place_and_the_last_duplicate_wins() {
        let a: Attributes = serde_json::from_str(r#"{"b":1,"a":2,"b":3}"#).unwrap();
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"b":3,"a":2}"#);
        let mut a = a;
        assert_eq!(a.insert("a".into(), Value::from(4)), Some(Value::from(2)));
        assert_eq!(a.insert("c".into(), Value::from(5)), None);
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"b":3,"a":4,"c":5}"#);
        assert_eq!(a.shift_remove("b"), Some(Value::from(3)));
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"a":4,"c":5}"#);
        assert_eq!(a.shift_remove("b"), None);
    }

    #[test]
    fn equality_ignores_order_and_a_map_converts_in_order() {
        let x: Attributes = serde_json::from_str(r#"{"a":1,"b":[2]}"#).unwrap();
        let y: Attributes = serde_json::from_str(r#"{"b":[2],"a":1}"#).unwrap();
        assert_eq!(x, y);
        assert_ne!(x, serde_json::from_str(r#"{"a":1}"#).unwrap());
        assert_ne!(x, serde_json::from_str(r#"{"a":1,"b":[3]}"#).unwrap());
        let map: Map<String, Value> = serde_json::from_str(r#"{"z":1,"y":2}"#).unwrap();
        let a = Attributes::from(map);
        assert_eq!(a.keys().collect::<Vec<_>>(), ["z", "y"]);
    }

    #[test]
    fn to_json_is_what_serde_writes() {
        for text in [
            r#"{}"#,
            r#"{"id":"u1","name":"A \"B\" \\ \u0001","n":-1.5,"o":{"x":[1,"\n"]},"z":null}"#,
        ] {
            let a: Attributes = serde_json::from_str(text).unwrap();
            assert_eq!(a.to_json(), serde_json::to_string(&a).unwrap());
        }
    }

    #[test]
    fn only_an_object_is_attributes() {
        assert!(serde_json::from_str::<Attributes>("[1,2]").is_err());
        assert!(serde_json::from_str::<Attributes>("3").is_err());
    }
}
