//! Integration tests of the emulator: each area drives it over HTTP on an ephemeral port.

mod auth;
mod common;
mod conformance;
mod events;
mod faults;
mod imports;
mod introspection;
mod limits;
mod metrics;
mod segments;
