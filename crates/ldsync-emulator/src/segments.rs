//! Segments: create, get, list, delete, JSON Patch and semantic patch, big-segment targets.

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::api_error::{ApiError, ApiResult};
use crate::json_patch::{self, PatchError};
use crate::request::{filters, json_body, paging, string_list};
use crate::server::{AppState, Caller};
use crate::state::{now_ms, stable_id, Environment, ImportStatus, Segment};

/// Most target changes one semantic patch may carry on a standard segment.
const MAX_STANDARD_TARGET_OPS: usize = 1500;

fn valid_key(k: &str) -> bool {
    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn env_mut<'a>(
    model: &'a mut crate::state::Model,
    p: &str,
    e: &str,
) -> ApiResult<&'a mut Environment> {
    let env = model.env_mut(p, e).ok_or_else(ApiError::not_found)?;
    env.advance_imports(now_ms());
    Ok(env)
}

/// `POST /api/v2/segments/{projectKey}/{environmentKey}`
pub(crate) async fn create(
    State(shared): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((p, e)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require("createSegment")?;
    let body = json_body(&body)?;
    if !body.is_object() {
        return Err(ApiError::bad_request("Invalid request body: expected an object"));
    }
    let text = |f: &str, required: bool| -> ApiResult<Option<String>> {
        match body.get(f) {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            None | Some(Value::Null) if !required => Ok(None),
            None | Some(Value::Null) => Err(ApiError::bad_request(format!("`{f}` is required"))),
            Some(_) => Err(ApiError::bad_request(format!("`{f}` must be a string"))),
        }
    };
    let key = text("key", true)?.unwrap_or_default();
    if !valid_key(&key) {
        return Err(ApiError::bad_request(format!(
            "Invalid segment key `{key}`: use letters, digits, `-`, `_` or `.`"
        )));
    }
    let name = text("name", true)?.unwrap_or_default();
    if name.trim().is_empty() {
        return Err(ApiError::bad_request("`name` must not be empty"));
    }
    let description = text("description", false)?;
    let tags = string_list(&body, "tags")?;
    let unbounded = match body.get("unbounded") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("`unbounded` must be a boolean")),
    };
    let context_kind = text("unboundedContextKind", false)?.unwrap_or_else(|| "user".to_owned());
    if context_kind.is_empty() {
        return Err(ApiError::bad_request("`unboundedContextKind` must not be empty"));
    }
    let mut inner = shared.lock();
    let env = env_mut(&mut inner.model, &p, &e)?;
    if env.segments.contains_key(&key) {
        return Err(ApiError::conflict(format!("A segment with key `{key}` already exists")));
    }
    let now = now_ms();
    let segment = Segment {
        id: stable_id(&["segment", &p, &e, &key, &now.to_string()]),
        key: key.clone(),
        name,
        description,
        tags,
        creation_date: now,
        last_modified: now,
        version: 1,
        unbounded,
        context_kind,
        included: HashSet::new(),
        excluded: HashSet::new(),
        included_contexts: BTreeMap::new(),
        excluded_contexts: BTreeMap::new(),
        rules: Vec::new(),
        members_version: 1,
    };
    let rep = segment.to_json(&p, env);
    env.segments.insert(key, segment);
    inner.dirty = true;
    Ok((StatusCode::CREATED, Json(rep)).into_response())
}

