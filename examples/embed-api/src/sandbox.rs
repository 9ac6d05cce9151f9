//! The lab's own action, run in this process: no network, no plugin.

use async_trait::async_trait;
use pao_core::action::{Action, ActionContext, ActionDescriptor, ActionError, ActionOutput};
use serde_json::{Value, json};

/// `plugin:sandbox` creates a sandbox. A real one hands `ctx.idempotency_key` to the lab's
/// scheduler, so that an attempt run twice creates one sandbox.
pub struct Sandboxes;

#[async_trait]
impl Action for Sandboxes {
    fn describe(&self) -> ActionDescriptor {
        ActionDescriptor {
            type_name: "plugin:sandbox".into(),
            config_schema: json!({ "type": "object", "required": ["name", "gpus"] }),
            output_schema: json!({ "type": "object", "required": ["url"] }),
            supports_rollback: false,
            sample_output: json!({ "url": "https://lab.example/sandboxes/demo" }),
        }
    }

    async fn execute(&self, ctx: &ActionContext, i: &Value) -> Result<ActionOutput, ActionError> {
        let name = i["name"].as_str().unwrap_or_default();
        ctx.log.info(&format!("sandbox {name}, {} GPUs", i["gpus"]));
        let url = format!("https://lab.example/sandboxes/{name}");
        Ok(ActionOutput::new(json!({ "url": url })))
    }
}
