//! Integration tests of the engine, one module per area, against the emulator.

mod events;
mod metrics;
mod metrics_errors;
mod scripted;

/// The error of the in-memory warehouses of these tests (they never fail).
#[derive(Debug, thiserror::Error)]
#[error("the in-memory warehouse failed")]
pub(crate) struct WarehouseError;

impl ldsync_core::Classify for WarehouseError {
    fn domain(&self) -> ldsync_core::ErrorDomain {
        ldsync_core::ErrorDomain::External
    }

    fn is_retryable(&self) -> bool {
        false
    }
}
