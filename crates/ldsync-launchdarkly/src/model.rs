//! LaunchDarkly API payloads, as the spec names their fields.

use serde::Deserialize;

/// An environment (`GET /api/v2/projects/{projectKey}/environments/{environmentKey}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EnvironmentRep {
    /// The environment's ID, which is also its client-side ID.
    #[serde(rename = "_id")]
    pub id: String,
    /// The environment key.
    pub key: String,
    /// The environment's name.
    pub name: String,
}
