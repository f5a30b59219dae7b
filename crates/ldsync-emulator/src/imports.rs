//! Big-segment CSV imports: `POST …/imports` (multipart) and `GET …/imports/{importID}`.

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::api_error::{ApiError, ApiResult};
use crate::server::{AppState, Caller};
use crate::state::{now_ms, Import, ImportStatus};

/// Largest CSV file LaunchDarkly imports.
pub const MAX_IMPORT_FILE_BYTES: usize = 40 * 1024 * 1024;
/// Most context keys in one CSV file.
pub const MAX_IMPORT_KEYS: usize = 1_000_000;

/// The keys of a CSV file: the first column of each non-empty line, no header row.
fn csv_keys(data: &[u8]) -> ApiResult<Vec<String>> {
    let text = std::str::from_utf8(data)
        .map_err(|_| ApiError::bad_request("The file is not UTF-8 text"))?;
    let mut keys = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let key = if let Some(rest) = line.strip_prefix('"') {
            // A quoted first field: `""` is a quote; the field ends at the next lone quote.
            let mut key = String::new();
            let mut chars = rest.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        key.push('"');
                    } else {
                        break;
                    }
                } else {
                    key.push(c);
                }
            }
            key
        } else {
            line.split(',').next().unwrap_or_default().trim().to_owned()
        };
        if key.is_empty() {
            continue;
        }
        keys.push(key);
        if keys.len() > MAX_IMPORT_KEYS {
            return Err(ApiError::bad_request(format!(
                "The file has more than {MAX_IMPORT_KEYS} contexts; split it into several merge imports"
            )));
        }
    }
    Ok(keys)
}

struct Upload {
    file_name: String,
    data: Vec<u8>,
    replace: bool,
    wait: bool,
}

async fn read_upload(mut multipart: Multipart) -> ApiResult<Upload> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::bad_request(format!("Invalid multipart body: {e}"))
    };
    let mut file = None;
    let mut mode = None;
    let mut wait = false;
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        match field.name().unwrap_or_default() {
            "file" => {
                let name = field.file_name().unwrap_or("import.csv").to_owned();
                let mut data = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    data.extend_from_slice(&chunk);
                    if data.len() > MAX_IMPORT_FILE_BYTES {
                        return Err(ApiError::bad_request("The file is larger than 40 MB"));
                    }
                }
                file = Some((name, data));
            }
            "mode" => mode = Some(field.text().await.map_err(bad)?.trim().to_owned()),
            "waitOnApprovals" => {
                wait = match field.text().await.map_err(bad)?.trim() {
                    "true" | "1" => true,
                    "false" | "0" | "" => false,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "Invalid `waitOnApprovals` `{other}`"
                        )))
                    }
                };
            }
            _ => {}
        }
    }
    let (file_name, data) =
        file.ok_or_else(|| ApiError::bad_request("The `file` part is required"))?;
    let replace = match mode.as_deref() {
        Some("merge") => false,
        Some("replace") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid `mode` `{other}`: use `merge` or `replace`"
            )))
        }
        None => {
            return Err(ApiError::bad_request("The `mode` part is required: `merge` or `replace`"))
        }
    };
    Ok(Upload { file_name, data, replace, wait })
}

/// `POST /api/v2/segments/{projectKey}/{environmentKey}/{segmentKey}/imports`
pub(crate) async fn create(
    State(shared): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((p, e, k)): Path<(String, String, String)>,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Response> {
    caller.require("updateIncluded")?;
    let multipart = multipart
        .map_err(|e| ApiError::bad_request(format!("Expected multipart/form-data: {e}")))?;
    let upload = read_upload(multipart).await?;
    let keys = csv_keys(&upload.data)?;
    let mut inner = shared.lock();
    let delay = u64::try_from(inner.import_delay.as_millis()).unwrap_or(u64::MAX / 2);
    let env = inner.model.env_mut(&p, &e).ok_or_else(ApiError::not_found)?;
    let now = now_ms();
    env.advance_imports(now);
    let seg = env.segments.get(&k).ok_or_else(ApiError::not_found)?;
    if !seg.unbounded {
        return Err(ApiError::bad_request("Imports apply to big segments only"));
    }
    if let Some(running) = env.running_import() {
        return Err(ApiError::conflict(format!(
            "An import is already in progress in this environment (`{}`)",
            running.id
        )));
    }
    let id = uuid::Uuid::new_v4().to_string();
    env.imports.insert(
        id.clone(),
        Import {
            id: id.clone(),
            segment_key: k.clone(),
            creation_time: now,
            replace: upload.replace,
            status: if upload.wait {
                ImportStatus::PendingApproval
            } else {
                ImportStatus::InProgress
            },
            file_name: upload.file_name,
            key_count: keys.len(),
            keys,
            ready_at: now + delay,
        },
    );
    env.advance_imports(now);
    inner.dirty = true;
    let location = format!("/api/v2/segments/{p}/{e}/{k}/imports/{id}");
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location)
            .map_err(|_| ApiError::bad_request("Invalid key in path"))?,
    );
    Ok(resp)
}

/// `GET /api/v2/segments/{projectKey}/{environmentKey}/{segmentKey}/imports/{importID}`
pub(crate) async fn get(
    State(shared): State<AppState>,
    Path((p, e, k, id)): Path<(String, String, String, String)>,
) -> ApiResult<Json<Value>> {
    let mut inner = shared.lock();
    let env = inner.model.env_mut(&p, &e).ok_or_else(ApiError::not_found)?;
    env.advance_imports(now_ms());
    let import =
        env.imports.get(&id).filter(|i| i.segment_key == k).ok_or_else(ApiError::not_found)?;
    let status = import.status.as_str();
    Ok(Json(json!({
        "id": import.id,
        "segmentKey": import.segment_key,
        "creationTime": import.creation_time,
        "mode": if import.replace { "replace" } else { "merge" },
        "status": status,
        "files": [{"filename": import.file_name, "status": status}],
        "_links": {"self": {"href": format!("/api/v2/segments/{p}/{e}/{k}/imports/{id}"), "type": "application/json"}},
    })))
}

#[cfg(test)]
mod tests {
    use super::csv_keys;

    #[test]
    fn reads_the_first_column() {
        let keys = csv_keys(b"a,1\r\n\"b,\"\"q\"\"\",2\n\n  \nc\n").unwrap();
        assert_eq!(keys, vec!["a", "b,\"q\"", "c"]);
    }
}
