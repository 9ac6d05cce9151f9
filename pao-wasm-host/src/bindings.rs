//! Host-side bindings generated from `wit/action.wit`, a copy of the SDK's
//! `pao-plugins-sdk/wit/action.wit` kept in this crate so that it packages on its own
//! (`repo-checks/tests/copies.rs` fails when the two differ): a contract change shows up here
//! as a compile error.

wasmtime::component::bindgen!({
    path: "wit",
    world: "plugin",
    imports: { default: async },
    exports: { default: async },
});
