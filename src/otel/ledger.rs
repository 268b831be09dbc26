//! One model call is never counted twice: which span's usage carries the
//! cost when an agent span and the model calls below it both report tokens.
//!
//! # The rule
//!
//! Frameworks report usage in two shapes: on each inference span only, or
//! on the inference spans *and* again, summed, on the enclosing
//! `invoke_agent` span. A span that reports usage (tokens or a cost) is
//! *charged* (its cost counts in the KPIs and budgets) unless another
//! charged span already covers it:
//!
//! - a span whose ancestor (any number of levels up, through spans of any
//!   kind) is charged is not charged: the ancestor's total covers it;
//! - a span with a charged descendant is not charged: the descendants'
//!   costs are its total.
//!
//! Within one export request, inference spans are decided before agent
//! spans, so the model calls carry the cost whatever the order of spans in
//! the request. Across requests the first to arrive is charged: SDKs export
//! a span when it ends, and a model call ends before the agent run around
//! it, so in practice the model calls carry the cost. A span that is not
//! charged keeps its tokens in its event, with `cost_usd: 0` and
//! `cost_counted_in` naming where the cost is.
//!
//! A decision is kept with the span, so an exporter's retry of the same
//! span decides the same way. The ledger remembers the last
//! [`LEDGER_CAPACITY`] spans (and links), oldest forgotten first; a model
//! call whose agent run ended before it and whose chain of parents up to it
//! was forgotten, or never seen, can be counted twice.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Spans remembered (with their parent, agent and decision).
pub const LEDGER_CAPACITY: usize = 131_072;

/// How far up a chain of parents is followed.
const MAX_DEPTH: usize = 64;

/// A span: trace id and span id.
pub type SpanKey = (u128, u64);

/// The agent run a span belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRef {
    /// The agent's name.
    pub agent: Arc<str>,
    /// The task of its run.
    pub task: Arc<str>,
}

/// What the ledger decided for a span's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Its cost counts.
    Charged,
    /// Covered by the charged spans below it.
    CountedBelow,
    /// Covered by this charged ancestor (span id).
    CountedAbove(u64),
}

#[derive(Debug, Clone, Default)]
struct Node {
    parent: u64,
    agent: Option<AgentRef>,
    decision: Option<Charge>,
    charged_below: bool,
}

