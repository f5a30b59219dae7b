//! Reading request bodies and query strings the way the API answers them.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::Value;

use crate::api_error::{ApiError, ApiResult};

/// Largest JSON body accepted by the REST routes.
pub(crate) const MAX_JSON_BODY: usize = 20 * 1024 * 1024;

/// Parses a JSON body, answering `400` when it is not JSON and `413` when it is too large.
pub(crate) fn json_body(body: &Bytes) -> ApiResult<Value> {
    if body.len() > MAX_JSON_BODY {
        return Err(ApiError::too_large("Request body too large"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}")))
}

/// Reads `limit` and `offset`: `default` when absent, `400` when not a number or above `max`.
pub(crate) fn paging(
    q: &HashMap<String, String>,
    default: usize,
    max: usize,
) -> ApiResult<(usize, usize)> {
    let num = |name: &str| -> ApiResult<Option<usize>> {
        q.get(name)
            .map(|v| {
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| ApiError::bad_request(format!("Invalid `{name}`: `{v}`")))
            })
            .transpose()
    };
    let limit = num("limit")?.unwrap_or(default);
    if limit > max {
        return Err(ApiError::bad_request(format!("`limit` must be at most {max}")));
    }
    Ok((limit, num("offset")?.unwrap_or(0)))
}

/// One `field op value` clause of a `filter` query parameter.
#[derive(Debug)]
pub(crate) struct FilterClause {
    pub(crate) field: String,
    pub(crate) op: String,
    /// Alternatives (`a|b` or `[a, b]`), unquoted.
    pub(crate) values: Vec<String>,
}

/// Parses `filter=field op value,field op value` (`,` = and; `|` or `[..]` lists alternatives).
pub(crate) fn filters(q: &HashMap<String, String>) -> ApiResult<Vec<FilterClause>> {
    let Some(raw) = q.get("filter") else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in raw.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&raw[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&raw[start..]);
    for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
        let mut words = part.splitn(3, ' ');
        let (Some(field), Some(op)) = (words.next(), words.next()) else {
            return Err(ApiError::bad_request(format!("Invalid filter `{part}`")));
        };
        let value = words.next().unwrap_or("").trim();
        let value = value.trim_start_matches('[').trim_end_matches(']');
        let values = value
            .split(['|', ','])
            .map(|v| v.trim().trim_matches('"').to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        out.push(FilterClause { field: field.to_owned(), op: op.to_owned(), values });
    }
    Ok(out)
}

/// A list of strings at `field` of `obj`, or `400`.
pub(crate) fn string_list(obj: &Value, field: &str) -> ApiResult<Vec<String>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    ApiError::bad_request(format!("`{field}` must be an array of strings"))
                })
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(format!("`{field}` must be an array of strings"))),
    }
}
