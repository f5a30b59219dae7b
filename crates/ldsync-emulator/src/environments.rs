//! Environments, caller identity and API versions.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::api_error::{ApiError, ApiResult};
use crate::server::{AppState, Caller};
use crate::state::stable_id;

/// `GET /api/v2/projects/{projectKey}/environments/{environmentKey}`; `_id` is the client-side ID.
pub(crate) async fn get_environment(
    State(shared): State<AppState>,
    Path((p, e)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let inner = shared.lock();
    let env = inner
        .model
        .project(&p)
        .and_then(|pr| pr.environments.get(&e))
        .ok_or_else(ApiError::not_found)?;
    let mut name: Vec<char> = env.key.chars().collect();
    if let Some(first) = name.first_mut() {
        *first = first.to_ascii_uppercase();
    }
    Ok(Json(json!({
        "_links": {
            "self": {"href": format!("/api/v2/projects/{p}/environments/{e}"), "type": "application/json"},
        },
        "_id": env.id,
        "key": env.key,
        "name": name.into_iter().collect::<String>(),
        "apiKey": format!("sdk-{}", stable_id(&["sdk", &p, &e])),
        "mobileKey": format!("mob-{}", stable_id(&["mob", &p, &e])),
        "color": "417505",
        "defaultTtl": 0,
        "secureMode": false,
        "defaultTrackEvents": false,
        "requireComments": false,
        "confirmChanges": false,
        "tags": [],
        "critical": env.key == "production",
    })))
}

/// `GET /api/v2/caller-identity`
pub(crate) async fn caller_identity(Extension(caller): Extension<Caller>) -> Json<Value> {
    let limited = caller.0.actions.is_some();
    Json(json!({
        "accountId": "emulator-account",
        "authKind": "token",
        "tokenKind": "auth",
        "tokenName": if limited { "emulator limited token" } else { "emulator token" },
        "tokenId": stable_id(&["token", &caller.0.token]),
        "memberId": "569f183514f4432160000007",
        "serviceToken": true,
        "scopes": if limited { json!(caller.0.actions) } else { json!(["writer"]) },
    }))
}

/// `GET /api/v2/versions`
pub(crate) async fn versions() -> Json<Value> {
    Json(
        json!({"validVersions": [20_191_212, 20_220_603, 20_240_415], "latestVersion": 20_240_415, "currentVersion": 20_240_415, "beta": false}),
    )
}
