//! Shared fixtures for the PAO benchmarks: one realistic request context and, for every
//! benchmarked case, the same template written in each engine's own syntax, plus a hand-written
//! Rust `native` version that is the floor no engine can beat.
//!
//! The engines are PAO's variable engine (`pao`), minijinja, tera, handlebars, upon and rhai.
//! Every source below renders to exactly the same text as PAO's; `benches/vars.rs` asserts that
//! before it times anything.
//!
//! ```
//! use pao_benches::{context_json, pao_context, small};
//! use pao_core::vars::Engine;
//!
//! let json = context_json();
//! let tpl = Engine::new().compile(small::PAO).unwrap();
//! assert_eq!(tpl.render(&pao_context(&json)).unwrap(), small::native(&json));
//! ```

use std::fmt::Write;

use pao_core::vars::{Context, Scope};
use serde_json::{Value, json};

/// The scopes a catalog template may read, in the order they appear in the context object.
pub const SCOPES: [Scope; 9] = [
    Scope::User,
    Scope::Metadata,
    Scope::Request,
    Scope::System,
    Scope::Env,
    Scope::Fields,
    Scope::Outputs,
    Scope::Computed,
    Scope::Secrets,
];

/// One request's context: an object with one key per scope (`user`, `metadata`, `request`,
/// `system`, `env`, `fields`, `outputs`, `computed`, `secrets`), shaped like what the
/// fulfillment engine builds for a database request.
pub fn context_json() -> Value {
    let hosts: Vec<Value> = (1..=20)
        .map(|i| {
            let zone = ["eu-west-1a", "eu-west-1b", "eu-west-1c"][i % 3];
            json!({
                "name": format!("pg-billing-{i:02}"),
                "ip": format!("10.20.{}.{}", i / 8, 10 + i),
                "zone": zone,
                "role": if i == 1 { "primary" } else { "replica" },
            })
        })
        .collect();
    json!({
        "user": {
            "id": "u-1042",
            "email": "ada.lovelace@example.com",
            "name": "Ada Lovelace",
            "teams": ["data-platform", "billing"],
            "roles": ["developer", "db-admin"]
        },
        "metadata": {
            "id": "database.postgres",
            "name": "PostgreSQL database",
            "version": "2.3.0",
            "owner": "platform-team"
        },
        "request": {
            "id": "req-7f3a9c",
            "created_at": "2026-11-29T10:04:12Z",
            "environment": "production",
            "priority": "high",
            "correlation_id": "c0ffee-1234-5678"
        },
        "system": {
            "now": "2026-11-29T10:04:13Z",
            "instance": "pao-eu-1",
            "version": "0.1.0",
            "base_url": "https://pao.example.com"
        },
        "env": {
            "REGION": "eu-west-1",
            "API_BASE": "https://infra.example.com",
            "JIRA_PROJECT": "OPS"
        },
        "fields": {
            "name": "  Billing Ledger DB ",
            "project": "Billing",
            "env": "prod",
            "replicas": 3,
            "storage_gb": 250,
            "size": "large",
            "cost_center": "CC-4410",
            "backup": true,
            "justification": "Quarter-end reporting load needs a dedicated replica set."
        },
        "outputs": {
            "terraform": { "endpoint": "billing-ledger.db.internal", "port": 5432 },
            "inventory": { "hosts": hosts }
        },
        "computed": {
            "db_name": "billing-prod",
            "owner_team": "data-platform"
        },
        "secrets": {
            "api_token": "tok_live_9f8e7d6c"
        }
    })
}

/// PAO's context over [`context_json`]: each scope borrows its part of the object.
pub fn pao_context(json: &Value) -> Context<'_> {
    let mut ctx = Context::new();
    for scope in SCOPES {
        ctx.set(scope, &json[scope.name()]);
    }
    ctx
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str().unwrap_or("")
}

fn i(v: &Value, path: &[&str]) -> i64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_i64().unwrap_or(0)
}

