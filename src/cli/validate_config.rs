//! `agentpulse validate-config [FILE]`: checks a configuration file
//! (schema, destinations, metrics, alert rules, notifiers, budgets) without
//! starting anything, and prints the effective configuration (the file
//! laid over the built-in one) with where each entry came from.
//!
//! The printout is a list of sections ([`sections`]); a new section of the
//! configuration adds one function there.

use std::path::Path;
use std::process::ExitCode;

use serde_json::{json, Value};

use agentpulse::config::{Config, NotifierConfig, Source};
use agentpulse::schema::Schema;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file to check (or the global `--config`; neither: the built-in one).
    file: Option<std::path::PathBuf>,
    /// Print the effective configuration as JSON.
    #[arg(long)]
    json: bool,
}

/// One entry of the effective configuration.
struct Row {
    name: String,
    detail: String,
    source: Source,
}

/// One part of the printout.
struct Section {
    title: &'static str,
    rows: Vec<Row>,
}

pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let path = args.file.as_deref().or(config);
    let config = match agentpulse::config::load_or_builtin(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    let schema = Schema::from_config(&config)?;
    let sections = sections(&config, &schema)?;
    if args.json {
        let doc: serde_json::Map<String, Value> = sections
            .iter()
            .map(|s| {
                let rows: Vec<Value> = s
                    .rows
                    .iter()
                    .map(|r| json!({"name": r.name, "detail": r.detail, "source": r.source}))
                    .collect();
                (s.title.replace(' ', "_"), Value::Array(rows))
            })
            .collect();
        let doc = json!({
            "origin": config.origin,
            "ok": true,
            "warnings": config.warnings,
            "strict": config.strict,
            "sections": doc,
        });
        outln!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    let counts: Vec<String> = sections
        .iter()
        .filter(|s| s.title != "settings")
        .map(|s| match s.title {
            // Its first row is the built-in table, not a price of the file.
            "prices" => format!(
                "{} over the built-in table",
                super::plural(s.rows.len() as u64 - 1, singular(s.title), s.title)
            ),
            _ => super::plural(s.rows.len() as u64, singular(s.title), s.title),
        })
        .collect();
    let base = if path.is_none() {
        "the built-in configuration"
    } else if !config.warnings.is_empty() && config.sources.alerts.iter().all(Source::is_builtin) {
        "empty: the built-in configuration"
    } else if config.replace.all {
        "replaces the built-in configuration"
    } else {
        "extends the built-in configuration"
    };
    outln!(
        "{}: ok ({base}): {}{}",
        config.origin,
        counts.join(", "),
        if config.strict { ", strict" } else { "" }
    );
    for s in &sections {
        outln!();
        outln!("{} ({})", s.title, s.rows.len());
        let name_w = s.rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
        let detail_w = s
            .rows
            .iter()
            .map(|r| r.detail.chars().count())
            .max()
            .unwrap_or(0)
            .min(60);
        for r in &s.rows {
            let pad = detail_w.saturating_sub(r.detail.chars().count());
            outln!(
                "  {:<name_w$}  {}{}  {}",
                r.name,
                r.detail,
                " ".repeat(pad),
                r.source
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn singular(title: &str) -> &str {
    match title {
        "event types" => "event type",
        "alert rules" => "alert rule",
        "notifiers" => "notifier",
        "budgets" => "budget",
        "destinations" => "destination",
        "prices" => "price",
        other => other,
    }
}

/// The effective configuration, section by section.
fn sections(config: &Config, schema: &Schema) -> anyhow::Result<Vec<Section>> {
    Ok(vec![
        event_types(config, schema),
        alert_rules(config)?,
        notifiers(config),
        budgets(config),
        prices(config),
        destinations(config),
        settings(config),
    ])
}

fn event_types(config: &Config, schema: &Schema) -> Section {
    let rows = schema
        .declared_types()
        .into_iter()
        .map(|t| Row {
            name: t.to_string(),
            detail: schema
                .fields(t)
                .map(|f| f.map(|(n, _)| n).collect::<Vec<_>>().join(", "))
                .unwrap_or_default(),
            source: config.sources.events.get(t).cloned().unwrap_or_default(),
        })
        .collect();
    Section {
        title: "event types",
        rows,
    }
}

fn alert_rules(config: &Config) -> anyhow::Result<Section> {
    let rules = config.rules()?;
    let rows = rules
        .iter()
        .zip(&config.sources.alerts)
        .map(|(r, source)| Row {
            name: r.condition.to_string(),
            detail: format!(
                "→ {} (min {} samples, repeat {}): {}",
                r.action,
                r.min_samples,
                duration(r.repeat_interval),
                r.message
            ),
            source: source.clone(),
        })
        .collect();
    Ok(Section {
        title: "alert rules",
        rows,
    })
}

fn duration(secs: f64) -> String {
    for (unit, len) in [("d", 86_400.0), ("h", 3_600.0), ("m", 60.0)] {
        if secs >= len && (secs / len).fract() == 0.0 {
            return format!("{}{unit}", secs / len);
        }
    }
    format!("{secs}s")
}

fn notifiers(config: &Config) -> Section {
    let rows = config
        .notifiers
        .iter()
        .map(|(action, list)| Row {
            name: action.clone(),
            detail: if list.is_empty() {
                "(silenced)".to_string()
            } else {
                list.iter().map(notifier).collect::<Vec<_>>().join(", ")
            },
            source: config
                .sources
                .notifiers
                .get(action)
                .cloned()
                .unwrap_or_default(),
        })
        .collect();
    Section {
        title: "notifiers",
        rows,
    }
}

fn notifier(n: &NotifierConfig) -> String {
    match n {
        NotifierConfig::Console {} => "console".into(),
        NotifierConfig::Webhook { url, format, .. } => {
            format!(
                "webhook {url} ({})",
                serde_json::to_value(format)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or("json")
            )
        }
        NotifierConfig::Command { command } => format!("command {}", command.join(" ")),
    }
}

fn budgets(config: &Config) -> Section {
    let rows = config
        .budgets
        .iter()
        .zip(&config.sources.budgets)
        .map(|(b, source)| Row {
            name: format!("{} · {}", b.scope.as_str(), b.period.as_str()),
            detail: format!(
                "${} (warning at {}%)",
                b.limit_usd,
                (b.warn_at * 100.0).round()
            ),
            source: source.clone(),
        })
        .collect();
    Section {
        title: "budgets",
        rows,
    }
}

/// The built-in price table (one row) and the file's prices over it.
fn prices(config: &Config) -> Section {
    let table = agentpulse::otel::prices::Prices::builtin();
    let mut rows = vec![Row {
        name: "(table)".to_string(),
        detail: format!(
            "{} model names, prices as of {}",
            table.len(),
            table.table_date()
        ),
        source: agentpulse::config::merge::Source {
            file: agentpulse::config::merge::BUILTIN.to_string(),
            ..Default::default()
        },
    }];
    for (i, p) in config.prices.iter().enumerate() {
        let cache = match (p.cache_read_per_mtok, p.cache_write_per_mtok) {
            (None, None) => String::new(),
            (r, w) => format!(
                ", cache read ${}, write ${}",
                r.unwrap_or(p.input_per_mtok),
                w.unwrap_or(p.input_per_mtok)
            ),
        };
        rows.push(Row {
            name: p.model.clone(),
            detail: format!(
                "${} in, ${} out per million tokens{cache}",
                p.input_per_mtok, p.output_per_mtok
            ),
            source: agentpulse::config::merge::Source {
                file: config.origin.clone(),
                index: Some(i),
                line: None,
                overrides: table.get(&p.model).is_some(),
            },
        });
    }
    Section {
        title: "prices",
        rows,
    }
}

fn destinations(config: &Config) -> Section {
    let rows = config
        .destinations
        .iter()
        .map(|d| {
            let mut detail = vec![if d.enabled { "on" } else { "off" }.to_string()];
            detail.extend(d.path.clone());
            detail.extend(d.level.clone());
            detail.extend(d.url.clone());
            Row {
                name: d.kind.clone(),
                detail: detail.join(", "),
                source: config
                    .sources
                    .destinations
                    .get(&d.kind)
                    .cloned()
                    .unwrap_or_default(),
            }
        })
        .collect();
    Section {
        title: "destinations",
        rows,
    }
}

/// `3 tokens (hidden)` for a `tokens:` setting.
fn hidden_tokens(value: &Value) -> String {
    fn count(v: &Value) -> usize {
        match v {
            Value::Array(a) => a.len(),
            Value::Object(m) => m.values().map(count).sum(),
            Value::Null => 0,
            _ => 1,
        }
    }
    match count(value) {
        1 => "1 token (hidden)".to_owned(),
        n => format!("{n} tokens (hidden)"),
    }
}

fn settings(config: &Config) -> Section {
    let rows = config
        .sources
        .settings
        .iter()
        .map(|(name, value, source)| Row {
            name: name.clone(),
            detail: match value {
                // Never print a token: say how many.
                _ if name == "tokens" || name.starts_with("tokens.") => hidden_tokens(value),
                Value::String(s) => s.clone(),
                v => v.to_string(),
            },
            source: source.clone(),
        })
        .collect();
    Section {
        title: "settings",
        rows,
    }
}
