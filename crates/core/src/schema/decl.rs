//! The `events:` section of the configuration: what a file declares,
//! before it is checked into a [`super::Schema`].

use serde::Deserialize;

/// One declared event type.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventDecl {
    /// The event type name.
    #[serde(rename = "on")]
    pub on: String,
    /// The fields its payload must carry.
    #[serde(default)]
    pub emit: Vec<FieldDecl>,
}

/// A field of an event declaration: a bare name, or `name: kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FieldDecl {
    /// A field whose kind is inferred from its name.
    Name(String),
    /// A field with an explicit kind.
    Typed(std::collections::BTreeMap<String, String>),
}
