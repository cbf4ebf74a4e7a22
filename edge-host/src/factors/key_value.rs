//! `spin:key-value/key-value@3.0.0` backed by libsql.
//!
//! Same table as Spin's own SQLite store (`spin_key_value(store, key,
//! value)`): one namespace per store label, so labels may share a file.

use crate::factors::bindings::kv::{self, Error};
use crate::libsql_pool::{Conn, DbPool};
use crate::runtime_config::{KeyValueStoreConfig, RuntimeConfig};
use anyhow::Result;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::{
    Accessor, FutureReader, HasData, Resource, ResourceTable, StreamReader,
};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS spin_key_value (
    store TEXT NOT NULL,
    key   TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (store, key)
)";

/// One labelled store: a namespace inside a libsql database.
pub struct KvStore {
    label: String,
    pool: Arc<DbPool>,
}

impl KvStore {
    async fn conn(&self) -> Result<Conn, Error> {
        self.pool.get().await.map_err(other)
    }

    /// Runs one statement (a cached prepared one) and gives the connection back.
    async fn run(&self, sql: &str, params: Vec<libsql::Value>) -> Result<Vec<Vec<libsql::Value>>, Error> {
        let conn = self.conn().await?;
        let (_, rows) = conn.run(sql, params).await.map_err(other)?;
        self.pool.put(conn);
        Ok(rows)
    }

    fn params(&self, key: &str) -> Vec<libsql::Value> {
        vec![libsql::Value::Text(self.label.clone()), libsql::Value::Text(key.to_string())]
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let rows = self.run("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2", self.params(key)).await?;
        match rows.into_iter().next().and_then(|r| r.into_iter().next()) {
            None => Ok(None),
            Some(libsql::Value::Blob(b)) => Ok(Some(b)),
            Some(libsql::Value::Text(t)) => Ok(Some(t.into_bytes())),
            Some(_) => Err(Error::Other("a stored value is not a blob".into())),
        }
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), Error> {
        let mut params = self.params(key);
        params.push(libsql::Value::Blob(value));
        self.run(
            "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
            params,
        )
        .await
        .map(drop)
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        self.run("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2", self.params(key)).await.map(drop)
    }

    async fn keys(&self) -> Result<Vec<String>, Error> {
        let rows = self
            .run("SELECT key FROM spin_key_value WHERE store = ?1 ORDER BY key", vec![libsql::Value::Text(self.label.clone())])
            .await?;
        rows.into_iter()
            .map(|r| match r.into_iter().next() {
                Some(libsql::Value::Text(t)) => Ok(t),
                _ => Err(Error::Other("a stored key is not text".into())),
            })
            .collect()
    }
}

/// Runs a store operation off the async runtime when the store is local
/// (see [`crate::libsql_pool::off_runtime`]).
async fn on<T: Send + 'static, F: Future<Output = T> + Send + 'static>(store: Arc<KvStore>, op: impl FnOnce(Arc<KvStore>) -> F) -> T {
    let local = store.pool.is_local();
    crate::libsql_pool::off_runtime(local, op(store)).await
}

/// Runs a read: in place where the database allows it
/// ([`DbPool::reads_in_place`]), else like [`on`].
async fn on_read<T: Send + 'static, F: Future<Output = T> + Send + 'static>(store: Arc<KvStore>, op: impl FnOnce(Arc<KvStore>) -> F) -> T {
    if store.pool.reads_in_place() {
        op(store).await
    } else {
        on(store, op).await
    }
}

/// Like [`on`] for an operation that writes: it waits for the database's
/// writer turn first (see [`DbPool::write_turn`]) and answers once the
/// write is on disk ([`DbPool::durable`]), after giving the turn up.
async fn on_write<F: Future<Output = Result<(), Error>> + Send + 'static>(
    store: Arc<KvStore>,
    op: impl FnOnce(Arc<KvStore>) -> F,
) -> Result<(), Error> {
    let pool = store.pool.clone();
    let turn = pool.write_turn().await;
    let result = on(store, op).await;
    drop(turn);
    result?;
    pool.durable().await.map_err(other)
}

fn other(e: impl std::fmt::Display) -> Error {
    Error::Other(e.to_string())
}

/// Every store the app can reach, by label.
#[derive(Default)]
pub struct KeyValueStores {
    stores: BTreeMap<String, Arc<KvStore>>,
}

