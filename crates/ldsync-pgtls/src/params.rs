//! Splitting the TLS parameters out of a connection string, in its URL or `key=value` form.
//!
//! tokio-postgres's parser knows `sslmode` only as `disable`, `prefer` or `require`, and no
//! `sslrootcert`; so those are taken out here, and the rest is handed to
//! `tokio_postgres::Config::from_str` unchanged (URL form) or re-quoted (`key=value` form).

use std::borrow::Cow;
use std::iter::Peekable;
use std::str::Chars;

use crate::{Error, Result};

/// The URL prefixes that tokio-postgres recognises.
const URL_PREFIXES: [&str; 2] = ["postgres://", "postgresql://"];

/// libpq parameters refused because this crate does not implement them.
const UNSUPPORTED: [&str; 6] =
    ["sslcert", "sslkey", "sslpassword", "sslcrl", "sslcrldir", "sslcertmode"];

/// The TLS parameters of a connection string; each holds the last value given, as in libpq.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsParams {
    /// The raw `sslmode`.
    pub(crate) sslmode: Option<String>,
    /// The raw `sslrootcert`.
    pub(crate) sslrootcert: Option<String>,
}

/// Returns the connection string without its TLS parameters, and those parameters.
pub(crate) fn split(conn: &str) -> Result<(String, TlsParams)> {
    match URL_PREFIXES.iter().find(|prefix| conn.starts_with(*prefix)) {
        Some(prefix) => split_url(conn, prefix.len()),
        None => split_key_value(conn),
    }
}

/// Records `key` in `params` when it is a TLS parameter; returns whether it was one.
fn take(key: &str, value: Cow<'_, str>, params: &mut TlsParams) -> Result<bool> {
    match key {
        "sslmode" => params.sslmode = Some(value.into_owned()),
        "sslrootcert" => params.sslrootcert = Some(value.into_owned()),
        _ => {
            if let Some(name) = UNSUPPORTED.iter().find(|name| **name == key) {
                return Err(Error::Unsupported { name });
            }
            return Ok(false);
        }
    }
    Ok(true)
}

fn split_url(url: &str, prefix_len: usize) -> Result<(String, TlsParams)> {
    let mut params = TlsParams::default();
    let after_prefix = &url[prefix_len..];
    // tokio-postgres ends the credentials at the first `@` and the path at the next `?`; looking
    // for the query the same way keeps a `?` in a password out of it.
    let host_start = after_prefix.find('@').map_or(0, |at| at + 1);
    let Some(question) = after_prefix[host_start..].find('?') else {
        return Ok((url.to_owned(), params));
    };
    let query_start = prefix_len + host_start + question;
    let (head, query) = (&url[..query_start], &url[query_start + 1..]);
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        if let Some((key, value)) = pair.split_once('=') {
            if take(&decode(key)?, decode(value)?, &mut params)? {
                continue;
            }
        }
        kept.push(pair);
    }
    let rest = if kept.is_empty() { head.to_owned() } else { format!("{head}?{}", kept.join("&")) };
    Ok((rest, params))
}

fn decode(text: &str) -> Result<Cow<'_, str>> {
    percent_encoding::percent_decode_str(text).decode_utf8().map_err(|_| Error::InvalidEncoding)
}

/// Parses libpq's `key = value` form as tokio-postgres does (whitespace between pairs, values
/// optionally in single quotes, `\` escaping the next character) and writes the other pairs back
/// with every value quoted.
fn split_key_value(conn: &str) -> Result<(String, TlsParams)> {
    let mut params = TlsParams::default();
    let mut kept = Vec::new();
    let mut chars = conn.chars().peekable();
    loop {
        skip_whitespace(&mut chars);
        if chars.peek().is_none() {
            break;
        }
        let key = take_while(&mut chars, |c| !c.is_whitespace() && c != '=');
        if key.is_empty() {
            return Err(Error::Syntax { problem: "a `=` has no parameter name before it" });
        }
        skip_whitespace(&mut chars);
        if chars.next() != Some('=') {
            return Err(Error::Syntax { problem: "a parameter name is not followed by `=`" });
        }
        skip_whitespace(&mut chars);
        let value = read_value(&mut chars)?;
        if !take(&key, Cow::Borrowed(&value), &mut params)? {
            kept.push(format!("{key}={}", quote(&value)));
        }
    }
    Ok((kept.join(" "), params))
}

fn skip_whitespace(chars: &mut Peekable<Chars<'_>>) {
    while chars.next_if(|c| c.is_whitespace()).is_some() {}
}

