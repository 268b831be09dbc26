//! The JSONL log sink.
