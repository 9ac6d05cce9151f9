//! Host-side bindings generated from the one WIT file the SDK also uses
//! (`pao-plugins-sdk/wit/action.wit`): a contract change shows up here as a compile error.

wasmtime::component::bindgen!({
    path: "../pao-plugins-sdk/wit",
    world: "plugin",
    imports: { default: async },
    exports: { default: async },
});
