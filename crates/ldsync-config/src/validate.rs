//! Rules across fields and files, run on everything that parsed; every problem is reported.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use chrono::{DateTime, NaiveDate, Utc};
use ldsync_core::{EnvironmentName, ProjectKey, Secret, SegmentKey, SyncName, WarehouseName};
use toml::Spanned;

use crate::{
    load::{ParsedProject, ParsedSync, SourceFile},
    raw::{RawEnvironment, RawMetricEvents, RawMetrics, RawSegment, RawState, RawWarehouse},
    Diagnostic, Diagnostics, EnvironmentSpec, LimitsSpec, MetricEventsSpec, MetricsSpec, Project,
    Ratio, SegmentSpec, StateSpec, SyncObject, SyncSpec, WarehouseSpec, DEFAULT_API_URL,
    DEFAULT_EVENTS_URL, DEFAULT_EVENT_BATCH_SIZE, DEFAULT_IDENTITY_RETENTION_SECS,
    DEFAULT_IMPORT_THRESHOLD, DEFAULT_LOOKBACK_SECS, DEFAULT_MAX_CONCURRENT_SYNCS,
    DEFAULT_MAX_REMOVAL_RATIO, DEFAULT_MEMORY_BUDGET_MIB, DEFAULT_REQUESTS_PER_SECOND,
    DEFAULT_ROUTE_REQUESTS_PER_SECOND, DEFAULT_SEGMENT_BATCH_SIZE, DEFAULT_STATEMENT_TIMEOUT_SECS,
    DEFAULT_STATE_CACHE_DIR, DEFAULT_STATE_DIR, DEFAULT_STATE_LEASE_SECS,
};

/// The largest `batch_size` of a `[segment]`.
const MAX_SEGMENT_BATCH_SIZE: u32 = 10_000;
/// The largest `batch_size` of `[metric_events]`.
const MAX_EVENT_BATCH_SIZE: u32 = 100_000;

pub(crate) fn validate(
    project_file: &SourceFile,
    parsed: ParsedProject,
    syncs: &[(&SourceFile, Option<ParsedSync>)],
    diagnostics: &mut Diagnostics,
) -> Project {
    let root = project_file.path.parent().map_or_else(PathBuf::new, Path::to_path_buf);
    let state = state_spec(project_file, parsed.state, &root, diagnostics);
    let warehouses = parsed
        .warehouses
        .into_iter()
        .filter_map(|(name, raw)| {
            let name = checked(project_file, &name, WarehouseName::new, diagnostics)?;
            let spec = warehouse_spec(project_file, raw, &root, diagnostics)?;
            Some((name, spec))
        })
        .collect();
    let environments = parsed
        .environments
        .into_iter()
        .filter_map(|(name, raw)| {
            let name = checked(project_file, &name, EnvironmentName::new, diagnostics)?;
            let spec = environment_spec(project_file, name.clone(), raw.into_inner(), diagnostics)?;
            Some((name, spec))
        })
        .collect();
    let limits = limits_spec(project_file, parsed.limits.unwrap_or_default(), diagnostics);

    let mut checker = SyncChecker {
        warehouses: &parsed.warehouse_names,
        environments: &parsed.environment_names,
        segment_writers: HashMap::new(),
        diagnostics,
    };
    let mut specs = BTreeMap::new();
    for (file, parsed) in syncs {
        let spec = parsed.as_ref().and_then(|parsed| checker.sync_spec(file, parsed));
        if let Some(spec) = spec {
            specs.insert(spec.name.clone(), spec);
        }
    }

    Project {
        config_path: project_file.path.clone(),
        root,
        state,
        warehouses,
        environments,
        limits,
        syncs: specs,
    }
}

/// Builds a newtype from a spanned string, reporting its error at the string.
fn checked<T, E: std::fmt::Display>(
    file: &SourceFile,
    value: &Spanned<String>,
    build: impl FnOnce(String) -> Result<T, E>,
    diagnostics: &mut Diagnostics,
) -> Option<T> {
    build(value.get_ref().clone())
        .map_err(|error| diagnostics.push(file.at(value.span().start, error.to_string())))
        .ok()
}

