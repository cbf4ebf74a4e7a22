//! The data of one component instance's `Store`: WASI, wasi:http and each
//! factor's per-instance context.

use crate::factors::key_value::{KeyValueCtx, KeyValueView};
use crate::factors::llm::LlmCtx;
use crate::factors::outbound_http::OutboundHooks;
use crate::factors::sqlite::{SqliteCtx, SqliteView};
use crate::factors::variables::VariablesCtx;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub struct InstanceState {
    pub table: ResourceTable,
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub outbound: OutboundHooks,
    pub limits: StoreLimits,
    pub variables: VariablesCtx,
    pub key_value: KeyValueCtx,
    pub sqlite: SqliteCtx,
    pub llm: LlmCtx,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.outbound }
    }
}

impl InstanceState {
    pub fn sqlite_view(&mut self) -> SqliteView<'_> {
        SqliteView { ctx: &mut self.sqlite, table: &mut self.table }
    }

    pub fn key_value_view(&mut self) -> KeyValueView<'_> {
        KeyValueView { ctx: &mut self.key_value, table: &mut self.table }
    }
}
