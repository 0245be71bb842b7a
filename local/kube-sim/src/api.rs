//! The Kubernetes API routes: discovery, pods (create, get, list, watch, delete, log,
//! and the `status` subresource: get, update, patch), events, nodes and namespaces,
//! with the apiserver's status codes and bodies.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::cluster::{Change, ChangeKind, Cluster, uid_of};
use crate::patch::{self, PatchError, PatchType};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult};
use crate::table::{self, Include};
use crate::validation::is_dns1123_label;

type Shared = State<Arc<Cluster>>;

pub(crate) fn routes() -> Router<Arc<Cluster>> {
    Router::new()
        .route("/version", get(version))
        .route("/healthz", get(ok))
        .route("/livez", get(ok))
        .route("/readyz", get(ok))
        .route("/api", get(api_versions))
        .route("/api/v1", get(api_resources))
        .route("/apis", get(api_groups))
        .route("/api/v1/pods", get(list_all_pods))
        .route("/api/v1/namespaces/{namespace}/pods", get(list_pods).post(create_pod))
        .route("/api/v1/namespaces/{namespace}/pods/{name}", get(get_pod).delete(delete_pod))
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/status",
            get(get_pod).put(replace_pod_status).patch(patch_pod_status),
        )
        .route("/api/v1/namespaces/{namespace}/pods/{name}/log", get(pod_log))
        .route("/api/v1/events", get(list_all_events))
        .route("/api/v1/namespaces/{namespace}/events", get(list_events))
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/nodes/{name}", get(get_node))
        .route("/api/v1/namespaces", get(list_namespaces).post(create_namespace))
        .route("/api/v1/namespaces/{namespace}", get(get_namespace))
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
}

// ---- discovery ------------------------------------------------------------------

async fn ok() -> &'static str {
    "ok"
}

async fn version() -> Json<Value> {
    Json(json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-kube-sim",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }))
}

async fn api_versions(headers: HeaderMap) -> Json<Value> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": host }],
    }))
}

async fn api_groups() -> Json<Value> {
    Json(json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": [] }))
}

async fn api_resources() -> Json<Value> {
    let resource = |name: &str, singular: &str, namespaced: bool, kind: &str, verbs: &[&str], short: &[&str]| {
        let mut value = json!({
            "name": name, "singularName": singular, "namespaced": namespaced, "kind": kind, "verbs": verbs,
        });
        if !short.is_empty() {
            value["shortNames"] = json!(short);
        }
        if name == "pods" {
            value["categories"] = json!(["all"]);
        }
        value
    };
    Json(json!({
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            resource("events", "event", true, "Event", &["get", "list"], &["ev"]),
            resource("namespaces", "namespace", false, "Namespace", &["create", "get", "list"], &["ns"]),
            resource("nodes", "node", false, "Node", &["get", "list"], &["no"]),
            resource("pods", "pod", true, "Pod", &["create", "delete", "get", "list", "watch"], &["po"]),
            resource("pods/log", "", true, "Pod", &["get"], &[]),
            resource("pods/status", "", true, "Pod", &["get", "patch", "update"], &[]),
        ],
    }))
}

// ---- shared request handling ----------------------------------------------------

/// The query parameters of list and watch requests.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListQuery {
    label_selector: Option<String>,
    field_selector: Option<String>,
    limit: Option<usize>,
    #[serde(rename = "continue")]
    continue_token: Option<String>,
    resource_version: Option<String>,
    watch: Option<String>,
    timeout_seconds: Option<u64>,
    include_object: Option<String>,
}

impl ListQuery {
    fn is_watch(&self) -> bool {
        matches!(self.watch.as_deref(), Some("true" | "1"))
    }

    fn resource_version(&self) -> ApiResult<Option<u64>> {
        match self.resource_version.as_deref() {
            None | Some("") => Ok(None),
            Some(rv) => {
                rv.parse().map(Some).map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))
            }
        }
    }
}

fn accept(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ACCEPT).and_then(|h| h.to_str().ok())
}

