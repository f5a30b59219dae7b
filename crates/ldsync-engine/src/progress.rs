//! What a run reports while it goes, for a progress line on a terminal.

/// Hears a run's progress; every method has a default that ignores it.
pub trait Progress: Send + Sync + std::fmt::Debug {
    /// `rows` rows have been read from the warehouse so far.
    fn rows_read(&self, rows: u64) {
        let _ = rows;
    }

    /// `delivered` of `total` batches have been accepted by LaunchDarkly.
    fn batches(&self, delivered: u64, total: u64) {
        let _ = (delivered, total);
    }

    /// The run is over (whatever its result): clear what was drawn.
    fn finish(&self) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {}
