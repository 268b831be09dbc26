//! The metrics engine (pure, no I/O).

mod bucket;
mod histogram;
mod kpi;

pub use bucket::{AgentStats, BucketSet, BucketStats, FeatureStats, Granularity};
pub use histogram::{LogHistogram, RELATIVE_ERROR};
pub use kpi::{
    AgentKpis, BucketView, CurrentBuckets, FeatureReport, Kpis, MetricsSnapshot, Report, Samples,
};
