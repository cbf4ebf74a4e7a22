//! End-to-end tests of the progress component (issue #8) over a real
//! edge-host: every endpoint, the role matrix, PHI leak scan, erasure by
//! crypto-shredding, audit tamper detection, bad input, automatic logoff and a
//! simulated 10-year history with timings.
//!
//! Run: `cargo test -p e2e-tests --test progress -- --nocapture` (the timing
//! figures are printed).

use e2e_tests::{AppDir, EdgeHost, cargo, target_dir, workspace_root};
use edge_common::crypto::{self, FieldPlace, SecretKey};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const MASTER_KEY_HEX: &str = "4f1c2a7b9e0d3c5a6b8f7e1d2c3b4a5968778695a4b3c2d1e0f1a2b3c4d5e6f7";
const ADMIN_PASSWORD: &str = "bootstrap-admin-pass-1";
const PASSWORD: &str = "correct-horse-battery-1";

// ----------------------------------------------------------------- harness

fn progress_wasm() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        let status = cargo()
            .args(["build", "--release", "--target", "wasm32-wasip2", "-p", "progress"])
            .status()
            .expect("running cargo");
        assert!(status.success(), "building the progress component failed");
        target_dir().join("wasm32-wasip2/release/progress.wasm")
    })
}

/// The root spin.toml with only the progress component, its source made absolute.
fn write_manifest(app: &AppDir) {
    let text = std::fs::read_to_string(workspace_root().join("spin.toml")).unwrap();
    let mut manifest: toml::Table = toml::from_str(&text).unwrap();
    let components = manifest["component"].as_table_mut().unwrap();
    components.retain(|k, _| k == "progress");
    components["progress"]
        .as_table_mut()
        .unwrap()
        .insert("source".into(), progress_wasm().display().to_string().into());
    manifest["trigger"]["http"]
        .as_array_mut()
        .unwrap()
        .retain(|t| t["component"].as_str() == Some("progress"));
    std::fs::write(&app.manifest, toml::to_string(&manifest).unwrap()).unwrap();
}

struct App {
    host: EdgeHost,
    app: AppDir,
}

fn start(extra_env: &[(&str, &str)]) -> App {
    let app = AppDir::empty().unwrap();
    write_manifest(&app);
    let mut cmd = app.command();
    cmd.env("SPIN_VARIABLE_PHI_MASTER_KEY", MASTER_KEY_HEX)
        .env("SPIN_VARIABLE_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let host = cmd.spawn().unwrap();
    App { host, app }
}

struct Resp {
    status: u16,
    body: Value,
    text: String,
    elapsed: Duration,
}

impl App {
    fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<&Value>) -> Resp {
        let mut rb = self.host.client.request(method.clone(), self.host.url(path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let t0 = Instant::now();
        let resp = rb.send().unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        let elapsed = t0.elapsed();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, body, text, elapsed }
    }
    fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, Some(token), None)
    }
    fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(token), Some(&body))
    }
    fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, Some(token), Some(&body))
    }
    fn raw_post(&self, path: &str, token: &str, body: &str) -> Resp {
        let resp = self
            .host
            .client
            .post(self.host.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        Resp { status, body: serde_json::from_str(&text).unwrap_or(Value::Null), text, elapsed: Duration::ZERO }
    }

    fn login(&self, username: &str, password: &str) -> String {
        let r = self.call(Method::POST, "/v1/auth/login", None, Some(&json!({"username": username, "password": password})));
        assert_eq!(r.status, 200, "login {username}: {}", r.text);
        r.body["token"].as_str().unwrap().to_string()
    }

    fn admin(&self) -> String {
        self.login("admin", ADMIN_PASSWORD)
    }

    /// Creates a user and signs them in: (user id, token).
    fn user(&self, admin: &str, username: &str, role: &str, client_id: Option<&str>) -> (String, String) {
        let mut body = json!({"username": username, "password": PASSWORD, "role": role});
        if let Some(c) = client_id {
            body["client_id"] = json!(c);
        }
        let r = self.post("/v1/users", admin, body);
        assert_eq!(r.status, 201, "create user: {}", r.text);
        (r.body["id"].as_str().unwrap().to_string(), self.login(username, PASSWORD))
    }

    fn new_client(&self, therapist: &str, name: &str) -> String {
        let r = self.post("/v1/clients", therapist, json!({"display_name": name, "date_of_birth": "1985-04-12"}));
        assert_eq!(r.status, 201, "create client: {}", r.text);
        r.body["id"].as_str().unwrap().to_string()
    }

    fn db_path(&self) -> PathBuf {
        self.app.data_dir.join("sqlite_db.db")
    }
}

fn expect(r: &Resp, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text);
}

fn phq9(items: [u8; 9], date: &str) -> Value {
    json!({"instrument": "PHQ-9", "items": items, "date": date})
}

fn gad7(items: [u8; 7], date: &str) -> Value {
    json!({"instrument": "GAD-7", "items": items, "date": date})
}

/// Spreads `total` over `n` items of 0..=3.
fn items_for(total: u32, n: usize) -> Vec<u8> {
    let mut left = total;
    (0..n)
        .map(|_| {
            let v = left.min(3);
            left -= v;
            v as u8
        })
        .collect()
}

/// Direct SQL on the app's libsql file (a second process, as an attacker or an inspector would).
fn sql<T>(db: &Path, f: impl AsyncFnOnce(&libsql::Connection) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let database = libsql::Builder::new_local(db).build().await.unwrap();
        let conn = database.connect().unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        f(&conn).await
    })
}

async fn blobs(conn: &libsql::Connection, query: &str, param: &str) -> Vec<Vec<u8>> {
    let mut rows = conn.query(query, libsql::params![param]).await.unwrap();
    let mut out = Vec::new();
    while let Some(r) = rows.next().await.unwrap() {
        if let Ok(libsql::Value::Blob(b)) = r.get_value(0) {
            out.push(b);
        }
    }
    out
}

