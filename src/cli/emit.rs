//! `agentpulse emit TYPE [JSON]`: validate one event and record it in the
//! local log (the console shows it too, unless `--quiet`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use serde_json::Value;

use agentpulse::emitter::Emitter;
use agentpulse::event::NewEvent;
use agentpulse::pipeline::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The event type, e.g. agent_completed.
    event_type: String,
    /// The payload as a JSON object; read from stdin when absent or `-`.
    json: Option<String>,
    /// Directory of the JSONL log.
    #[arg(long, env = "AGENTPULSE_LOG_DIR", default_value = "logs")]
    log_dir: PathBuf,
    /// Unix seconds; now when absent.
    #[arg(long)]
    timestamp: Option<f64>,
    /// Dedup key: an event with a key already in the log is not recorded again.
    #[arg(long)]
    event_id: Option<String>,
    /// Do not print the event.
    #[arg(long, short, env = "AGENTPULSE_QUIET")]
    quiet: bool,
    /// Send to a running hub (e.g. http://127.0.0.1:3010) instead of
    /// recording locally.
    #[arg(long, env = "AGENTPULSE_HUB_URL", value_parser = super::hub_url)]
    hub: Option<String>,
    /// The hub's token.
    #[arg(long, env = "AGENTPULSE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    tls: super::TlsArgs,
}

pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let text = match args.json.as_deref() {
        None | Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the payload from stdin")?;
            s
        }
        Some(s) => s.to_string(),
    };
    let payload: Value = serde_json::from_str(&text).context("the payload is not valid JSON")?;
    let Value::Object(payload) = payload else {
        bail!("{}.payload: expected a JSON object", args.event_type);
    };
    if let Some(hub) = &args.hub {
        return send_to_hub(hub, args.token.as_deref(), &args, payload);
    }
    let config = super::load_config(config)?;
    let mut builder = Emitter::builder().config(config).log_dir(&args.log_dir);
    if args.quiet {
        builder = builder.quiet();
    }
    let emitter = builder.build()?;
    emitter.start()?;
    let mut event = NewEvent::new(args.event_type.as_str(), payload);
    event.timestamp = args.timestamp;
    event.event_id = args.event_id.map(String::into_boxed_str);
    let result = emitter.ingest_blocking(vec![event]);
    emitter.stop()?;
    let likely = emitter
        .schema()
        .likely_type(&args.event_type)
        .map(str::to_string);
    match result?.pop().expect("one result per event") {
        Ok(Outcome::Accepted(id)) => {
            if let Some(t) = likely {
                eprintln!(
                    "warning: undeclared event type `{}`; did you mean `{t}`?",
                    args.event_type
                );
            }
            eprintln!("recorded event {id} in {}", args.log_dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Ok(Outcome::Duplicate(id)) => {
            eprintln!("duplicate of event {id}: not recorded again");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

/// POSTs the event to a hub's `/events` and prints its answer.
fn send_to_hub(
    hub: &str,
    token: Option<&str>,
    args: &Args,
    payload: serde_json::Map<String, Value>,
) -> anyhow::Result<ExitCode> {
    let mut body = serde_json::json!({ "event_type": args.event_type, "payload": payload });
    if let Some(ts) = args.timestamp {
        body["timestamp"] = ts.into();
    }
    if let Some(id) = &args.event_id {
        body["event_id"] = id.as_str().into();
    }
    let url = format!("{hub}/events");
    let mut req = args
        .tls
        .agent(hub)?
        .post(&url)
        .timeout(std::time::Duration::from_secs(10));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let (status, text) = match req.send_json(body) {
        Ok(resp) => (resp.status(), resp.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_string().unwrap_or_default()),
        Err(e) => {
            return Err(super::unreachable(
                "the hub",
                hub,
                &super::serve_hint(hub),
                &e,
            ))
        }
    };
    if status == 401 || status == 403 {
        eprintln!("error: {}", super::token_refused(hub, status, token));
        return Ok(ExitCode::from(2));
    }
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status == 200 {
        for w in answer["warnings"].as_array().into_iter().flatten() {
            if let Some(text) = w["warning"].as_str() {
                eprintln!("warning: {text}");
            }
        }
        match answer["ids"].get(0).and_then(Value::as_u64) {
            Some(id) if answer["duplicates"] == 1 => eprintln!("duplicate of event {id}"),
            Some(id) => eprintln!("sent: event {id}"),
            None => eprintln!("sent"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let msg = answer["errors"][0]["error"]
        .as_str()
        .or_else(|| answer["error"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| answer.to_string());
    eprintln!("error: the hub answered {status}: {msg}");
    Ok(ExitCode::from(2))
}
