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
    /// Other success statuses with the same body (`200` for a replayed submission).
    pub also_ok: &'static [u16],
    /// Success body schema name and how to add it to the components (`None`: no JSON body).
    pub returns: Option<(&'static str, AddSchema)>,
    /// Error statuses the handler itself returns (`404`, `409`, `503`, ...). The ones every
    /// endpoint of its kind can return are added by [`Endpoint::statuses`].
    pub errors: &'static [u16],
    /// Request body schema name and how to add it to the components.
    pub body: Option<(&'static str, AddSchema)>,
    /// Whether the body may be left out (`OptBody` handlers).
    pub body_optional: bool,
    /// Whether the handler reads the request body at all (bodies are limited: 413).
    pub reads_body: bool,
    /// Query parameters.
    pub query: Option<fn() -> Vec<Parameter>>,
    /// Header parameters.
    pub headers: Option<fn() -> Vec<Parameter>>,
    /// Operations the success body leads to: (operation id, its path parameter, the body
    /// member that fills it).
    pub links: &'static [(&'static str, &'static str, &'static str)],
    /// A WebSocket upgrade.
    pub websocket: bool,
    /// The answer carries an `ETag`, and `If-None-Match` with it gives `304`.
    pub etag: bool,
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
        also_ok: &[],
        returns: None,
        errors: &[],
        body_optional: false,
        reads_body: false,
        method,
        path,
        tag,
        summary,
        auth,
        body: None,
        query: None,
        headers: None,
        links: &[],
        websocket: false,
        etag: false,
        handler,
    }
}

impl Endpoint {
    fn body<T: ToSchema + 'static>(mut self) -> Endpoint {
        fn add<T: ToSchema>(c: ComponentsBuilder) -> ComponentsBuilder {
            // The schemas it refers to, too.
            let mut nested = Vec::new();
            T::schemas(&mut nested);
            c.schema_from::<T>().schemas_from_iter(nested)
        }
        self.body = Some((leak(T::name().into_owned()), add::<T>));
        self.reads_body = true;
        self
    }

    /// The body may be left out (an empty body means `{}`).
    fn optional_body<T: ToSchema + 'static>(self) -> Endpoint {
        let mut e = self.body::<T>();
        e.body_optional = true;
        e
    }

    /// The handler reads the raw body (webhooks).
    fn raw_body(mut self) -> Endpoint {
        self.reads_body = true;
        self
    }

    /// The JSON body of the success response(s).
    fn returns<T: ToSchema + 'static>(mut self) -> Endpoint {
        fn add<T: ToSchema>(c: ComponentsBuilder) -> ComponentsBuilder {
            // The schemas it refers to, too.
            let mut nested = Vec::new();
            T::schemas(&mut nested);
            c.schema_from::<T>().schemas_from_iter(nested)
        }
        self.returns = Some((leak(T::name().into_owned()), add::<T>));
        self
    }

    /// Error statuses the handler returns.
    fn errors(mut self, codes: &'static [u16]) -> Endpoint {
        self.errors = codes;
        self
    }

    /// More success statuses, same body.
    fn also_ok(mut self, codes: &'static [u16]) -> Endpoint {
        self.also_ok = codes;
        self
    }

    /// Every error status of the operation: the handler's own ones and those of the layers
    /// around it (authentication, rate limit, extractors, body limit, content type).
    pub fn statuses(&self) -> Vec<u16> {
        let mut out: Vec<u16> = self.errors.to_vec();
        // Path segments are percent-decoded: one that is not UTF-8 is refused.
        // Query strings and JSON bodies that do not parse are refused.
        if self.path.contains('{') || self.query.is_some() || self.body.is_some() {
            out.push(400);
        }
        if self.body.is_some() {
            out.push(422);
        }
        if self.auth != Open {
            out.push(401);
        }
        if self.auth == Admin {
            out.push(403);
        }
        if self.method == HttpMethod::Post {
            // A body must be `application/json`.
            out.push(415);
            if self.reads_body {
                out.push(413);
            }
        }
        // Rate limits apply to every endpoint.
        out.push(429);
        out.sort_unstable();
        out.dedup();
        out
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
        self.headers = Some(websocket_headers);
        self
    }

    fn links(mut self, links: &'static [(&'static str, &'static str, &'static str)]) -> Endpoint {
        self.links = links;
        self
    }

    fn headers(mut self, h: fn() -> Vec<Parameter>) -> Endpoint {
        self.headers = Some(h);
        self
    }

    /// Conditional GET: an `ETag` on the answer, `304` for `If-None-Match`.
    fn conditional(mut self) -> Endpoint {
        self.etag = true;
        self.headers = Some(conditional_headers);
        self
    }
}

