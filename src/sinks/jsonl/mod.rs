//! The JSONL log sink.

mod recovery;
mod rotation;

pub use recovery::TornLine;
pub use rotation::{rotated_files, MaintenanceReport};
