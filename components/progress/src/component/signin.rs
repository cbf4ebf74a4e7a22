//! Sign-in, sign-out and "who am I".

use super::config::Config;
use edge_common::api::{parse_json, to_json};
use edge_common::audit_store::{self, AuditEvent};
use edge_common::db::Db;
use edge_common::identity::{self, Principal};
use edge_common::web::{json, Response};
use edge_common::ApiError;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    username: String,
    password: String,
}

fn event(actor: &str, role: &str, action: &str, outcome: &str) -> AuditEvent {
    AuditEvent {
        actor_id: actor.into(),
        role: role.into(),
        action: action.into(),
        resource_type: "auth-session".into(),
        resource_id: String::new(),
        client_id: String::new(),
        outcome: outcome.into(),
        break_glass: false,
    }
}

pub async fn login(db: &Db, config: &Config, body: &[u8], now: i64) -> Result<Response, ApiError> {
    let creds: Credentials = parse_json(body)?;
    let audit_key = audit_store::chain_key(&config.master);
    match identity::sign_in(db, &identity::login_key(&config.master), &creds.username, &creds.password, now).await {
        Ok((token, p)) => {
            audit_store::record(db, &audit_key, event(&p.user_id, p.role.as_str(), "auth.login", "success"), now).await?;
            Ok(json(
                200,
                to_json(&serde_json::json!({
                    "token": token,
                    "user_id": p.user_id,
                    "role": p.role,
                    "client_id": p.subject_id,
                    "idle_timeout_seconds": config.session.idle_timeout_secs,
                }))?,
            ))
        }
        Err(e) => {
            audit_store::record(db, &audit_key, event("anonymous", "none", "auth.login", e.outcome()), now).await?;
            Err(e)
        }
    }
}

pub async fn logout(db: &Db, config: &Config, token: &str, p: &Principal, now: i64) -> Result<Response, ApiError> {
    identity::sign_out(db, token).await?;
    audit_store::record(db, &audit_store::chain_key(&config.master), event(&p.user_id, p.role.as_str(), "auth.logout", "success"), now).await?;
    Ok(json(200, to_json(&serde_json::json!({ "signed_out": true }))?))
}

pub fn me(p: &Principal, config: &Config) -> Result<Response, ApiError> {
    Ok(json(
        200,
        to_json(&serde_json::json!({
            "user_id": p.user_id,
            "role": p.role,
            "client_id": p.subject_id,
            "idle_timeout_seconds": config.session.idle_timeout_secs,
        }))?,
    ))
}
