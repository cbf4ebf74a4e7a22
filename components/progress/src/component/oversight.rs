//! Audit trail reading and verification; break-glass emergency access.

use super::clients::exists as client_exists;
use super::ctx::{Ctx, Subject};
use super::keyring::Cells;
use crate::domain::access::Action;
use crate::domain::dates::format_datetime;
use edge_common::api::{is_id, parse_json, to_json};
use edge_common::audit_store::{self, ListFilter};
use edge_common::db::{text, Value};
use edge_common::identity::new_id;
use edge_common::web::{json, Response};
use edge_common::ApiError;
use serde::Deserialize;

pub async fn list(ctx: &Ctx, query: &[(String, String)]) -> Result<Response, ApiError> {
    let s = Subject::new(Action::AuditRead, "audit", "*", "");
    let result = async {
        ctx.authorize(&s).await?;
        let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let int = |k: &str, d: i64| -> Result<i64, ApiError> {
            get(k).map(|v| v.parse::<i64>().map_err(|_| ApiError::bad_request(format!("{k} must be an integer")))).transpose().map(|v| v.unwrap_or(d))
        };
        let f = ListFilter {
            after_seq: int("after", 0)?,
            limit: int("limit", 100)?,
            client_id: get("client_id"),
            actor_id: get("actor_id"),
            break_glass_only: get("break_glass").as_deref() == Some("true"),
        };
        let entries = audit_store::list(&ctx.db, &f).await?;
        Ok(json(200, to_json(&serde_json::json!({ "entries": entries }))?))
    }
    .await;
    ctx.conclude(&s, result).await
}

