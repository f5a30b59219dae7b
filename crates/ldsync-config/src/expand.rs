//! `${VAR}`, `${VAR:-default}` and `${VAR:?message}` placeholders, expanded from the environment.
//!
//! Expansion runs on string values after TOML has parsed them, so a value from the environment
//! can never change the structure of a file (a `"` or a newline in it stays inside the string).
//! `$${` writes a literal `${`; a `$` not followed by `{` (as in SQL's `$1`) is left alone.

use std::fmt;

/// Looks a variable up by name.
type Lookup<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

/// Where placeholder values come from.
pub struct Expander<'a> {
    lookup: Lookup<'a>,
}

impl fmt::Debug for Expander<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Expander")
    }
}

impl Default for Expander<'_> {
    fn default() -> Self {
        Self::from_env()
    }
}

/// A placeholder that could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExpandError {
    /// `${VAR}` names a variable that is not set.
    #[error(
        "environment variable `{name}` is not set (write `${{{name}:-default}}` to give a default)"
    )]
    Missing {
        /// The variable.
        name: String,
        /// Byte offset of the placeholder in the string.
        offset: usize,
    },
    /// `${VAR:?message}` names a variable that is not set or is empty.
    #[error("environment variable `{name}` is required: {message}")]
    Required {
        /// The variable.
        name: String,
        /// The message the file gives.
        message: String,
        /// Byte offset of the placeholder in the string.
        offset: usize,
    },
    /// A `${` without its `}`, or with something that is not a variable name.
    #[error("invalid placeholder `{text}`: expected `${{NAME}}`, `${{NAME:-default}}` or `${{NAME:?message}}`")]
    Syntax {
        /// The placeholder as written, shortened.
        text: String,
        /// Byte offset of the placeholder in the string.
        offset: usize,
    },
}

impl ExpandError {
    /// Byte offset of the placeholder in the expanded string.
    pub fn offset(&self) -> usize {
        match self {
            Self::Missing { offset, .. }
            | Self::Required { offset, .. }
            | Self::Syntax { offset, .. } => *offset,
        }
    }
}

impl<'a> Expander<'a> {
    /// Reads variables from the process environment.
    pub fn from_env() -> Self {
        Self::with_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`, for tests and embedding.
    pub fn with_lookup(lookup: impl Fn(&str) -> Option<String> + 'a) -> Self {
        Self { lookup: Box::new(lookup) }
    }

    /// Whether `text` holds a placeholder at all.
    pub fn has_placeholder(text: &str) -> bool {
        text.contains("${")
    }

    /// Expands every placeholder in `text`.
    pub fn expand(&self, text: &str) -> Result<String, ExpandError> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut consumed = 0;
        while let Some(dollar) = rest.find('$') {
            out.push_str(&rest[..dollar]);
            let at = &rest[dollar..];
            let offset = consumed + dollar;
            if let Some(after) = at.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
                consumed = offset + 3;
                continue;
            }
            if !at.starts_with("${") {
                out.push('$');
                rest = &at[1..];
                consumed = offset + 1;
                continue;
            }
            let Some(close) = at.find('}') else {
                return Err(ExpandError::Syntax { text: shorten(at), offset });
            };
            let body = &at[2..close];
            out.push_str(&self.expand_one(body, offset)?);
            rest = &at[close + 1..];
            consumed = offset + close + 1;
        }
        out.push_str(rest);
        Ok(out)
    }

    fn expand_one(&self, body: &str, offset: usize) -> Result<String, ExpandError> {
        let name_end = body.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
        let (name, operator) = match name_end {
            Some(end) => body.split_at(end),
            None => (body, ""),
        };
        let valid_name = !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid_name {
            return Err(ExpandError::Syntax { text: shorten(&format!("${{{body}}}")), offset });
        }
        let value = (self.lookup)(name);
        let set_and_not_empty = value.as_deref().is_some_and(|value| !value.is_empty());
        if operator.is_empty() {
            return value.ok_or_else(|| ExpandError::Missing { name: name.to_owned(), offset });
        }
        if let Some(default) = operator.strip_prefix(":-") {
            return Ok(if set_and_not_empty { value.unwrap_or_default() } else { default.into() });
        }
        if let Some(message) = operator.strip_prefix(":?") {
            if set_and_not_empty {
                return Ok(value.unwrap_or_default());
            }
            let message = if message.is_empty() { "not set" } else { message };
            return Err(ExpandError::Required {
                name: name.to_owned(),
                message: message.to_owned(),
                offset,
            });
        }
        Err(ExpandError::Syntax { text: shorten(&format!("${{{body}}}")), offset })
    }
}

fn shorten(text: &str) -> String {
    const MAX: usize = 40;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(MAX).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expander() -> Expander<'static> {
        Expander::with_lookup(|name| match name {
            "TOKEN" => Some("api-123".into()),
            "EMPTY" => Some(String::new()),
            "QUOTE" => Some("a\"b\nc".into()),
            _ => None,
        })
    }

    #[test]
    fn expands_the_three_forms() {
        let e = expander();
        assert_eq!(e.expand("${TOKEN}").unwrap(), "api-123");
        assert_eq!(e.expand("x-${TOKEN}-y").unwrap(), "x-api-123-y");
        assert_eq!(e.expand("${NOPE:-fallback}").unwrap(), "fallback");
        assert_eq!(e.expand("${EMPTY:-fallback}").unwrap(), "fallback");
        assert_eq!(e.expand("${TOKEN:-fallback}").unwrap(), "api-123");
        assert_eq!(e.expand("${TOKEN:?needed}").unwrap(), "api-123");
        assert_eq!(e.expand("${QUOTE}").unwrap(), "a\"b\nc");
    }

    #[test]
    fn leaves_sql_parameters_and_escapes_alone() {
        let e = expander();
        assert_eq!(e.expand("where t >= $1 and $2").unwrap(), "where t >= $1 and $2");
        assert_eq!(e.expand("cost $ 5, $${TOKEN}").unwrap(), "cost $ 5, ${TOKEN}");
    }

    #[test]
    fn reports_missing_and_required_variables_with_their_offset() {
        let e = expander();
        let err = e.expand("ab ${NOPE}").unwrap_err();
        assert_eq!(err.offset(), 3);
        assert!(err.to_string().starts_with("environment variable `NOPE` is not set"), "{err}");
        let err = e.expand("${EMPTY:?set the token}").unwrap_err();
        assert_eq!(err.to_string(), "environment variable `EMPTY` is required: set the token");
    }

    #[test]
    fn rejects_malformed_placeholders() {
        let e = expander();
        assert!(matches!(e.expand("${TOKEN"), Err(ExpandError::Syntax { .. })));
        assert!(matches!(e.expand("${}"), Err(ExpandError::Syntax { .. })));
        assert!(matches!(e.expand("${1A}"), Err(ExpandError::Syntax { .. })));
        assert!(matches!(e.expand("${A:=b}"), Err(ExpandError::Syntax { .. })));
    }
}
