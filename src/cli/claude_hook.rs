//! `agentpulse claude-hook`: a Claude Code hook command. It reads the hook's
//! JSON from stdin, turns it into agentpulse events and posts them to a hub.
//!
//! | hook (`hook_event_name`) | event | main fields |
//! |---|---|---|
//! | `SessionStart` | `task_queued` | `task_id` = `session_id`, `feature` = the project directory's name, `est_cost` 0, `source` |
//! | `UserPromptSubmit` | `agent_started` | `agent` = `claude-code`, `prompt` (first 500 characters) |
//! | `PreToolUse` | `agent_started` | `agent` = `tool:<tool_name>`, `tool_use_id`, `tool_input` (abridged) |
//! | `PostToolUse` | `agent_completed` | `agent` = `tool:<tool_name>`, `status` `success` or `failed` (from `tool_response`), `tool_response` (abridged) |
//! | `PostToolUseFailure` | `agent_completed` | as above, `status` `failed`, `error` |
//! | `SubagentStart` | `agent_started` | `agent` = `agent_type` (else `subagent`), `agent_id` |
//! | `SubagentStop` | `agent_completed` | `agent` = `agent_type` (else `subagent`), `status` `success` |
//! | `Stop` | `agent_completed` | `agent` = `claude-code`, `status` `success`, `stop_hook_active` |
//! | `Notification` | `hitl_escalated` | `last_error` = `message`, `priority` `high` for a permission prompt, else `normal`, `attempts` 0 |
//! | `SessionEnd` | `session_ended` | `reason` |
//! | `PreCompact` | `context_compacted` | `trigger` |
//! | any other | `claude_hook` | `hook_event_name` |
//!
//! The session is the task (`task_id` = `session_id`). Every event also
//! carries `session_id`, `hook_event_name`, `cwd`, `transcript_path`,
//! `permission_mode`, and `agent_id` / `agent_type` inside a subagent, when
//! the hook gives them. `duration_ms` is the hook's own when it has one,
//! else 0 and `cost_usd` is 0 (hooks carry no cost): the hub measures busy
//! time from each `agent_started` to its `agent_completed` (same agent and
//! task). Tool events carry the event id `claude:<session>:<tool_use_id>:pre`
//! / `:post`, so a repeated hook call is kept once. Strings longer than 500
//! characters in `tool_input` / `tool_response` are cut (the original
//! length is kept beside them).
//!
//! A hook must never get in Claude's way: this command prints nothing on
//! stdout (some hooks' stdout goes into Claude's context), waits at most
//! `--timeout` for the hub, and exits 1 (a non-blocking error for Claude
//! Code, shown in its verbose mode), never 2 (which would block a tool),
//! when the hub cannot be reached. `--print` writes the events to stdout
//! instead of sending them, for trying a mapping out.

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Map, Value};

use agentpulse::event::now_unix;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The hub, e.g. http://127.0.0.1:3010.
    #[arg(
        long,
        env = "AGENTPULSE_HUB_URL",
        default_value = "http://127.0.0.1:3010",
        value_parser = super::hub_url
    )]
    hub: String,
    /// The hub's token.
    #[arg(long, env = "AGENTPULSE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    tls: super::TlsArgs,
    /// Seconds to wait for the hub.
    #[arg(long, default_value_t = 2.0)]
    timeout: f64,
    /// Name of the main agent.
    #[arg(long, default_value = "claude-code")]
    agent: String,
    /// Print the events as JSON lines on stdout instead of sending them.
    #[arg(long)]
    print: bool,
}

