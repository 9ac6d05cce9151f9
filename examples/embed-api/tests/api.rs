//! The lab's API over real HTTP: started on a free port, called with a hyper client.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use pao_example_embed_api::{engine, serve};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The API on 127.0.0.1, a free port, until dropped.
struct Lab {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start() -> Lab {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog");
    let pao = engine(&dir).expect("the lab's catalog loads without errors");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(serve(listener, pao, stop.clone()));
    Lab { addr, stop }
}

impl Lab {
    /// One HTTP/1.1 call on a fresh connection: the status and the JSON body.
    async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, Value) {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, json)
    }

    async fn get(&self, user: &str, path: &str) -> (u16, Value) {
        self.call("GET", path, &[("x-user", user)], "").await
    }

    async fn post(&self, user: &str, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, &[("x-user", user)], &body.to_string())
            .await
    }

    async fn submit(&self, user: &str, item: &str, fields: Value) -> (u16, Value) {
        let path = format!("/items/{item}/requests");
        self.post(user, &path, json!({ "fields": fields })).await
    }

    /// Polls `GET /requests/{id}` until the request is done (5 s at most).
    async fn until_done(&self, user: &str, id: &str) -> Value {
        for _ in 0..250 {
            let (status, body) = self.get(user, &format!("/requests/{id}")).await;
            assert_eq!(status, 200, "{body}");
            if body["done"] == true {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("request {id} did not finish");
    }
}

#[tokio::test]
async fn items_are_listed_for_people_the_lab_knows() {
    let lab = start().await;
    let (status, items) = lab.get("ada", "/items").await;
    assert_eq!(status, 200, "{items}");
    let ids: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["lab.gpu-sandbox", "lab.sandbox"]);
    assert_eq!(items[0]["needs_approval"], true);
    assert_eq!(items[1]["needs_approval"], false);

    let (status, body) = lab.call("GET", "/items", &[], "").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    let (status, _) = lab.get("mallory", "/items").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_request_completes_and_only_its_requester_sees_it() {
    let lab = start().await;
    let (status, created) = lab
        .submit("ada", "lab.sandbox", json!({ "name": "exp-1" }))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["requester"], "ada");
    assert!(created.get("replayed").is_none(), "{created}");
    let id = created["id"].as_str().unwrap();

    let done = lab.until_done("ada", id).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["progress"]["percent"], 100);
    assert_eq!(
        done["outputs"]["create"]["url"],
        "https://lab.example/sandboxes/exp-1"
    );

    // Bob is in Ada's team; PAO's default authorizer would show him the request, the lab's
    // does not: to him it does not exist.
    let (status, body) = lab.get("bob", &format!("/requests/{id}")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, _) = lab
        .post("bob", &format!("/requests/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 404);
    let (_, bobs) = lab.get("bob", "/requests").await;
    assert_eq!(bobs, json!([]));
    let (_, adas) = lab.get("ada", "/requests").await;
    assert_eq!(adas[0]["id"], id, "{adas}");

    // Ended requests stay ended.
    let (status, body) = lab
        .post("ada", &format!("/requests/{id}/cancel"), json!({}))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
}

#[tokio::test]
async fn a_lead_approves_and_the_request_runs() {
    let lab = start().await;
    let fields = json!({ "name": "train-1", "gpus": 2 });
    let (status, created) = lab.submit("ada", "lab.gpu-sandbox", fields).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["state"], "awaiting_approval");
    let id = created["id"].as_str().unwrap();
    let approve = format!("/requests/{id}/approve");

    // Nobody approves their own request; Bob, not an approver, does not even see it.
    let (status, body) = lab.post("ada", &approve, json!({})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, _) = lab.post("bob", &approve, json!({})).await;
    assert_eq!(status, 404);

    // Cy, a lead, sees what waits for them and approves it.
    let (_, waiting) = lab.get("cy", "/approvals").await;
    assert_eq!(waiting[0]["id"], id, "{waiting}");
    let (_, none) = lab.get("bob", "/approvals").await;
    assert_eq!(none, json!([]));
    let (status, waiting) = lab.get("cy", &format!("/requests/{id}")).await;
    assert_eq!(
        (status, &waiting["state"]),
        (200, &json!("awaiting_approval")),
        "{waiting}"
    );
    let (status, approved) = lab.post("cy", &approve, json!({})).await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["state"], "queued");
    let (_, decided) = lab.get("cy", "/approvals").await;
    assert_eq!(decided, json!([]));
    let done = lab.until_done("ada", id).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(
        done["outputs"]["create"]["url"],
        "https://lab.example/sandboxes/train-1"
    );
}

