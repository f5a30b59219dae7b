//! Integration tests of the engine, one module per area, against the emulator.

mod events;
mod metrics;
mod metrics_errors;
mod scripted;
