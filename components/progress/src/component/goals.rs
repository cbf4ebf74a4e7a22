//! Goals (FHIR-like lifecycle and achievement) and their milestones.

use super::clients::{check_writable, ensure_writable};
use super::ctx::{Ctx, Subject};
use super::keyring::Cells;
use crate::domain::access::Action;
use crate::domain::dates::{format_date, format_datetime};
use crate::domain::entries::{parse_when, validate_goal_text, GoalPatch, GoalView, MilestonePatch, MilestoneView, NewGoal, NewMilestone};
use crate::domain::goals::{can_transition, check_state, Achievement, Lifecycle};
use edge_common::api::{is_id, parse_json, to_json};
use edge_common::crypto::SecretKey;
use edge_common::db::{opt_int, text, Value};
use edge_common::identity::new_id;
use edge_common::web::{json, Response};
use edge_common::ApiError;

const COLUMNS: &str = "id, version, lifecycle, achievement, due_at, created_at, updated_at, description, target";

fn parse_due(s: Option<&str>) -> Result<Option<i64>, ApiError> {
    s.map(|d| parse_when("due_date", d).map_err(ApiError::bad_request)).transpose()
}

/// All goals of a client with their milestones.
pub async fn load(ctx: &Ctx, key: &SecretKey, client_id: &str) -> Result<Vec<GoalView>, ApiError> {
    let rows = ctx
        .db
        .query(&format!("SELECT {COLUMNS} FROM goals WHERE client_id = ? ORDER BY created_at, id"), vec![text(client_id)])
        .await?;
    let ms = ctx
        .db
        .query(
            "SELECT id, goal_id, due_at, achieved_at, description FROM milestones WHERE client_id = ? ORDER BY created_at, id",
            vec![text(client_id)],
        )
        .await?;
    let mut milestones: Vec<MilestoneView> = Vec::with_capacity(ms.len());
    for r in &ms {
        let id = r.text(0)?;
        let c = Cells { key, client_id, table: "milestones", row: &id, version: 1 };
        milestones.push(MilestoneView {
            goal_id: r.text(1)?,
            due_date: r.opt_int(2)?.map(format_date),
            achieved_date: r.opt_int(3)?.map(format_date),
            description: c.open("description", r.blob(4)?)?,
            id,
        });
    }
    rows.iter()
        .map(|r| {
            let id = r.text(0)?;
            let c = Cells { key, client_id, table: "goals", row: &id, version: r.int(1)? };
            let bad = || ApiError::internal("stored goal status is unknown");
            Ok(GoalView {
                client_id: client_id.to_string(),
                version: r.int(1)?,
                lifecycle_status: Lifecycle::parse(&r.text(2)?).ok_or_else(bad)?,
                achievement_status: Achievement::parse(&r.text(3)?).ok_or_else(bad)?,
                due_at: r.opt_int(4)?,
                due_date: r.opt_int(4)?.map(format_date),
                created_at: format_datetime(r.int(5)?),
                updated_at: format_datetime(r.int(6)?),
                description: c.open("description", r.blob(7)?)?,
                target: c.open_opt("target", r.opt_blob(8)?)?,
                milestones: milestones.iter().filter(|m| m.goal_id == id).cloned().collect(),
                id,
            })
        })
        .collect()
}

async fn store(ctx: &Ctx, key: &SecretKey, g: &GoalView, expected_version: Option<i64>) -> Result<(), ApiError> {
    let c = Cells { key, client_id: &g.client_id, table: "goals", row: &g.id, version: g.version };
    let params = vec![
        text(g.lifecycle_status.code()),
        text(g.achievement_status.code()),
        opt_int(g.due_at),
        Value::Integer(ctx.now),
        Value::Blob(c.seal("description", &g.description)?),
        c.seal_opt("target", g.target.as_ref())?,
        Value::Integer(g.version),
        text(&g.id),
    ];
    match expected_version {
        None => {
            let mut p = params;
            p.push(text(&g.client_id));
            p.push(Value::Integer(ctx.now));
            ctx.db
                .exec(
                    "INSERT INTO goals (lifecycle, achievement, due_at, updated_at, description, target, version, id, client_id, created_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    p,
                )
                .await
        }
        Some(v) => {
            let mut p = params;
            p.push(Value::Integer(v));
            ctx.db
                .exec(
                    "UPDATE goals SET lifecycle = ?, achievement = ?, due_at = ?, updated_at = ?, description = ?, target = ?, version = ?
                     WHERE id = ? AND version = ?",
                    p,
                )
                .await?;
            if ctx.db.changes().await != 1 {
                return Err(ApiError::conflict("the goal was changed concurrently; reload and retry"));
            }
            Ok(())
        }
    }
}

