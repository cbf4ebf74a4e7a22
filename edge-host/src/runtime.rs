//! The wasmtime side: one `Engine` for the process, each component compiled
//! once and pre-instantiated against a `Linker` holding every host
//! interface, and a fresh `Store` per instance with the component's grants.

use crate::factors::key_value::{KeyValueCtx, KeyValueFactor, KeyValueStores};
use crate::factors::llm::{LlmBackend, LlmCtx};
use crate::factors::outbound_http::{AllowedHost, OutboundHooks};
use crate::factors::sqlite::{SqliteCtx, SqliteDatabases, SqliteFactor};
use crate::factors::variables::{ResolvedVariables, VariablesCtx, VariablesFactor};
use crate::factors::bindings;
use crate::manifest::{App, ComponentDecl};
use crate::runtime_config::RuntimeConfig;
use crate::state::InstanceState;
use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::p3::bindings::ServicePre;

/// How often the epoch ticks: the granularity of guest time slices.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits applied to every instance.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: usize,
}

/// Everything shared by all instances of the app.
pub struct Runtime {
    pub components: BTreeMap<String, Arc<PreparedComponent>>,
}

/// A compiled, pre-instantiated component plus what it was granted.
pub struct PreparedComponent {
    pub id: String,
    pub pre: ServicePre<InstanceState>,
    engine: Engine,
    limits: Limits,
    environment: Vec<(String, String)>,
    outbound: Arc<Vec<AllowedHost>>,
    variables: Arc<BTreeMap<String, String>>,
    resolved: Arc<ResolvedVariables>,
    kv_granted: Arc<HashSet<String>>,
    kv: Arc<KeyValueStores>,
    sqlite_granted: Arc<HashSet<String>>,
    sqlite: Arc<SqliteDatabases>,
    llm_granted: Arc<HashSet<String>>,
    llm: Arc<LlmBackend>,
}

pub fn engine() -> Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model_async(true);
    config.epoch_interruption(true);
    // `EDGE_HOST_PROFILE=perfmap`: write /tmp/perf-<pid>.map so that `perf`
    // names the guests' compiled functions.
    if std::env::var("EDGE_HOST_PROFILE").is_ok_and(|v| v == "perfmap") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let engine = Engine::new(&config)?;
    // Epoch ticker: lets long-running guests yield and be timed out.
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })?;
    Ok(engine)
}

fn linker(engine: &Engine) -> Result<Linker<InstanceState>> {
    let mut linker = Linker::<InstanceState>::new(engine);
    // spin-sdk 7 components import WASI 0.2 (Rust's wasip2 std) and 0.3.
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    bindings::vars::add_to_linker::<_, VariablesFactor>(&mut linker, |s| &mut s.variables)?;
    bindings::kv::add_to_linker::<_, KeyValueFactor>(&mut linker, InstanceState::key_value_view)?;
    bindings::sqlite::add_to_linker::<_, SqliteFactor>(&mut linker, InstanceState::sqlite_view)?;
    bindings::llm::add_to_linker::<_, wasmtime::component::HasSelf<LlmCtx>>(&mut linker, |s| {
        &mut s.llm
    })?;
    Ok(linker)
}

