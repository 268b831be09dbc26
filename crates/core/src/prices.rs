//! Costs from tokens: the embedded price table (`prices.yaml` beside this
//! file, with its sources and date), extended and overridden by the
//! configuration's `prices:` section ([`crate::config::PriceConfig`]).
//!
//! - **Names match after normalisation** ([`normalize`]): lower case; the
//!   part after the last `/` (`anthropic/claude-sonnet-4.5`,
//!   `models/gemini-2.5-pro`); a Bedrock-style vendor prefix
//!   (`us.anthropic.`, `anthropic.`) and version suffix (`-v1:0`) dropped; a
//!   `@...` suffix (Vertex: `@20250929`) and a `[...]` suffix (`[1m]`)
//!   dropped; `.` and `_` read as `-`; then a trailing `-latest`, date
//!   (`-20250929`, `-2025-09-29`) or three-digit version (`-001`) dropped.
//!   `claude-sonnet-4.5`, `claude-sonnet-4-5-20250929` and
//!   `us.anthropic.claude-sonnet-4-5-20250929-v1:0` are one model. Nothing
//!   fuzzier: `gpt-5` never prices `gpt-5-mini`.
//! - **Tokens** are disjoint ([`Tokens`]): uncached input, output, cache
//!   reads, cache writes, each at its own price. A cache price left out of a
//!   `prices:` entry is the input price.
//! - **Cost** = Σ tokens × price / 10⁶, summed before the one division so a
//!   configured price gives the exact decimal result (1,000 input tokens at
//!   2.0 and 500 output at 10.0 cost 0.007, not 0.0070000000000000001).
//! - The configuration wins over the table; within the configuration a name
//!   may be priced once (checked at load).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The embedded table, as shipped.
pub const PRICE_TABLE_YAML: &str = include_str!("prices.yaml");

/// Where a price came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceSource {
    /// The configuration's `prices:` section.
    Config,
    /// The embedded table.
    Table,
}

impl PriceSource {
    /// How it is named in events (`cost_source`).
    pub fn as_str(self) -> &'static str {
        match self {
            PriceSource::Config => "config_price",
            PriceSource::Table => "price_table",
        }
    }
}

/// USD per million tokens of one model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// Uncached input tokens.
    pub input: f64,
    /// Output tokens.
    pub output: f64,
    /// Input tokens read from a cache.
    pub cache_read: f64,
    /// Input tokens written to a cache.
    pub cache_write: f64,
    /// Where it came from.
    pub source: PriceSource,
}

impl Price {
    fn from_config(p: &PriceConfig, source: PriceSource) -> Price {
        Price {
            input: p.input_per_mtok,
            output: p.output_per_mtok,
            cache_read: p.cache_read_per_mtok.unwrap_or(p.input_per_mtok),
            cache_write: p.cache_write_per_mtok.unwrap_or(p.input_per_mtok),
            source,
        }
    }

    /// The cost of `t` in USD.
    pub fn cost(&self, t: &Tokens) -> f64 {
        (t.input as f64 * self.input
            + t.output as f64 * self.output
            + t.cache_read as f64 * self.cache_read
            + t.cache_write as f64 * self.cache_write)
            / 1_000_000.0
    }
}

/// Token counts of one model call, disjoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Input tokens neither read from nor written to a cache.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Input tokens read from a cache.
    pub cache_read: u64,
    /// Input tokens written to a cache.
    pub cache_write: u64,
}

impl Tokens {
    /// Whether every count is 0.
    pub fn is_zero(&self) -> bool {
        *self == Tokens::default()
    }
}

/// Why the price table could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("price table: {0}")]
pub struct PriceTableError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    #[allow(dead_code)] // Documentation, kept in the file.
    source: String,
    date: String,
    prices: Vec<PriceConfig>,
}

/// The prices in force: the configuration's over the table's.
#[derive(Debug, Clone)]
pub struct Prices {
    by_name: HashMap<String, Price>,
    date: String,
}

impl Prices {
    /// The embedded table alone.
    pub fn builtin() -> Prices {
        Prices::new(&[]).expect("the embedded price table is valid")
    }

    /// The embedded table, extended and overridden by `config` (the
    /// configuration's `prices:`, already checked at load).
    pub fn new(config: &[PriceConfig]) -> Result<Prices, PriceTableError> {
        let table: TableFile =
            serde_norway::from_str(PRICE_TABLE_YAML).map_err(|e| PriceTableError(e.to_string()))?;
        let mut by_name = HashMap::new();
        for (entries, source) in [
            (&table.prices, PriceSource::Table),
            (&config.to_vec(), PriceSource::Config),
        ] {
            for (i, p) in entries.iter().enumerate() {
                p.check()
                    .map_err(|e| PriceTableError(format!("prices[{i}].{e}")))?;
                let price = Price::from_config(p, source);
                for name in std::iter::once(&p.model).chain(&p.aliases) {
                    by_name.insert(normalize(name), price);
                }
            }
        }
        Ok(Prices {
            by_name,
            date: table.date,
        })
    }

