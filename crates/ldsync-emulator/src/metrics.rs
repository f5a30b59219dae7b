//! Metrics: create (with per-kind validation), get, list, delete and JSON Patch.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::api_error::{ApiError, ApiResult};
use crate::json_patch::{self, PatchError};
use crate::request::{filters, json_body, paging};
use crate::server::{AppState, Caller};
use crate::state::{now_ms, stable_id};

/// The member that owns metrics created without `maintainerId`.
const MEMBER_ID: &str = "569f183514f4432160000007";

/// Fields a `MetricPost` may set, copied into the representation.
const POST_FIELDS: [&str; 19] = [
    "key",
    "name",
    "description",
    "kind",
    "selector",
    "urls",
    "isNumeric",
    "unit",
    "eventKey",
    "successCriteria",
    "tags",
    "randomizationUnits",
    "maintainerId",
    "unitAggregationType",
    "analysisType",
    "percentileValue",
    "eventDefault",
    "dataSource",
    "filters",
];

/// Fields a JSON Patch may change, with the role action each needs.
const PATCHABLE: [(&str, &str); 17] = [
    ("name", "updateName"),
    ("description", "updateDescription"),
    ("tags", "updateTags"),
    ("eventKey", "updateEventKey"),
    ("isNumeric", "updateNumeric"),
    ("successCriteria", "updateNumericSuccess"),
    ("unit", "updateNumericUnit"),
    ("maintainerId", "updateMaintainer"),
    ("selector", "updateSelector"),
    ("urls", "updateUrls"),
    ("unitAggregationType", "updateUnitAggregationType"),
    ("eventDefault", "updateEventDefault"),
    ("analysisType", "updateAnalysisType"),
    ("percentileValue", "updateAnalysisType"),
    ("randomizationUnits", "updateRandomizationUnits"),
    ("filters", "updateFilters"),
    ("archived", "updateArchived"),
];

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::bad_request(m)
}

fn check_type(
    m: &Map<String, Value>,
    field: &str,
    ok: fn(&Value) -> bool,
    what: &str,
) -> ApiResult<()> {
    match m.get(field) {
        Some(v) if !ok(v) => Err(bad(format!("`{field}` must be {what}"))),
        _ => Ok(()),
    }
}

fn is_string_array(v: &Value) -> bool {
    v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
}

fn check_enum(m: &Map<String, Value>, field: &str, allowed: &[&str]) -> ApiResult<()> {
    match m.get(field) {
        None => Ok(()),
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(()),
        Some(v) => Err(bad(format!("`{field}` {v} is not one of {}", allowed.join(", ")))),
    }
}

/// Checks a metric (a `MetricPost` or a patched representation) by LaunchDarkly's per-kind rules.
fn validate(m: &Map<String, Value>, creating: bool) -> ApiResult<()> {
    let key = m.get("key").and_then(Value::as_str).ok_or_else(|| bad("`key` is required"))?;
    if key.is_empty()
        || !key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(bad(format!(
            "Invalid metric key `{key}`: use letters, digits, `-`, `_` or `.`"
        )));
    }
    let kind = m.get("kind").and_then(Value::as_str).ok_or_else(|| bad("`kind` is required"))?;
    check_enum(m, "kind", &["pageview", "click", "custom"])?;
    check_type(m, "name", Value::is_string, "a string")?;
    check_type(m, "description", Value::is_string, "a string")?;
    check_type(m, "tags", is_string_array, "an array of strings")?;
    check_type(m, "randomizationUnits", is_string_array, "an array of strings")?;
    check_type(m, "isNumeric", Value::is_boolean, "a boolean")?;
    check_type(m, "eventKey", |v| v.as_str().is_some_and(|s| !s.is_empty()), "a non-empty string")?;
    check_type(m, "unit", Value::is_string, "a string")?;
    check_type(m, "selector", |v| v.as_str().is_some_and(|s| !s.is_empty()), "a non-empty string")?;
    check_type(m, "maintainerId", Value::is_string, "a string")?;
    check_type(m, "archived", Value::is_boolean, "a boolean")?;
    check_type(
        m,
        "dataSource",
        |v| v.get("key").is_some_and(Value::is_string),
        "an object with a `key`",
    )?;
    check_type(
        m,
        "eventDefault",
        |v| {
            v.as_object().is_some_and(|o| {
                o.get("disabled").is_none_or(Value::is_boolean)
                    && o.get("value").is_none_or(Value::is_number)
            })
        },
        "an object `{disabled, value}`",
    )?;
    check_enum(m, "successCriteria", &["HigherThanBaseline", "LowerThanBaseline"])?;
    check_enum(m, "unitAggregationType", &["average", "sum"])?;
    check_enum(m, "analysisType", &["mean", "percentile"])?;
    match m.get("percentileValue") {
        None => {}
        Some(v) if v.as_u64().is_some_and(|p| p <= 100) => {}
        Some(_) => return Err(bad("`percentileValue` must be an integer from 0 to 100")),
    }
    if m.get("analysisType").and_then(Value::as_str) == Some("percentile")
        && !m.contains_key("percentileValue")
    {
        return Err(bad("`percentileValue` is required when `analysisType` is `percentile`"));
    }
    validate_urls(m)?;
    validate_kind(m, kind, creating)
}

