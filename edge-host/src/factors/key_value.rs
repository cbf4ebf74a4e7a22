//! `spin:key-value/key-value@3.0.0` backed by libsql.
//!
//! Same table as Spin's own SQLite store (`spin_key_value(store, key,
//! value)`): one namespace per store label, so labels may share a file.

use crate::factors::bindings::kv::{self, Error};
use crate::libsql_pool::DbPool;
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
    async fn conn(&self) -> Result<libsql::Connection, Error> {
        self.pool.get().await.map_err(other)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let conn = self.conn().await?;
        let mut rows = conn
            .query(
                "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2",
                (self.label.as_str(), key),
            )
            .await
            .map_err(other)?;
        let value = match rows.next().await.map_err(other)? {
            Some(row) => Some(row.get::<Vec<u8>>(0).map_err(other)?),
            None => None,
        };
        drop(rows);
        self.pool.put(conn);
        Ok(value)
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), Error> {
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
            (self.label.as_str(), key, value),
        )
        .await
        .map_err(other)?;
        self.pool.put(conn);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        let conn = self.conn().await?;
        conn.execute(
            "DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2",
            (self.label.as_str(), key),
        )
        .await
        .map_err(other)?;
        self.pool.put(conn);
        Ok(())
    }

    async fn keys(&self) -> Result<Vec<String>, Error> {
        let conn = self.conn().await?;
        let mut rows = conn
            .query(
                "SELECT key FROM spin_key_value WHERE store = ?1 ORDER BY key",
                [self.label.as_str()],
            )
            .await
            .map_err(other)?;
        let mut keys = Vec::new();
        while let Some(row) = rows.next().await.map_err(other)? {
            keys.push(row.get::<String>(0).map_err(other)?);
        }
        drop(rows);
        self.pool.put(conn);
        Ok(keys)
    }
}

/// Runs a store operation off the async runtime when the store is local
/// (see [`crate::libsql_pool::off_runtime`]).
async fn on<T: Send + 'static, F: Future<Output = T> + Send + 'static>(store: Arc<KvStore>, op: impl FnOnce(Arc<KvStore>) -> F) -> T {
    let local = store.pool.is_local();
    crate::libsql_pool::off_runtime(local, op(store)).await
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
        Ok(on(store_of(accessor, &store)?, move |s| async move { s.get(&key).await }).await)
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        Ok(on(store_of(accessor, &store)?, move |s| async move { s.set(&key, value).await }).await)
    }

    async fn delete(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        Ok(on(store_of(accessor, &store)?, move |s| async move { s.delete(&key).await }).await)
    }

    async fn exists(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        Ok(on(store_of(accessor, &store)?, move |s| async move { s.get(&key).await }).await.map(|v| v.is_some()))
    }

    async fn get_keys(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
    ) -> wasmtime::Result<(StreamReader<String>, FutureReader<Result<(), Error>>)> {
        let keys = on(store_of(accessor, &store)?, |s| async move { s.keys().await }).await;
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
