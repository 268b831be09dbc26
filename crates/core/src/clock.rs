//! Time as the pipeline sees it, injectable so that rotation, eviction and
//! windows can be tested without waiting.

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time.
pub trait Clock: Send + Sync + Debug {
    /// Now, as Unix seconds (UTC) with a fraction.
    fn now(&self) -> f64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> f64 {
        wall_now()
    }
}

/// How often the counter-based wall clock goes back to the system clock.
const ANCHOR_EVERY_NS: u64 = 1_000_000_000;

/// The wall clock read from the CPU's time-stamp counter (through
/// `quanta`, which calibrates it and falls back to the OS's monotonic clock
/// where the counter is unusable), anchored to the system clock once a
/// second so that it follows its adjustments. Reading the system clock
/// costs ~40 ns on the virtual machines we measured, the counter ~10 ns,
/// and `emit_event` stamps every event.
struct CounterWall {
    base: quanta::Instant,
    /// Unix nanoseconds minus nanoseconds since `base`, at the last anchor.
    offset_ns: AtomicI64,
    /// Nanoseconds since `base` at which to anchor again.
    next_anchor_ns: AtomicU64,
}

impl CounterWall {
    fn anchor(&self, since_base_ns: u64) -> f64 {
        let unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        self.offset_ns
            .store(unix_ns - since_base_ns as i64, Ordering::Relaxed);
        self.next_anchor_ns
            .store(since_base_ns + ANCHOR_EVERY_NS, Ordering::Relaxed);
        unix_ns as f64 / 1e9
    }
}

/// Now, as Unix seconds with a fraction (read off a calibrated counter, `CounterWall`).
pub fn wall_now() -> f64 {
    static WALL: OnceLock<CounterWall> = OnceLock::new();
    let wall = WALL.get_or_init(|| CounterWall {
        base: quanta::Instant::now(),
        offset_ns: AtomicI64::new(0),
        next_anchor_ns: AtomicU64::new(0),
    });
    let since = quanta::Instant::now()
        .saturating_duration_since(wall.base)
        .as_nanos() as u64;
    if since >= wall.next_anchor_ns.load(Ordering::Relaxed) {
        return wall.anchor(since);
    }
    (since as i64 + wall.offset_ns.load(Ordering::Relaxed)) as f64 / 1e9
}

/// A clock that only moves when told to; for tests.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock standing at `now` (Unix seconds).
    pub fn new(now: f64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(now.to_bits())))
    }

    /// Moves the clock to `now`.
    pub fn set(&self, now: f64) {
        self.0.store(now.to_bits(), Ordering::SeqCst);
    }

    /// Moves the clock forward by `secs`.
    pub fn advance(&self, secs: f64) {
        self.set(self.now() + secs);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::SeqCst))
    }
}

/// The clock most code wants.
pub type SharedClock = Arc<dyn Clock>;

/// The system clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_wall_clock_follows_the_system_clock() {
        let sys = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        };
        let mut last = 0.0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(2500);
        // Across at least two anchors: within a millisecond of the system
        // clock, and never going back.
        while std::time::Instant::now() < deadline {
            let before = sys();
            let now = wall_now();
            let after = sys();
            assert!(
                now >= before - 1e-3 && now <= after + 1e-3,
                "{before} {now} {after}"
            );
            assert!(now >= last - 1e-3, "went back: {last} -> {now}");
            last = now;
        }
    }
}
