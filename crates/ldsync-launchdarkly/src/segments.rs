//! Big segments: create, read, change members in batches, and CSV imports.

use std::time::Duration;

use reqwest::{multipart, Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::{client::decode, Error, LaunchDarklyClient, Result, Route};

/// The body of `createSegment` for a big segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewBigSegment {
    /// The segment key.
    pub key: String,
    /// The segment's name.
    pub name: String,
    /// The segment's description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Always true: ldsync writes big segments.
    pub unbounded: bool,
    /// The context kind of every member.
    pub unbounded_context_kind: String,
}

/// What ldsync reads of a segment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentRep {
    /// The segment key.
    pub key: String,
    /// The segment's name.
    pub name: String,
    /// Whether it is a big segment.
    #[serde(default)]
    pub unbounded: bool,
    /// The context kind of a big segment's members.
    #[serde(default)]
    pub unbounded_context_kind: Option<String>,
    /// Whether an import is running.
    #[serde(default, rename = "_importInProgress")]
    pub import_in_progress: bool,
}

/// One change of membership, for `POST …/contexts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    /// Include the keys.
    Add,
    /// Stop including the keys.
    Remove,
}

#[derive(Serialize)]
struct TargetChanges<'a> {
    #[serde(skip_serializing_if = "<[&str]>::is_empty")]
    add: &'a [&'a str],
    #[serde(skip_serializing_if = "<[&str]>::is_empty")]
    remove: &'a [&'a str],
}

#[derive(Serialize)]
struct SegmentUserState<'a> {
    included: TargetChanges<'a>,
}

/// The mode of a CSV import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportMode {
    /// The file becomes the whole membership.
    Replace,
    /// The file's keys are added.
    Merge,
}

impl ImportMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Replace => "replace",
            Self::Merge => "merge",
        }
    }
}

/// An import's status (`GET …/imports/{importID}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImportRep {
    /// The import ID.
    pub id: String,
    /// `preparing`, `pending_approval`, `ready`, `in_progress`, `complete` or `stopped`.
    pub status: String,
}

/// The most keys one import file may hold.
pub const MAX_IMPORT_KEYS: usize = 1_000_000;
/// The largest import file, in bytes.
pub const MAX_IMPORT_BYTES: usize = 40 * 1024 * 1024;

impl Route {
    /// `getSegment`.
    pub const GET_SEGMENT: Route = Route {
        method: "GET",
        template: "/api/v2/segments/{projectKey}/{environmentKey}/{segmentKey}",
    };
    /// `postSegment`.
    pub const CREATE_SEGMENT: Route =
        Route { method: "POST", template: "/api/v2/segments/{projectKey}/{environmentKey}" };
    /// `updateBigSegmentContextTargets`.
    pub const UPDATE_SEGMENT_CONTEXTS: Route = Route {
        method: "POST",
        template: "/api/v2/segments/{projectKey}/{environmentKey}/{segmentKey}/contexts",
    };
    /// `createBigSegmentImport`.
    pub const CREATE_IMPORT: Route = Route {
        method: "POST",
        template: "/api/v2/segments/{projectKey}/{environmentKey}/{segmentKey}/imports",
    };
    /// `getBigSegmentImport`.
    pub const GET_IMPORT: Route = Route {
        method: "GET",
        template: "/api/v2/segments/{projectKey}/{environmentKey}/{segmentKey}/imports/{importID}",
    };
}

impl LaunchDarklyClient {
    fn segment_url(&self, project: &str, environment: &str, rest: &[&str]) -> reqwest::Url {
        let mut segments = vec!["api", "v2", "segments", project, environment];
        segments.extend_from_slice(rest);
        Self::url(self.api_url(), &segments)
    }

