//! The notify sink: delivers `alert_triggered` and `alert_resolved` events
//! to the notifiers configured for their action (`notifiers:` in the config
//! file; console when none): a line on standard error, a webhook (HTTP POST
//! of the alert as JSON, or Slack's `{"text": ...}`, with a timeout, retries
//! and exponential backoff), or a command (run without a shell, the alert
//! JSON on its stdin, killed after 10 s).
//!
//! Deliveries run on a worker thread fed by a bounded queue: a webhook that
//! hangs or fails never slows ingest. When the queue is full, notifications
//! are dropped and counted.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::{Sink, SinkError};
use crate::config::{NotifierConfig, WebhookFormat};
use crate::event::{Event, SharedRecord};

/// Counters of the notifiers.
#[derive(Debug, Default)]
pub struct NotifyStats {
    /// Notifications delivered.
    pub delivered: AtomicU64,
    /// Deliveries that failed after every retry.
    pub failed: AtomicU64,
    /// Notifications dropped because the queue was full.
    pub dropped: AtomicU64,
}

struct Job {
    notifier: NotifierConfig,
    body: Value,
}

/// Sends alerts to their notifiers; see the module doc.
pub struct NotifySink {
    config: crate::config::Config,
    jobs: SyncSender<Job>,
    stats: Arc<NotifyStats>,
    gate: Option<super::alerts::Gate>,
}

impl NotifySink {
    /// A sink for the notifiers of `config`, with its worker thread.
    pub fn new(config: crate::config::Config, stats: Arc<NotifyStats>) -> Self {
        let (jobs, rx) = sync_channel::<Job>(1024);
        let worker_stats = stats.clone();
        std::thread::Builder::new()
            .name("agentpulse-notify".into())
            .spawn(move || {
                for job in rx {
                    let ok = deliver(&job.notifier, &job.body);
                    let counter = if ok {
                        &worker_stats.delivered
                    } else {
                        &worker_stats.failed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
            .expect("spawn notify thread");
        NotifySink {
            config,
            jobs,
            stats,
            gate: None,
        }
    }

    /// Delivers only while `gate` says so (a cluster: the hub holding the
    /// alerts lease, so each alert is notified once).
    pub fn with_gate(mut self, gate: super::alerts::Gate) -> Self {
        self.gate = Some(gate);
        self
    }
}

fn alert_json(event: &Event) -> Value {
    json!({
        "event_type": &*event.event_type,
        "id": event.id,
        "timestamp": event.timestamp,
        "payload": event.payload,
    })
}

fn slack_text(event: &Event) -> String {
    let p = &event.payload;
    let s = |k: &str| {
        p.get(k)
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .unwrap_or_default()
    };
    let head = if &*event.event_type == "alert_resolved" {
        "resolved"
    } else {
        "ALERT"
    };
    format!(
        "[agentpulse {head}] {} ({} = {}, threshold {} {})",
        s("message"),
        s("metric"),
        s("value"),
        s("operator"),
        s("threshold")
    )
}

fn deliver(notifier: &NotifierConfig, body: &Value) -> bool {
    match notifier {
        NotifierConfig::Console {} => {
            eprintln!("agentpulse alert: {body}");
            true
        }
        NotifierConfig::Webhook {
            url,
            timeout,
            retries,
            ..
        } => {
            let timeout = timeout.map_or(Duration::from_secs(5), |s| Duration::from_secs_f64(s.0));
            let attempts = retries.unwrap_or(3) + 1;
            let agent = ureq::AgentBuilder::new().timeout(timeout).build();
            let mut backoff = Duration::from_millis(200);
            for attempt in 1..=attempts {
                match agent.post(url).send_json(body.clone()) {
                    Ok(_) => return true,
                    Err(e) => {
                        tracing::warn!("webhook {url}: attempt {attempt}/{attempts} failed: {e}");
                        if attempt < attempts {
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(10));
                        }
                    }
                }
            }
            false
        }
        NotifierConfig::Command { command } => {
            let Some((program, args)) = command.split_first() else {
                return false;
            };
            let child = std::process::Command::new(program)
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit())
                .spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("notifier command {program}: {e}");
                    return false;
                }
            };
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(body.to_string().as_bytes());
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => return status.success(),
                    Ok(None) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        tracing::warn!("notifier command {program}: killed after 10 s");
                        return false;
                    }
                }
            }
        }
    }
}

impl Sink for NotifySink {
    fn name(&self) -> &'static str {
        "notify"
    }

    fn write_batch(&mut self, batch: &[SharedRecord]) -> Result<(), SinkError> {
        if self.gate.as_ref().is_some_and(|g| !g()) {
            return Ok(());
        }
        for r in batch {
            let e = &r.event;
            if !matches!(&*e.event_type, "alert_triggered" | "alert_resolved") {
                continue;
            }
            let action = e.str_field("action").unwrap_or("notify_admin");
            for notifier in self.config.notifiers_for(action) {
                let body = match notifier {
                    NotifierConfig::Webhook {
                        format: WebhookFormat::Slack,
                        ..
                    } => json!({ "text": slack_text(e) }),
                    _ => alert_json(e),
                };
                let job = Job {
                    notifier: notifier.clone(),
                    body,
                };
                if let Err(TrySendError::Full(_)) = self.jobs.try_send(job) {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
