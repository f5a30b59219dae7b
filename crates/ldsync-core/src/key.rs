//! Identifiers that must not be mixed up, each validated when built.

use std::{fmt, str::FromStr};

use crate::KeyError;

/// Keeps at most this many characters of an invalid value in an error message.
const SHOWN_CHARS: usize = 80;

fn shown(value: &str) -> String {
    if value.chars().count() <= SHOWN_CHARS {
        value.escape_debug().to_string()
    } else {
        let head: String = value.chars().take(SHOWN_CHARS).collect();
        format!("{}…", head.escape_debug())
    }
}

/// The rules of a LaunchDarkly resource key (segments, metrics, projects, environments).
fn check_launchdarkly_key(what: &'static str, value: &str, max: usize) -> Result<(), KeyError> {
    if value.is_empty() {
        return Err(KeyError::Empty { what });
    }
    if value.chars().count() > max {
        return Err(KeyError::TooLong { what, value: shown(value), max });
    }
    let valid = value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    let starts_well = value.starts_with(|c: char| c.is_ascii_alphanumeric());
    if !valid || !starts_well {
        return Err(KeyError::Invalid {
            what,
            value: shown(value),
            rule: "use letters, digits, `.`, `_` or `-`, starting with a letter or digit",
        });
    }
    Ok(())
}

/// Declares a validated string newtype: `new`, `as_str`, `FromStr`, `Display`, serde.
macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Checks the value against the identifier's rules.
            pub fn new(value: impl Into<String>) -> Result<Self, KeyError> {
                let value = value.into();
                let check: fn(&str) -> Result<(), KeyError> = $check;
                check(&value)?;
                Ok(Self(value))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = KeyError;

            fn from_str(value: &str) -> Result<Self, KeyError> {
                Self::new(value)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                Self::new(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_newtype!(
    /// A sync's name: the stem of its file in `syncs/`, used in commands, state and logs.
    SyncName,
    |value| {
        const WHAT: &str = "sync name";
        if value.is_empty() {
            return Err(KeyError::Empty { what: WHAT });
        }
        if value.len() > 64 {
            return Err(KeyError::TooLong { what: WHAT, value: shown(value), max: 64 });
        }
        let valid = value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
        if !valid || !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(KeyError::Invalid {
                what: WHAT,
                value: shown(value),
                rule: "use letters, digits, `-` or `_`, starting with a letter or digit",
            });
        }
        Ok(())
    }
);

string_newtype!(
    /// The key of a LaunchDarkly segment.
    SegmentKey,
    |value| check_launchdarkly_key("segment key", value, 256)
);

string_newtype!(
    /// The key of a LaunchDarkly metric (not its event key).
    MetricKey,
    |value| check_launchdarkly_key("metric key", value, 256)
);

string_newtype!(
    /// The key of a LaunchDarkly project.
    ProjectKey,
    |value| check_launchdarkly_key("project key", value, 256)
);

string_newtype!(
    /// The name of a warehouse declared in `ldsync.toml`.
    WarehouseName,
    |value| check_launchdarkly_key("warehouse name", value, 64)
);

string_newtype!(
    /// The name of a LaunchDarkly environment declared in `ldsync.toml`.
    EnvironmentName,
    |value| check_launchdarkly_key("environment name", value, 64)
);

string_newtype!(
    /// A context kind (`user`, `organization`, any custom kind).
    ///
    /// LaunchDarkly allows letters, digits, `.`, `_` and `-`, and reserves `kind` and `multi`.
    ContextKind,
    |value| {
        const WHAT: &str = "context kind";
        if value.is_empty() {
            return Err(KeyError::Empty { what: WHAT });
        }
        if value.len() > 256 {
            return Err(KeyError::TooLong { what: WHAT, value: shown(value), max: 256 });
        }
        if value == "kind" || value == "multi" {
            return Err(KeyError::Invalid {
                what: WHAT,
                value: shown(value),
                rule: "`kind` and `multi` are reserved by LaunchDarkly",
            });
        }
        if !value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
            return Err(KeyError::Invalid {
                what: WHAT,
                value: shown(value),
                rule: "use letters, digits, `.`, `_` or `-`",
            });
        }
        Ok(())
    }
);

impl ContextKind {
    /// The kind LaunchDarkly assumes when none is given.
    pub fn user() -> Self {
        Self("user".to_owned())
    }
}

impl Default for ContextKind {
    fn default() -> Self {
        Self::user()
    }
}

string_newtype!(
    /// The key of one context (a segment member): any non-empty string, unicode included.
    ContextKey,
    |value| {
        if value.is_empty() {
            return Err(KeyError::Empty { what: "context key" });
        }
        Ok(())
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_keys_follow_launchdarkly_rules() {
        assert!(SegmentKey::new("beta-testers").is_ok());
        assert!(SegmentKey::new("a.b_c-1").is_ok());
        let err = SegmentKey::new("beta users").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid segment key `beta users`: use letters, digits, `.`, `_` or `-`, starting with a letter or digit"
        );
        assert!(matches!(SegmentKey::new(""), Err(KeyError::Empty { .. })));
        assert!(SegmentKey::new("-leading").is_err());
        assert!(SegmentKey::new("x".repeat(257)).is_err());
    }

    #[test]
    fn context_kinds_reserve_kind_and_multi() {
        assert!(ContextKind::new("organization").is_ok());
        assert!(ContextKind::new("multi").is_err());
        assert!(ContextKind::new("kind").is_err());
        assert!(ContextKind::new("a b").is_err());
        assert_eq!(ContextKind::default().as_str(), "user");
    }

    #[test]
    fn context_keys_accept_any_non_empty_text() {
        assert!(ContextKey::new("Zoë O'Brien / 東京").is_ok());
        assert!(ContextKey::new("").is_err());
    }

    #[test]
    fn sync_names_are_file_stems() {
        assert!(SyncName::new("beta-testers").is_ok());
        assert!(SyncName::new("metric_definitions2").is_ok());
        assert!(SyncName::new("beta.testers").is_err());
        assert!(SyncName::new("_hidden").is_err());
    }

    #[test]
    fn long_values_are_shortened_in_errors() {
        let err = SegmentKey::new(format!("{} x", "a".repeat(300))).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }
}
