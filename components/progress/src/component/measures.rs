//! PHQ-9 / GAD-7 administrations (append-only) and their change classification.

use super::clients::{check_writable, ensure_writable};
use super::ctx::{Ctx, Subject};
use super::keyring::Cells;
use crate::domain::access::Action;
use crate::domain::entries::{parse_when, MeasureView, NewMeasure};
use crate::domain::measures::{self, Instrument};
use crate::domain::report::measure_sections;
use edge_common::api::{parse_json, to_json};
use edge_common::crypto::SecretKey;
use edge_common::db::{text, Value};
use edge_common::identity::new_id;
use edge_common::web::{json, Response};
use edge_common::ApiError;

/// Measures in [from, to], oldest first.
pub async fn load(ctx: &Ctx, key: &SecretKey, client_id: &str, from: i64, to: i64) -> Result<Vec<MeasureView>, ApiError> {
    let rows = ctx
        .db
        .query(
            "SELECT id, instrument, administered_at, items FROM measures
             WHERE client_id = ? AND administered_at BETWEEN ? AND ? ORDER BY administered_at, id",
            vec![text(client_id), Value::Integer(from), Value::Integer(to)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let id = r.text(0)?;
            let instrument = Instrument::from_code(&r.text(1)?).ok_or_else(|| ApiError::internal("stored instrument is unknown"))?;
            let c = Cells { key, client_id, table: "measures", row: &id, version: 1 };
            let items: Vec<u8> = c.open("items", r.blob(3)?)?;
            Ok(MeasureView::new(id, instrument, r.int(2)?, items))
        })
        .collect()
}

pub async fn create(ctx: &Ctx, client_id: &str, body: &[u8]) -> Result<Response, ApiError> {
    let id = new_id()?;
    let s = Subject::new(Action::MeasureWrite, "measure", &id, client_id);
    let result = async {
        ensure_writable(ctx.authorize(&s).await?)?;
        let input: NewMeasure = parse_json(body)?;
        let instrument = Instrument::parse(&input.instrument)
            .ok_or_else(|| ApiError::bad_request("instrument must be PHQ-9 or GAD-7"))?;
        let items = measures::validate_items(instrument, &input.items).map_err(ApiError::bad_request)?;
        let at = match &input.date {
            Some(d) => parse_when("date", d).map_err(ApiError::bad_request)?,
            None => ctx.now,
        };
        if at > ctx.now + 86_400 {
            return Err(ApiError::bad_request("date must not be in the future"));
        }
        let key = ctx.keys.get(&ctx.db, client_id).await?;
        ctx.write(&s, async {
            check_writable(ctx, client_id).await?;
            let c = Cells { key: &key, client_id, table: "measures", row: &id, version: 1 };
            ctx.db
                .exec(
                    "INSERT INTO measures (id, client_id, instrument, administered_at, recorded_at, author_id, items) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    vec![
                        text(&id),
                        text(client_id),
                        text(instrument.code()),
                        Value::Integer(at),
                        Value::Integer(ctx.now),
                        text(&ctx.principal.user_id),
                        Value::Blob(c.seal("items", &items)?),
                    ],
                )
                .await
        })
        .await?;
        let view = MeasureView::new(id.clone(), instrument, at, items);
        // Change from this client's first administration of the instrument.
        let all = load(ctx, &key, client_id, i64::MIN, i64::MAX).await?;
        let series: Vec<_> = all.into_iter().filter(|m| m.instrument == instrument).collect();
        let change = measure_sections(&series).into_iter().next().and_then(|s| s.change);
        Ok(json(201, to_json(&serde_json::json!({ "measure": view, "change_from_baseline": change }))?))
    }
    .await;
    ctx.conclude(&s, result).await
}

pub async fn list(ctx: &Ctx, client_id: &str, from: i64, to: i64) -> Result<Response, ApiError> {
    let s = Subject::new(Action::MeasureRead, "measure", "*", client_id);
    let result = async {
        ctx.authorize(&s).await?;
        let key = ctx.keys.get(&ctx.db, client_id).await?;
        let list = load(ctx, &key, client_id, from, to).await?;
        let sections = measure_sections(&list);
        Ok(json(200, to_json(&serde_json::json!({ "measures": list, "by_instrument": sections }))?))
    }
    .await;
    ctx.conclude(&s, result).await
}
