//! URL templates: a value from the request cannot change the shape of the URL it is put in.

use pao_core::vars::{Context, Engine, Scope, VarErrorKind};
use serde_json::{Value, json};

fn render(src: &str, fields: Value) -> Result<String, pao_core::vars::VarError> {
    let env = json!({ "API": "https://k8s.example.com/base", "PREFIX": "/v2/x" });
    let ctx = Context::new()
        .with(Scope::Env, &env)
        .with(Scope::Fields, &fields);
    Engine::new().compile_url(src)?.render(&ctx)
}

#[test]
fn a_value_in_the_path_is_one_segment() {
    let src = "${{ env.API }}/clusters/${{ fields.c }}/api";
    for (value, want) in [
        ("prod-1", "https://k8s.example.com/base/clusters/prod-1/api"),
        (
            "../../x",
            "https://k8s.example.com/base/clusters/..%2F..%2Fx/api",
        ),
        (
            "a?admin=1#f",
            "https://k8s.example.com/base/clusters/a%3Fadmin%3D1%23f/api",
        ),
        (
            "%2e%2e",
            "https://k8s.example.com/base/clusters/%252e%252e/api",
        ),
        (
            "a b\n",
            "https://k8s.example.com/base/clusters/a%20b%0A/api",
        ),
    ] {
        let got = render(src, json!({ "c": value })).unwrap();
        assert_eq!(got, want, "{value:?}");
        assert_eq!(got.matches('/').count(), 6, "{got}");
        assert!(!got.contains(['?', '#']), "{got}");
    }
}

#[test]
fn dot_segments_from_the_request_are_refused() {
    for value in [".", "..", "..."] {
        let e = render(
            "${{ env.API }}/c/${{ fields.c }}/api",
            json!({ "c": value }),
        )
        .unwrap_err();
        assert_eq!(e.kind(), VarErrorKind::UnsafeUrl, "{value}");
        assert!(e.to_string().contains("`..`"), "{e}");
    }
    // Not a whole value: a dot inside a name is fine.
    assert_eq!(
        render(
            "${{ env.API }}/c/${{ fields.c }}.json",
            json!({ "c": "v1.2" })
        )
        .unwrap(),
        "https://k8s.example.com/base/c/v1.2.json"
    );
}

#[test]
fn a_value_in_the_query_is_one_value() {
    let got = render(
        "${{ env.API }}/q?team=${{ fields.t }}&x=1",
        json!({ "t": "a&admin=true#" }),
    )
    .unwrap();
    assert_eq!(
        got,
        "https://k8s.example.com/base/q?team=a%26admin%3Dtrue%23&x=1"
    );
}

#[test]
fn a_value_in_the_host_is_a_name_only() {
    let src = "https://api.${{ fields.region }}.example.com/v1";
    assert_eq!(
        render(src, json!({ "region": "eu-west-1" })).unwrap(),
        "https://api.eu-west-1.example.com/v1"
    );
    for bad in ["evil.com/", "evil.com#", "x@evil.com", "evil.com:8080"] {
        let e = render(src, json!({ "region": bad })).unwrap_err();
        assert_eq!(e.kind(), VarErrorKind::UnsafeUrl, "{bad}");
    }
}

#[test]
fn operator_values_and_whole_urls_are_written_as_they_are() {
    // env is the operator's: a base URL with a path, a path prefix.
    assert_eq!(
        render("${{ env.API }}${{ env.PREFIX }}/y", json!({})).unwrap(),
        "https://k8s.example.com/base/v2/x/y"
    );
    // One value that is the whole URL (a `url` field) is the catalog author's choice.
    assert_eq!(
        render("${{ fields.u }}", json!({ "u": "https://h.example/a/b?c" })).unwrap(),
        "https://h.example/a/b?c"
    );
    // Encoded by the author already: not encoded twice.
    assert_eq!(
        render(
            "${{ env.API }}/s/${{ fields.c | url_encode }}",
            json!({ "c": "a/b" })
        )
        .unwrap(),
        "https://k8s.example.com/base/s/a%2Fb"
    );
    // A plain template is not a URL template.
    let fields = json!({ "c": "../x" });
    let ctx = Context::new().with(Scope::Fields, &fields);
    let plain = Engine::new().compile("https://h/${{ fields.c }}").unwrap();
    assert_eq!(plain.render(&ctx).unwrap(), "https://h/../x");
}

#[test]
fn loops_and_branches_in_a_url() {
    let src = "${{ env.API }}/{% for s in fields.segs %}${{ s }}{% endfor %}{% if fields.v %}/v{% endif %}";
    assert_eq!(
        render(src, json!({ "segs": ["a/", "b"], "v": true })).unwrap(),
        "https://k8s.example.com/base/a%2Fb/v"
    );
}

#[test]
fn action_configs_compile_url_keys_as_url_templates() {
    let config = json!({
        "url": "https://h/${{ fields.c }}",
        "auth": { "token_url": "https://h/t/${{ fields.c }}" },
        "body": { "path": "https://h/${{ fields.c }}" }
    });
    let fields = json!({ "c": "a/b" });
    let ctx = Context::new().with(Scope::Fields, &fields);
    let out = Engine::new()
        .compile_config(&config)
        .unwrap()
        .render(&ctx)
        .unwrap();
    assert_eq!(out["url"], "https://h/a%2Fb");
    assert_eq!(out["auth"]["token_url"], "https://h/t/a%2Fb");
    assert_eq!(out["body"]["path"], "https://h/a/b");
    // compile_value leaves every string alone.
    let out = Engine::new()
        .compile_value(&config)
        .unwrap()
        .render(&ctx)
        .unwrap();
    assert_eq!(out["url"], "https://h/a/b");
}
