//! The append script: in one atomic step, per event, drop it when its
//! `event_id` is known (answering the earlier id), else give it the next
//! id from `K:seq`, remember its `event_id` (with a TTL) and `XADD` its
//! wire line under entry id `<id>-0`; then trim the stream by count and
//! by age.
//!
//! The hub serialises each event once, before it has an id: it sends the
//! line without its head `{"id":N` (see [`line_tail`]) and the script
//! puts `{"id":<id>` in front. So the stream holds exactly the bytes
//! every hub's log and readers get.
//!
//! Batches go as `EVALSHA`, pipelined (several calls of at most
//! [`MAX_EVENTS_PER_CALL`] events in one round trip); on `NOSCRIPT` (a
//! restarted Redis) the script is loaded and the round trip made again
//! (none of it ran: every call of it was refused).

use crate::event::{Event, NewEvent};

use super::{ClusterError, Keys};

/// The Lua script.
///
/// KEYS: stream, seq, epoch, times. ARGV: expected epoch, dedup TTL (s),
/// max len (0: none), max age in ms (0: none), the appending hub's origin
/// id (field `h` of each entry), then per event its `event_id` (empty:
/// none) and its line's tail. Returns one integer per
/// event: its id, or minus the earlier id for a duplicate.
pub const SCRIPT: &str = r#"
if redis.call('GET', KEYS[3]) ~= ARGV[1] then
  return redis.error_reply('EPOCH ' .. KEYS[3] .. ' is not the epoch this hub joined with')
