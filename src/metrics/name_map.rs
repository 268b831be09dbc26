//! A small sorted map from shared names to values, for the per-bucket maps
//! that every event touches (by event type, by agent, by feature).
//!
//! The engine interns agent and feature names, so on its hot path the key
//! it looks up is the very `Arc` stored in the map: a scan comparing
//! pointers finds it without comparing a byte. Keys that are equal but not
//! shared (event types, buckets merged from another engine) fall back to a
//! binary search by name. Entries stay sorted by name, so iteration,
//! equality and serialisation are those of a `BTreeMap<String, V>`.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Index;
use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A map from names to values, sorted by name. Serialises as a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct NameMap<V> {
    entries: Vec<(Arc<str>, V)>,
}

impl<V> Default for NameMap<V> {
    fn default() -> Self {
        NameMap {
            entries: Vec::new(),
        }
    }
}

impl<V> NameMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of names.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&V> {
        self.search(name).ok().map(|i| &self.entries[i].1)
    }

    /// Whether `name` has a value.
    pub fn contains_key(&self, name: &str) -> bool {
        self.search(name).is_ok()
    }

    /// The entries, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &V)> + '_ {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// The names, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &Arc<str>> + '_ {
        self.entries.iter().map(|(k, _)| k)
    }

    /// The values, in name order.
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.entries.iter().map(|(_, v)| v)
    }

    fn search(&self, name: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| (**k).cmp(name))
    }

    /// Applies `f` to the value of `key`, inserted as `V::default()` first
    /// if absent.
    pub(crate) fn update(&mut self, key: &Arc<str>, f: impl FnOnce(&mut V))
    where
        V: Default,
    {
        let i = match self.entries.iter().position(|(k, _)| Arc::ptr_eq(k, key)) {
            Some(i) => i,
            None => match self.search(key) {
                Ok(i) => i,
                Err(i) => {
                    self.entries.insert(i, (Arc::clone(key), V::default()));
                    i
                }
            },
        };
        f(&mut self.entries[i].1);
    }
}

impl<V> Index<&str> for NameMap<V> {
    type Output = V;

    /// The value of `name`; panics if absent, like `BTreeMap`'s index.
    fn index(&self, name: &str) -> &V {
        self.get(name)
            .unwrap_or_else(|| panic!("no entry for {name:?}"))
    }
}

impl<'a, V> IntoIterator for &'a NameMap<V> {
    type Item = (&'a Arc<str>, &'a V);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Arc<str>, V)>,
        fn(&'a (Arc<str>, V)) -> (&'a Arc<str>, &'a V),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

impl<V: Serialize> Serialize for NameMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            map.serialize_entry(&**k, v)?;
        }
        map.end()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for NameMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = NameMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map from names to values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut map = NameMap::new();
                while let Some((k, v)) = access.next_entry::<String, V>()? {
                    // A repeated name keeps its last value, as in a BTreeMap.
                    match map.search(&k) {
                        Ok(i) => map.entries[i].1 = v,
                        Err(i) => map.entries.insert(i, (Arc::from(k), v)),
                    }
                }
                Ok(map)
            }
        }

        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_lookup_by_pointer_or_name() {
        let b: Arc<str> = Arc::from("b");
        let mut m: NameMap<u32> = NameMap::new();
        m.update(&b, |v| *v += 1);
        m.update(&Arc::from("a"), |v| *v += 10);
        m.update(&Arc::from("b"), |v| *v += 1); // equal name, other Arc
        m.update(&b, |v| *v += 1);
        assert_eq!(m.len(), 2);
        assert_eq!(m["b"], 3);
        assert_eq!(m.get("a"), Some(&10));
        assert!(!m.contains_key("c"));
        let keys: Vec<&str> = m.keys().map(|k| &**k).collect();
        assert_eq!(keys, ["a", "b"]);
    }

    #[test]
    fn serialises_as_a_sorted_object() {
        let mut m: NameMap<u32> = NameMap::new();
        for k in ["z", "a", "m"] {
            m.update(&Arc::from(k), |v| *v = 1);
        }
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"a":1,"m":1,"z":1}"#);
        let back: NameMap<u32> = serde_json::from_str(r#"{"z":1,"a":1,"m":1}"#).unwrap();
        assert_eq!(back, m);
    }
}