fn validate_urls(m: &Map<String, Value>) -> ApiResult<()> {
    if let Some(urls) = m.get("urls") {
        let list = urls.as_array().ok_or_else(|| bad("`urls` must be an array"))?;
        for u in list {
            let field = match u.get("kind").and_then(Value::as_str) {
                Some("exact" | "canonical") => "url",
                Some("substring") => "substring",
                Some("regex") => "pattern",
                _ => {
                    return Err(bad(
                        "each of `urls` needs a `kind`: exact, canonical, substring or regex",
                    ))
                }
            };
            if !u.get(field).is_some_and(Value::is_string) {
                return Err(bad(format!(
                    "a `{}` URL matcher needs `{field}`",
                    u["kind"].as_str().unwrap_or_default()
                )));
            }
        }
    }
    Ok(())
}

/// The rules that depend on `kind`.
fn validate_kind(m: &Map<String, Value>, kind: &str, creating: bool) -> ApiResult<()> {
    let has = |f: &str| m.get(f).is_some_and(|v| !v.is_null());
    match kind {
        "custom" => {
            if !has("isNumeric") {
                return Err(bad("`isNumeric` is required for custom metrics"));
            }
            if !has("eventKey") {
                return Err(bad("`eventKey` is required for custom metrics"));
            }
            let numeric = m.get("isNumeric").and_then(Value::as_bool) == Some(true);
            if numeric && !has("successCriteria") {
                return Err(bad("`successCriteria` is required for numeric custom metrics"));
            }
            if creating && !numeric && has("unit") {
                return Err(bad("`unit` applies to numeric custom metrics only"));
            }
            for f in ["selector", "urls"] {
                if has(f) {
                    return Err(bad(format!("`{f}` does not apply to custom metrics")));
                }
            }
        }
        "click" | "pageview" => {
            if kind == "click" && !has("selector") {
                return Err(bad("`selector` is required for click metrics"));
            }
            if kind == "pageview" && has("selector") {
                return Err(bad("`selector` does not apply to pageview metrics"));
            }
            if m.get("urls").and_then(Value::as_array).is_none_or(Vec::is_empty) {
                return Err(bad(format!("`urls` is required for {kind} metrics")));
            }
            for f in ["eventKey", "unit", "successCriteria", "filters"] {
                if has(f) {
                    return Err(bad(format!("`{f}` does not apply to {kind} metrics")));
                }
            }
            if m.get("isNumeric").and_then(Value::as_bool) == Some(true) {
                return Err(bad(format!("{kind} metrics cannot be numeric")));
            }
        }
        _ => unreachable!("checked by check_enum"),
    }
    Ok(())
}

fn links(p: &str, key: &str) -> Value {
    json!({
        "self": {"href": format!("/api/v2/metrics/{p}/{key}"), "type": "application/json"},
        "parent": {"href": format!("/api/v2/metrics/{p}"), "type": "application/json"},
    })
}

fn iso(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or_default())
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn maintainer(id: &str) -> Value {
    json!({
        "_links": {"self": {"href": format!("/api/v2/members/{id}"), "type": "application/json"}},
        "_id": id,
        "role": "admin",
        "email": "emulator@example.com",
        "firstName": "Emulator",
        "lastName": "Member",
    })
}

