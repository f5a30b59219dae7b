//! Metric definitions: list (paged), read, create, JSON Patch and delete.
//!
//! Metrics belong to a project, not an environment. Updates are plain JSON Patch arrays
//! (`[{"op":"replace","path":"/name","value":…}]`), which [`PatchOp`] models.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{client::decode, LaunchDarklyClient, Result, Route};

/// The most metrics one page of `getMetrics` may hold.
pub const METRICS_PAGE_LIMIT: usize = 50;

/// One operation of a JSON Patch (RFC 6902), as `patchMetric` takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum PatchOp {
    /// Sets a member that may be absent.
    Add {
        /// A JSON Pointer, such as `/name`.
        path: String,
        /// The new value.
        value: Value,
    },
    /// Replaces a member that exists.
    Replace {
        /// A JSON Pointer.
        path: String,
        /// The new value.
        value: Value,
    },
    /// Removes a member that exists.
    Remove {
        /// A JSON Pointer.
        path: String,
    },
    /// A precondition: the member must equal `value`.
    Test {
        /// A JSON Pointer.
        path: String,
        /// The expected value.
        value: Value,
    },
}

impl PatchOp {
    /// The JSON Pointer the operation acts on.
    pub fn path(&self) -> &str {
        match self {
            Self::Add { path, .. }
            | Self::Replace { path, .. }
            | Self::Remove { path }
            | Self::Test { path, .. } => path,
        }
    }
}

/// The body of `postMetric` (`MetricPost`): `key` and `kind` are required, the rest is sent
/// only when set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricPost {
    /// The metric key, unique in the project.
    pub key: String,
    /// `custom`, `pageview` or `click`.
    pub kind: String,
    /// The human name (LaunchDarkly uses the key when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// CSS selectors of a click metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// URL matchers of click and pageview metrics (`{"kind":"exact","url":…}` and the like).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<Value>>,
    /// Numeric (`true`) or conversion (`false`); custom metrics only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_numeric: Option<bool>,
    /// The unit of a numeric custom metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The event key of a custom metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_key: Option<String>,
    /// `HigherThanBaseline` or `LowerThanBaseline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_criteria: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Context kinds the metric can be randomized by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub randomization_units: Option<Vec<String>>,
    /// `average` or `sum`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_aggregation_type: Option<String>,
    /// `mean` or `percentile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_type: Option<String>,
    /// The percentile (0–100) of a percentile analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentile_value: Option<u8>,
    /// The member who maintains the metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintainer_id: Option<String>,
}

/// A metric as LaunchDarkly returns it (`MetricRep`, or `MetricListingRep` in a list): the
/// fields ldsync reads, typed, and the whole representation in [`MetricRep::raw`].
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRep {
    /// The metric key.
    pub key: String,
    /// `custom`, `pageview` or `click`.
    pub kind: String,
    /// The human name.
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Whether the metric is archived.
    pub archived: bool,
    /// The version, when LaunchDarkly says.
    pub version: Option<u64>,
    /// Every field LaunchDarkly returned, by its API name (`eventKey`, `isNumeric`, …).
    pub raw: Map<String, Value>,
}

impl MetricRep {
    /// The value of API field `field`, treating JSON `null` as absent.
    pub fn field(&self, field: &str) -> Option<&Value> {
        self.raw.get(field).filter(|value| !value.is_null())
    }
}

impl<'de> Deserialize<'de> for MetricRep {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Typed {
            key: String,
            kind: String,
            #[serde(default)]
            name: Option<String>,
            #[serde(default)]
            tags: Option<Vec<String>>,
            #[serde(default)]
            archived: Option<bool>,
            #[serde(default, rename = "_version")]
            version: Option<u64>,
        }
        let raw = Map::<String, Value>::deserialize(deserializer)?;
        let typed: Typed =
            serde_json::from_value(Value::Object(raw.clone())).map_err(serde::de::Error::custom)?;
        Ok(Self {
            name: typed.name.unwrap_or_else(|| typed.key.clone()),
            key: typed.key,
            kind: typed.kind,
            tags: typed.tags.unwrap_or_default(),
            archived: typed.archived.unwrap_or(false),
            version: typed.version,
            raw,
        })
    }
}

impl Serialize for MetricRep {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(serializer)
    }
}

/// One page of `getMetrics` (`MetricCollectionRep`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetricPage {
    #[serde(default)]
    items: Vec<MetricRep>,
    #[serde(default)]
    total_count: Option<usize>,
}

impl Route {
    /// `getMetrics`.
    pub const LIST_METRICS: Route =
        Route { method: "GET", template: "/api/v2/metrics/{projectKey}" };
    /// `postMetric`.
    pub const CREATE_METRIC: Route =
        Route { method: "POST", template: "/api/v2/metrics/{projectKey}" };
    /// `getMetric`.
    pub const GET_METRIC: Route =
        Route { method: "GET", template: "/api/v2/metrics/{projectKey}/{metricKey}" };
    /// `patchMetric`.
    pub const PATCH_METRIC: Route =
        Route { method: "PATCH", template: "/api/v2/metrics/{projectKey}/{metricKey}" };
    /// `deleteMetric`.
    pub const DELETE_METRIC: Route =
        Route { method: "DELETE", template: "/api/v2/metrics/{projectKey}/{metricKey}" };
}