fn state_spec(
    file: &SourceFile,
    raw: Option<Spanned<RawState>>,
    root: &Path,
    diagnostics: &mut Diagnostics,
) -> StateSpec {
    let default = StateSpec::Local { path: root.join(DEFAULT_STATE_DIR) };
    let Some(raw) = raw else { return default };
    let span = raw.span();
    let raw = raw.into_inner();
    if raw.url.is_none() {
        for (key, at) in [
            ("cache", raw.cache.as_ref().map(|c| c.span().start)),
            ("lease", raw.lease.as_ref().map(|l| l.span().start)),
        ] {
            if let Some(at) = at {
                diagnostics.push(file.at(
                    at,
                    format!("`[state] {key}` applies to a PostgreSQL state store (`url`) only"),
                ));
            }
        }
    }
    match raw {
        RawState { path: Some(_), url: Some(url), .. } => {
            diagnostics.push(file.at(
                url.span().start,
                "`[state]` takes either `path` (a local folder) or `url` (PostgreSQL), not both",
            ));
            default
        }
        RawState { url: Some(url), .. } => {
            if !is_postgres_url(url.get_ref()) {
                diagnostics.push(file.at(
                    url.span().start,
                    "invalid state `url`: expected a PostgreSQL connection string such as `postgres://user@host/db`",
                ));
            }
            secret_from_environment(file, &url, "url", "LDSYNC_STATE_URL", diagnostics);
            let cache = match raw.cache {
                Some(cache) if cache.get_ref().trim().is_empty() => {
                    diagnostics.push(
                        file.at(cache.span().start, "empty state `cache`: expected a folder"),
                    );
                    root.join(DEFAULT_STATE_CACHE_DIR)
                }
                Some(cache) => root.join(cache.get_ref()),
                None => root.join(DEFAULT_STATE_CACHE_DIR),
            };
            let lease = match raw.lease {
                Some(lease) if lease.get_ref().get() < std::time::Duration::from_secs(1) => {
                    diagnostics.push(file.at(
                        lease.span().start,
                        "state `lease` must be at least 1s: it is renewed every third of it",
                    ));
                    std::time::Duration::from_secs(DEFAULT_STATE_LEASE_SECS)
                }
                Some(lease) => lease.into_inner().get(),
                None => std::time::Duration::from_secs(DEFAULT_STATE_LEASE_SECS),
            };
            StateSpec::Postgres { url: Secret::new(url.into_inner()), cache, lease }
        }
        RawState { path: Some(path), .. } => {
            if path.get_ref().trim().is_empty() {
                diagnostics
                    .push(file.at(path.span().start, "empty state `path`: expected a folder"));
            }
            StateSpec::Local { path: root.join(path.get_ref()) }
        }
        RawState { path: None, url: None, .. } => {
            diagnostics.push(file.at(span.start, "`[state]` needs `path` or `url`"));
            default
        }
    }
}

fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://") || url.contains('=')
}

/// Whether a PostgreSQL connection string carries a password.
fn has_password(url: &str) -> bool {
    if let Some(rest) = url.split_once("://").map(|(_, rest)| rest) {
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        authority.rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':'))
    } else {
        url.split_whitespace().any(|pair| pair.starts_with("password="))
    }
}

/// Reports a secret written into the file instead of taken from the environment.
fn secret_from_environment(
    file: &SourceFile,
    value: &Spanned<String>,
    key: &str,
    variable: &str,
    diagnostics: &mut Diagnostics,
) {
    let literal = !file.wrote_placeholder(value.span());
    let secret = key == "token" || has_password(value.get_ref());
    if literal && secret {
        diagnostics.push(file.at(
            value.span().start,
            format!(
                "`{key}` holds a secret written in the file: secrets come from the environment, write `{key} = \"${{{variable}}}\"`"
            ),
        ));
    }
}