/// Two variables in one line.
pub mod small {
    use super::*;

    /// PAO (and minijinja with `${{ }}` delimiters).
    pub const PAO: &str = "Request ${{ request.id }} for ${{ user.email }}";
    /// minijinja, configured with PAO's delimiters.
    pub const MINIJINJA: &str = PAO;
    /// tera (its delimiters are two bytes, so `{{ }}`).
    pub const TERA: &str = "Request {{ request.id }} for {{ user.email }}";
    /// handlebars.
    pub const HANDLEBARS: &str = "Request {{request.id}} for {{user.email}}";
    /// upon, configured with PAO's delimiters.
    pub const UPON: &str = PAO;

    /// Hand-written floor.
    pub fn native(c: &Value) -> String {
        let id = s(c, &["request", "id"]);
        let email = s(c, &["user", "email"]);
        let mut out = String::with_capacity(13 + id.len() + email.len());
        out.push_str("Request ");
        out.push_str(id);
        out.push_str(" for ");
        out.push_str(email);
        out
    }
}

/// A JIRA ticket description: 20 variables over 8 scopes, on 17 lines.
pub mod jira20 {
    use super::*;

    /// PAO (and minijinja and upon with `${{ }}` delimiters; upon indexes with `.0`).
    pub const PAO: &str = "h2. Database request ${{ request.id }}

*Requested by:* ${{ user.name }} (${{ user.email }}), team ${{ user.teams[0] }}
*Catalog item:* ${{ metadata.name }} v${{ metadata.version }}
*Priority:* ${{ request.priority }}, created ${{ request.created_at }}

h3. Details
* Name: ${{ computed.db_name }}
* Project: ${{ fields.project }}
* Environment: ${{ fields.env }} in ${{ env.REGION }}
* Replicas: ${{ fields.replicas }}, storage ${{ fields.storage_gb }} GB
* Cost center: ${{ fields.cost_center }}

h3. Justification
${{ fields.justification }}

Endpoint: ${{ outputs.terraform.endpoint }}:${{ outputs.terraform.port }}
Tracked by ${{ system.instance }} at ${{ system.base_url }}/requests
";
    /// minijinja, configured with PAO's delimiters.
    pub const MINIJINJA: &str = PAO;

    /// tera.
    pub fn tera() -> String {
        PAO.replace("${{", "{{")
    }

    /// handlebars.
    pub fn handlebars() -> String {
        PAO.replace("${{ ", "{{")
            .replace(" }}", "}}")
            .replace("teams[0]", "teams.[0]")
    }

    /// upon, configured with PAO's delimiters.
    pub fn upon() -> String {
        PAO.replace("teams[0]", "teams.0")
    }

    /// Hand-written floor.
    pub fn native(c: &Value) -> String {
        let mut o = String::with_capacity(768);
        o.push_str("h2. Database request ");
        o.push_str(s(c, &["request", "id"]));
        o.push_str("\n\n*Requested by:* ");
        o.push_str(s(c, &["user", "name"]));
        o.push_str(" (");
        o.push_str(s(c, &["user", "email"]));
        o.push_str("), team ");
        o.push_str(c["user"]["teams"][0].as_str().unwrap_or(""));
        o.push_str("\n*Catalog item:* ");
        o.push_str(s(c, &["metadata", "name"]));
        o.push_str(" v");
        o.push_str(s(c, &["metadata", "version"]));
        o.push_str("\n*Priority:* ");
        o.push_str(s(c, &["request", "priority"]));
        o.push_str(", created ");
        o.push_str(s(c, &["request", "created_at"]));
        o.push_str("\n\nh3. Details\n* Name: ");
        o.push_str(s(c, &["computed", "db_name"]));
        o.push_str("\n* Project: ");
        o.push_str(s(c, &["fields", "project"]));
        o.push_str("\n* Environment: ");
        o.push_str(s(c, &["fields", "env"]));
        o.push_str(" in ");
        o.push_str(s(c, &["env", "REGION"]));
        o.push_str("\n* Replicas: ");
        let _ = write!(o, "{}", i(c, &["fields", "replicas"]));
        o.push_str(", storage ");
        let _ = write!(o, "{}", i(c, &["fields", "storage_gb"]));
        o.push_str(" GB\n* Cost center: ");
        o.push_str(s(c, &["fields", "cost_center"]));
        o.push_str("\n\nh3. Justification\n");
        o.push_str(s(c, &["fields", "justification"]));
        o.push_str("\n\nEndpoint: ");
        o.push_str(s(c, &["outputs", "terraform", "endpoint"]));
        o.push(':');
        let _ = write!(o, "{}", i(c, &["outputs", "terraform", "port"]));
        o.push_str("\nTracked by ");
        o.push_str(s(c, &["system", "instance"]));
        o.push_str(" at ");
        o.push_str(s(c, &["system", "base_url"]));
        o.push_str("/requests\n");
        o
    }
}