#[tokio::test]
async fn a_request_awaiting_approval_is_cancelled_by_its_requester() {
    let lab = start().await;
    let fields = json!({ "name": "train-2", "gpus": 1 });
    let (_, created) = lab.submit("ada", "lab.gpu-sandbox", fields).await;
    let id = created["id"].as_str().unwrap();
    let (status, cancelled) = lab
        .post("ada", &format!("/requests/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(
        (cancelled["state"].as_str(), &cancelled["done"]),
        (Some("cancelled"), &json!(true))
    );
    let (status, body) = lab
        .post("cy", &format!("/requests/{id}/approve"), json!({}))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
}

#[tokio::test]
async fn the_same_idempotency_key_brings_back_the_same_request() {
    let lab = start().await;
    let body = json!({ "fields": { "name": "exp-2" } }).to_string();
    let path = "/items/lab.sandbox/requests";
    let ada = [("x-user", "ada"), ("idempotency-key", "exp-2")];
    let (first, created) = lab.call("POST", path, &ada, &body).await;
    let (again, replayed) = lab.call("POST", path, &ada, &body).await;
    assert_eq!((first, again), (201, 200), "{created} {replayed}");
    assert_eq!(replayed["id"], created["id"]);
    assert_eq!(replayed["replayed"], true);

    // Keys are the caller's own: Bob's `exp-2` is another request.
    let bob = [("x-user", "bob"), ("idempotency-key", "exp-2")];
    let (status, bobs) = lab.call("POST", path, &bob, &body).await;
    assert_eq!(status, 201, "{bobs}");
    assert_ne!(bobs["id"], created["id"]);

    // A key used for another item is refused.
    let gpu = json!({ "fields": { "name": "exp-2", "gpus": 1 } }).to_string();
    let (status, refused) = lab
        .call("POST", "/items/lab.gpu-sandbox/requests", &ada, &gpu)
        .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (422, Some("invalid_input")),
        "{refused}"
    );
}

#[tokio::test]
async fn bad_input_is_refused_with_where_it_is_wrong() {
    let lab = start().await;
    let (status, body) = lab
        .submit("ada", "lab.gpu-sandbox", json!({ "name": "Exp 3!" }))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("invalid_fields")),
        "{body}"
    );
    let mut pointers: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    pointers.sort();
    assert_eq!(pointers, ["/fields/gpus", "/fields/name"], "{body}");

    let (status, body) = lab
        .post("ada", "/items/lab.sandbox/requests", json!({ "fields": 5 }))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["pointer"], "/fields", "{body}");

    let (status, body) = lab
        .call(
            "POST",
            "/items/lab.sandbox/requests",
            &[("x-user", "ada")],
            "{\"fields\":",
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_body")),
        "{body}"
    );

    let (status, body) = lab.submit("ada", "lab.nothing", json!({})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, _) = lab.get("ada", "/requests/no-such-request").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_program_serves_on_the_address_it_prints() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pao-example-embed-api"))
        .env("LAB_API_ADDR", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the program starts");
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .map(str::parse);
    let lab = Lab {
        addr: addr.expect("it prints its address").unwrap(),
        stop: CancellationToken::new(),
    };
    let (status, items) = lab.get("ada", "/items").await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(status, 200, "{items}");
    assert_eq!(items.as_array().map(Vec::len), Some(2));
}