    /// Reads a segment; `None` when it does not exist.
    pub async fn get_segment(
        &self,
        project: &str,
        environment: &str,
        key: &str,
    ) -> Result<Option<SegmentRep>> {
        let route = Route::GET_SEGMENT;
        let url = self.segment_url(project, environment, &[key]);
        match self.send(route, || self.http().request(Method::GET, url.clone())).await {
            Ok(answer) => decode(route, &answer.body).map(Some),
            Err(error) if error.status() == Some(404) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Creates a big segment.
    pub async fn create_big_segment(
        &self,
        project: &str,
        environment: &str,
        segment: &NewBigSegment,
    ) -> Result<SegmentRep> {
        let route = Route::CREATE_SEGMENT;
        let url = self.segment_url(project, environment, &[]);
        let answer = self
            .send(route, || self.http().request(Method::POST, url.clone()).json(segment))
            .await?;
        decode(route, &answer.body)
    }

    /// Makes sure a big segment exists, creating it when missing; refuses a standard segment or
    /// one of another context kind, which ldsync cannot mirror into.
    pub async fn ensure_big_segment(
        &self,
        project: &str,
        environment: &str,
        segment: &NewBigSegment,
    ) -> Result<SegmentRep> {
        let existing = match self.get_segment(project, environment, &segment.key).await? {
            Some(existing) => existing,
            None => match self.create_big_segment(project, environment, segment).await {
                Ok(created) => return Ok(created),
                // Created meanwhile by someone else: read what is there.
                Err(error) if matches!(error.status(), Some(400 | 409)) => {
                    self.get_segment(project, environment, &segment.key).await?.ok_or(error)?
                }
                Err(error) => return Err(error),
            },
        };
        let kind = existing.unbounded_context_kind.as_deref().unwrap_or("user");
        if !existing.unbounded || kind != segment.unbounded_context_kind {
            return Err(Error::Incompatible {
                what: format!("segment `{}`", segment.key),
                reason: if existing.unbounded {
                    format!(
                        "it holds context kind `{kind}`, and the sync writes `{}`",
                        segment.unbounded_context_kind
                    )
                } else {
                    "it is a standard segment; ldsync writes big (unbounded) segments".to_owned()
                },
            });
        }
        Ok(existing)
    }

    /// Adds or removes one batch of members.
    pub async fn update_members(
        &self,
        project: &str,
        environment: &str,
        key: &str,
        change: MemberChange,
        keys: &[&str],
    ) -> Result<()> {
        let route = Route::UPDATE_SEGMENT_CONTEXTS;
        let url = self.segment_url(project, environment, &[key, "contexts"]);
        let (add, remove): (&[&str], &[&str]) = match change {
            MemberChange::Add => (keys, &[]),
            MemberChange::Remove => (&[], keys),
        };
        let body = SegmentUserState { included: TargetChanges { add, remove } };
        self.send(route, || self.http().request(Method::POST, url.clone()).json(&body)).await?;
        Ok(())
    }

    /// Uploads one CSV import (one key per line, no header) and returns its ID.
    pub async fn start_import(
        &self,
        project: &str,
        environment: &str,
        key: &str,
        mode: ImportMode,
        csv: bytes::Bytes,
    ) -> Result<String> {
        let route = Route::CREATE_IMPORT;
        let url = self.segment_url(project, environment, &[key, "imports"]);
        let answer = self
            .send(route, || {
                let file = multipart::Part::stream(csv.clone())
                    .file_name("ldsync-import.csv")
                    .mime_str("text/csv")
                    .expect("text/csv is a valid MIME type");
                let form = multipart::Form::new()
                    .part("file", file)
                    .text("mode", mode.as_str())
                    .text("waitOnApprovals", "false");
                self.http().request(Method::POST, url.clone()).multipart(form)
            })
            .await?;
        let location = answer
            .headers
            .get(reqwest::header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        // The header may hold the bare ID or a URL ending in it.
        let id = location.trim_end_matches('/').rsplit('/').next().unwrap_or_default();
        if id.is_empty() {
            return Err(Error::Decode {
                route: route.name(),
                message: "the answer has no import ID in its `Location` header".to_owned(),
            });
        }
        Ok(id.to_owned())
    }

    /// Reads an import's status.
    pub async fn get_import(
        &self,
        project: &str,
        environment: &str,
        key: &str,
        id: &str,
    ) -> Result<ImportRep> {
        let route = Route::GET_IMPORT;
        let url = self.segment_url(project, environment, &[key, "imports", id]);
        let answer = self.send(route, || self.http().request(Method::GET, url.clone())).await?;
        decode(route, &answer.body)
    }

    /// Polls an import until it completes; fails when it stops.
    ///
    /// The first polls come soon (an eighth of `poll_every`, doubling), so that a small import
    /// is not waited on for a whole interval; from then on, every `poll_every`.
    pub async fn wait_for_import(
        &self,
        project: &str,
        environment: &str,
        key: &str,
        id: &str,
        poll_every: Duration,
    ) -> Result<()> {
        let mut wait = poll_every / 8;
        loop {
            let import = self.get_import(project, environment, key, id).await?;
            match import.status.as_str() {
                "complete" => return Ok(()),
                "stopped" => {
                    return Err(Error::Incompatible {
                        what: format!("import `{id}` of segment `{key}`"),
                        reason: "LaunchDarkly stopped it".to_owned(),
                    })
                }
                _ => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(poll_every);
                }
            }
        }
    }
}

/// Whether a status means "an import is already running in this environment".
pub fn is_import_conflict(error: &Error) -> bool {
    error.status() == Some(StatusCode::CONFLICT.as_u16())
}
