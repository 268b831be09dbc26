//! A map from shared names to values, for the per-bucket maps that every
//! event touches (by event type, by agent, by feature).
//!
//! Most buckets hold a handful of names, and the engine interns them, so the
//! key it looks up is usually the very `Arc` stored in the map: up to
//! [`SMALL`] entries are kept in a vector scanned by pointer (then by value,
//! for keys that are equal but not shared, such as buckets merged from
//! another engine). Past that the map turns into a hash map with a keyed
//! hash, so a fleet whose names carry a run id (hundreds of thousands of
//! names) costs O(1) per event instead of a scan and a sorted insert.
//! Iteration order is unspecified; serialisation is sorted by name, so the
//! JSON is that of a `BTreeMap<String, V>`.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Index;
use std::sync::Arc;

use foldhash::quality::RandomState;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Entries kept in the scanned vector before the map becomes a hash map.
const SMALL: usize = 8;

#[derive(Debug, Clone)]
enum Repr<V> {
    Small(Vec<(Arc<str>, V)>),
    Large(HashMap<Arc<str>, V, RandomState>),
}

/// A map from names to values. Serialises as a JSON object sorted by name.
#[derive(Debug, Clone)]
pub struct NameMap<V> {
    repr: Repr<V>,
}

impl<V> Default for NameMap<V> {
    fn default() -> Self {
        NameMap {
            repr: Repr::Small(Vec::new()),
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
        match &self.repr {
            Repr::Small(v) => v.len(),
            Repr::Large(m) => m.len(),
        }
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&V> {
        match &self.repr {
            Repr::Small(v) => v.iter().find(|(k, _)| **k == *name).map(|(_, v)| v),
            Repr::Large(m) => m.get(name),
        }
    }

    /// Whether `name` has a value.
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The entries, in no particular order.
    pub fn iter(&self) -> Iter<'_, V> {
        match &self.repr {
            Repr::Small(v) => Iter::Small(v.iter()),
            Repr::Large(m) => Iter::Large(m.iter()),
        }
    }

    /// The names, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &Arc<str>> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// The values, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.iter().map(|(_, v)| v)
    }

    /// The entries sorted by name.
    pub fn sorted(&self) -> Vec<(&Arc<str>, &V)> {
        let mut all: Vec<_> = self.iter().collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        all
    }

    /// Applies `f` to the value of `key`, inserted as `V::default()` first
    /// if absent.
    pub(crate) fn update(&mut self, key: &Arc<str>, f: impl FnOnce(&mut V))
    where
        V: Default,
    {
        match &mut self.repr {
            Repr::Small(v) => {
                let i = v
                    .iter()
                    .position(|(k, _)| Arc::ptr_eq(k, key))
                    .or_else(|| v.iter().position(|(k, _)| **k == **key));
                if let Some(i) = i {
                    return f(&mut v[i].1);
                }
                if v.len() < SMALL {
                    v.push((Arc::clone(key), V::default()));
                    let last = v.len() - 1;
                    return f(&mut v[last].1);
                }
                let mut m: HashMap<Arc<str>, V, RandomState> =
                    HashMap::with_capacity_and_hasher(SMALL * 4, RandomState::default());
                m.extend(v.drain(..));
                self.repr = Repr::Large(m);
                self.update(key, f)
            }
            Repr::Large(m) => match m.get_mut(&**key) {
                Some(x) => f(x),
                None => f(m.entry(Arc::clone(key)).or_default()),
            },
        }
    }

    /// Removes `name`, returning its value.
    pub(crate) fn remove(&mut self, name: &str) -> Option<V> {
        match &mut self.repr {
            Repr::Small(v) => {
                let i = v.iter().position(|(k, _)| **k == *name)?;
                Some(v.swap_remove(i).1)
            }
            Repr::Large(m) => m.remove(name),
        }
    }