fn leak(s: String) -> &'static str {
    // Schema names are a fixed, small set built once per process.
    Box::leak(s.into_boxed_str())
}

use Auth::*;
use HttpMethod::{Get as G, Post as P};

/// What a request in a success body leads to.
const REQUEST_LINKS: &[(&str, &str, &str)] = &[
    ("get_requests_id", "id", "id"),
    ("get_requests_id_status", "id", "id"),
    ("get_requests_id_logs", "id", "id"),
    ("get_cost_estimates_request_id", "request_id", "id"),
    ("post_requests_id_cancel", "id", "id"),
    ("post_requests_id_retry", "id", "id"),
    ("post_approvals_id_approve", "id", "id"),
    ("post_approvals_id_reject", "id", "id"),
];

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
        .returns::<catalog::CatalogPage>()
        .conditional()
        .query::<catalog::CatalogQuery>(),
        ep(
            G,
            "/catalog/search",
            "catalog",
            "Full-text search with typo tolerance and highlights",
            User,
            get(catalog::search),
        )
        .returns::<catalog::SearchResults>()
        .conditional()
        .errors(&[503])
        .query::<catalog::SearchQuery>(),
        ep(
            G,
            "/catalog/items/{item_id}",
            "catalog",
            "An item as written, with version and content hash",
            User,
            get(catalog::item),
        )
        .returns::<catalog::ItemDetail>()
        .conditional()
        .errors(&[404]),
        ep(
            G,
            "/catalog/items/{item_id}/schema",
            "catalog",
            "The item's form as JSON Schema 2020-12 with UI hints",
            User,
            get(catalog::schema),
        )
        .returns::<catalog::FormSchema>()
        .conditional()
        .errors(&[404]),
        ep(
            G,
            "/catalog/items/{item_id}/fields/{field_id}/options",
            "catalog",
            "Options of a select-like field (static, catalog or HTTP source)",
            User,
            get(catalog::field_options),
        )
        .returns::<catalog::FieldOptions>()
        .errors(&[404, 422, 502]),
        ep(
            G,
            "/catalog/{category}",
            "catalog",
            "Items of one category",
            User,
            get(catalog::by_category),
        )
        .returns::<catalog::CatalogPage>()
        .conditional()
        .errors(&[404])
        .query::<catalog::CatalogQuery>(),
        ep(
            P,
            "/catalog/refresh",
            "admin",
            "Reload the catalog folder now",
            Admin,
            post(admin::refresh_catalog),
        )
        .returns::<admin::CatalogReload>()
        .errors(&[503]),
        ep(
            G,
            "/catalog/validation/{item_id}",
            "admin",
            "Diagnostics of an item's file from the last load",
            User,
            get(admin::validation),
        )
        .returns::<admin::ValidationReport>()
        .errors(&[403, 404]),
        ep(
            P,
            "/requests",
            "requests",
            "Submit a request (Idempotency-Key header honoured)",
            User,
            post(requests::submit),
        )
        .returns::<requests::RequestView>()
        .also_ok(&[200])
        .errors(&[403, 404, 409, 503])
        .body::<requests::SubmitBody>()
        .headers(submit_headers)
        .links(REQUEST_LINKS)
        .ok(201),
        ep(
            G,
            "/requests",
            "requests",
            "The caller's requests (team's, or all for admins), newest first",
            User,
            get(requests::list),
        )
        .returns::<requests::RequestPage>()
        .errors(&[403, 503])
        .query::<requests::ListQuery>(),
        ep(
            G,
            "/requests/{id}",
            "requests",
            "A request with attempts, outputs and approvals",
            User,
            get(requests::detail),
        )
        .returns::<requests::RequestDetail>()
        .errors(&[404, 503]),
        ep(
            G,
            "/requests/{id}/status",
            "requests",
            "State, progress and current actions",
            User,
            get(requests::status),
        )
        .returns::<requests::StatusView>()
        .errors(&[404, 503]),
        ep(
            G,
            "/requests/{id}/logs",
            "requests",
            "The request's events from a sequence number",
            User,
            get(requests::logs),
        )
        .returns::<requests::LogsPage>()
        .errors(&[404, 503])
        .query::<requests::LogsQuery>(),
        ep(
            P,
            "/requests/{id}/retry",
            "requests",
            "Retry a failed request as a new one",
            User,
            post(requests::retry),
        )
        .returns::<requests::RequestView>()
        .errors(&[403, 404, 409, 503])
        .optional_body::<requests::RetryBody>()
        .links(REQUEST_LINKS)
        .ok(201),
        ep(
            P,
            "/requests/{id}/cancel",
            "requests",
            "Cancel a request (202 while rollback runs)",
            User,
            post(requests::cancel),
        )
        .returns::<requests::RequestView>()
        .also_ok(&[202])
        .errors(&[403, 404, 409, 503])
        .optional_body::<requests::CancelBody>(),
        ep(
            G,
            "/teams/{team_id}/requests",
            "teams",
            "A team's requests",
            User,
            get(teams::requests),
        )
        .returns::<requests::RequestPage>()
        .errors(&[403, 503])
        .query::<teams::TeamRequestsQuery>(),
        ep(
            G,
            "/teams/{team_id}/catalog",
            "teams",
            "Items the team owns, with request counts",
            User,
            get(teams::catalog),
        )
        .returns::<teams::TeamCatalog>()
        .errors(&[403, 503]),
        ep(
            G,
            "/teams/{team_id}/usage",
            "teams",
            "Quota usage and requests by state",
            User,
            get(teams::usage),
        )
        .returns::<teams::TeamUsage>()
        .errors(&[403, 503]),
        ep(
            G,
            "/teams/{team_id}/analytics",
            "teams",
            "Success rate, completion times, popular items, failure reasons",
            User,
            get(teams::analytics),
        )
        .returns::<teams::TeamAnalytics>()
        .errors(&[403, 503]),
        ep(
            G,
            "/teams/{team_id}/settings",
            "teams",
            "The team as catalog.yaml declares it, with quota limits",
            User,
            get(teams::settings),
        )
        .returns::<teams::TeamSettings>()
        .errors(&[403, 503]),
        ep(
            P,
            "/teams/{team_id}/config",
            "teams",
            "Set the team's quotas (admins, team-admins)",
            User,
            post(teams::config),
        )
        .returns::<teams::TeamQuota>()
        .errors(&[403, 503])
        .body::<teams::TeamConfigBody>(),
        ep(
            P,
            "/validate/catalog-item",
            "authoring",
            "Validate an item file",
            User,
            post(authoring::validate),
        )
        .returns::<authoring::ItemVerdict>()
        .body::<authoring::doc::ValidateItem>(),
        ep(
            P,
            "/preview/form",
            "authoring",
            "The form an item would produce",
            User,
            post(authoring::preview_form),
        )
        .returns::<authoring::FormPreview>()
        .errors(&[404])
        .body::<authoring::doc::PreviewItem>(),
        ep(
            P,
            "/test/variables",
            "authoring",
            "Render a template or evaluate an expression",
            User,
            post(authoring::test_variables),
        )
        .returns::<authoring::VariablesResult>()
        .body::<authoring::doc::TestVariablesBody>(),
        ep(
            P,
            "/simulate/fulfillment",
            "authoring",
            "What a request would do, without running it",
            User,
            post(authoring::simulate),
        )
        .returns::<authoring::SimulationView>()
        .errors(&[403, 404, 409, 503])
        .body::<authoring::doc::SimulateItem>(),
        ep(G, "/health", "admin", "Liveness", Open, get(admin::health)).returns::<admin::Health>(),
        ep(
            G,
            "/health/ready",
            "admin",
            "Readiness: store and catalog",
            Open,
            get(admin::ready),
        )
        .returns::<admin::Ready>()
        .errors(&[503]),
        ep(
            G,
            "/metrics",
            "admin",
            "Prometheus metrics (admins, or the metrics token)",
            Admin,
            get(admin::metrics),
        ),
        ep(
            G,
            "/version",
            "admin",
            "Version information",
            Open,
            get(admin::version),
        )
        .returns::<admin::Version>(),
        ep(
            G,
            "/openapi.json",
            "admin",
            "This document",
            Open,
            get(openapi_json),
        )
        .returns::<OpenApiDocument>(),
        ep(
            G,
            "/stats/usage",
            "admin",
            "Requests by state, team and item",
            Admin,
            get(admin::stats_usage),
        )
        .returns::<admin::StatsUsage>()
        .errors(&[503]),
        ep(
            G,
            "/stats/performance",
            "admin",
            "Completion times, queue depth, breakers",
            Admin,
            get(admin::stats_performance),
        )
        .returns::<admin::StatsPerformance>()
        .errors(&[503]),
        ep(
            G,
            "/audit/requests",
            "admin",
            "The audit trail (reading it is audited)",
            Admin,
            get(admin::audit),
        )
        .returns::<admin::AuditPage>()
        .errors(&[503])
        .query::<admin::AuditQuery>(),
        ep(
            G,
            "/approvals/pending",
            "governance",
            "Requests the caller may approve",
            User,
            get(governance::pending),
        )
        .returns::<governance::PendingApprovals>()
        .errors(&[503])
        .query::<governance::PendingQuery>(),
        ep(
            P,
            "/approvals/{id}/approve",
            "governance",
            "Approve (the approval id is the request id)",
            User,
            post(governance::approve),
        )
        .returns::<requests::RequestView>()
        .errors(&[403, 404, 409, 503])
        .optional_body::<governance::ApproveBody>(),
        ep(
            P,
            "/approvals/{id}/reject",
            "governance",
            "Reject with a reason",
            User,
            post(governance::reject),
        )
        .returns::<requests::RequestView>()
        .errors(&[403, 404, 409, 503])
        .body::<governance::RejectBody>(),
        ep(
            G,
            "/cost/estimates/{request_id}",
            "governance",
            "Cost estimates of a request",
            User,
            get(governance::cost_estimate),
        )
        .returns::<governance::CostEstimates>()
        .errors(&[404, 503]),
        ep(
            G,
            "/quota/usage/{team_id}",
            "governance",
            "A team's quota usage",
            User,
            get(governance::quota_usage),
        )
        .returns::<governance::QuotaReport>()
        .errors(&[403, 503]),
        ep(
            P,
            "/quota/limits/{team_id}",
            "governance",
            "Set a team's quota limits",
            Admin,
            post(governance::quota_limits),
        )
        .returns::<governance::QuotaReport>()
        .errors(&[503])
        .body::<governance::LimitsBody>(),
        ep(
            P,
            "/webhooks/github",
            "webhooks",
            "GitHub events (X-Hub-Signature-256)",
            Signed,
            post(webhooks::github),
        )
        .returns::<webhooks::HookAccepted>()
        .raw_body()
        .errors(&[400, 404, 409, 503])
        .ok(202),
        ep(
            P,
            "/webhooks/jira",
            "webhooks",
            "JIRA issue events; resolves manual-mode requests",
            Signed,
            post(webhooks::jira),
        )
        .returns::<webhooks::JiraOutcome>()
        .raw_body()
        .errors(&[400, 404, 409, 422, 503]),
        ep(
            P,
            "/webhooks/terraform",
            "webhooks",
            "Terraform Cloud run notifications (HMAC-SHA512)",
            Signed,
            post(webhooks::terraform),
        )
        .returns::<webhooks::HookAccepted>()
        .raw_body()
        .errors(&[400, 404, 409, 503])
        .ok(202),
        ep(
            P,
            "/webhooks/approval",
            "webhooks",
            "Approval decisions from chat tools (X-PAO-Signature)",
            Signed,
            post(webhooks::approval),
        )
        .returns::<requests::RequestView>()
        .errors(&[403, 404, 409, 503])
        .body::<webhooks::ApprovalHook>(),
        ep(
            G,
            "/ws/requests/{id}/status",
            "websockets",
            "Status stream of a request",
            User,
            get(ws::request_status),
        )
        .errors(&[400, 404, 426, 503])
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
        .errors(&[400, 404, 426, 503])
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
        .errors(&[400, 426])
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
        .errors(&[400, 426])
        .query::<ws::StreamQuery>()
        .ws(),
    ]
}

