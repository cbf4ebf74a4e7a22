//! Per-request context: database, keys, the signed-in user, authorisation
//! and audit recording.

use super::config::Config;
use super::keyring::Keyring;
use crate::domain::access::{decide, Action, Decision, Relation};
use edge_common::audit_store::{self, AuditEvent};
use edge_common::auth::Role;
use edge_common::crypto::SecretKey;
use edge_common::db::{text, Db, Value};
use edge_common::identity::Principal;
use edge_common::ApiError;
use std::cell::Cell;
use std::future::Future;

/// What an audit entry is about.
#[derive(Debug, Clone)]
pub struct Subject {
    pub action: Action,
    pub resource_type: &'static str,
    pub resource_id: String,
    pub client_id: String,
}

/// What the audit trail may record as a resource or client id: an id we
/// issued (UUID-shaped), one of our own markers, or else `invalid-id`. Ids
/// come from URL paths and bodies, where a caller may type a name or other
/// PHI; those must never reach the plaintext audit columns.
pub fn audit_ref(s: &str) -> String {
    match s {
        "" | "*" | "new" | "run" | "verify" => s.to_string(),
        _ => edge_common::api::audit_id(s),
    }
}

impl Subject {
    /// `resource_id` and `client_id` are recorded only if UUID-shaped (see [`audit_ref`]).
    pub fn new(action: Action, resource_type: &'static str, resource_id: impl AsRef<str>, client_id: impl AsRef<str>) -> Self {
        Subject { action, resource_type, resource_id: audit_ref(resource_id.as_ref()), client_id: audit_ref(client_id.as_ref()) }
    }
}

/// The answer when the audit trail cannot be written: the request is not
/// completed and no data is returned (fail closed).
pub fn audit_unavailable() -> ApiError {
    ApiError::unavailable("the audit trail could not be written; the request was not completed")
}

pub struct Ctx {
    pub db: Db,
    pub config: Config,
    pub keys: Keyring,
    pub audit_key: SecretKey,
    pub login_key: SecretKey,
    pub principal: Principal,
    pub now: i64,
    audited: Cell<bool>,
    break_glass: Cell<bool>,
}

/// Status of a client record.
pub struct ClientState {
    pub archived: bool,
}

impl Ctx {
    pub fn new(db: Db, config: Config, principal: Principal, now: i64) -> Self {
        let audit_key = audit_store::chain_key(&config.master);
        let login_key = edge_common::identity::login_key(&config.master);
        let keys = Keyring::new(config.master.clone());
        Ctx { db, config, keys, audit_key, login_key, principal, now, audited: Cell::new(false), break_glass: Cell::new(false) }
    }

    pub fn role(&self) -> Role {
        self.principal.role
    }

    fn event(&self, s: &Subject, outcome: &str) -> AuditEvent {
        AuditEvent {
            actor_id: self.principal.user_id.clone(),
            role: self.principal.role.as_str().to_string(),
            action: s.action.code().to_string(),
            resource_type: s.resource_type.to_string(),
            resource_id: s.resource_id.clone(),
            client_id: s.client_id.clone(),
            outcome: outcome.to_string(),
            break_glass: self.break_glass.get(),
        }
    }

    /// Records an entry in its own transaction (reads, refusals, failures).
    /// A failure is logged (codes only) and answered 503.
    pub async fn record(&self, s: &Subject, outcome: &str) -> Result<(), ApiError> {
        self.audited.set(true);
        audit_store::record(&self.db, &self.audit_key, self.event(s, outcome), self.now).await.map_err(|e| {
            eprintln!("audit write failed ({} {}): {}", s.action.code(), outcome, e.message);
            audit_unavailable()
        })
    }

    /// Flags the entries of this request as made under break-glass access
    /// (used when a grant is opened, so its opening shows up for review).
    pub fn flag_break_glass(&self) {
        self.break_glass.set(true);
    }

    /// Records the outcome of a handled request unless it was already recorded,
    /// before the answer leaves: if the entry cannot be written, a successful
    /// result (which may carry decrypted data) is replaced by a 503.
    pub async fn conclude<T>(&self, s: &Subject, result: Result<T, ApiError>) -> Result<T, ApiError> {
        if self.audited.get() {
            return result;
        }
        let outcome = match &result {
            Ok(_) => "success",
            Err(e) => e.outcome(),
        };
        match (self.record(s, outcome).await, result) {
            (Ok(()), result) => result,
            (Err(unavailable), Ok(_)) => Err(unavailable),
            (Err(_), Err(original)) => Err(original),
        }
    }

