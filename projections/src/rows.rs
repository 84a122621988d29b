//! Bulk reads and writes of read-model rows as JSON: a batch's rows go to Postgres as one
//! `jsonb` document unpacked by `jsonb_to_recordset` (arrays, nulls and nested JSON included),
//! and come back with `to_jsonb`, so each table is read and written with one statement per
//! batch and its row type is a plain serde struct.

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

/// A read-model table: its columns with their SQL types, in the order of the row struct.
#[derive(Debug)]
pub(crate) struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, &'static str)],
    /// The conflict target of upserts.
    pub key: &'static str,
}

impl Table {
    fn names(&self) -> String {
        self.columns
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn record(&self) -> String {
        self.columns
            .iter()
            .map(|(name, ty)| format!("{name} {ty}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `insert` of every row of the JSON array `$1`.
    pub fn insert_sql(&self) -> String {
        format!(
            "insert into {table} ({names}) select {names} from jsonb_to_recordset($1) as r({record})",
            table = self.name,
            names = self.names(),
            record = self.record(),
        )
    }

    /// `insert`, replacing the row with the same key.
    pub fn upsert_sql(&self) -> String {
        let updates = self
            .columns
            .iter()
            .filter(|(name, _)| !self.key.split(", ").any(|k| k == *name))
            .map(|(name, _)| format!("{name} = excluded.{name}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{insert} on conflict ({key}) do update set {updates}",
            insert = self.insert_sql(),
            key = self.key
        )
    }

    /// `insert`, adding to the counters of the row with the same key.
    pub fn add_sql(&self, counters: &[&str]) -> String {
        let updates = counters
            .iter()
            .map(|c| format!("{c} = {table}.{c} + excluded.{c}", table = self.name))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{insert} on conflict ({key}) do update set {updates}",
            insert = self.insert_sql(),
            key = self.key
        )
    }
}

/// Runs `sql` (from [`Table`]) with `rows` as its JSON array; nothing for no rows.
pub(crate) async fn write<T: Serialize>(
    conn: &mut PgConnection,
    sql: &str,
    rows: &[T],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(sql).bind(Json(rows)).execute(conn).await?;
    Ok(())
}

/// The rows of `table` whose `id` is one of `ids`.
pub(crate) async fn load<T: DeserializeOwned + Send + Unpin + 'static>(
    conn: &mut PgConnection,
    table: &str,
    ids: &[Uuid],
) -> Result<Vec<T>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<Json<T>> = sqlx::query_scalar(&format!(
        "select to_jsonb(t) from {table} t where id = any($1)"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|Json(row)| row).collect())
}
