//! Spin manifest v2 (`spin.toml`) → a typed, validated application model.
//!
//! Everything downstream consumes [`App`], never TOML. Errors name the file,
//! the line and the key so an operator can fix a manifest without guessing.

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A validated Spin application.
#[derive(Debug, Clone)]
pub struct App {
    pub name: String,
    pub variables: BTreeMap<String, VariableDecl>,
    pub routes: Vec<HttpRoute>,
    pub components: BTreeMap<String, ComponentDecl>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct VariableDecl {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    /// Secret values are never logged; edge-host logs no variable values at all.
    #[serde(default)]
    #[allow(dead_code)]
    pub secret: bool,
    #[serde(default)]
    #[allow(dead_code)]
    pub description: Option<String>,
}

/// One `[[trigger.http]]` entry.
#[derive(Debug, Clone)]
pub struct HttpRoute {
    pub pattern: RoutePattern,
    pub component: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutePattern {
    /// `/a/b`: matches exactly that path.
    Exact(String),
    /// `/a/...`: matches `/a` and everything below it.
    Wildcard(String),
    /// `{ private = true }`: reachable only from inside the app.
    Private,
}

impl RoutePattern {
    /// The route as written in the manifest (used in `spin-matched-route`).
    pub fn as_manifest_str(&self) -> String {
        match self {
            RoutePattern::Exact(p) => p.clone(),
            RoutePattern::Wildcard(p) if p == "/" => "/...".into(),
            RoutePattern::Wildcard(p) => format!("{p}/..."),
            RoutePattern::Private => String::new(),
        }
    }
}

/// One `[component.<id>]` entry.
#[derive(Debug, Clone)]
pub struct ComponentDecl {
    pub id: String,
    pub source: PathBuf,
    pub allowed_outbound_hosts: Vec<String>,
    pub key_value_stores: Vec<String>,
    pub sqlite_databases: Vec<String>,
    pub ai_models: Vec<String>,
    /// `[component.x.variables]`: name → template (`"{{ app_var }}"`).
    pub variables: BTreeMap<String, String>,
    pub environment: BTreeMap<String, String>,
    /// `[component.x.dependencies]`: imported interface → where its export comes from.
    pub dependencies: BTreeMap<String, Dependency>,
}

/// A component dependency as Spin 3+ declares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dependency {
    /// `{ path = "dep.wasm" }`: a component file providing the interface.
    Path(PathBuf),
    /// `{ component = "other" }`: another component of this app exports it.
    Component { id: String, export: Option<String> },
}

// ---- raw TOML shapes -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    spin_manifest_version: i64,
    application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, VariableDecl>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApplication {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    version: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    authors: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    trigger: Option<toml::Table>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<RawHttpTrigger>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpTrigger {
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<String>,
    route: RawRoute,
    component: String,
    #[serde(default)]
    #[allow(dead_code)]
    executor: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRoute {
    Path(String),
    Private { private: bool },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    source: RawSource,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    sqlite_databases: Vec<String>,
    #[serde(default)]
    ai_models: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    dependencies: BTreeMap<String, RawDependency>,
    #[serde(default)]
    #[allow(dead_code)]
    files: Vec<toml::Value>,
    #[serde(default)]
    #[allow(dead_code)]
    exclude_files: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)]
    build: Option<toml::Table>,
    #[serde(default)]
    #[allow(dead_code)]
    tool: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSource {
    Path(String),
    Remote {
        #[allow(dead_code)]
        url: String,
        #[allow(dead_code)]
        digest: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDependency {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    component: Option<String>,
    #[serde(default)]
    export: Option<String>,
}

// ---- loading ----------------------------------------------------------------

/// Reads and validates a manifest file.
pub fn load(path: &Path) -> Result<App> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read manifest {}", path.display()))?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    parse(&text, path, &base_dir)
}

/// Parses manifest text; `file` is only used in error messages.
pub fn parse(text: &str, file: &Path, base_dir: &Path) -> Result<App> {
    let raw: RawManifest = toml::from_str(text)
        .map_err(|e| anyhow!("invalid manifest {}: {}", file.display(), e.to_string().trim_end()))?;
    let here = |key: &str, msg: String| -> anyhow::Error {
        anyhow!("invalid manifest {}:{}: `{key}`: {msg}", file.display(), line_of(text, key))
    };
    if raw.spin_manifest_version != 2 {
        return Err(here(
            "spin_manifest_version",
            format!("version {} is not supported (only 2)", raw.spin_manifest_version),
        ));
    }
    for name in raw.variables.keys() {
        check_variable_name(name).map_err(|m| here(name, m))?;
    }
    for (name, decl) in &raw.variables {
        if decl.required && decl.default.is_some() {
            return Err(here(name, "a variable cannot be both required and have a default".into()));
        }
    }

    let mut components = BTreeMap::new();
    for (id, rc) in raw.component {
        let source = match rc.source {
            RawSource::Path(p) => base_dir.join(p),
            RawSource::Remote { .. } => {
                return Err(here(
                    &format!("component.{id}"),
                    "remote (url/digest) component sources are not supported by edge-host; \
                     download the component and give its path"
                        .into(),
                ));
            }
        };
        for (var, template) in &rc.variables {
            check_variable_name(var).map_err(|m| here(var, m))?;
            for referenced in template_references(template).map_err(|m| here(var, m))? {
                if !raw.variables.contains_key(&referenced) {
                    return Err(here(
                        var,
                        format!("refers to application variable `{referenced}`, which [variables] does not declare"),
                    ));
                }
            }
        }
        for host in &rc.allowed_outbound_hosts {
            crate::factors::outbound_http::AllowedHost::parse(host)
                .map_err(|m| here("allowed_outbound_hosts", format!("{host:?}: {m}")))?;
        }
        let mut dependencies = BTreeMap::new();
        for (iface, dep) in rc.dependencies {
            let dep = match (dep.path, dep.component) {
                (Some(p), None) => Dependency::Path(base_dir.join(p)),
                (None, Some(c)) => Dependency::Component { id: c, export: dep.export },
                _ => {
                    return Err(here(
                        &iface,
                        "a dependency needs exactly one of `path` or `component`".into(),
                    ));
                }
            };
            dependencies.insert(iface, dep);
        }
        components.insert(
            id.clone(),
            ComponentDecl {
                id,
                source,
                allowed_outbound_hosts: rc.allowed_outbound_hosts,
                key_value_stores: rc.key_value_stores,
                sqlite_databases: rc.sqlite_databases,
                ai_models: rc.ai_models,
                variables: rc.variables,
                environment: rc.environment,
                dependencies,
            },
        );
    }
    for c in components.values() {
        for dep in c.dependencies.values() {
            if let Dependency::Component { id, .. } = dep
                && !components.contains_key(id)
            {
                return Err(here(id, format!("dependency names unknown component `{id}`")));
            }
        }
    }

    let mut routes = Vec::new();
    for t in raw.trigger.http {
        if !components.contains_key(&t.component) {
            return Err(here(
                "component",
                format!("trigger refers to component `{}`, which is not defined", t.component),
            ));
        }
        let pattern = match t.route {
            RawRoute::Private { private: true } => RoutePattern::Private,
            RawRoute::Private { private: false } => {
                return Err(here("route", "`private = false` is not a route".into()));
            }
            RawRoute::Path(p) => parse_route(&p).map_err(|m| here("route", format!("{p:?}: {m}")))?,
        };
        if pattern != RoutePattern::Private
            && routes.iter().any(|r: &HttpRoute| r.pattern == pattern)
        {
            return Err(here("route", format!("route {:?} is defined twice", pattern.as_manifest_str())));
        }
        routes.push(HttpRoute { pattern, component: t.component });
    }

    Ok(App {
        name: raw.application.name,
        variables: raw.variables,
        routes,
        components,
    })
}

fn parse_route(route: &str) -> Result<RoutePattern, String> {
    if !route.starts_with('/') {
        return Err("a route must start with `/`".into());
    }
    if let Some(prefix) = route.strip_suffix("/...") {
        let prefix = if prefix.is_empty() { "/" } else { prefix };
        return Ok(RoutePattern::Wildcard(prefix.to_string()));
    }
    if route.contains("...") {
        return Err("`...` may only end a route".into());
    }
    let trimmed = if route.len() > 1 { route.trim_end_matches('/') } else { route };
    Ok(RoutePattern::Exact(trimmed.to_string()))
}

/// Spin's variable names: lower-case letters, digits and underscores, starting with a letter.
pub fn check_variable_name(name: &str) -> Result<(), String> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid variable name {name:?}: use lower-case letters, digits and `_`, starting with a letter"
        ))
    }
}

