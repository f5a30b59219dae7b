//! Shared test fixtures of ldsync: a throwaway PostgreSQL server and helpers around it.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use ldsync_test_support::postgres;
//!
//! // One server per test binary, one fresh database per test.
//! let server = postgres::shared();
//! let db = server.create_unique_database("orders").await?;
//! let client = server.connect_to(&db).await?;
//! client.batch_execute("create table t (id int)").await?;
//! # Ok(())
//! # }
//! ```

mod error;
mod net;
pub mod postgres;

pub use error::{Error, Result};
pub use net::free_port;
pub use postgres::{PostgresServer, ServerTls};
