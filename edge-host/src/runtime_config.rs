//! Spin's runtime-config TOML (`spin up --runtime-config-file`): where each
//! sqlite database and key-value store lives, and the LLM backend. Same keys
//! as Spin, so one file serves both runners.

use anyhow::{Result, anyhow};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub sqlite_database: BTreeMap<String, SqliteDatabaseConfig>,
    #[serde(default)]
    pub key_value_store: BTreeMap<String, KeyValueStoreConfig>,
    #[serde(default)]
    pub llm_compute: Option<LlmComputeConfig>,
    /// Spin's `[[variables_provider]]` list; we support `type = "env"`.
    #[serde(default)]
    pub variables_provider: Vec<VariablesProviderConfig>,
    /// Directory the file sits in: relative paths are resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SqliteDatabaseConfig {
    /// A local libsql/SQLite file (`path`), or `":memory:"`.
    Spin {
        #[serde(default)]
        path: Option<String>,
    },
    /// A remote libsql server (sqld/Turso) over Hrana.
    Libsql { url: String, token: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum KeyValueStoreConfig {
    Spin {
        #[serde(default)]
        path: Option<String>,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LlmComputeConfig {
    RemoteHttp {
        url: String,
        #[serde(default)]
        auth_token: String,
        #[serde(default)]
        api_type: LlmApiType,
    },
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LlmApiType {
    #[default]
    Default,
    OpenAi,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum VariablesProviderConfig {
    Env {
        #[serde(default)]
        prefix: Option<String>,
        #[serde(default)]
        dotenv_path: Option<String>,
    },
}

impl RuntimeConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("cannot read runtime config {}: {e}", path.display()))?;
        let mut cfg: RuntimeConfig = toml::from_str(&text).map_err(|e| {
            anyhow!("invalid runtime config {}: {}", path.display(), e.to_string().trim_end())
        })?;
        cfg.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(cfg)
    }

    /// Resolves a path from the file against the file's directory.
    pub fn resolve(&self, path: &str) -> PathBuf {
        if path == ":memory:" {
            return PathBuf::from(path);
        }
        self.base_dir.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spin_keys() {
        let cfg: RuntimeConfig = toml::from_str(
            r#"
[sqlite_database.default]
type = "spin"
path = "db.sqlite"
[sqlite_database.remote]
type = "libsql"
url = "https://example.turso.io"
token = "t"
[key_value_store.default]
type = "spin"
path = ":memory:"
[llm_compute]
type = "remote_http"
url = "http://127.0.0.1:8090"
auth_token = "secret"
"#,
        )
        .unwrap();
        assert!(matches!(cfg.sqlite_database["remote"], SqliteDatabaseConfig::Libsql { .. }));
        let Some(LlmComputeConfig::RemoteHttp { api_type, .. }) = cfg.llm_compute else {
            panic!()
        };
        assert_eq!(api_type, LlmApiType::Default);
    }

    #[test]
    fn unknown_type_is_an_error() {
        let err = toml::from_str::<RuntimeConfig>("[sqlite_database.x]\ntype = \"postgres\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("postgres"), "{err}");
    }
}