/// RBAC as a namespaced Role grants it: every verb inside the allowed namespaces,
/// nothing at cluster scope.
fn authorize(
    cluster: &Cluster,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> ApiResult<()> {
    let Some(allowed) = &cluster.allowed_namespaces else {
        return Ok(());
    };
    if namespace.is_some_and(|ns| allowed.iter().any(|a| a == ns)) {
        return Ok(());
    }
    Err(ApiError::forbidden(&cluster.user, verb, resource, name, namespace))
}

fn list_body(kind: &str, items: Vec<Value>, rv: u64, continue_token: Option<&str>, remaining: Option<i64>) -> Value {
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    if let Some(remaining) = remaining {
        metadata["remainingItemCount"] = json!(remaining);
    }
    json!({ "kind": format!("{kind}List"), "apiVersion": "v1", "metadata": metadata, "items": items })
}

fn with_kind(object: &impl serde::Serialize, kind: &str) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or_default();
    value["kind"] = json!(kind);
    value["apiVersion"] = json!("v1");
    value
}

// ---- pods ---------------------------------------------------------------------

const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];

fn pod_field(pod: &Pod, field: &str) -> String {
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let value = match field {
        "metadata.name" => pod.metadata.name.clone(),
        "metadata.namespace" => pod.metadata.namespace.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.restartPolicy" => spec.and_then(|s| s.restart_policy.clone()),
        "spec.schedulerName" => spec.and_then(|s| s.scheduler_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.phase" => status.and_then(|s| s.phase.clone()),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()),
        "status.nominatedNodeName" => status.and_then(|s| s.nominated_node_name.clone()),
        _ => None,
    };
    value.unwrap_or_default()
}

/// Whether a list or watch of pods has selectors (an unfiltered list reports
/// `remainingItemCount`, a filtered one cannot know it).
fn has_selectors(query: &ListQuery) -> bool {
    [&query.label_selector, &query.field_selector].iter().any(|s| s.as_deref().is_some_and(|s| !s.is_empty()))
}

/// The predicate a list or watch of pods applies.
fn pod_filter(query: &ListQuery, namespace: Option<&str>) -> ApiResult<impl Fn(&Pod) -> bool + Send + Sync + 'static> {
    let labels = LabelSelector::parse(query.label_selector.as_deref().unwrap_or_default())?;
    let fields = FieldSelector::parse(query.field_selector.as_deref().unwrap_or_default(), POD_FIELDS)?;
    let namespace = namespace.map(str::to_owned);
    Ok(move |pod: &Pod| {
        namespace.as_ref().is_none_or(|ns| pod.metadata.namespace.as_ref() == Some(ns))
            && labels.matches(pod.metadata.labels.as_ref())
            && fields.matches(|f| pod_field(pod, f))
    })
}

async fn list_all_pods(
    cluster: Shared,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    authorize(&cluster, if query.is_watch() { "watch" } else { "list" }, "pods", None, None)?;
    pods_list_or_watch(cluster.0, headers, query, None).await
}

async fn list_pods(
    cluster: Shared,
    Path(namespace): Path<String>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    authorize(&cluster, if query.is_watch() { "watch" } else { "list" }, "pods", Some(&namespace), None)?;
    pods_list_or_watch(cluster.0, headers, query, Some(namespace)).await
}

async fn pods_list_or_watch(
    cluster: Arc<Cluster>,
    headers: HeaderMap,
    query: ListQuery,
    namespace: Option<String>,
) -> Result<Response, ApiError> {
    let filter = pod_filter(&query, namespace.as_deref())?;
    let include = Include::parse(query.include_object.as_deref());
    let as_table = table::wants_table(accept(&headers));
    if query.is_watch() {
        return watch_pods(cluster, query, namespace, filter, as_table, include);
    }
    let selective = has_selectors(&query).then_some(&filter);
    let page =
        cluster.lock().list_pods(namespace.as_deref(), selective, query.limit, query.continue_token.as_deref())?;
    let body = if as_table {
        let rows = page.items.iter().map(|p| table::pod_row(p, include)).collect();
        table::table(table::pod_columns(), rows, page.resource_version, page.continue_token.as_deref(), page.remaining)
    } else {
        let items = page.items.iter().map(|p| serde_json::to_value(p.as_ref()).unwrap_or_default()).collect();
        list_body("Pod", items, page.resource_version, page.continue_token.as_deref(), page.remaining)
    };
    Ok(Json(body).into_response())
}

