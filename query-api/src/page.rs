//! Keyset pages: `{items, next_cursor}`, the cursor being the opaque (base64url) sort key of
//! the last item. A keyset on an immutable, unique key visits every row that existed when
//! paging began exactly once, whatever is inserted meanwhile.

use api_common::ApiError;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::params::invalid;

/// A page of a list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Encodes a sort key as a cursor.
pub(crate) fn encode<K: Serialize>(key: &K) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).unwrap_or_default())
}

/// Decodes a cursor (422 naming `cursor` when it is not one of ours).
pub(crate) fn decode<K: DeserializeOwned>(cursor: Option<&str>) -> Result<Option<K>, ApiError> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        // ours never hold a NUL character, which no key can have
        .filter(|bytes| !api_common::json::has_nul_escape(bytes))
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .map(Some)
        .ok_or_else(|| invalid("cursor", "not a cursor this API handed out"))
}

/// Cuts the `limit + 1` rows fetched down to a page; `key` gives the cursor of the last item.
pub(crate) fn page<T, K: Serialize>(
    mut rows: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> K,
) -> Page<T> {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(|last| encode(&key(last)))
    } else {
        None
    };
    Page {
        items: rows,
        next_cursor,
    }
}
