//! The HTTP component: request entry point and routing.

mod admin;
mod clients;
mod config;
mod ctx;
mod entries;
mod goals;
mod insights;
mod keyring;
mod measures;
mod oversight;
mod records;
mod schema;
mod signin;

use crate::domain::routes::{self, Resolved};
use config::Config;
use ctx::Ctx;
use edge_common::db::Db;
use edge_common::web::{self, Response};
use edge_common::{identity, ApiError};
use http::Method;
use spin_sdk::http::Request;
use spin_sdk::http_service;

const OPENAPI: &str = include_str!("../../openapi.json");

#[http_service]
async fn handle(req: Request) -> Response {
    match serve(req).await {
        Ok(r) => r,
        Err(e) => {
            if e.status >= 500 {
                eprintln!("progress: {} {}", e.status, e.message);
            }
            web::error(&e)
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

async fn serve(req: Request) -> Result<Response, ApiError> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = web::query_params(req.uri());
    let token = web::bearer_token(req.headers());
    // Only the operations of the route table (which openapi.json lists exactly) are served.
    let (op, params) = match routes::resolve(method.as_str(), &path) {
        Resolved::Found(op, params) => (op, params.into_iter().map(String::from).collect::<Vec<_>>()),
        Resolved::MethodNotAllowed => return Err(method_not_allowed()),
        Resolved::NotFound => return Err(ApiError::not_found("no such endpoint; see /v1/openapi.json")),
    };
    let params: Vec<&str> = params.iter().map(String::as_str).collect();

    if op == "/v1/openapi.json" {
        return Ok(web::json(200, OPENAPI.to_string()));
    }
    let body = if matches!(method, Method::POST | Method::PATCH | Method::PUT) {
        web::read_body(req).await?
    } else {
        Vec::new()
    };

    let config = Config::load().await?;
    let db = Db::open("default").await?;
    schema::ensure(&db).await?;
    let now = now();
    if let Some((user, password)) = &config.bootstrap_admin {
        identity::bootstrap_admin(&db, &identity::login_key(&config.master), user, password, now).await?;
    }

    if op == "/v1/auth/login" {
        return signin::login(&db, &config, &body, now).await;
    }
    let token = token.ok_or_else(|| ApiError::unauthorized("sign in first: Authorization: Bearer <token>"))?;
    let principal = identity::authenticate(&db, &token, config.session, now).await?;
    match op {
        "/v1/auth/logout" => return signin::logout(&db, &config, &token, &principal, now).await,
        "/v1/auth/me" => return signin::me(&principal, &config),
        _ => {}
    }
    let ctx = Ctx::new(db, config, principal, now);
    route(&ctx, &method, op, &params, &query, &body).await
}

fn method_not_allowed() -> ApiError {
    ApiError::new(405, "method_not_allowed", "method not allowed on this endpoint")
}

/// One arm per entry of [`routes::ROUTES`] (other than those `serve` answers itself).
async fn route(ctx: &Ctx, method: &Method, op: &str, params: &[&str], query: &[(String, String)], body: &[u8]) -> Result<Response, ApiError> {
    let flag = |k: &str| query.iter().any(|(n, v)| n == k && v == "true");
    match (method.as_str(), op, params) {
        ("POST", "/v1/users", []) => admin::create_user(ctx, body).await,
        ("GET", "/v1/users", []) => admin::list_users(ctx).await,
        ("POST", "/v1/assignments", []) => admin::assign(ctx, body).await,
        ("DELETE", "/v1/assignments/{therapist_id}/{client_id}", [t, c]) => admin::unassign(ctx, t, c).await,
        ("POST", "/v1/admin/retention", []) => records::run_retention(ctx).await,

        ("POST", "/v1/clients", []) => clients::create(ctx, body).await,
        ("GET", "/v1/clients", []) => clients::list(ctx, flag("include_archived")).await,
        ("GET", "/v1/clients/{client_id}", [c]) => clients::read(ctx, c).await,
        ("POST", "/v1/clients/{client_id}/archive", [c]) => clients::archive(ctx, c).await,

        ("POST", "/v1/clients/{client_id}/sessions", [c]) => entries::create(ctx, c, body).await,
        ("GET", "/v1/clients/{client_id}/sessions", [c]) => {
            let p = insights::period(query, ctx.now + 86_400, None)?;
            entries::list(ctx, c, p.from, p.to).await
        }
        ("GET", "/v1/clients/{client_id}/sessions/{entry_id}", [c, e]) => entries::read(ctx, c, e).await,
        ("POST", "/v1/clients/{client_id}/sessions/{entry_id}/amendments", [c, e]) => entries::amend(ctx, c, e, body).await,

        ("POST", "/v1/clients/{client_id}/measures", [c]) => measures::create(ctx, c, body).await,
        ("GET", "/v1/clients/{client_id}/measures", [c]) => {
            let p = insights::period(query, ctx.now + 86_400, None)?;
            measures::list(ctx, c, p.from, p.to).await
        }

        ("POST", "/v1/clients/{client_id}/goals", [c]) => goals::create(ctx, c, body).await,
        ("GET", "/v1/clients/{client_id}/goals", [c]) => goals::list(ctx, c).await,
        ("PATCH", "/v1/clients/{client_id}/goals/{goal_id}", [c, g]) => goals::update(ctx, c, g, body).await,
        ("POST", "/v1/clients/{client_id}/goals/{goal_id}/milestones", [c, g]) => goals::add_milestone(ctx, c, g, body).await,
        ("PATCH", "/v1/clients/{client_id}/goals/{goal_id}/milestones/{milestone_id}", [c, g, m]) => {
            goals::update_milestone(ctx, c, g, m, body).await
        }

        ("GET", "/v1/clients/{client_id}/trends", [c]) => insights::trend(ctx, c, query).await,
        ("GET", "/v1/clients/{client_id}/report", [c]) => insights::report(ctx, c, query).await,
        ("GET", "/v1/clients/{client_id}/history-context", [c]) => insights::history_context(ctx, c).await,
        ("GET", "/v1/clients/{client_id}/export", [c]) => records::export(ctx, c).await,
        ("POST", "/v1/clients/{client_id}/erase", [c]) => records::erase(ctx, c, body).await,

        ("GET", "/v1/audit", []) => oversight::list(ctx, query).await,
        ("GET", "/v1/audit/verify", []) => oversight::verify(ctx).await,
        ("POST", "/v1/break-glass", []) => oversight::open(ctx, body).await,
        ("GET", "/v1/break-glass", []) => oversight::list_grants(ctx, query).await,
        ("POST", "/v1/break-glass/{grant_id}/review", [g]) => oversight::review(ctx, g).await,
        _ => Err(ApiError::internal("route table entry without a handler")),
    }
}