fn warehouse_spec(
    file: &SourceFile,
    raw: Spanned<RawWarehouse>,
    root: &Path,
    diagnostics: &mut Diagnostics,
) -> Option<WarehouseSpec> {
    let span = raw.span();
    let raw = raw.into_inner();
    let statement_timeout = raw.statement_timeout.map_or(
        std::time::Duration::from_secs(DEFAULT_STATEMENT_TIMEOUT_SECS),
        crate::HumanDuration::get,
    );
    match (raw.postgres, raw.duckdb) {
        (Some(url), None) => {
            if !is_postgres_url(url.get_ref()) {
                diagnostics.push(file.at(
                    url.span().start,
                    "invalid `postgres` connection string: expected `postgres://user@host:port/database` or `host=… dbname=…`",
                ));
                return None;
            }
            secret_from_environment(file, &url, "postgres", "WAREHOUSE_URL", diagnostics);
            Some(WarehouseSpec::Postgres { url: Secret::new(url.into_inner()), statement_timeout })
        }
        (None, Some(path)) => {
            let text = path.get_ref().trim();
            if text.is_empty() {
                diagnostics.push(file.at(
                    path.span().start,
                    "empty `duckdb` path: expected a database file or `:memory:`",
                ));
                return None;
            }
            let path = (text != ":memory:").then(|| root.join(text));
            Some(WarehouseSpec::DuckDb { path, statement_timeout })
        }
        (Some(_), Some(duckdb)) => {
            diagnostics.push(
                file.at(
                    duckdb.span().start,
                    "a warehouse is either `postgres` or `duckdb`, not both",
                ),
            );
            None
        }
        (None, None) => {
            diagnostics.push(file.at(
                span.start,
                "a warehouse needs `postgres = \"${WAREHOUSE_URL}\"` or `duckdb = \"file.duckdb\"`",
            ));
            None
        }
    }
}

fn environment_spec(
    file: &SourceFile,
    name: EnvironmentName,
    raw: RawEnvironment,
    diagnostics: &mut Diagnostics,
) -> Option<EnvironmentSpec> {
    let first = diagnostics.len();
    if raw.token.get_ref().trim().is_empty() {
        diagnostics
            .push(file.at(raw.token.span().start, "empty `token`: expected an access token"));
    } else {
        secret_from_environment(file, &raw.token, "token", "LD_ACCESS_TOKEN", diagnostics);
    }
    let project = checked(file, &raw.project, ProjectKey::new, diagnostics);
    // An environment key follows the same rules as a project key.
    checked(file, &raw.environment, ProjectKey::new, diagnostics);
    if let Some(id) = &raw.client_side_id {
        if id.get_ref().is_empty() || !id.get_ref().chars().all(|c| c.is_ascii_alphanumeric()) {
            diagnostics.push(file.at(
                id.span().start,
                format!(
                    "invalid `client_side_id` `{}`: expected the environment's ID, letters and digits such as `57be1db38b75bf0772d11384`",
                    id.get_ref().escape_debug()
                ),
            ));
        }
    }
    let api_url = base_url(file, raw.api_url.as_ref(), "api_url", DEFAULT_API_URL, diagnostics);
    let events_url =
        base_url(file, raw.events_url.as_ref(), "events_url", DEFAULT_EVENTS_URL, diagnostics);
    if diagnostics.len() > first {
        return None;
    }
    Some(EnvironmentSpec {
        name,
        token: Secret::new(raw.token.into_inner()),
        project: project?,
        environment: raw.environment.into_inner(),
        client_side_id: raw.client_side_id.map(Spanned::into_inner),
        api_url,
        events_url,
    })
}

