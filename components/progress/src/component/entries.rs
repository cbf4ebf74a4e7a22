//! Session log and journal: append-only entries; an amendment is a new
//! version that supersedes the old one.

use super::clients::{check_writable, ensure_writable};
use super::ctx::{Ctx, Subject};
use super::keyring::Cells;
use crate::domain::access::Action;
use crate::domain::affect::{self, Sentiment};
use crate::domain::dates::format_datetime;
use crate::domain::entries::{sentiment_text, EntryBrief, EntryContent, EntryKind, EntryView, NewEntry, RiskFlag};
use edge_common::api::{is_id, parse_json, to_json};
use edge_common::auth::Role;
use edge_common::crypto::SecretKey;
use edge_common::db::{opt_text, text, Row, Value};
use edge_common::identity::new_id;
use edge_common::web::{json, Response};
use edge_common::ApiError;

const FULL: &str = "e.id, e.version, e.supersedes, e.kind, e.occurred_at, e.recorded_at, e.author_id, e.summary, e.themes, \
    e.interventions, e.homework, e.mood, e.risk_flags, e.sentiment, e.amendment_reason, \
    (SELECT n.id FROM entries n WHERE n.supersedes = e.id)";
const CURRENT: &str = "NOT EXISTS (SELECT 1 FROM entries n WHERE n.supersedes = e.id)";

fn cells<'a>(key: &'a SecretKey, client_id: &'a str, row: &'a str, version: i64) -> Cells<'a> {
    Cells { key, client_id, table: "entries", row, version }
}

fn full_view(key: &SecretKey, client_id: &str, r: &Row) -> Result<EntryView, ApiError> {
    let id = r.text(0)?;
    let version = r.int(1)?;
    let c = cells(key, client_id, &id, version);
    let mood: Option<u8> = c.open_opt("mood", r.opt_blob(11)?)?;
    let sentiment: Sentiment = c.open("sentiment", r.blob(13)?)?;
    Ok(EntryView {
        client_id: client_id.to_string(),
        version,
        supersedes: r.opt_text(2)?,
        superseded_by: r.opt_text(15)?,
        kind: EntryKind::parse(&r.text(3)?).ok_or_else(|| ApiError::internal("stored entry kind is unknown"))?,
        occurred_at: r.int(4)?,
        date: format_datetime(r.int(4)?),
        recorded_at: format_datetime(r.int(5)?),
        author_id: r.text(6)?,
        summary: c.open("summary", r.blob(7)?)?,
        themes: c.open("themes", r.blob(8)?)?,
        interventions: c.open("interventions", r.blob(9)?)?,
        homework: c.open_opt("homework", r.opt_blob(10)?)?,
        mood,
        risk_flags: c.open("risk_flags", r.blob(12)?)?,
        affect: affect::affect(mood, sentiment.compound),
        sentiment,
        amendment_reason: c.open_opt("amendment_reason", r.opt_blob(14)?)?,
        id,
    })
}

async fn insert(
    ctx: &Ctx,
    key: &SecretKey,
    client_id: &str,
    id: &str,
    version: i64,
    supersedes: Option<&str>,
    kind: EntryKind,
    content: &EntryContent,
) -> Result<EntryView, ApiError> {
    let c = cells(key, client_id, id, version);
    let sentiment = affect::sentiment(&sentiment_text(content));
    ctx.db
        .exec(
            "INSERT INTO entries (id, client_id, version, supersedes, kind, occurred_at, recorded_at, author_id, summary, themes,
                interventions, homework, mood, risk_flags, sentiment, amendment_reason)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                text(id),
                text(client_id),
                Value::Integer(version),
                opt_text(supersedes),
                text(kind.code()),
                Value::Integer(content.occurred_at),
                Value::Integer(ctx.now),
                text(&ctx.principal.user_id),
                Value::Blob(c.seal("summary", &content.summary)?),
                Value::Blob(c.seal("themes", &content.themes)?),
                Value::Blob(c.seal("interventions", &content.interventions)?),
                c.seal_opt("homework", content.homework.as_ref())?,
                c.seal_opt("mood", content.mood.as_ref())?,
                Value::Blob(c.seal("risk_flags", &content.risk_flags)?),
                Value::Blob(c.seal("sentiment", &sentiment)?),
                c.seal_opt("amendment_reason", content.amendment_reason.as_ref())?,
            ],
        )
        .await
        .map_err(|e| if e.status == 409 { ApiError::conflict("this version has already been amended; amend the latest version") } else { e })?;
    Ok(EntryView {
        id: id.to_string(),
        client_id: client_id.to_string(),
        version,
        supersedes: supersedes.map(String::from),
        superseded_by: None,
        kind,
        date: format_datetime(content.occurred_at),
        occurred_at: content.occurred_at,
        recorded_at: format_datetime(ctx.now),
        author_id: ctx.principal.user_id.clone(),
        summary: content.summary.clone(),
        themes: content.themes.clone(),
        interventions: content.interventions.clone(),
        homework: content.homework.clone(),
        mood: content.mood,
        risk_flags: content.risk_flags.clone(),
        affect: affect::affect(content.mood, sentiment.compound),
        sentiment,
        amendment_reason: content.amendment_reason.clone(),
    })
}

