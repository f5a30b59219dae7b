//! The only place that picks concrete types: one constructor per warehouse kind, and the
//! LaunchDarkly client of an environment.

use ldsync_config::{EnvironmentSpec, WarehouseSpec};
use ldsync_core::Source;
use ldsync_launchdarkly::{ClientOptions, LaunchDarklyClient};
use ldsync_source::{DuckDbSource, PostgresSource};

/// A warehouse of any kind.
#[derive(Debug)]
pub(crate) enum Warehouse {
    Postgres(PostgresSource),
    DuckDb(DuckDbSource),
}

impl Warehouse {
    pub(crate) fn new(spec: &WarehouseSpec) -> Result<Self, ldsync_source::Error> {
        Ok(match spec {
            WarehouseSpec::Postgres { url, statement_timeout } => {
                Self::Postgres(PostgresSource::new(url, *statement_timeout)?)
            }
            WarehouseSpec::DuckDb { path: Some(path), statement_timeout } => {
                Self::DuckDb(DuckDbSource::open(path, *statement_timeout))
            }
            WarehouseSpec::DuckDb { path: None, .. } => Self::DuckDb(DuckDbSource::in_memory()),
        })
    }

    pub(crate) async fn healthcheck(&self) -> Result<(), ldsync_source::Error> {
        match self {
            Self::Postgres(source) => source.healthcheck().await,
            Self::DuckDb(source) => source.healthcheck().await,
        }
    }
}

/// The client that writes to `spec`.
pub(crate) fn launchdarkly_client(
    spec: &EnvironmentSpec,
) -> Result<LaunchDarklyClient, ldsync_launchdarkly::Error> {
    LaunchDarklyClient::new(ClientOptions::new(&spec.api_url, &spec.events_url, spec.token.clone()))
}
