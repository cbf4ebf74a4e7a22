//! `spin:variables/variables@3.0.0`: application variables resolved once at
//! start-up (environment provider first, then the manifest default), and
//! component variables expanded from their `{{ }}` templates on each `get`.
//!
//! Values are never logged: some are secrets.

use crate::factors::bindings::vars;
use crate::manifest::{self, App};
use crate::runtime_config::{RuntimeConfig, VariablesProviderConfig};
use anyhow::{Result, bail};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use wasmtime::component::{Accessor, HasData};

/// Application variables after resolution: name → value.
#[derive(Debug, Default)]
pub struct ResolvedVariables {
    values: BTreeMap<String, String>,
}

impl ResolvedVariables {
    /// Resolves every `[variables]` entry. A required variable with no value
    /// from any provider is a start-up error naming it.
    pub fn resolve(app: &App, rc: &RuntimeConfig, env: &HashMap<String, String>) -> Result<Self> {
        let providers = env_providers(rc)?;
        let mut values = BTreeMap::new();
        for (name, decl) in &app.variables {
            let from_env = providers.iter().find_map(|p| p.get(name, env));
            match (from_env, &decl.default) {
                (Some(v), _) => {
                    values.insert(name.clone(), v);
                }
                (None, Some(d)) => {
                    values.insert(name.clone(), d.clone());
                }
                (None, None) if decl.required => bail!(
                    "required variable `{name}` has no value: set {} or give it a default in the manifest",
                    env_key(DEFAULT_PREFIX, name)
                ),
                (None, None) => {}
            }
        }
        Ok(Self { values })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
}

const DEFAULT_PREFIX: &str = "SPIN_VARIABLE";

fn env_key(prefix: &str, name: &str) -> String {
    format!("{prefix}_{}", name.to_ascii_uppercase())
}

/// One environment-style provider: a prefix and, optionally, a dotenv file.
struct EnvProvider {
    prefix: String,
    dotenv: HashMap<String, String>,
}

impl EnvProvider {
    fn get(&self, name: &str, env: &HashMap<String, String>) -> Option<String> {
        let key = env_key(&self.prefix, name);
        env.get(&key).or_else(|| self.dotenv.get(&key)).cloned()
    }
}

fn env_providers(rc: &RuntimeConfig) -> Result<Vec<EnvProvider>> {
    let mut out = Vec::new();
    for p in &rc.variables_provider {
        let VariablesProviderConfig::Env { prefix, dotenv_path } = p;
        let dotenv = match dotenv_path {
            Some(path) => parse_dotenv(&std::fs::read_to_string(rc.resolve(path)).map_err(
                |e| anyhow::anyhow!("cannot read dotenv file {path}: {e}"),
            )?),
            None => HashMap::new(),
        };
        out.push(EnvProvider {
            prefix: prefix.clone().unwrap_or_else(|| DEFAULT_PREFIX.into()),
            dotenv,
        });
    }
    if out.is_empty() {
        out.push(EnvProvider { prefix: DEFAULT_PREFIX.into(), dotenv: HashMap::new() });
    }
    Ok(out)
}

fn parse_dotenv(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

/// What one component may read: its own `[component.x.variables]`.
pub struct VariablesCtx {
    pub templates: Arc<BTreeMap<String, String>>,
    pub app: Arc<ResolvedVariables>,
}

impl VariablesCtx {
    pub fn get(&self, name: &str) -> Result<String, vars::Error> {
        if let Err(msg) = manifest::check_variable_name(name) {
            return Err(vars::Error::InvalidName(msg));
        }
        let Some(template) = self.templates.get(name) else {
            return Err(vars::Error::Undefined(format!("no variable named `{name}` for this component")));
        };
        manifest::expand_template(template, |app_var| match self.app.get(app_var) {
            Some(v) => Ok(v.to_string()),
            None => bail!("application variable `{app_var}` has no value"),
        })
        .map_err(|e| vars::Error::Undefined(e.to_string()))
    }
}

pub struct VariablesFactor;

impl HasData for VariablesFactor {
    type Data<'a> = &'a mut VariablesCtx;
}

impl vars::Host for &mut VariablesCtx {}

impl<T> vars::HostWithStore<T> for VariablesFactor {
    async fn get(
        accessor: &Accessor<T, Self>,
        name: String,
    ) -> wasmtime::Result<Result<String, vars::Error>> {
        Ok(accessor.with(|mut access| access.get().get(&name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn app() -> App {
        crate::manifest::parse(
            r#"
spin_manifest_version = 2
[application]
name = "t"
[variables]
greeting = { default = "hello" }
api_key = { required = true, secret = true }
[component.c]
source = "c.wasm"
[component.c.variables]
msg = "{{ greeting }}, {{ api_key }}"
"#,
            Path::new("spin.toml"),
            Path::new("."),
        )
        .unwrap()
    }

    #[test]
    fn env_overrides_and_required() {
        let app = app();
        let rc = RuntimeConfig::default();
        let err = ResolvedVariables::resolve(&app, &rc, &HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("api_key"), "{err}");
        let env = HashMap::from([
            ("SPIN_VARIABLE_API_KEY".to_string(), "k1".to_string()),
            ("SPIN_VARIABLE_GREETING".to_string(), "hi".to_string()),
        ]);
        let resolved = Arc::new(ResolvedVariables::resolve(&app, &rc, &env).unwrap());
        let ctx = VariablesCtx {
            templates: Arc::new(app.components["c"].variables.clone()),
            app: resolved,
        };
        assert_eq!(ctx.get("msg").unwrap(), "hi, k1");
        assert!(matches!(ctx.get("nope"), Err(vars::Error::Undefined(_))));
        assert!(matches!(ctx.get("Bad-Name"), Err(vars::Error::InvalidName(_))));
    }
}
