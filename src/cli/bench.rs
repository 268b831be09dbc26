//! `agentpulse bench`: a load generator against a running hub.
//!
//! - `bench ingest`: HTTP NDJSON ingest throughput.
//! - `bench otlp`: OTLP/HTTP protobuf ingest of GenAI spans (agent runs of
//!   an `invoke_agent`, two `chat` and an `execute_tool` span), batches of
//!   512 (the SDKs' default): spans/s.
//! - `bench fanout`: S stream subscribers, events posted at a fixed rate
//!   (or, with `--rate 0`, as fast as the hub takes them: the ingest rate);
//!   checks every event reaches every subscriber and reports the
//!   emit-to-receive latency histogram. `--lagging K` adds K readers that
//!   throttle themselves (`--lag-rate` events/s each), so they fall behind
//!   the ring and are served from the log; `--catch-up` then times one
//!   reader reading everything from the start.
//! - `bench idle`: opens N idle stream connections and reports the hub's
//!   resident memory per connection (`--pid` of the hub).
//! - `bench names`: a hub that has seen N distinct agent names: the rate
//!   of one-event POSTs (as `curl` sends them) and the time and size of
//!   `GET /api/metrics`.
//! - `bench single`: sequential one-event `POST /events` on one keep-alive
//!   connection (the way a hook or `curl --next` sends them): requests/s
//!   and the p50/p99 round trip. Every answer is checked to be a 200.
//! - `bench tasks`: a hub that has taken N events of tasks of 10 events
//!   each: the latency of `GET /api/tasks/{id}` for the oldest task (read
//!   from the log through the task index), one in the middle and the
//!   newest (in the ring).
//! - `bench pipeline`: the in-process pipeline (validation, JSONL log with
//!   durability `batch`, metrics; no console): events/s, and the CPU time
//!   every thread spent per event (run under `taskset -c 0` for the
//!   one-core figure).
//!
//! Bounded in count and time; loopback only. Raise the file limit for many
//! connections (`ulimit -n 65536`) in the shells of both the hub and this.

