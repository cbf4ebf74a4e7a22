//! Derived views: emotional trends, progress reports (JSON and HTML) and the
//! history context for the chat API.

use super::ctx::{Ctx, Subject};
use super::{entries, goals, measures};
use crate::domain::access::Action;
use crate::domain::dates::{Granularity, DAY};
use crate::domain::report::{self, affect_points, ReportInput};
use crate::domain::{history, html, trends};
use edge_common::api::to_json;
use edge_common::web::{self, json, Response};
use edge_common::ApiError;

/// A reporting period from `from` / `to` query parameters (dates or date-times;
/// a date-only `to` includes that whole day).
pub struct Period {
    pub from: i64,
    pub to: i64,
}

pub fn period(query: &[(String, String)], now: i64, default_days: Option<i64>) -> Result<Period, ApiError> {
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let parse = |k: &str, v: &str| {
        crate::domain::dates::parse_timestamp(v)
            .map(|t| if k == "to" && v.trim().len() == 10 { t + DAY - 1 } else { t })
            .ok_or_else(|| ApiError::bad_request(format!("{k} must be a date YYYY-MM-DD or an RFC 3339 date-time")))
    };
    let to = get("to").map(|v| parse("to", v)).transpose()?.unwrap_or(now);
    let from = match get("from") {
        Some(v) => parse("from", v)?,
        None => default_days.map(|d| to - d * DAY).unwrap_or(i64::MIN / 2),
    };
    if from > to {
        return Err(ApiError::bad_request("from must not be after to"));
    }
    Ok(Period { from, to })
}

pub async fn trend(ctx: &Ctx, client_id: &str, query: &[(String, String)]) -> Result<Response, ApiError> {
    let s = Subject::new(Action::TrendRead, "trend", "*", client_id);
    let result = async {
        ctx.authorize(&s).await?;
        let p = period(query, ctx.now, None)?;
        let granularity = match query.iter().find(|(k, _)| k == "granularity") {
            Some((_, g)) => Granularity::parse(g).ok_or_else(|| ApiError::bad_request("granularity must be week, month or year"))?,
            None => Granularity::Month,
        };
        let key = ctx.keys.get(&ctx.db, client_id).await?;
        let briefs = entries::load_briefs(ctx, &key, client_id, p.from, p.to).await?;
        let t = trends::trend(&affect_points(&briefs), granularity);
        Ok(json(200, to_json(&serde_json::json!({ "client_id": client_id, "trend": t, "affect_rule": crate::domain::affect::AFFECT_RULE }))?))
    }
    .await;
    ctx.conclude(&s, result).await
}

pub async fn report(ctx: &Ctx, client_id: &str, query: &[(String, String)]) -> Result<Response, ApiError> {
    let s = Subject::new(Action::ReportRead, "report", "*", client_id);
    let result = async {
        ctx.authorize(&s).await?;
        let p = period(query, ctx.now, Some(365))?;
        let as_html = match query.iter().find(|(k, _)| k == "format").map(|(_, v)| v.as_str()) {
            None | Some("json") => false,
            Some("html") => true,
            Some(_) => return Err(ApiError::bad_request("format must be json or html")),
        };
        let key = ctx.keys.get(&ctx.db, client_id).await?;
        let briefs = entries::load_briefs(ctx, &key, client_id, p.from, p.to).await?;
        let ms = measures::load(ctx, &key, client_id, p.from, p.to).await?;
        let gs = goals::load(ctx, &key, client_id).await?;
        let from = if p.from <= i64::MIN / 2 { briefs.first().map(|b| b.occurred_at).unwrap_or(p.to) } else { p.from };
        let r = report::build(&ReportInput { client_id, from, to: p.to, now: ctx.now, entries: &briefs, measures: &ms, goals: &gs });
        Ok(if as_html { web::html(200, html::render(&r)) } else { json(200, to_json(&r)?) })
    }
    .await;
    ctx.conclude(&s, result).await
}

pub async fn history_context(ctx: &Ctx, client_id: &str) -> Result<Response, ApiError> {
    let s = Subject::new(Action::HistoryRead, "history-context", "*", client_id);
    let result = async {
        ctx.authorize(&s).await?;
        let key = ctx.keys.get(&ctx.db, client_id).await?;
        let briefs = entries::load_briefs(ctx, &key, client_id, i64::MIN / 2, ctx.now + DAY).await?;
        let ms = measures::load(ctx, &key, client_id, i64::MIN / 2, ctx.now + DAY).await?;
        let gs = goals::load(ctx, &key, client_id).await?;
        Ok(json(200, to_json(&history::build(client_id, ctx.now, &briefs, &ms, &gs))?))
    }
    .await;
    ctx.conclude(&s, result).await
}
