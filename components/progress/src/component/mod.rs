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
    let path = req.uri().path().trim_end_matches('/').to_string();
    let query = web::query_params(req.uri());
    let token = web::bearer_token(req.headers());
    let segs: Vec<String> = path.trim_start_matches('/').split('/').map(String::from).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();

    if segs.first() != Some(&"v1") {
        return Err(ApiError::not_found("no such endpoint; see /v1/openapi.json"));
    }
    if method == Method::GET && segs[1..] == ["openapi.json"] {
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

    if segs[1..] == ["auth", "login"] {
        return match method {
            Method::POST => signin::login(&db, &config, &body, now).await,
            _ => Err(method_not_allowed()),
        };
    }
    let token = token.ok_or_else(|| ApiError::unauthorized("sign in first: Authorization: Bearer <token>"))?;
    let principal = identity::authenticate(&db, &token, config.session, now).await?;
    match (&method, &segs[1..]) {
        (&Method::POST, ["auth", "logout"]) => return signin::logout(&db, &config, &token, &principal, now).await,
        (&Method::GET, ["auth", "me"]) => return signin::me(&principal, &config),
        _ => {}
    }
    let ctx = Ctx::new(db, config, principal, now);
    route(&ctx, &method, &segs[1..], &query, &body).await
}

fn method_not_allowed() -> ApiError {
    ApiError::new(405, "method_not_allowed", "method not allowed on this endpoint")
}

async fn route(ctx: &Ctx, method: &Method, segs: &[&str], query: &[(String, String)], body: &[u8]) -> Result<Response, ApiError> {
    let flag = |k: &str| query.iter().any(|(n, v)| n == k && v == "true");
    match (method.clone(), segs) {
        (Method::POST, ["users"]) => admin::create_user(ctx, body).await,
        (Method::GET, ["users"]) => admin::list_users(ctx).await,
        (Method::POST, ["assignments"]) => admin::assign(ctx, body).await,
        (Method::DELETE, ["assignments", t, c]) => admin::unassign(ctx, t, c).await,
        (Method::POST, ["admin", "retention"]) => records::run_retention(ctx).await,

        (Method::POST, ["clients"]) => clients::create(ctx, body).await,
        (Method::GET, ["clients"]) => clients::list(ctx, flag("include_archived")).await,
        (Method::GET, ["clients", c]) => clients::read(ctx, c).await,
        (Method::POST, ["clients", c, "archive"]) => clients::archive(ctx, c).await,

        (Method::POST, ["clients", c, "sessions"]) => entries::create(ctx, c, body).await,
        (Method::GET, ["clients", c, "sessions"]) => {
            let p = insights::period(query, ctx.now + 86_400, None)?;
            entries::list(ctx, c, p.from, p.to).await
        }
        (Method::GET, ["clients", c, "sessions", e]) => entries::read(ctx, c, e).await,
        (Method::POST, ["clients", c, "sessions", e, "amendments"]) => entries::amend(ctx, c, e, body).await,

        (Method::POST, ["clients", c, "measures"]) => measures::create(ctx, c, body).await,
        (Method::GET, ["clients", c, "measures"]) => {
            let p = insights::period(query, ctx.now + 86_400, None)?;
            measures::list(ctx, c, p.from, p.to).await
        }

        (Method::POST, ["clients", c, "goals"]) => goals::create(ctx, c, body).await,
        (Method::GET, ["clients", c, "goals"]) => goals::list(ctx, c).await,
        (Method::PATCH, ["clients", c, "goals", g]) => goals::update(ctx, c, g, body).await,
        (Method::POST, ["clients", c, "goals", g, "milestones"]) => goals::add_milestone(ctx, c, g, body).await,
        (Method::PATCH, ["clients", c, "goals", g, "milestones", m]) => goals::update_milestone(ctx, c, g, m, body).await,

        (Method::GET, ["clients", c, "trends"]) => insights::trend(ctx, c, query).await,
        (Method::GET, ["clients", c, "report"]) => insights::report(ctx, c, query).await,
        (Method::GET, ["clients", c, "history-context"]) => insights::history_context(ctx, c).await,
        (Method::GET, ["clients", c, "export"]) => records::export(ctx, c).await,
        (Method::POST, ["clients", c, "erase"]) => records::erase(ctx, c, body).await,

        (Method::GET, ["audit"]) => oversight::list(ctx, query).await,
        (Method::GET, ["audit", "verify"]) => oversight::verify(ctx).await,
        (Method::POST, ["break-glass"]) => oversight::open(ctx, body).await,
        (Method::GET, ["break-glass"]) => oversight::list_grants(ctx, query).await,
        (Method::POST, ["break-glass", g, "review"]) => oversight::review(ctx, g).await,
        _ => Err(ApiError::not_found("no such endpoint; see /v1/openapi.json")),
    }
}
