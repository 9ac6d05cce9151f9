//! Large or crafted input from an ordinary (non-admin) user is answered quickly with a small
//! error, and the server's memory stays bounded: YAML aliases in authoring endpoints, long
//! list values in requests and simulations.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ALICE: &str = "t-alice";

/// Peak resident memory of this test process so far, in MiB (`VmHWM`).
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// Posts `body` and returns the status, the decoded body, its size in bytes and the time taken.
async fn post_timed(
    s: &support::TestServer,
    path: &str,
    body: &Value,
) -> (u16, Value, usize, Duration) {
    let started = Instant::now();
    let r = s
        .http
        .post(s.url(path))
        .bearer_auth(ALICE)
        .json(body)
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    let text = r.text().await.unwrap();
    let took = started.elapsed();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
    (code, v, text.len(), took)
}

/// The start of a response, for assertion messages.
fn head(v: &Value) -> String {
    v.to_string().chars().take(600).collect()
}

/// ~900 KB of YAML whose aliases to one 400 KB string would expand to ~40 GB.
fn alias_bomb() -> String {
    format!(
        "a: &a \"{}\"\nb:\n{}",
        "x".repeat(400_000),
        "- *a\n".repeat(100_000)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_alias_bomb_from_a_developer_is_refused_quickly() {
    let Some(s) = support::spawn(support::Db::Sqlite).await else {
        return;
    };
    let body = json!({ "yaml": alias_bomb() });
    // The verdict of /validate is in its document: not valid, located at the alias.
    let (code, v, _, took) = post_timed(&s, "/validate/catalog-item", &body).await;
    assert_eq!(code, 200, "{}", head(&v));
    assert_eq!(v["valid"], false, "{}", head(&v));
    let d = &v["diagnostics"][0];
    assert!(
        d["message"].as_str().unwrap_or("").contains("MiB"),
        "{}",
        head(&v)
    );
    assert!(d["line"].as_u64().unwrap_or(0) > 2, "{}", head(&v));
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // /preview/form refuses the item with a 4xx.
    let (code, v, size, took) = post_timed(&s, "/preview/form", &body).await;
    assert_eq!(code, 422, "{}", head(&v));
    assert!(size < 16 * 1024, "{size} bytes");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let peak = peak_rss_mib();
    assert!(peak < 256, "peak RSS {peak} MiB");
    // The server still answers.
    let (code, _) = s.get(ALICE, "/catalog").await;
    assert_eq!(code, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_field_with_90000_entries_is_refused_quickly() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/catalog/networking/firewall-rule.yaml");
    let Some(s) = support::spawn_with(support::Db::Sqlite, |c| {
        std::fs::copy(&example, c.catalog.join("firewall-rule.yaml")).unwrap();
    })
    .await
    else {
        return;
    };
    // Distinct short entries, so that the body stays under the 1 MiB limit.
    let cidrs: Vec<String> = (0..90_000).map(|i| format!("v{i}")).collect();
    let fields = json!({
        "source_cidrs": cidrs,
        "destination_cidr": "10.20.0.0/24",
        "protocols": ["tcp"],
        "ports": "443",
        "environment": "dev",
        "business_justification": "A flow the application needs to reach its database.",
    });
    let body = json!({ "item_id": "networking.firewall-rule", "fields": fields });
    for path in ["/requests", "/simulate/fulfillment"] {
        let (code, v, size, took) = post_timed(&s, path, &body).await;
        assert_eq!(code, 422, "{path}: {}", head(&v));
        assert!(size < 4 * 1024, "{path}: {size} bytes");
        assert!(
            v.to_string().contains("at most 1000 items"),
            "{path}: {}",
            head(&v)
        );
        assert!(took < Duration::from_secs(1), "{path} took {took:?}");
    }
    let peak = peak_rss_mib();
    assert!(peak < 256, "peak RSS {peak} MiB");
    // A list within the bounds is accepted.
    let mut ok = body.clone();
    ok["fields"]["source_cidrs"] = json!(["10.1.0.0/16", "10.2.0.0/16"]);
    let (code, v) = s.post(ALICE, "/requests", ok).await;
    assert_eq!(code, 201, "{}", head(&v));
    s.stop().await;
}