/// Three chained filters: `trim`, `lower`, `replace`.
pub mod filters3 {
    use super::*;

    /// PAO (and minijinja with `${{ }}` delimiters).
    pub const PAO: &str = "db-${{ fields.name | trim | lower | replace(' ', '-') }}";
    /// minijinja, configured with PAO's delimiters.
    pub const MINIJINJA: &str = PAO;
    /// tera.
    pub const TERA: &str = "db-{{ fields.name | trim | lower | replace(from=' ', to='-') }}";
    /// handlebars, with `trim`, `lower` and `replace` registered as helpers.
    pub const HANDLEBARS: &str = "db-{{replace (lower (trim fields.name)) \" \" \"-\"}}";
    /// upon, with `trim`, `lower` and `replace` registered as filters.
    pub const UPON: &str = "db-${{ fields.name | trim | lower | replace: \" \", \"-\" }}";

    /// Hand-written floor.
    pub fn native(c: &Value) -> String {
        let name = s(c, &["fields", "name"]).trim().to_lowercase();
        let mut out = String::with_capacity(3 + name.len());
        out.push_str("db-");
        out.push_str(&name.replace(' ', "-"));
        out
    }
}

/// A loop over 20 objects using `loop.index`, `loop.first` and `loop.last`.
pub mod loop20 {
    use super::*;