impl KeyValueStores {
    /// Opens the store of every granted label: the runtime config's entry, or
    /// `<data-dir>/key_value.db` for `default`. Labels naming the same file
    /// share one pool.
    pub async fn open(
        labels: impl IntoIterator<Item = String>,
        rc: &RuntimeConfig,
        data_dir: &Path,
    ) -> Result<Self> {
        let mut pools: BTreeMap<PathBuf, Arc<DbPool>> = BTreeMap::new();
        let mut stores = BTreeMap::new();
        for label in labels.into_iter().collect::<HashSet<_>>() {
            let path = match rc.key_value_store.get(&label) {
                Some(KeyValueStoreConfig::Spin { path: Some(p) }) => rc.resolve(p),
                Some(KeyValueStoreConfig::Spin { path: None }) => {
                    data_dir.join(format!("key_value_{label}.db"))
                }
                None if label == "default" => data_dir.join("key_value.db"),
                None => continue,
            };
            let pool = match pools.get(&path) {
                Some(p) => p.clone(),
                None => {
                    let pool = Arc::new(DbPool::open_local(&path).await?);
                    pool.get().await?.execute(SCHEMA, ()).await?;
                    pools.insert(path.clone(), pool.clone());
                    pool
                }
            };
            stores.insert(label.clone(), Arc::new(KvStore { label, pool }));
        }
        Ok(Self { stores })
    }
}

/// Per-instance state: the labels this component may open.
pub struct KeyValueCtx {
    pub granted: Arc<HashSet<String>>,
    pub stores: Arc<KeyValueStores>,
}

/// The `store` resource.
pub struct StoreHandle(Arc<KvStore>);

pub struct KeyValueView<'a> {
    pub ctx: &'a mut KeyValueCtx,
    pub table: &'a mut ResourceTable,
}

pub struct KeyValueFactor;

impl HasData for KeyValueFactor {
    type Data<'a> = KeyValueView<'a>;
}

impl kv::Host for KeyValueView<'_> {}

impl kv::HostStore for KeyValueView<'_> {
    fn drop(&mut self, store: Resource<StoreHandle>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

fn store_of<T>(
    accessor: &Accessor<T, KeyValueFactor>,
    store: &Resource<StoreHandle>,
) -> wasmtime::Result<Arc<KvStore>> {
    accessor.with(|mut access| Ok(access.get().table.get(store)?.0.clone()))
}

impl<T> kv::HostStoreWithStore<T> for KeyValueFactor {
    async fn open(
        accessor: &Accessor<T, Self>,
        label: String,
    ) -> wasmtime::Result<Result<Resource<StoreHandle>, Error>> {
        accessor.with(|mut access| {
            let view = access.get();
            if !view.ctx.granted.contains(&label) {
                return Ok(Err(Error::AccessDenied));
            }
            let Some(store) = view.ctx.stores.stores.get(&label).cloned() else {
                return Ok(Err(Error::NoSuchStore));
            };
            Ok(Ok(view.table.push(StoreHandle(store))?))
        })
    }

    async fn get(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        Ok(on_read(store_of(accessor, &store)?, move |s| async move { s.get(&key).await }).await)
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        Ok(on_write(store_of(accessor, &store)?, move |s| async move { s.set(&key, value).await }).await)
    }

    async fn delete(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        Ok(on_write(store_of(accessor, &store)?, move |s| async move { s.delete(&key).await }).await)
    }

    async fn exists(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        Ok(on_read(store_of(accessor, &store)?, move |s| async move { s.get(&key).await }).await.map(|v| v.is_some()))
    }

    async fn get_keys(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
    ) -> wasmtime::Result<(StreamReader<String>, FutureReader<Result<(), Error>>)> {
        let keys = on_read(store_of(accessor, &store)?, |s| async move { s.keys().await }).await;
        accessor.with(|mut access| {
            let (keys, result) = match keys {
                Ok(k) => (k, Ok(())),
                Err(e) => (Vec::new(), Err(e)),
            };
            let stream = StreamReader::new(&mut access, keys)?;
            let done = FutureReader::new(&mut access, async move {
                wasmtime::Result::<Result<(), Error>>::Ok(result)
            })?;
            Ok((stream, done))
        })
    }
}