/// `POST /api/v2/metrics/{projectKey}`
pub(crate) async fn create(
    State(shared): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(p): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require("createMetric")?;
    let body = json_body(&body)?;
    let post = body.as_object().ok_or_else(|| bad("Invalid request body: expected an object"))?;
    validate(post, true)?;
    let key = post["key"].as_str().expect("validated").to_owned();
    let mut rep: Map<String, Value> = POST_FIELDS
        .iter()
        .filter_map(|f| post.get(*f).filter(|v| !v.is_null()).map(|v| ((*f).to_owned(), v.clone())))
        .collect();
    let now = now_ms();
    rep.entry("name").or_insert_with(|| json!(key));
    rep.entry("tags").or_insert_with(|| json!([]));
    rep.entry("randomizationUnits").or_insert_with(|| json!(["user"]));
    rep.entry("dataSource")
        .or_insert_with(|| json!({"key": "launchdarkly", "_name": "LaunchDarkly"}));
    let maintainer_id = rep
        .entry("maintainerId")
        .or_insert_with(|| json!(MEMBER_ID))
        .as_str()
        .unwrap_or(MEMBER_ID)
        .to_owned();
    rep.insert("_maintainer".into(), maintainer(&maintainer_id));
    rep.insert("_id".into(), json!(stable_id(&["metric", &p, &key, &now.to_string()])));
    rep.insert("_versionId".into(), json!(uuid::Uuid::new_v4().to_string()));
    rep.insert("_version".into(), json!(1));
    rep.insert("_creationDate".into(), json!(now));
    rep.insert("lastModified".into(), json!({"date": iso(now)}));
    rep.insert("_links".into(), links(&p, &key));
    rep.insert("_attachedFlagCount".into(), json!(0));
    rep.insert("experimentCount".into(), json!(0));
    rep.insert("metricGroupCount".into(), json!(0));
    rep.insert("archived".into(), json!(false));
    let mut inner = shared.lock();
    let project = inner.model.project_mut(&p).ok_or_else(ApiError::not_found)?;
    if project.metrics.contains_key(&key) {
        return Err(ApiError::conflict(format!("A metric with key `{key}` already exists")));
    }
    project.metrics.insert(key, rep.clone());
    inner.dirty = true;
    Ok((StatusCode::CREATED, Json(Value::Object(rep))).into_response())
}

