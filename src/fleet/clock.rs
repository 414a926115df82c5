//! Each host's clock against the controller's, measured over the switch's own channel, so that
//! the switch can be given one instant of the controller's clock and every host can rename at
//! that instant on its own clock, however long its word takes to arrive.
//!
//! The method is NTP's: the controller notes its clock when it asks (`sent`) and when the answer
//! arrives (`received`); the host's answer (`host`) was read somewhere in between. Taking it as
//! the midpoint gives the offset, wrong by at most half the round trip. Of several exchanges, the
//! one with the shortest round trip is kept: it has the smallest error bound.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The controller's clock, in Unix microseconds.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// One question and answer, all in Unix microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub sent: i64,
    pub host: i64,
    pub received: i64,
}

impl Sample {
    pub fn round_trip(&self) -> i64 {
        self.received - self.sent
    }
}

/// A host's clock against the controller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset {
    /// Host clock minus controller clock, µs.
    pub offset_us: i64,
    /// The most the offset can be wrong by: half the round trip it was measured with, µs.
    pub error_us: i64,
}

impl Offset {
    /// An instant of the controller's clock, on the host's.
    pub fn to_host(&self, controller_us: i64) -> i64 {
        controller_us + self.offset_us
    }

    /// An instant of the host's clock, on the controller's.
    pub fn to_controller(&self, host_us: i64) -> i64 {
        host_us - self.offset_us
    }
}

/// The offset from the sample with the shortest round trip; `None` without a usable sample
/// (a reply that came before its question is one of a clock that jumped).
pub fn estimate(samples: &[Sample]) -> Option<Offset> {
    let best = samples
        .iter()
        .filter(|s| s.round_trip() >= 0)
        .min_by_key(|s| s.round_trip())?;
    // The midpoint, rounded down; the error rounds up so that it stays a bound.
    let mid = best.sent + best.round_trip() / 2;
    Some(Offset {
        offset_us: best.host - mid,
        error_us: (best.round_trip() + 1) / 2,
    })
}

/// How far ahead of now to schedule the switch: time for the word to reach every host. `trips`
/// are the round trips seen while the hosts were asked together, the way the words go out.
/// Twice the slowest, at least `floor`, at most `ceiling`.
pub fn lead(trips: &[i64], floor: Duration, ceiling: Duration) -> Duration {
    let slowest = trips.iter().copied().max().unwrap_or(0).max(0) as u64;
    Duration::from_micros(slowest.saturating_mul(2)).clamp(floor, ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(sent: i64, host: i64, received: i64) -> Sample {
        Sample {
            sent,
            host,
            received,
        }
    }

    #[test]
    fn the_shortest_round_trip_wins_and_bounds_the_error() {
        // The host runs 5 ms ahead. A slow exchange (answer queued 8 ms on the way back) and a
        // quick one: the quick one is kept, and its error bound holds the true offset.
        let samples = [s(1_000, 6_100, 10_200), s(20_000, 25_150, 20_300)];
        let o = estimate(&samples).expect("an estimate");
        assert_eq!(o.error_us, 150);
        assert!((o.offset_us - 5_000).abs() <= o.error_us, "{o:?}");
        assert_eq!(o.to_controller(o.to_host(42)), 42);
        // A clock that jumped back mid-exchange gives nothing to go on.
        assert_eq!(estimate(&[s(10, 5, 9)]), None);
        assert_eq!(estimate(&[]), None);
    }

    #[test]
    fn the_lead_covers_the_slowest_trip_within_bounds() {
        let floor = Duration::from_millis(3);
        let ceiling = Duration::from_millis(250);
        assert_eq!(lead(&[], floor, ceiling), floor);
        assert_eq!(
            lead(&[400, 2_500], floor, ceiling),
            Duration::from_millis(5)
        );
        assert_eq!(lead(&[900_000], floor, ceiling), ceiling);
    }
}
