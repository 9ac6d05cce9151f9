//! `plugin:servicenow-incident`: opens a ServiceNow incident through the Table API, and
//! cancels it on rollback.
//!
//! Operator setup: setting `instance_url` (`https://acme.service-now.com`), setting `username`
//! (the integration user), secret `servicenow_password`, and the instance's host granted.
//! Exactly once: the incident carries the action's idempotency key as its `correlation_id`,
//! and every attempt first looks for an incident with that key.

use pao_plugins_sdk::{Context, Descriptor, Error, Host, Plugin, Violation, json};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The plugin.
pub struct ServiceNowIncident;

/// A number-like field that catalog items may also pass as a template string.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Level {
    /// `2`.
    Number(u8),
    /// `"2"` (a rendered template).
    Text(String),
}

impl Level {
    fn as_field(&self) -> String {
        match self {
            Level::Number(n) => n.to_string(),
            Level::Text(t) => t.trim().to_string(),
        }
    }
}

/// The catalog item's `config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// One-line summary.
    pub short_description: String,
    /// Details.
    #[serde(default)]
    pub description: Option<String>,
    /// Assignment group (name or sys_id).
    #[serde(default)]
    pub assignment_group: Option<String>,
    /// Category (`security`, `software`...).
    #[serde(default)]
    pub category: Option<String>,
    /// 1 (high) to 3 (low).
    #[serde(default)]
    pub impact: Option<Level>,
    /// 1 (high) to 3 (low).
    #[serde(default)]
    pub urgency: Option<Level>,
    /// The caller (user name, e-mail or sys_id).
    #[serde(default)]
    pub caller_id: Option<String>,
}

/// What the catalog item reads as `result`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Output {
    /// The record's id.
    pub sys_id: String,
    /// `INC0010001`.
    pub number: String,
    /// Incident state code (`1` = New).
    pub state: String,
    /// Link to the record.
    pub url: String,
    /// Whether an earlier attempt had already created it.
    #[serde(default)]
    pub existing: bool,
}

#[derive(Deserialize)]
struct Record {
    sys_id: String,
    number: String,
    #[serde(default)]
    state: String,
}

const SECRET: &str = "servicenow_password";
/// Incident state "Canceled".
const CANCELED: &str = "8";

fn instance(ctx: &Context) -> Result<String, Error> {
    ctx.setting("instance_url")
        .map(|u| u.trim_end_matches('/').to_string())
        .ok_or_else(|| {
            Error::failed(
                "setting `instance_url` is missing: the operator sets it in the plugin's grant",
            )
        })
}

