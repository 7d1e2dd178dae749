//! Named versions of a document: `POST versions` saves the whole document
//! under a name, `GET versions` lists them, `GET version?name=` reads one,
//! `POST restore?name=` makes the document equal to it again and `DELETE
//! version?name=` drops it. Also `GET content`: the document as JSON, for
//! the admin console.
//!
//! Table `yjs_versions(name, created_ms, data)`: `data` is the whole
//! document as one v1 update at creation, so a version outlives the history
//! window and compaction (which never touches this table).
//!
//! Restoring is a new update on top, not a rewind: the changes made since
//! the version are undone (yrs's `UndoManager` on a throwaway copy), and
//! the update that does so goes through the same checks and log as any
//! client's, so every connected client converges to the version's content.
//! What this file does not do: merge, branch, or name versions on its own.

use serde_json::{json, Value};
use yrs::undo::Options;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Transact, UndoManager, Update};

use super::Ydoc;
use crate::object::{FetchRequest, FetchResponse};
use crate::{Ctx, ObjectError};

/// Created by the constructor; `IF NOT EXISTS` changes nothing once it is.
pub(super) const TABLE: &str = "CREATE TABLE IF NOT EXISTS yjs_versions(
    name TEXT PRIMARY KEY, created_ms INTEGER NOT NULL, data BLOB NOT NULL);";

/// Longest version name, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 128;

fn app(e: impl std::fmt::Display) -> ObjectError {
    ObjectError::app(e.to_string())
}

/// The version name of a request (`?name=`), checked.
fn name_of(request: &FetchRequest) -> Result<&str, FetchResponse> {
    let name = request.query.get("name").map(String::as_str).unwrap_or("");
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(FetchResponse::status(
            400,
            &format!(
                "a version name is 1 to {MAX_NAME_BYTES} bytes of text without control characters"
            ),
        ));
    }
    Ok(name)
}

