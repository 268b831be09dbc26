//! Where a path such as `alerts[3].action` is in a YAML text: its line and
//! column, for error messages that checks written after parsing produce.
//!
//! serde_norway only reports positions in its own errors, so the text is
//! parsed once more with a seed that follows the path and fails on purpose
//! at its last key (or element): the parser attaches that node's position
//! to the error.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// Splits `alerts[3].action` (or `notifiers.page[0].url`) into steps.
pub(crate) fn parse_path(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key.to_string()));
        }
        while let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { break };
            if let Ok(i) = r[..end].parse() {
                out.push(Seg::Index(i));
            }
            rest = &r[end + 1..];
        }
    }
    out
}

/// 1-based line and column of `path` in `text`, if it is there.
pub(crate) fn locate(text: &str, path: &[Seg]) -> Option<(usize, usize)> {
    if path.is_empty() {
        return None;
    }
    let de = serde_norway::Deserializer::from_str(text);
    match (Find { path }).deserialize(de) {
        Ok(()) => None,
        Err(e) if e.to_string().contains(HERE) => e.location().map(|l| (l.line(), l.column())),
        Err(_) => None,
    }
}

/// The message of the deliberate error.
const HERE: &str = "agentpulse-locate-here";

struct Find<'p> {
    path: &'p [Seg],
}

impl<'de> DeserializeSeed<'de> for Find<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.path.first() {
            None => d.deserialize_any(Here),
            Some(Seg::Key(_)) => d.deserialize_map(Walk(self.path)),
            Some(Seg::Index(_)) => d.deserialize_seq(Walk(self.path)),
        }
    }
}

/// Fails at whatever node it is given.
struct Here;

impl<'de> Visitor<'de> for Here {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("anything")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(HERE))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(HERE))
    }
}

/// A key that fails when it is the one sought and the path ends there.
struct KeySeed<'a> {
    want: &'a str,
    last: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        if v == self.want && self.last {
            return Err(E::custom(HERE));
        }
        Ok(v == self.want)
    }
    // Keys that are not strings (numbers, booleans) are never sought.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

struct Walk<'p>(&'p [Seg]);

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping or a sequence")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some(Seg::Key(want)) = self.0.first() else {
            return Ok(());
        };
        let last = self.0.len() == 1;
        while let Some(found) = map.next_key_seed(KeySeed { want, last })? {
            if found {
                return map.next_value_seed(Find { path: &self.0[1..] });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some(&Seg::Index(want)) = self.0.first() else {
            return Ok(());
        };
        for _ in 0..want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Find { path: &self.0[1..] })?;
        Ok(())
    }

    // Anything else does not hold the path.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
version: 1
alerts:
  - condition: \"events > 1\"
    action: page
  - {condition: \"events > 2\", action: pager}
notifiers:
  page:
    - type: webhook
      url: http://x
";

    fn at(path: &str) -> Option<(usize, usize)> {
        locate(TEXT, &parse_path(path))
    }

    #[test]
    fn paths_split() {
        assert_eq!(
            parse_path("notifiers.page[0].url"),
            [
                Seg::Key("notifiers".into()),
                Seg::Key("page".into()),
                Seg::Index(0),
                Seg::Key("url".into())
            ]
        );
        assert_eq!(
            parse_path("alerts[3]"),
            [Seg::Key("alerts".into()), Seg::Index(3)]
        );
    }

    #[test]
    fn keys_and_elements_are_found() {
        assert_eq!(at("version"), Some((1, 1)));
        assert_eq!(at("alerts[0].action"), Some((4, 5)));
        assert_eq!(at("alerts[1].action"), Some((5, 31)));
        assert_eq!(at("alerts[1]"), Some((5, 5)));
        assert_eq!(at("notifiers.page[0].url"), Some((9, 7)));
        assert_eq!(at("alerts[2].action"), None);
        assert_eq!(at("budgets"), None);
        assert_eq!(at("version.x"), None);
        assert_eq!(locate("", &parse_path("x")), None);
        assert_eq!(locate("a: [", &parse_path("b")), None);
    }
}