/// An OpenAPI 3.1 document.
#[derive(serde::Serialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object)]
pub struct OpenApiDocument(serde_json::Value);

async fn openapi_json() -> axum::Json<OpenApiDocument> {
    axum::Json(OpenApiDocument(document_json()))
}

/// The OpenAPI document as JSON (what `/api/v1/openapi.json` serves and
/// `schemas/openapi.json` holds).
pub fn document_json() -> serde_json::Value {
    let mut doc = serde_json::to_value(document()).unwrap_or(serde_json::Value::Null);
    // utoipa 5 writes a link's `operationId` as `operation_id`.
    if let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) {
        for op in paths.values_mut().filter_map(|i| i.as_object_mut()) {
            for o in op.values_mut() {
                let Some(responses) = o.get_mut("responses").and_then(|r| r.as_object_mut()) else {
                    continue;
                };
                for r in responses.values_mut() {
                    let Some(links) = r.get_mut("links").and_then(|l| l.as_object_mut()) else {
                        continue;
                    };
                    for link in links.values_mut().filter_map(|l| l.as_object_mut()) {
                        if let Some(id) = link.remove("operation_id") {
                            link.insert("operationId".into(), id);
                        }
                    }
                }
            }
        }
    }
    doc
}

fn problem_ref() -> Ref {
    Ref::from_schema_name("Problem")
}

