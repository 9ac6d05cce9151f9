//! The endpoint table: one list builds both the axum router and the OpenAPI 3.1 document, so
//! the published document cannot drift from the routes. Request bodies and query parameters
//! come from the handlers' own serde types (`utoipa::ToSchema` / `IntoParams`).

use axum::routing::{MethodRouter, get, post};
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, Parameter, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, ObjectBuilder, OpenApi, OpenApiBuilder,
    PathsBuilder, Ref, Required, ResponseBuilder, ResponsesBuilder, Type,
};
use utoipa::{IntoParams, ToSchema};

use super::{admin, authoring, catalog, governance, requests, teams, webhooks, ws};
use crate::state::AppState;

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone (probes).
    Open,
    /// Any authenticated principal (further checks per resource).
    User,
    /// Principals with the `admin` role.
    Admin,
    /// Signed by the sender (webhooks).
    Signed,
}

type AddSchema = fn(ComponentsBuilder) -> ComponentsBuilder;

/// One endpoint.
pub struct Endpoint {
    /// `GET` or `POST`.
    pub method: HttpMethod,
    /// Path under `/api/v1`, axum syntax (`/requests/{id}`).
    pub path: &'static str,
    /// OpenAPI tag.
    pub tag: &'static str,
    /// One line.
    pub summary: &'static str,
    /// Who may call it.
    pub auth: Auth,
    /// Success status.
    pub ok: u16,
    /// Request body schema name and how to add it to the components.
    pub body: Option<(&'static str, AddSchema)>,
    /// Query parameters.
    pub query: Option<fn() -> Vec<Parameter>>,
    /// A WebSocket upgrade.
    pub websocket: bool,
    /// The handler.
    pub handler: MethodRouter<AppState>,
}

fn ep(
    method: HttpMethod,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
    auth: Auth,
    handler: MethodRouter<AppState>,
) -> Endpoint {
    Endpoint {
        ok: 200,
        method,
        path,
        tag,
        summary,
        auth,
        body: None,
        query: None,
        websocket: false,
        handler,
    }
}

impl Endpoint {
    fn body<T: ToSchema + 'static>(mut self) -> Endpoint {
        fn add<T: ToSchema>(c: ComponentsBuilder) -> ComponentsBuilder {
            c.schema_from::<T>()
        }
        self.body = Some((leak(T::name().into_owned()), add::<T>));
        self
    }

    fn query<T: IntoParams>(mut self) -> Endpoint {
        fn params<T: IntoParams>() -> Vec<Parameter> {
            T::into_params(|| Some(ParameterIn::Query))
        }
        self.query = Some(params::<T>);
        self
    }

    fn ok(mut self, status: u16) -> Endpoint {
        self.ok = status;
        self
    }

    fn ws(mut self) -> Endpoint {
        self.websocket = true;
        self.ok = 101;
        self
    }
}

fn leak(s: String) -> &'static str {
    // Schema names are a fixed, small set built once per process.
    Box::leak(s.into_boxed_str())
}

use Auth::*;
use HttpMethod::{Get as G, Post as P};