    /// Keeps the `keep` entries with the highest `activity` and folds every
    /// other one into the entry `other` (with `merge`), so that the map holds
    /// at most `keep + 1` names. `other` itself is never folded away.
    pub(crate) fn fold_least_active(
        &mut self,
        keep: usize,
        other: &Arc<str>,
        activity: impl Fn(&V) -> f64,
        merge: impl Fn(&mut V, &V),
    ) where
        V: Default,
    {
        let folded_other = self.remove(other);
        if self.len() <= keep {
            if let Some(o) = folded_other {
                self.update(other, |x| merge(x, &o));
            }
            return;
        }
        let entries: Vec<(Arc<str>, V)> = match std::mem::take(&mut self.repr) {
            Repr::Small(v) => v,
            Repr::Large(m) => m.into_iter().collect(),
        };
        let mut entries = entries;
        // Most active first; ties by name so that the outcome is
        // deterministic.
        entries.select_nth_unstable_by(keep, |a, b| {
            activity(&b.1)
                .total_cmp(&activity(&a.1))
                .then_with(|| a.0.cmp(&b.0))
        });
        let rest = entries.split_off(keep);
        let mut o = folded_other.unwrap_or_default();
        for (_, v) in &rest {
            merge(&mut o, v);
        }
        for (k, v) in entries {
            self.update(&k, |x| *x = v);
        }
        self.update(other, |x| *x = o);
    }
}

impl<V> Default for Repr<V> {
    fn default() -> Self {
        Repr::Small(Vec::new())
    }
}

/// An iterator over the entries of a [`NameMap`].
pub enum Iter<'a, V> {
    /// Over the scanned vector.
    Small(std::slice::Iter<'a, (Arc<str>, V)>),
    /// Over the hash map.
    Large(std::collections::hash_map::Iter<'a, Arc<str>, V>),
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (&'a Arc<str>, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Small(i) => i.next().map(|(k, v)| (k, v)),
            Iter::Large(i) => i.next(),
        }
    }
}

impl<V: PartialEq> PartialEq for NameMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
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
    type IntoIter = Iter<'a, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<V: Serialize> Serialize for NameMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self.sorted() {
            map.serialize_entry(&**k, v)?;
        }
        map.end()
    }
}

impl<'de, V: Deserialize<'de> + Default> Deserialize<'de> for NameMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de> + Default> Visitor<'de> for MapVisitor<V> {
            type Value = NameMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map from names to values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut map = NameMap::new();
                while let Some((k, v)) = access.next_entry::<String, V>()? {
                    // A repeated name keeps its last value, as in a BTreeMap.
                    map.update(&Arc::from(k), |x| *x = v);
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
    fn lookup_by_pointer_or_name_small_and_large() {
        for n in [3usize, 1000] {
            let mut m: NameMap<u32> = NameMap::new();
            let names: Vec<Arc<str>> = (0..n).map(|i| Arc::from(format!("n{i}"))).collect();
            for k in &names {
                m.update(k, |v| *v += 1);
            }
            // An equal key that is not the shared one finds the same entry.
            m.update(&Arc::from("n1"), |v| *v += 10);
            assert_eq!(m.len(), n);
            assert_eq!(m.get("n1"), Some(&11));
            assert_eq!(m["n0"], 1);
            assert!(!m.contains_key("zz"));
            assert_eq!(m.iter().count(), n);
        }
    }

    #[test]
    fn serialises_as_a_sorted_object() {
        for extra in [0usize, 20] {
            let mut m: NameMap<u32> = NameMap::new();
            for k in ["z", "a", "m"] {
                m.update(&Arc::from(k), |v| *v = 1);
            }
            for i in 0..extra {
                m.update(&Arc::from(format!("x{i:02}")), |v| *v = 2);
            }
            let json = serde_json::to_string(&m).unwrap();
            assert!(json.starts_with(r#"{"a":1,"m":1"#), "{json}");
            assert!(json.ends_with(r#""z":1}"#), "{json}");
            let back: NameMap<u32> = serde_json::from_str(&json).unwrap();
            assert_eq!(back, m);
        }
    }

    #[test]
    fn folding_keeps_the_most_active_and_sums_the_rest() {
        let mut m: NameMap<u64> = NameMap::new();
        for i in 0..100u64 {
            m.update(&Arc::from(format!("n{i:03}")), |v| *v = i);
        }
        let other: Arc<str> = Arc::from("(other)");
        m.fold_least_active(10, &other, |v| *v as f64, |a, b| *a += b);
        assert_eq!(m.len(), 11);
        for i in 90..100 {
            assert_eq!(m.get(&format!("n{i:03}")), Some(&i));
        }
        assert_eq!(m["(other)"], (0..90).sum::<u64>());
        // Folding again keeps `other` and adds to it.
        m.update(&Arc::from("late"), |v| *v = 1);
        m.fold_least_active(10, &other, |v| *v as f64, |a, b| *a += b);
        assert_eq!(m["(other)"], (0..90).sum::<u64>() + 1);
        assert_eq!(m.len(), 11);
    }
}
