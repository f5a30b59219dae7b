//! Values with rules, checked while a file is parsed so errors point at the value.

use std::{fmt, str::FromStr, time::Duration};

/// Implements `Deserialize` through `FromStr`, so a bad value is reported at its position.
macro_rules! deserialize_from_str {
    ($name:ident) => {
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A duration written as `90s`, `15m`, `6h`, `1d`, `1w` or a sum such as `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(Duration);

impl HumanDuration {
    /// Wraps a duration.
    pub fn new(duration: Duration) -> Self {
        Self(duration)
    }

    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let expected = || {
            format!(
                "invalid duration `{}`: expected a number and a unit (`ms`, `s`, `m`, `h`, `d`, `w`), such as `6h` or `1h30m`",
                text.escape_debug()
            )
        };
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(expected());
        }
        let mut total = Duration::ZERO;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if digits == 0 {
                return Err(expected());
            }
            let number: u64 = rest[..digits].parse().map_err(|_| expected())?;
            rest = &rest[digits..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
            let millis_per_unit: u64 = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "w" => 604_800_000,
                _ => return Err(expected()),
            };
            rest = &rest[unit_len..];
            let millis = number
                .checked_mul(millis_per_unit)
                .ok_or_else(|| format!("duration `{}` is too long", text.escape_debug()))?;
            total = total.checked_add(Duration::from_millis(millis)).ok_or_else(expected)?;
        }
        Ok(Self(total))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        let units = [(604_800_000, "w"), (86_400_000, "d"), (3_600_000, "h"), (60_000, "m")];
        for (size, unit) in units {
            if millis >= size && millis.is_multiple_of(size) {
                return write!(f, "{}{unit}", millis / size);
            }
        }
        if millis.is_multiple_of(1_000) {
            write!(f, "{}s", millis / 1_000)
        } else {
            write!(f, "{millis}ms")
        }
    }
}

deserialize_from_str!(HumanDuration);

/// A share between 0 and 1, both included.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Ratio(f64);

impl Ratio {
    /// Checks that `value` lies in `0..=1`.
    pub fn new(value: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&value) {
            Ok(Self(value))
        } else {
            Err(format!("invalid ratio `{value}`: expected a number from 0 to 1, such as 0.25"))
        }
    }

    /// The share.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl<'de> serde::Deserialize<'de> for Ratio {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Ratio;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number from 0 to 1")
            }
            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Ratio, E> {
                Ratio::new(value).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Ratio, E> {
                match value {
                    0 => Ok(Ratio(0.0)),
                    1 => Ok(Ratio(1.0)),
                    _ => Err(E::custom(format!(
                        "invalid ratio `{value}`: expected a number from 0 to 1, such as 0.25"
                    ))),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Ratio, E> {
                self.visit_i64(i64::try_from(value).unwrap_or(i64::MAX))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A cron expression, evaluated in UTC: five fields, or six with seconds first.
#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    cron: croner::Cron,
}

impl Schedule {
    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first time strictly after `after` when the schedule fires.
    pub fn next_after(
        &self,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        // Whole seconds: from 10:14:59.25 the next quarter hour is 10:15:00, not 10:15:00.25.
        let after = chrono::Timelike::with_nanosecond(&after, 0)?;
        self.cron.find_next_occurrence(&after, false).ok()
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let fields = text.split_whitespace().count();
        let is_alias = text.trim_start().starts_with('@');
        if !is_alias && !(5..=6).contains(&fields) {
            return Err(format!(
                "invalid cron expression `{}`: expected 5 fields (minute hour day month weekday), such as `*/15 * * * *`",
                text.escape_debug()
            ));
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(text)
            .map_err(|err| {
                format!(
                    "invalid cron expression `{}`: {err}; expected 5 fields (minute hour day month weekday), such as `*/15 * * * *`",
                    text.escape_debug()
                )
            })?;
        Ok(Self { text: text.to_owned(), cron })
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

deserialize_from_str!(Schedule);

/// The SQL text of a sync: not empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query(String);

impl Query {
    /// The SQL.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the query refers to the positional parameter `$n` (and not `$n0`).
    pub fn binds(&self, n: u32) -> bool {
        let needle = format!("${n}");
        self.0
            .match_indices(&needle)
            .any(|(at, _)| !self.0[at + needle.len()..].starts_with(|c: char| c.is_ascii_digit()))
    }
}

impl FromStr for Query {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("empty query: expected the SQL that selects the rows to sync".to_owned());
        }
        Ok(Self(text.to_owned()))
    }
}

deserialize_from_str!(Query);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_units_and_sums() {
        let secs = |text: &str| text.parse::<HumanDuration>().unwrap().get().as_secs();
        assert_eq!(secs("6h"), 21_600);
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("1h30m"), 5_400);
        assert_eq!(secs("1d"), 86_400);
        assert_eq!(secs("2w"), 1_209_600);
        assert_eq!("250ms".parse::<HumanDuration>().unwrap().get().as_millis(), 250);
        for bad in ["", "6", "h", "6 hours", "-1h", "1.5h", "99999999999999999999h", "1y"] {
            assert!(bad.parse::<HumanDuration>().is_err(), "{bad}");
        }
        assert_eq!("90m".parse::<HumanDuration>().unwrap().to_string(), "90m");
        assert_eq!("120m".parse::<HumanDuration>().unwrap().to_string(), "2h");
    }

    #[test]
    fn ratios_lie_between_zero_and_one() {
        assert!(Ratio::new(0.25).is_ok());
        assert!(Ratio::new(1.0).is_ok());
        assert!(Ratio::new(1.5).is_err());
        assert!(Ratio::new(-0.1).is_err());
        assert!(Ratio::new(f64::NAN).is_err());
    }

    #[test]
    fn schedules_parse_cron_and_find_the_next_time() {
        let schedule: Schedule = "*/15 * * * *".parse().unwrap();
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-01T10:07:00Z").unwrap().to_utc();
        let next = schedule.next_after(at).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-01-01T10:15:00+00:00");
        let fraction =
            chrono::DateTime::parse_from_rfc3339("2026-01-01T10:14:59.25Z").unwrap().to_utc();
        assert_eq!(
            schedule.next_after(fraction).unwrap().to_rfc3339(),
            "2026-01-01T10:15:00+00:00"
        );
        assert!("@hourly".parse::<Schedule>().is_ok());
        assert!("0 * * * * *".parse::<Schedule>().is_ok());
        for bad in ["", "every hour", "61 * * * *", "* * *", "* * * * * * * *"] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn queries_know_their_parameters() {
        let query: Query = "select * from t where a >= $1".parse().unwrap();
        assert!(query.binds(1));
        assert!(!query.binds(2));
        let query: Query = "select $10".parse().unwrap();
        assert!(!query.binds(1));
        assert!("  \n".parse::<Query>().is_err());
    }
}