fn output(base: &str, r: Record, existing: bool) -> Output {
    Output {
        url: format!("{base}/nav_to.do?uri=incident.do?sys_id={}", r.sys_id),
        sys_id: r.sys_id,
        number: r.number,
        state: r.state,
        existing,
    }
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Plugin for ServiceNowIncident {
    type Input = Input;
    type Output = Output;

    fn describe() -> Descriptor {
        let level = json!({
            "description": "1 (high) to 3 (low)",
            "oneOf": [
                { "type": "integer", "minimum": 1, "maximum": 3 },
                { "type": "string", "minLength": 1 }
            ]
        });
        Descriptor::new("servicenow-incident", env!("CARGO_PKG_VERSION"))
            .input_schema(json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["short_description"],
                "properties": {
                    "short_description": { "type": "string", "minLength": 1, "maxLength": 160 },
                    "description": { "type": "string" },
                    "assignment_group": { "type": "string" },
                    "category": { "type": "string" },
                    "impact": level,
                    "urgency": level,
                    "caller_id": { "type": "string" }
                }
            }))
            .output_schema(json!({
                "type": "object",
                "required": ["sys_id", "number", "state", "url"],
                "properties": {
                    "sys_id": { "type": "string" },
                    "number": { "type": "string" },
                    "state": { "type": "string" },
                    "url": { "type": "string" },
                    "existing": { "type": "boolean" }
                }
            }))
            .sample_output(json!({
                "sys_id": "9d385017c611228701d22104cc95c371",
                "number": "INC0010001",
                "state": "1",
                "url": "https://acme.service-now.com/nav_to.do?uri=incident.do?sys_id=9d385017c611228701d22104cc95c371",
                "existing": false
            }))
            .http_host("*.service-now.com")
            .secret(SECRET)
            .rollback()
    }

    fn validate(input: &Input) -> Result<(), Vec<Violation>> {
        let mut v = Vec::new();
        for (name, level) in [("impact", &input.impact), ("urgency", &input.urgency)] {
            if let Some(Level::Text(t)) = level
                && !t.contains("${{")
                && !matches!(t.trim(), "1" | "2" | "3")
            {
                v.push(Violation::new(&format!("/{name}"), "must be 1, 2 or 3"));
            }
        }
        if v.is_empty() { Ok(()) } else { Err(v) }
    }

    fn execute(host: &Host, ctx: &Context, input: Input) -> Result<Output, Error> {
        let base = instance(ctx)?;
        let user = ctx.setting("username").unwrap_or("pao.integration");
        let password = format!("{{{{secret:{SECRET}}}}}");
        if ctx.dry_run {
            host.info(&format!(
                "dry run: would open an incident at {base}: {}",
                input.short_description
            ));
            return Ok(Output {
                sys_id: String::new(),
                number: "INC-DRY-RUN".to_string(),
                state: "1".to_string(),
                url: base,
                existing: false,
            });
        }
        // An earlier attempt may have created it before its reply was lost.
        let lookup = format!(
            "{base}/api/now/table/incident?sysparm_query={}&sysparm_limit=1&sysparm_fields=sys_id,number,state",
            encode(&format!("correlation_id={}", ctx.idempotency_key))
        );
        let resp = host
            .get(&lookup)
            .basic_auth(user, &password)
            .header("accept", "application/json")
            .send()?;
        if !resp.is_success() {
            return Err(Error::from_status("ServiceNow incident lookup", &resp));
        }
        #[derive(Deserialize)]
        struct Many {
            result: Vec<Record>,
        }
        if let Some(r) = resp.json_body::<Many>()?.result.into_iter().next() {
            host.info(&format!(
                "incident {} already exists for this request, not creating another",
                r.number
            ));
            return Ok(output(&base, r, true));
        }
        let mut body = serde_json::Map::new();
        body.insert("short_description".into(), json!(input.short_description));
        body.insert("correlation_id".into(), json!(ctx.idempotency_key));
        body.insert("correlation_display".into(), json!("PAO"));
        let optional = [
            ("description", input.description.clone()),
            ("assignment_group", input.assignment_group.clone()),
            ("category", input.category.clone()),
            ("caller_id", input.caller_id.clone()),
            ("impact", input.impact.as_ref().map(Level::as_field)),
            ("urgency", input.urgency.as_ref().map(Level::as_field)),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                body.insert(k.into(), Value::String(v));
            }
        }
        let resp = host
            .post(&format!("{base}/api/now/table/incident"))
            .basic_auth(user, &password)
            .header("accept", "application/json")
            .json(&body)
            .send()?;
        if !resp.is_success() {
            return Err(Error::from_status("ServiceNow create incident", &resp));
        }
        #[derive(Deserialize)]
        struct One {
            result: Record,
        }
        let r = resp.json_body::<One>()?.result;
        host.info(&format!("opened incident {}", r.number));
        Ok(output(&base, r, false))
    }

    fn rollback(host: &Host, ctx: &Context, _input: Input, out: Output) -> Result<(), Error> {
        if ctx.dry_run || out.sys_id.is_empty() {
            return Ok(());
        }
        let base = instance(ctx)?;
        let user = ctx.setting("username").unwrap_or("pao.integration");
        let resp = host
            .patch(&format!("{base}/api/now/table/incident/{}", out.sys_id))
            .basic_auth(user, &format!("{{{{secret:{SECRET}}}}}"))
            .header("accept", "application/json")
            .json(&json!({
                "state": CANCELED,
                "close_notes": format!("Canceled by PAO: request {} rolled back", ctx.request_id),
            }))
            .send()?;
        match resp.status {
            // Gone already: nothing left to undo.
            404 => Ok(()),
            _ if resp.is_success() => {
                host.info(&format!("canceled incident {}", out.number));
                Ok(())
            }
            _ => Err(Error::from_status("ServiceNow cancel incident", &resp)),
        }
    }
}

pao_plugins_sdk::export_action!(ServiceNowIncident);

#[cfg(test)]
mod tests {
    use super::*;
    use pao_plugins_sdk::{HttpResponse, MockHost};

    const BASE: &str = "https://acme.service-now.com";

    fn ctx() -> Context {
        Context::test()
            .with_setting("instance_url", BASE)
            .with_setting("username", "pao.integration")
    }

