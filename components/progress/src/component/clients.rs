//! Client records: create, read, caseload, archive.

use super::ctx::{Ctx, Subject};
use super::keyring::Cells;
use crate::domain::access::Action;
use crate::domain::dates::format_datetime;
use crate::domain::entries::{ClientView, NewClient};
use edge_common::api::{parse_json, to_json};
use edge_common::db::{text, Db, Row, Value};
use edge_common::identity::new_id;
use edge_common::web::{json, Response};
use edge_common::ApiError;
use serde::Serialize;

const COLUMNS: &str = "id, version, created_at, archived_at, display_name, date_of_birth, contact, notes";

async fn view(ctx: &Ctx, r: &Row) -> Result<ClientView, ApiError> {
    let id = r.text(0)?;
    let key = ctx.keys.get(&ctx.db, &id).await?;
    let cells = Cells { key: &key, client_id: &id, table: "clients", row: &id, version: r.int(1)? };
    Ok(ClientView {
        display_name: cells.open("display_name", r.blob(4)?)?,
        date_of_birth: cells.open_opt("date_of_birth", r.opt_blob(5)?)?,
        contact: cells.open_opt("contact", r.opt_blob(6)?)?,
        notes: cells.open_opt("notes", r.opt_blob(7)?)?,
        created_at: format_datetime(r.int(2)?),
        archived_at: r.opt_int(3)?.map(format_datetime),
        id,
    })
}

pub async fn create(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let id = new_id()?;
    let s = Subject::new(Action::ClientCreate, "client", &id, &id);
    let result = async {
        ctx.authorize(&s).await?;
        let input: NewClient = parse_json(body)?;
        input.validate().map_err(ApiError::bad_request)?;
        let view = ctx
            .write(&s, async {
                let key = ctx.keys.create(&ctx.db, &id, ctx.now).await?;
                let c = Cells { key: &key, client_id: &id, table: "clients", row: &id, version: 1 };
                ctx.db
                    .exec(
                        &format!("INSERT INTO clients ({COLUMNS}, created_by) VALUES (?, 1, ?, NULL, ?, ?, ?, ?, ?)"),
                        vec![
                            text(&id),
                            Value::Integer(ctx.now),
                            Value::Blob(c.seal("display_name", &input.display_name)?),
                            c.seal_opt("date_of_birth", input.date_of_birth.as_ref())?,
                            c.seal_opt("contact", input.contact.as_ref())?,
                            c.seal_opt("notes", input.notes.as_ref())?,
                            text(&ctx.principal.user_id),
                        ],
                    )
                    .await?;
                ctx.db
                    .exec(
                        "INSERT INTO assignments (therapist_id, client_id, created_at) VALUES (?, ?, ?)",
                        vec![text(&ctx.principal.user_id), text(&id), Value::Integer(ctx.now)],
                    )
                    .await?;
                Ok(ClientView {
                    id: id.clone(),
                    display_name: input.display_name.clone(),
                    date_of_birth: input.date_of_birth.clone(),
                    contact: input.contact.clone(),
                    notes: input.notes.clone(),
                    created_at: format_datetime(ctx.now),
                    archived_at: None,
                })
            })
            .await?;
        Ok(json(201, to_json(&view)?))
    }
    .await;
    ctx.conclude(&s, result).await
}

pub async fn read(ctx: &Ctx, client_id: &str) -> Result<Response, ApiError> {
    let s = Subject::new(Action::ClientRead, "client", client_id, client_id);
    let result = async {
        ctx.authorize(&s).await?;
        let r = ctx
            .db
            .query_one(&format!("SELECT {COLUMNS} FROM clients WHERE id = ?"), vec![text(client_id)])
            .await?
            .ok_or_else(|| ApiError::not_found("client not found"))?;
        Ok(json(200, to_json(&view(ctx, &r).await?)?))
    }
    .await;
    ctx.conclude(&s, result).await
}

#[derive(Serialize)]
struct AdminClientLine {
    id: String,
    created_at: String,
    archived: bool,
    erased: bool,
}

