//! A string that must never be printed: tokens, passwords, connection strings.

use std::fmt;

/// Holds a secret; `Debug` and `Display` print `**REDACTED**`.
///
/// The only way to read the value is [`Secret::expose`], so every place that needs the secret
/// itself (an `Authorization` header, a database connection) is easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// What `Debug` and `Display` print instead of the value.
    pub const REDACTED: &'static str = "**REDACTED**";

    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: pass it on, never print it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(Self::REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn never_prints_the_value() {
        let secret = Secret::new("api-0123456789");
        assert_eq!(format!("{secret}"), "**REDACTED**");
        assert_eq!(format!("{secret:?}"), "**REDACTED**");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(**REDACTED**)");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"**REDACTED**\"");
        assert_eq!(secret.expose(), "api-0123456789");
    }
}