impl LaunchDarklyClient {
    fn metric_url(&self, project: &str, key: Option<&str>) -> reqwest::Url {
        let mut segments = vec!["api", "v2", "metrics", project];
        segments.extend(key);
        Self::url(self.api_url(), &segments)
    }

    /// Reads every metric of a project, page by page (`limit` 50, `offset` until `totalCount`).
    pub async fn list_metrics(&self, project: &str) -> Result<Vec<MetricRep>> {
        let route = Route::LIST_METRICS;
        let mut metrics = Vec::new();
        loop {
            let mut url = self.metric_url(project, None);
            url.query_pairs_mut()
                .append_pair("limit", &METRICS_PAGE_LIMIT.to_string())
                .append_pair("offset", &metrics.len().to_string());
            let answer = self.send(route, || self.http().request(Method::GET, url.clone())).await?;
            let page: MetricPage = decode(route, &answer.body)?;
            let got = page.items.len();
            metrics.extend(page.items);
            // A short or empty page ends the list too, should `totalCount` be missing or stale.
            let total = page.total_count.unwrap_or(metrics.len());
            if got == 0 || metrics.len() >= total || got < METRICS_PAGE_LIMIT {
                return Ok(metrics);
            }
        }
    }

    /// Reads one metric; `None` when it does not exist.
    pub async fn get_metric(&self, project: &str, key: &str) -> Result<Option<MetricRep>> {
        let route = Route::GET_METRIC;
        let url = self.metric_url(project, Some(key));
        match self.send(route, || self.http().request(Method::GET, url.clone())).await {
            Ok(answer) => decode(route, &answer.body).map(Some),
            Err(error) if error.status() == Some(404) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Creates a metric. A `409` (the key exists) comes back as [`crate::Error::Status`].
    pub async fn create_metric(&self, project: &str, metric: &MetricPost) -> Result<MetricRep> {
        let route = Route::CREATE_METRIC;
        let url = self.metric_url(project, None);
        let answer = self
            .send(route, || self.http().request(Method::POST, url.clone()).json(metric))
            .await?;
        decode(route, &answer.body)
    }

    /// Applies a JSON Patch to a metric and returns the metric as it is afterwards.
    pub async fn patch_metric(
        &self,
        project: &str,
        key: &str,
        ops: &[PatchOp],
    ) -> Result<MetricRep> {
        let route = Route::PATCH_METRIC;
        let url = self.metric_url(project, Some(key));
        let answer =
            self.send(route, || self.http().request(Method::PATCH, url.clone()).json(ops)).await?;
        decode(route, &answer.body)
    }

    /// Deletes a metric; `false` when it did not exist.
    pub async fn delete_metric(&self, project: &str, key: &str) -> Result<bool> {
        let route = Route::DELETE_METRIC;
        let url = self.metric_url(project, Some(key));
        match self.send(route, || self.http().request(Method::DELETE, url.clone())).await {
            Ok(_) => Ok(true),
            Err(error) if error.status() == Some(404) => Ok(false),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn patch_ops_serialise_as_json_patch() {
        let ops = vec![
            PatchOp::Replace { path: "/name".into(), value: json!("Orders") },
            PatchOp::Add { path: "/unit".into(), value: json!("USD") },
            PatchOp::Remove { path: "/description".into() },
        ];
        assert_eq!(
            serde_json::to_value(&ops).unwrap(),
            json!([
                {"op": "replace", "path": "/name", "value": "Orders"},
                {"op": "add", "path": "/unit", "value": "USD"},
                {"op": "remove", "path": "/description"},
            ])
        );
        let back: Vec<PatchOp> =
            serde_json::from_value(serde_json::to_value(&ops).unwrap()).unwrap();
        assert_eq!(back, ops);
    }

    #[test]
    fn a_post_sends_only_what_is_set() {
        let post = MetricPost {
            key: "orders".into(),
            kind: "custom".into(),
            is_numeric: Some(false),
            event_key: Some("Order placed".into()),
            ..MetricPost::default()
        };
        assert_eq!(
            serde_json::to_value(&post).unwrap(),
            json!({"key": "orders", "kind": "custom", "isNumeric": false, "eventKey": "Order placed"})
        );
    }

    #[test]
    fn a_rep_keeps_the_raw_json() {
        let rep: MetricRep = serde_json::from_value(json!({
            "key": "revenue", "kind": "custom", "name": "Revenue", "tags": ["a"],
            "isNumeric": true, "unit": "USD", "description": null, "_version": 3,
        }))
        .unwrap();
        assert_eq!(rep.key, "revenue");
        assert_eq!(rep.tags, ["a"]);
        assert_eq!(rep.version, Some(3));
        assert!(!rep.archived);
        assert_eq!(rep.field("unit"), Some(&json!("USD")));
        assert_eq!(rep.field("description"), None);
        assert_eq!(serde_json::to_value(&rep).unwrap()["isNumeric"], json!(true));
    }
}