/// Builds the document from [`endpoints`].
pub fn document() -> OpenApi {
    let mut components = base_components();
    let mut paths = PathsBuilder::new();
    for e in endpoints() {
        let (op, more) = operation(&e, components);
        components = more;
        let full = format!("/api/v1{}", e.path);
        paths = paths.path(full, PathItem::new(e.method, op));
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

/// The `Problem` schema and the bearer security scheme.
fn base_components() -> ComponentsBuilder {
    ComponentsBuilder::new()
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
                    utoipa::openapi::schema::ArrayBuilder::new()
                        .items(ObjectBuilder::new().schema_type(Type::Object))
                        .description(Some(
                            "Located field errors (`pointer`, `message`) or catalog diagnostics, where they apply.",
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
        )
}

/// One endpoint's operation; the schemas it names are added to `components`.
fn operation(
    e: &Endpoint,
    mut components: ComponentsBuilder,
) -> (utoipa::openapi::path::Operation, ComponentsBuilder) {
    let mut op = OperationBuilder::new()
        .summary(Some(e.summary))
        .tag(e.tag)
        .operation_id(Some(operation_id(e)));
    let mut params: Vec<Parameter> = path_params(e.path);
    if let Some(q) = e.query {
        params.extend(q().into_iter().map(full_range));
    }
    if let Some(h) = e.headers {
        params.extend(h());
    }
    if !params.is_empty() {
        op = op.parameters(Some(params));
    }
    if let Some((name, add)) = e.body {
        components = add(components);
        let required = if e.body_optional {
            Required::False
        } else {
            Required::True
        };
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .content("application/json", json_content(name))
                .required(Some(required))
                .build(),
        ));
    }
    if matches!(e.auth, User | Admin) {
        op = op.security(SecurityRequirement::new::<_, [&str; 0], &str>("bearer", []));
    }
    let (mut responses, components) = success_responses(e, components);
    for code in e.statuses() {
        responses = responses.response(
            code.to_string(),
            ResponseBuilder::new()
                .description(error_description(code))
                .content(
                    "application/problem+json",
                    ContentBuilder::new().schema(Some(problem_ref())).build(),
                )
                .build(),
        );
    }
    (op.responses(responses.build()).build(), components)
}

/// The success responses of `e` (with `304` for a conditional GET), and the schemas they use.
fn success_responses(
    e: &Endpoint,
    mut components: ComponentsBuilder,
) -> (ResponsesBuilder, ComponentsBuilder) {
    let mut responses = ResponsesBuilder::new();
    for code in std::iter::once(e.ok).chain(e.also_ok.iter().copied()) {
        if let Some((_, add)) = e.returns.filter(|_| !e.websocket) {
            components = add(components);
        }
        responses = responses.response(code.to_string(), success_response(e, code));
    }
    if e.etag {
        responses = responses.response(
            "304",
            ResponseBuilder::new()
                .description("Not modified: `If-None-Match` names the answer's current `ETag`")
                .build(),
        );
    }
    (responses, components)
}

fn json_content(schema: &str) -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(schema)))
        .build()
}

