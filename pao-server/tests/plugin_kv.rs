//! Plugin key-value data lives in the server's database: the example `slack-notify` plugin
//! records each message it posted under its attempt's idempotency key, so when its action runs
//! again after a crash (a new process, or another replica, on the same database) it does not
//! post twice. Real components built from `examples/plugins`, a Slack fake on 127.0.0.1,
//! SQLite and PostgreSQL.

mod support;

use std::sync::Arc;

use pao_core::action::{ActionContext, ActionLogger, IdempotencyKey};
use pao_core::secrets::StaticSecrets;
use pao_core::store::Store;
use pao_sandbox::slack::SlackFake;
use serde_json::json;
use support::Db;
use tokio_util::sync::CancellationToken;

async fn scenario(db: Db) {
    let Some(url) = support::database_url(db).await else {
        return;
    };
    let dir = std::env::temp_dir().join(format!(
        "pao-plugin-kv-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    let plugins = dir.join("plugins");
    support::build_plugins(&plugins);
    let slack = SlackFake::start().await.unwrap();
    let grants = pao_wasm_host::Grants {
        plugins: [(
            "slack-notify".to_string(),
            pao_wasm_host::Grant::default()
                .http_hosts([slack.url().trim_start_matches("http://").to_string()])
                .secrets(["slack_bot_token"])
                .kv()
                .setting("api_url", &slack.api_url()),
        )]
        .into(),
    };
    // Two runs of the same attempt, each in a host of its own with its own connection to the
    // database, as after a crash between the post and the journal entry.
    let mut answers = Vec::new();
    for attempt in 1..=2 {
        let store: Arc<dyn Store> = Arc::new(pao_store::SqlStore::open(&url).await.unwrap());
        let host = pao_wasm_host::PluginHost::with_kv(
            pao_wasm_host::HostConfig {
                cache_dir: Some(dir.join("cache")),
                ..pao_wasm_host::HostConfig::default()
            },
            Arc::new(pao_server::state::StoreKv::new(store)),
        )
        .unwrap();
        let actions = host.load_dir(&plugins, &grants).await.unwrap();
        let notify = actions
            .iter()
            .find(|a| a.describe().type_name == "plugin:slack-notify")
            .expect("slack-notify loaded");
        let ctx = ActionContext {
            request_id: "req-kv".into(),
            action_id: "announce".into(),
            attempt,
            idempotency_key: IdempotencyKey::for_action("req-kv", "announce"),
            deadline: None,
            cancel: CancellationToken::new(),
            log: ActionLogger::default(),
            secrets: Arc::new(
                StaticSecrets::new().with("slack_bot_token", pao_sandbox::slack::SANDBOX_TOKEN),
            ),
            dry_run: false,
        };
        let out = notify
            .execute(
                &ctx,
                &json!({ "channel": "#ops", "text": "namespace ready" }),
            )
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: {e:?}"));
        answers.push(out.result);
    }
    assert_eq!(
        answers[0]["ts"], answers[1]["ts"],
        "the second run answers with the message the first posted: {answers:?}"
    );
    let posted = slack.messages();
    assert_eq!(posted.len(), 1, "posted once across both runs: {posted:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    scenario(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    scenario(Db::Postgres).await;
}