fn base_url(
    file: &SourceFile,
    value: Option<&Spanned<String>>,
    key: &str,
    default: &str,
    diagnostics: &mut Diagnostics,
) -> String {
    let Some(value) = value else { return default.to_owned() };
    let url = value.get_ref().trim_end_matches('/');
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    let host = url.split_once("://").map_or("", |(_, rest)| rest);
    if !scheme_ok || host.is_empty() || url.contains(char::is_whitespace) {
        diagnostics.push(file.at(
            value.span().start,
            format!(
                "invalid `{key}` `{}`: expected an http(s) URL such as `{default}`",
                value.get_ref().escape_debug()
            ),
        ));
    }
    url.to_owned()
}

fn limits_spec(
    file: &SourceFile,
    raw: crate::raw::RawLimits,
    diagnostics: &mut Diagnostics,
) -> LimitsSpec {
    let memory_budget_mib = match raw.memory_budget_mib {
        Some(mib) if *mib.get_ref() < 64 => {
            diagnostics.push(file.at(
                mib.span().start,
                "`memory_budget_mib` must be at least 64: ldsync needs that much to stream",
            ));
            DEFAULT_MEMORY_BUDGET_MIB
        }
        Some(mib) => mib.into_inner(),
        None => DEFAULT_MEMORY_BUDGET_MIB,
    };
    let max_concurrent_syncs = match raw.max_concurrent_syncs {
        Some(n) if *n.get_ref() == 0 => {
            diagnostics.push(file.at(n.span().start, "`max_concurrent_syncs` must be at least 1"));
            DEFAULT_MAX_CONCURRENT_SYNCS
        }
        Some(n) => n.into_inner(),
        None => DEFAULT_MAX_CONCURRENT_SYNCS,
    };
    let mut rate = |value: Option<Spanned<u32>>, key: &str, default: u32| match value {
        Some(n) if *n.get_ref() == 0 => {
            diagnostics.push(file.at(n.span().start, format!("`{key}` must be at least 1")));
            default
        }
        Some(n) => n.into_inner(),
        None => default,
    };
    let requests_per_second =
        rate(raw.requests_per_second, "requests_per_second", DEFAULT_REQUESTS_PER_SECOND);
    let route_requests_per_second = rate(
        raw.route_requests_per_second,
        "route_requests_per_second",
        DEFAULT_ROUTE_REQUESTS_PER_SECOND,
    );
    LimitsSpec {
        memory_budget_bytes: memory_budget_mib.saturating_mul(1024 * 1024),
        max_concurrent_syncs,
        requests_per_second,
        route_requests_per_second,
    }
}

/// Checks syncs against the project and against each other.
struct SyncChecker<'a> {
    warehouses: &'a [String],
    environments: &'a [String],
    /// (environment, segment) → the sync that writes it, and where.
    segment_writers: HashMap<(String, SegmentKey), (String, Diagnostic)>,
    diagnostics: &'a mut Diagnostics,
}