pub async fn create(ctx: &Ctx, client_id: &str, body: &[u8]) -> Result<Response, ApiError> {
    let id = new_id()?;
    // The kind decides the action: clients write journal entries, therapists session notes.
    let kind_hint = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).and_then(EntryKind::parse));
    let kind = kind_hint.unwrap_or(if ctx.role() == Role::Client { EntryKind::Journal } else { EntryKind::Session });
    let action = if kind == EntryKind::Journal { Action::JournalWrite } else { Action::SessionWrite };
    let s = Subject::new(action, "entry", &id, client_id);
    let result = async {
        ensure_writable(ctx.authorize(&s).await?)?;
        let input: NewEntry = parse_json(body)?;
        let content = input.validate(ctx.now).map_err(ApiError::bad_request)?;
        if content.amendment_reason.is_some() {
            return Err(ApiError::bad_request("amendment_reason is only accepted when amending an entry"));
        }
        let key = ctx.keys.get(&ctx.db, client_id).await?;
        let view = ctx
            .write(&s, async {
                check_writable(ctx, client_id).await?;
                insert(ctx, &key, client_id, &id, 1, None, kind, &content).await
            })
            .await?;
        Ok(json(201, to_json(&view)?))
    }
    .await;
    ctx.conclude(&s, result).await
}

pub async fn amend(ctx: &Ctx, client_id: &str, entry_id: &str, body: &[u8]) -> Result<Response, ApiError> {
    let id = new_id()?;
    let s = Subject::new(Action::EntryAmend, "entry", &id, client_id);
    let result = async {
        ensure_writable(ctx.authorize(&s).await?)?;
        if !is_id(entry_id) {
            return Err(ApiError::not_found("entry not found"));
        }
        let input: NewEntry = parse_json(body)?;
        let content = input.validate(ctx.now).map_err(ApiError::bad_request)?;
        if content.amendment_reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
            return Err(ApiError::bad_request("amendment_reason is required when amending an entry"));
        }
        let old = ctx
            .db
            .query_one(
                &format!("SELECT e.version, e.kind, {CURRENT} FROM entries e WHERE e.id = ? AND e.client_id = ?"),
                vec![text(entry_id), text(client_id)],
            )
            .await?
            .ok_or_else(|| ApiError::not_found("entry not found"))?;
        if old.int(2)? == 0 {
            return Err(ApiError::conflict("this version has already been amended; amend the latest version"));
        }
        let kind = EntryKind::parse(&old.text(1)?).ok_or_else(|| ApiError::internal("stored entry kind is unknown"))?;
        let key = ctx.keys.get(&ctx.db, client_id).await?;
        let view = ctx
            .write(&s, async {
                check_writable(ctx, client_id).await?;
                insert(ctx, &key, client_id, &id, old.int(0)? + 1, Some(entry_id), kind, &content).await
            })
            .await?;
        Ok(json(201, to_json(&view)?))
    }
    .await;
    ctx.conclude(&s, result).await
}

/// Current versions in [from, to], oldest first.
pub async fn load_current(ctx: &Ctx, key: &SecretKey, client_id: &str, from: i64, to: i64) -> Result<Vec<EntryView>, ApiError> {
    let rows = ctx
        .db
        .query(
            &format!("SELECT {FULL} FROM entries e WHERE e.client_id = ? AND e.occurred_at BETWEEN ? AND ? AND {CURRENT} ORDER BY e.occurred_at, e.id"),
            vec![text(client_id), Value::Integer(from), Value::Integer(to)],
        )
        .await?;
    rows.iter().map(|r| full_view(key, client_id, r)).collect()
}