pub async fn create(ctx: &Ctx, client_id: &str, body: &[u8]) -> Result<Response, ApiError> {
    let id = new_id()?;
    let s = Subject::new(Action::GoalWrite, "goal", &id, client_id);
    let result = async {
        ensure_writable(ctx.authorize(&s).await?)?;
        let input: NewGoal = parse_json(body)?;
        validate_goal_text(&input.description, input.target.as_deref()).map_err(ApiError::bad_request)?;
        let lifecycle = input.lifecycle_status.unwrap_or(Lifecycle::Active);
        if lifecycle.is_closed() {
            return Err(ApiError::bad_request("a new goal must be proposed, active or on-hold"));
        }
        let due_at = parse_due(input.due_date.as_deref())?;
        let key = ctx.keys.get(&ctx.db, client_id).await?;
        let goal = GoalView {
            id: id.clone(),
            client_id: client_id.to_string(),
            version: 1,
            description: input.description,
            target: input.target,
            due_date: due_at.map(format_date),
            due_at,
            lifecycle_status: lifecycle,
            achievement_status: Achievement::InProgress,
            created_at: format_datetime(ctx.now),
            updated_at: format_datetime(ctx.now),
            milestones: vec![],
        };
        ctx.write(&s, async {
            check_writable(ctx, client_id).await?;
            store(ctx, &key, &goal, None).await
        })
        .await?;
        Ok(json(201, to_json(&goal)?))
    }
    .await;
    ctx.conclude(&s, result).await
}

pub async fn update(ctx: &Ctx, client_id: &str, goal_id: &str, body: &[u8]) -> Result<Response, ApiError> {
    let s = Subject::new(Action::GoalWrite, "goal", goal_id, client_id);
    let result = async {
        ensure_writable(ctx.authorize(&s).await?)?;
        if !is_id(goal_id) {
            return Err(ApiError::not_found("goal not found"));
        }
        let patch: GoalPatch = parse_json(body)?;
        let key = ctx.keys.get(&ctx.db, client_id).await?;
        let mut goal = load(ctx, &key, client_id)
            .await?
            .into_iter()
            .find(|g| g.id == goal_id)
            .ok_or_else(|| ApiError::not_found("goal not found"))?;
        let old_version = goal.version;
        if let Some(l) = patch.lifecycle_status {
            if !can_transition(goal.lifecycle_status, l) {
                return Err(ApiError::conflict(format!(
                    "a goal cannot move from {} to {}",
                    goal.lifecycle_status.code(),
                    l.code()
                )));
            }
            goal.lifecycle_status = l;
        }
        if let Some(a) = patch.achievement_status {
            goal.achievement_status = a;
        }
        check_state(goal.lifecycle_status, goal.achievement_status).map_err(ApiError::bad_request)?;
        if let Some(d) = patch.description {
            goal.description = d;
        }
        if patch.target.is_some() {
            goal.target = patch.target;
        }
        if let Some(d) = patch.due_date {
            goal.due_at = parse_due(Some(&d))?;
            goal.due_date = goal.due_at.map(format_date);
        }
        validate_goal_text(&goal.description, goal.target.as_deref()).map_err(ApiError::bad_request)?;
        goal.version += 1;
        goal.updated_at = format_datetime(ctx.now);
        ctx.write(&s, async {
            check_writable(ctx, client_id).await?;
            store(ctx, &key, &goal, Some(old_version)).await
        })
        .await?;
        Ok(json(200, to_json(&goal)?))
    }
    .await;
    ctx.conclude(&s, result).await
}