impl SyncChecker<'_> {
    fn sync_spec(&mut self, file: &SourceFile, parsed: &ParsedSync) -> Option<SyncSpec> {
        let first = self.diagnostics.len();
        let raw = &parsed.raw;
        let stem = file.path.file_stem().map(|s| s.to_string_lossy().into_owned());
        let name = match SyncName::new(stem.unwrap_or_default()) {
            Ok(name) => Some(name),
            Err(error) => {
                self.diagnostics.push(Diagnostic::in_file(
                    &file.path,
                    format!("the file's name is the sync's name: {error}"),
                ));
                None
            }
        };
        let warehouse = self.reference(file, &raw.warehouse, "warehouse", self.warehouses);
        let environment = self.reference(file, &raw.environment, "environment", self.environments);
        let object = self.object(file, raw, name.as_ref(), environment.as_ref());
        if self.diagnostics.len() > first {
            return None;
        }
        Some(SyncSpec {
            name: name?,
            path: file.path.clone(),
            warehouse: WarehouseName::new(warehouse?).ok()?,
            environment: EnvironmentName::new(environment?).ok()?,
            schedule: raw.schedule.clone(),
            description: raw.description.clone(),
            object: object?,
        })
    }

    /// Checks that a sync names a warehouse or environment that `ldsync.toml` declares.
    fn reference(
        &mut self,
        file: &SourceFile,
        value: &Spanned<String>,
        what: &str,
        declared: &[String],
    ) -> Option<String> {
        let name = value.get_ref();
        if declared.iter().any(|known| known == name) {
            return Some(name.clone());
        }
        let known = if declared.is_empty() {
            "none is declared".to_owned()
        } else {
            let names: Vec<_> = declared.iter().map(|n| format!("`{n}`")).collect();
            format!("declared: {}", names.join(", "))
        };
        self.diagnostics.push(file.at(
            value.span().start,
            format!(
                "unknown {what} `{}`: expected one declared as `[{what}s.NAME]` in ldsync.toml ({known})",
                name.escape_debug()
            ),
        ));
        None
    }

    fn object(
        &mut self,
        file: &SourceFile,
        raw: &crate::raw::RawSync,
        name: Option<&SyncName>,
        environment: Option<&String>,
    ) -> Option<SyncObject> {
        match (&raw.segment, &raw.metric_events, &raw.metrics) {
            (Some(segment), None, None) => Some(self.segment(file, segment, name, environment)),
            (None, Some(events), None) => self.metric_events(file, events),
            (None, None, Some(metrics)) => Some(self.metrics(file, metrics)),
            (None, None, None) => {
                self.diagnostics.push(Diagnostic::in_file(
                    &file.path,
                    "a sync needs one of `[segment]`, `[metric_events]` or `[metrics]`",
                ));
                None
            }
            _ => {
                let spans = [
                    raw.segment.as_ref().map(Spanned::span),
                    raw.metric_events.as_ref().map(Spanned::span),
                    raw.metrics.as_ref().map(Spanned::span),
                ];
                let second = spans.into_iter().flatten().map(|s| s.start).nth(1).unwrap_or(0);
                self.diagnostics.push(file.at(
                    second,
                    "a sync keeps one object: `[segment]`, `[metric_events]` or `[metrics]`, not several (write one file per sync)",
                ));
                None
            }
        }
    }

    fn no_parameters(&mut self, file: &SourceFile, query: &Spanned<crate::Query>, table: &str) {
        if query.get_ref().binds(1) {
            self.diagnostics.push(file.at(
                query.span().start,
                format!("`[{table}]` queries take no parameters: remove `$1`"),
            ));
        }
    }

    fn batch_size(
        &mut self,
        file: &SourceFile,
        value: Option<&Spanned<u32>>,
        default: u32,
        max: u32,
    ) -> u32 {
        let Some(value) = value else { return default };
        let size = *value.get_ref();
        if size == 0 || size > max {
            self.diagnostics.push(file.at(
                value.span().start,
                format!("invalid `batch_size` {size}: expected 1 to {max}"),
            ));
        }
        size
    }

    fn segment(
        &mut self,
        file: &SourceFile,
        segment: &Spanned<RawSegment>,
        name: Option<&SyncName>,
        environment: Option<&String>,
    ) -> SyncObject {
        let raw = segment.get_ref();
        self.no_parameters(file, &raw.query, "segment");
        let batch_size = self.batch_size(
            file,
            raw.batch_size.as_ref(),
            DEFAULT_SEGMENT_BATCH_SIZE,
            MAX_SEGMENT_BATCH_SIZE,
        );
        if let (Some(key), Some(environment), Some(name)) = (&raw.key, environment, name) {
            let here = file.at(key.span().start, String::new());
            let slot = (environment.clone(), key.get_ref().clone());
            if let Some((other, there)) = self.segment_writers.get(&slot) {
                self.diagnostics.push(file.at(
                    key.span().start,
                    format!(
                        "segment `{}` in environment `{environment}` is already written by sync `{other}` ({}:{}:{}): one sync per segment",
                        key.get_ref(),
                        there.path.display(),
                        there.line,
                        there.column
                    ),
                ));
            } else {
                self.segment_writers.insert(slot, (name.to_string(), here));
            }
        }
        SyncObject::Segment(SegmentSpec {
            key: raw.key.as_ref().map(|key| key.get_ref().clone()),
            name: raw.name.clone(),
            description: raw.description.clone(),
            tags: raw.tags.clone().unwrap_or_default(),
            context_kind: raw.context_kind.clone().unwrap_or_default(),
            max_removal_ratio: raw.max_removal_ratio.unwrap_or_else(|| {
                Ratio::new(DEFAULT_MAX_REMOVAL_RATIO).expect("the default ratio lies in 0..=1")
            }),
            batch_size,
            import_threshold: raw.import_threshold.unwrap_or(DEFAULT_IMPORT_THRESHOLD),
            query: raw.query.get_ref().clone(),
        })
    }

    fn metric_events(
        &mut self,
        file: &SourceFile,
        events: &Spanned<RawMetricEvents>,
    ) -> Option<SyncObject> {
        let raw = events.get_ref();
        if !raw.query.get_ref().binds(1) {
            self.diagnostics.push(file.at(
                raw.query.span().start,
                "the `[metric_events]` query must read from the cursor `$1`, such as `where occurred_at >= $1`",
            ));
        }
        let batch_size = self.batch_size(
            file,
            raw.batch_size.as_ref(),
            DEFAULT_EVENT_BATCH_SIZE,
            MAX_EVENT_BATCH_SIZE,
        );
        let initial_cursor = match &raw.initial_cursor {
            None => DateTime::<Utc>::UNIX_EPOCH,
            Some(text) => {
                let Some(instant) = parse_instant(text.get_ref()) else {
                    self.diagnostics.push(file.at(
                        text.span().start,
                        format!(
                            "invalid `initial_cursor` `{}`: expected an RFC 3339 time such as `2024-01-01T00:00:00Z`, or a date such as `2024-01-01`",
                            text.get_ref().escape_debug()
                        ),
                    ));
                    return None;
                };
                instant
            }
        };
        Some(SyncObject::MetricEvents(MetricEventsSpec {
            context_kind: raw.context_kind.clone().unwrap_or_default(),
            lookback: raw.lookback.map_or(
                std::time::Duration::from_secs(DEFAULT_LOOKBACK_SECS),
                crate::HumanDuration::get,
            ),
            identity_retention: raw.identity_retention.map_or(
                std::time::Duration::from_secs(DEFAULT_IDENTITY_RETENTION_SECS),
                crate::HumanDuration::get,
            ),
            initial_cursor,
            batch_size,
            query: raw.query.get_ref().clone(),
        }))
    }

    fn metrics(&mut self, file: &SourceFile, metrics: &Spanned<RawMetrics>) -> SyncObject {
        let raw = metrics.get_ref();
        self.no_parameters(file, &raw.query, "metrics");
        SyncObject::Metrics(MetricsSpec {
            archive_removed: raw.archive_removed.unwrap_or(false),
            query: raw.query.get_ref().clone(),
        })
    }
}

/// An RFC 3339 time, or a date read as its midnight in UTC.
fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Some(instant.to_utc());
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc())
}

#[cfg(test)]
mod tests {
    use super::{has_password, parse_instant};

    #[test]
    fn finds_passwords_in_connection_strings() {
        assert!(has_password("postgres://app:hunter2@db/analytics"));
        assert!(!has_password("postgres://app@db/analytics"));
        assert!(!has_password("postgres://db/analytics?user=a:b"));
        assert!(has_password("host=db user=app password=hunter2"));
        assert!(!has_password("host=db user=app"));
    }

    #[test]
    fn reads_instants_and_dates() {
        assert_eq!(parse_instant("2024-01-01").unwrap().to_rfc3339(), "2024-01-01T00:00:00+00:00");
        assert!(parse_instant("2024-01-01T05:00:00+02:00").is_some());
        assert!(parse_instant("yesterday").is_none());
    }
}
