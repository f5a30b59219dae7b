//! Integration tests of the test fixtures; one binary, one module per fixture.

mod postgres;