    /// Records several entries in one transaction (all or none), e.g. one per
    /// client whose data a listing decrypted.
    pub async fn record_all(&self, subjects: &[Subject], outcome: &str) -> Result<(), ApiError> {
        if subjects.is_empty() {
            return Ok(());
        }
        let committed = async {
            self.db.begin().await?;
            let r = async {
                let mut last = None;
                for s in subjects {
                    last = Some(audit_store::append(&self.db, &self.audit_key, self.event(s, outcome), self.now).await?);
                }
                last.map(|e| ((), e)).ok_or_else(|| ApiError::internal("no audit entry"))
            }
            .await;
            audit_store::commit(&self.db, r).await
        }
        .await;
        committed.map_err(|e| {
            eprintln!("audit write failed ({} x{} {}): {}", subjects[0].action.code(), subjects.len(), outcome, e.message);
            audit_unavailable()
        })
    }

    /// Runs `work` in a write transaction that also appends the success audit
    /// entry; on any error nothing is written.
    pub async fn write<T>(&self, s: &Subject, work: impl Future<Output = Result<T, ApiError>>) -> Result<T, ApiError> {
        self.db.begin().await?;
        let r = match work.await {
            Ok(v) => audit_store::append(&self.db, &self.audit_key, self.event(s, "success"), self.now).await.map(|e| (v, e)),
            Err(e) => Err(e),
        };
        // Commits (moving the chain head anchor) or rolls back; an anchor failure is logged, never a failed request.
        let v = audit_store::commit(&self.db, r).await?;
        self.audited.set(true);
        Ok(v)
    }

    async fn client_state(&self, client_id: &str) -> Result<Option<Result<ClientState, ()>>, ApiError> {
        Ok(match self
            .db
            .query_one("SELECT archived_at, erased_at FROM clients WHERE id = ?", vec![text(client_id)])
            .await?
        {
            None => None,
            Some(r) if r.opt_int(1)?.is_some() => Some(Err(())),
            Some(r) => Some(Ok(ClientState { archived: r.opt_int(0)?.is_some() })),
        })
    }

    async fn relation(&self, client_id: &str) -> Result<Relation, ApiError> {
        match self.principal.role {
            Role::Client => Ok(if self.principal.subject_id.as_deref() == Some(client_id) { Relation::Own } else { Relation::None }),
            Role::Therapist => {
                let uid = text(&self.principal.user_id);
                if self
                    .db
                    .query_one("SELECT 1 FROM assignments WHERE therapist_id = ? AND client_id = ?", vec![uid.clone(), text(client_id)])
                    .await?
                    .is_some()
                {
                    return Ok(Relation::Assigned);
                }
                let grant = self
                    .db
                    .query_one(
                        "SELECT 1 FROM break_glass WHERE user_id = ? AND client_id = ? AND expires_at > ?",
                        vec![uid, text(client_id), Value::Integer(self.now)],
                    )
                    .await?;
                Ok(if grant.is_some() { Relation::BreakGlass } else { Relation::None })
            }
            _ => Ok(Relation::None),
        }
    }

    /// Checks that the signed-in user may perform `s.action` (on `s.client_id`
    /// when record-scoped). Refusals and unknown clients are audited here.
    pub async fn authorize(&self, s: &Subject) -> Result<Option<ClientState>, ApiError> {
        let mut state = None;
        let relation = if s.action.is_record_scoped() {
            if !edge_common::api::is_id(&s.client_id) {
                // Not an id we issue (a name typed into the URL?): no lookup, recorded as invalid-id.
                self.record(s, "not_found").await?;
                return Err(ApiError::not_found("client not found"));
            }
            match self.client_state(&s.client_id).await? {
                None => {
                    self.record(s, "not_found").await?;
                    return Err(ApiError::not_found("client not found"));
                }
                Some(Err(())) => {
                    self.record(s, "not_found").await?;
                    return Err(ApiError::gone("the client record has been erased"));
                }
                Some(Ok(st)) => state = Some(st),
            }
            self.relation(&s.client_id).await?
        } else {
            Relation::None
        };
        match decide(self.principal.role, s.action, relation) {
            Decision::Allow { break_glass } => {
                self.break_glass.set(break_glass);
                Ok(state)
            }
            Decision::Deny(why) => {
                self.record(s, "denied").await?;
                Err(ApiError::forbidden(why))
            }
        }
    }
}
