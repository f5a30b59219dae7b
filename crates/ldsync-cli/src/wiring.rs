//! The only place that picks concrete types: one constructor per warehouse kind, and the
//! LaunchDarkly client of an environment.

use std::sync::Arc;

use ldsync_config::{EnvironmentSpec, WarehouseSpec};
use ldsync_core::{BatchStream, CellStream, Source, TextStream, Value};
use ldsync_launchdarkly::{ClientOptions, LaunchDarklyClient, Limiter, RequestObserver};
use ldsync_source::{DuckDbSource, PostgresSource};

/// A warehouse of any kind.
#[derive(Debug)]
pub(crate) enum Warehouse {
    Postgres(Box<PostgresSource>),
    DuckDb(DuckDbSource),
}

impl Warehouse {
    pub(crate) fn new(spec: &WarehouseSpec) -> Result<Self, ldsync_source::Error> {
        Ok(match spec {
            WarehouseSpec::Postgres { url, statement_timeout } => {
                Self::Postgres(Box::new(PostgresSource::new(url, *statement_timeout)?))
            }
            WarehouseSpec::DuckDb { path: Some(path), statement_timeout } => {
                Self::DuckDb(DuckDbSource::open(path, *statement_timeout))
            }
            WarehouseSpec::DuckDb { path: None, .. } => Self::DuckDb(DuckDbSource::in_memory()),
        })
    }
}

impl Source for Warehouse {
    type Error = ldsync_source::Error;

    async fn healthcheck(&self) -> Result<(), ldsync_source::Error> {
        match self {
            Self::Postgres(source) => source.healthcheck().await,
            Self::DuckDb(source) => source.healthcheck().await,
        }
    }

    fn fetch<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
        batch_rows: usize,
    ) -> BatchStream<'a, ldsync_source::Error> {
        match self {
            Self::Postgres(source) => source.fetch(sql, params, batch_rows),
            Self::DuckDb(source) => source.fetch(sql, params, batch_rows),
        }
    }

    fn fetch_text<'a>(
        &'a self,
        sql: &'a str,
        wanted: &'a [&'a str],
        batch_rows: usize,
    ) -> TextStream<'a, ldsync_source::Error> {
        match self {
            Self::Postgres(source) => source.fetch_text(sql, wanted, batch_rows),
            Self::DuckDb(source) => source.fetch_text(sql, wanted, batch_rows),
        }
    }

    fn fetch_cells<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
        batch_rows: usize,
    ) -> CellStream<'a, ldsync_source::Error> {
        match self {
            Self::Postgres(source) => source.fetch_cells(sql, params, batch_rows),
            Self::DuckDb(source) => source.fetch_cells(sql, params, batch_rows),
        }
    }
}

/// The client that writes to `spec`, sharing the process's `limiter`.
pub(crate) fn launchdarkly_client(
    spec: &EnvironmentSpec,
    limiter: &Arc<Limiter>,
    observer: Option<Arc<dyn RequestObserver>>,
) -> Result<LaunchDarklyClient, ldsync_launchdarkly::Error> {
    let mut options = ClientOptions::new(&spec.api_url, &spec.events_url, spec.token.clone());
    options.limiter = Arc::clone(limiter);
    options.observer = observer;
    LaunchDarklyClient::new(options)
}

/// The limiter every LaunchDarkly client of the process shares, paced by `[limits]`.
pub(crate) fn limiter(limits: &ldsync_config::LimitsSpec) -> ldsync_launchdarkly::Limiter {
    let per_second = |n: u32| std::num::NonZeroU32::new(n).unwrap_or(std::num::NonZeroU32::MIN);
    ldsync_launchdarkly::Limiter::new(ldsync_launchdarkly::LimiterOptions {
        account_per_second: per_second(limits.requests_per_second),
        route_per_second: per_second(limits.route_requests_per_second),
        ..ldsync_launchdarkly::LimiterOptions::default()
    })
}