use std::io::Read;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// HTTP NDJSON ingest throughput.
    Ingest {
        /// The hub.
        #[arg(long, env = "AGENTPULSE_HUB_URL", default_value = "http://127.0.0.1:3010", value_parser = super::hub_url)]
        hub: String,
        /// Events to send in all.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Events per request.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Concurrent connections.
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// OTLP/HTTP protobuf ingest of GenAI spans.
    Otlp {
        /// The hub.
        #[arg(long, default_value = "http://127.0.0.1:3010")]
        hub: String,
        /// Spans to send in all.
        #[arg(long, default_value_t = 1_048_576)]
        spans: u64,
        /// Spans per request (a multiple of 4: whole agent runs).
        #[arg(long, default_value_t = 512)]
        batch: usize,
        /// Concurrent connections.
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// Fan-out: subscribers, a fixed event rate, latency histogram.
    Fanout {
        /// The hub.
        #[arg(long, env = "AGENTPULSE_HUB_URL", default_value = "http://127.0.0.1:3010", value_parser = super::hub_url)]
        hub: String,
        /// Stream subscribers.
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        /// Post the events to this hub instead of `--hub` (another hub of
        /// the same cluster: the latency across hubs).
        #[arg(long, value_parser = super::hub_url)]
        post_to: Option<String>,
        /// Events per second posted (0: as fast as the hub takes them).
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Readers that throttle themselves, besides the subscribers.
        #[arg(long, default_value_t = 0)]
        lagging: usize,
        /// Events per second each lagging reader takes at most.
        #[arg(long, default_value_t = 1000)]
        lag_rate: u64,
        /// After sending, time one reader reading everything from the start.
        #[arg(long)]
        catch_up: bool,
    },
    /// Idle connections: the hub's memory per connection.
    Idle {
        /// The hub.
        #[arg(long, env = "AGENTPULSE_HUB_URL", default_value = "http://127.0.0.1:3010", value_parser = super::hub_url)]
        hub: String,
        /// Connections to open.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// The hub's process id (for its RSS).
        #[arg(long)]
        pid: u32,
    },
    /// Distinct agent names: one-event POST rate and `/api/metrics` time.
    Names {
        /// The hub.
        #[arg(long, default_value = "http://127.0.0.1:3010")]
        hub: String,
        /// Distinct agent names sent first (and cycled through after).
        #[arg(long, default_value_t = 100_000)]
        agents: u64,
        /// Seconds of one-event POSTs.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent connections posting.
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// Sequential one-event POSTs on one keep-alive connection.
    Single {
        /// The hub.
        #[arg(long, env = "AGENTPULSE_HUB_URL", default_value = "http://127.0.0.1:3010", value_parser = super::hub_url)]
        hub: String,
        /// Requests timed (after `--warmup` untimed ones).
        #[arg(long, default_value_t = 50_000)]
        requests: u64,
        /// Requests sent before the clock starts.
        #[arg(long, default_value_t = 1000)]
        warmup: u64,
    },
    /// `GET /api/tasks/{id}` latency after N task events.
    Tasks {
        /// The hub (a fresh one: its log should hold only these events).
        #[arg(long, env = "AGENTPULSE_HUB_URL", default_value = "http://127.0.0.1:3010", value_parser = super::hub_url)]
        hub: String,
        /// Events to send first (tasks of 10 events each).
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Requests timed per task.
        #[arg(long, default_value_t = 200)]
        requests: usize,
    },
    /// The in-process pipeline: validation + JSONL (`batch`) + metrics.
    Pipeline {
        /// Events to emit in all.
        #[arg(long, default_value_t = 2_000_000)]
        events: u64,
        /// Where the log goes (a temporary directory by default).
        #[arg(long)]
        log_dir: Option<std::path::PathBuf>,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.what {
        What::Ingest {
            hub,
            events,
            batch,
            connections,
        } => ingest(&hub, events, batch.max(1), connections.max(1)),
        What::Otlp {
            hub,
            spans,
            batch,
            connections,
        } => otlp(&hub, spans, batch.max(4), connections.max(1)),
        What::Fanout {
            hub,
            subscribers,
            post_to,
            rate,
            seconds,
            lagging,
            lag_rate,
            catch_up,
        } => fanout(
            &hub,
            Fanout {
                subscribers,
                post_to,
                rate,
                seconds: seconds.clamp(1, 600),
                lagging,
                lag_rate: lag_rate.max(1),
                catch_up,
            },
        ),
        What::Idle {
            hub,
            connections,
            pid,
        } => idle(&hub, connections, pid),
        What::Names {
            hub,
            agents,
            seconds,
            connections,
        } => names(
            &hub,
            agents.max(1),
            seconds.clamp(1, 600),
            connections.max(1),
        ),
        What::Single {
            hub,
            requests,
            warmup,
        } => single(&hub, requests.max(1), warmup),
        What::Tasks {
            hub,
            events,
            requests,
        } => tasks(&hub, events.max(10), requests.max(1)),
        What::Pipeline { events, log_dir } => pipeline(events, log_dir),
    }
}

/// Event `i` of `bench tasks`: task `bt_{i / 10}`, ~200 bytes.
fn task_line(i: u64) -> String {
    format!(
        "{{\"event_type\":\"agent_completed\",\"payload\":{{\"agent\":\"agent_{}\",\"task_id\":\"bt_{}\",\"status\":\"success\",\"duration_ms\":{},\"cost_usd\":0.0012,\"model\":\"claude-haiku-4.5\"}}}}\n",
        i % 10,
        i / 10,
        100 + i % 900
    )
}

fn tasks(hub: &str, events: u64, requests: usize) -> anyhow::Result<ExitCode> {
    let base = hub.trim_end_matches('/').to_owned();
    let first_id = hub_last_id(&base)? + 1;
    let started = Instant::now();
    // Two senders, batches of 5000.
    let next = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = (0..2)
        .map(|_| {
            let (next, url) = (next.clone(), format!("{base}/events"));
            std::thread::spawn(move || -> anyhow::Result<()> {
                let agent = ureq::AgentBuilder::new().build();
                loop {
                    let from = next.fetch_add(5000, Ordering::Relaxed);
                    if from >= events {
                        return Ok(());
                    }
                    let body: String = (from..(from + 5000).min(events)).map(task_line).collect();
                    agent
                        .post(&url)
                        .set("Content-Type", "application/x-ndjson")
                        .send_string(&body)
                        .with_context(|| format!("POST {url}"))?;
                }
            })
        })
        .collect();
    for s in senders {
        s.join()
            .map_err(|_| anyhow::anyhow!("a sender panicked"))??;
    }
    println!(
        "tasks: sent {events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let agent = ureq::AgentBuilder::new().build();
    let get = |task: &str| -> anyhow::Result<serde_json::Value> {
        Ok(agent
            .get(&format!("{base}/api/tasks/{task}"))
            .call()?
            .into_json()?)
    };
    // Sends ran concurrently: which task ids the oldest and newest events
    // got is known only by their ids, so the probes ask by position.
    let probes = [
        ("oldest (log)", "bt_0".to_owned()),
        ("middle (log)", format!("bt_{}", events / 20)),
        ("newest (ring)", format!("bt_{}", (events - 1) / 10)),
    ];
    // The log writer may be a moment behind the acknowledgements.
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&probes[0].1).map_or(0, |d| d["events"].as_array().map_or(0, Vec::len)) < 10 {
        if Instant::now() > deadline {
            bail!("the hub does not answer the oldest task with its 10 events");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let doc = get(&probes[0].1)?;
    println!(
        "  oldest task's first id {} (bench started after id {}), indexed from {}",
        doc["events"][0]["id"],
        first_id - 1,
        doc["indexed_from"]
    );
    for (what, task) in &probes {
        let mut wall = Vec::with_capacity(requests);
        let mut server = Vec::with_capacity(requests);
        for _ in 0..requests {
            let t = Instant::now();
            let d = get(task)?;
            wall.push(t.elapsed().as_micros() as u64);
            server.push((d["elapsed_ms"].as_f64().unwrap_or(0.0) * 1000.0) as u64);
            if d["events"].as_array().map_or(0, Vec::len) != 10 {
                bail!("{task}: expected 10 events, got {}", d["events"]);
            }
        }
        wall.sort_unstable();
        let p = |q: f64| wall[((wall.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
        println!(
            "  {what:<14} {task:<10} median {:.2} ms, p95 {:.2} ms, max {:.2} ms (in the hub: median {:.2} ms)",
            p(0.5),
            p(0.95),
            p(1.0),
            median(server) as f64 / 1000.0
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One NDJSON line of ~300 bytes, like the criterion benchmarks'.
fn line(i: u64, sent_ns: u128) -> String {
    let agent = ["scribe", "critic", "runner", "medic", "gemini"][(i % 5) as usize];
    format!(
        concat!(
            r#"{{"event_type":"agent_completed","payload":{{"agent":"{}","task_id":"t_{:06}","#,
            r#""status":"success","duration_ms":{},"cost_usd":0.0123,"model":"claude-sonnet-4.5","#,
            r#""feature":"feature_{}","sent_ns":{},"notes":"wrote 3 tests; refined after review"}}}}"#
        ),
        agent,
        i / 5,
        1200 + i % 5000,
        i % 50,
        sent_ns
    )
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn ingest(hub: &str, events: u64, batch: usize, connections: usize) -> anyhow::Result<ExitCode> {
    let url = format!("{}/events", hub.trim_end_matches('/'));
    // Bodies are built before the clock starts: only sending is measured.
    let per_conn = events / connections as u64;
    let bodies: Vec<Vec<Vec<u8>>> = (0..connections)
        .map(|c| {
            let start = c as u64 * per_conn;
            (start..start + per_conn)
                .collect::<Vec<_>>()
                .chunks(batch)
                .map(|ids| {
                    let mut b = String::with_capacity(ids.len() * 320);
                    for &i in ids {
                        b.push_str(&line(i, 0));
                        b.push('\n');
                    }
                    b.into_bytes()
                })
                .collect()
        })
        .collect();
    let bytes: usize = bodies.iter().flatten().map(Vec::len).sum();
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = bodies
        .into_iter()
        .map(|bodies| {
            let url = url.clone();
            let sent = sent.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(60))
                    .build();
                for body in bodies {
                    let n = body.iter().filter(|&&b| b == b'\n').count() as u64;
                    let resp = agent
                        .post(&url)
                        .set("Content-Type", "application/x-ndjson")
                        .send_bytes(&body)
                        .context("posting a batch")?;
                    if resp.status() != 200 {
                        bail!("hub answered {}", resp.status());
                    }
                    let mut sink = Vec::new();
                    resp.into_reader().read_to_end(&mut sink)?;
                    sent.fetch_add(n, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("sender panicked"))??;
    }
    let secs = started.elapsed().as_secs_f64();
    let n = sent.load(Ordering::Relaxed);
    println!(
        "ingest: {n} events in {secs:.2} s = {:.0} events/s ({:.1} MB/s), batch {batch}, {connections} connections",
        n as f64 / secs,
        bytes as f64 / secs / 1e6
    );
    Ok(ExitCode::SUCCESS)
}

/// One request of `n` GenAI spans (whole agent runs of 4 spans), the
/// `seq`-th of the run: ids unique across the run.
fn otlp_batch(seq: u64, n: usize, t0: u64) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    let kv = |k: &str, v: V| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    };
    let s = |k: &str, v: &str| kv(k, V::StringValue(v.into()));
    let mut spans = Vec::with_capacity(n);
    for run in 0..(n / 4) as u64 {
        let mut trace = [0u8; 16];
        trace[..8].copy_from_slice(&seq.to_be_bytes());
        trace[8..].copy_from_slice(&(run + 1).to_be_bytes());
        let id = |k: u64| ((run << 3) | k).to_be_bytes().to_vec();
        let agent_name = ["planner", "booker", "critic", "runner"][(run % 4) as usize];
        let start = t0 + run * 1_000;
        let span = |k: u64, parent: Option<u64>, name: &str, attrs: Vec<KeyValue>, ms: u64| Span {
            trace_id: trace.to_vec(),
            span_id: id(k),
            parent_span_id: parent.map(id).unwrap_or_default(),
            name: name.into(),
            kind: if k == 1 { 1 } else { 3 },
            start_time_unix_nano: start + k * 1_000_000,
            end_time_unix_nano: start + k * 1_000_000 + ms * 1_000_000,
            attributes: attrs,
            ..Default::default()
        };
        let chat = |k: u64| {
            span(
                k,
                Some(1),
                "chat claude-sonnet-4-5",
                vec![
                    s("gen_ai.operation.name", "chat"),
                    s("gen_ai.provider.name", "anthropic"),
                    s("gen_ai.request.model", "claude-sonnet-4-5"),
                    s("gen_ai.response.model", "claude-sonnet-4-5-20250929"),
                    kv(
                        "gen_ai.usage.input_tokens",
                        V::IntValue(1200 + run as i64 % 500),
                    ),
                    kv("gen_ai.usage.output_tokens", V::IntValue(300)),
                    kv("gen_ai.usage.cache_read.input_tokens", V::IntValue(800)),
                    s("gen_ai.response.id", "msg_01XFDUDYJgAACzvnptvVoYEL"),
                ],
                900,
            )
        };
        spans.push(chat(2));
        spans.push(span(
            3,
            Some(1),
            "execute_tool search_flights",
            vec![
                s("gen_ai.operation.name", "execute_tool"),
                s("gen_ai.tool.name", "search_flights"),
                s("gen_ai.tool.call.id", "toolu_01A09q90qw90lq917835lq9"),
                s("gen_ai.tool.type", "function"),
            ],
            40,
        ));
        spans.push(chat(4));
        spans.push(span(
            1,
            None,
            "invoke_agent",
            vec![
                s("gen_ai.operation.name", "invoke_agent"),
                s("gen_ai.agent.name", agent_name),
                s("gen_ai.provider.name", "anthropic"),
                s("gen_ai.request.model", "claude-sonnet-4-5"),
            ],
            2_500,
        ));
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    s("service.name", "bench-agents"),
                    s("service.version", "1.0.0"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

fn otlp(hub: &str, spans: u64, batch: usize, connections: usize) -> anyhow::Result<ExitCode> {
    let url = format!("{}/v1/traces", hub.trim_end_matches('/'));
    let batch = batch / 4 * 4;
    let requests = spans / batch as u64;
    let per_conn = requests / connections as u64;
    // Distinct runs per invocation, so a rerun against the same hub is not
    // all duplicates.
    let t0 = now_ns() as u64 - 3_600_000_000_000;
    let base = (now_ns() as u64 / 1_000) << 20;
    // Bodies are built before the clock starts: only sending is measured.
    let bodies: Vec<Vec<Vec<u8>>> = (0..connections as u64)
        .map(|c| {
            (0..per_conn)
                .map(|k| otlp_batch(base + c * per_conn + k, batch, t0))
                .collect()
        })
        .collect();
    let bytes: usize = bodies.iter().flatten().map(Vec::len).sum();
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = bodies
        .into_iter()
        .map(|bodies| {
            let url = url.clone();
            let sent = sent.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(60))
                    .build();
                for body in bodies {
                    let resp = agent
                        .post(&url)
                        .set("Content-Type", "application/x-protobuf")
                        .send_bytes(&body)
                        .context("posting a batch")?;
                    let mut answer = Vec::new();
                    resp.into_reader().read_to_end(&mut answer)?;
                    if !answer.is_empty() {
                        bail!("partial success: {}", String::from_utf8_lossy(&answer));
                    }
                    sent.fetch_add(batch as u64, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("sender panicked"))??;
    }
    let secs = started.elapsed().as_secs_f64();
    let n = sent.load(Ordering::Relaxed);
    println!(
        "otlp: {n} spans in {secs:.2} s = {:.0} spans/s ({:.0} events/s, {:.1} MB/s), batch {batch}, {connections} connections",
        n as f64 / secs,
        n as f64 * 1.25 / secs,
        bytes as f64 / secs / 1e6
    );
    Ok(ExitCode::SUCCESS)
}

struct Fanout {
    subscribers: usize,
    post_to: Option<String>,
    rate: u64,
    seconds: u64,
    lagging: usize,
    lag_rate: u64,
    catch_up: bool,
}

/// What a lagging reader got: events, last id, gap notices.
type LagResult = (u64, u64, u64);

/// Posts events for `seconds`: `rate` per second in batches every 10 ms,
/// stamped just before sending, or (rate 0) batches of 1000 back to back
/// from two connections. Returns the events sent.
fn send_for(url: &str, rate: u64, seconds: u64) -> anyhow::Result<u64> {
    if rate == 0 {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let senders: Vec<_> = (0..2u64)
            .map(|c| {
                let url = url.to_owned();
                std::thread::spawn(move || -> anyhow::Result<u64> {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(60))
                        .build();
                    let mut sent = 0u64;
                    let mut body = String::with_capacity(1000 * 330);
                    while Instant::now() < deadline {
                        body.clear();
                        let stamp = now_ns();
                        for i in 0..1000 {
                            body.push_str(&line(c << 40 | (sent + i), stamp));
                            body.push('\n');
                        }
                        agent
                            .post(&url)
                            .set("Content-Type", "application/x-ndjson")
                            .send_string(&body)?;
                        sent += 1000;
                    }
                    Ok(sent)
                })
            })
            .collect();
        let mut sent = 0;
        for s in senders {
            sent += s.join().map_err(|_| anyhow::anyhow!("sender panicked"))??;
        }
        return Ok(sent);
    }
    let total = rate * seconds;
    let per_tick = (rate / 100).max(1);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let start = Instant::now();
    let mut sent = 0u64;
    let mut tick = 0u64;
    while sent < total {
        let due = start + Duration::from_millis(tick * 10);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        tick += 1;
        let n = per_tick.min(total - sent);
        let stamp = now_ns();
        let mut body = String::with_capacity(n as usize * 330);
        for i in sent..sent + n {
            body.push_str(&line(i, stamp));
            body.push('\n');
        }
        agent
            .post(url)
            .set("Content-Type", "application/x-ndjson")
            .send_string(&body)?;
        sent += n;
    }
    Ok(sent)
}

/// The hub's last id (`/api/events?limit=1`).
fn hub_last_id(hub: &str) -> anyhow::Result<u64> {
    let v: serde_json::Value =
        ureq::get(&format!("{}/api/events?limit=1", hub.trim_end_matches('/')))
            .call()?
            .into_json()?;
    v["last_id"].as_u64().context("no last_id")
}

/// The id of a message in the wire format.
fn message_id(msg: &[u8]) -> Option<u64> {
    let rest = msg.strip_prefix(b"{\"id\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

fn fanout(hub: &str, f: Fanout) -> anyhow::Result<ExitCode> {
    let Fanout {
        subscribers,
        post_to,
        rate,
        seconds,
        lagging,
        lag_rate,
        catch_up,
    } = f;
    let ws = format!(
        "{}/stream",
        hub.trim_end_matches('/').replacen("http://", "ws://", 1)
    );
    let url = format!(
        "{}/events",
        post_to.as_deref().unwrap_or(hub).trim_end_matches('/')
    );
    let first_id = hub_last_id(hub)? + 1;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let sending_done = Arc::new(tokio::sync::Notify::new());
    let (latencies, counts, sent, send_secs, lag_results) = rt.block_on(async {
        let mut subs = Vec::new();
        let ready = Arc::new(tokio::sync::Barrier::new(subscribers + 1));
        // Subscribers stop after this many events (or the deadline); with
        // `--rate 0` the total is known only when sending ends.
        let expected = Arc::new(AtomicU64::new(if rate == 0 {
            u64::MAX
        } else {
            rate * seconds
        }));
        for _ in 0..subscribers {
            let (mut conn, _) = tokio_tungstenite::connect_async(ws.as_str())
                .await
                .with_context(|| format!("connecting to {ws}"))?;
            // The welcome message.
            conn.next().await;
            let ready = ready.clone();
            let expected = expected.clone();
            subs.push(tokio::spawn(async move {
                ready.wait().await;
                let mut lat: Vec<u32> = Vec::with_capacity(1 << 20);
                let mut got = 0u64;
                let deadline = tokio::time::sleep(Duration::from_secs(seconds + 60));
                tokio::pin!(deadline);
                while got < expected.load(Ordering::Relaxed) {
                    let msg = tokio::select! {
                        m = conn.next() => m,
                        _ = &mut deadline => break,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    };
                    let Some(Ok(Message::Text(t))) = msg else {
                        if matches!(msg, Some(Ok(Message::Ping(_)))) {
                            continue;
                        }
                        break;
                    };
                    let now = now_ns();
                    if let Some(sent) = sent_ns(t.as_bytes()) {
                        got += 1;
                        lat.push(((now.saturating_sub(sent)) / 1000).min(u32::MAX as u128) as u32);
                    }
                }
                (lat, got)
            }));
        }
        // Lagging readers: a pause after every 100 messages keeps each at
        // `lag_rate` events/s at most.
        let mut laggers = Vec::new();
        for _ in 0..lagging {
            let (mut conn, _) =
                tokio_tungstenite::connect_async(format!("{ws}?since={}", first_id - 1))
                    .await
                    .with_context(|| format!("connecting to {ws}"))?;
            let done = sending_done.clone();
            laggers.push(tokio::spawn(async move {
                let (mut got, mut last, mut gaps) = (0u64, 0u64, 0u64);
                let pause = Duration::from_secs_f64(100.0 / lag_rate as f64);
                let stop = done.notified();
                tokio::pin!(stop);
                loop {
                    let msg = tokio::select! {
                        m = conn.next() => m,
                        _ = &mut stop => break,
                    };
                    let Some(Ok(Message::Text(t))) = msg else {
                        if matches!(msg, Some(Ok(Message::Ping(_)))) {
                            continue;
                        }
                        break;
                    };
                    if let Some(id) = message_id(t.as_bytes()) {
                        got += 1;
                        last = id;
                        if got.is_multiple_of(100) {
                            tokio::select! {
                                _ = tokio::time::sleep(pause) => {}
                                _ = &mut stop => break,
                            }
                        }
                    } else if t.as_str().contains("\"stream_gap\"") {
                        gaps += 1;
                    }
                }
                (got, last, gaps)
            }));
        }
        ready.wait().await;
        let url2 = url.clone();
        let started = Instant::now();
        let sender = tokio::task::spawn_blocking(move || send_for(&url2, rate, seconds));
        let sent = sender.await??;
        let send_secs = started.elapsed().as_secs_f64();
        expected.store(sent, Ordering::Relaxed);
        sending_done.notify_waiters();
        let mut lag_results: Vec<LagResult> = Vec::new();
        for l in laggers {
            lag_results.push(l.await?);
        }
        let mut latencies = Vec::new();
        let mut counts = Vec::new();
        for s in subs {
            let (lat, got) = s.await?;
            latencies.extend(lat);
            counts.push(got);
        }
        anyhow::Ok((latencies, counts, sent, send_secs, lag_results))
    })?;
    println!(
        "ingest: {sent} events in {send_secs:.2} s = {:.0} events/s{} with {lagging} lagging readers",
        sent as f64 / send_secs,
        if rate == 0 { " (as fast as taken)" } else { " (paced)" },
    );
    if lagging > 0 {
        let behind: Vec<u64> = lag_results
            .iter()
            .map(|&(_, last, _)| (first_id + sent - 1).saturating_sub(last.max(first_id - 1)))
            .collect();
        let got: u64 = lag_results.iter().map(|r| r.0).sum();
        let gaps: u64 = lag_results.iter().map(|r| r.2).sum();
        println!(
            "lagging: {lagging} readers at most {lag_rate} events/s each: {got} events read, {gaps} gap notices, median {} events behind at the end",
            median(behind)
        );
    }
    if subscribers > 0 {
        report_fanout(subscribers, rate, seconds, sent, latencies, &counts);
    }
    if catch_up {
        let (n, secs) = rt.block_on(catch_up_from(&ws, first_id - 1, first_id + sent - 1))?;
        println!(
            "catch-up: one reader read {n} events from id {first_id} in {secs:.2} s = {:.0} events/s",
            n as f64 / secs
        );
    }
    let complete = counts.iter().filter(|&&c| c == sent).count();
    Ok(if complete == subscribers {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// One reader from `after` to `last` as fast as it can: events and seconds.
async fn catch_up_from(ws: &str, after: u64, last: u64) -> anyhow::Result<(u64, f64)> {
    let (mut conn, _) = tokio_tungstenite::connect_async(format!("{ws}?since={after}"))
        .await
        .with_context(|| format!("connecting to {ws}"))?;
    let started = Instant::now();
    let mut n = 0u64;
    while let Some(msg) = conn.next().await {
        if let Message::Text(t) = msg? {
            if let Some(id) = message_id(t.as_bytes()) {
                n += 1;
                if id >= last {
                    break;
                }
            }
        }
    }
    Ok((n, started.elapsed().as_secs_f64()))
}

fn report_fanout(
    subscribers: usize,
    rate: u64,
    seconds: u64,
    total: u64,
    latencies: Vec<u32>,
    counts: &[u64],
) {
    let delivered: u64 = counts.iter().sum();
    let complete = counts.iter().filter(|&&c| c == total).count();
    let mut lat = latencies;
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1000.0
    };
    println!(
        "fanout: {subscribers} subscribers, {rate} events/s for {seconds} s: {delivered} of {} deliveries ({complete}/{subscribers} subscribers got all {total}), {:.0} deliveries/s",
        total * subscribers as u64,
        delivered as f64 / seconds as f64
    );
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );
    println!("histogram (ms, deliveries):");
    let edges = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, f64::INFINITY];
    let mut lo = 0.0;
    for hi in edges {
        let n = lat
            .iter()
            .filter(|&&u| {
                let ms = u as f64 / 1000.0;
                ms >= lo && ms < hi
            })
            .count();
        println!("  [{lo:>5} .. {hi:>5}) {n}");
        lo = hi;
    }
}

/// One event of agent `run-{i % agents}`.
fn named_event(i: u64, agents: u64) -> String {
    format!(
        r#"{{"event_type":"note","payload":{{"agent":"run-{:06}","task_id":"t{}","n":{i}}}}}"#,
        i % agents,
        i
    )
}

fn names(hub: &str, agents: u64, seconds: u64, connections: usize) -> anyhow::Result<ExitCode> {
    let base = hub.trim_end_matches('/').to_string();
    let url = format!("{base}/events");
    let http = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build();
    // Every name once, in batches.
    let mut i = 0;
    while i < agents {
        let end = (i + 5000).min(agents);
        let mut body = String::new();
        for j in i..end {
            body.push_str(&named_event(j, agents));
            body.push('\n');
        }
        http.post(&url)
            .set("Content-Type", "application/x-ndjson")
            .send_string(&body)
            .context("posting the names")?;
        i = end;
    }
    // Wait until the metrics have seen them (the log acknowledges first).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let m: serde_json::Value = http
            .get(&format!("{base}/api/metrics"))
            .call()?
            .into_json()?;
        if m["agents_total"].as_u64() >= Some(agents) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // One event per request, names cycling, for `seconds`.
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let stop = started + Duration::from_secs(seconds);
    let threads: Vec<_> = (0..connections)
        .map(|c| {
            let url = url.clone();
            let sent = sent.clone();
            std::thread::spawn(move || -> anyhow::Result<Vec<u32>> {
                let http = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(60))
                    .build();
                let mut lat = Vec::new();
                let mut n = c as u64;
                while Instant::now() < stop {
                    let t = Instant::now();
                    let resp = http
                        .post(&url)
                        .set("Content-Type", "application/json")
                        .send_string(&named_event(n, agents))?;
                    if resp.status() != 200 {
                        bail!("hub answered {}", resp.status());
                    }
                    lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    sent.fetch_add(1, Ordering::Relaxed);
                    n += connections as u64;
                }
                Ok(lat)
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in threads {
        lat.extend(t.join().map_err(|_| anyhow::anyhow!("sender panicked"))??);
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len().max(1) - 1) as f64 * p) as usize)
            .map_or(f64::NAN, |&u| u as f64 / 1000.0)
    };
    let n = sent.load(Ordering::Relaxed);
    println!(
        "names: {agents} agents: one-event POSTs {:.0}/s over {connections} connections (p50 {:.2} ms, p99 {:.2} ms)",
        n as f64 / secs,
        pct(0.5),
        pct(0.99)
    );
    // `/api/metrics`: median of 21 reads.
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..21 {
        let t = Instant::now();
        let text = http
            .get(&format!("{base}/api/metrics"))
            .call()?
            .into_string()?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        size = text.len();
    }
    times.sort_by(f64::total_cmp);
    println!(
        "names: {agents} agents: GET /api/metrics median {:.1} ms (min {:.1}, max {:.1}), {size} bytes",
        times[10],
        times[0],
        times[20]
    );
    Ok(ExitCode::SUCCESS)
}

/// `bench single`: one thread, one keep-alive connection, one event per
/// request, each sent only once the previous one was answered.
fn single(hub: &str, requests: u64, warmup: u64) -> anyhow::Result<ExitCode> {
    let url = format!("{}/events", hub.trim_end_matches('/'));
    // One agent with one idle connection kept: every request reuses it.
    let http = ureq::AgentBuilder::new()
        .max_idle_connections(1)
        .timeout(Duration::from_secs(60))
        .build();
    let post = |i: u64| -> anyhow::Result<()> {
        let resp = http
            .post(&url)
            .set("Content-Type", "application/json")
            .send_string(&line(i, 0))
            .with_context(|| format!("POST {url}"))?;
        if resp.status() != 200 {
            bail!("hub answered {}", resp.status());
        }
        // Read to the end, so that the connection goes back to the pool.
        resp.into_string().context("reading the answer")?;
        Ok(())
    };
    for i in 0..warmup {
        post(i)?;
    }
    let mut lat: Vec<u32> = Vec::with_capacity(requests as usize);
    let started = Instant::now();
    for i in 0..requests {
        let t = Instant::now();
        post(warmup + i)?;
        lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    println!(
        "single: {requests} one-event POSTs on one connection in {secs:.2} s = {:.0} requests/s (p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms)",
        requests as f64 / secs,
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    Ok(ExitCode::SUCCESS)
}

/// The `sent_ns` number in a message, found without parsing the JSON.
fn sent_ns(msg: &[u8]) -> Option<u128> {
    let key = b"\"sent_ns\":";
    let at = msg.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = msg[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&msg[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

fn idle(hub: &str, connections: usize, pid: u32) -> anyhow::Result<ExitCode> {
    let ws = format!(
        "{}/stream",
        hub.trim_end_matches('/').replacen("http://", "ws://", 1)
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let before = rss_kib(pid)?;
    let conns = rt.block_on(async {
        let mut conns = Vec::with_capacity(connections);
        for i in 0..connections {
            let (mut c, _) = tokio_tungstenite::connect_async(ws.as_str())
                .await
                .with_context(|| format!("connection {i}"))?;
            c.next().await;
            conns.push(c);
        }
        anyhow::Ok(conns)
    })?;
    // Let the hub settle, then read its memory.
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(pid)?;
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / connections as f64;
    println!(
        "idle: {connections} connections: hub RSS {before} KiB -> {after} KiB, {:.1} KiB per connection",
        per / 1024.0
    );
    drop(conns);
    Ok(ExitCode::SUCCESS)
}

/// The payload of the criterion benchmarks' events: ~300 bytes on the wire.
fn bench_payload(i: u64) -> agentpulse::event::Payload {
    let agent = ["scribe", "critic", "runner", "medic", "gemini"][(i % 5) as usize];
    let v = serde_json::json!({
        "agent": agent,
        "task_id": format!("t_{:06}", i / 5),
        "status": if i.is_multiple_of(7) { "failed" } else { "success" },
        "duration_ms": 1200 + i % 5000,
        "cost_usd": 0.0123 + (i % 100) as f64 / 1000.0,
        "model": "claude-sonnet-4.5",
        "feature": format!("feature_{}", i % 50),
        "notes": "wrote 3 tests; 2 assertions refined after critic review",
    });
    match v {
        serde_json::Value::Object(m) => m,
        _ => unreachable!("json! of an object"),
    }
}

/// CPU time (ns) of every thread of this process, by thread name, from
/// `/proc/self/task/*/schedstat` (Linux).
fn thread_cpu_ns() -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in dir.flatten() {
        let p = task.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(p.join("schedstat")).unwrap_or_default();
        let ns: u64 = stat
            .split_whitespace()
            .next()
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        *out.entry(comm.trim().to_owned()).or_insert(0) += ns;
    }
    out
}

fn pipeline(events: u64, log_dir: Option<std::path::PathBuf>) -> anyhow::Result<ExitCode> {
    use agentpulse::event::NewEvent;
    use agentpulse::sinks::jsonl::{Durability, JsonlConfig};
    let temporary = log_dir.is_none();
    let dir = log_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("agentpulse-bench-{}", std::process::id()))
    });
    let emitter = agentpulse::emitter::Emitter::builder()
        .jsonl(JsonlConfig {
            dir: dir.clone(),
            durability: Durability::Batch,
            ..JsonlConfig::default()
        })
        .quiet()
        .policy(agentpulse::pipeline::QueuePolicy::Block)
        .build()?;
    emitter.start()?;
    // Built before the clock starts: only the pipeline is measured.
    let ty = emitter.schema().intern("agent_completed");
    let ts = agentpulse::event::now_unix();
    let evs: Vec<NewEvent> = (0..events)
        .map(|i| NewEvent::new(ty.clone(), bench_payload(i)).with_timestamp(ts + i as f64 * 1e-4))
        .collect();
    let cpu_before = thread_cpu_ns();
    let started = Instant::now();
    for ev in evs {
        emitter.emit_event(ev)?;
    }
    if !emitter.flush() {
        bail!("the pipeline stopped before flushing");
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu_after = thread_cpu_ns();
    emitter.stop()?;
    let s = emitter.stats();
    println!(
        "pipeline: {events} events in {secs:.2} s = {:.0} events/s (accepted {}, dropped {})",
        events as f64 / secs,
        s.accepted,
        s.dropped
    );
    let mut total = 0u64;
    for (name, after) in &cpu_after {
        let ns = after.saturating_sub(cpu_before.get(name).copied().unwrap_or(0));
        if ns > 0 {
            total += ns;
            println!("  {name:<18} {:>7.0} ns/event", ns as f64 / events as f64);
        }
    }
    println!(
        "  {:<18} {:>7.0} ns/event = {:.0} events/s per core of CPU",
        "all threads",
        total as f64 / events as f64,
        events as f64 * 1e9 / total.max(1) as f64
    );
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(ExitCode::SUCCESS)
}