    /// The date of the embedded table's prices.
    pub fn table_date(&self) -> &str {
        &self.date
    }

    /// The price of `model`, if it has one.
    pub fn get(&self, model: &str) -> Option<&Price> {
        // A name already in normal form needs no normalising (normalize is
        // idempotent, so a hit is the answer it would give).
        self.by_name
            .get(model)
            .or_else(|| self.by_name.get(&normalize(model)))
    }

    /// Models priced (names after normalisation).
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no model is priced.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Vendor prefixes of Bedrock-style model ids (`us.anthropic.claude-...`).
const VENDORS: [&str; 8] = [
    "anthropic.",
    "openai.",
    "google.",
    "meta.",
    "mistral.",
    "cohere.",
    "amazon.",
    "deepseek.",
];

/// A model name as the price table keys it (see the module doc).
pub fn normalize(model: &str) -> String {
    let mut s = model.trim().to_ascii_lowercase();
    if let Some(i) = s.rfind('/') {
        s.drain(..=i);
    }
    // `us.anthropic.claude-...` → `claude-...`: a vendor prefix, with at
    // most one short region before it.
    for v in VENDORS {
        if let Some(i) = s.find(v) {
            let before = &s[..i];
            let region_ok = before.is_empty()
                || (before.ends_with('.')
                    && before.len() <= 8
                    && before[..before.len() - 1]
                        .bytes()
                        .all(|b| b.is_ascii_lowercase()));
            if region_ok {
                s.drain(..i + v.len());
                break;
            }
        }
    }
    for cut in ['@', '['] {
        if let Some(i) = s.find(cut) {
            s.truncate(i);
        }
    }
    // Bedrock's `-v1:0` / `-v2`, or a bare `:0`.
    if let Some(i) = s.rfind(':') {
        if s[i + 1..].bytes().all(|b| b.is_ascii_digit()) {
            s.truncate(i);
        }
    }
    if let Some(i) = s.rfind("-v") {
        if i + 2 < s.len() && s[i + 2..].bytes().all(|b| b.is_ascii_digit()) {
            s.truncate(i);
        }
    }
    let mut s: String = s
        .chars()
        .map(|c| if c == '.' || c == '_' { '-' } else { c })
        .collect();
    loop {
        let before = s.len();
        if let Some(rest) = s.strip_suffix("-latest") {
            s.truncate(rest.len());
        }
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        // -20250929
        if s.len() > 9 && s.as_bytes()[s.len() - 9] == b'-' && digits(&s[s.len() - 8..]) {
            s.truncate(s.len() - 9);
        }
        // -2025-09-29
        if s.len() > 11 {
            let t = &s[s.len() - 11..];
            let b = t.as_bytes();
            if b[0] == b'-'
                && b[5] == b'-'
                && b[8] == b'-'
                && digits(&t[1..5])
                && digits(&t[6..8])
                && digits(&t[9..])
            {
                s.truncate(s.len() - 11);
            }
        }
        // -001
        if s.len() > 4 && s.as_bytes()[s.len() - 4] == b'-' && digits(&s[s.len() - 3..]) {
            s.truncate(s.len() - 4);
        }
        if s.len() == before {
            break;
        }
    }
    s
}

/// One `prices:` entry (and one row of the built-in table): USD per million
/// tokens of a model.
///
/// ```yaml
/// prices:
///   - model: my-model
///     input_per_mtok: 2.0
///     output_per_mtok: 10.0
///     cache_read_per_mtok: 0.2     # optional; default: the input price
///     cache_write_per_mtok: 2.5    # optional; default: the input price
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// The model name (matched after normalisation, see
    /// [`normalize`]).
    pub model: String,
    /// Other names of the same model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Input (prompt) tokens not read from or written to a cache.
    pub input_per_mtok: f64,
    /// Output (completion) tokens.
    pub output_per_mtok: f64,
    /// Input tokens read from the provider's cache (default: the input price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_per_mtok: Option<f64>,
    /// Input tokens written to the provider's cache (default: the input price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_mtok: Option<f64>,
}

/// The largest price per million tokens taken (USD).
pub const MAX_PRICE_PER_MTOK: f64 = 1_000_000.0;