/// The watch event a filtered watcher sees for `change`, if any: a pod that starts
/// matching is ADDED, one that stops matching is DELETED.
fn filtered_event(change: &Change, filter: &impl Fn(&Pod) -> bool) -> Option<(ChangeKind, Arc<Pod>)> {
    let now = filter(&change.pod);
    let before = change.old.as_ref().is_some_and(|old| filter(old));
    match change.kind {
        ChangeKind::Added if now => Some((ChangeKind::Added, change.pod.clone())),
        ChangeKind::Modified if now && before => Some((ChangeKind::Modified, change.pod.clone())),
        ChangeKind::Modified if now => Some((ChangeKind::Added, change.pod.clone())),
        ChangeKind::Modified if before => Some((ChangeKind::Deleted, change.pod.clone())),
        ChangeKind::Deleted if before || now => Some((ChangeKind::Deleted, change.pod.clone())),
        _ => None,
    }
}

fn watch_line(kind: &str, object: Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn watch_pods(
    cluster: Arc<Cluster>,
    query: ListQuery,
    namespace: Option<String>,
    filter: impl Fn(&Pod) -> bool + Send + Sync + 'static,
    as_table: bool,
    include: Include,
) -> Result<Response, ApiError> {
    let from = query.resource_version()?;
    let start = cluster.lock().watch(from, namespace.as_deref());
    let render = move |kind: ChangeKind, pod: &Pod| {
        let object = if as_table {
            table::table(table::pod_columns(), vec![table::pod_row(pod, include)], 0, None, None)
        } else {
            serde_json::to_value(pod).unwrap_or_default()
        };
        watch_line(kind.as_str(), object)
    };
    let (sender, receiver) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    let timeout = Duration::from_secs(query.timeout_seconds.unwrap_or(1800).max(1));
    match start {
        // A resourceVersion too old for the history: the apiserver answers 200 and a
        // single ERROR event carrying a 410 Expired Status.
        Err(error) => {
            let line = watch_line("ERROR", error.status());
            tokio::spawn(async move {
                let _ = sender.send(Ok(line)).await;
            });
        }
        Ok(mut start) => {
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + timeout;
                for pod in start.initial.iter().filter(|p| filter(p)) {
                    if sender.send(Ok(render(ChangeKind::Added, pod))).await.is_err() {
                        return;
                    }
                }
                for change in &start.replay {
                    if let Some((kind, pod)) = filtered_event(change, &filter)
                        && sender.send(Ok(render(kind, &pod))).await.is_err()
                    {
                        return;
                    }
                }
                let last_replayed = start.replay.last().map_or(0, |c| c.rv);
                loop {
                    let change = tokio::select! {
                        change = start.live.recv() => change,
                        () = tokio::time::sleep_until(deadline) => return,
                        () = sender.closed() => return,
                    };
                    match change {
                        Ok(change) if change.rv <= last_replayed => continue,
                        Ok(change) => {
                            if let Some((kind, pod)) = filtered_event(&change, &filter)
                                && sender.send(Ok(render(kind, &pod))).await.is_err()
                            {
                                return;
                            }
                        }
                        // A watcher too slow to keep up is closed, as the apiserver
                        // closes it; the client resumes from its last resourceVersion.
                        Err(RecvError::Lagged(_) | RecvError::Closed) => return,
                    }
                }
            });
        }
    }
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateQuery {
    dry_run: Option<String>,
}

