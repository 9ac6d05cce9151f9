//! Where built-in actions' credentials may go: a redirect to another origin is not followed
//! when the call carries credentials (reqwest itself drops only `Authorization` and `Cookie`),
//! a redirect within the origin is, and a REST status URL taken from the upstream's answer
//! must be on the action's own origin.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use serde_json::json;
use support::*;

/// One request a fake received: path and lower-case headers.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
}

/// A minimal HTTP/1.1 server on 127.0.0.1 (one thread, one request per connection) that
/// records every request and answers with `respond(path)`: `(status line, extra headers,
/// body)`.
struct Fake {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    fn start(
        respond: impl Fn(&str) -> (&'static str, Vec<(String, String)>, String) + Send + 'static,
    ) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut headers = Vec::new();
                let mut length = 0usize;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((n, v)) = h.trim_end().split_once(':') {
                        let n = n.trim().to_ascii_lowercase();
                        if n == "content-length" {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        headers.push((n, v.trim().to_string()));
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                log.lock().unwrap().push(Seen {
                    path: path.clone(),
                    headers,
                });
                let (status, extra, body) = respond(&path);
                let mut out = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (n, v) in extra {
                    out.push_str(&format!("{n}: {v}\r\n"));
                }
                out.push_str("\r\n");
                out.push_str(&body);
                let _ = stream.write_all(out.as_bytes());
            }
        });
        Fake { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn ok() -> (&'static str, Vec<(String, String)>, String) {
    ("200 OK", Vec::new(), r#"{"state":"DONE"}"#.to_string())
}

fn redirect(to: String) -> (&'static str, Vec<(String, String)>, String) {
    (
        "302 Found",
        vec![("Location".to_string(), to)],
        String::new(),
    )
}

#[tokio::test]
async fn a_redirect_to_another_origin_does_not_take_the_api_key_along() {
    let s = sandbox().await;
    let other = Fake::start(|_| ok());
    let target = format!("{}/stolen", other.url);
    let first = Fake::start(move |_| redirect(target.clone()));
    let input = json!({
        "method": "GET",
        "url": format!("{}/start", first.url),
        "auth": {"kind": "api_key", "name": "X-API-Key", "value": "k-very-secret"},
        "headers": {"X-Vault-Token": "v-very-secret"}
    });
    let e = s.run("rest", "redir-1", &input).await.unwrap_err();
    assert_permanent(&e);
    assert!(
        e.message.contains("redirect") && e.message.contains("another origin"),
        "{e:?}"
    );
    assert_eq!(first.seen().len(), 1);
    for seen in other.seen() {
        for (n, v) in &seen.headers {
            assert!(
                !v.contains("very-secret"),
                "the second host received {n}: {v}"
            );
        }
    }
    assert!(
        other.seen().is_empty(),
        "the second host was called: {:?}",
        other.seen()
    );
}

#[tokio::test]
async fn a_redirect_within_the_origin_is_followed_with_the_credentials() {
    let s = sandbox().await;
    let base = Arc::new(Mutex::new(String::new()));
    let b = base.clone();
    let fake = Fake::start(move |path| {
        if path == "/old" {
            redirect(format!("{}/new", b.lock().unwrap()))
        } else {
            ok()
        }
    });
    *base.lock().unwrap() = fake.url.clone();
    let input = json!({
        "url": format!("{}/old", fake.url),
        "auth": {"kind": "api_key", "name": "X-API-Key", "value": "k-very-secret"}
    });
    let out = s.run("rest", "redir-2", &input).await.unwrap();
    assert_eq!(out.result["body"]["state"], "DONE");
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].path, "/new");
    assert!(
        seen[1]
            .headers
            .iter()
            .any(|(n, v)| n == "x-api-key" && v == "k-very-secret")
    );
}

#[tokio::test]
async fn a_poll_url_from_the_answer_on_another_origin_is_refused() {
    let s = sandbox().await;
    let other = Fake::start(|_| ok());
    let status_url = format!("{}/status/1", other.url);
    let api = Fake::start(move |_| {
        (
            "202 Accepted",
            Vec::new(),
            json!({"state": "PENDING", "status_url": status_url}).to_string(),
        )
    });
    let input = json!({
        "method": "POST",
        "url": format!("{}/jobs", api.url),
        "auth": {"kind": "bearer", "token": "b-very-secret"},
        "body": {},
        "poll": {"url": "${{ result.body.status_url }}", "until": "result.body.state == 'DONE'", "interval": "10ms", "timeout": "2s"}
    });
    let e = s.run("rest", "poll-x", &input).await.unwrap_err();
    assert_permanent(&e);
    assert!(e.message.contains("poll.url"), "{e:?}");
    assert!(
        other.seen().is_empty(),
        "the status host was called: {:?}",
        other.seen()
    );
}