impl PriceConfig {
    /// Checks the entry; the error names the field (`input_per_mtok: ...`).
    pub fn check(&self) -> Result<(), String> {
        if self.model.trim().is_empty() {
            return Err("model: expected a non-empty model name".into());
        }
        for (i, a) in self.aliases.iter().enumerate() {
            if a.trim().is_empty() {
                return Err(format!("aliases[{i}]: expected a non-empty model name"));
            }
        }
        let prices = [
            ("input_per_mtok", Some(self.input_per_mtok)),
            ("output_per_mtok", Some(self.output_per_mtok)),
            ("cache_read_per_mtok", self.cache_read_per_mtok),
            ("cache_write_per_mtok", self.cache_write_per_mtok),
        ];
        for (name, v) in prices {
            if let Some(v) = v {
                if !(v.is_finite() && (0.0..=MAX_PRICE_PER_MTOK).contains(&v)) {
                    return Err(format!(
                        "{name}: expected USD per million tokens, a number in 0..=1000000, got {v}"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise() {
        for (raw, want) in [
            ("claude-sonnet-4.5", "claude-sonnet-4-5"),
            ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
            ("Claude-Sonnet-4-5@20250929", "claude-sonnet-4-5"),
            (
                "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                "claude-sonnet-4-5",
            ),
            (
                "anthropic.claude-3-5-haiku-20241022-v1:0",
                "claude-3-5-haiku",
            ),
            ("anthropic/claude-sonnet-4.5", "claude-sonnet-4-5"),
            ("claude-opus-4-1-20250805[1m]", "claude-opus-4-1"),
            ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
            ("gpt-4o-2024-08-06", "gpt-4o"),
            ("gpt-4.1-mini", "gpt-4-1-mini"),
            ("openai/gpt-5", "gpt-5"),
            ("models/gemini-2.5-pro", "gemini-2-5-pro"),
            ("gemini-2.0-flash-001", "gemini-2-0-flash"),
            ("o4-mini", "o4-mini"),
            ("my_model", "my-model"),
        ] {
            assert_eq!(normalize(raw), want, "{raw}");
            assert_eq!(normalize(want), want, "idempotent: {want}");
        }
    }

    #[test]
    fn the_table_prices_current_models_of_each_vendor() {
        let p = Prices::builtin();
        for m in [
            "claude-sonnet-4-5-20250929",
            "claude-opus-4-1",
            "claude-haiku-4-5",
            "claude-sonnet-5",
            "gpt-5",
            "gpt-4o-mini",
            "gpt-5.4-mini",
            "gemini-2.5-flash",
            "gemini-3-pro-preview",
        ] {
            assert!(p.get(m).is_some(), "{m} has no price");
        }
        assert!(p.get("gpt-5-mini").unwrap().input < p.get("gpt-5").unwrap().input);
        assert!(p.get("my-model").is_none());
        assert_eq!(
            p.get("claude-sonnet-4.5").unwrap().source,
            PriceSource::Table
        );
        assert_eq!(p.table_date(), "2026-12-02");
    }

    #[test]
    fn config_extends_and_overrides_and_costs_are_exact() {
        let cfg = |model: &str, i: f64, o: f64| PriceConfig {
            model: model.into(),
            aliases: vec![],
            input_per_mtok: i,
            output_per_mtok: o,
            cache_read_per_mtok: None,
            cache_write_per_mtok: None,
        };
        let p = Prices::new(&[cfg("my-model", 2.0, 10.0), cfg("gpt-5", 1.0, 1.0)]).unwrap();
        let mine = p.get("My_Model-20260101").unwrap();
        assert_eq!(mine.source, PriceSource::Config);
        let t = Tokens {
            input: 1000,
            output: 500,
            ..Tokens::default()
        };
        assert_eq!(mine.cost(&t), 0.007);
        // Cache prices default to the input price.
        let cached = Tokens {
            cache_read: 1_000_000,
            cache_write: 1_000_000,
            ..Tokens::default()
        };
        assert_eq!(mine.cost(&cached), 4.0);
        assert_eq!(p.get("gpt-5").unwrap().input, 1.0);
        assert_eq!(p.get("gpt-5").unwrap().source, PriceSource::Config);
        // The table's cache prices.
        let s = Prices::builtin();
        let sonnet = s.get("claude-sonnet-4-5").unwrap();
        let t = Tokens {
            input: 1_000_000,
            output: 1_000_000,
            cache_read: 1_000_000,
            cache_write: 1_000_000,
        };
        assert_eq!(sonnet.cost(&t), 3.0 + 15.0 + 0.3 + 3.75);
    }
}