/// Every endpoint of `/api/v1`.
pub fn endpoints() -> Vec<Endpoint> {
    vec![
        ep(
            G,
            "/catalog",
            "catalog",
            "Browse the items the caller may see",
            User,
            get(catalog::list),
        )
        .query::<catalog::CatalogQuery>(),
        ep(
            G,
            "/catalog/search",
            "catalog",
            "Full-text search with typo tolerance and highlights",
            User,
            get(catalog::search),
        )
        .query::<catalog::SearchQuery>(),
        ep(
            G,
            "/catalog/items/{item_id}",
            "catalog",
            "An item as written, with version and content hash",
            User,
            get(catalog::item),
        ),
        ep(
            G,
            "/catalog/items/{item_id}/schema",
            "catalog",
            "The item's form as JSON Schema 2020-12 with UI hints",
            User,
            get(catalog::schema),
        ),
        ep(
            G,
            "/catalog/items/{item_id}/fields/{field_id}/options",
            "catalog",
            "Options of a select-like field (static, catalog or HTTP source)",
            User,
            get(catalog::field_options),
        ),
        ep(
            G,
            "/catalog/{category}",
            "catalog",
            "Items of one category",
            User,
            get(catalog::by_category),
        )
        .query::<catalog::CatalogQuery>(),
        ep(
            P,
            "/catalog/refresh",
            "admin",
            "Reload the catalog folder now",
            Admin,
            post(admin::refresh_catalog),
        ),
        ep(
            G,
            "/catalog/validation/{item_id}",
            "admin",
            "Diagnostics of an item's file from the last load",
            User,
            get(admin::validation),
        ),
        ep(
            P,
            "/requests",
            "requests",
            "Submit a request (Idempotency-Key header honoured)",
            User,
            post(requests::submit),
        )
        .body::<requests::SubmitBody>()
        .ok(201),
        ep(
            G,
            "/requests",
            "requests",
            "The caller's requests (team's, or all for admins), newest first",
            User,
            get(requests::list),
        )
        .query::<requests::ListQuery>(),
        ep(
            G,
            "/requests/{id}",
            "requests",
            "A request with attempts, outputs and approvals",
            User,
            get(requests::detail),
        ),
        ep(
            G,
            "/requests/{id}/status",
            "requests",
            "State, progress and current actions",
            User,
            get(requests::status),
        ),
        ep(
            G,
            "/requests/{id}/logs",
            "requests",
            "The request's events from a sequence number",
            User,
            get(requests::logs),
        )
        .query::<requests::LogsQuery>(),
        ep(
            P,
            "/requests/{id}/retry",
            "requests",
            "Retry a failed request as a new one",
            User,
            post(requests::retry),
        )
        .body::<requests::RetryBody>()
        .ok(201),
        ep(
            P,
            "/requests/{id}/cancel",
            "requests",
            "Cancel a request (202 while rollback runs)",
            User,
            post(requests::cancel),
        )
        .body::<requests::CancelBody>(),
        ep(
            G,
            "/teams/{team_id}/requests",
            "teams",
            "A team's requests",
            User,
            get(teams::requests),
        )
        .query::<teams::TeamRequestsQuery>(),
        ep(
            G,
            "/teams/{team_id}/catalog",
            "teams",
            "Items the team owns, with request counts",
            User,
            get(teams::catalog),
        ),
        ep(
            G,
            "/teams/{team_id}/usage",
            "teams",
            "Quota usage and requests by state",
            User,
            get(teams::usage),
        ),
        ep(
            G,
            "/teams/{team_id}/analytics",
            "teams",
            "Success rate, completion times, popular items, failure reasons",
            User,
            get(teams::analytics),
        ),
        ep(
            G,
            "/teams/{team_id}/settings",
            "teams",
            "The team as catalog.yaml declares it, with quota limits",
            User,
            get(teams::settings),
        ),
        ep(
            P,
            "/teams/{team_id}/config",
            "teams",
            "Set the team's quotas (admins, team-admins)",
            User,
            post(teams::config),
        )
        .body::<teams::TeamConfigBody>(),
        ep(
            P,
            "/validate/catalog-item",
            "authoring",
            "Validate an item file",
            User,
            post(authoring::validate),
        )
        .body::<authoring::ItemSource>(),
        ep(
            P,
            "/preview/form",
            "authoring",
            "The form an item would produce",
            User,
            post(authoring::preview_form),
        )
        .body::<authoring::ItemSource>(),
        ep(
            P,
            "/test/variables",
            "authoring",
            "Render a template or evaluate an expression",
            User,
            post(authoring::test_variables),
        )
        .body::<authoring::TestVariables>(),
        ep(
            P,
            "/simulate/fulfillment",
            "authoring",
            "What a request would do, without running it",
            User,
            post(authoring::simulate),
        )
        .body::<authoring::ItemSource>(),
        ep(G, "/health", "admin", "Liveness", Open, get(admin::health)),
        ep(
            G,
            "/health/ready",
            "admin",
            "Readiness: store and catalog",
            Open,
            get(admin::ready),
        ),
        ep(
            G,
            "/metrics",
            "admin",
            "Prometheus metrics",
            Open,
            get(admin::metrics),
        ),
        ep(
            G,
            "/version",
            "admin",
            "Version information",
            Open,
            get(admin::version),
        ),
        ep(
            G,
            "/openapi.json",
            "admin",
            "This document",
            Open,
            get(openapi_json),
        ),
        ep(
            G,
            "/stats/usage",
            "admin",
            "Requests by state, team and item",
            Admin,
            get(admin::stats_usage),
        ),
        ep(
            G,
            "/stats/performance",
            "admin",
            "Completion times, queue depth, breakers",
            Admin,
            get(admin::stats_performance),
        ),
        ep(
            G,
            "/audit/requests",
            "admin",
            "The audit trail (reading it is audited)",
            Admin,
            get(admin::audit),
        )
        .query::<admin::AuditQuery>(),
        ep(
            G,
            "/approvals/pending",
            "governance",
            "Requests the caller may approve",
            User,
            get(governance::pending),
        )
        .query::<governance::PendingQuery>(),
        ep(
            P,
            "/approvals/{id}/approve",
            "governance",
            "Approve (the approval id is the request id)",
            User,
            post(governance::approve),
        )
        .body::<governance::ApproveBody>(),
        ep(
            P,
            "/approvals/{id}/reject",
            "governance",
            "Reject with a reason",
            User,
            post(governance::reject),
        )
        .body::<governance::RejectBody>(),
        ep(
            G,
            "/cost/estimates/{request_id}",
            "governance",
            "Cost estimates of a request",
            User,
            get(governance::cost_estimate),
        ),
        ep(
            G,
            "/quota/usage/{team_id}",
            "governance",
            "A team's quota usage",
            User,
            get(governance::quota_usage),
        ),
        ep(
            P,
            "/quota/limits/{team_id}",
            "governance",
            "Set a team's quota limits",
            Admin,
            post(governance::quota_limits),
        )
        .body::<governance::LimitsBody>(),
        ep(
            P,
            "/webhooks/github",
            "webhooks",
            "GitHub events (X-Hub-Signature-256)",
            Signed,
            post(webhooks::github),
        )
        .ok(202),
        ep(
            P,
            "/webhooks/jira",
            "webhooks",
            "JIRA issue events; resolves manual-mode requests",
            Signed,
            post(webhooks::jira),
        ),
        ep(
            P,
            "/webhooks/terraform",
            "webhooks",
            "Terraform Cloud run notifications (HMAC-SHA512)",
            Signed,
            post(webhooks::terraform),
        )
        .ok(202),
        ep(
            P,
            "/webhooks/approval",
            "webhooks",
            "Approval decisions from chat tools (X-PAO-Signature)",
            Signed,
            post(webhooks::approval),
        )
        .body::<webhooks::ApprovalHook>(),
        ep(
            G,
            "/ws/requests/{id}/status",
            "websockets",
            "Status stream of a request",
            User,
            get(ws::request_status),
        )
        .query::<ws::StreamQuery>()
        .ws(),
        ep(
            G,
            "/ws/requests/{id}/logs",
            "websockets",
            "Event stream of a request, resumable",
            User,
            get(ws::request_logs),
        )
        .query::<ws::StreamQuery>()
        .ws(),
        ep(
            G,
            "/ws/catalog/changes",
            "websockets",
            "Catalog change announcements",
            User,
            get(ws::catalog_changes),
        )
        .query::<ws::StreamQuery>()
        .ws(),
        ep(
            G,
            "/ws/notifications",
            "websockets",
            "What concerns the caller",
            User,
            get(ws::notifications),
        )
        .query::<ws::StreamQuery>()
        .ws(),
    ]
}

