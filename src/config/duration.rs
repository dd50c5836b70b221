//! Durations as operators write them in the config (`100ms`, `30s`, `30m`, `2h`, `1d`).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const EXPECTED: &str = "expected a duration like 100ms, 30s, 30m, 2h";

// Largest unit first, so serialization picks the shortest exact form.
const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// A configuration duration with millisecond resolution.
///
/// A unit is always required: a bare `30` is refused because PgBouncer (seconds) and
/// RDS Proxy (minutes, seconds) disagree on what it would mean.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Duration(std::time::Duration);

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> Self {
        Self(std::time::Duration::from_millis(millis))
    }

    pub const fn as_std(self) -> std::time::Duration {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

/// Why a duration string was refused; its Display is the message shown to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseDurationError(String);

impl fmt::Display for ParseDurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseDurationError {}

impl FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseDurationError(format!("invalid duration `{s}`: {EXPECTED}"));
        let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(digits_end);
        if number.is_empty() {
            return Err(bad());
        }
        if unit.is_empty() {
            return Err(ParseDurationError(format!(
                "duration `{s}` has no unit: {EXPECTED}"
            )));
        }
        let (_, millis_per_unit) = UNITS.iter().find(|(u, _)| *u == unit).ok_or_else(bad)?;
        let too_large = || ParseDurationError(format!("duration `{s}` is too large"));
        let number: u64 = number.parse().map_err(|_| too_large())?;
        let millis = number.checked_mul(*millis_per_unit).ok_or_else(too_large)?;
        Ok(Self::from_millis(millis))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only whole milliseconds can be built, so `ms` always divides exactly.
        let millis = u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX);
        if millis == 0 {
            return f.write_str("0s");
        }
        for (unit, per) in UNITS {
            if millis % per == 0 {
                return write!(f, "{}{unit}", millis / per);
            }
        }
        write!(f, "{millis}ms")
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like 100ms, 30s, 30m, 2h")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(format!("duration `{v}` has no unit: {EXPECTED}")))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(format!("invalid duration `{v}`: {EXPECTED}")))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                Err(E::custom(format!("invalid duration `{v}`: {EXPECTED}")))
            }
        }

        // `any`, so a bare number reaches `visit_u64` and gets the "no unit" hint.
        deserializer.deserialize_any(DurationVisitor)
    }
}

impl JsonSchema for Duration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9]+(ms|s|m|h|d)$",
            "description": "A duration with a unit: ms, s, m, h or d (e.g. 100ms, 30s, 30m, 2h, 1d).",
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!("100ms".parse(), Ok(Duration::from_millis(100)));
        assert_eq!("30s".parse(), Ok(Duration::from_secs(30)));
        assert_eq!("30m".parse(), Ok(Duration::from_secs(30 * 60)));
        assert_eq!("2h".parse(), Ok(Duration::from_secs(2 * 3600)));
        assert_eq!("1d".parse(), Ok(Duration::from_secs(86_400)));
        assert_eq!("0s".parse(), Ok(Duration::from_secs(0)));
    }

    #[test]
    fn refuses_missing_or_unknown_units() {
        for bad in [
            "30", "", "s", "1.5s", "-1s", "10 s", "10sec", "1h30m", " 1s",
        ] {
            let err = bad.parse::<Duration>().unwrap_err().to_string();
            assert!(err.contains(EXPECTED), "{bad:?}: {err}");
        }
        assert!(
            "99999999999999999999d"
                .parse::<Duration>()
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
    }

    #[test]
    fn displays_the_shortest_exact_form() {
        let cases = [(1500, "1500ms"), (60_000, "1m"), (90_000, "90s"), (0, "0s")];
        for (millis, text) in cases {
            assert_eq!(Duration::from_millis(millis).to_string(), text);
        }
        assert_eq!(Duration::from_secs(86_400 * 2).to_string(), "2d");
        assert_eq!(Duration::from_secs(7200).to_string(), "2h");
    }

    #[test]
    fn serde_round_trip_and_integer_refused() {
        let d: Duration = serde_json::from_str("\"120s\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"2m\"");
        let err = serde_json::from_str::<Duration>("30")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no unit"), "{err}");
    }
}