/// A success response: its type's schema, links to the operations that take its members.
fn success_response(e: &Endpoint, code: u16) -> utoipa::openapi::Response {
    let desc = success_description(e, code);
    if e.websocket {
        return ResponseBuilder::new().description(desc).build();
    }
    let Some((name, _)) = e.returns else {
        // `/metrics`: the Prometheus text format.
        return ResponseBuilder::new()
            .description(desc)
            .content(
                "text/plain",
                ContentBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                    .build(),
            )
            .build();
    };
    let mut r = ResponseBuilder::new()
        .description(desc)
        .content("application/json", json_content(name));
    if e.etag {
        r = r.header(
            "ETag",
            utoipa::openapi::HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String))
                .description(Some(
                    "A hash of the body: send it back as `If-None-Match` to get `304` while the answer is the same",
                ))
                .build(),
        );
    }
    for (operation, param, member) in e.links {
        r = r.link(
            *operation,
            utoipa::openapi::link::LinkBuilder::new()
                .operation_id(*operation)
                .parameter(*param, format!("$response.body#/{member}"))
                .build(),
        );
    }
    r.build()
}

fn success_description(e: &Endpoint, code: u16) -> &'static str {
    match code {
        _ if e.websocket => "Switching to the WebSocket protocol",
        200 if e.path == "/requests" => "An earlier submission with this `Idempotency-Key`",
        200 if e.path.ends_with("/cancel") => "Cancelled",
        201 => "Created",
        202 if e.path.ends_with("/cancel") => {
            "Cancellation under way: running actions stop and roll back"
        }
        202 => "Accepted",
        _ => "Success",
    }
}