async fn create_pod(
    cluster: Shared,
    Path(namespace): Path<String>,
    Query(query): Query<CreateQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let raw: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Pod in version \"v1\" cannot be handled as a Pod: {e}")))?;
    let name = raw["metadata"]["name"].as_str().map(str::to_owned);
    authorize(&cluster, "create", "pods", Some(&namespace), name.as_deref())?;
    if let Some(kind) = raw.get("kind").and_then(Value::as_str)
        && kind != "Pod"
    {
        return Err(ApiError::bad_request(format!(
            "the kind of the provided object ({kind}) does not match the resource (Pod)"
        )));
    }
    let pod: Pod = serde_json::from_value(raw)
        .map_err(|e| ApiError::bad_request(format!("Pod in version \"v1\" cannot be handled as a Pod: {e}")))?;
    let dry_run = query.dry_run.as_deref() == Some("All");
    let created = cluster.mutate(|state| state.create_pod(&namespace, pod, dry_run))?;
    Ok((StatusCode::CREATED, Json(with_kind(created.as_ref(), "Pod"))).into_response())
}

async fn get_pod(cluster: Shared, Path((namespace, name)): Path<(String, String)>) -> Result<Response, ApiError> {
    authorize(&cluster, "get", "pods", Some(&namespace), Some(&name))?;
    let state = cluster.lock();
    state.require_namespace(&namespace).map_err(|_| ApiError::not_found("pods", &name))?;
    let pod = state.get_pod(&namespace, &name)?;
    Ok(Json(with_kind(pod.as_ref(), "Pod")).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteQuery {
    grace_period_seconds: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Preconditions {
    uid: Option<String>,
    resource_version: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteOptions {
    grace_period_seconds: Option<i64>,
    preconditions: Option<Preconditions>,
}

async fn delete_pod(
    cluster: Shared,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<DeleteQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&cluster, "delete", "pods", Some(&namespace), Some(&name))?;
    let options: DeleteOptions = if body.iter().all(u8::is_ascii_whitespace) {
        DeleteOptions::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let grace = query.grace_period_seconds.or(options.grace_period_seconds);
    let deleted = cluster.mutate(|state| {
        let pod = state.get_pod(&namespace, &name)?;
        let uid = uid_of(&pod);
        if let Some(pre) = &options.preconditions {
            if let Some(expected) = pre.uid.as_deref().filter(|u| *u != uid) {
                return Err(ApiError::conflict("pods", &name, &format!(
                    "Precondition failed: UID in precondition: {expected}, UID in object meta: {uid}"
                )));
            }
            let rv = pod.metadata.resource_version.clone().unwrap_or_default();
            if let Some(expected) = pre.resource_version.as_deref().filter(|r| *r != rv) {
                return Err(ApiError::conflict("pods", &name, &format!(
                    "Precondition failed: ResourceVersion in precondition: {expected}, ResourceVersion in object meta: {rv}"
                )));
            }
        }
        let key = (namespace.clone(), name.clone());
        state.begin_delete(&key, &uid, grace).ok_or_else(|| ApiError::not_found("pods", &name))
    })?;
    // The pod registry returns the deleted (or terminating) object, not a Status.
    Ok(Json(with_kind(deleted.as_ref(), "Pod")).into_response())
}

/// `PUT .../pods/{name}/status`: the body is a whole Pod, of which only `.status` is
/// taken (with its `metadata.resourceVersion` as a precondition when present).
async fn replace_pod_status(
    cluster: Shared,
    Path((namespace, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&cluster, "update", "pods/status", Some(&namespace), Some(&name))?;
    let cannot =
        |e: serde_json::Error| ApiError::bad_request(format!("Pod in version \"v1\" cannot be handled as a Pod: {e}"));
    let raw: Value = serde_json::from_slice(&body).map_err(cannot)?;
    if let Some(kind) = raw.get("kind").and_then(Value::as_str)
        && kind != "Pod"
    {
        return Err(ApiError::bad_request(format!(
            "the kind of the provided object ({kind}) does not match the resource (Pod)"
        )));
    }
    let pod: Pod = serde_json::from_value(raw).map_err(cannot)?;
    let body_name = pod.metadata.name.clone().unwrap_or_default();
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    if let Some(body_namespace) = pod.metadata.namespace.as_deref().filter(|ns| *ns != namespace) {
        return Err(ApiError::bad_request(format!(
            "the namespace of the object ({body_namespace}) does not match the namespace on the URL ({namespace})"
        )));
    }
    let meta = &pod.metadata;
    let status = pod.status.clone().unwrap_or_default();
    let updated = cluster.mutate(|state| {
        state.write_status(&namespace, &name, meta.resource_version.as_deref(), meta.uid.as_deref(), status)
    })?;
    Ok(Json(with_kind(updated.as_ref(), "Pod")).into_response())
}

/// `PATCH .../pods/{name}/status` in the three patch types the apiserver takes for
/// built-in kinds. The patch applies to the whole Pod, as the apiserver applies it;
/// only the resulting `.status` is kept.
async fn patch_pod_status(
    cluster: Shared,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&cluster, "patch", "pods/status", Some(&namespace), Some(&name))?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|h| h.to_str().ok()).unwrap_or_default();
    // Server-side apply (application/apply-patch+yaml) is not simulated.
    let kind = PatchType::from_content_type(content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(&PatchType::ACCEPTED))?;
    let updated = cluster.mutate(|state| {
        state.require_namespace(&namespace).map_err(|_| ApiError::not_found("pods", &name))?;
        let current = state.get_pod(&namespace, &name)?;
        let mut document = with_kind(current.as_ref(), "Pod");
        patch::apply(kind, &mut document, &body).map_err(|error| match error {
            PatchError::Malformed(why) => ApiError::bad_request(why),
            PatchError::NotApplicable(_) => ApiError::patch_not_applicable(),
        })?;
        let patched: Pod = serde_json::from_value(document)
            .map_err(|e| ApiError::bad_request(format!("Pod in version \"v1\" cannot be handled as a Pod: {e}")))?;
        let meta = &patched.metadata;
        let status = patched.status.clone().unwrap_or_default();
        state.write_status(&namespace, &name, meta.resource_version.as_deref(), meta.uid.as_deref(), status)
    })?;
    Ok(Json(with_kind(updated.as_ref(), "Pod")).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    container: Option<String>,
    tail_lines: Option<i64>,
    limit_bytes: Option<usize>,
    timestamps: Option<bool>,
    previous: Option<bool>,
}

async fn pod_log(
    cluster: Shared,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Result<Response, ApiError> {
    authorize(&cluster, "get", "pods/log", Some(&namespace), Some(&name))?;
    let state = cluster.lock();
    let entry = state.pods.get(&(namespace.clone(), name.clone())).ok_or_else(|| ApiError::not_found("pods", &name))?;
    let spec = entry.pod.spec.clone().unwrap_or_default();
    let init = spec.init_containers.unwrap_or_default();
    let names = |list: &[k8s_openapi::api::core::v1::Container]| {
        list.iter().map(|c| c.name.clone()).collect::<Vec<_>>().join(" ")
    };
    let container = match (&query.container, spec.containers.as_slice()) {
        (Some(wanted), all) => all
            .iter()
            .chain(init.iter())
            .find(|c| &c.name == wanted)
            .ok_or_else(|| ApiError::bad_request(format!("container {wanted} is not valid for pod {name}")))?,
        (None, [only]) => only,
        (None, all) => {
            // pkg/registry/core/pod/strategy.go LogLocation.
            let mut message =
                format!("a container name must be specified for pod {name}, choose one of: [{}]", names(all));
            if !init.is_empty() {
                message.push_str(&format!(" or one of the init containers: [{}]", names(&init)));
            }
            return Err(ApiError::bad_request(message));
        }
    };
    if query.previous == Some(true) {
        return Err(ApiError::bad_request(format!(
            "previous terminated container {:?} in pod {name:?} not found",
            container.name
        )));
    }
    let status = entry.pod.status.as_ref();
    let waiting = status
        .into_iter()
        .flat_map(|s| s.container_statuses.iter().flatten().chain(s.init_container_statuses.iter().flatten()))
        .find(|c| c.name == container.name)
        .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone());
    let lines = entry.sim.logs.get(&container.name).map_or(&[][..], Vec::as_slice);
    if lines.is_empty() {
        let reason = waiting.unwrap_or_else(|| "ContainerCreating".to_owned());
        let why = match reason.as_str() {
            "ImagePullBackOff" | "ErrImagePull" => "trying and failing to pull image".to_owned(),
            other => other.to_owned(),
        };
        return Err(ApiError::bad_request(format!(
            "container {:?} in pod {name:?} is waiting to start: {why}",
            container.name
        )));
    }
    let skip = match query.tail_lines {
        Some(n) if n >= 0 => lines.len().saturating_sub(n as usize),
        _ => 0,
    };
    let mut text = String::new();
    for (at, line) in &lines[skip..] {
        if query.timestamps == Some(true) {
            text.push_str(&format!("{} ", at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")));
        }
        text.push_str(line);
        text.push('\n');
    }
    if let Some(limit) = query.limit_bytes {
        let mut cut = limit.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    Ok(([(header::CONTENT_TYPE, "text/plain")], text).into_response())
}

// ---- events ---------------------------------------------------------------------

const EVENT_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

fn event_field(event: &Event, field: &str) -> String {
    let object = &event.involved_object;
    let value = match field {
        "metadata.name" => event.metadata.name.clone(),
        "metadata.namespace" => event.metadata.namespace.clone(),
        "involvedObject.kind" => object.kind.clone(),
        "involvedObject.namespace" => object.namespace.clone(),
        "involvedObject.name" => object.name.clone(),
        "involvedObject.uid" => object.uid.clone(),
        "involvedObject.apiVersion" => object.api_version.clone(),
        "involvedObject.resourceVersion" => object.resource_version.clone(),
        "involvedObject.fieldPath" => object.field_path.clone(),
        "reason" => event.reason.clone(),
        "reportingComponent" => event.reporting_component.clone(),
        "source" => event.source.as_ref().and_then(|s| s.component.clone()),
        "type" => event.type_.clone(),
        _ => None,
    };
    value.unwrap_or_default()
}

async fn list_all_events(
    cluster: Shared,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    authorize(&cluster, "list", "events", None, None)?;
    events_list(&cluster, &headers, &query, None)
}

async fn list_events(
    cluster: Shared,
    Path(namespace): Path<String>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    authorize(&cluster, "list", "events", Some(&namespace), None)?;
    events_list(&cluster, &headers, &query, Some(&namespace))
}

fn events_list(
    cluster: &Cluster,
    headers: &HeaderMap,
    query: &ListQuery,
    namespace: Option<&str>,
) -> Result<Response, ApiError> {
    if query.is_watch() {
        return Err(ApiError::method_not_allowed());
    }
    let labels = LabelSelector::parse(query.label_selector.as_deref().unwrap_or_default())?;
    let fields = FieldSelector::parse(query.field_selector.as_deref().unwrap_or_default(), EVENT_FIELDS)?;
    let filter = |e: &Event| labels.matches(e.metadata.labels.as_ref()) && fields.matches(|f| event_field(e, f));
    let page = cluster.lock().list_events(namespace, filter, query.limit, query.continue_token.as_deref())?;
    let body = if table::wants_table(accept(headers)) {
        let include = Include::parse(query.include_object.as_deref());
        let rows = page
            .items
            .iter()
            .map(|e| {
                let status =
                    format!("{} {}", e.type_.clone().unwrap_or_default(), e.reason.clone().unwrap_or_default());
                table::basic_row("Event", &e.metadata, &status, e.as_ref(), include)
            })
            .collect();
        table::table(
            table::basic_columns("Type Reason"),
            rows,
            page.resource_version,
            page.continue_token.as_deref(),
            page.remaining,
        )
    } else {
        let items = page.items.iter().map(|e| serde_json::to_value(e.as_ref()).unwrap_or_default()).collect();
        list_body("Event", items, page.resource_version, page.continue_token.as_deref(), page.remaining)
    };
    Ok(Json(body).into_response())
}

// ---- nodes and namespaces -----------------------------------------------------------

async fn list_nodes(cluster: Shared, headers: HeaderMap, Query(query): Query<ListQuery>) -> Result<Response, ApiError> {
    authorize(&cluster, "list", "nodes", None, None)?;
    let labels = LabelSelector::parse(query.label_selector.as_deref().unwrap_or_default())?;
    let (nodes, rv) = {
        let state = cluster.lock();
        (state.node_objects(), state.rv)
    };
    let nodes: Vec<_> = nodes.into_iter().filter(|n| labels.matches(n.metadata.labels.as_ref())).collect();
    let body = if table::wants_table(accept(&headers)) {
        let include = Include::parse(query.include_object.as_deref());
        let rows = nodes
            .iter()
            .map(|n| {
                let ready = n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                    .is_some_and(|c| c.status == "True");
                table::basic_row("Node", &n.metadata, if ready { "Ready" } else { "NotReady" }, n.as_ref(), include)
            })
            .collect();
        table::table(table::basic_columns("Status"), rows, rv, None, None)
    } else {
        list_body("Node", nodes.iter().map(|n| with_kind(n.as_ref(), "Node")).collect(), rv, None, None)
    };
    Ok(Json(body).into_response())
}

async fn get_node(cluster: Shared, Path(name): Path<String>) -> Result<Response, ApiError> {
    authorize(&cluster, "get", "nodes", None, Some(&name))?;
    let node =
        cluster.lock().nodes.get(&name).map(|n| n.object.clone()).ok_or_else(|| ApiError::not_found("nodes", &name))?;
    Ok(Json(with_kind(node.as_ref(), "Node")).into_response())
}

async fn list_namespaces(
    cluster: Shared,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    authorize(&cluster, "list", "namespaces", None, None)?;
    let labels = LabelSelector::parse(query.label_selector.as_deref().unwrap_or_default())?;
    let (namespaces, rv): (Vec<Arc<Namespace>>, u64) = {
        let state = cluster.lock();
        (state.namespaces.values().cloned().collect(), state.rv)
    };
    let namespaces: Vec<_> = namespaces.into_iter().filter(|n| labels.matches(n.metadata.labels.as_ref())).collect();
    let body = if table::wants_table(accept(&headers)) {
        let include = Include::parse(query.include_object.as_deref());
        let rows = namespaces
            .iter()
            .map(|n| table::basic_row("Namespace", &n.metadata, "Active", n.as_ref(), include))
            .collect();
        table::table(table::basic_columns("Status"), rows, rv, None, None)
    } else {
        list_body("Namespace", namespaces.iter().map(|n| with_kind(n.as_ref(), "Namespace")).collect(), rv, None, None)
    };
    Ok(Json(body).into_response())
}

async fn get_namespace(cluster: Shared, Path(name): Path<String>) -> Result<Response, ApiError> {
    authorize(&cluster, "get", "namespaces", None, Some(&name))?;
    let namespace =
        cluster.lock().namespaces.get(&name).cloned().ok_or_else(|| ApiError::not_found("namespaces", &name))?;
    Ok(Json(with_kind(namespace.as_ref(), "Namespace")).into_response())
}

async fn create_namespace(cluster: Shared, Json(body): Json<Value>) -> Result<Response, ApiError> {
    let name = body["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    authorize(&cluster, "create", "namespaces", None, Some(&name))?;
    if !is_dns1123_label(&name) {
        let cause = crate::status::Cause::invalid(
            "metadata.name",
            &json!(name),
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        );
        return Err(ApiError::invalid("Namespace", "namespaces", &name, vec![cause]));
    }
    let created = cluster.mutate(|state| {
        if state.namespaces.contains_key(&name) {
            return Err(ApiError::already_exists("namespaces", &name));
        }
        let labels: BTreeMap<String, String> =
            serde_json::from_value(body["metadata"]["labels"].clone()).unwrap_or_default();
        let namespace = state.add_namespace(&name);
        if !labels.is_empty() {
            let mut updated = (*namespace).clone();
            updated.metadata.labels.get_or_insert_with(BTreeMap::new).extend(labels);
            let updated = Arc::new(updated);
            state.namespaces.insert(name.clone(), updated.clone());
            return Ok(updated);
        }
        Ok(namespace)
    })?;
    Ok((StatusCode::CREATED, Json(with_kind(created.as_ref(), "Namespace"))).into_response())
}