fn take_while(chars: &mut Peekable<Chars<'_>>, keep: impl Fn(char) -> bool) -> String {
    let mut taken = String::new();
    while let Some(c) = chars.next_if(|c| keep(*c)) {
        taken.push(c);
    }
    taken
}

fn read_value(chars: &mut Peekable<Chars<'_>>) -> Result<String> {
    let quoted = chars.next_if_eq(&'\'').is_some();
    let mut value = String::new();
    loop {
        match chars.peek().copied() {
            None if quoted => {
                return Err(Error::Syntax { problem: "a quoted value has no closing `'`" })
            }
            Some('\'') if quoted => {
                chars.next();
                return Ok(value);
            }
            Some(c) if !quoted && c.is_whitespace() => break,
            None => break,
            Some(c) => {
                chars.next();
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
    }
    if value.is_empty() {
        return Err(Error::Syntax { problem: "a parameter has no value after `=`" });
    }
    Ok(value)
}

/// Quotes a value for tokio-postgres's `key=value` parser.
fn quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        if c == '\\' || c == '\'' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('\'');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(sslmode: Option<&str>, sslrootcert: Option<&str>) -> TlsParams {
        TlsParams { sslmode: sslmode.map(Into::into), sslrootcert: sslrootcert.map(Into::into) }
    }

    #[test]
    fn url_without_query_is_unchanged() {
        let url = "postgres://u:p@db.example.com:5433/app";
        assert_eq!(split(url).unwrap(), (url.to_owned(), TlsParams::default()));
    }

    #[test]
    fn url_tls_parameters_are_taken_out_and_decoded() {
        let (rest, found) = split(
            "postgresql://u:p@h/app?application_name=x&sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fca.pem&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(rest, "postgresql://u:p@h/app?application_name=x&connect_timeout=5");
        assert_eq!(found, params(Some("verify-full"), Some("/etc/ca.pem")));
    }

    #[test]
    fn url_query_disappears_when_only_tls_parameters_were_in_it() {
        let (rest, found) = split("postgres://h/app?sslmode=require&").unwrap();
        assert_eq!(rest, "postgres://h/app");
        assert_eq!(found, params(Some("require"), None));
    }

    #[test]
    fn question_mark_in_password_is_not_a_query() {
        let (rest, found) = split("postgres://u:pa?ss@h/app?sslmode=disable").unwrap();
        assert_eq!(rest, "postgres://u:pa?ss@h/app");
        assert_eq!(found, params(Some("disable"), None));
    }

    #[test]
    fn last_value_wins() {
        let (_, found) = split("postgres://h/?sslmode=require&sslmode=verify-ca").unwrap();
        assert_eq!(found.sslmode.as_deref(), Some("verify-ca"));
    }

    #[test]
    fn key_value_tls_parameters_are_taken_out_and_the_rest_requoted() {
        let (rest, found) = split(
            "host=h  user = u password='it s' sslmode = verify-ca \
             sslrootcert='/my certs/ca.pem' dbname=a\\ b",
        )
        .unwrap();
        assert_eq!(rest, "host='h' user='u' password='it s' dbname='a b'");
        assert_eq!(found, params(Some("verify-ca"), Some("/my certs/ca.pem")));
    }

    #[test]
    fn key_value_escapes_survive_the_round_trip() {
        let (rest, _) = split(r"password='a\'b\\c' sslmode=require").unwrap();
        assert_eq!(rest, r"password='a\'b\\c'");
        let config: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"a'b\\c"[..]));
    }

    #[test]
    fn key_value_syntax_errors_do_not_quote_the_input() {
        for bad in ["password='hunter2", "hunter2 host=h", "password=", "=hunter2"] {
            let message = split(bad).unwrap_err().to_string();
            assert!(!message.contains("hunter2"), "{message}");
            assert!(message.starts_with("invalid connection string: "), "{message}");
        }
    }

    #[test]
    fn unsupported_parameters_are_refused_by_name() {
        for conn in ["postgres://h/?sslcert=/c.pem", "host=h sslkey=/k.pem", "sslcrl=x"] {
            let message = split(conn).unwrap_err().to_string();
            assert!(message.contains("is not supported"), "{message}");
        }
        let message = split("host=h sslcert=/c.pem").unwrap_err().to_string();
        assert!(message.starts_with("`sslcert` is not supported"), "{message}");
    }

    #[test]
    fn invalid_percent_encoding_is_refused() {
        let error = split("postgres://h/?sslrootcert=%FF").unwrap_err();
        assert!(matches!(error, Error::InvalidEncoding), "{error}");
    }
}
