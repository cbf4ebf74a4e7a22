//! Whole-record operations: export and erasure (crypto-shredding).

use super::ctx::{Ctx, Subject};
use super::{entries, goals, measures};
use crate::domain::access::Action;
use crate::domain::dates::{format_datetime, DAY};
use edge_common::api::{parse_json, to_json};
use edge_common::db::{text, Value};
use edge_common::identity;
use edge_common::web::{json, Response};
use edge_common::ApiError;
use serde::Deserialize;

pub async fn export(ctx: &Ctx, client_id: &str) -> Result<Response, ApiError> {
    let s = Subject::new(Action::Export, "client", client_id, client_id);
    let result = async {
        ctx.authorize(&s).await?;
        let key = ctx.keys.get(&ctx.db, client_id).await?;
        let client_row = ctx
            .db
            .query_one(
                "SELECT version, created_at, archived_at, display_name, date_of_birth, contact, notes FROM clients WHERE id = ?",
                vec![text(client_id)],
            )
            .await?
            .ok_or_else(|| ApiError::not_found("client not found"))?;
        let c = super::keyring::Cells { key: &key, client_id, table: "clients", row: client_id, version: client_row.int(0)? };
        let client = serde_json::json!({
            "id": client_id,
            "display_name": c.open::<String>("display_name", client_row.blob(3)?)?,
            "date_of_birth": c.open_opt::<String>("date_of_birth", client_row.opt_blob(4)?)?,
            "contact": c.open_opt::<String>("contact", client_row.opt_blob(5)?)?,
            "notes": c.open_opt::<String>("notes", client_row.opt_blob(6)?)?,
            "created_at": format_datetime(client_row.int(1)?),
            "archived_at": client_row.opt_int(2)?.map(format_datetime),
        });
        let all_entries = entries::load_all_versions(ctx, &key, client_id).await?;
        let ms = measures::load(ctx, &key, client_id, i64::MIN / 2, i64::MAX / 2).await?;
        let gs = goals::load(ctx, &key, client_id).await?;
        let assigned: Vec<String> = ctx
            .db
            .query("SELECT therapist_id FROM assignments WHERE client_id = ? ORDER BY therapist_id", vec![text(client_id)])
            .await?
            .iter()
            .map(|r| r.text(0))
            .collect::<Result<_, _>>()?;
        let doc = serde_json::json!({
            "format": "progress-export/v1",
            "exported_at": format_datetime(ctx.now),
            "client": client,
            "assigned_therapists": assigned,
            "entries": all_entries,
            "measures": ms,
            "goals": gs,
        });
        Ok(json(200, to_json(&doc)?))
    }
    .await;
    ctx.conclude(&s, result).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EraseRequest {
    /// Must repeat the client id, to guard against erasing the wrong record.
    confirm_client_id: String,
}

/// Destroys the client's key and deletes the encrypted rows. The caller holds
/// the write transaction; `PRAGMA secure_delete` must already be on.
pub async fn erase_in_tx(ctx: &Ctx, client_id: &str) -> Result<(), ApiError> {
    ctx.keys.destroy(&ctx.db, client_id, ctx.now).await?;
    for table in ["entries", "measures", "milestones", "goals", "assignments"] {
        ctx.db.exec(&format!("DELETE FROM {table} WHERE client_id = ?"), vec![text(client_id)]).await?;
    }
    // Break-glass grants stay for review (who opened access, when, for how
    // long); only the sealed reason, client data, goes.
    ctx.db.exec("UPDATE break_glass SET reason = NULL WHERE client_id = ?", vec![text(client_id)]).await?;
    ctx.db
        .exec(
            "UPDATE clients SET display_name = NULL, date_of_birth = NULL, contact = NULL, notes = NULL, erased_at = ? WHERE id = ?",
            vec![Value::Integer(ctx.now), text(client_id)],
        )
        .await?;
    identity::disable_subject_users(&ctx.db, client_id, ctx.now).await
}

/// After erasure: move the freed pages out of the WAL and zero them in the file.
pub async fn scrub_files(ctx: &Ctx) {
    if let Err(e) = ctx.db.exec("PRAGMA wal_checkpoint(TRUNCATE)", vec![]).await {
        eprintln!("checkpoint after erasure failed: {}", e.message);
    }
}

pub async fn erase(ctx: &Ctx, client_id: &str, body: &[u8]) -> Result<Response, ApiError> {
    let s = Subject::new(Action::Erase, "client", client_id, client_id);
    let result = async {
        ctx.authorize(&s).await?;
        let req: EraseRequest = parse_json(body)?;
        if req.confirm_client_id != client_id {
            return Err(ApiError::bad_request("confirm_client_id must repeat the client id of the path"));
        }
        ctx.db.exec("PRAGMA secure_delete = ON", vec![]).await?;
        ctx.write(&s, erase_in_tx(ctx, client_id)).await?;
        scrub_files(ctx).await;
        Ok(json(200, to_json(&serde_json::json!({ "id": client_id, "erased_at": format_datetime(ctx.now), "method": "crypto-shredding: data key destroyed; rows deleted with secure_delete" }))?))
    }
    .await;
    ctx.conclude(&s, result).await
}

/// Applies the retention rules: erases clients archived longer than the record
/// retention, and prunes audit entries older than the audit retention (at least 6 years).
pub async fn run_retention(ctx: &Ctx) -> Result<Response, ApiError> {
    let s = Subject::new(Action::RetentionRun, "retention", "run", "");
    let result = async {
        ctx.authorize(&s).await?;
        let record_cutoff = ctx.now - ctx.config.record_retention_days * DAY;
        let audit_cutoff = ctx.now - ctx.config.audit_retention_days * DAY;
        let due: Vec<String> = ctx
            .db
            .query(
                "SELECT id FROM clients WHERE archived_at IS NOT NULL AND archived_at < ? AND erased_at IS NULL",
                vec![Value::Integer(record_cutoff)],
            )
            .await?
            .iter()
            .map(|r| r.text(0))
            .collect::<Result<_, _>>()?;
        ctx.db.exec("PRAGMA secure_delete = ON", vec![]).await?;
        for id in &due {
            let es = Subject::new(Action::Erase, "client", id, id);
            ctx.write(&es, erase_in_tx(ctx, id)).await?;
        }
        let pruned = ctx
            .write(&s, edge_common::audit_store::prune_before(&ctx.db, &ctx.audit_key, audit_cutoff))
            .await?;
        scrub_files(ctx).await;
        Ok(json(200, to_json(&serde_json::json!({
            "erased_clients": due,
            "audit_entries_pruned": pruned,
            "record_retention_days": ctx.config.record_retention_days,
            "audit_retention_days": ctx.config.audit_retention_days,
        }))?))
    }
    .await;
    ctx.conclude(&s, result).await
}