/// The application variables a `{{ name }}` template refers to.
pub fn template_references(template: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed `{{{{` in template {template:?}"))?;
        let name = after[..end].trim();
        check_variable_name(name)?;
        out.push(name.to_string());
        rest = &after[end + 2..];
    }
    Ok(out)
}

/// Expands a `{{ name }}` template with `lookup`.
pub fn expand_template(
    template: &str,
    mut lookup: impl FnMut(&str) -> Result<String>,
) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            bail!("unclosed `{{{{` in template");
        };
        out.push_str(&lookup(after[..end].trim())?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// 1-based line of the first line that mentions `key`, for error messages.
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| l.contains(key))
        .map(|i| i + 1)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<App> {
        parse(s, Path::new("spin.toml"), Path::new("/app"))
    }

    const GOOD: &str = r#"
spin_manifest_version = 2
[application]
name = "demo"
[variables]
greeting = { default = "hi" }
token = { required = true, secret = true }
[[trigger.http]]
route = "/api/..."
component = "api"
[[trigger.http]]
route = "/health"
component = "api"
[[trigger.http]]
route = { private = true }
component = "api"
[component.api]
source = "api.wasm"
key_value_stores = ["default"]
allowed_outbound_hosts = ["http://127.0.0.1:*"]
[component.api.variables]
message = "{{ greeting }} there"
"#;

    #[test]
    fn parses_a_full_manifest() {
        let app = parse_str(GOOD).unwrap();
        assert_eq!(app.name, "demo");
        assert_eq!(app.routes.len(), 3);
        assert_eq!(app.routes[0].pattern, RoutePattern::Wildcard("/api".into()));
        assert_eq!(app.routes[1].pattern, RoutePattern::Exact("/health".into()));
        assert_eq!(app.routes[2].pattern, RoutePattern::Private);
        assert_eq!(app.components["api"].source, PathBuf::from("/app/api.wasm"));
        assert!(app.variables["token"].secret);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let bad = GOOD.replace("key_value_stores", "key_value_storez");
        let err = parse_str(&bad).unwrap_err().to_string();
        assert!(err.contains("spin.toml"), "{err}");
        assert!(err.contains("line 19"), "{err}");
        assert!(err.contains("key_value_storez"), "{err}");
    }

    #[test]
    fn undefined_component_and_variable_are_errors() {
        let bad = GOOD.replace("component = \"api\"\n[[trigger.http]]\nroute = \"/health\"", "component = \"nope\"\n[[trigger.http]]\nroute = \"/health\"");
        let err = parse_str(&bad).unwrap_err().to_string();
        assert!(err.contains("`nope`") && err.contains("spin.toml:"), "{err}");
        let bad = GOOD.replace("{{ greeting }}", "{{ missing }}");
        let err = parse_str(&bad).unwrap_err().to_string();
        assert!(err.contains("missing") && err.contains("message"), "{err}");
    }

    #[test]
    fn templates_expand() {
        let s = expand_template("a {{ x }} b {{y}}", |n| Ok(n.to_uppercase())).unwrap();
        assert_eq!(s, "a X b Y");
        assert!(template_references("{{ Bad }}").is_err());
    }
}
