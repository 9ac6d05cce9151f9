//! Glue between the generated export trait and a [`Plugin`]: JSON text in and out, errors
//! mapped to the contract's variant. Used by [`crate::export_action!`]; not public API.

use crate::Plugin;
use crate::bindings::exports::pao::action::action as wit;
use crate::host::{Host, WasmHost};
use crate::types::{Context, Error, Violation};

fn to_wit_violations(v: Vec<Violation>) -> Vec<wit::Violation> {
    v.into_iter()
        .map(|v| wit::Violation {
            pointer: v.pointer,
            message: v.message,
        })
        .collect()
}

fn to_wit_error(e: Error) -> wit::ActionError {
    match e {
        Error::InvalidInput(v) => wit::ActionError::InvalidInput(to_wit_violations(v)),
        Error::Denied(m) => wit::ActionError::Denied(m),
        Error::Retryable {
            message,
            retry_after_ms,
        } => wit::ActionError::Retryable(crate::bindings::pao::action::types::RetryableError {
            message,
            retry_after_ms,
        }),
        Error::Failed(m) => wit::ActionError::Failed(m),
        Error::Cancelled => wit::ActionError::Cancelled,
    }
}

fn context(c: wit::Context) -> Context {
    Context {
        request_id: c.request_id,
        action_id: c.action_id,
        attempt: c.attempt,
        idempotency_key: c.idempotency_key,
        deadline_unix_ms: c.deadline_unix_ms,
        dry_run: c.dry_run,
        settings: c.settings.into_iter().collect(),
    }
}

/// Parses JSON text into `T`, as an invalid-input error the author can act on.
pub fn parse<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|e| Error::invalid("", format!("{what}: {e}")))
}

pub fn describe<P: Plugin>() -> wit::Descriptor {
    let d = P::describe();
    wit::Descriptor {
        name: d.name,
        version: d.version,
        contract_version: crate::CONTRACT_VERSION.to_string(),
        input_schema: d.input_schema.to_string(),
        output_schema: d.output_schema.to_string(),
        sample_output: d.sample_output.to_string(),
        requested: crate::bindings::pao::action::types::Capabilities {
            http_hosts: d.http_hosts,
            secrets: d.secrets,
            kv: d.kv,
        },
        supports_rollback: d.supports_rollback,
    }
}

pub fn validate<P: Plugin>(input: String) -> Result<(), Vec<wit::Violation>> {
    let input: P::Input = match parse("input", &input) {
        Ok(i) => i,
        Err(Error::InvalidInput(v)) => return Err(to_wit_violations(v)),
        Err(e) => return Err(to_wit_violations(vec![Violation::new("", e.to_string())])),
    };
    P::validate(&input).map_err(to_wit_violations)
}

pub fn execute<P: Plugin>(
    ctx: wit::Context,
    input: String,
) -> Result<wit::Output, wit::ActionError> {
    let run = || -> Result<String, Error> {
        let input: P::Input = parse("input", &input)?;
        let out = P::execute(&Host::new(&WasmHost), &context(ctx), input)?;
        serde_json::to_string(&out).map_err(|e| Error::failed(format!("output: {e}")))
    };
    run()
        .map(|value| wit::Output {
            value,
            rollback_state: None,
        })
        .map_err(to_wit_error)
}

pub fn rollback<P: Plugin>(
    ctx: wit::Context,
    input: String,
    state: String,
) -> Result<(), wit::ActionError> {
    let run = || -> Result<(), Error> {
        let input: P::Input = parse("input", &input)?;
        let output: P::Output = parse("rollback state", &state)?;
        P::rollback(&Host::new(&WasmHost), &context(ctx), input, output)
    };
    run().map_err(to_wit_error)
}
