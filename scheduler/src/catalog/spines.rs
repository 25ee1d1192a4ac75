//! Uploaded spines in the catalog: where each one's files are and until when it is kept.
//!
//! A spine's files are written first, under a fresh prefix; recording it then points its
//! name at them in one statement, so a reader sees the old spine or the new one, never a
//! half-written one. Replaced and expired spines' files are deleted afterwards.

use ftab_model::names::SpineName;
use rusqlite::{OptionalExtension, params};

use super::{Catalog, now};
use crate::error::Result;

/// A stored spine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpineRecord {
    pub name: SpineName,
    /// Object-store prefix of its Parquet files.
    pub location: String,
    pub rows: u64,
    pub created_at: String,
    pub expires_at: String,
}

impl Catalog {
    /// The locations of every recorded spine, expired ones included (their files go when
    /// the sweeper deletes the record).
    pub async fn spine_locations(&self) -> Result<std::collections::HashSet<String>> {
        self.call(|c| {
            let mut statement = c.prepare("SELECT location FROM spines")?;
            let locations = statement
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(locations)
        })
        .await
    }

    /// Point `name` at newly written files; returns the location of the spine it replaces.
    pub async fn put_spine(&self, spine: SpineRecord) -> Result<Option<String>> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let previous: Option<String> = tx
                .query_row(
                    "SELECT location FROM spines WHERE name = ?1",
                    [spine.name.as_str()],
                    |row| row.get(0),
                )
                .optional()?;
            tx.execute(
                "INSERT INTO spines (name, location, rows, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (name) DO UPDATE SET location = ?2, rows = ?3, created_at = ?4, expires_at = ?5",
                params![
                    spine.name.as_str(),
                    spine.location,
                    spine.rows as i64,
                    spine.created_at,
                    spine.expires_at
                ],
            )?;
            tx.commit()?;
            Ok(previous)
        })
        .await
    }

    /// The spine `name`, unless it does not exist or has expired.
    pub async fn spine(&self, name: &SpineName) -> Result<Option<SpineRecord>> {
        let name = name.clone();
        self.call(move |c| {
            let row: Option<(String, i64, String, String)> = c
                .query_row(
                    "SELECT location, rows, created_at, expires_at FROM spines WHERE name = ?1 AND expires_at > ?2",
                    params![name.as_str(), now()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            Ok(row.map(|(location, rows, created_at, expires_at)| SpineRecord {
                name,
                location,
                rows: rows as u64,
                created_at,
                expires_at,
            }))
        })
        .await
    }

    /// Forget every expired spine; returns their file locations for deletion.
    pub async fn take_expired_spines(&self) -> Result<Vec<String>> {
        self.call(|c| {
            let tx = c.transaction()?;
            let at = now();
            let locations: Vec<String> = tx
                .prepare("SELECT location FROM spines WHERE expires_at <= ?1")?
                .query_map([&at], |row| row.get(0))?
                .collect::<std::result::Result<_, _>>()?;
            tx.execute("DELETE FROM spines WHERE expires_at <= ?1", [&at])?;
            tx.commit()?;
            Ok(locations)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, location: &str, expires_at: &str) -> SpineRecord {
        SpineRecord {
            name: SpineName::new(name).unwrap(),
            location: location.into(),
            rows: 3,
            created_at: now(),
            expires_at: expires_at.into(),
        }
    }

    #[tokio::test]
    async fn spines_are_replaced_and_expire() {
        let catalog = Catalog::open_in_memory().unwrap();
        let name = SpineName::new("labels").unwrap();
        assert_eq!(catalog.spine(&name).await.unwrap(), None);
        let later = "2999-01-01T00:00:00.000Z";
        assert_eq!(
            catalog
                .put_spine(record("labels", "spines/labels/a", later))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            catalog
                .put_spine(record("labels", "spines/labels/b", later))
                .await
                .unwrap(),
            Some("spines/labels/a".to_string()),
            "the replaced location is returned for deletion"
        );
        assert_eq!(
            catalog.spine(&name).await.unwrap().unwrap().location,
            "spines/labels/b"
        );
        catalog
            .put_spine(record("old", "spines/old/a", "2000-01-01T00:00:00.000Z"))
            .await
            .unwrap();
        assert_eq!(
            catalog
                .spine(&SpineName::new("old").unwrap())
                .await
                .unwrap(),
            None,
            "expired"
        );
        assert_eq!(
            catalog.take_expired_spines().await.unwrap(),
            vec!["spines/old/a".to_string()]
        );
        assert!(catalog.take_expired_spines().await.unwrap().is_empty());
        assert!(catalog.spine(&name).await.unwrap().is_some());
    }
}