/// Every version of every entry, for export.
pub async fn load_all_versions(ctx: &Ctx, key: &SecretKey, client_id: &str) -> Result<Vec<EntryView>, ApiError> {
    let rows = ctx
        .db
        .query(&format!("SELECT {FULL} FROM entries e WHERE e.client_id = ? ORDER BY e.occurred_at, e.version"), vec![text(client_id)])
        .await?;
    rows.iter().map(|r| full_view(key, client_id, r)).collect()
}

/// What reports and trends need of the current versions in [from, to]:
/// only four fields are decrypted per entry.
pub async fn load_briefs(ctx: &Ctx, key: &SecretKey, client_id: &str, from: i64, to: i64) -> Result<Vec<EntryBrief>, ApiError> {
    let rows = ctx
        .db
        .query(
            &format!(
                "SELECT e.id, e.version, e.kind, e.occurred_at, e.mood, e.sentiment, e.themes, e.risk_flags FROM entries e
                 WHERE e.client_id = ? AND e.occurred_at BETWEEN ? AND ? AND {CURRENT} ORDER BY e.occurred_at, e.id"
            ),
            vec![text(client_id), Value::Integer(from), Value::Integer(to)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let id = r.text(0)?;
            let c = cells(key, client_id, &id, r.int(1)?);
            let mood: Option<u8> = c.open_opt("mood", r.opt_blob(4)?)?;
            let sentiment: Sentiment = c.open("sentiment", r.blob(5)?)?;
            let risk_flags: Vec<RiskFlag> = c.open("risk_flags", r.blob(7)?)?;
            Ok(EntryBrief {
                kind: EntryKind::parse(&r.text(2)?).ok_or_else(|| ApiError::internal("stored entry kind is unknown"))?,
                occurred_at: r.int(3)?,
                mood,
                sentiment: sentiment.compound,
                affect: affect::affect(mood, sentiment.compound),
                themes: c.open("themes", r.blob(6)?)?,
                risk_flags,
                id,
            })
        })
        .collect()
}

pub async fn list(ctx: &Ctx, client_id: &str, from: i64, to: i64) -> Result<Response, ApiError> {
    let s = Subject::new(Action::EntryRead, "entry", "*", client_id);
    let result = async {
        ctx.authorize(&s).await?;
        let key = ctx.keys.get(&ctx.db, client_id).await?;
        let entries = load_current(ctx, &key, client_id, from, to).await?;
        Ok(json(200, to_json(&serde_json::json!({ "entries": entries }))?))
    }
    .await;
    ctx.conclude(&s, result).await
}

/// One entry with its whole version chain, oldest first.
pub async fn read(ctx: &Ctx, client_id: &str, entry_id: &str) -> Result<Response, ApiError> {
    let s = Subject::new(Action::EntryRead, "entry", entry_id, client_id);
    let result = async {
        ctx.authorize(&s).await?;
        if !is_id(entry_id) {
            return Err(ApiError::not_found("entry not found"));
        }
        let key = ctx.keys.get(&ctx.db, client_id).await?;
        let fetch = |id: String| {
            let key = &key;
            async move {
                let row = ctx
                    .db
                    .query_one(&format!("SELECT {FULL} FROM entries e WHERE e.id = ? AND e.client_id = ?"), vec![text(&id), text(client_id)])
                    .await?;
                row.map(|r| full_view(key, client_id, &r)).transpose()
            }
        };
        let first = fetch(entry_id.to_string()).await?.ok_or_else(|| ApiError::not_found("entry not found"))?;
        let mut chain = vec![first];
        while let Some(prev) = chain[0].supersedes.clone() {
            match fetch(prev).await? {
                Some(v) => chain.insert(0, v),
                None => break,
            }
        }
        while let Some(next) = chain.last().and_then(|v| v.superseded_by.clone()) {
            match fetch(next).await? {
                Some(v) => chain.push(v),
                None => break,
            }
        }
        let current = chain.last().cloned();
        Ok(json(200, to_json(&serde_json::json!({ "current": current, "versions": chain }))?))
    }
    .await;
    ctx.conclude(&s, result).await
}