/// Longest string kept whole in tool inputs and responses.
const MAX_STRING: usize = 500;
/// Most items kept of an array in tool inputs and responses.
const MAX_ITEMS: usize = 20;
/// Deepest nesting kept in tool inputs and responses.
const MAX_DEPTH: usize = 6;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the hook input from stdin")?;
    let hook: Value = match serde_json::from_str(&input) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            eprintln!("agentpulse claude-hook: stdin is not a JSON object; nothing sent");
            return Ok(ExitCode::FAILURE);
        }
    };
    let events = map_hook(&hook, &args.agent, now_unix());
    if args.print {
        for e in &events {
            outln!("{e}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let timeout = Duration::from_secs_f64(args.timeout.clamp(0.05, 60.0));
    let url = format!("{}/events", args.hub.trim().trim_end_matches('/'));
    let agent = match args.tls.agent(&args.hub) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("agentpulse claude-hook: {e:#}; nothing sent");
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut req = agent
        .post(&url)
        .timeout(timeout)
        .set("Content-Type", "application/json");
    if let Some(t) = args.token.as_deref().filter(|t| !t.is_empty()) {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let body = Value::Array(events).to_string();
    match req.send_string(&body) {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(ureq::Error::Status(code, resp)) => {
            let text = resp.into_string().unwrap_or_default();
            eprintln!("agentpulse claude-hook: the hub at {url} answered {code}: {text}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("agentpulse claude-hook: cannot reach the hub at {url}: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The agentpulse events (`{"event_type","timestamp","payload"[,"event_id"]}`)
/// for one hook input, stamped `now`.
pub fn map_hook(hook: &Value, main_agent: &str, now: f64) -> Vec<Value> {
    let s = |k: &str| hook.get(k).and_then(Value::as_str);
    let hook_name = s("hook_event_name").unwrap_or("unknown");
    let session = s("session_id").unwrap_or("unknown-session");
    let mut p = Map::new();
    p.insert("task_id".into(), json!(session));
    let subagent = s("agent_type")
        .map(str::to_string)
        .or_else(|| s("agent_id").map(|_| "subagent".to_string()));
    let tool = s("tool_name").unwrap_or("unknown");
    let tool_agent = format!("tool:{tool}");
    let mut event_id = None;
    let event_type = match hook_name {
        "SessionStart" => {
            let feature = s("cwd")
                .and_then(|c| std::path::Path::new(c).file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| main_agent.to_string());
            p.insert("feature".into(), json!(feature));
            p.insert("est_cost".into(), json!(0.0));
            p.insert("timestamp".into(), json!(now));
            copy(hook, &mut p, &["source", "model"]);
            "task_queued"
        }
        "UserPromptSubmit" => {
            started(&mut p, main_agent, hook, json!([]));
            if let Some(prompt) = s("prompt") {
                p.insert("prompt".into(), json!(cut(prompt)));
                p.insert("prompt_chars".into(), json!(prompt.chars().count()));
            }
            "agent_started"
        }
        "PreToolUse" => {
            started(&mut p, &tool_agent, hook, json!([tool]));
            p.insert("tool_name".into(), json!(tool));
            copy(hook, &mut p, &["tool_use_id"]);
            if let Some(input) = hook.get("tool_input") {
                p.insert("tool_input".into(), abridge(input, 0));
            }
            event_id = s("tool_use_id").map(|id| format!("claude:{session}:{id}:pre"));
            "agent_started"
        }
        "PostToolUse" | "PostToolUseFailure" => {
            let response = hook.get("tool_response");
            let failed = hook_name == "PostToolUseFailure" || response.is_some_and(tool_failed);
            completed(
                &mut p,
                &tool_agent,
                hook,
                if failed { "failed" } else { "success" },
            );
            p.insert("tool_name".into(), json!(tool));
            copy(hook, &mut p, &["tool_use_id", "error", "is_interrupt"]);
            if let Some(input) = hook.get("tool_input") {
                p.insert("tool_input".into(), abridge(input, 0));
            }
            if let Some(r) = response {
                p.insert("tool_response".into(), abridge(r, 0));
            }
            event_id = s("tool_use_id").map(|id| format!("claude:{session}:{id}:post"));
            "agent_completed"
        }
        "SubagentStart" => {
            let name = subagent.clone().unwrap_or_else(|| "subagent".into());
            started(&mut p, &name, hook, json!([]));
            "agent_started"
        }
        "SubagentStop" => {
            let name = subagent.clone().unwrap_or_else(|| "subagent".into());
            completed(&mut p, &name, hook, "success");
            copy(hook, &mut p, &["stop_hook_active", "agent_transcript_path"]);
            "agent_completed"
        }
        "Stop" => {
            completed(&mut p, main_agent, hook, "success");
            copy(hook, &mut p, &["stop_hook_active"]);
            "agent_completed"
        }
        "Notification" => {
            let message = s("message").unwrap_or("");
            let kind = s("notification_type").unwrap_or("");
            let permission =
                kind == "permission_prompt" || message.to_ascii_lowercase().contains("permission");
            p.insert("attempts".into(), json!(0));
            p.insert("last_error".into(), json!(cut(message)));
            p.insert(
                "priority".into(),
                json!(if permission { "high" } else { "normal" }),
            );
            copy(hook, &mut p, &["notification_type", "title"]);
            "hitl_escalated"
        }
        "SessionEnd" => {
            copy(hook, &mut p, &["reason"]);
            "session_ended"
        }
        "PreCompact" => {
            copy(hook, &mut p, &["trigger"]);
            "context_compacted"
        }
        _ => "claude_hook",
    };
    // Context every event carries.
    p.insert("session_id".into(), json!(session));
    p.insert("hook_event_name".into(), json!(hook_name));
    copy(
        hook,
        &mut p,
        &[
            "cwd",
            "transcript_path",
            "permission_mode",
            "agent_id",
            "agent_type",
        ],
    );
    let mut event = json!({"event_type": event_type, "timestamp": now, "payload": p});
    if let Some(id) = event_id {
        if id.len() <= agentpulse::event::MAX_EVENT_ID_LEN {
            event["event_id"] = json!(id);
        }
    }
    vec![event]
}

fn started(p: &mut Map<String, Value>, agent: &str, hook: &Value, tools: Value) {
    p.insert("agent".into(), json!(agent));
    let model = hook
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("claude-code");
    p.insert("model".into(), json!(model));
    p.insert("tools".into(), tools);
}

fn completed(p: &mut Map<String, Value>, agent: &str, hook: &Value, status: &str) {
    p.insert("agent".into(), json!(agent));
    p.insert("status".into(), json!(status));
    let duration = hook
        .get("duration_ms")
        .and_then(Value::as_f64)
        .filter(|d| d.is_finite() && *d >= 0.0)
        .unwrap_or(0.0);
    p.insert("duration_ms".into(), json!(duration));
    p.insert("cost_usd".into(), json!(0.0));
}

/// Copies the fields of `hook` named in `keys` that it has.
fn copy(hook: &Value, p: &mut Map<String, Value>, keys: &[&str]) {
    for k in keys {
        if let Some(v) = hook.get(*k).filter(|v| !v.is_null()) {
            p.insert((*k).to_string(), v.clone());
        }
    }
}

/// Whether a tool's response reports a failure.
fn tool_failed(r: &Value) -> bool {
    let flag = |k: &str| r.get(k).and_then(Value::as_bool);
    flag("is_error") == Some(true)
        || flag("success") == Some(false)
        || flag("interrupted") == Some(true)
        || r.get("error")
            .is_some_and(|e| e.as_str().is_some_and(|s| !s.is_empty()) || e.is_object())
}

fn cut(s: &str) -> String {
    if s.chars().count() <= MAX_STRING {
        return s.to_string();
    }
    let head: String = s.chars().take(MAX_STRING).collect();
    format!("{head}…")
}

/// `v` with long strings cut (their length kept as `<key>_chars`), long
/// arrays shortened and deep nesting replaced, so that an event stays small.
fn abridge(v: &Value, depth: usize) -> Value {
    if depth >= MAX_DEPTH {
        return json!("…");
    }
    match v {
        Value::String(s) => json!(cut(s)),
        Value::Array(items) => {
            let mut out: Vec<Value> = items
                .iter()
                .take(MAX_ITEMS)
                .map(|i| abridge(i, depth + 1))
                .collect();
            if items.len() > MAX_ITEMS {
                out.push(json!(format!("… {} more", items.len() - MAX_ITEMS)));
            }
            Value::Array(out)
        }
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, val) in map {
                if let Value::String(s) = val {
                    let n = s.chars().count();
                    if n > MAX_STRING {
                        out.insert(format!("{k}_chars"), json!(n));
                    }
                }
                out.insert(k.clone(), abridge(val, depth + 1));
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}