/// `GET /api/v2/metrics/{projectKey}/{metricKey}`
pub(crate) async fn get(
    State(shared): State<AppState>,
    Path((p, k)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let inner = shared.lock();
    let project = inner.model.project(&p).ok_or_else(ApiError::not_found)?;
    let m = project.metrics.get(&k).ok_or_else(ApiError::not_found)?;
    Ok(Json(Value::Object(m.clone())))
}

fn metric_matches(m: &Map<String, Value>, c: &crate::request::FilterClause) -> ApiResult<bool> {
    let s = |f: &str| m.get(f).and_then(Value::as_str).unwrap_or_default().to_owned();
    Ok(match c.field.as_str() {
        "eventKind" => c.values.contains(&s("kind")),
        "isNumeric" => {
            let want = c.values.first().map(String::as_str) == Some("true");
            m.get("isNumeric").and_then(Value::as_bool).unwrap_or(false) == want
        }
        "unitAggregationType" => c.values.contains(&s("unitAggregationType")),
        "eventKeys" => c.values.contains(&s("eventKey")),
        "maintainerIds" => c.values.contains(&s("maintainerId")),
        "tags" => {
            let tags = m.get("tags").and_then(Value::as_array).cloned().unwrap_or_default();
            c.values.iter().any(|t| tags.iter().any(|x| x.as_str() == Some(t)))
        }
        "query" => c.values.iter().any(|q| {
            let q = q.to_lowercase();
            s("key").to_lowercase().contains(&q) || s("name").to_lowercase().contains(&q)
        }),
        other => return Err(bad(format!("Unsupported filter field `{other}`"))),
    })
}

/// `GET /api/v2/metrics/{projectKey}`: `limit` (default 20, at most 50), `offset`, `filter`,
/// `sort` (`name`, `createdAt`, `-` for descending; default by key).
pub(crate) async fn list(
    State(shared): State<AppState>,
    Path(p): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let (limit, offset) = paging(&q, 20, 50)?;
    let clauses = filters(&q)?;
    let inner = shared.lock();
    let project = inner.model.project(&p).ok_or_else(ApiError::not_found)?;
    let mut selected = Vec::new();
    for m in project.metrics.values() {
        let mut keep = true;
        for c in &clauses {
            keep &= metric_matches(m, c)?;
        }
        if keep {
            selected.push(m);
        }
    }
    if let Some(sort) = q.get("sort") {
        let (desc, field) = sort.strip_prefix('-').map_or((false, sort.as_str()), |f| (true, f));
        match field {
            "name" => selected.sort_by_key(|m| {
                m.get("name").and_then(Value::as_str).unwrap_or_default().to_owned()
            }),
            "createdAt" => selected.sort_by_key(|m| {
                m.get("_creationDate").and_then(Value::as_u64).unwrap_or_default()
            }),
            other => return Err(bad(format!("Unsupported sort field `{other}`"))),
        }
        if desc {
            selected.reverse();
        }
    }
    let total = selected.len();
    let items: Vec<Value> =
        selected.into_iter().skip(offset).take(limit).map(|m| Value::Object(m.clone())).collect();
    let href = |o: usize| json!({"href": format!("/api/v2/metrics/{p}?limit={limit}&offset={o}"), "type": "application/json"});
    let mut links = Map::new();
    links.insert("self".into(), href(offset));
    if offset + limit < total {
        links.insert("next".into(), href(offset + limit));
    }
    if offset > 0 {
        links.insert("prev".into(), href(offset.saturating_sub(limit)));
    }
    Ok(Json(json!({"items": items, "totalCount": total, "_links": links})))
}

/// `DELETE /api/v2/metrics/{projectKey}/{metricKey}`
pub(crate) async fn delete(
    State(shared): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((p, k)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require("deleteMetric")?;
    let mut inner = shared.lock();
    let project = inner.model.project_mut(&p).ok_or_else(ApiError::not_found)?;
    project.metrics.remove(&k).ok_or_else(ApiError::not_found)?;
    inner.dirty = true;
    Ok(StatusCode::NO_CONTENT)
}

/// `PATCH /api/v2/metrics/{projectKey}/{metricKey}` with a JSON Patch array.
pub(crate) async fn patch(
    State(shared): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((p, k)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let body = json_body(&body)?;
    let ops = json_patch::parse(&body).map_err(|e| match e {
        PatchError::Invalid(m) | PatchError::CannotApply(m) | PatchError::TestFailed(m) => bad(m),
    })?;
    let mut inner = shared.lock();
    let project = inner.model.project_mut(&p).ok_or_else(ApiError::not_found)?;
    let current = project.metrics.get(&k).ok_or_else(ApiError::not_found)?;
    let before = Value::Object(current.clone());
    let mut after = before.clone();
    json_patch::apply(&mut after, &ops).map_err(|e| match e {
        PatchError::Invalid(m) => bad(m),
        PatchError::CannotApply(m) | PatchError::TestFailed(m) => ApiError::patch_failed(m),
    })?;
    let Value::Object(mut after) = after else {
        return Err(ApiError::patch_failed("A metric must stay an object"));
    };
    // `null` clears an optional field.
    after.retain(|_, v| !v.is_null());
    let before = before.as_object().expect("a stored metric is an object");
    for field in before.keys().chain(after.keys()) {
        if before.get(field) == after.get(field) {
            continue;
        }
        match PATCHABLE.iter().find(|(f, _)| f == field) {
            Some((_, action)) => caller.require(action)?,
            None if field == "key" || field == "kind" => {
                return Err(bad(format!(
                    "Cannot modify `{field}`; delete and re-create the metric"
                )))
            }
            None => return Err(bad(format!("Cannot modify `{field}`"))),
        }
    }
    validate(&after, false)?;
    if let Some(id) = after.get("maintainerId").and_then(Value::as_str).map(str::to_owned) {
        after.insert("_maintainer".into(), maintainer(&id));
    }
    let version = after.get("_version").and_then(Value::as_u64).unwrap_or(1) + 1;
    after.insert("_version".into(), json!(version));
    after.insert("_versionId".into(), json!(uuid::Uuid::new_v4().to_string()));
    after.insert("lastModified".into(), json!({"date": iso(now_ms())}));
    if after.get("archived").and_then(Value::as_bool) == Some(true)
        && !after.contains_key("archivedAt")
    {
        after.insert("archivedAt".into(), json!(now_ms()));
    }
    project.metrics.insert(k, after.clone());
    inner.dirty = true;
    Ok(Json(Value::Object(after)))
}
