//! pao-core in your own service: a catalog, an action, a request and a worker.
use async_trait::async_trait;
use pao_core::{action::*, authz::Principal, catalog::Catalog, engine::*, events::*, store::*};
use serde_json::{Value, json};
use std::sync::Arc;

/// `plugin:greet`. A real action passes `ctx.idempotency_key` on to the remote system.
struct Greet;
#[async_trait]
impl Action for Greet {
    fn describe(&self) -> ActionDescriptor {
        ActionDescriptor {
            type_name: "plugin:greet".into(),
            config_schema: json!({ "type": "object" }),
            output_schema: json!({ "type": "object" }),
            supports_rollback: false,
            sample_output: json!({}),
        }
    }
    async fn execute(&self, ctx: &ActionContext, i: &Value) -> Result<ActionOutput, ActionError> {
        let message = format!("hello, {} ({})", i["name"], ctx.idempotency_key);
        Ok(ActionOutput::new(json!({ "message": message })))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut actions = ActionRegistry::new();
    actions.register(Arc::new(Greet));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog");
    let catalog = Catalog::load(&dir, &actions.load_options())?;
    let store = Arc::new(MemoryStore::new());
    let events = Arc::new(BroadcastSink::new(64));
    let mut live = events.subscribe();
    let engine = Orchestrator::builder(catalog, store.clone());
    let engine = engine.actions(actions).events(events).build();
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(engine.clone().run_worker("w1".into(), stop.clone()));
    let (who, fields) = (Principal::new("ada", &[], &[]), json!({ "name": "Ada" }));
    let request = engine.submit(&who, "hello.greeting", &fields, SubmitOptions::default());
    let id = request.await?.id;
    let ended = |k: EventKind| matches!(k, EventKind::StateChanged { to, .. } if to.is_terminal());
    while !ended(live.recv().await?.kind) {}
    stop.cancel();
    worker.await?;
    let done = store.get(&id).await?.ok_or("gone")?;
    println!("request {id} is {}", done.state);
    Ok(())
}
