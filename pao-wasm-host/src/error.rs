//! Errors: [`LoadError`] when a plugin folder or file cannot become an action,
//! [`PluginError`] when a call fails (typed traps and the plugin's own errors), each naming
//! the plugin.

use std::path::PathBuf;
use std::time::Duration;

use std::borrow::Cow;

use pao_core::action::ActionError;
use pao_core::redact::Redactor;

/// A plugin could not be loaded. Each message names the file or plugin and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The WebAssembly engine could not start.
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
    /// A file or folder could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not WebAssembly at all.
    #[error("`{0}` is not a WebAssembly file (it does not start with the `\\0asm` magic bytes)")]
    NotWasm(PathBuf),
    /// The file is a core module, not a component.
    #[error(
        "`{0}` is a core WebAssembly module, not a component: build the plugin against \
         pao-plugins-sdk with `cargo build --release --target wasm32-wasip2`"
    )]
    CoreModule(PathBuf),
    /// The component is malformed or uses features this host lacks.
    #[error("`{path}` is not a valid WebAssembly component: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The engine's message.
        message: String,
    },
    /// The component does not export the `pao:action/action` interface.
    #[error(
        "`{0}` does not export `pao:action/action`: it is not a PAO plugin (build it with \
         pao-plugins-sdk's `export_action!`)"
    )]
    NotAPlugin(PathBuf),
    /// The component targets a contract version outside the host's range.
    #[error(
        "`{path}` targets contract pao:action@{found}, but this host supports \
         pao:action@{supported}: rebuild the plugin with a pao-plugins-sdk for that range"
    )]
    ContractVersion {
        /// The file.
        path: PathBuf,
        /// The version it exports.
        found: String,
        /// The host's range.
        supported: String,
    },
    /// The component imports something the host does not provide.
    #[error(
        "`{path}` cannot be linked: {message} (plugins may import only pao:action and \
         WASI p2)"
    )]
    Link {
        /// The file.
        path: PathBuf,
        /// The linker's message.
        message: String,
    },
    /// The `.wasm` has no manifest next to it.
    #[error("`{wasm}` has no manifest: expected `{manifest}`")]
    MissingManifest {
        /// The component.
        wasm: PathBuf,
        /// Where the manifest should be.
        manifest: PathBuf,
    },
    /// The manifest is not valid.
    #[error("manifest `{path}`: {message}")]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `describe` failed or returned something unusable.
    #[error("`{path}`: describe failed: {message}")]
    Describe {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Two plugins have the same name.
    #[error("two plugins are named `{0}`")]
    Duplicate(String),
}

/// A plugin call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("plugin `{plugin}`: {kind}")]
pub struct PluginError {
    /// The plugin's name.
    pub plugin: String,
    /// What happened.
    pub kind: PluginErrorKind,
}

impl PluginError {
    /// This error with every form of every secret `redactor` knows replaced in its texts: a
    /// plugin's own message, its panic output, a trap's message.
    pub fn redacted(mut self, redactor: &Redactor) -> PluginError {
        let text = |s: &mut String| {
            if let Cow::Owned(x) = redactor.redact_str(s) {
                *s = x;
            }
        };
        match &mut self.kind {
            PluginErrorKind::Panic(m)
            | PluginErrorKind::Trap(m)
            | PluginErrorKind::BadOutput(m)
            | PluginErrorKind::Denied(m)
            | PluginErrorKind::Failed(m)
            | PluginErrorKind::Retryable { message: m, .. } => text(m),
            PluginErrorKind::InvalidInput(problems) => {
                for (pointer, message) in problems {
                    text(pointer);
                    text(message);
                }
            }
            PluginErrorKind::Timeout(_)
            | PluginErrorKind::OutOfFuel(_)
            | PluginErrorKind::MemoryLimit(_)
            | PluginErrorKind::Cancelled => {}
        }
        self
    }
}

/// What went wrong in a plugin call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PluginErrorKind {
    /// Interrupted at its wall-clock limit.
    #[error("stopped after its {0:?} timeout")]
    Timeout(Duration),
    /// Ran out of fuel.
    #[error("ran out of fuel ({0} units)")]
    OutOfFuel(u64),
    /// Tried to grow memory past its cap.
    #[error("stopped at its memory cap of {0} bytes")]
    MemoryLimit(u64),
    /// Panicked (a Rust panic or abort; the message from its stderr when there is one).
    #[error("panicked: {0}")]
    Panic(String),
    /// Another trap (stack overflow, out-of-bounds access, a failing import).
    #[error("trapped: {0}")]
    Trap(String),
    /// The request was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The plugin returned something that is not what the contract says (e.g. not JSON).
    #[error("returned a bad value: {0}")]
    BadOutput(String),
    /// The plugin refused the input: JSON pointer and message per problem.
    #[error("invalid input: {}", .0.iter().map(|(p, m)| format!("{p}: {m}")).collect::<Vec<_>>().join("; "))]
    InvalidInput(Vec<(String, String)>),
    /// The plugin was refused something it needed.
    #[error("denied: {0}")]
    Denied(String),
    /// The plugin failed in a way worth retrying.
    #[error("{message}")]
    Retryable {
        /// What happened.
        message: String,
        /// The remote system asked to wait this long.
        retry_after: Option<Duration>,
    },
    /// The plugin failed for good.
    #[error("{0}")]
    Failed(String),
}

impl From<PluginError> for ActionError {
    fn from(e: PluginError) -> ActionError {
        let message = e.to_string();
        match e.kind {
            PluginErrorKind::Timeout(_) => ActionError::retryable(message),
            PluginErrorKind::Retryable { retry_after, .. } => {
                let err = ActionError::retryable(message);
                match retry_after {
                    Some(d) => err.with_retry_after(d),
                    None => err,
                }
            }
            PluginErrorKind::Cancelled => ActionError {
                message,
                ..ActionError::cancelled()
            },
            _ => ActionError::permanent(message),
        }
    }
}