    fn input() -> Value {
        json!({
            "assignment_group": "Security Operations",
            "category": "security",
            "impact": 2,
            "urgency": 1,
            "short_description": "Exposed secret kv/payments/stripe",
            "description": "found in a public gist",
            "caller_id": "ada@example.com"
        })
    }

    #[test]
    fn creates_an_incident_tagged_with_the_idempotency_key() {
        let mock = MockHost::new()
            .secret(SECRET, "pw")
            .on_json(
                "GET",
                &format!("{BASE}/api/now/table/incident?"),
                200,
                json!({ "result": [] }),
            )
            .on_json(
                "POST",
                &format!("{BASE}/api/now/table/incident"),
                201,
                json!({ "result": { "sys_id": "abc", "number": "INC0010001", "state": "1" } }),
            );
        let out = mock.execute::<ServiceNowIncident>(&ctx(), input()).unwrap();
        assert_eq!(out["number"], "INC0010001");
        assert_eq!(out["existing"], false);
        let reqs = mock.requests();
        assert_eq!(reqs.len(), 2);
        assert!(
            reqs[0].url.contains("correlation_id%3Dpao-req-1-act-1"),
            "{}",
            reqs[0].url
        );
        // "pao.integration:pw"
        assert_eq!(
            reqs[1].header("authorization"),
            Some("Basic cGFvLmludGVncmF0aW9uOnB3")
        );
        let body = reqs[1].json();
        assert_eq!(body["correlation_id"], "pao-req-1-act-1");
        assert_eq!(body["impact"], "2");
        assert_eq!(body["urgency"], "1");
    }

    #[test]
    fn a_retry_finds_the_incident_instead_of_creating_another() {
        let mock = MockHost::new().secret(SECRET, "pw").on_json(
            "GET",
            &format!("{BASE}/api/now/table/incident?"),
            200,
            json!({ "result": [{ "sys_id": "abc", "number": "INC0010001", "state": "2" }] }),
        );
        let out = mock.execute::<ServiceNowIncident>(&ctx(), input()).unwrap();
        assert_eq!(out["existing"], true);
        assert!(mock.requests().iter().all(|r| r.method == "GET"));
    }

    #[test]
    fn server_errors_are_retryable_and_auth_errors_are_not() {
        let mock = MockHost::new().secret(SECRET, "pw").on("GET", BASE, |_| {
            Ok(HttpResponse::json(
                503,
                json!({ "error": { "message": "down" }, "status": "failure" }),
            ))
        });
        let e = mock
            .execute::<ServiceNowIncident>(&ctx(), input())
            .unwrap_err();
        assert!(matches!(e, Error::Retryable { .. }), "{e:?}");

        let mock = MockHost::new().secret(SECRET, "pw").on_json(
            "GET",
            BASE,
            401,
            json!({ "error": { "message": "User Not Authenticated" }, "status": "failure" }),
        );
        let e = mock
            .execute::<ServiceNowIncident>(&ctx(), input())
            .unwrap_err();
        assert!(matches!(&e, Error::Failed(m) if m.contains("401")), "{e:?}");
    }

    #[test]
    fn rollback_cancels_the_incident() {
        let mock = MockHost::new().secret(SECRET, "pw").on_json(
            "PATCH",
            &format!("{BASE}/api/now/table/incident/abc"),
            200,
            json!({ "result": { "sys_id": "abc", "number": "INC0010001", "state": "8" } }),
        );
        mock.rollback::<ServiceNowIncident>(
            &ctx(),
            input(),
            json!({ "sys_id": "abc", "number": "INC0010001", "state": "1", "url": "u" }),
        )
        .unwrap();
        assert_eq!(mock.requests()[0].json()["state"], CANCELED);
    }

    #[test]
    fn a_missing_instance_url_is_a_clear_failure() {
        let e = MockHost::new()
            .execute::<ServiceNowIncident>(&Context::test(), input())
            .unwrap_err();
        assert!(e.to_string().contains("instance_url"), "{e}");
    }

    #[test]
    fn levels_outside_one_to_three_are_refused() {
        let mock = MockHost::new();
        let mut i = input();
        i["impact"] = json!("5");
        let e = mock.validate::<ServiceNowIncident>(i).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidInput(v) if v[0].pointer == "/impact"),
            "{e:?}"
        );
        let mut i = input();
        i["urgency"] = json!("${{ fields.urgency }}");
        assert!(mock.validate::<ServiceNowIncident>(i).is_ok());
    }
}
