//! `cost` with the example catalog's price table, and `script` through the `Action` trait.

mod support;

use std::time::Duration;

use pao_actions::register_builtins;
use pao_core::action::ActionRegistry;
use pao_core::catalog::load_settings;
use serde_json::json;
use support::*;

fn settings() -> pao_core::catalog::model::CatalogSettings {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/catalog/catalog.yaml"
    );
    let src = std::fs::read_to_string(path).unwrap();
    let (s, d) = load_settings("catalog.yaml", &src);
    assert!(
        d.iter()
            .all(|d| d.severity != pao_core::catalog::Severity::Error),
        "{d:?}"
    );
    s.unwrap()
}

#[tokio::test]
async fn estimate_with_region_discounts_and_breakdown() {
    let s = sandbox().await;
    let mut reg = ActionRegistry::new();
    let builtins = register_builtins(&mut reg, &s.config, Some(&settings())).unwrap();
    let cost = reg.get("cost").unwrap().clone();
    let input = json!({
        "items": [
            {"sku": "vm.medium", "quantity": 1, "region": "eu-west-1"},
            {"sku": "disk.ssd", "quantity": "100"}
        ],
        "discounts": ["enterprise-agreement", {"id": "first-vm-credit", "percent": 5}]
    });
    let out = cost.execute(&s.ctx("c"), &input).await.unwrap();
    let r = &out.result;
    // vm: 70.08 × 1.08 = 75.6864; disk: 0.1 × 100 = 10
    assert_eq!(r["lines"][0]["amount"], 75.69);
    assert_eq!(r["lines"][1]["amount"], 10.0);
    assert_eq!(r["subtotal"], 85.69);
    // EA 12% on vm.* only: 9.082368; then 5% on both: (66.604032 + 10) × 0.05 = 3.8302016
    assert_eq!(r["discounts"][0]["amount"], 9.08);
    assert_eq!(r["discounts"][1]["amount"], 3.83);
    assert_eq!(r["monthly"], 72.77);
    assert_eq!(r["currency"], "USD");

    // Unknown SKU, currency mismatch: permanent.
    assert_permanent(
        &cost
            .execute(&s.ctx("c"), &json!({"items": [{"sku": "gpu.huge"}]}))
            .await
            .unwrap_err(),
    );
    assert_permanent(
        &cost
            .execute(
                &s.ctx("c"),
                &json!({"items": [{"sku": "vm.small"}], "currency": "EUR"}),
            )
            .await
            .unwrap_err(),
    );

    // A reload replaces the table.
    builtins.update_prices(None);
    let e = cost.execute(&s.ctx("c"), &input).await.unwrap_err();
    assert!(e.message.contains("no price table"), "{}", e.message);
}

#[tokio::test]
async fn script_through_the_action_and_cancellation_of_a_runaway() {
    let s = sandbox().await;
    let script = s.action("script");
    let out = script
        .execute(&s.ctx("s"), &json!({
            "script": "let plan = []; for t in inputs.targets { let p = t.split(\"/\"); plan.push(#{ cluster: p[0], deployment: p[2] }); } #{ restarts: plan, count: plan.len() }",
            "inputs": {"targets": ["eu-1/payments/api", "us-1/payments/worker"]},
            "max_operations": 5000
        }))
        .await
        .unwrap();
    assert_eq!(out.result["count"], 2);
    assert_eq!(out.result["restarts"][1]["deployment"], "worker");

    let e = script
        .execute(
            &s.ctx("s"),
            &json!({"script": "throw \"bad restart target: x\""}),
        )
        .await
        .unwrap_err();
    assert_permanent(&e);
    assert!(e.message.contains("bad restart target"), "{}", e.message);

    // A script with a huge budget is stopped by cancellation (the engine's timeout does this).
    let ctx = s.ctx("s-cancel");
    let c = ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.cancel();
    });
    let started = std::time::Instant::now();
    let e = script
        .execute(
            &ctx,
            &json!({"script": "loop { }", "max_operations": pao_actions::script::MAX_OPERATIONS}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.class, pao_core::action::ErrorClass::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(5));
}
