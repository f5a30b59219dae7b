//! Integration tests of ldsync-pgtls; one binary, one module per area.

mod certs;
mod tls;
