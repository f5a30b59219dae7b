//! Route patterns such as `POST /api/v2/segments/*/*/*/contexts`, used by rate limits and faults.

use std::fmt;
use std::str::FromStr;

/// A method and a path pattern that select requests.
///
/// Text form: `[METHOD ]PATH`. `METHOD` is an HTTP method or `*` (any; also the default when
/// omitted). In `PATH`, `*` matches exactly one path segment and a final `**` matches any rest
/// (zero or more segments). Examples: `POST /api/v2/segments/*/*/*/contexts`,
/// `* /api/v2/metrics/**`, `/v2/event-data-import/*/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    method: Option<String>,
    segments: Vec<Segment>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One,
    Rest,
}

impl RoutePattern {
    /// Whether a request with this method and path is selected.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        if let Some(m) = &self.method {
            if !m.eq_ignore_ascii_case(method) {
                return false;
            }
        }
        let mut parts = path.trim_start_matches('/').split('/');
        for seg in &self.segments {
            match seg {
                Segment::Rest => return true,
                Segment::One => {
                    if parts.next().is_none_or(str::is_empty) {
                        return false;
                    }
                }
                Segment::Literal(lit) => {
                    if parts.next() != Some(lit.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for RoutePattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (method, path) = match s.split_once(' ') {
            Some((m, p)) => (m.trim(), p.trim()),
            None => ("*", s),
        };
        if !path.starts_with('/') {
            return Err(format!("route path `{path}` must start with `/`"));
        }
        if method != "*" && !method.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(format!("`{method}` is not an HTTP method or `*`"));
        }
        let raw: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let mut segments = Vec::with_capacity(raw.len());
        for (i, part) in raw.iter().enumerate() {
            segments.push(match *part {
                "*" => Segment::One,
                "**" if i + 1 == raw.len() => Segment::Rest,
                "**" => return Err("`**` may only end a route pattern".to_owned()),
                lit => Segment::Literal(lit.to_owned()),
            });
        }
        let method = (method != "*").then(|| method.to_ascii_uppercase());
        let text = format!("{} {path}", method.as_deref().unwrap_or("*"));
        Ok(Self { method, segments, text })
    }
}

#[cfg(test)]
mod tests {
    use super::RoutePattern;

    #[test]
    fn matches_segments_and_methods() {
        let p: RoutePattern = "POST /api/v2/segments/*/*/*/contexts".parse().unwrap();
        assert!(p.matches("POST", "/api/v2/segments/p/e/k/contexts"));
        assert!(p.matches("post", "/api/v2/segments/p/e/k/contexts"));
        assert!(!p.matches("GET", "/api/v2/segments/p/e/k/contexts"));
        assert!(!p.matches("POST", "/api/v2/segments/p/e/k/users"));
        assert!(!p.matches("POST", "/api/v2/segments/p/e/contexts"));
        let any: RoutePattern = "/api/v2/**".parse().unwrap();
        assert!(any.matches("DELETE", "/api/v2/metrics/p/m"));
        assert!(!any.matches("POST", "/v2/event-data-import/p/e"));
        assert!("/a/**/b".parse::<RoutePattern>().is_err());
        assert!("api".parse::<RoutePattern>().is_err());
    }
}
