//! Support for tests of this crate and the crates built on it: which database a test uses.

use std::hash::{Hash, Hasher};
use std::path::Path;

/// The database of a test using the temporary directory `dir`: SQLite in `dir`, or, with
/// `SWEEP_TEST_POSTGRES_URL` set (a server such as `postgres://postgres@127.0.0.1:55432`, see
/// `scripts/test-postgres.sh`), a PostgreSQL database of its own on that server, named after
/// `dir` (reopening the same `dir` reopens the same database; [`crate::Database::open`] creates it).
pub fn database_url(dir: &Path) -> String {
    match std::env::var("SWEEP_TEST_POSTGRES_URL") {
        Ok(server) if !server.is_empty() => {
            let mut hash = std::collections::hash_map::DefaultHasher::new();
            dir.hash(&mut hash);
            format!("{}/sweep_test_{:016x}", server.trim_end_matches('/'), hash.finish())
        }
        _ => sqlite_url(dir),
    }
}

/// A SQLite database in `dir` (for tests that read its tables with SQL of their own).
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("sweep.db").display())
}