/// Spans seen recently, their links and decisions (see the module doc).
#[derive(Debug, Default)]
pub struct Ledger {
    // Keys are random ids already: foldhash is plenty, and several times
    // cheaper than SipHash here.
    nodes: HashMap<SpanKey, Node, foldhash::fast::RandomState>,
    order: VecDeque<SpanKey>,
    /// Spans not seen yet that have a charged descendant.
    pending: HashMap<SpanKey, (), foldhash::fast::RandomState>,
    pending_order: VecDeque<SpanKey>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Spans remembered.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Notes a span, its parent (0: none) and, for an agent span, its run.
    pub fn note(&mut self, key: SpanKey, parent: u64, agent: Option<AgentRef>) {
        if let Some(n) = self.nodes.get_mut(&key) {
            n.parent = parent;
            if agent.is_some() {
                n.agent = agent;
            }
            return;
        }
        if self.nodes.len() >= LEDGER_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.nodes.remove(&old);
            }
        }
        let charged_below = self.pending.remove(&key).is_some();
        self.nodes.insert(
            key,
            Node {
                parent,
                agent,
                decision: None,
                charged_below,
            },
        );
        self.order.push_back(key);
        if charged_below {
            self.mark_ancestors((key.0, parent));
        }
    }

    /// The run of the nearest agent span above `key` (itself excluded).
    pub fn enclosing_agent(&self, key: SpanKey) -> Option<&AgentRef> {
        let mut parent = self.nodes.get(&key)?.parent;
        for _ in 0..MAX_DEPTH {
            if parent == 0 {
                return None;
            }
            let n = self.nodes.get(&(key.0, parent))?;
            if let Some(a) = &n.agent {
                return Some(a);
            }
            parent = n.parent;
        }
        None
    }

    /// Decides whether the usage of span `key` (noted before) is charged.
    pub fn decide(&mut self, key: SpanKey) -> Charge {
        let (parent, decided, below) = match self.nodes.get(&key) {
            Some(n) => (n.parent, n.decision, n.charged_below),
            None => (0, None, false),
        };
        if let Some(d) = decided {
            return d;
        }
        let decision = if below {
            Charge::CountedBelow
        } else if let Some(a) = self.charged_ancestor(key.0, parent) {
            Charge::CountedAbove(a)
        } else {
            Charge::Charged
        };
        if let Some(n) = self.nodes.get_mut(&key) {
            n.decision = Some(decision);
        }
        if decision == Charge::Charged {
            self.mark_ancestors((key.0, parent));
        }
        decision
    }

    fn charged_ancestor(&self, trace: u128, mut parent: u64) -> Option<u64> {
        for _ in 0..MAX_DEPTH {
            if parent == 0 {
                return None;
            }
            let n = self.nodes.get(&(trace, parent))?;
            if n.decision == Some(Charge::Charged) {
                return Some(parent);
            }
            parent = n.parent;
        }
        None
    }

    /// Marks `start` and its ancestors as having a charged descendant; an
    /// ancestor not seen yet is remembered as pending.
    fn mark_ancestors(&mut self, start: SpanKey) {
        let (trace, mut span) = start;
        for _ in 0..MAX_DEPTH {
            if span == 0 {
                return;
            }
            match self.nodes.get_mut(&(trace, span)) {
                Some(n) => {
                    if n.charged_below {
                        return;
                    }
                    n.charged_below = true;
                    span = n.parent;
                }
                None => {
                    if self.pending.len() >= LEDGER_CAPACITY {
                        if let Some(old) = self.pending_order.pop_front() {
                            self.pending.remove(&old);
                        }
                    }
                    if self.pending.insert((trace, span), ()).is_none() {
                        self.pending_order.push_back((trace, span));
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u128 = 7;

    fn agent(name: &str) -> Option<AgentRef> {
        Some(AgentRef {
            agent: name.into(),
            task: "t".into(),
        })
    }

    #[test]
    fn children_first_then_the_agent_repeating_their_usage() {
        let mut l = Ledger::new();
        // agent 1 > turn 2 > chat 3, chat 4
        l.note((T, 3), 2, None);
        l.note((T, 4), 2, None);
        assert_eq!(l.decide((T, 3)), Charge::Charged);
        assert_eq!(l.decide((T, 4)), Charge::Charged);
        // The intermediate span and the agent arrive later.
        l.note((T, 2), 1, None);
        l.note((T, 1), 0, agent("a"));
        assert_eq!(l.decide((T, 1)), Charge::CountedBelow);
        // A retry decides the same.
        assert_eq!(l.decide((T, 3)), Charge::Charged);
        assert_eq!(l.decide((T, 1)), Charge::CountedBelow);
    }

    #[test]
    fn agent_first_then_its_model_calls() {
        let mut l = Ledger::new();
        l.note((T, 1), 0, agent("a"));
        l.note((T, 3), 1, None);
        assert_eq!(l.decide((T, 1)), Charge::Charged);
        assert_eq!(l.decide((T, 3)), Charge::CountedAbove(1));
        assert_eq!(l.enclosing_agent((T, 3)).unwrap().agent.as_ref(), "a");
    }

    #[test]
    fn an_agent_alone_is_charged_and_other_traces_are_apart() {
        let mut l = Ledger::new();
        l.note((T, 1), 0, agent("a"));
        l.note((T + 1, 3), 1, None);
        assert_eq!(l.decide((T, 1)), Charge::Charged);
        assert_eq!(l.decide((T + 1, 3)), Charge::Charged);
    }

    #[test]
    fn capacity_is_bounded() {
        let mut l = Ledger::new();
        for i in 1..=(LEDGER_CAPACITY as u64 + 10) {
            l.note((T, i), i + 1_000_000_000, None);
            l.decide((T, i));
        }
        assert_eq!(l.len(), LEDGER_CAPACITY);
        assert!(l.pending.len() <= LEDGER_CAPACITY);
    }
}