/// A therapist's caseload (decrypted), or for an admin the ids and status only.
pub async fn list(ctx: &Ctx, include_archived: bool) -> Result<Response, ApiError> {
    let s = Subject::new(Action::ClientList, "caseload", &ctx.principal.user_id, "");
    let result = async {
        ctx.authorize(&s).await?;
        if ctx.role() == edge_common::auth::Role::Admin {
            let rows = ctx.db.query("SELECT id, created_at, archived_at, erased_at FROM clients ORDER BY created_at, id", vec![]).await?;
            let lines = rows
                .iter()
                .map(|r| {
                    Ok(AdminClientLine {
                        id: r.text(0)?,
                        created_at: format_datetime(r.int(1)?),
                        archived: r.opt_int(2)?.is_some(),
                        erased: r.opt_int(3)?.is_some(),
                    })
                })
                .collect::<Result<Vec<_>, ApiError>>()?;
            return Ok(json(200, to_json(&serde_json::json!({ "clients": lines }))?));
        }
        let rows = ctx
            .db
            .query(
                &format!(
                    "SELECT {} FROM clients c JOIN assignments a ON a.client_id = c.id
                     WHERE a.therapist_id = ? AND c.erased_at IS NULL {} ORDER BY c.created_at, c.id",
                    COLUMNS.split(", ").map(|c| format!("c.{c}")).collect::<Vec<_>>().join(", "),
                    if include_archived { "" } else { "AND c.archived_at IS NULL" }
                ),
                vec![text(&ctx.principal.user_id)],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(view(ctx, r).await?);
        }
        Ok(json(200, to_json(&serde_json::json!({ "clients": out }))?))
    }
    .await;
    ctx.conclude(&s, result).await
}

pub async fn archive(ctx: &Ctx, client_id: &str) -> Result<Response, ApiError> {
    let s = Subject::new(Action::ClientArchive, "client", client_id, client_id);
    let result = async {
        let state = ctx.authorize(&s).await?.expect("record-scoped");
        if state.archived {
            return Err(ApiError::conflict("the client is already archived"));
        }
        ctx.write(&s, async {
            // Re-checked inside the transaction: archived or erased meanwhile changes nothing.
            ctx.db
                .exec(
                    "UPDATE clients SET archived_at = ? WHERE id = ? AND archived_at IS NULL AND erased_at IS NULL",
                    vec![Value::Integer(ctx.now), text(client_id)],
                )
                .await?;
            if ctx.db.changes().await != 1 {
                return Err(ApiError::conflict("the client is already archived or erased"));
            }
            Ok(())
        })
        .await?;
        Ok(json(200, to_json(&serde_json::json!({ "id": client_id, "archived_at": format_datetime(ctx.now) }))?))
    }
    .await;
    ctx.conclude(&s, result).await
}

/// Whether a client exists and is not erased.
pub async fn exists(db: &Db, client_id: &str) -> Result<bool, ApiError> {
    Ok(db
        .query_one("SELECT 1 FROM clients WHERE id = ? AND erased_at IS NULL", vec![text(client_id)])
        .await?
        .is_some())
}

/// Inside a write transaction: the record must still exist and be neither
/// erased nor archived. The checks made when the request was authorised ran
/// before the transaction, so an archive or erasure committed in between is
/// caught here.
pub async fn check_writable(ctx: &Ctx, client_id: &str) -> Result<(), ApiError> {
    match ctx.db.query_one("SELECT archived_at, erased_at FROM clients WHERE id = ?", vec![text(client_id)]).await? {
        None => Err(ApiError::not_found("client not found")),
        Some(r) if r.opt_int(1)?.is_some() => Err(ApiError::gone("the client record has been erased")),
        Some(r) if r.opt_int(0)?.is_some() => Err(archived()),
        Some(_) => Ok(()),
    }
}

fn archived() -> ApiError {
    ApiError::conflict("the client is archived; its record is read-only")
}

/// Rejects writes to an archived record.
pub fn ensure_writable(state: Option<super::ctx::ClientState>) -> Result<(), ApiError> {
    match state {
        Some(s) if s.archived => Err(archived()),
        _ => Ok(()),
    }
}
