//! Wall-clock time, durations written `30s`/`10m`/`2h`/`15d`, and RFC 3339 dates.
//!
//! Every tool asks this module for "now" so that tests can run the real binaries at
//! another date (`PEERGROUP_FAKE_NOW`), the way `faketime` would, without waiting for
//! certificates to expire.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use thiserror::Error;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Environment variable that overrides the current time (RFC 3339), for tests only.
pub const FAKE_NOW_ENV: &str = "PEERGROUP_FAKE_NOW";

/// The longest duration accepted anywhere: 100 years, the group root's lifetime.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Errors from parsing times and durations.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ClockError {
    /// A duration that is not a number followed by one unit.
    #[error("invalid duration {0:?}: write a number and a unit, e.g. 30s, 10m, 2h, 15d")]
    BadDuration(String),
    /// A duration of zero or beyond 100 years.
    #[error("duration {0:?} is out of range: use between 1s and 36500d")]
    DurationRange(String),
    /// A date that is not RFC 3339.
    #[error("invalid date {0:?}: expected RFC 3339, e.g. 2026-01-31T12:00:00Z")]
    BadDate(String),
}

/// A fake clock: the time `PEERGROUP_FAKE_NOW` names at the first reading, advancing
/// with the real (monotonic) time from then on, as `faketime` does.
#[derive(Debug, Clone, Copy)]
pub struct FakeClock {
    start: OffsetDateTime,
    since: Instant,
}

impl FakeClock {
    /// A clock that reads `start` at `since`.
    pub fn new(start: OffsetDateTime, since: Instant) -> FakeClock {
        FakeClock { start, since }
    }

    /// What the clock reads at `at`.
    pub fn at(&self, at: Instant) -> OffsetDateTime {
        let elapsed = at.saturating_duration_since(self.since);
        self.start
            .checked_add(elapsed.try_into().unwrap_or(time::Duration::ZERO))
            .unwrap_or(self.start)
    }
}

/// What `PEERGROUP_FAKE_NOW` (the value `var`) makes of the clock, read at `since`: the
/// fake clock if it is a date, and the warning to print either way. A variable forgotten
/// in a shell would otherwise freeze or shift every tool's clock without a word.
pub fn fake_clock(var: Option<&str>, since: Instant) -> (Option<FakeClock>, Option<String>) {
    let Some(v) = var else { return (None, None) };
    match parse_rfc3339(v) {
        Ok(start) => (
            Some(FakeClock::new(start, since)),
            Some(format!(
                "warning: {FAKE_NOW_ENV} is set: the clock starts at {} instead of the real time (a test setting: unset it)",
                format_rfc3339(start)
            )),
        ),
        Err(_) => (
            None,
            Some(format!(
                "warning: ignoring {FAKE_NOW_ENV}={v:?}: not an RFC 3339 date (a test setting: unset it)"
            )),
        ),
    }
}

/// The process's fake clock, if `PEERGROUP_FAKE_NOW` set one; its warning is printed
/// on stderr once, at the first reading.
fn process_fake_clock() -> Option<FakeClock> {
    static FAKE: OnceLock<Option<FakeClock>> = OnceLock::new();
    *FAKE.get_or_init(|| {
        let var = std::env::var(FAKE_NOW_ENV).ok();
        let (clock, warning) = fake_clock(var.as_deref(), Instant::now());
        if let Some(w) = warning {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "{w}");
        }
        clock
    })
}

/// The current time, truncated to whole seconds (certificates carry seconds).
///
/// Honours `PEERGROUP_FAKE_NOW` (see [`fake_clock`]).
pub fn now() -> OffsetDateTime {
    let t = now_precise();
    t.replace_nanosecond(0).unwrap_or(t)
}

/// The current time with full precision (for arrival stamps and record times);
/// honours `PEERGROUP_FAKE_NOW` like [`now`]: its date plus the real time elapsed since
/// the first reading.
pub fn now_precise() -> OffsetDateTime {
    match process_fake_clock() {
        Some(fake) => fake.at(Instant::now()),
        None => OffsetDateTime::now_utc(),
    }
}

/// Parses a duration such as `30s`, `10m`, `2h`, `15d` or `2w`.
pub fn parse_duration(text: &str) -> Result<Duration, ClockError> {
    let t = text.trim();
    let bad = || ClockError::BadDuration(text.to_string());
    let unit_at = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = t.split_at(unit_at);
    if digits.is_empty() || digits.len() > 12 {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let secs_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    let secs = n
        .checked_mul(secs_per_unit)
        .ok_or_else(|| ClockError::DurationRange(text.to_string()))?;
    let d = Duration::from_secs(secs);
    if d.is_zero() || d > MAX_DURATION {
        return Err(ClockError::DurationRange(text.to_string()));
    }
    Ok(d)
}

/// Writes a duration in the largest unit that divides it exactly (`7d`, `90m`, `45s`).
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= n && s.is_multiple_of(n) {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

/// Formats a time as RFC 3339 UTC with whole seconds, e.g. `2026-11-25T22:34:18Z`.
pub fn format_rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Parses an RFC 3339 date.
pub fn parse_rfc3339(text: &str) -> Result<OffsetDateTime, ClockError> {
    OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|_| ClockError::BadDate(text.to_string()))
}

/// Converts a unix timestamp in seconds to a time, saturating at the representable range.
pub fn from_unix(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(if secs < 0 {
        OffsetDateTime::UNIX_EPOCH
    } else {
        time::macros::datetime!(9999-12-31 23:59:59 UTC)
    })
}

/// Adds a std duration to a time, saturating instead of overflowing.
pub fn add(t: OffsetDateTime, d: Duration) -> OffsetDateTime {
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    from_unix(t.unix_timestamp().saturating_add(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("15d"), Ok(Duration::from_secs(15 * 86_400)));
        assert_eq!(format_duration(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(format_duration(Duration::from_secs(5400)), "90m");
        assert_eq!(format_duration(Duration::from_secs(61)), "61s");
    }

    #[test]
    fn bad_durations_are_refused() {
        for bad in ["", "d", "10", "10x", "-1d", "1.5d", "1 d d", "99999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(parse_duration("0s"), Err(ClockError::DurationRange(_))));
        assert!(matches!(parse_duration("36501d"), Err(ClockError::DurationRange(_))));
    }

    #[test]
    fn a_fake_clock_warns_and_advances_from_its_start() {
        let t0 = Instant::now();
        let (clock, warning) = fake_clock(Some("2030-01-01T00:00:00Z"), t0);
        let clock = clock.unwrap();
        assert!(warning.unwrap().contains("2030-01-01T00:00:00Z"));
        assert_eq!(format_rfc3339(clock.at(t0)), "2030-01-01T00:00:00Z");
        assert_eq!(
            format_rfc3339(clock.at(t0 + Duration::from_secs(90))),
            "2030-01-01T00:01:30Z"
        );
        let (clock, warning) = fake_clock(Some("tomorrow"), t0);
        assert!(clock.is_none());
        assert!(warning.unwrap().contains("ignoring"));
        assert!(matches!(fake_clock(None, t0), (None, None)));
    }

    #[test]
    fn rfc3339_round_trips() {
        let t = parse_rfc3339("2026-01-31T12:00:00Z").unwrap();
        assert_eq!(format_rfc3339(t), "2026-01-31T12:00:00Z");
        assert!(parse_rfc3339("yesterday").is_err());
    }
}
