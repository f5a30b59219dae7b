//! Integration tests of `ldsync-diff`: the case folders, and properties over random sets.

mod cases;
mod properties;