/// `GET /api/v2/segments/{projectKey}/{environmentKey}/{segmentKey}`
pub(crate) async fn get(
    State(shared): State<AppState>,
    Path((p, e, k)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let mut inner = shared.lock();
    let env = env_mut(&mut inner.model, &p, &e)?;
    let seg = env.segments.get(&k).ok_or_else(ApiError::not_found)?;
    Ok(Json(seg.to_json(&p, env)))
}

fn matches_filter(seg: &Segment, clause: &crate::request::FilterClause) -> ApiResult<bool> {
    let any = |set: &HashSet<String>| clause.values.iter().any(|v| set.contains(v));
    Ok(match clause.field.as_str() {
        "unbounded" => {
            clause.values.first().map(String::as_str)
                == Some(if seg.unbounded { "true" } else { "false" })
        }
        "query" => clause.values.iter().any(|q| {
            let q = q.to_lowercase();
            seg.key.to_lowercase().contains(&q) || seg.name.to_lowercase().contains(&q)
        }),
        "tags" => clause.values.iter().any(|t| seg.tags.contains(t)),
        "includedKeys" => any(&seg.included),
        "excludedKeys" => any(&seg.excluded),
        "external" => clause.op == "notExists",
        "view" => true,
        other => return Err(ApiError::bad_request(format!("Unsupported filter field `{other}`"))),
    })
}

/// `GET /api/v2/segments/{projectKey}/{environmentKey}`
pub(crate) async fn list(
    State(shared): State<AppState>,
    Path((p, e)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let (limit, offset) = paging(&q, 20, 1000)?;
    let clauses = filters(&q)?;
    let mut inner = shared.lock();
    let env = env_mut(&mut inner.model, &p, &e)?;
    let mut selected = Vec::new();
    for seg in env.segments.values() {
        let mut keep = true;
        for c in &clauses {
            keep &= matches_filter(seg, c)?;
        }
        if keep {
            selected.push(seg);
        }
    }
    let total = selected.len();
    let items: Vec<Value> =
        selected.into_iter().skip(offset).take(limit).map(|s| s.to_json(&p, env)).collect();
    Ok(Json(json!({
        "items": items,
        "totalCount": total,
        "_links": {"self": {"href": format!("/api/v2/segments/{p}/{e}?limit={limit}&offset={offset}"), "type": "application/json"}},
    })))
}

/// `DELETE /api/v2/segments/{projectKey}/{environmentKey}/{segmentKey}`
pub(crate) async fn delete(
    State(shared): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((p, e, k)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    caller.require("deleteSegment")?;
    let mut inner = shared.lock();
    let env = env_mut(&mut inner.model, &p, &e)?;
    env.segments.remove(&k).ok_or_else(ApiError::not_found)?;
    for import in env.imports.values_mut().filter(|i| i.segment_key == k && i.status.is_running()) {
        import.status = ImportStatus::Stopped;
        import.keys.clear();
    }
    inner.dirty = true;
    Ok(StatusCode::NO_CONTENT)
}

/// Membership of one key while a patch is checked: `(included, excluded)` per `(kind, key)`,
/// where kind `""` is a big segment's own kind and `user` a standard segment's legacy lists.
type Overlay = HashMap<(String, String), (bool, bool)>;

fn is_member(seg: &Segment, kind: &str, key: &str, included: bool) -> bool {
    if kind.is_empty() || kind == "user" {
        if included {
            seg.included.contains(key)
        } else {
            seg.excluded.contains(key)
        }
    } else {
        let map = if included { &seg.included_contexts } else { &seg.excluded_contexts };
        map.get(kind).is_some_and(|s| s.contains(key))
    }
}

fn set_member(seg: &mut Segment, kind: &str, key: String, included: bool, member: bool) {
    if kind.is_empty() || kind == "user" {
        let set = if included { &mut seg.included } else { &mut seg.excluded };
        if member {
            set.insert(key)
        } else {
            set.remove(&key)
        };
    } else {
        let map = if included { &mut seg.included_contexts } else { &mut seg.excluded_contexts };
        let set = map.entry(kind.to_owned()).or_default();
        if member {
            set.insert(key)
        } else {
            set.remove(&key)
        };
        if set.is_empty() {
            map.remove(kind);
        }
    }
}

fn stage(
    overlay: &mut Overlay,
    seg: &Segment,
    kind: &str,
    key: &str,
    included: bool,
    member: bool,
) {
    let entry = overlay
        .entry((kind.to_owned(), key.to_owned()))
        .or_insert_with(|| (is_member(seg, kind, key, true), is_member(seg, kind, key, false)));
    if included {
        entry.0 = member;
    } else {
        entry.1 = member;
    }
}

fn commit(seg: &mut Segment, overlay: Overlay) {
    for ((kind, key), (inc, exc)) in overlay {
        set_member(seg, &kind, key.clone(), true, inc);
        set_member(seg, &kind, key, false, exc);
    }
}

/// `POST …/{segmentKey}/contexts` and the legacy `POST …/{segmentKey}/users`.
pub(crate) async fn update_targets(
    State(shared): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((p, e, k)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let body = json_body(&body)?;
    if !body.is_object() {
        return Err(ApiError::bad_request("Invalid request body: expected an object"));
    }
    let mut lists = Vec::new();
    for (part, included) in [("included", true), ("excluded", false)] {
        match body.get(part) {
            None | Some(Value::Null) => {}
            Some(v @ Value::Object(_)) => {
                let add = string_list(v, "add")?;
                let remove = string_list(v, "remove")?;
                if add.iter().chain(&remove).any(String::is_empty) {
                    return Err(ApiError::bad_request("Context keys must not be empty"));
                }
                if !add.is_empty() || !remove.is_empty() {
                    caller.require(if included { "updateIncluded" } else { "updateExcluded" })?;
                }
                lists.push((included, add, remove));
            }
            Some(_) => return Err(ApiError::bad_request(format!("`{part}` must be an object"))),
        }
    }
    let mut inner = shared.lock();
    let env = env_mut(&mut inner.model, &p, &e)?;
    let seg = env.segments.get_mut(&k).ok_or_else(ApiError::not_found)?;
    if !seg.unbounded {
        return Err(ApiError::bad_request(
            "This operation does not support standard segments; use a big segment",
        ));
    }
    let mut changed = false;
    for (included, add, remove) in lists {
        let set = if included { &mut seg.included } else { &mut seg.excluded };
        changed |= !add.is_empty() || !remove.is_empty();
        set.extend(add);
        for key in &remove {
            set.remove(key);
        }
    }
    if changed {
        seg.members_version += 1;
        seg.last_modified = now_ms();
        inner.dirty = true;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET …/{segmentKey}/contexts/{contextKey}` and `GET …/{segmentKey}/users/{userKey}`.
pub(crate) async fn membership(
    State(shared): State<AppState>,
    Path((p, e, k, key)): Path<(String, String, String, String)>,
) -> ApiResult<Json<Value>> {
    let mut inner = shared.lock();
    let env = env_mut(&mut inner.model, &p, &e)?;
    let seg = env.segments.get(&k).ok_or_else(ApiError::not_found)?;
    if !seg.unbounded {
        return Err(ApiError::bad_request("This operation does not support standard segments"));
    }
    Ok(Json(json!({
        "userKey": key,
        "included": seg.included.contains(&key),
        "excluded": seg.excluded.contains(&key),
    })))
}

/// `PATCH /api/v2/segments/{projectKey}/{environmentKey}/{segmentKey}`: JSON Patch or, with
/// `domain-model=launchdarkly.semanticpatch`, semantic patch.
pub(crate) async fn patch(
    State(shared): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((p, e, k)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let semantic = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("domain-model=launchdarkly.semanticpatch"));
    let body = json_body(&body)?;
    let mut inner = shared.lock();
    let delay = u64::try_from(inner.import_delay.as_millis()).unwrap_or(u64::MAX / 2);
    let env = env_mut(&mut inner.model, &p, &e)?;
    if !env.segments.contains_key(&k) {
        return Err(ApiError::not_found());
    }
    if semantic {
        semantic_patch(env, &caller, &e, &k, &body, delay)?;
    } else {
        json_patch_segment(env, &caller, &p, &k, &body)?;
    }
    let seg = env.segments.get_mut(&k).expect("checked above");
    seg.version += 1;
    seg.last_modified = now_ms();
    let seg = &env.segments[&k];
    let rep = seg.to_json(&p, env);
    inner.dirty = true;
    Ok(Json(rep))
}

/// A standard segment's target lists read from its patched representation.
type Targets = (
    HashSet<String>,
    HashSet<String>,
    BTreeMap<String, std::collections::BTreeSet<String>>,
    BTreeMap<String, std::collections::BTreeSet<String>>,
);

fn standard_targets(new: &serde_json::Map<String, Value>, after: &Value) -> ApiResult<Targets> {
    let kinds = |f: &str| -> ApiResult<BTreeMap<String, std::collections::BTreeSet<String>>> {
        let mut by_kind: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
        if let Some(list) = new.get(f).and_then(Value::as_array) {
            for target in list {
                let kind =
                    target.get("contextKind").and_then(Value::as_str).unwrap_or("user").to_owned();
                by_kind.entry(kind).or_default().extend(string_list(target, "values")?);
            }
        }
        Ok(by_kind)
    };
    let inc: HashSet<String> = string_list(after, "included")?.into_iter().collect();
    let exc: HashSet<String> = string_list(after, "excluded")?.into_iter().collect();
    if inc.intersection(&exc).next().is_some() {
        return Err(ApiError::bad_request("A target cannot be both included and excluded"));
    }
    Ok((inc, exc, kinds("includedContexts")?, kinds("excludedContexts")?))
}

fn json_patch_segment(
    env: &mut Environment,
    caller: &Caller,
    project: &str,
    key: &str,
    body: &Value,
) -> ApiResult<()> {
    let ops_doc = match body {
        Value::Array(_) => body,
        Value::Object(o) => {
            o.get("patch").ok_or_else(|| ApiError::bad_request("`patch` is required"))?
        }
        _ => return Err(ApiError::bad_request("Invalid request body: expected a JSON Patch")),
    };
    let ops = json_patch::parse(ops_doc).map_err(patch_error)?;
    let seg = &env.segments[key];
    let before = seg.to_json(project, env);
    let mut after = before.clone();
    json_patch::apply(&mut after, &ops).map_err(patch_error)?;
    let editable = [
        "name",
        "description",
        "tags",
        "included",
        "excluded",
        "includedContexts",
        "excludedContexts",
        "rules",
    ];
    let (Some(old), Some(new)) = (before.as_object(), after.as_object()) else {
        return Err(ApiError::bad_request("A segment must stay an object"));
    };
    for field in old.keys().chain(new.keys()) {
        if old.get(field) != new.get(field) && !editable.contains(&field.as_str()) {
            return Err(ApiError::bad_request(format!("Cannot modify `{field}`")));
        }
    }
    let changed = |f: &str| old.get(f) != new.get(f);
    let unbounded = seg.unbounded;
    for (field, action) in [
        ("name", "updateName"),
        ("description", "updateDescription"),
        ("tags", "updateTags"),
        ("rules", "updateRules"),
        ("included", "updateIncluded"),
        ("includedContexts", "updateIncluded"),
        ("excluded", "updateExcluded"),
        ("excludedContexts", "updateExcluded"),
    ] {
        if changed(field) {
            caller.require(action)?;
            if unbounded
                && matches!(
                    field,
                    "included" | "excluded" | "includedContexts" | "excludedContexts" | "rules"
                )
            {
                return Err(ApiError::bad_request(format!(
                    "Cannot modify `{field}` of a big segment"
                )));
            }
        }
    }
    let name = match new.get("name") {
        Some(Value::String(text)) if !text.trim().is_empty() => text.clone(),
        _ => return Err(ApiError::bad_request("`name` must be a non-empty string")),
    };
    let description = match new.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => return Err(ApiError::bad_request("`description` must be a string")),
    };
    let tags = string_list(&after, "tags")?;
    let rules = match new.get("rules") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list.clone(),
        Some(_) => return Err(ApiError::bad_request("`rules` must be an array")),
    };
    let targets = if unbounded { None } else { Some(standard_targets(new, &after)?) };
    let seg = env.segments.get_mut(key).expect("checked by the caller");
    seg.name = name;
    seg.description = description;
    seg.tags = tags;
    seg.rules = rules;
    if let Some((inc, exc, ic, ec)) = targets {
        seg.included = inc;
        seg.excluded = exc;
        seg.included_contexts = ic;
        seg.excluded_contexts = ec;
    }
    Ok(())
}

fn patch_error(e: PatchError) -> ApiError {
    match e {
        PatchError::Invalid(m) | PatchError::CannotApply(m) => ApiError::bad_request(m),
        PatchError::TestFailed(m) => ApiError::conflict(m),
    }
}

/// What a semantic patch will do, gathered while its instructions are checked.
#[derive(Default)]
struct Plan {
    overlay: Overlay,
    name: Option<String>,
    /// `Some("")` clears the description.
    description: Option<String>,
    tags: Option<Vec<String>>,
    standard_ops: usize,
    process_import: Vec<String>,
}

fn plan_instruction(
    plan: &mut Plan,
    ins: &Value,
    env: &Environment,
    seg: &Segment,
    caller: &Caller,
) -> ApiResult<()> {
    let kind = ins
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("Each instruction needs a `kind`"))?;
    let values = || string_list(ins, "values");
    match kind {
        "updateName" => {
            caller.require("updateName")?;
            match ins.get("value").and_then(Value::as_str) {
                Some(v) if !v.trim().is_empty() => plan.name = Some(v.to_owned()),
                _ => return Err(ApiError::bad_request("`updateName` needs a non-empty `value`")),
            }
        }
        "updateDescription" => {
            caller.require("updateDescription")?;
            plan.description =
                Some(ins.get("value").and_then(Value::as_str).unwrap_or_default().to_owned());
        }
        "addTags" | "removeTags" => {
            caller.require("updateTags")?;
            let tags = plan.tags.get_or_insert_with(|| seg.tags.clone());
            for t in values()? {
                if kind == "addTags" {
                    if !tags.contains(&t) {
                        tags.push(t);
                    }
                } else {
                    tags.retain(|x| *x != t);
                }
            }
        }
        "addBigSegmentIncludedTargets"
        | "removeBigSegmentIncludedTargets"
        | "addBigSegmentExcludedTargets"
        | "removeBigSegmentExcludedTargets" => {
            if !seg.unbounded {
                return Err(ApiError::bad_request(format!(
                    "`{kind}` applies to big segments only"
                )));
            }
            let included = kind.contains("Included");
            caller.require(if included { "updateIncluded" } else { "updateExcluded" })?;
            let add = kind.starts_with("add");
            for v in values()? {
                stage(&mut plan.overlay, seg, "", &v, included, add);
            }
        }
        "addIncludedTargets"
        | "removeIncludedTargets"
        | "addExcludedTargets"
        | "removeExcludedTargets"
        | "addIncludedUsers"
        | "removeIncludedUsers"
        | "addExcludedUsers"
        | "removeExcludedUsers" => {
            if seg.unbounded {
                return Err(ApiError::bad_request(format!(
                    "`{kind}` applies to standard segments only; use `addBigSegmentIncludedTargets`"
                )));
            }
            let included = kind.contains("Included");
            caller.require(if included { "updateIncluded" } else { "updateExcluded" })?;
            let add = kind.starts_with("add");
            let context_kind = if kind.ends_with("Users") {
                "user".to_owned()
            } else {
                ins.get("contextKind")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("`{kind}` needs a `contextKind`"))
                    })?
                    .to_owned()
            };
            let vals = values()?;
            plan.standard_ops += vals.len();
            for v in vals {
                stage(&mut plan.overlay, seg, &context_kind, &v, included, add);
            }
        }
        "processBigSegmentImport" => plan_import(plan, ins, env, seg, caller)?,
        other => return Err(ApiError::bad_request(format!("Unknown instruction kind `{other}`"))),
    }
    Ok(())
}

fn plan_import(
    plan: &mut Plan,
    ins: &Value,
    env: &Environment,
    seg: &Segment,
    caller: &Caller,
) -> ApiResult<()> {
    caller.require("updateIncluded")?;
    let id = ins
        .get("importId")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("`processBigSegmentImport` needs an `importId`"))?;
    match env.imports.get(id) {
        Some(i) if i.segment_key == seg.key && i.status == ImportStatus::PendingApproval => {
            plan.process_import.push(id.to_owned());
            Ok(())
        }
        Some(i) if i.segment_key == seg.key => Err(ApiError::bad_request(format!(
            "Import `{id}` is {}, not waiting to be processed",
            i.status.as_str()
        ))),
        _ => Err(ApiError::bad_request(format!("Unknown import `{id}`"))),
    }
}

fn semantic_patch(
    env: &mut Environment,
    caller: &Caller,
    e: &str,
    k: &str,
    body: &Value,
    delay: u64,
) -> ApiResult<()> {
    match body.get("environmentKey") {
        Some(Value::String(s)) if s == e => {}
        Some(Value::String(s)) => {
            return Err(ApiError::bad_request(format!(
                "`environmentKey` `{s}` does not match the path"
            )))
        }
        _ => {
            return Err(ApiError::bad_request("`environmentKey` is required for a semantic patch"))
        }
    }
    let instructions = body
        .get("instructions")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad_request("`instructions` must be an array"))?;
    if instructions.is_empty() {
        return Err(ApiError::bad_request("`instructions` must not be empty"));
    }
    let seg = &env.segments[k];
    let mut plan = Plan::default();
    for ins in instructions {
        plan_instruction(&mut plan, ins, env, seg, caller)?;
    }
    let Plan { overlay, name, description, tags, standard_ops, process_import } = plan;
    if standard_ops > MAX_STANDARD_TARGET_OPS {
        return Err(ApiError::bad_request(format!(
            "Too many target changes: {standard_ops} (at most {MAX_STANDARD_TARGET_OPS} per request)"
        )));
    }
    if let Some(((_, key), _)) = overlay.iter().find(|(_, (inc, exc))| *inc && *exc) {
        return Err(ApiError::bad_request(format!("`{key}` cannot be both included and excluded")));
    }
    // Everything checked: apply all of it.
    let now = now_ms();
    for id in process_import {
        let import = env.imports.get_mut(&id).expect("checked above");
        import.status = ImportStatus::InProgress;
        import.ready_at = now + delay;
    }
    let seg = env.segments.get_mut(k).expect("checked by the caller");
    if !overlay.is_empty() {
        seg.members_version += 1;
    }
    commit(seg, overlay);
    if let Some(n) = name {
        seg.name = n;
    }
    if let Some(d) = description {
        seg.description = (!d.is_empty()).then_some(d);
    }
    if let Some(t) = tags {
        seg.tags = t;
    }
    Ok(())
}
