//! Reading JSONL logs.