/// Every file under the data dir (database, WAL, journal, key-value store).
fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(data_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn count_hits(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).filter(|w| *w == needle).count()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

// ------------------------------------------------------------------ tests

#[test]
fn every_endpoint_end_to_end() {
    let a = start(&[]);
    let r = a.call(Method::GET, "/v1/openapi.json", None, None);
    expect(&r, 200, "openapi");
    assert_eq!(r.body["openapi"], "3.1.0");
    assert!(r.body["paths"]["/v1/clients/{client_id}/report"].is_object());

    let admin = a.admin();
    let me = a.get("/v1/auth/me", &admin);
    expect(&me, 200, "me");
    assert_eq!(me.body["role"], "admin");
    let (t1_id, t1) = a.user(&admin, "therapist.one", "therapist", None);
    let (t2_id, t2) = a.user(&admin, "therapist.two", "therapist", None);
    let (_, auditor) = a.user(&admin, "auditor.one", "auditor", None);
    let users = a.get("/v1/users", &admin);
    expect(&users, 200, "list users");
    assert_eq!(users.body["users"].as_array().unwrap().len(), 4);

    // Clients
    let c = a.new_client(&t1, "Alex Example");
    let r = a.get(&format!("/v1/clients/{c}"), &t1);
    expect(&r, 200, "read client");
    assert_eq!(r.body["display_name"], "Alex Example");
    assert_eq!(r.body["date_of_birth"], "1985-04-12");
    let r = a.get("/v1/clients", &t1);
    expect(&r, 200, "caseload");
    assert_eq!(r.body["clients"].as_array().unwrap().len(), 1);
    let r = a.get("/v1/clients", &t2);
    assert_eq!(r.body["clients"].as_array().unwrap().len(), 0, "t2 has no caseload yet");
    let r = a.get("/v1/clients", &admin);
    expect(&r, 200, "admin client list");
    assert!(r.body["clients"][0].get("display_name").is_none(), "admin sees no PHI: {}", r.text);

    // Assignments
    expect(&a.get(&format!("/v1/clients/{c}"), &t2), 403, "t2 unassigned");
    expect(&a.post("/v1/assignments", &admin, json!({"therapist_id": t2_id, "client_id": c})), 201, "assign t2");
    expect(&a.get(&format!("/v1/clients/{c}"), &t2), 200, "t2 assigned");
    expect(&a.call(Method::DELETE, &format!("/v1/assignments/{t2_id}/{c}"), Some(&admin), None), 200, "unassign");
    expect(&a.get(&format!("/v1/clients/{c}"), &t2), 403, "t2 unassigned again");

    // Client user and journal
    let (_, client) = a.user(&admin, "alex@example.org", "client", Some(&c));
    let r = a.post(&format!("/v1/clients/{c}/sessions"), &client, json!({"date": "2024-03-02", "summary": "I slept better and felt calmer", "mood": 6}));
    expect(&r, 201, "journal entry");
    assert_eq!(r.body["kind"], "journal");
    expect(&a.post(&format!("/v1/clients/{c}/sessions"), &client, json!({"kind": "session", "date": "2024-03-02", "summary": "x"})), 403, "client cannot write session notes");

    // Sessions and amendments
    let r = a.post(
        &format!("/v1/clients/{c}/sessions"),
        &t1,
        json!({"date": "2024-03-01", "summary": "Discussed low mood and poor sleep; hopeless at times", "themes": ["sleep", "mood"],
               "interventions": ["behavioural activation"], "homework": "activity diary", "mood": 3, "risk_flags": ["self-harm"]}),
    );
    expect(&r, 201, "session note");
    let e1 = r.body["id"].as_str().unwrap().to_string();
    assert!(r.body["sentiment"]["compound"].as_f64().unwrap() < 0.0);
    expect(&a.post(&format!("/v1/clients/{c}/sessions/{e1}/amendments"), &t1, json!({"date": "2024-03-01", "summary": "y"})), 400, "amend without reason");
    let r = a.post(
        &format!("/v1/clients/{c}/sessions/{e1}/amendments"),
        &t1,
        json!({"date": "2024-03-01", "summary": "Discussed low mood and poor sleep", "themes": ["sleep", "mood"], "mood": 3, "amendment_reason": "corrected summary"}),
    );
    expect(&r, 201, "amend");
    let e2 = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.body["supersedes"], e1.as_str());
    expect(&a.post(&format!("/v1/clients/{c}/sessions/{e1}/amendments"), &t1, json!({"date": "2024-03-01", "summary": "z", "amendment_reason": "again"})), 409, "amend superseded version");
    let r = a.get(&format!("/v1/clients/{c}/sessions/{e1}"), &t1);
    expect(&r, 200, "entry chain");
    assert_eq!(r.body["versions"].as_array().unwrap().len(), 2);
    assert_eq!(r.body["current"]["id"], e2.as_str());
    let r = a.get(&format!("/v1/clients/{c}/sessions?from=2024-01-01&to=2024-12-31"), &t1);
    expect(&r, 200, "list sessions");
    let ids: Vec<&str> = r.body["entries"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "current versions only: {ids:?}");
    assert!(ids.contains(&e2.as_str()) && !ids.contains(&e1.as_str()));
    expect(&a.get(&format!("/v1/clients/{c}/sessions"), &client), 200, "client reads own journal");

    // Measures
    let r = a.post(&format!("/v1/clients/{c}/measures"), &t1, phq9([3, 3, 2, 2, 2, 2, 2, 1, 1], "2024-01-10"));
    expect(&r, 201, "phq9");
    assert_eq!(r.body["measure"]["total"], 18);
    assert_eq!(r.body["measure"]["severity"], "moderately-severe");
    assert_eq!(r.body["measure"]["loinc"], "44261-6");
    let r = a.post(&format!("/v1/clients/{c}/measures"), &client, phq9([1, 1, 1, 1, 0, 0, 0, 0, 0], "2024-04-10"));
    expect(&r, 201, "client self-report phq9");
    assert_eq!(r.body["change_from_baseline"]["reliable_change"], "reliable-improvement");
    assert_eq!(r.body["change_from_baseline"]["remission"], true);
    assert_eq!(r.body["change_from_baseline"]["recovery"], true);
    expect(&a.post(&format!("/v1/clients/{c}/measures"), &t1, gad7([2, 2, 2, 2, 1, 1, 1], "2024-01-10")), 201, "gad7");
    let r = a.post(&format!("/v1/clients/{c}/measures"), &t1, gad7([3, 3, 2, 2, 2, 2, 1], "2024-04-10"));
    assert_eq!(r.body["measure"]["loinc"], "70274-6");
    assert_eq!(r.body["change_from_baseline"]["reliable_change"], "reliable-deterioration");
    let r = a.get(&format!("/v1/clients/{c}/measures"), &t1);
    expect(&r, 200, "list measures");
    assert_eq!(r.body["measures"].as_array().unwrap().len(), 4);
    assert_eq!(r.body["by_instrument"].as_array().unwrap().len(), 2);

    // Goals and milestones
    let r = a.post(&format!("/v1/clients/{c}/goals"), &t1, json!({"description": "Sleep 7 hours most nights", "target": "5 of 7 nights", "due_date": "2024-02-01", "lifecycle_status": "proposed"}));
    expect(&r, 201, "goal");
    let g = r.body["id"].as_str().unwrap().to_string();
    expect(&a.patch(&format!("/v1/clients/{c}/goals/{g}"), &t1, json!({"lifecycle_status": "completed", "achievement_status": "achieved"})), 409, "proposed -> completed");
    let r = a.patch(&format!("/v1/clients/{c}/goals/{g}"), &t1, json!({"lifecycle_status": "active", "achievement_status": "improving"}));
    expect(&r, 200, "activate goal");
    assert_eq!(r.body["version"], 2);
    let r = a.post(&format!("/v1/clients/{c}/goals/{g}/milestones"), &t1, json!({"description": "Keep a sleep diary", "due_date": "2024-01-20"}));
    expect(&r, 201, "milestone");
    let m = r.body["id"].as_str().unwrap().to_string();
    let r = a.patch(&format!("/v1/clients/{c}/goals/{g}/milestones/{m}"), &t1, json!({"achieved": true, "date": "2024-01-18"}));
    expect(&r, 200, "milestone achieved");
    let r = a.get(&format!("/v1/clients/{c}/goals"), &client);
    expect(&r, 200, "client reads goals");
    assert_eq!(r.body["goals"][0]["milestones"][0]["achieved_date"], "2024-01-18");
    assert_eq!(r.body["goals"][0]["lifecycle_status"], "active");

    // Trends, report, history context, export
    let r = a.get(&format!("/v1/clients/{c}/trends?granularity=week&from=2024-01-01&to=2024-12-31"), &t1);
    expect(&r, 200, "trends");
    assert_eq!(r.body["trend"]["buckets"].as_array().unwrap().len(), 1, "both entries are in 2024-W09: {}", r.text);
    let r = a.get(&format!("/v1/clients/{c}/report?from=2024-01-01&to=2024-06-30"), &t1);
    expect(&r, 200, "report json");
    assert_eq!(r.body["sessions"]["total"], 2);
    assert_eq!(r.body["trajectory"]["overall"], "worsening", "GAD-7 reliably deteriorated: {}", r.body["trajectory"]);
    assert!(r.body["trajectory"]["rule"].as_str().unwrap().contains("reliably deteriorated"));
    let codes: Vec<&str> = r.body["recommendations"].as_array().unwrap().iter().map(|x| x["code"].as_str().unwrap()).collect();
    assert!(codes.contains(&"review-deterioration") && codes.contains(&"review-overdue-goals"), "{codes:?}");
    for rec in r.body["recommendations"].as_array().unwrap() {
        assert!(!rec["evidence"].as_array().unwrap().is_empty(), "every recommendation cites data: {rec}");
    }
    let r = a.get(&format!("/v1/clients/{c}/report?from=2024-01-01&to=2024-06-30&format=html"), &t1);
    expect(&r, 200, "report html");
    assert!(r.text.starts_with("<!doctype html>") && r.text.matches("<svg").count() >= 4, "HTML with SVG charts");
    assert!(r.text.contains(r#"aria-label="mean self-reported mood (0-10) per period""#), "the mood chart plots self-reported mood");
    let r = a.get(&format!("/v1/clients/{c}/history-context"), &t1);
    expect(&r, 200, "history context");
    assert_eq!(r.body["session_count"], 2);
    assert!(r.body["summary"].as_str().unwrap().contains("PHQ-9"));
    let r = a.get(&format!("/v1/clients/{c}/export"), &client);
    expect(&r, 200, "export");
    assert_eq!(r.body["entries"].as_array().unwrap().len(), 3, "all versions exported");
    assert_eq!(r.body["client"]["display_name"], "Alex Example");

    // Break-glass
    expect(&a.post("/v1/break-glass", &t2, json!({"client_id": c, "reason": "short"})), 400, "reason too short");
    let r = a.post("/v1/break-glass", &t2, json!({"client_id": c, "reason": "Client in crisis, assigned therapist unreachable"}));
    expect(&r, 201, "break-glass");
    let grant = r.body["id"].as_str().unwrap().to_string();
    expect(&a.get(&format!("/v1/clients/{c}/report"), &t2), 200, "break-glass read");
    let r = a.get("/v1/audit?break_glass=true", &auditor);
    expect(&r, 200, "audit break-glass filter");
    assert!(r.body["entries"].as_array().unwrap().iter().any(|e| e["action"] == "report.read" && e["actor_id"] == t2_id.as_str()));
    let r = a.get("/v1/break-glass?pending=true", &auditor);
    expect(&r, 200, "grants");
    assert_eq!(r.body["grants"][0]["accesses"].as_i64().unwrap() >= 1, true);
    expect(&a.post(&format!("/v1/break-glass/{grant}/review"), &auditor, json!({})), 200, "review");
    expect(&a.post(&format!("/v1/break-glass/{grant}/review"), &auditor, json!({})), 404, "already reviewed");

    // Archive, retention, erasure
    expect(&a.post(&format!("/v1/clients/{c}/archive"), &t1, json!({})), 200, "archive");
    expect(&a.post(&format!("/v1/clients/{c}/measures"), &t1, phq9([0; 9], "2024-05-01")), 409, "archived is read-only");
    let r = a.post("/v1/admin/retention", &admin, json!({}));
    expect(&r, 200, "retention");
    assert_eq!(r.body["erased_clients"].as_array().unwrap().len(), 0, "archived today: kept");
    assert_eq!(r.body["audit_entries_pruned"], 0);
    expect(&a.post(&format!("/v1/clients/{c}/erase"), &admin, json!({"confirm_client_id": "other"})), 400, "erase confirm");
    expect(&a.post(&format!("/v1/clients/{c}/erase"), &admin, json!({"confirm_client_id": c})), 200, "erase");
    expect(&a.get(&format!("/v1/clients/{c}"), &t1), 410, "erased");

    // Audit
    let r = a.get("/v1/audit?limit=1000", &auditor);
    expect(&r, 200, "audit list");
    let entries = r.body["entries"].as_array().unwrap();
    assert!(entries.iter().any(|e| e["action"] == "client.erase" && e["outcome"] == "success"));
    assert!(entries.iter().any(|e| e["action"] == "client.read" && e["outcome"] == "denied" && e["actor_id"] == t2_id.as_str()));
    let r = a.get("/v1/audit/verify", &auditor);
    expect(&r, 200, "verify");
    assert_eq!(r.body["ok"], true, "{}", r.text);
    let _ = t1_id;

    expect(&a.post("/v1/auth/logout", &t1, json!({})), 200, "logout");
    expect(&a.get("/v1/clients", &t1), 401, "token ended");
}

/// The operations the served OpenAPI document lists, as "METHOD /template".
fn documented_operations(a: &App) -> std::collections::BTreeSet<String> {
    let r = a.call(Method::GET, "/v1/openapi.json", None, None);
    expect(&r, 200, "openapi");
    let mut ops = std::collections::BTreeSet::new();
    for (path, item) in r.body["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            ops.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    ops
}

/// Every role against every endpoint of the OpenAPI document: allowed (the
/// exact 2xx) or denied (exactly 403), and without a token exactly 401.
#[test]
fn role_matrix() {
    let a = start(&[]);
    let admin = a.admin();
    let (t_id, therapist) = a.user(&admin, "t.assigned", "therapist", None);
    let (_, stranger) = a.user(&admin, "t.other", "therapist", None);
    let (_, auditor) = a.user(&admin, "aud", "auditor", None);
    let own = a.new_client(&therapist, "Own Client");
    let (_, client) = a.user(&admin, "client.own", "client", Some(&own));
    let other = a.new_client(&therapist, "Other Client");
    let entry = a.post(&format!("/v1/clients/{own}/sessions"), &therapist, json!({"date": "2024-01-01", "summary": "s", "mood": 5}));
    let goal = a.post(&format!("/v1/clients/{own}/goals"), &therapist, json!({"description": "g"}));
    let ms = a.post(&format!("/v1/clients/{own}/goals/{}/milestones", goal.body["id"].as_str().unwrap()), &therapist, json!({"description": "m"}));
    let (entry, goal, ms) = (
        entry.body["id"].as_str().unwrap().to_string(),
        goal.body["id"].as_str().unwrap().to_string(),
        ms.body["id"].as_str().unwrap().to_string(),
    );

    let roles = [("admin", &admin), ("therapist", &therapist), ("stranger", &stranger), ("client", &client), ("auditor", &auditor)];
    let mut covered = std::collections::BTreeSet::new();
    // (operation template, method, path, body, status when allowed, roles allowed) on the therapist's assigned client `own`.
    type Case = (&'static str, Method, String, Value, u16, &'static [&'static str]);
    let c = own.clone();
    let all: &[&str] = &["admin", "therapist", "stranger", "client", "auditor"];
    let cases = |tag: &str| -> Vec<Case> {
        vec![
            ("/v1/openapi.json", Method::GET, "/v1/openapi.json".into(), Value::Null, 200, all),
            ("/v1/auth/me", Method::GET, "/v1/auth/me".into(), Value::Null, 200, all),
            ("/v1/users", Method::POST, "/v1/users".into(), json!({"username": format!("u-{tag}"), "password": PASSWORD, "role": "auditor"}), 201, &["admin"]),
            ("/v1/users", Method::GET, "/v1/users".into(), Value::Null, 200, &["admin"]),
            ("/v1/assignments", Method::POST, "/v1/assignments".into(), json!({"therapist_id": t_id, "client_id": other}), 201, &["admin"]),
            ("/v1/admin/retention", Method::POST, "/v1/admin/retention".into(), json!({}), 200, &["admin"]),
            ("/v1/clients", Method::POST, "/v1/clients".into(), json!({"display_name": "N"}), 201, &["therapist", "stranger"]),
            ("/v1/clients", Method::GET, "/v1/clients".into(), Value::Null, 200, &["admin", "therapist", "stranger"]),
            ("/v1/clients/{client_id}", Method::GET, format!("/v1/clients/{c}"), Value::Null, 200, &["therapist", "client"]),
            ("/v1/clients/{client_id}/sessions", Method::POST, format!("/v1/clients/{c}/sessions"), json!({"kind": "session", "date": "2024-01-02", "summary": "s"}), 201, &["therapist"]),
            ("/v1/clients/{client_id}/sessions", Method::POST, format!("/v1/clients/{c}/sessions"), json!({"kind": "journal", "date": "2024-01-02", "summary": "j"}), 201, &["client"]),
            ("/v1/clients/{client_id}/sessions", Method::GET, format!("/v1/clients/{c}/sessions"), Value::Null, 200, &["therapist", "client"]),
            ("/v1/clients/{client_id}/sessions/{entry_id}", Method::GET, format!("/v1/clients/{c}/sessions/{entry}"), Value::Null, 200, &["therapist", "client"]),
            ("/v1/clients/{client_id}/measures", Method::POST, format!("/v1/clients/{c}/measures"), phq9([1; 9], "2024-01-03"), 201, &["therapist", "client"]),
            ("/v1/clients/{client_id}/measures", Method::GET, format!("/v1/clients/{c}/measures"), Value::Null, 200, &["therapist", "client"]),
            ("/v1/clients/{client_id}/goals", Method::POST, format!("/v1/clients/{c}/goals"), json!({"description": "g2"}), 201, &["therapist"]),
            ("/v1/clients/{client_id}/goals", Method::GET, format!("/v1/clients/{c}/goals"), Value::Null, 200, &["therapist", "client"]),
            ("/v1/clients/{client_id}/goals/{goal_id}", Method::PATCH, format!("/v1/clients/{c}/goals/{goal}"), json!({"achievement_status": "improving"}), 200, &["therapist"]),
            ("/v1/clients/{client_id}/goals/{goal_id}/milestones", Method::POST, format!("/v1/clients/{c}/goals/{goal}/milestones"), json!({"description": "m2"}), 201, &["therapist"]),
            ("/v1/clients/{client_id}/goals/{goal_id}/milestones/{milestone_id}", Method::PATCH, format!("/v1/clients/{c}/goals/{goal}/milestones/{ms}"), json!({"achieved": true}), 200, &["therapist"]),
            ("/v1/clients/{client_id}/trends", Method::GET, format!("/v1/clients/{c}/trends"), Value::Null, 200, &["therapist", "client"]),
            ("/v1/clients/{client_id}/report", Method::GET, format!("/v1/clients/{c}/report"), Value::Null, 200, &["therapist", "client"]),
            ("/v1/clients/{client_id}/report", Method::GET, format!("/v1/clients/{c}/report?format=html"), Value::Null, 200, &["therapist", "client"]),
            ("/v1/clients/{client_id}/history-context", Method::GET, format!("/v1/clients/{c}/history-context"), Value::Null, 200, &["therapist", "client"]),
            ("/v1/clients/{client_id}/export", Method::GET, format!("/v1/clients/{c}/export"), Value::Null, 200, &["therapist", "client"]),
            ("/v1/audit", Method::GET, "/v1/audit".into(), Value::Null, 200, &["auditor"]),
            ("/v1/audit/verify", Method::GET, "/v1/audit/verify".into(), Value::Null, 200, &["auditor"]),
            ("/v1/break-glass", Method::GET, "/v1/break-glass".into(), Value::Null, 200, &["auditor"]),
        ]
    };
    let mut checked = 0;
    let check = |role: &str, token: Option<&str>, method: &Method, path: &str, body: &Value, ok: u16, allowed: &[&str]| {
        let r = a.call(method.clone(), path, token, (!body.is_null()).then_some(body));
        if path == "/v1/openapi.json" {
            assert_eq!(r.status, 200, "{role} {method} {path}: {}", r.text);
        } else if token.is_none() {
            assert_eq!(r.status, 401, "{method} {path} without a token: {}", r.text);
        } else if allowed.contains(&role) {
            assert_eq!(r.status, ok, "{role} {method} {path} should be allowed: {}", r.text);
        } else {
            assert_eq!(r.status, 403, "{role} {method} {path} should be denied: {}", r.text);
        }
    };
    for (template, method, path, body, _, _) in cases("anon") {
        check("anonymous", None, &method, &path, &body, 0, &[]);
        covered.insert(format!("{method} {template}"));
        checked += 1;
    }
    for (role, token) in roles {
        for (_, method, path, body, ok, allowed) in cases(role) {
            check(role, Some(token), &method, &path, &body, ok, allowed);
            checked += 1;
        }
    }
    // Amendment (needs a fresh latest version each time), archive and erasure (destructive), break-glass, its review and unassign.
    for (role, token) in roles.iter().copied().map(|(r, t)| (r, Some(t.as_str()))).chain([("anonymous", None)]) {
        let latest = a.get(&format!("/v1/clients/{own}/sessions/{entry}"), &therapist).body["current"]["id"].as_str().unwrap().to_string();
        let path = format!("/v1/clients/{own}/sessions/{latest}/amendments");
        check(role, token, &Method::POST, &path, &json!({"date": "2024-01-01", "summary": "s2", "amendment_reason": "fix"}), 201, &["therapist"]);
        covered.insert("POST /v1/clients/{client_id}/sessions/{entry_id}/amendments".to_string());
        check(role, token, &Method::POST, "/v1/break-glass", &json!({"client_id": own, "reason": "emergency review needed now"}), 201, &["therapist", "stranger"]);
        covered.insert("POST /v1/break-glass".to_string());
        let grant = a.post("/v1/break-glass", &stranger, json!({"client_id": other, "reason": "emergency review needed now"}));
        expect(&grant, 201, "grant to review");
        let path = format!("/v1/break-glass/{}/review", grant.body["id"].as_str().unwrap());
        check(role, token, &Method::POST, &path, &json!({}), 200, &["auditor"]);
        covered.insert("POST /v1/break-glass/{grant_id}/review".to_string());
        let victim = a.new_client(&therapist, "Victim");
        check(role, token, &Method::POST, &format!("/v1/clients/{victim}/archive"), &json!({}), 200, &["therapist"]);
        covered.insert("POST /v1/clients/{client_id}/archive".to_string());
        check(role, token, &Method::POST, &format!("/v1/clients/{victim}/erase"), &json!({"confirm_client_id": victim}), 200, &["admin"]);
        covered.insert("POST /v1/clients/{client_id}/erase".to_string());
        check(role, token, &Method::DELETE, &format!("/v1/assignments/{t_id}/{other}"), &Value::Null, 200, &["admin"]);
        covered.insert("DELETE /v1/assignments/{therapist_id}/{client_id}".to_string());
        a.post("/v1/assignments", &admin, json!({"therapist_id": t_id, "client_id": other}));
        checked += 6;
    }
    // Sign-in is open to all; sign-out ends only the caller's own session, for every role.
    let r = a.call(Method::POST, "/v1/auth/login", None, Some(&json!({"username": "aud", "password": "wrong-password-x"})));
    expect(&r, 401, "login with a wrong password");
    covered.insert("POST /v1/auth/login".to_string());
    check("anonymous", None, &Method::POST, "/v1/auth/logout", &json!({}), 0, &[]);
    for (role, username) in [("admin", "admin"), ("therapist", "t.assigned"), ("stranger", "t.other"), ("client", "client.own"), ("auditor", "aud")] {
        let token = if role == "admin" { a.admin() } else { a.login(username, PASSWORD) };
        check(role, Some(&token), &Method::POST, "/v1/auth/logout", &json!({}), 200, all);
        expect(&a.get("/v1/auth/me", &token), 401, "signed out");
        checked += 2;
    }
    covered.insert("POST /v1/auth/logout".to_string());
    // A client cannot read another client's record, even with the same role.
    expect(&a.get(&format!("/v1/clients/{other}"), &client), 403, "client on other record");
    // Break-glass gave the stranger access; it is flagged.
    let r = a.get(&format!("/v1/clients/{own}/report"), &stranger);
    expect(&r, 200, "stranger under break-glass");
    let audit = a.get("/v1/audit?break_glass=true&limit=1000", &auditor);
    assert!(!audit.body["entries"].as_array().unwrap().is_empty());
    // Every operation of the API was exercised.
    let documented = documented_operations(&a);
    let missing: Vec<_> = documented.difference(&covered).collect();
    let unknown: Vec<_> = covered.difference(&documented).collect();
    assert!(missing.is_empty() && unknown.is_empty(), "not covered: {missing:?}; not documented: {unknown:?}");
    println!("role matrix: {checked} role x endpoint checks over {} operations", documented.len());
}

/// The OpenAPI document lists exactly the operations the router serves: each
/// documented one is routed (never "no such endpoint" / 405), and anything else is not.
#[test]
fn openapi_lists_exactly_the_served_operations() {
    let a = start(&[]);
    let admin = a.admin();
    let id = "00000000-0000-4000-8000-000000000000";
    let documented = documented_operations(&a);
    assert_eq!(documented.len(), 34, "{documented:?}");
    let not_routed = |r: &Resp| r.status == 405 || (r.status == 404 && r.body["message"].as_str().is_some_and(|m| m.starts_with("no such endpoint")));
    let mut paths = std::collections::BTreeSet::new();
    for op in &documented {
        let (method, template) = op.split_once(' ').unwrap();
        let path = template.split('/').map(|seg| if seg.starts_with('{') { id } else { seg }).collect::<Vec<_>>().join("/");
        paths.insert(path.clone());
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body = (method != Method::GET && method != Method::DELETE).then(|| json!({}));
        let token = (template != "/v1/auth/logout").then_some(admin.as_str());
        let r = a.call(method.clone(), &path, token, body.as_ref());
        assert!(!not_routed(&r) && r.status != 500, "{method} {path} is documented but not routed: {} {}", r.status, r.text);
    }
    // Methods the document does not list on its paths are refused.
    for path in &paths {
        for method in [Method::GET, Method::POST, Method::PATCH, Method::PUT, Method::DELETE] {
            let template_ops: Vec<&String> = documented
                .iter()
                .filter(|op| {
                    let (m, t) = op.split_once(' ').unwrap();
                    m == method.as_str() && t.split('/').map(|seg| if seg.starts_with('{') { id } else { seg }).collect::<Vec<_>>().join("/") == *path
                })
                .collect();
            if template_ops.is_empty() {
                let r = a.call(method.clone(), path, Some(&admin), None);
                assert_eq!(r.status, 405, "{method} {path} is not documented: {}", r.text);
            }
        }
    }
    for path in ["/v1", "/v1/nothing", "/v1/clients/x/y", "/v1/clients//sessions", "/v1/audit/verify/x", "/v1/openapi.json/x"] {
        let r = a.get(path, &admin);
        assert!(r.status == 404 && not_routed(&r), "{path}: {} {}", r.status, r.text);
    }
}

/// Known PHI markers written through the API appear in no database file, WAL,
/// journal, key-value store, log line or error message.
#[test]
fn phi_never_leaks_to_storage_logs_or_errors() {
    let a = start(&[]);
    let admin = a.admin();
    let (_, t) = a.user(&admin, "leak.therapist", "therapist", None);
    let (_, t2) = a.user(&admin, "leak.other", "therapist", None);
    let m = |k: &str| format!("PHIMARK{k}ZQX");
    let r = a.post(
        "/v1/clients",
        &t,
        json!({"display_name": m("NAME"), "date_of_birth": "1971-07-23", "contact": m("CONTACT"), "notes": m("NOTES")}),
    );
    expect(&r, 201, "client");
    let c = r.body["id"].as_str().unwrap().to_string();
    let (_, client) = a.user(&admin, &m("USERNAME"), "client", Some(&c));
    let r = a.post(
        &format!("/v1/clients/{c}/sessions"),
        &t,
        json!({"date": "2024-02-02", "summary": m("SUMMARY"), "themes": [m("THEME")], "interventions": [m("INTERVENTION")],
               "homework": m("HOMEWORK"), "mood": 4, "risk_flags": ["crisis"]}),
    );
    expect(&r, 201, "session");
    let e = r.body["id"].as_str().unwrap().to_string();
    expect(&a.post(&format!("/v1/clients/{c}/sessions/{e}/amendments"), &t, json!({"date": "2024-02-02", "summary": m("AMENDED"), "amendment_reason": m("REASON")})), 201, "amend");
    expect(&a.post(&format!("/v1/clients/{c}/sessions"), &client, json!({"date": "2024-02-03", "summary": m("JOURNAL"), "mood": 2})), 201, "journal");
    expect(&a.post(&format!("/v1/clients/{c}/measures"), &t, phq9([3, 3, 3, 3, 3, 3, 3, 3, 2], "2024-02-02")), 201, "measure");
    let r = a.post(&format!("/v1/clients/{c}/goals"), &t, json!({"description": m("GOAL"), "target": m("TARGET")}));
    let g = r.body["id"].as_str().unwrap().to_string();
    expect(&a.post(&format!("/v1/clients/{c}/goals/{g}/milestones"), &t, json!({"description": m("MILESTONE")})), 201, "milestone");
    expect(&a.post("/v1/break-glass", &t2, json!({"client_id": c, "reason": m("BREAKGLASS")})), 201, "break-glass");
    // Bad input carrying markers: the error messages must not echo them.
    for (path, body) in [
        (format!("/v1/clients/{c}/sessions"), json!({"date": "2024-02-02", "summary": "s", "mood": m("MOODERR")})),
        (format!("/v1/clients/{c}/measures"), json!({"instrument": m("INSTRERR"), "items": [0]})),
        (format!("/v1/clients/{c}/measures"), json!({"instrument": "PHQ-9", "items": [m("ITEMERR"), 0, 0, 0, 0, 0, 0, 0, 0]})),
        (format!("/v1/clients/{c}/sessions"), json!({"date": m("DATEERR"), "summary": "s"})),
        ("/v1/clients".to_string(), json!({"display_name": 5, "notes": m("TYPEERR")})),
    ] {
        let r = a.post(&path, &t, body);
        assert_eq!(r.status, 400, "{path}: {}", r.text);
        assert!(!r.text.contains("PHIMARK"), "error message echoes PHI: {}", r.text);
    }
    let r = a.raw_post(&format!("/v1/clients/{c}/sessions"), &t, &format!("{{\"summary\": \"{}\", ", m("BROKENJSON")));
    assert_eq!(r.status, 400);
    assert!(!r.text.contains("PHIMARK"), "{}", r.text);
    // Enum values and unknown keys carrying markers: serde quotes those in
    // backticks; the message names the field and the accepted values only.
    let r = a.post(&format!("/v1/clients/{c}/goals"), &t, json!({"description": "g"}));
    let g2 = r.body["id"].as_str().unwrap().to_string();
    for (method, path, body) in [
        (Method::POST, format!("/v1/clients/{c}/sessions"), json!({"date": "2024-02-02", "summary": "s", "risk_flags": ["crisis", m("RISKERR")]})),
        (Method::POST, format!("/v1/clients/{c}/sessions"), json!({"date": "2024-02-02", "summary": "s", "kind": m("KINDERR")})),
        (Method::POST, format!("/v1/clients/{c}/goals"), json!({"description": "g", "lifecycle_status": m("LIFECYCLEERR")})),
        (Method::PATCH, format!("/v1/clients/{c}/goals/{g2}"), json!({"lifecycle_status": m("LIFECYCLEPATCH")})),
        (Method::PATCH, format!("/v1/clients/{c}/goals/{g2}"), json!({"achievement_status": m("ACHIEVEMENTERR")})),
        (Method::PATCH, format!("/v1/clients/{c}/goals/{g2}"), json!({m("PATCHKEY"): "x"})),
        (Method::POST, "/v1/clients".to_string(), json!({"display_name": "n", m("CLIENTKEY"): 1})),
        (Method::POST, format!("/v1/clients/{c}/sessions"), json!({"date": "2024-02-02", "summary": "s", m("ENTRYKEY"): 1})),
    ] {
        let r = a.call(method.clone(), &path, Some(&t), Some(&body));
        assert_eq!(r.status, 400, "{method} {path}: {}", r.text);
        assert!(!r.text.contains("PHIMARK"), "error message echoes PHI: {}", r.text);
        let msg = r.body["message"].as_str().unwrap();
        assert!(msg.contains("`<value>`") && msg.contains("expected"), "names the problem, not the value: {msg}");
    }
    // Ids in URL paths and bodies that are not ids (a name typed into the URL):
    // 404 / 400, and the audit trail records "invalid-id", never the text.
    let (_, auditor) = a.user(&admin, "leak.auditor", "auditor", None);
    let bad = m("PATHID");
    let entry_body = json!({"date": "2024-02-02", "summary": "s", "amendment_reason": "r"});
    let none = Value::Null;
    for (method, path, token, body) in [
        (Method::GET, format!("/v1/clients/{bad}"), &t, &none),
        (Method::GET, format!("/v1/clients/{}", m("PATH%20NAME")), &t, &none),
        (Method::GET, format!("/v1/clients/{bad}/report"), &t, &none),
        (Method::POST, format!("/v1/clients/{bad}/sessions"), &t, &json!({"date": "2024-02-02", "summary": "s"})),
        (Method::GET, format!("/v1/clients/{c}/sessions/{bad}"), &t, &none),
        (Method::POST, format!("/v1/clients/{c}/sessions/{bad}/amendments"), &t, &entry_body),
        (Method::PATCH, format!("/v1/clients/{c}/goals/{bad}"), &t, &json!({"achievement_status": "improving"})),
        (Method::POST, format!("/v1/clients/{c}/goals/{bad}/milestones"), &t, &json!({"description": "d"})),
        (Method::PATCH, format!("/v1/clients/{c}/goals/{g2}/milestones/{bad}"), &t, &json!({"achieved": true})),
        (Method::POST, format!("/v1/clients/{bad}/archive"), &t, &json!({})),
        (Method::POST, format!("/v1/break-glass/{bad}/review"), &auditor, &json!({})),
        (Method::DELETE, format!("/v1/assignments/{bad}/{bad}"), &admin, &none),
        (Method::POST, format!("/v1/clients/{bad}/erase"), &admin, &json!({"confirm_client_id": bad})),
    ] {
        let r = a.call(method.clone(), &path, Some(token), (!body.is_null()).then_some(body));
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text);
        assert!(!r.text.contains("PHIMARK"), "{}", r.text);
    }
    for (path, token, body) in [
        ("/v1/assignments", &admin, json!({"therapist_id": m("BODYTHERAPIST"), "client_id": m("BODYCLIENT")})),
        ("/v1/break-glass", &t2, json!({"client_id": m("BODYGRANT"), "reason": "an emergency, assigned therapist away"})),
        ("/v1/users", &admin, json!({"username": "x.client", "password": PASSWORD, "role": "client", "client_id": m("BODYUSER")})),
    ] {
        let r = a.post(path, token, body);
        assert!(r.status == 400 || r.status == 404, "{path}: {}", r.text);
        assert!(!r.text.contains("PHIMARK"), "{}", r.text);
    }
    let audit = a.get("/v1/audit?limit=1000", &auditor);
    expect(&audit, 200, "audit");
    assert!(!audit.text.contains("PHIMARK"), "the audit trail records typed ids");
    let invalid = audit.body["entries"].as_array().unwrap().iter().filter(|e| e["client_id"] == "invalid-id" || e["resource_id"] == "invalid-id").count();
    assert!(invalid >= 13, "the bad ids are audited as invalid-id: {invalid}");
    // Reads go through too, so any caching of plaintext would show.
    expect(&a.get(&format!("/v1/clients/{c}/report?format=html"), &t), 200, "report");
    expect(&a.get(&format!("/v1/clients/{c}/export"), &t), 200, "export");
    expect(&a.get(&format!("/v1/clients/{c}/history-context"), &t), 200, "history");
    let r = a.get(&format!("/v1/clients/{c}"), &t);
    assert_eq!(r.body["display_name"], m("NAME"), "the API still returns the plaintext");

    let mut scanned = Vec::new();
    for f in data_files(&a.app.data_dir) {
        let bytes = std::fs::read(&f).unwrap();
        assert_eq!(count_hits(&bytes, b"PHIMARK"), 0, "PHI marker found in {}", f.display());
        assert_eq!(count_hits(&bytes, b"1971-07-23"), 0, "date of birth found in {}", f.display());
        scanned.push(format!("{} ({} bytes)", f.file_name().unwrap().to_string_lossy(), bytes.len()));
    }
    // The database, its WAL (where recent pages live) and the key-value store were all read.
    for file in ["sqlite_db.db", "sqlite_db.db-wal", "key_value.db"] {
        assert!(
            scanned.iter().any(|s| s.starts_with(&format!("{file} (")) && !s.ends_with("(0 bytes)")),
            "{file} was not scanned (or empty): {scanned:?}"
        );
    }
    let logs = a.host.stderr();
    assert_eq!(count_hits(logs.as_bytes(), b"PHIMARK"), 0, "PHI marker in the logs");
    println!("leak scan: 0 hits in {scanned:?} and {} bytes of logs", logs.len());
}

/// Erasure destroys the client's key: sealed rows that decrypted before cannot
/// after (the key and the rows are gone from every file), the audit chain verifies.
#[test]
fn erasure_crypto_shreds_and_audit_still_verifies() {
    let a = start(&[]);
    let admin = a.admin();
    let (_, t) = a.user(&admin, "erase.therapist", "therapist", None);
    let (_, auditor) = a.user(&admin, "erase.auditor", "auditor", None);
    let c = a.new_client(&t, "Erase Me");
    let keep = a.new_client(&t, "Keep Me");
    let r = a.post(&format!("/v1/clients/{c}/sessions"), &t, json!({"date": "2024-02-02", "summary": "ERASE-SUMMARY", "mood": 4}));
    let e = r.body["id"].as_str().unwrap().to_string();
    a.post(&format!("/v1/clients/{c}/measures"), &t, phq9([1; 9], "2024-02-02"));

    // Before: with the master key, the wrapped data key opens and so does the sealed summary.
    let db = a.db_path();
    let (wrapped, summary) = sql(&db, async |conn| {
        (
            blobs(conn, "SELECT wrapped_key FROM client_keys WHERE client_id = ?1", &c).await,
            blobs(conn, "SELECT summary FROM entries WHERE client_id = ?1", &c).await,
        )
    });
    assert_eq!((wrapped.len(), summary.len()), (1, 1));
    let master = SecretKey::parse_master(MASTER_KEY_HEX).unwrap();
    let dk = crypto::unwrap_data_key(&master, &c, 1, &wrapped[0]).expect("data key unwraps before erasure");
    let place = FieldPlace { subject: &c, table: "entries", row: &e, column: "summary", version: 1 };
    let plain = crypto::open_field(&dk, place, &summary[0]).expect("summary opens before erasure");
    assert_eq!(plain.as_slice(), br#""ERASE-SUMMARY""#);

    expect(&a.post(&format!("/v1/clients/{c}/erase"), &admin, json!({"confirm_client_id": c})), 200, "erase");

    // After: no wrapped key, no rows; neither the key nor the ciphertext survives in any file.
    let (wrapped_after, rows_after) = sql(&db, async |conn| {
        (
            blobs(conn, "SELECT wrapped_key FROM client_keys WHERE client_id = ?1", &c).await,
            blobs(conn, "SELECT summary FROM entries WHERE client_id = ?1", &c).await,
        )
    });
    assert!(wrapped_after.is_empty() && rows_after.is_empty());
    for f in data_files(&a.app.data_dir) {
        let bytes = std::fs::read(&f).unwrap();
        assert_eq!(count_hits(&bytes, &wrapped[0]), 0, "wrapped key survives in {}", f.display());
        assert_eq!(count_hits(&bytes, &summary[0][1..25]), 0, "ciphertext survives in {}", f.display());
    }
    expect(&a.get(&format!("/v1/clients/{c}"), &t), 410, "erased client");
    expect(&a.get(&format!("/v1/clients/{c}/export"), &t), 410, "erased export");
    expect(&a.get(&format!("/v1/clients/{keep}"), &t), 200, "other clients untouched");
    let r = a.get("/v1/audit/verify", &auditor);
    assert_eq!(r.body["ok"], true, "{}", r.text);
    let r = a.get(&format!("/v1/audit?client_id={c}&limit=1000"), &auditor);
    assert!(r.body["entries"].as_array().unwrap().len() >= 4, "the erased client's audit trail remains");
}

/// Flip a byte, delete, reorder, truncate: verification names the exact entry.
#[test]
fn audit_tampering_is_found_at_the_exact_entry() {
    let a = start(&[]);
    let admin = a.admin();
    let (_, t) = a.user(&admin, "tamper.therapist", "therapist", None);
    let (_, auditor) = a.user(&admin, "tamper.auditor", "auditor", None);
    let c = a.new_client(&t, "Tamper");
    for i in 0..12 {
        a.get(&format!("/v1/clients/{c}?n={i}"), &t);
    }
    let db = a.db_path();
    let verify = || {
        let r = a.get("/v1/audit/verify", &auditor);
        assert_eq!(r.status, 200, "verify: {}\nhost stderr:\n{}", r.text, a.host.stderr());
        r.body
    };
    assert_eq!(verify()["ok"], true);
    let run = |q: &str| sql(&db, async |conn| conn.execute_batch(q).await.map(|_| ()).unwrap());

    // 1. Flip one byte of a field of entry 7.
    run("UPDATE audit_log SET action = 'client.reaD' WHERE seq = 7");
    let v = verify();
    assert_eq!(v["first_broken"]["seq"], 7, "{v}");
    run("UPDATE audit_log SET action = 'client.read' WHERE seq = 7");
    assert_eq!(verify()["ok"], true, "restored");

    // 2. Flip one byte of the stored hash of entry 9.
    run("UPDATE audit_log SET hash = CAST(CASE WHEN substr(hash, 4, 1) = x'00' THEN substr(hash, 1, 3) || x'01' || substr(hash, 5)
         ELSE substr(hash, 1, 3) || x'00' || substr(hash, 5) END AS BLOB) WHERE seq = 9");
    assert_eq!(sql(&db, async |conn| blobs(conn, "SELECT hash FROM audit_log WHERE seq = ?1", "9").await).len(), 1, "still a 32-byte blob");
    let v = verify();
    assert_eq!(v["first_broken"]["seq"], 9, "{v}");
    // A column retyped (text where a blob belongs) is found too.
    run("UPDATE audit_log SET hash = hex(hash) WHERE seq = 9");
    assert_eq!(verify()["first_broken"]["seq"], 9);
    // The correct hash of entry 9 is entry 10's prev_hash.
    run("UPDATE audit_log SET hash = (SELECT prev_hash FROM audit_log WHERE seq = 10) WHERE seq = 9");
    assert_eq!(verify()["ok"], true, "restored");

    // 3. Reorder: swap the contents of entries 5 and 6, keeping their seq numbers.
    run("CREATE TABLE swap AS SELECT * FROM audit_log WHERE seq IN (5, 6);
         UPDATE audit_log SET at = (SELECT at FROM swap WHERE seq = 6), actor_id = (SELECT actor_id FROM swap WHERE seq = 6), action = (SELECT action FROM swap WHERE seq = 6),
            resource_type = (SELECT resource_type FROM swap WHERE seq = 6), resource_id = (SELECT resource_id FROM swap WHERE seq = 6), prev_hash = (SELECT prev_hash FROM swap WHERE seq = 6), hash = (SELECT hash FROM swap WHERE seq = 6) WHERE seq = 5;
         UPDATE audit_log SET at = (SELECT at FROM swap WHERE seq = 5), actor_id = (SELECT actor_id FROM swap WHERE seq = 5), action = (SELECT action FROM swap WHERE seq = 5),
            resource_type = (SELECT resource_type FROM swap WHERE seq = 5), resource_id = (SELECT resource_id FROM swap WHERE seq = 5), prev_hash = (SELECT prev_hash FROM swap WHERE seq = 5), hash = (SELECT hash FROM swap WHERE seq = 5) WHERE seq = 6;");
    let v = verify();
    assert_eq!(v["first_broken"]["seq"], 5, "{v}");
    run("DELETE FROM audit_log WHERE seq IN (5, 6); INSERT INTO audit_log SELECT * FROM swap; DROP TABLE swap;");
    assert_eq!(verify()["ok"], true, "restored");

    // 4. Delete entry 4.
    run("CREATE TABLE saved AS SELECT * FROM audit_log WHERE seq = 4; DELETE FROM audit_log WHERE seq = 4;");
    let v = verify();
    assert_eq!(v["first_broken"]["seq"], 4, "{v}");
    assert!(v["first_broken"]["reason"].as_str().unwrap().contains("missing"));
    run("INSERT INTO audit_log SELECT * FROM saved; DROP TABLE saved;");
    assert_eq!(verify()["ok"], true, "restored");

    // 5. Truncate the tail: the head anchor in the key-value store catches it.
    let last = sql(&db, async |conn| {
        let mut rows = conn.query("SELECT MAX(seq) FROM audit_log", ()).await.unwrap();
        rows.next().await.unwrap().unwrap().get::<i64>(0).unwrap()
    });
    run(&format!("DELETE FROM audit_log WHERE seq > {}", last - 5));
    let v = verify();
    assert_eq!(v["first_broken"]["seq"], last - 4, "{v}");
    println!("tamper detection: byte flip (field, hash), reorder, delete, truncate all found at the exact entry");
}

/// Invalid PHQ-9 answers, unknown client, malformed JSON: 400/404 with a
/// message, and nothing half-written.
#[test]
fn bad_input_is_rejected_and_nothing_is_half_written() {
    let a = start(&[]);
    let admin = a.admin();
    let (_, t) = a.user(&admin, "bad.therapist", "therapist", None);
    let (_, auditor) = a.user(&admin, "bad.auditor", "auditor", None);
    let c = a.new_client(&t, "Bad Input");
    let path = format!("/v1/clients/{c}/measures");
    let cases = [
        (json!({"instrument": "PHQ-9", "items": [1, 1, 1, 1, 1, 1, 1, 1]}), "exactly 9"),
        (json!({"instrument": "PHQ-9", "items": [1, 1, 1, 1, 4, 1, 1, 1, 1]}), "item 5 must be an integer from 0 to 3"),
        (json!({"instrument": "PHQ-9", "items": [1, 1, 1, 1, -1, 1, 1, 1, 1]}), "item 5"),
        (json!({"instrument": "PHQ-9", "items": [1, 1, 1, 1, 1.5, 1, 1, 1, 1]}), "item 5"),
        (json!({"instrument": "PHQ-9", "items": ["1", 1, 1, 1, 1, 1, 1, 1, 1]}), "item 1"),
        (json!({"instrument": "GAD-7", "items": [1, 1, 1, 1, 1, 1, 1, 1, 1]}), "exactly 7"),
        (json!({"instrument": "BDI", "items": [1]}), "PHQ-9 or GAD-7"),
        (json!({"instrument": "PHQ-9"}), "missing field `items`"),
        (json!({"instrument": "PHQ-9", "items": [0, 0, 0, 0, 0, 0, 0, 0, 0], "date": "2024-02-30"}), "date"),
    ];
    for (body, msg) in cases {
        let r = a.post(&path, &t, body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.body["message"].as_str().unwrap().contains(msg), "{body}: {}", r.text);
    }
    let r = a.raw_post(&path, &t, "{\"instrument\": \"PHQ-9\", \"items\": [1,2");
    assert_eq!(r.status, 400);
    assert!(r.body["message"].as_str().unwrap().contains("JSON"), "{}", r.text);
    let r = a.raw_post(&path, &t, "not json at all");
    assert_eq!(r.status, 400, "{}", r.text);
    let r = a.raw_post(&path, &t, "");
    assert_eq!(r.status, 400, "{}", r.text);
    for (p, body) in [
        (format!("/v1/clients/{c}/sessions"), json!({"date": "2024-01-01", "summary": "s", "mood": 11})),
        (format!("/v1/clients/{c}/sessions"), json!({"date": "2024-01-01", "summary": "s", "risk_flags": ["unknown"]})),
        (format!("/v1/clients/{c}/goals"), json!({"description": "g", "lifecycle_status": "completed"})),
        ("/v1/users".into(), json!({"username": "x", "password": "short", "role": "therapist"})),
    ] {
        let tok = if p == "/v1/users" { &admin } else { &t };
        let r = a.post(&p, tok, body.clone());
        assert_eq!(r.status, 400, "{p} {body}: {}", r.text);
        assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let r = a.post("/v1/clients/00000000-0000-4000-8000-000000000000/measures", &t, phq9([0; 9], "2024-01-01"));
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.body["message"], "client not found");
    expect(&a.get("/v1/clients/00000000-0000-4000-8000-000000000000/report", &t), 404, "unknown client report");
    expect(&a.get("/v1/no-such-thing", &t), 404, "unknown endpoint");
    expect(&a.call(Method::GET, "/v1/clients", None, None), 401, "no token");
    expect(&a.call(Method::GET, "/v1/clients", Some("forged-token"), None), 401, "bad token");
    let r = a.call(Method::POST, "/v1/auth/login", None, Some(&json!({"username": "admin", "password": "wrong-password-x"})));
    expect(&r, 401, "wrong password");

    // Nothing was written by any rejected request.
    let r = a.get(&path, &t);
    assert_eq!(r.body["measures"].as_array().unwrap().len(), 0);
    let r = a.get(&format!("/v1/clients/{c}/sessions"), &t);
    assert_eq!(r.body["entries"].as_array().unwrap().len(), 0);
    let (n_entries, n_measures, n_goals) = sql(&a.db_path(), async |conn| {
        let count = async |q: &str| conn.query(q, ()).await.unwrap().next().await.unwrap().unwrap().get::<i64>(0).unwrap();
        (count("SELECT COUNT(*) FROM entries").await, count("SELECT COUNT(*) FROM measures").await, count("SELECT COUNT(*) FROM goals").await)
    });
    assert_eq!((n_entries, n_measures, n_goals), (0, 0, 0));
    // Rejections are audited too, and the chain is intact.
    let r = a.get("/v1/audit?limit=1000", &auditor);
    assert!(r.body["entries"].as_array().unwrap().iter().any(|e| e["action"] == "measure.create" && e["outcome"] == "rejected"));
    assert_eq!(a.get("/v1/audit/verify", &auditor).body["ok"], true);
}

#[test]
fn idle_sign_in_sessions_are_logged_off() {
    let a = start(&[("SPIN_VARIABLE_IDLE_TIMEOUT_SECONDS", "2")]);
    let admin = a.admin();
    expect(&a.get("/v1/users", &admin), 200, "active");
    std::thread::sleep(Duration::from_millis(3200));
    let r = a.get("/v1/users", &admin);
    expect(&r, 401, "idle");
    assert!(r.body["message"].as_str().unwrap().contains("inactivity"), "{}", r.text);
    expect(&a.get("/v1/users", &admin), 401, "the session is gone");
    let admin = a.admin();
    expect(&a.get("/v1/users", &admin), 200, "signed in again");
}

/// Ten years of weekly sessions and monthly PHQ-9 / GAD-7: correct reports,
/// write latency and report times (printed).
#[test]
fn ten_year_history_reports() {
    let a = start(&[]);
    let admin = a.admin();
    let (_, t) = a.user(&admin, "ten.therapist", "therapist", None);
    let c = a.new_client(&t, "Ten Years");
    let day = 86_400i64;
    let start_ts = 1_420_070_400i64; // 2015-01-01
    let date = |ts: i64| {
        // civil date via the component's own format (YYYY-MM-DD).
        let z = ts.div_euclid(day) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
        format!("{y:04}-{m:02}-{d:02}")
    };
    // Course: PHQ-9 20 -> 4 over the first two years, then 4-6; GAD-7 15 -> 5, then 5-6.
    // Mood rises from 2 to 7 over the first two years, then steady at 7.
    let mut write_times = Vec::new();
    let weeks = 520;
    for w in 0..weeks {
        let ts = start_ts + w * 7 * day;
        let progress = (w as f64 / 104.0).min(1.0);
        let mood = (2.0 + 5.0 * progress).round() as u8;
        let summary = if progress < 0.5 { "Felt low and tired, worried about work" } else { "Good week, enjoyed time with friends and felt calm" };
        let r = a.post(
            &format!("/v1/clients/{c}/sessions"),
            &t,
            json!({"date": date(ts), "summary": summary, "themes": [if w % 3 == 0 { "work" } else { "sleep" }], "mood": mood}),
        );
        expect(&r, 201, "session");
        write_times.push(r.elapsed);
    }
    for month in 0..120 {
        let ts = start_ts + month * 30 * day + 2 * day;
        let progress = (month as f64 / 24.0).min(1.0);
        let phq = if progress < 1.0 { (20.0 - 16.0 * progress).round() as u32 } else { 4 + (month % 3) as u32 };
        let gad = if progress < 1.0 { (15.0 - 10.0 * progress).round() as u32 } else { 5 + (month % 2) as u32 };
        let r = a.post(&format!("/v1/clients/{c}/measures"), &t, json!({"instrument": "PHQ-9", "items": items_for(phq, 9), "date": date(ts)}));
        expect(&r, 201, "phq9");
        write_times.push(r.elapsed);
        let r = a.post(&format!("/v1/clients/{c}/measures"), &t, json!({"instrument": "GAD-7", "items": items_for(gad, 7), "date": date(ts)}));
        expect(&r, 201, "gad7");
        write_times.push(r.elapsed);
    }
    let g = a.post(&format!("/v1/clients/{c}/goals"), &t, json!({"description": "Return to work", "due_date": "2016-06-01"}));
    expect(&g, 201, "goal");
    write_times.sort();
    let end = date(start_ts + (weeks - 1) * 7 * day);

    // 10-year report.
    let ten = format!("/v1/clients/{c}/report?from=2015-01-01&to={end}");
    let mut ten_times = Vec::new();
    let mut r = a.get(&ten, &t);
    for _ in 0..5 {
        r = a.get(&ten, &t);
        ten_times.push(r.elapsed);
    }
    expect(&r, 200, "10-year report");
    let b = &r.body;
    assert_eq!(b["sessions"]["total"], 520);
    assert_eq!(b["measures"][0]["instrument"], "PHQ-9");
    assert_eq!(b["measures"][0]["administrations"].as_array().unwrap().len(), 120);
    assert_eq!(b["measures"][1]["administrations"].as_array().unwrap().len(), 120);
    let phq = &b["measures"][0]["change"];
    assert_eq!((phq["baseline_total"].as_u64(), phq["reliable_change"].as_str()), (Some(20), Some("reliable-improvement")));
    assert_eq!(phq["recovery"], true);
    assert_eq!(b["joint_outcome"]["recovery"], true, "{}", b["joint_outcome"]);
    assert_eq!(b["emotional_trend"]["granularity"], "year");
    assert_eq!(b["emotional_trend"]["buckets"].as_array().unwrap().len(), 10);
    assert_eq!(b["emotional_trend"]["direction"], "rising");
    assert_eq!(b["trajectory"]["overall"], "improving");
    let codes: Vec<&str> = b["recommendations"].as_array().unwrap().iter().map(|x| x["code"].as_str().unwrap()).collect();
    assert!(codes.contains(&"relapse-prevention"), "{codes:?}");
    assert!(codes.contains(&"review-overdue-goals"), "{codes:?}");

    // Last year only: stable, below caseness, no reliable change.
    let one = format!("/v1/clients/{c}/report?from={}&to={end}", date(start_ts + (weeks - 52) * 7 * day));
    let mut one_times = Vec::new();
    let mut r1 = a.get(&one, &t);
    for _ in 0..5 {
        r1 = a.get(&one, &t);
        one_times.push(r1.elapsed);
    }
    expect(&r1, 200, "1-year report");
    let b1 = &r1.body;
    assert_eq!(b1["sessions"]["total"], 52);
    assert_eq!(b1["emotional_trend"]["granularity"], "month");
    assert_eq!(b1["measures"][0]["change"]["reliable_change"], "no-reliable-change");
    assert_eq!(b1["measures"][0]["change"]["recovery"], Value::Null, "not a case at the period's baseline");
    assert_eq!(b1["trajectory"]["overall"], "stable");
    // First year: improving.
    let r0 = a.get(&format!("/v1/clients/{c}/report?from=2015-01-01&to=2015-12-31"), &t);
    assert_eq!(r0.body["trajectory"]["overall"], "improving", "{}", r0.body["trajectory"]);
    let html = a.get(&format!("{ten}&format=html"), &t);
    expect(&html, 200, "10-year html");
    assert!(html.text.matches("<svg").count() >= 3);
    let trend = a.get(&format!("/v1/clients/{c}/trends?granularity=week"), &t);
    assert_eq!(trend.body["trend"]["buckets"].as_array().unwrap().len(), 520);
    let hist = a.get(&format!("/v1/clients/{c}/history-context"), &t);
    expect(&hist, 200, "history");
    assert_eq!(hist.body["session_count"], 520);

    ten_times.sort();
    one_times.sort();
    println!(
        "BENCH progress: writes n={} p50={:?} p99={:?} max={:?}; report 1y median={:?} (min {:?}); report 10y median={:?} (min {:?}); html 10y {:?}",
        write_times.len(),
        percentile(&write_times, 0.5),
        percentile(&write_times, 0.99),
        write_times.last().unwrap(),
        one_times[2],
        one_times[0],
        ten_times[2],
        ten_times[0],
        html.elapsed,
    );
}

/// Holds the write lock of a libsql file from another process-like connection
/// until the returned sender is dropped or sent to.
fn hold_write_lock(db: PathBuf) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        sql(&db, async |conn| {
            conn.execute("BEGIN EXCLUSIVE", ()).await.unwrap();
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv();
            conn.execute("ROLLBACK", ()).await.unwrap();
        })
    });
    locked_rx.recv().expect("lock taken");
    (release_tx, h)
}

fn kv_anchor_seq(data_dir: &Path) -> i64 {
    sql(&data_dir.join("key_value.db"), async |conn| {
        let mut rows = conn.query("SELECT value FROM spin_key_value WHERE key = 'audit/head'", ()).await.unwrap();
        let bytes: Vec<u8> = rows.next().await.unwrap().expect("anchor stored").get(0).unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap()["seq"].as_i64().unwrap()
    })
}

fn max_audit_seq(db: &Path) -> i64 {
    sql(db, async |conn| {
        let mut rows = conn.query("SELECT MAX(seq) FROM audit_log", ()).await.unwrap();
        rows.next().await.unwrap().unwrap().get::<i64>(0).unwrap()
    })
}

/// A read whose audit entry cannot be written is not answered: 503, no data;
/// writes are not committed either. Once the audit trail works again, so does the API.
#[test]
fn reads_fail_closed_when_the_audit_trail_cannot_be_written() {
    let a = start(&[]);
    let admin = a.admin();
    let (_, t) = a.user(&admin, "closed.therapist", "therapist", None);
    let (_, t2) = a.user(&admin, "closed.other", "therapist", None);
    let (_, auditor) = a.user(&admin, "closed.auditor", "auditor", None);
    let c = a.new_client(&t, "PHIMARKCLOSEDZQX");
    expect(&a.post(&format!("/v1/clients/{c}/sessions"), &t, json!({"date": "2024-02-02", "summary": "PHIMARKNOTEZQX", "mood": 4})), 201, "entry");
    expect(&a.post("/v1/break-glass", &t2, json!({"client_id": c, "reason": "PHIMARK emergency ZQX reason"})), 201, "grant");
    expect(&a.get(&format!("/v1/clients/{c}"), &t), 200, "read works");
    let db = a.db_path();
    let run = |q: &str| sql(&db, async |conn| conn.execute_batch(q).await.map(|_| ()).unwrap());
    run("CREATE TRIGGER audit_blocked BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'audit trail unavailable'); END");
    for (path, token) in [
        (format!("/v1/clients/{c}"), &t),
        (format!("/v1/clients/{c}/sessions"), &t),
        (format!("/v1/clients/{c}/report?format=html"), &t),
        (format!("/v1/clients/{c}/export"), &t),
        (format!("/v1/clients/{c}/history-context"), &t),
        ("/v1/clients".to_string(), &t),
        ("/v1/break-glass".to_string(), &auditor),
    ] {
        let r = a.get(&path, token);
        assert_eq!(r.status, 503, "GET {path} without an audit trail: {}", r.text);
        assert!(!r.text.contains("PHIMARK"), "GET {path} answered data it could not audit: {}", r.text);
    }
    let r = a.post(&format!("/v1/clients/{c}/measures"), &t, phq9([1; 9], "2024-02-02"));
    assert!(r.status >= 500, "a write without its audit entry: {}", r.text);
    run("DROP TRIGGER audit_blocked");
    let r = a.get(&format!("/v1/clients/{c}"), &t);
    expect(&r, 200, "read works again");
    assert_eq!(r.body["display_name"], "PHIMARKCLOSEDZQX");
    assert_eq!(a.get(&format!("/v1/clients/{c}/measures"), &t).body["measures"].as_array().unwrap().len(), 0, "the write was not committed");
    assert_eq!(a.get("/v1/audit/verify", &auditor).body["ok"], true);
    assert_eq!(count_hits(a.host.stderr().as_bytes(), b"PHIMARK"), 0, "PHI in the logs");
}

/// The chain head anchor in the key-value store never moves backwards under
/// concurrent requests (so tail truncation is always caught), and a failing
/// key-value store after the commit is logged, not answered as an error.
#[test]
fn audit_anchor_is_monotonic_and_its_failure_is_not_a_request_failure() {
    let a = start(&[]);
    let admin = a.admin();
    let (_, t) = a.user(&admin, "anchor.therapist", "therapist", None);
    let (_, auditor) = a.user(&admin, "anchor.auditor", "auditor", None);
    let c = a.new_client(&t, "Anchor");
    let db = a.db_path();
    // Two concurrent clients: edge-host runs SQLite calls on its (2) async
    // workers, so more concurrent writers than workers can starve the lock
    // holder into "database is busy" (an edge-host limit, not this component's).
    let t_start = Instant::now();
    for round in 0..4 {
        std::thread::scope(|scope| {
            for w in 0..2 {
                let (a, t, c) = (&a, &t, &c);
                scope.spawn(move || {
                    for i in 0..30 {
                        let r = if (w + i) % 3 == 0 {
                            a.post(&format!("/v1/clients/{c}/measures"), t, phq9([1; 9], "2024-02-02"))
                        } else {
                            a.get(&format!("/v1/clients/{c}"), t)
                        };
                        assert!(r.status == 200 || r.status == 201, "{}", r.text);
                    }
                });
            }
        });
        let (anchor, head) = (kv_anchor_seq(&a.app.data_dir), max_audit_seq(&db));
        assert_eq!(anchor, head, "round {round}: the anchor lags behind the chain head (moved backwards)");
        println!("concurrent anchor round {round}: {:?} since the start", t_start.elapsed());
    }
    // Two anchor updates stalled together (the key-value store is locked by
    // someone else), then released at once: the later entry's anchor must win
    // whichever update the store lets through first.
    // (The release time varies per round: which stalled update the store lets
    // through first depends on where each waiter is in its busy-retry sleep.)
    let t0 = Instant::now();
    for round in 0..6u64 {
        let (release, h) = hold_write_lock(a.app.data_dir.join("key_value.db"));
        std::thread::scope(|scope| {
            let first = scope.spawn(|| a.get(&format!("/v1/clients/{c}"), &t));
            std::thread::sleep(Duration::from_millis(300));
            let second = scope.spawn(|| a.get(&format!("/v1/clients/{c}"), &t));
            std::thread::sleep(Duration::from_millis(600 + 17 * round));
            let _ = release.send(());
            expect(&first.join().unwrap(), 200, "first stalled read");
            expect(&second.join().unwrap(), 200, "second stalled read");
        });
        h.join().unwrap();
        let (anchor, head) = (kv_anchor_seq(&a.app.data_dir), max_audit_seq(&db));
        assert_eq!(anchor, head, "stalled round {round}: the anchor moved backwards");
        println!("stalled anchor round {round}: {:?} since the start", t0.elapsed());
    }
    assert_eq!(a.get("/v1/audit/verify", &auditor).body["ok"], true);
    // Truncating the newest entry is caught by the anchor.
    let head = max_audit_seq(&db);
    sql(&db, async |conn| conn.execute("DELETE FROM audit_log WHERE seq = ?1", [head]).await.unwrap());
    let v = a.get("/v1/audit/verify", &auditor).body;
    assert_eq!(v["ok"], false, "{v}");

    // The key-value store is locked by someone else: the write commits and is answered 201.
    let b = start(&[]);
    let admin = b.admin();
    let (_, t) = b.user(&admin, "anchor.t2", "therapist", None);
    let (_, auditor) = b.user(&admin, "anchor.a2", "auditor", None);
    let c = b.new_client(&t, "Anchor Two");
    let (release, h) = hold_write_lock(b.app.data_dir.join("key_value.db"));
    let r = b.post(&format!("/v1/clients/{c}/measures"), &t, phq9([2; 9], "2024-02-02"));
    let _ = release.send(());
    h.join().unwrap();
    expect(&r, 201, "a committed write is not a failure because the anchor could not move");
    assert!(b.host.stderr().contains("audit anchor not advanced"), "the failure is logged");
    assert_eq!(b.get(&format!("/v1/clients/{c}/measures"), &t).body["measures"].as_array().unwrap().len(), 1);
    let v = b.get("/v1/audit/verify", &auditor).body;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(kv_anchor_seq(&b.app.data_dir), max_audit_seq(&b.db_path()), "the next entry moved the anchor on");
}

/// An app with an assigned therapist, a stranger therapist, an auditor and
/// two clients of the assigned therapist: (app, admin, stranger id, stranger, auditor, [c1, c2]).
fn break_glass_app(extra_env: &[(&str, &str)]) -> (App, String, String, String, String, [String; 2]) {
    let a = start(extra_env);
    let admin = a.admin();
    let (_, t) = a.user(&admin, "bg.assigned", "therapist", None);
    let (s_id, stranger) = a.user(&admin, "bg.stranger", "therapist", None);
    let (_, auditor) = a.user(&admin, "bg.auditor", "auditor", None);
    let c = a.new_client(&t, "Emergency");
    let c2 = a.new_client(&t, "Emergency Two");
    (a, admin, s_id, stranger, auditor, [c, c2])
}

const BG_REASON: &str = "Client in crisis, assigned therapist unreachable";

/// Opening a grant is flagged for review (`?break_glass=true`) like the
/// accesses under it, and the grant expires on time (break_glass_seconds).
#[test]
fn break_glass_opening_is_flagged_and_the_grant_expires() {
    let (a, _admin, s_id, stranger, auditor, [c, _]) = break_glass_app(&[("SPIN_VARIABLE_BREAK_GLASS_SECONDS", "3")]);
    expect(&a.get(&format!("/v1/clients/{c}"), &stranger), 403, "no access before the grant");
    let r = a.post("/v1/break-glass", &stranger, json!({"client_id": c, "reason": BG_REASON}));
    expect(&r, 201, "open");
    let grant = r.body["id"].as_str().unwrap().to_string();
    expect(&a.get(&format!("/v1/clients/{c}"), &stranger), 200, "access under the grant");
    let r = a.get("/v1/audit?break_glass=true&limit=1000", &auditor);
    let flagged = r.body["entries"].as_array().unwrap();
    assert!(
        flagged.iter().any(|e| e["action"] == "break-glass.open" && e["actor_id"] == s_id.as_str() && e["client_id"] == c.as_str() && e["outcome"] == "success"),
        "the opening is flagged: {}",
        r.text
    );
    assert!(flagged.iter().any(|e| e["action"] == "client.read" && e["client_id"] == c.as_str()));

    std::thread::sleep(Duration::from_millis(3500));
    expect(&a.get(&format!("/v1/clients/{c}"), &stranger), 403, "the grant expired");
    let r = a.get("/v1/break-glass?pending=true", &auditor);
    expect(&r, 200, "grants");
    let g = r.body["grants"].as_array().unwrap().iter().find(|g| g["id"] == grant.as_str()).unwrap().clone();
    assert_eq!(g["active"], false, "{g}");
    assert_eq!(g["accesses"], 1, "one read under the grant; the opening is not an access: {g}");
}

/// The auditor reviews the decrypted justification; showing it discloses
/// client data, so one audit entry per client whose reason was shown is written.
#[test]
fn break_glass_reasons_shown_to_auditors_are_audited_per_client() {
    let (a, _admin, _, stranger, auditor, [c, c2]) = break_glass_app(&[]);
    expect(&a.post("/v1/break-glass", &stranger, json!({"client_id": c, "reason": BG_REASON})), 201, "open");
    expect(&a.post("/v1/break-glass", &stranger, json!({"client_id": c, "reason": "a second look, same night"})), 201, "open again");
    expect(&a.post("/v1/break-glass", &stranger, json!({"client_id": c2, "reason": "second emergency, same night"})), 201, "open 2");
    let r = a.get("/v1/break-glass", &auditor);
    expect(&r, 200, "grants");
    let grants = r.body["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 3);
    assert!(grants.iter().any(|g| g["client_id"] == c.as_str() && g["reason"] == BG_REASON), "the auditor reviews the justification: {}", r.text);
    let r = a.get("/v1/audit?limit=1000", &auditor);
    let disclosures: Vec<&Value> = r.body["entries"].as_array().unwrap().iter().filter(|e| e["resource_type"] == "break-glass-reason").collect();
    assert_eq!(disclosures.len(), 2, "one entry per client: {disclosures:?}");
    for client in [&c, &c2] {
        assert!(disclosures.iter().any(|e| e["client_id"] == client.as_str() && e["action"] == "break-glass.review" && e["outcome"] == "success"));
    }
    let doc = a.call(Method::GET, "/v1/openapi.json", None, None);
    assert!(doc.body["paths"]["/v1/break-glass"]["get"]["description"].as_str().unwrap().contains("one audit entry per client"));
}

/// Erasure keeps a grant awaiting review (who, which client, when), and
/// destroys only its sealed reason.
#[test]
fn erasure_keeps_break_glass_grants_for_review() {
    let (a, admin, s_id, stranger, auditor, [c, _]) = break_glass_app(&[]);
    let r = a.post("/v1/break-glass", &stranger, json!({"client_id": c, "reason": BG_REASON}));
    expect(&r, 201, "open");
    let grant = r.body["id"].as_str().unwrap().to_string();
    expect(&a.get(&format!("/v1/clients/{c}/report"), &stranger), 200, "access under the grant");
    let sealed = sql(&a.db_path(), async |conn| blobs(conn, "SELECT reason FROM break_glass WHERE id = ?1", &grant).await);
    assert_eq!(sealed.len(), 1);
    expect(&a.post(&format!("/v1/clients/{c}/erase"), &admin, json!({"confirm_client_id": c})), 200, "erase");
    let r = a.get("/v1/break-glass?pending=true", &auditor);
    expect(&r, 200, "grants");
    let g = r.body["grants"].as_array().unwrap().iter().find(|g| g["id"] == grant.as_str()).cloned();
    let g = g.unwrap_or_else(|| panic!("a grant awaiting review survives erasure: {}", r.text));
    assert_eq!((g["client_id"].as_str(), g["user_id"].as_str(), &g["reason"]), (Some(c.as_str()), Some(s_id.as_str()), &Value::Null), "{g}");
    assert_eq!(g["accesses"], 1, "{g}");
    assert!(sql(&a.db_path(), async |conn| blobs(conn, "SELECT reason FROM break_glass WHERE id = ?1", &grant).await).is_empty(), "reason nulled");
    for f in data_files(&a.app.data_dir) {
        assert_eq!(count_hits(&std::fs::read(&f).unwrap(), &sealed[0][1..25]), 0, "sealed reason survives in {}", f.display());
    }
    expect(&a.post(&format!("/v1/break-glass/{grant}/review"), &auditor, json!({})), 200, "review after erasure");
    assert_eq!(a.get("/v1/audit/verify", &auditor).body["ok"], true);
}

/// Retention erases a client archived longer than the record retention (and
/// only that one); the audit chain still verifies.
#[test]
fn retention_erases_archived_clients_past_retention() {
    let a = start(&[("SPIN_VARIABLE_RECORD_RETENTION_DAYS", "1")]);
    let admin = a.admin();
    let (_, t) = a.user(&admin, "ret.therapist", "therapist", None);
    let (_, auditor) = a.user(&admin, "ret.auditor", "auditor", None);
    let old = a.new_client(&t, "Archived Long Ago");
    let recent = a.new_client(&t, "Archived Today");
    let active = a.new_client(&t, "Active");
    for c in [&old, &recent, &active] {
        expect(&a.post(&format!("/v1/clients/{c}/sessions"), &t, json!({"date": "2024-02-02", "summary": "RETENTION-NOTE", "mood": 5})), 201, "entry");
    }
    expect(&a.post(&format!("/v1/clients/{old}/archive"), &t, json!({})), 200, "archive old");
    expect(&a.post(&format!("/v1/clients/{recent}/archive"), &t, json!({})), 200, "archive recent");
    // Two days pass for the old record.
    sql(&a.db_path(), async |conn| conn.execute("UPDATE clients SET archived_at = archived_at - 2 * 86400 WHERE id = ?1", [old.as_str()]).await.unwrap());
    let r = a.post("/v1/admin/retention", &admin, json!({}));
    expect(&r, 200, "retention");
    assert_eq!(r.body["erased_clients"], json!([old]), "{}", r.text);
    assert_eq!(r.body["record_retention_days"], 1);
    expect(&a.get(&format!("/v1/clients/{old}"), &t), 410, "erased");
    let r = a.get(&format!("/v1/clients/{recent}"), &t);
    expect(&r, 200, "archived today: kept");
    expect(&a.get(&format!("/v1/clients/{active}"), &t), 200, "active: kept");
    let (keys, rows) = sql(&a.db_path(), async |conn| {
        (
            blobs(conn, "SELECT wrapped_key FROM client_keys WHERE client_id = ?1", &old).await,
            blobs(conn, "SELECT summary FROM entries WHERE client_id = ?1", &old).await,
        )
    });
    assert!(keys.is_empty() && rows.is_empty(), "key destroyed, rows deleted");
    let audit = a.get(&format!("/v1/audit?client_id={old}&limit=1000"), &auditor);
    assert!(audit.body["entries"].as_array().unwrap().iter().any(|e| e["action"] == "client.erase" && e["outcome"] == "success"));
    let r = a.get("/v1/audit/verify", &auditor);
    assert_eq!(r.body["ok"], true, "{}", r.text);
    // A second run finds nothing more to do.
    let r = a.post("/v1/admin/retention", &admin, json!({}));
    assert_eq!(r.body["erased_clients"], json!([]));
}

/// Writes racing an archive: none is committed after the archive (the
/// read-only check is repeated inside the write transaction).
#[test]
fn no_write_lands_after_the_archive() {
    let a = start(&[]);
    let admin = a.admin();
    let (_, t) = a.user(&admin, "race.therapist", "therapist", None);
    let (_, auditor) = a.user(&admin, "race.auditor", "auditor", None);
    for round in 0..8 {
        let c = a.new_client(&t, "Race");
        let archived = std::sync::atomic::AtomicBool::new(false);
        // One writer racing the archive (see the anchor test on concurrency limits).
        std::thread::scope(|scope| {
            for w in 0..1 {
                let (a, t, c, archived) = (&a, &t, &c, &archived);
                scope.spawn(move || {
                    for i in 0..40 {
                        let r = match (w + i) % 4 {
                            0 => a.post(&format!("/v1/clients/{c}/measures"), t, phq9([1; 9], "2024-02-02")),
                            1 => a.post(&format!("/v1/clients/{c}/goals"), t, json!({"description": "g"})),
                            _ => a.post(&format!("/v1/clients/{c}/sessions"), t, json!({"date": "2024-02-02", "summary": "s"})),
                        };
                        assert!(r.status == 201 || r.status == 409, "{}", r.text);
                        if r.status == 409 && archived.load(std::sync::atomic::Ordering::SeqCst) {
                            break;
                        }
                    }
                });
            }
            std::thread::sleep(Duration::from_millis(100 + 40 * round));
            expect(&a.post(&format!("/v1/clients/{c}/archive"), t.as_str(), json!({})), 200, "archive");
            archived.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let r = a.get(&format!("/v1/audit?client_id={c}&limit=1000"), &auditor);
        let entries = r.body["entries"].as_array().unwrap();
        let archive_seq = entries.iter().find(|e| e["action"] == "client.archive" && e["outcome"] == "success").unwrap()["seq"].as_i64().unwrap();
        let late: Vec<&Value> = entries
            .iter()
            .filter(|e| e["outcome"] == "success" && e["action"] != "client.archive" && e["action"] != "client.create" && e["seq"].as_i64().unwrap() > archive_seq)
            .collect();
        assert!(late.is_empty(), "round {round}: writes committed after the archive: {late:?}");
    }
}