impl Runtime {
    /// Compiles every routed component and opens the stores and databases
    /// they are granted.
    pub async fn new(
        app: &App,
        rc: &RuntimeConfig,
        data_dir: &Path,
        limits: Limits,
        env: &HashMap<String, String>,
    ) -> Result<Self> {
        let engine = engine()?;
        let linker = linker(&engine)?;
        let resolved = Arc::new(ResolvedVariables::resolve(app, rc, env)?);
        let kv = Arc::new(
            KeyValueStores::open(
                app.components.values().flat_map(|c| c.key_value_stores.clone()),
                rc,
                data_dir,
            )
            .await?,
        );
        let sqlite = Arc::new(
            SqliteDatabases::open(
                app.components.values().flat_map(|c| c.sqlite_databases.clone()),
                rc,
                data_dir,
            )
            .await?,
        );
        let llm = Arc::new(LlmBackend::new(rc.llm_compute.clone()));

        let routed: HashSet<&str> = app.routes.iter().map(|r| r.component.as_str()).collect();
        let mut components = BTreeMap::new();
        for decl in app.components.values().filter(|c| routed.contains(c.id.as_str())) {
            let component = compile(&engine, app, decl)?;
            let pre = linker
                .instantiate_pre(&component)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("component `{}` imports an interface edge-host does not provide", decl.id))?;
            let pre = ServicePre::new(pre).map_err(anyhow::Error::from).with_context(|| {
                format!("component `{}` does not export wasi:http/handler@0.3.0 (build it with spin-sdk 7 `#[http_service]`)", decl.id)
            })?;
            let set = |v: &Vec<String>| Arc::new(v.iter().cloned().collect::<HashSet<_>>());
            components.insert(
                decl.id.clone(),
                Arc::new(PreparedComponent {
                    id: decl.id.clone(),
                    pre,
                    engine: engine.clone(),
                    limits,
                    environment: decl.environment.clone().into_iter().collect(),
                    outbound: Arc::new(
                        decl.allowed_outbound_hosts
                            .iter()
                            .map(|h| AllowedHost::parse(h).map_err(anyhow::Error::msg))
                            .collect::<Result<_>>()?,
                    ),
                    variables: Arc::new(decl.variables.clone()),
                    resolved: resolved.clone(),
                    kv_granted: set(&decl.key_value_stores),
                    kv: kv.clone(),
                    sqlite_granted: set(&decl.sqlite_databases),
                    sqlite: sqlite.clone(),
                    llm_granted: set(&decl.ai_models),
                    llm: llm.clone(),
                }),
            );
        }
        Ok(Self { components })
    }
}

fn compile(engine: &Engine, app: &App, decl: &ComponentDecl) -> Result<Component> {
    let bytes = read_component(&decl.id, &decl.source)?;
    let bytes = if decl.dependencies.is_empty() {
        bytes
    } else {
        crate::compose::compose(app, decl, bytes)
            .with_context(|| format!("component `{}`: cannot satisfy its dependencies", decl.id))?
    };
    Component::from_binary(engine, &bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("component `{}`: cannot compile {}", decl.id, decl.source.display()))
}

/// Reads a component file, naming the component and path when it is missing.
pub fn read_component(id: &str, path: &Path) -> Result<Vec<u8>> {
    if !path.is_file() {
        bail!(
            "component `{id}`: source file {} does not exist (build the components first: `cargo xtask build-components`)",
            path.display()
        );
    }
    std::fs::read(path).with_context(|| format!("component `{id}`: cannot read {}", path.display()))
}

impl PreparedComponent {
    /// A fresh store holding this component's grants and limits.
    pub fn new_store(&self) -> Store<InstanceState> {
        let mut wasi = WasiCtxBuilder::new();
        // Guest stderr goes to our stderr (panics are visible); stdout is
        // dropped so that nothing a component prints lands in the logs by accident.
        wasi.inherit_stderr();
        for (k, v) in &self.environment {
            wasi.env(k, v);
        }
        let state = InstanceState {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            outbound: OutboundHooks { allowed: self.outbound.clone() },
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes)
                .trap_on_grow_failure(false)
                .build(),
            variables: VariablesCtx { templates: self.variables.clone(), app: self.resolved.clone() },
            key_value: KeyValueCtx { granted: self.kv_granted.clone(), stores: self.kv.clone() },
            sqlite: SqliteCtx { granted: self.sqlite_granted.clone(), databases: self.sqlite.clone() },
            llm: LlmCtx { granted: self.llm_granted.clone(), backend: self.llm.clone() },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // Yield to the executor every tick so timeouts are noticed even while
        // a guest computes without awaiting anything.
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        store.set_epoch_deadline(1);
        store
    }
}
