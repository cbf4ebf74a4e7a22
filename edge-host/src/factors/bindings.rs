//! Host bindings for the Spin interfaces in `edge-host/wit`.

wasmtime::component::bindgen!({
    path: "wit",
    world: "edge-host:spin/host",
    imports: {
        "spin:sqlite/sqlite.[static]connection.open": async | trappable,
        "spin:sqlite/sqlite.[method]connection.execute": async | trappable,
        "fermyon:spin/llm.infer": async | trappable,
        "fermyon:spin/llm.generate-embeddings": async | trappable,
        default: trappable,
    },
    with: {
        "spin:sqlite/sqlite.connection": crate::factors::sqlite::Connection,
        "spin:key-value/key-value.store": crate::factors::key_value::StoreHandle,
    },
    require_store_data_send: true,
});

pub use spin::key_value::key_value as kv;
pub use spin::sqlite::sqlite;
pub use spin::variables::variables as vars;
pub use fermyon::spin::llm;