    /// PAO (and minijinja with `${{ }}` delimiters and trim_blocks): one line per host, the
    /// host's name read from the loop item.
    pub const PAO: &str = "Hosts:
{% for h in outputs.inventory.hosts %}
- ${{ h.name }}
{% endfor %}
";
    /// minijinja, configured with PAO's delimiters and trim_blocks.
    pub const MINIJINJA: &str = PAO;
    /// tera (no trim_blocks: `-%}` does it).
    pub const TERA: &str = "Hosts:
{% for h in outputs.inventory.hosts -%}
- {{ h.name }}
{% endfor -%}
";
    /// handlebars.
    pub const HANDLEBARS: &str = "Hosts:
{{#each outputs.inventory.hosts as |h|}}
- {{h.name}}
{{/each}}
";
    /// upon.
    pub const UPON: &str = "Hosts:
{% for h in outputs.inventory.hosts -%}
- ${{ h.name }}
{% endfor -%}
";

    /// Hand-written floor.
    pub fn native(c: &Value) -> String {
        let mut o = String::with_capacity(512);
        o.push_str("Hosts:\n");
        let hosts = c["outputs"]["inventory"]["hosts"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for h in hosts {
            o.push_str("- ");
            o.push_str(s(h, &["name"]));
            o.push('\n');
        }
        o
    }
}

/// 20 hosts, each line with `loop.index`, three fields and two conditionals on `loop.first`
/// and `loop.last`: six dynamic pieces per iteration.
pub mod loop20_rich {
    use super::*;

    /// PAO (and minijinja with `${{ }}` delimiters and trim_blocks).
    pub const PAO: &str = "Hosts:
{% for h in outputs.inventory.hosts %}
${{ loop.index }}. ${{ h.name }} ${{ h.ip }} ${{ h.zone }}{% if loop.first %} (first){% endif %}{% if loop.last %} (last){% endif %}

{% endfor %}
";
    /// minijinja, configured with PAO's delimiters and trim_blocks.
    pub const MINIJINJA: &str = PAO;
    /// tera (no trim_blocks: `-%}` does it).
    pub const TERA: &str = "Hosts:
{% for h in outputs.inventory.hosts -%}
{{ loop.index }}. {{ h.name }} {{ h.ip }} {{ h.zone }}{% if loop.first %} (first){% endif %}{% if loop.last %} (last){% endif %}
{% endfor -%}
";
    /// handlebars, with `inc` registered (`@index` counts from 0).
    pub const HANDLEBARS: &str = "Hosts:
{{#each outputs.inventory.hosts as |h|}}
{{inc @index}}. {{h.name}} {{h.ip}} {{h.zone}}{{#if @first}} (first){{/if}}{{#if @last}} (last){{/if}}
{{/each}}
";
    /// upon, with `inc` registered (`loop.index` counts from 0).
    pub const UPON: &str = "Hosts:
{% for h in outputs.inventory.hosts -%}
${{ loop.index | inc }}. ${{ h.name }} ${{ h.ip }} ${{ h.zone }}{% if loop.first %} (first){% endif %}{% if loop.last %} (last){% endif %}
{% endfor -%}
";

    /// Hand-written floor.
    pub fn native(c: &Value) -> String {
        let mut o = String::with_capacity(1024);
        o.push_str("Hosts:\n");
        let hosts = c["outputs"]["inventory"]["hosts"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for (n, h) in hosts.iter().enumerate() {
            let _ = write!(o, "{}", n + 1);
            o.push_str(". ");
            o.push_str(s(h, &["name"]));
            o.push(' ');
            o.push_str(s(h, &["ip"]));
            o.push(' ');
            o.push_str(s(h, &["zone"]));
            if n == 0 {
                o.push_str(" (first)");
            }
            if n + 1 == hosts.len() {
                o.push_str(" (last)");
            }
            o.push('\n');
        }
        o
    }
}

/// A `when:` condition evaluated to a bool.
pub mod cond_expr {
    use super::*;

    /// PAO.
    pub const PAO: &str = "fields.env == 'prod' && fields.replicas > 2";
    /// minijinja expression.
    pub const MINIJINJA: &str = "fields.env == 'prod' and fields.replicas > 2";
    /// rhai expression.
    pub const RHAI: &str = "fields.env == \"prod\" && fields.replicas > 2";
    /// tera has no expression API: a template that renders `true` or `false`.
    pub const TERA: &str =
        "{% if fields.env == 'prod' and fields.replicas > 2 %}true{% else %}false{% endif %}";
    /// handlebars, with its built-in `eq`, `gt` and `and` helpers.
    pub const HANDLEBARS: &str =
        "{{#if (and (eq fields.env \"prod\") (gt fields.replicas 2))}}true{{else}}false{{/if}}";
    /// upon has neither comparisons nor `and`: `eq` and `gt` filters and a nested `if`.
    pub const UPON: &str = "{% if fields.env | eq: \"prod\" %}{% if fields.replicas | gt: 2 %}true{% else %}false{% endif %}{% else %}false{% endif %}";

    /// Hand-written floor.
    pub fn native(c: &Value) -> bool {
        let f = &c["fields"];
        f["env"].as_str() == Some("prod") && f["replicas"].as_i64().is_some_and(|r| r > 2)
    }
}

/// The common shapes of conditions beside `cond_expr`: membership in a constant list (and the
/// `==` chain it stands for), arithmetic on fields compared with a number, and constants that
/// fold when compiled. Each is written for PAO, minijinja and rhai, with a hand-written floor.
pub mod cond_shapes {
    use super::*;

    /// One condition in each engine's syntax.
    pub struct Shape {
        /// The bench group.
        pub group: &'static str,
        /// PAO.
        pub pao: &'static str,
        /// minijinja.
        pub minijinja: &'static str,
        /// rhai.
        pub rhai: &'static str,
        /// Hand-written floor.
        pub native: fn(&Value) -> bool,
    }

    /// `fields.env` is `prod`, the last of four: every comparison is made.
    pub const IN_LIST: Shape = Shape {
        group: "cond_in_list",
        pao: "fields.env in ['dev', 'qa', 'staging', 'prod']",
        minijinja: "fields.env in ['dev', 'qa', 'staging', 'prod']",
        rhai: "fields.env in [\"dev\", \"qa\", \"staging\", \"prod\"]",
        native: |c| {
            let env = c["fields"]["env"].as_str();
            ["dev", "qa", "staging", "prod"]
                .iter()
                .any(|e| env == Some(e))
        },
    };

    /// The `==` chain that `IN_LIST` stands for (PAO only; the target is `in` within 1.5x).
    pub const EQ_CHAIN: &str = "fields.env == 'dev' || fields.env == 'qa' || fields.env == 'staging' || fields.env == 'prod'";

    /// Arithmetic on fields compared with a number.
    pub const ARITH: Shape = Shape {
        group: "cond_arith",
        pao: "fields.replicas * fields.storage_gb + 50 > 700",
        minijinja: "fields.replicas * fields.storage_gb + 50 > 700",
        rhai: "fields.replicas * fields.storage_gb + 50 > 700",
        native: |c| {
            let f = &c["fields"];
            match (f["replicas"].as_i64(), f["storage_gb"].as_i64()) {
                (Some(r), Some(s)) => r * s + 50 > 700,
                _ => false,
            }
        },
    };

    /// Constants written as expressions: a size in GB, a name joined from parts.
    pub const CONST_FOLD: Shape = Shape {
        group: "cond_const_fold",
        pao: "fields.storage_gb < 1024 * 4 && fields.size != 'x' ~ 'large'",
        minijinja: "fields.storage_gb < 1024 * 4 and fields.size != 'x' ~ 'large'",
        rhai: "fields.storage_gb < 1024 * 4 && fields.size != \"x\" + \"large\"",
        native: |c| {
            let f = &c["fields"];
            f["storage_gb"].as_i64().is_some_and(|g| g < 1024 * 4)
                && f["size"].as_str() != Some("xlarge")
        },
    };
}

/// A template that reads a misspelt variable, rendered in strict mode: the cost of the error.
pub mod error_undefined {
    /// PAO.
    pub const PAO: &str = "Hello ${{ user.nmae }}, welcome.";
    /// minijinja, configured with PAO's delimiters and strict undefined.
    pub const MINIJINJA: &str = PAO;
    /// tera.
    pub const TERA: &str = "Hello {{ user.nmae }}, welcome.";
    /// handlebars in strict mode.
    pub const HANDLEBARS: &str = "Hello {{user.nmae}}, welcome.";
    /// upon.
    pub const UPON: &str = PAO;
}

/// Everything one catalog item renders for one request: an HTTP action's config with ten
/// templated strings, three `when:` conditions and two computed values.
pub mod catalog_item {
    use super::*;

    /// The item's templates, conditions and computed values in one engine's syntax.
    pub struct Sources {
        /// The action config's templated strings, by JSON pointer.
        pub config: [(&'static str, String); 10],
        /// `when:` conditions (for template-only engines, templates rendering `true`/`false`).
        pub when: [String; 3],
        /// Computed values (for template-only engines, templates rendering the value).
        pub computed: [String; 2],
    }

    /// What rendering the item produces, in a form every engine can be compared on.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Output {
        /// The rendered config strings, in [`Sources::config`] order.
        pub config: Vec<String>,
        /// The conditions.
        pub when: [bool; 3],
        /// The computed values, as text.
        pub computed: [String; 2],
    }

    const POINTERS: [&str; 10] = [
        "/url",
        "/headers/Authorization",
        "/headers/X-Request-Id",
        "/body/name",
        "/body/owner",
        "/body/team",
        "/body/region",
        "/body/size",
        "/body/description",
        "/body/labels",
    ];

    const PAO_CONFIG: [&str; 10] = [
        "${{ env.API_BASE }}/v1/projects/${{ fields.project | lower }}/databases",
        "Bearer ${{ secrets.api_token }}",
        "${{ request.id }}",
        "${{ computed.db_name }}",
        "${{ user.email }}",
        "${{ user.teams[0] }}",
        "${{ env.REGION }}",
        "${{ fields.size | upper }}",
        "Requested by ${{ user.name }} for ${{ metadata.name }} (${{ request.id }})",
        "team=${{ user.teams[0] }},env=${{ fields.env }},cost-center=${{ fields.cost_center | lower }}",
    ];

    fn config(f: impl Fn(&str) -> String) -> [(&'static str, String); 10] {
        std::array::from_fn(|n| (POINTERS[n], f(PAO_CONFIG[n])))
    }

    /// PAO: templates, and bare expressions for conditions and computed values.
    pub fn pao() -> Sources {
        Sources {
            config: config(str::to_string),
            when: [
                "fields.env == 'prod' && fields.replicas > 2".into(),
                "'db-admin' in user.roles || fields.env != 'prod'".into(),
                "fields.storage_gb >= 500".into(),
            ],
            computed: [
                "lower(fields.project) ~ '-' ~ fields.env".into(),
                "fields.storage_gb * 1024".into(),
            ],
        }
    }

    /// minijinja: templates with PAO's delimiters, and its expression API.
    pub fn minijinja() -> Sources {
        Sources {
            config: config(str::to_string),
            when: [
                "fields.env == 'prod' and fields.replicas > 2".into(),
                "'db-admin' in user.roles or fields.env != 'prod'".into(),
                "fields.storage_gb >= 500".into(),
            ],
            computed: [
                "(fields.project | lower) ~ '-' ~ fields.env".into(),
                "fields.storage_gb * 1024".into(),
            ],
        }
    }

    /// tera: templates only.
    pub fn tera() -> Sources {
        let cond = |c: &str| format!("{{% if {c} %}}true{{% else %}}false{{% endif %}}");
        Sources {
            config: config(|t| t.replace("${{", "{{")),
            when: [
                cond("fields.env == 'prod' and fields.replicas > 2"),
                cond("'db-admin' in user.roles or fields.env != 'prod'"),
                cond("fields.storage_gb >= 500"),
            ],
            computed: [
                "{{ fields.project | lower }}-{{ fields.env }}".into(),
                "{{ fields.storage_gb * 1024 }}".into(),
            ],
        }
    }

    /// handlebars: templates with `lower`, `upper`, `contains` and `mul` registered.
    pub fn handlebars() -> Sources {
        let cond = |c: &str| format!("{{{{#if {c}}}}}true{{{{else}}}}false{{{{/if}}}}");
        Sources {
            config: config(|t| {
                t.replace("${{ fields.project | lower }}", "{{lower fields.project}}")
                    .replace("${{ fields.size | upper }}", "{{upper fields.size}}")
                    .replace(
                        "${{ fields.cost_center | lower }}",
                        "{{lower fields.cost_center}}",
                    )
                    .replace("teams[0]", "teams.[0]")
                    .replace("${{ ", "{{")
                    .replace(" }}", "}}")
            }),
            when: [
                cond("(and (eq fields.env \"prod\") (gt fields.replicas 2))"),
                cond("(or (contains user.roles \"db-admin\") (ne fields.env \"prod\"))"),
                cond("(gte fields.storage_gb 500)"),
            ],
            computed: [
                "{{lower fields.project}}-{{fields.env}}".into(),
                "{{mul fields.storage_gb 1024}}".into(),
            ],
        }
    }

    /// upon: templates with `lower`, `upper`, `eq`, `ne`, `gt`, `ge`, `contains` and `mul`
    /// registered; no `and`/`or`, so conditions nest.
    pub fn upon() -> Sources {
        Sources {
            config: config(|t| t.replace("teams[0]", "teams.0")),
            when: [
                "{% if fields.env | eq: \"prod\" %}{% if fields.replicas | gt: 2 %}true{% else %}false{% endif %}{% else %}false{% endif %}".into(),
                "{% if user.roles | contains: \"db-admin\" %}true{% else if fields.env | ne: \"prod\" %}true{% else %}false{% endif %}".into(),
                "{% if fields.storage_gb | ge: 500 %}true{% else %}false{% endif %}".into(),
            ],
            computed: [
                "${{ fields.project | lower }}-${{ fields.env }}".into(),
                "${{ fields.storage_gb | mul: 1024 }}".into(),
            ],
        }
    }

    /// rhai: interpolated strings for the config, expressions for the rest.
    pub fn rhai() -> Sources {
        Sources {
            config: config(|t| {
                let t = t
                    .replace("fields.project | lower", "fields.project.to_lower()")
                    .replace("fields.size | upper", "fields.size.to_upper()")
                    .replace(
                        "fields.cost_center | lower",
                        "fields.cost_center.to_lower()",
                    )
                    .replace("${{ ", "${")
                    .replace(" }}", "}");
                format!("`{t}`")
            }),
            when: [
                "fields.env == \"prod\" && fields.replicas > 2".into(),
                "\"db-admin\" in user.roles || fields.env != \"prod\"".into(),
                "fields.storage_gb >= 500".into(),
            ],
            computed: [
                "fields.project.to_lower() + \"-\" + fields.env".into(),
                "fields.storage_gb * 1024".into(),
            ],
        }
    }

    /// Hand-written floor.
    pub fn native(c: &Value) -> Output {
        let (u, f, r, e) = (&c["user"], &c["fields"], &c["request"], &c["env"]);
        let team = u["teams"][0].as_str().unwrap_or("");
        let cat = |parts: &[&str]| {
            let mut o = String::with_capacity(parts.iter().map(|p| p.len()).sum());
            for p in parts {
                o.push_str(p);
            }
            o
        };
        let project = s(f, &["project"]).to_lowercase();
        let config = vec![
            cat(&[s(e, &["API_BASE"]), "/v1/projects/", &project, "/databases"]),
            cat(&["Bearer ", s(c, &["secrets", "api_token"])]),
            s(r, &["id"]).to_string(),
            s(c, &["computed", "db_name"]).to_string(),
            s(u, &["email"]).to_string(),
            team.to_string(),
            s(e, &["REGION"]).to_string(),
            s(f, &["size"]).to_uppercase(),
            cat(&[
                "Requested by ",
                s(u, &["name"]),
                " for ",
                s(c, &["metadata", "name"]),
                " (",
                s(r, &["id"]),
                ")",
            ]),
            cat(&[
                "team=",
                team,
                ",env=",
                s(f, &["env"]),
                ",cost-center=",
                &s(f, &["cost_center"]).to_lowercase(),
            ]),
        ];
        let env = s(f, &["env"]);
        let roles = u["roles"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let when = [
            env == "prod" && i(f, &["replicas"]) > 2,
            roles.iter().any(|r| r == "db-admin") || env != "prod",
            i(f, &["storage_gb"]) >= 500,
        ];
        let mut storage = String::new();
        let _ = write!(storage, "{}", i(f, &["storage_gb"]) * 1024);
        Output {
            config,
            when,
            computed: [cat(&[&project, "-", env]), storage],
        }
    }
}