pub async fn verify(ctx: &Ctx) -> Result<Response, ApiError> {
    let s = Subject::new(Action::AuditRead, "audit", "verify", "");
    let result = async {
        ctx.authorize(&s).await?;
        let v = audit_store::verify(&ctx.db, &ctx.audit_key).await?;
        Ok(json(200, to_json(&v)?))
    }
    .await;
    ctx.conclude(&s, result).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenGrant {
    client_id: String,
    reason: String,
}

/// A therapist opens time-limited emergency access to a client not assigned to them.
pub async fn open(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let id = new_id()?;
    let parsed: Result<OpenGrant, ApiError> = parse_json(body);
    let client_id = parsed.as_ref().map(|g| g.client_id.clone()).unwrap_or_default();
    let s = Subject::new(Action::BreakGlassOpen, "break-glass", &id, &client_id);
    let result = async {
        ctx.authorize(&s).await?;
        // Every attempt to open emergency access is flagged for review.
        ctx.flag_break_glass();
        let g = parsed?;
        if !is_id(&g.client_id) {
            return Err(ApiError::bad_request("client_id must be a client id (a UUID)"));
        }
        if g.reason.trim().chars().count() < 10 || g.reason.chars().count() > 1000 {
            return Err(ApiError::bad_request("reason must be 10 to 1000 characters"));
        }
        if !client_exists(&ctx.db, &g.client_id).await? {
            return Err(ApiError::not_found("client not found"));
        }
        let key = ctx.keys.get(&ctx.db, &g.client_id).await?;
        let expires = ctx.now + ctx.config.break_glass_seconds;
        ctx.write(&s, async {
            let c = Cells { key: &key, client_id: &g.client_id, table: "break_glass", row: &id, version: 1 };
            ctx.db
                .exec(
                    "INSERT INTO break_glass (id, user_id, client_id, opened_at, expires_at, reason) VALUES (?, ?, ?, ?, ?, ?)",
                    vec![text(&id), text(&ctx.principal.user_id), text(&g.client_id), Value::Integer(ctx.now), Value::Integer(expires), Value::Blob(c.seal("reason", &g.reason)?)],
                )
                .await
        })
        .await?;
        Ok(json(201, to_json(&serde_json::json!({ "id": id, "client_id": g.client_id, "expires_at": format_datetime(expires), "flagged_for_review": true }))?))
    }
    .await;
    ctx.conclude(&s, result).await
}

/// Break-glass grants for review, newest first, with the number of accesses
/// made under each (the opening itself not counted) and the decrypted
/// justification, which the auditor must be able to review (HIPAA emergency
/// access procedure). Decrypting a reason is a disclosure of that client's
/// data, so one audit entry per client whose reason was decrypted is written
/// (`break-glass.review`, resource `break-glass-reason`) before the answer.
pub async fn list_grants(ctx: &Ctx, query: &[(String, String)]) -> Result<Response, ApiError> {
    let s = Subject::new(Action::BreakGlassReview, "break-glass", "*", "");
    let result = async {
        ctx.authorize(&s).await?;
        let pending_only = query.iter().any(|(k, v)| k == "pending" && v == "true");
        let rows = ctx
            .db
            .query(
                &format!(
                    "SELECT b.id, b.user_id, b.client_id, b.opened_at, b.expires_at, b.reviewed_at, b.reviewed_by, b.reason,
                        (SELECT COUNT(*) FROM audit_log a WHERE a.break_glass = 1 AND a.actor_id = b.user_id AND a.client_id = b.client_id
                            AND a.action <> 'break-glass.open' AND a.at BETWEEN b.opened_at AND b.expires_at)
                     FROM break_glass b {} ORDER BY b.opened_at DESC LIMIT 500",
                    if pending_only { "WHERE b.reviewed_at IS NULL" } else { "" }
                ),
                vec![],
            )
            .await?;
        let mut out = Vec::new();
        let mut disclosed: Vec<Subject> = Vec::new();
        for r in &rows {
            let (id, client_id) = (r.text(0)?, r.text(2)?);
            // The justification is part of what is reviewed.
            let reason: Option<String> = match ctx.keys.get(&ctx.db, &client_id).await {
                Ok(key) => Cells { key: &key, client_id: &client_id, table: "break_glass", row: &id, version: 1 }.open_opt("reason", r.opt_blob(7)?)?,
                Err(_) => None,
            };
            if reason.is_some() && !disclosed.iter().any(|d| d.client_id == client_id) {
                disclosed.push(Subject::new(Action::BreakGlassReview, "break-glass-reason", "*", &client_id));
            }
            out.push(serde_json::json!({
                "id": id,
                "user_id": r.text(1)?,
                "client_id": client_id,
                "opened_at": format_datetime(r.int(3)?),
                "expires_at": format_datetime(r.int(4)?),
                "active": r.int(4)? > ctx.now,
                "reviewed_at": r.opt_int(5)?.map(format_datetime),
                "reviewed_by": r.opt_text(6)?,
                "reason": reason,
                "accesses": r.int(8)?,
            }));
        }
        ctx.record_all(&disclosed, "success").await?;
        Ok(json(200, to_json(&serde_json::json!({ "grants": out }))?))
    }
    .await;
    ctx.conclude(&s, result).await
}

pub async fn review(ctx: &Ctx, grant_id: &str) -> Result<Response, ApiError> {
    let s = Subject::new(Action::BreakGlassReview, "break-glass", grant_id, "");
    let result = async {
        ctx.authorize(&s).await?;
        if !is_id(grant_id) {
            return Err(ApiError::not_found("no unreviewed break-glass grant with that id"));
        }
        ctx.write(&s, async {
            ctx.db
                .exec(
                    "UPDATE break_glass SET reviewed_at = ?, reviewed_by = ? WHERE id = ? AND reviewed_at IS NULL",
                    vec![Value::Integer(ctx.now), text(&ctx.principal.user_id), text(grant_id)],
                )
                .await?;
            if ctx.db.changes().await != 1 {
                return Err(ApiError::not_found("no unreviewed break-glass grant with that id"));
            }
            Ok(())
        })
        .await?;
        Ok(json(200, to_json(&serde_json::json!({ "id": grant_id, "reviewed_at": format_datetime(ctx.now) }))?))
    }
    .await;
    ctx.conclude(&s, result).await
}