async fn openapi_json() -> axum::Json<serde_json::Value> {
    axum::Json(document_json())
}

/// The OpenAPI document as JSON (what `/api/v1/openapi.json` serves and
/// `schemas/openapi.json` holds).
pub fn document_json() -> serde_json::Value {
    serde_json::to_value(document()).unwrap_or(serde_json::Value::Null)
}

fn problem_ref() -> Ref {
    Ref::from_schema_name("Problem")
}

/// Builds the document from [`endpoints`].
pub fn document() -> OpenApi {
    let mut components = ComponentsBuilder::new()
        .schema(
            "Problem",
            ObjectBuilder::new()
                .description(Some("RFC 9457 problem details with a stable `code`."))
                .property("type", ObjectBuilder::new().schema_type(Type::String))
                .property("title", ObjectBuilder::new().schema_type(Type::String))
                .property("status", ObjectBuilder::new().schema_type(Type::Integer))
                .property("code", ObjectBuilder::new().schema_type(Type::String))
                .property("detail", ObjectBuilder::new().schema_type(Type::String))
                .property(
                    "errors",
                    ObjectBuilder::new().description(Some(
                        "Located field errors or catalog diagnostics, where they apply.",
                    )),
                )
                .required("status")
                .required("code")
                .required("detail"),
        )
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token or an OIDC JWT"))
                    .build(),
            ),
        );
    let mut paths = PathsBuilder::new();
    for e in endpoints() {
        let mut op = OperationBuilder::new()
            .summary(Some(e.summary))
            .tag(e.tag)
            .operation_id(Some(operation_id(&e)));
        let mut params: Vec<Parameter> = path_params(e.path);
        if let Some(q) = e.query {
            params.extend(q());
        }
        if !params.is_empty() {
            op = op.parameters(Some(params));
        }
        if let Some((name, add)) = e.body {
            components = add(components);
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(name)))
                            .build(),
                    )
                    .required(Some(Required::True))
                    .build(),
            ));
        }
        if matches!(e.auth, User | Admin) {
            op = op.security(SecurityRequirement::new::<_, [&str; 0], &str>("bearer", []));
        }
        let ok_desc = if e.websocket {
            "Switching to the WebSocket protocol"
        } else {
            "Success"
        };
        let mut responses = ResponsesBuilder::new().response(
            e.ok.to_string(),
            if e.websocket || e.path == "/metrics" {
                ResponseBuilder::new().description(ok_desc).build()
            } else {
                ResponseBuilder::new()
                    .description(ok_desc)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
                            .build(),
                    )
                    .build()
            },
        );
        let mut errors: Vec<(u16, &str)> = Vec::new();
        if e.auth != Open {
            errors.push((401, "Not authenticated or bad signature"));
        }
        if matches!(e.auth, User | Admin) {
            errors.push((403, "Not allowed"));
            errors.push((429, "Over the caller's request rate"));
        }
        if e.path.contains('{') {
            errors.push((404, "Not found or not visible to the caller"));
        }
        if e.body.is_some() || e.query.is_some() {
            errors.push((400, "Malformed request"));
            errors.push((422, "Invalid input, with located errors"));
        }
        if e.method == HttpMethod::Post
            && (e.path.starts_with("/requests/")
                || e.path.starts_with("/approvals")
                || e.path.starts_with("/webhooks"))
        {
            errors.push((
                409,
                "Conflicts with the request's state or a replayed delivery",
            ));
        }
        if e.path == "/health/ready" {
            errors.push((503, "Not ready"));
        }
        for (code, desc) in errors {
            responses = responses.response(
                code.to_string(),
                ResponseBuilder::new()
                    .description(desc)
                    .content(
                        "application/problem+json",
                        ContentBuilder::new().schema(Some(problem_ref())).build(),
                    )
                    .build(),
            );
        }
        op = op.responses(responses.build());
        let full = format!("/api/v1{}", e.path);
        paths = paths.path(full, PathItem::new(e.method, op.build()));
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("PAO — Platform Automation Orchestrator")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some("Self-service platform automation: browse the catalog, submit requests, follow them to completion. Errors are application/problem+json."))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components.build()))
        .build()
}

fn operation_id(e: &Endpoint) -> String {
    let method = if e.method == HttpMethod::Post {
        "post"
    } else {
        "get"
    };
    let mut id = String::from(method);
    for part in e.path.split('/').filter(|p| !p.is_empty()) {
        id.push('_');
        id.push_str(&part.replace(['{', '}'], "").replace(['-', '.'], "_"));
    }
    id
}

fn path_params(path: &str) -> Vec<Parameter> {
    path.split('/')
        .filter_map(|p| p.strip_prefix('{').and_then(|p| p.strip_suffix('}')))
        .map(|name| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build()
        })
        .collect()
}
