//! Large or crafted input from an ordinary (non-admin) user is answered quickly with a small
//! error, and the server's memory stays bounded: YAML aliases in authoring endpoints.

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
