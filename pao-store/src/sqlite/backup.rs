//! SQLite: online backups of the database file.

use pao_core::store::StoreError;

use crate::sql::{Dialect, SqlStore, db};

impl SqlStore {
    /// An online, consistent copy of a SQLite database into `path` (`VACUUM INTO`).
    pub async fn backup_to(&self, path: &str) -> Result<(), StoreError> {
        if self.dialect() != Dialect::Sqlite {
            return Err(StoreError::Unavailable(
                "backup_to is for SQLite; use pg_dump for PostgreSQL".into(),
            ));
        }
        if std::path::Path::new(path).exists() {
            return Err(StoreError::Duplicate(format!(
                "{path} exists; choose a new file"
            )));
        }
        sqlx::query("VACUUM INTO $1")
            .bind(path.to_string())
            .execute(self.pool())
            .await
            .map_err(db)?;
        Ok(())
    }
}