pub async fn list(ctx: &Ctx, client_id: &str) -> Result<Response, ApiError> {
    let s = Subject::new(Action::GoalRead, "goal", "*", client_id);
    let result = async {
        ctx.authorize(&s).await?;
        let key = ctx.keys.get(&ctx.db, client_id).await?;
        Ok(json(200, to_json(&serde_json::json!({ "goals": load(ctx, &key, client_id).await? }))?))
    }
    .await;
    ctx.conclude(&s, result).await
}

async fn goal_exists(ctx: &Ctx, client_id: &str, goal_id: &str) -> Result<(), ApiError> {
    ctx.db
        .query_one("SELECT 1 FROM goals WHERE id = ? AND client_id = ?", vec![text(goal_id), text(client_id)])
        .await?
        .map(|_| ())
        .ok_or_else(|| ApiError::not_found("goal not found"))
}

pub async fn add_milestone(ctx: &Ctx, client_id: &str, goal_id: &str, body: &[u8]) -> Result<Response, ApiError> {
    let id = new_id()?;
    let s = Subject::new(Action::GoalWrite, "milestone", &id, client_id);
    let result = async {
        ensure_writable(ctx.authorize(&s).await?)?;
        if !is_id(goal_id) {
            return Err(ApiError::not_found("goal not found"));
        }
        let input: NewMilestone = parse_json(body)?;
        validate_goal_text(&input.description, None).map_err(ApiError::bad_request)?;
        let due_at = parse_due(input.due_date.as_deref())?;
        goal_exists(ctx, client_id, goal_id).await?;
        let key = ctx.keys.get(&ctx.db, client_id).await?;
        ctx.write(&s, async {
            check_writable(ctx, client_id).await?;
            let c = Cells { key: &key, client_id, table: "milestones", row: &id, version: 1 };
            ctx.db
                .exec(
                    "INSERT INTO milestones (id, goal_id, client_id, created_at, due_at, description) VALUES (?, ?, ?, ?, ?, ?)",
                    vec![text(&id), text(goal_id), text(client_id), Value::Integer(ctx.now), opt_int(due_at), Value::Blob(c.seal("description", &input.description)?)],
                )
                .await
        })
        .await?;
        let view = MilestoneView { id: id.clone(), goal_id: goal_id.into(), description: input.description, due_date: due_at.map(format_date), achieved_date: None };
        Ok(json(201, to_json(&view)?))
    }
    .await;
    ctx.conclude(&s, result).await
}

pub async fn update_milestone(ctx: &Ctx, client_id: &str, goal_id: &str, milestone_id: &str, body: &[u8]) -> Result<Response, ApiError> {
    let s = Subject::new(Action::GoalWrite, "milestone", milestone_id, client_id);
    let result = async {
        ensure_writable(ctx.authorize(&s).await?)?;
        if !is_id(goal_id) || !is_id(milestone_id) {
            return Err(ApiError::not_found("milestone not found"));
        }
        let patch: MilestonePatch = parse_json(body)?;
        let at = match (&patch.achieved, &patch.date) {
            (true, Some(d)) => Some(parse_when("date", d).map_err(ApiError::bad_request)?),
            (true, None) => Some(ctx.now),
            (false, _) => None,
        };
        ctx.write(&s, async {
            check_writable(ctx, client_id).await?;
            ctx.db
                .exec(
                    "UPDATE milestones SET achieved_at = ? WHERE id = ? AND goal_id = ? AND client_id = ?",
                    vec![opt_int(at), text(milestone_id), text(goal_id), text(client_id)],
                )
                .await?;
            if ctx.db.changes().await != 1 {
                return Err(ApiError::not_found("milestone not found"));
            }
            Ok(())
        })
        .await?;
        Ok(json(200, to_json(&serde_json::json!({ "id": milestone_id, "goal_id": goal_id, "achieved_date": at.map(format_date) }))?))
    }
    .await;
    ctx.conclude(&s, result).await
}