fn error_description(code: u16) -> &'static str {
    match code {
        400 => "Malformed request: a query string, path segment or JSON body that does not parse",
        401 => "Not authenticated, or a bad webhook signature",
        403 => "Not allowed",
        404 => "Not found, or not visible to the caller",
        409 => "Conflicts with the current state, or a replayed delivery",
        413 => "Body larger than `limits.max_body_bytes`",
        415 => "A body that is not `application/json`",
        422 => "Invalid input, with located errors",
        429 => "Over the request rate; see `Retry-After`",
        503 => "The store, a secret or the catalog folder is unavailable",
        _ => "Error",
    }
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

/// An unsigned query integer (`usize`, `u64`) parses up to `u64::MAX`: larger ones are
/// refused (400), smaller ones are taken (page sizes are then clamped, as described).
fn full_range(mut p: Parameter) -> Parameter {
    use utoipa::openapi::schema::{KnownFormat, Schema, SchemaFormat, SchemaType};
    if let Some(utoipa::openapi::RefOr::T(Schema::Object(o))) = p.schema.as_mut() {
        let unsigned = match o.minimum {
            Some(utoipa::Number::UInt(n)) => n == 0,
            Some(utoipa::Number::Int(n)) => n == 0,
            Some(utoipa::Number::Float(n)) => n == 0.0,
            None => false,
        };
        let int64 = matches!(
            o.format,
            None | Some(SchemaFormat::KnownFormat(KnownFormat::Int64))
        );
        if o.schema_type == SchemaType::Type(Type::Integer)
            && unsigned
            && int64
            && o.maximum.is_none()
        {
            // `int64` would say at most 2^63 - 1.
            o.format = None;
            o.minimum = Some(utoipa::Number::UInt(0));
            o.maximum = Some(utoipa::Number::UInt(u64::MAX as usize));
        }
    }
    p
}

