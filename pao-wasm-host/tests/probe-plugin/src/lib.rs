//! `plugin:probe`: a real Rust guest that does, on request, what a hostile or buggy plugin
//! would: call a host it was not granted, read a secret it was not granted, leak a secret it
//! read, loop forever, allocate without end, panic, touch the filesystem and the environment. The sandbox tests
//! of `pao-wasm-host` run it; `{"probe": "ok"}` is also the trivial plugin of the `wasm` bench.

use pao_plugins_sdk::{Context, Descriptor, Error, Host, Plugin, json};
use serde_json::Value;

/// The plugin.
pub struct Probe;

impl Plugin for Probe {
    type Input = Value;
    type Output = Value;

    fn describe() -> Descriptor {
        Descriptor::new("probe", "0.1.0")
            .input_schema(json!({
                "type": "object",
                "required": ["probe"],
                "properties": { "probe": { "type": "string" } }
            }))
            .secret("granted_token")
            .kv()
    }

    fn validate(input: &Value) -> Result<(), Vec<pao_plugins_sdk::Violation>> {
        match input.get("probe") {
            Some(Value::String(_)) => Ok(()),
            _ => Err(vec![pao_plugins_sdk::Violation::new("/probe", "required")]),
        }
    }

    fn execute(host: &Host, ctx: &Context, input: Value) -> Result<Value, Error> {
        let arg = |k: &str| {
            input
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        match arg("probe").as_str() {
            "ok" => Ok(json!({ "ok": true, "attempt": ctx.attempt })),
            "http" => {
                let mut req = host.get(&arg("url"));
                if !arg("bearer").is_empty() {
                    req = req.bearer_secret(&arg("bearer"));
                }
                let r = req.send()?;
                Ok(json!({ "status": r.status, "body": r.text() }))
            }
            "secret" => {
                let v = host.secret(&arg("name"))?;
                Ok(json!({ "length": v.len() }))
            }
            // A careless plugin: the secret it read ends up in its error, its result (raw,
            // and hex-encoded), its rollback state, or its panic message.
            "leak-secret" => {
                let v = host.secret(&arg("name"))?;
                let hex: String = v.bytes().map(|b| format!("{b:02x}")).collect();
                match arg("how").as_str() {
                    "error" => Err(Error::failed(format!("login failed with {v} (hex {hex})"))),
                    "panic" => panic!("cannot go on with token {v}"),
                    _ => Ok(json!({ "token": v, "hex": hex, v.clone(): "as a key" })),
                }
            }
            "log-secret" => {
                let v = host.secret(&arg("name"))?;
                host.info(&format!("the token is {v}"));
                Ok(json!({}))
            }
            "kv" => {
                host.kv_set("k", &arg("value"))?;
                Ok(json!({ "value": host.kv_get("k")? }))
            }
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("probe panicked on purpose"),
            "fs" => {
                let read = std::fs::read_to_string("/etc/passwd").map(|s| s.len());
                let write = std::fs::write("probe.txt", b"x");
                let list = std::fs::read_dir(".").map(|d| d.count());
                Ok(json!({
                    "read": read.map_err(|e| e.to_string()).err(),
                    "write": write.map_err(|e| e.to_string()).err(),
                    "list": list.map_err(|e| e.to_string()).err(),
                }))
            }
            "env" => Ok(json!({
                "vars": std::env::vars().count(),
                "home": std::env::var("HOME").ok(),
                "args": std::env::args().count(),
            })),
            "socket" => {
                let r = std::net::TcpStream::connect("127.0.0.1:1");
                Ok(json!({ "connect": r.map_err(|e| e.to_string()).err() }))
            }
            "settings" => Ok(json!(ctx.settings)),
            other => Err(Error::invalid("/probe", format!("unknown probe `{other}`"))),
        }
    }
}

pao_plugins_sdk::export_action!(Probe);

#[cfg(test)]
mod tests {
    use super::*;
    use pao_plugins_sdk::MockHost;

    #[test]
    fn the_trivial_probe_answers() {
        let out = MockHost::new()
            .execute::<Probe>(&Context::test(), json!({ "probe": "ok" }))
            .unwrap();
        assert_eq!(out, json!({ "ok": true, "attempt": 1 }));
    }
}
