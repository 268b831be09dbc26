//! The alerts lease: one hub of the cluster at a time emits what alert
//! rules and budgets produce and delivers notifications, so each fires once
//! per cluster, not once per hub. Every hub evaluates the rules and budgets
//! on the same events (its state is warm), but only the holder of `K:alerts`
//! feeds the resulting events back (they are appended like any other) and
//! notifies.
//!
//! The holder renews the lease every [`RENEW`]; it lapses after [`TTL`], so
//! a hub that dies is replaced within that time (alerts fired in between
//! by nobody are lost: the new holder's engine already saw them fire).
//! While Redis is unreachable no hub holds it (nothing could be appended).

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Cluster;

/// How often the lease is taken or renewed.
pub const RENEW: Duration = Duration::from_secs(1);

/// How long the lease lasts without a renewal.
pub const TTL: Duration = Duration::from_secs(3);

/// Takes the lease when it is free, renews it when it is ours: 1 when this
/// hub holds it.
const SCRIPT: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// Keeps `cluster.status.alerts_leader` current until `shutdown`, then
/// gives the lease up.
pub async fn run(cluster: Cluster, shutdown: CancellationToken) {
    let script = redis::Script::new(SCRIPT);
    let status = cluster.status.clone();
    let mut con: Option<redis::aio::MultiplexedConnection> = None;
    loop {
        let attempt = async {
            let c = match &mut con {
                Some(c) => c,
                None => con.insert(super::connect(&cluster.client, &cluster.config.url).await?),
            };
            let mut call = script.prepare_invoke();
            call.key(&cluster.keys().alerts)
                .arg(&cluster.origin)
                .arg(TTL.as_millis() as u64);
            let held: i64 = tokio::time::timeout(super::CALL_TIMEOUT, call.invoke_async(c))
                .await
                .map_err(|_| super::ClusterError::Timeout {
                    url: cluster.config.url.clone(),
                })?
                .map_err(|source| super::ClusterError::Redis {
                    url: cluster.config.url.clone(),
                    source,
                })?;
            Ok::<bool, super::ClusterError>(held == 1)
        };
        let held = tokio::select! {
            () = shutdown.cancelled() => break,
            r = attempt => r,
        };
        let held = match held {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!("cluster: alerts lease: {e}");
                con = None;
                false
            }
        };
        if status.alerts_leader.swap(held, Ordering::Relaxed) != held {
            tracing::info!(
                "cluster: this hub {} the alerts lease",
                if held { "holds" } else { "no longer holds" }
            );
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(RENEW) => {}
        }
    }
    if status.alerts_leader.swap(false, Ordering::Relaxed) {
        release(&cluster, con).await;
    }
}

/// Gives the lease up at shutdown, so another hub takes it at once.
async fn release(cluster: &Cluster, con: Option<redis::aio::MultiplexedConnection>) {
    let Some(mut con) = con else { return };
    let script = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    );
    let mut call = script.prepare_invoke();
    call.key(&cluster.keys().alerts).arg(&cluster.origin);
    let released =
        tokio::time::timeout(super::CALL_TIMEOUT, call.invoke_async::<i64>(&mut con)).await;
    if !matches!(released, Ok(Ok(_))) {
        tracing::debug!("cluster: the alerts lease lapses on its own");
    }
}
