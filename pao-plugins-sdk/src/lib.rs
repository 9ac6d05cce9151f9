//! The SDK for PAO plugin authors.
//!
//! A plugin is a Rust library crate (`crate-type = ["cdylib", "rlib"]`) built with
//! `cargo build --release --target wasm32-wasip2`. It implements [`Plugin`] over its own serde
//! types and exports it with [`export_action!`]; PAO loads the `.wasm` and runs it as the
//! action type `plugin:<name>`. Everything it does outside its own memory goes through the
//! [`Host`]: HTTP to granted hosts, log lines, granted secrets and a private key-value store.
//! In native `cargo test`, a [`MockHost`] stands in for PAO.
//!
//! ```
//! use pao_plugins_sdk::{json, Context, Descriptor, Error, Host, MockHost, Plugin};
//! use serde::{Deserialize, Serialize};
//!
//! pub struct Greet;
//!
//! #[derive(Deserialize)]
//! pub struct Input { name: String }
//!
//! #[derive(Serialize, Deserialize)]
//! pub struct Output { greeting: String }
//!
//! impl Plugin for Greet {
//!     type Input = Input;
//!     type Output = Output;
//!
//!     fn describe() -> Descriptor {
//!         Descriptor::new("greet", "0.1.0").input_schema(json!({
//!             "type": "object",
//!             "required": ["name"],
//!             "properties": { "name": { "type": "string" } }
//!         }))
//!     }
//!
//!     fn execute(host: &Host, _ctx: &Context, input: Input) -> Result<Output, Error> {
//!         host.info(&format!("greeting {}", input.name));
//!         Ok(Output { greeting: format!("hello, {}", input.name) })
//!     }
//! }
//!
//! // In the plugin crate: pao_plugins_sdk::export_action!(Greet);
//!
//! let mock = MockHost::new();
//! let out = mock.execute::<Greet>(&Context::test(), json!({ "name": "Ada" })).unwrap();
//! assert_eq!(out["greeting"], "hello, Ada");
//! assert_eq!(mock.logs()[0].1, "greeting Ada");
//! ```

mod host;
mod mock;
mod types;

#[doc(hidden)]
pub mod bindings {
    //! Guest bindings generated from `wit/action.wit` (the same file the host uses).
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "pao_plugins_sdk::bindings",
    });
}

#[doc(hidden)]
pub mod __private;

pub use host::{Host, HostApi, HttpRequestBuilder};
pub use mock::{MockHost, MockRequest};
pub use serde_json::{Value, json};
pub use types::{
    Context, Descriptor, Error, HeaderValue, HttpError, HttpRequest, HttpResponse, KvError, Level,
    SecretError, Violation,
};

/// Version of the `pao:action` WIT package this SDK targets.
pub const CONTRACT_VERSION: &str = "0.1.0";

/// One plugin action, over serde types.
///
/// The host hands the catalog item's rendered `config` as [`Plugin::Input`] and hands the
/// [`Plugin::Output`] back to the item as `result`. Execution is at-least-once: pass
/// [`Context::idempotency_key`] on to the remote system so the effect happens once.
pub trait Plugin {
    /// The action's input (the catalog item's `config`).
    type Input: serde::de::DeserializeOwned;
    /// The action's result; also what [`Plugin::rollback`] receives to undo the effect.
    type Output: serde::Serialize + serde::de::DeserializeOwned;

    /// Name, version, schemas and the capabilities the plugin needs.
    fn describe() -> Descriptor;

    /// Checks beyond the JSON Schema (cross-field rules). Called when catalogs are validated.
    fn validate(_input: &Self::Input) -> Result<(), Vec<Violation>> {
        Ok(())
    }

    /// Does the work.
    fn execute(host: &Host, ctx: &Context, input: Self::Input) -> Result<Self::Output, Error>;

    /// Undoes a completed [`Plugin::execute`] given its input and output. Only called when
    /// [`Descriptor::rollback`] was set.
    fn rollback(
        _host: &Host,
        _ctx: &Context,
        _input: Self::Input,
        _output: Self::Output,
    ) -> Result<(), Error> {
        Err(Error::failed("this plugin cannot roll back"))
    }
}

/// Exports a [`Plugin`] as the component's `pao:action/action` interface. Call it once, at
/// the root of the plugin crate.
///
/// ```ignore
/// pao_plugins_sdk::export_action!(SlackNotify);
/// ```
#[macro_export]
macro_rules! export_action {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __PaoActionExport;

        impl $crate::bindings::exports::pao::action::action::Guest for __PaoActionExport {
            fn describe() -> $crate::bindings::exports::pao::action::action::Descriptor {
                $crate::__private::describe::<$plugin>()
            }

            fn validate(
                input: ::std::string::String,
            ) -> ::core::result::Result<
                (),
                ::std::vec::Vec<$crate::bindings::exports::pao::action::action::Violation>,
            > {
                $crate::__private::validate::<$plugin>(input)
            }

            fn execute(
                ctx: $crate::bindings::exports::pao::action::action::Context,
                input: ::std::string::String,
            ) -> ::core::result::Result<
                $crate::bindings::exports::pao::action::action::Output,
                $crate::bindings::exports::pao::action::action::ActionError,
            > {
                $crate::__private::execute::<$plugin>(ctx, input)
            }

            fn rollback(
                ctx: $crate::bindings::exports::pao::action::action::Context,
                input: ::std::string::String,
                state: ::std::string::String,
            ) -> ::core::result::Result<(), $crate::bindings::exports::pao::action::action::ActionError>
            {
                $crate::__private::rollback::<$plugin>(ctx, input, state)
            }
        }

        // Natively (tests) there is no component to export from, and the export names would
        // not link into a native cdylib.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_plugin!(__PaoActionExport with_types_in $crate::bindings);
    };
}
