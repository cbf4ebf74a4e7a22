//! Settings from Spin variables (see the `[component.progress.variables]` of spin.toml).

use edge_common::auth::SessionPolicy;
use edge_common::crypto::SecretKey;
use edge_common::ApiError;

/// Audit entries are kept at least six years (HIPAA 45 CFR 164.316).
pub const MIN_AUDIT_RETENTION_DAYS: i64 = 6 * 366;

pub struct Config {
    pub master: SecretKey,
    pub session: SessionPolicy,
    /// How long a break-glass grant lasts, in seconds.
    pub break_glass_seconds: i64,
    pub audit_retention_days: i64,
    pub record_retention_days: i64,
    pub bootstrap_admin: Option<(String, String)>,
}

async fn var(name: &str) -> Option<String> {
    spin_sdk::variables::get(name).await.ok().filter(|v| !v.trim().is_empty())
}

async fn int_var(name: &str, default: i64, min: i64, max: i64) -> Result<i64, ApiError> {
    match var(name).await {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| ApiError::unavailable(format!("variable {name} must be an integer from {min} to {max}"))),
    }
}

impl Config {
    pub async fn load() -> Result<Config, ApiError> {
        let master_text = var("master_key")
            .await
            .ok_or_else(|| ApiError::unavailable("the master key is not configured (secret variable phi_master_key)"))?;
        let master = SecretKey::parse_master(&master_text)
            .map_err(|_| ApiError::unavailable("the master key must be 32 bytes, hex or base64 encoded"))?;
        let bootstrap_admin = match (var("bootstrap_admin_username").await, var("bootstrap_admin_password").await) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, Some(p)) => Some(("admin".to_string(), p)),
            _ => None,
        };
        Ok(Config {
            master,
            session: SessionPolicy {
                idle_timeout_secs: int_var("idle_timeout_seconds", 900, 1, 86_400).await?,
                absolute_timeout_secs: int_var("session_max_seconds", 43_200, 60, 7 * 86_400).await?,
            },
            // `break_glass_seconds` (for tests: a grant that expires in seconds)
            // overrides `break_glass_minutes` when set.
            break_glass_seconds: match var("break_glass_seconds").await {
                Some(_) => int_var("break_glass_seconds", 3600, 1, 24 * 3600).await?,
                None => int_var("break_glass_minutes", 60, 1, 24 * 60).await? * 60,
            },
            audit_retention_days: int_var("audit_retention_days", MIN_AUDIT_RETENTION_DAYS, MIN_AUDIT_RETENTION_DAYS, 100 * 366).await?,
            record_retention_days: int_var("record_retention_days", 10 * 366, 1, 100 * 366).await?,
            bootstrap_admin,
        })
    }
}
