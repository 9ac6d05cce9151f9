//! A REST action's `poll` block may read `result`, which exists only after the first call: the
//! engine passes it unrendered, with the non-secret scopes it reads under `poll.scopes`.

mod engine_support;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use engine_support::catalog;
use pao_core::action::{
    Action, ActionContext, ActionDescriptor, ActionError, ActionOutput, ActionRegistry,
};
use pao_core::authz::Principal;
use pao_core::engine::{EngineConfig, Orchestrator, SubmitOptions};
use pao_core::lifecycle::RequestState;
use pao_core::store::{MemoryStore, Store};
use serde_json::{Map, Value, json};

#[derive(Default)]
struct Capture(Mutex<Vec<Value>>);

#[async_trait]
impl Action for Capture {
    fn describe(&self) -> ActionDescriptor {
        ActionDescriptor {
            type_name: "rest".into(),
            config_schema: json!({"type": "object"}),
            output_schema: json!({"type": "object"}),
            supports_rollback: false,
            sample_output: json!({"body": {"serial": 1}, "extract": {"op": "op-1"}}),
        }
    }
    async fn execute(&self, _: &ActionContext, input: &Value) -> Result<ActionOutput, ActionError> {
        self.0.lock().unwrap().push(input.clone());
        Ok(ActionOutput::new(
            json!({"body": {"serial": 7}, "extract": {"op": "op-1"}}),
        ))
    }
}

const ITEM: &str = r#"presentation:
  groups:
    - id: g
      title: G
      fields:
        - { id: zone, type: text, required: true }
fulfillment:
  mode: automated
  actions:
    - { id: record, type: rest, config: { method: PUT, url: "${{ env.API }}/zones/${{ fields.zone }}" }, outputs: { serial: "${{ result.body.serial }}" } }
    - id: verify
      type: rest
      config:
        url: "${{ env.API }}/zones/${{ fields.zone }}/status"
        poll:
          url: "${{ env.API }}/operations/${{ result.extract.op }}"
          until: result.body.serial >= outputs.record.serial
          interval: 5s
"#;

#[tokio::test]
async fn poll_block_is_deferred_with_its_scopes() {
    let capture = Arc::new(Capture::default());
    let mut registry = ActionRegistry::new();
    registry.register(capture.clone());
    let cat = catalog(&[("poller", ITEM)], &registry);
    let store = Arc::new(MemoryStore::new());
    let mut env = Map::new();
    env.insert("API".into(), json!("http://api.test"));
    let engine = Orchestrator::builder(cat, store.clone())
        .actions(registry)
        .config(EngineConfig {
            env,
            ..EngineConfig::default()
        })
        .build();
    let who = Principal::new("ada", &[], &[]);
    let r = engine
        .submit(
            &who,
            "poller",
            &json!({"zone": "z1"}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    engine.run_until_idle("w").await.unwrap();
    let r = store.get(&r.id).await.unwrap().unwrap();
    assert_eq!(r.state, RequestState::Completed, "{:?}", r.error);
    let inputs = capture.0.lock().unwrap().clone();
    let verify = &inputs[1];
    assert_eq!(
        verify["url"], "http://api.test/zones/z1/status",
        "outside poll: rendered"
    );
    assert_eq!(
        verify["poll"]["url"],
        "${{ env.API }}/operations/${{ result.extract.op }}"
    );
    assert_eq!(
        verify["poll"]["until"],
        "result.body.serial >= outputs.record.serial"
    );
    assert_eq!(verify["poll"]["interval"], "5s");
    assert_eq!(verify["poll"]["scopes"]["env"]["API"], "http://api.test");
    assert_eq!(verify["poll"]["scopes"]["outputs"]["record"]["serial"], 7);
    assert!(
        verify["poll"]["scopes"].get("fields").is_none(),
        "only the scopes poll reads"
    );
}
