//! The names of the cluster's keys in Redis, all derived from the stream
//! key (see the table in [`super`]).

/// The keys of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// The stream: one entry per event, entry id `<id>-0`.
    pub stream: String,
    /// The last id given (`INCR`).
    pub seq: String,
    /// The cluster's stream epoch.
    pub epoch: String,
    /// Marks for retention by age: score ms, member the first id of that second.
    pub times: String,
    /// The alerts lease: the origin id of the hub that emits alerts.
    pub alerts: String,
}

impl Keys {
    /// The keys named after `stream`.
    pub fn new(stream: &str) -> Keys {
        Keys {
            stream: stream.to_owned(),
            seq: format!("{stream}:seq"),
            epoch: format!("{stream}:epoch"),
            times: format!("{stream}:times"),
            alerts: format!("{stream}:alerts"),
        }
    }

    /// The dedup key of `event_id` (the script builds the same name).
    pub fn dedup(&self, event_id: &str) -> String {
        format!("{}:dedup:{event_id}", self.stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_after_the_stream() {
        let k = Keys::new("agentpulse:events");
        assert_eq!(k.seq, "agentpulse:events:seq");
        assert_eq!(k.epoch, "agentpulse:events:epoch");
        assert_eq!(k.times, "agentpulse:events:times");
        assert_eq!(k.alerts, "agentpulse:events:alerts");
        assert_eq!(k.dedup("sdk-1"), "agentpulse:events:dedup:sdk-1");
    }
}
