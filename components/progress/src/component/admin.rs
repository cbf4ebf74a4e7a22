//! Users and therapist–client assignments (admin only; no PHI).

use super::clients::exists as client_exists;
use super::ctx::{Ctx, Subject};
use crate::domain::access::Action;
use edge_common::api::{is_id, parse_json, to_json};
use edge_common::auth::Role;
use edge_common::db::{text, Value};
use edge_common::identity;
use edge_common::web::{json, Response};
use edge_common::ApiError;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    password: String,
    role: String,
    #[serde(default)]
    client_id: Option<String>,
}

pub async fn create_user(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let s = Subject::new(Action::UserAdmin, "user", "new", "");
    let result = async {
        ctx.authorize(&s).await?;
        let input: NewUser = parse_json(body)?;
        let role = Role::parse(&input.role).ok_or_else(|| ApiError::bad_request("role must be client, therapist, admin or auditor"))?;
        if let Some(c) = &input.client_id {
            if !is_id(c) {
                return Err(ApiError::bad_request("client_id must be a client id (a UUID)"));
            }
            if !client_exists(&ctx.db, c).await? {
                return Err(ApiError::not_found("client not found"));
            }
        }
        let id = identity::new_id()?;
        let s2 = Subject::new(Action::UserAdmin, "user", &id, input.client_id.clone().unwrap_or_default());
        ctx.write(
            &s2,
            identity::create_user(&ctx.db, &id, &ctx.login_key, &input.username, &input.password, role, input.client_id.as_deref(), ctx.now),
        )
        .await?;
        Ok(json(201, to_json(&serde_json::json!({ "id": id, "role": role, "client_id": input.client_id }))?))
    }
    .await;
    ctx.conclude(&s, result).await
}

pub async fn list_users(ctx: &Ctx) -> Result<Response, ApiError> {
    let s = Subject::new(Action::UserAdmin, "user", "*", "");
    let result = async {
        ctx.authorize(&s).await?;
        Ok(json(200, to_json(&serde_json::json!({ "users": identity::list_users(&ctx.db).await? }))?))
    }
    .await;
    ctx.conclude(&s, result).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAssignment {
    therapist_id: String,
    client_id: String,
}

pub async fn assign(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let mut s = Subject::new(Action::AssignmentAdmin, "assignment", "new", "");
    let parsed: Result<NewAssignment, ApiError> = parse_json(body);
    if let Ok(a) = &parsed {
        s = Subject::new(Action::AssignmentAdmin, "assignment", &a.therapist_id, &a.client_id);
    }
    let result = async {
        ctx.authorize(&s).await?;
        let a = parsed?;
        if !is_id(&a.therapist_id) || !is_id(&a.client_id) {
            return Err(ApiError::bad_request("therapist_id and client_id must be ids (UUIDs)"));
        }
        if identity::user_role(&ctx.db, &a.therapist_id).await? != Some(Role::Therapist) {
            return Err(ApiError::bad_request("therapist_id must be an enabled therapist user"));
        }
        if !client_exists(&ctx.db, &a.client_id).await? {
            return Err(ApiError::not_found("client not found"));
        }
        ctx.write(&s, async {
            ctx.db
                .exec(
                    "INSERT INTO assignments (therapist_id, client_id, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    vec![text(&a.therapist_id), text(&a.client_id), Value::Integer(ctx.now)],
                )
                .await
        })
        .await?;
        Ok(json(201, to_json(&serde_json::json!({ "therapist_id": a.therapist_id, "client_id": a.client_id }))?))
    }
    .await;
    ctx.conclude(&s, result).await
}

pub async fn unassign(ctx: &Ctx, therapist_id: &str, client_id: &str) -> Result<Response, ApiError> {
    let s = Subject::new(Action::AssignmentAdmin, "assignment", therapist_id, client_id);
    let result = async {
        ctx.authorize(&s).await?;
        if !is_id(therapist_id) || !is_id(client_id) {
            return Err(ApiError::not_found("assignment not found"));
        }
        ctx.write(&s, async {
            ctx.db
                .exec("DELETE FROM assignments WHERE therapist_id = ? AND client_id = ?", vec![text(therapist_id), text(client_id)])
                .await?;
            if ctx.db.changes().await == 0 {
                return Err(ApiError::not_found("assignment not found"));
            }
            Ok(())
        })
        .await?;
        Ok(json(200, to_json(&serde_json::json!({ "therapist_id": therapist_id, "client_id": client_id, "removed": true }))?))
    }
    .await;
    ctx.conclude(&s, result).await
}