end
local ttl = tonumber(ARGV[2])
local prefix = KEYS[1] .. ':dedup:'
local out = {}
local first = nil
for i = 6, #ARGV, 2 do
  local eid = ARGV[i]
  local prev = false
  if eid ~= '' then prev = redis.call('GET', prefix .. eid) end
  if prev then
    out[#out + 1] = -tonumber(prev)
  else
    local id = redis.call('INCR', KEYS[2])
    local sid = string.format('%d', id)
    if eid ~= '' then redis.call('SET', prefix .. eid, sid, 'EX', ttl) end
    redis.call('XADD', KEYS[1], sid .. '-0', 'e', '{"id":' .. sid .. ARGV[i + 1], 'h', ARGV[5])
    out[#out + 1] = id
    if not first then first = sid end
  end
end
local maxlen = tonumber(ARGV[3])
if maxlen > 0 and first then
  redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', maxlen)
end
local age = tonumber(ARGV[4])
if age > 0 and first then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local last = redis.call('ZREVRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  if #last == 0 or now - tonumber(last[2]) >= 1000 then
    redis.call('ZADD', KEYS[4], now, first)
  end
  local cut = redis.call('ZREVRANGEBYSCORE', KEYS[4], '(' .. (now - age), '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #cut > 0 then
    redis.call('XTRIM', KEYS[1], 'MINID', '~', cut[1] .. '-0')
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. cut[2])
  end
end
return out
"#;

/// Most events in one script call: a call blocks Redis while it runs.
pub const MAX_EVENTS_PER_CALL: usize = 2048;

/// The head every wire line starts with, before the id's digits.
const HEAD: &[u8] = b"{\"id\":0";

/// The wire line of `event` without its head `{"id":N`: what the script
/// completes with the id it gives.
pub fn line_tail(event: NewEvent, now: f64) -> Vec<u8> {
    let event = Event {
        id: 0,
        event_type: event.event_type,
        timestamp: event.timestamp.unwrap_or(now),
        event_id: event.event_id,
        payload: event.payload,
    };
    let mut line = Vec::with_capacity(256);
    crate::event::write_wire(&event, &mut line);
    debug_assert!(line.starts_with(HEAD));
    line.drain(..HEAD.len());
    line
}

/// One event ready to append.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Its `event_id`, or empty.
    pub event_id: Vec<u8>,
    /// Its line without the head (see [`line_tail`]).
    pub tail: Vec<u8>,
}

impl Prepared {
    /// Prepares `event` (stamped `now` when it has no timestamp).
    pub fn new(event: NewEvent, now: f64) -> Prepared {
        let event_id = event
            .event_id
            .as_deref()
            .map(|s| s.as_bytes().to_vec())
            .unwrap_or_default();
        Prepared {
            event_id,
            tail: line_tail(event, now),
        }
    }
}

/// What the script said of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored with this id.
    New(u64),
    /// Known by its `event_id`: the earlier event has this id.
    Duplicate(u64),
}

/// The script, with its SHA1 computed once.
pub struct AppendScript {
    script: redis::Script,
    keys: Keys,
    epoch: String,
    origin: String,
    ttl_secs: u64,
    max_len: u64,
    max_age_ms: u64,
}

impl AppendScript {
    /// The script for these keys and settings.
    pub fn new(
        keys: Keys,
        epoch: String,
        origin: String,
        config: &super::ClusterConfig,
    ) -> AppendScript {
        AppendScript {
            script: redis::Script::new(SCRIPT),
            keys,
            epoch,
            origin,
            ttl_secs: config.dedup_ttl.as_secs().max(1),
            max_len: config.max_len,
            max_age_ms: config.max_age.map_or(0, |d| (d.as_millis() as u64).max(1)),
        }
    }

    /// The pipeline of `EVALSHA` calls for `events`.
    fn pipeline(&self, events: &[Prepared]) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        for chunk in events.chunks(MAX_EVENTS_PER_CALL) {
            let cmd = pipe
                .cmd("EVALSHA")
                .arg(self.script.get_hash())
                .arg(4)
                .arg(&self.keys.stream)
                .arg(&self.keys.seq)
                .arg(&self.keys.epoch)
                .arg(&self.keys.times)
                .arg(&self.epoch)
                .arg(self.ttl_secs)
                .arg(self.max_len)
                .arg(self.max_age_ms)
                .arg(&self.origin);
            for p in chunk {
                cmd.arg(&p.event_id).arg(&p.tail);
            }
        }
        pipe
    }

    /// Appends `events` in one round trip (two when the script had to be
    /// loaded first); one answer per event, in order.
    pub async fn append(
        &self,
        con: &mut redis::aio::MultiplexedConnection,
        url: &str,
        events: &[Prepared],
    ) -> Result<Vec<Appended>, ClusterError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let pipe = self.pipeline(events);
        let replies: Vec<Vec<i64>> = match pipe.query_async(con).await {
            Ok(r) => r,
            Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                let mut load = redis::cmd("SCRIPT");
                load.arg("LOAD").arg(SCRIPT);
                let _sha: String = load
                    .query_async(con)
                    .await
                    .map_err(|e| self.error(url, e))?;
                pipe.query_async(con)
                    .await
                    .map_err(|e| self.error(url, e))?
            }
            Err(e) => return Err(self.error(url, e)),
        };
        let answers: Vec<Appended> = replies
            .into_iter()
            .flatten()
            .map(|n| {
                if n < 0 {
                    Appended::Duplicate(n.unsigned_abs())
                } else {
                    Appended::New(n as u64)
                }
            })
            .collect();
        if answers.len() != events.len() {
            return Err(ClusterError::Protocol(format!(
                "{} answers for {} events",
                answers.len(),
                events.len()
            )));
        }
        Ok(answers)
    }

    fn error(&self, url: &str, e: redis::RedisError) -> ClusterError {
        if e.code() == Some("EPOCH") {
            ClusterError::HistoryLost {
                key: self.keys.epoch.clone(),
                expected: self.epoch.clone(),
            }
        } else {
            ClusterError::Redis {
                url: url.into(),
                source: e,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_completed_with_an_id_is_the_wire_line() {
        let mut payload = serde_json::Map::new();
        payload.insert("agent".into(), "a".into());
        let ev = NewEvent::new("note", payload)
            .with_timestamp(1.5)
            .with_event_id("k1");
        let tail = line_tail(ev.clone(), 9.0);
        let mut line = b"{\"id\":42".to_vec();
        line.extend_from_slice(&tail);
        let back = Event::from_wire(&line).unwrap();
        assert_eq!(back.id, 42);
        assert_eq!(back.event_id.as_deref(), Some("k1"));
        assert_eq!(back.timestamp, 1.5);
        let rec = crate::event::Record::new(back);
        assert_eq!(
            &rec.message()[..],
            &line[..],
            "the same bytes as the pipeline's"
        );
    }
}