fn header(name: &str, required: bool, desc: &str, schema: ObjectBuilder) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(desc))
        .schema(Some(schema.schema_type(Type::String)))
        .build()
}

/// The handshake a WebSocket client sends (RFC 6455); without it the answer is 400.
fn websocket_headers() -> Vec<Parameter> {
    vec![
        header(
            "Connection",
            true,
            "Names `upgrade`",
            ObjectBuilder::new().pattern(Some("[Uu][Pp][Gg][Rr][Aa][Dd][Ee]")),
        ),
        header(
            "Upgrade",
            true,
            "`websocket`",
            ObjectBuilder::new().pattern(Some("^[Ww][Ee][Bb][Ss][Oo][Cc][Kk][Ee][Tt]$")),
        ),
        header(
            "Sec-WebSocket-Version",
            true,
            "`13`",
            ObjectBuilder::new().enum_values(Some(["13"])),
        ),
        header(
            "Sec-WebSocket-Key",
            true,
            "The client's nonce",
            ObjectBuilder::new(),
        ),
    ]
}

/// `If-None-Match` of conditional GETs.
fn conditional_headers() -> Vec<Parameter> {
    vec![header(
        "If-None-Match",
        false,
        "`ETag`s of answers the client has (or `*`): when one is the current answer's, the answer is `304` with no body.",
        ObjectBuilder::new(),
    )]
}

/// `Idempotency-Key` of `POST /requests`.
fn submit_headers() -> Vec<Parameter> {
    vec![
        header(
            "Idempotency-Key",
            false,
            "Repeating a submission with the same key (per caller) returns the first request (200) instead of creating another; 1 to 200 visible ASCII characters.",
            ObjectBuilder::new()
                .min_length(Some(1))
                .max_length(Some(200))
                .pattern(Some("^[!-~]([\\t -~]*[!-~])?$")),
        ),
        header(
            "X-Correlation-Id",
            false,
            "Ties PAO's events and logs to the caller's own trace (default: a new UUID); 1 to 128 visible ASCII characters, copied into every event of the request.",
            ObjectBuilder::new()
                .min_length(Some(1))
                .max_length(Some(128))
                .pattern(Some("^[!-~]+$")),
        ),
    ]
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