fn stored(ctx: &Ctx, name: &str) -> Result<Option<Vec<u8>>, ObjectError> {
    use rusqlite::OptionalExtension;
    ctx.storage()
        .sql()
        .query_row(
            "SELECT data FROM yjs_versions WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()
        .map_err(app)
}

/// The version name of a request that changes versions: refused for a
/// read-only caller, then checked as `name_of`.
fn writable_name(request: &FetchRequest) -> Result<&str, FetchResponse> {
    if request.read_only {
        return Err(FetchResponse::status(
            403,
            "read-only access cannot change the document's versions",
        ));
    }
    name_of(request)
}

impl Ydoc {
    /// The version routes of `fetch`; `None`: not one of them.
    pub(super) fn version_route(
        &mut self,
        ctx: &mut Ctx,
        request: &FetchRequest,
    ) -> Option<Result<FetchResponse, ObjectError>> {
        let result = match (request.method.as_str(), request.path.as_str()) {
            ("GET", "versions") => list(ctx),
            ("POST", "versions") => self.create_version(ctx, request),
            ("GET", "version") => read_version(ctx, request),
            ("DELETE", "version") => delete_version(ctx, request),
            ("POST", "restore") => self.restore_version(ctx, request),
            ("GET", "content") => self.content().map(|v| FetchResponse::json(&v)),
            _ => return None,
        };
        Some(result)
    }

    fn create_version(
        &mut self,
        ctx: &mut Ctx,
        request: &FetchRequest,
    ) -> Result<FetchResponse, ObjectError> {
        let name = match writable_name(request) {
            Ok(n) => n,
            Err(resp) => return Ok(resp),
        };
        if stored(ctx, name)?.is_some() {
            return Ok(FetchResponse::status(
                409,
                "a version of that name exists; delete it first or choose another name",
            ));
        }
        let max = Self::config(ctx).max_versions;
        let count: u64 = ctx
            .storage()
            .sql()
            .query_row("SELECT count(*) FROM yjs_versions", [], |r| r.get(0))
            .map_err(app)?;
        if count >= max {
            return Ok(FetchResponse::status(
                507,
                &format!("the document holds {count} versions, the limit (--yjs-max-versions); delete one first"),
            ));
        }
        let data = self.state(&StateVector::default())?;
        let now = ctx.now_ms();
        ctx.storage()
            .sql()
            .execute(
                "INSERT INTO yjs_versions(name, created_ms, data) VALUES(?1, ?2, ?3)",
                (name, now, &data),
            )
            .map_err(app)?;
        let body = json!({ "name": name, "created_ms": now, "bytes": data.len() });
        let mut resp = FetchResponse::json(&body);
        resp.status = 201;
        Ok(resp)
    }

    fn restore_version(
        &mut self,
        ctx: &mut Ctx,
        request: &FetchRequest,
    ) -> Result<FetchResponse, ObjectError> {
        let name = match writable_name(request) {
            Ok(n) => n.to_owned(),
            Err(resp) => return Ok(resp),
        };
        let Some(version) = stored(ctx, &name)? else {
            return Ok(FetchResponse::status(404, "no version of that name"));
        };
        let current = self.state(&StateVector::default())?;
        let update = restoring_update(&current, &version).map_err(app)?;
        // The same path as a client's update: checked, logged, broadcast.
        let as_update = FetchRequest {
            method: "POST".into(),
            path: "update".into(),
            body: update,
            ..request.clone()
        };
        let resp = self.post_update(ctx, &as_update)?;
        if resp.status != 200 {
            return Ok(resp);
        }
        Ok(FetchResponse::json(&json!({ "restored": name })))
    }

    /// The document as JSON: each root type by name (see `root_json`).
    fn content(&mut self) -> Result<Value, ObjectError> {
        let state = self.state(&StateVector::default())?;
        let names: Vec<String> = {
            let txn = self.doc.transact();
            txn.root_refs().map(|(name, _)| name.to_owned()).collect()
        };
        let mut roots = serde_json::Map::new();
        for name in names {
            roots.insert(name.clone(), root_json(&state, &name).map_err(app)?);
        }
        Ok(json!({ "roots": roots }))
    }
}

fn list(ctx: &mut Ctx) -> Result<FetchResponse, ObjectError> {
    let conn = ctx.storage().sql();
    let mut stmt = conn
        .prepare(
            "SELECT name, created_ms, length(data) FROM yjs_versions ORDER BY created_ms, name",
        )
        .map_err(app)?;
    let versions = stmt
        .query_map([], |r| {
            Ok(json!({
                "name": r.get::<_, String>(0)?,
                "created_ms": r.get::<_, i64>(1)?,
                "bytes": r.get::<_, i64>(2)?,
            }))
        })
        .map_err(app)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(app)?;
    Ok(FetchResponse::json(&json!({ "versions": versions })))
}

fn read_version(ctx: &mut Ctx, request: &FetchRequest) -> Result<FetchResponse, ObjectError> {
    let name = match name_of(request) {
        Ok(n) => n,
        Err(resp) => return Ok(resp),
    };
    Ok(match stored(ctx, name)? {
        Some(data) => FetchResponse::bytes("application/octet-stream", data),
        None => FetchResponse::status(404, "no version of that name"),
    })
}

fn delete_version(ctx: &mut Ctx, request: &FetchRequest) -> Result<FetchResponse, ObjectError> {
    let name = match writable_name(request) {
        Ok(n) => n,
        Err(resp) => return Ok(resp),
    };
    let deleted = ctx
        .storage()
        .sql()
        .execute("DELETE FROM yjs_versions WHERE name = ?1", [name])
        .map_err(app)?;
    Ok(if deleted == 0 {
        FetchResponse::status(404, "no version of that name")
    } else {
        FetchResponse::json(&json!({ "deleted": name }))
    })
}

fn doc_from(state: &[u8]) -> Result<Doc, String> {
    let doc = Doc::new();
    let update = Update::decode_v1(state).map_err(|e| e.to_string())?;
    doc.transact_mut()
        .apply_update(update)
        .map_err(|e| e.to_string())?;
    Ok(doc)
}

/// The update that turns the document `current` back into `version` (an
/// earlier state of the same document): the changes since the version,
/// applied to a copy of it and undone there; what the undo wrote, encoded
/// against `current`'s state vector.
pub(super) fn restoring_update(current: &[u8], version: &[u8]) -> Result<Vec<u8>, String> {
    let now = doc_from(current)?;
    let copy = doc_from(version)?;
    let since = now
        .transact()
        .encode_state_as_update_v1(&copy.transact().state_vector());
    let now_sv = now.transact().state_vector();
    let names: Vec<String> = now
        .transact()
        .root_refs()
        .map(|(name, _)| name.to_owned())
        .collect();
    let mut undo: UndoManager = UndoManager::with_options(Options::default());
    for name in &names {
        // Any type serves as the scope: undo works on items, whatever
        // their root's type (the copy is thrown away).
        let root = copy.get_or_insert_array(name.as_str());
        undo.expand_scope(&copy, &root);
    }
    let since = Update::decode_v1(&since).map_err(|e| e.to_string())?;
    copy.transact_mut()
        .apply_update(since)
        .map_err(|e| e.to_string())?;
    while undo.can_undo() {
        if !undo.undo_blocking() {
            break;
        }
    }
    let update = copy.transact().encode_state_as_update_v1(&now_sv);
    Ok(update)
}

/// One root type as JSON. Roots in a decoded document have no type, so it
/// is guessed on a fresh copy each time: text if it holds text, else an
/// array's items if it has any, else a map.
fn root_json(state: &[u8], name: &str) -> Result<Value, String> {
    let doc = doc_from(state)?;
    let text = doc.get_or_insert_text(name);
    let s = text.get_string(&doc.transact());
    if !s.is_empty() {
        return Ok(Value::String(s));
    }
    let doc = doc_from(state)?;
    let array = doc.get_or_insert_array(name);
    let txn = doc.transact();
    if yrs::Array::len(&array, &txn) > 0 {
        return any_json(&yrs::types::ToJson::to_json(&array, &txn));
    }
    drop(txn);
    let doc = doc_from(state)?;
    let map = doc.get_or_insert_map(name);
    let txn = doc.transact();
    any_json(&yrs::types::ToJson::to_json(&map, &txn))
}

fn any_json(any: &yrs::Any) -> Result<Value, String> {
    let mut text = String::new();
    any.to_json(&mut text);
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::Text;

    fn text_doc(doc: &Doc) -> String {
        let t = doc.get_or_insert_text("t");
        t.get_string(&doc.transact())
    }

    #[test]
    fn restoring_undoes_the_changes_since_the_version() {
        let doc = Doc::new();
        let t = doc.get_or_insert_text("t");
        t.insert(&mut doc.transact_mut(), 0, "draft one");
        let version = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        t.insert(&mut doc.transact_mut(), 0, "edited: ");
        t.remove_range(&mut doc.transact_mut(), 8, 5);
        let current = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let update = restoring_update(&current, &version).expect("restore");
        doc.transact_mut()
            .apply_update(Update::decode_v1(&update).expect("decode"))
            .expect("apply");
        assert_eq!(text_doc(&doc), "draft one");
        assert_eq!(
            root_json(
                &doc.transact()
                    .encode_state_as_update_v1(&StateVector::default()),
                "t"
            )
            .expect("json"),
            json!("draft one")
        );
    }
}
