//! The admin endpoint, under `/kube-sim/` (the same bearer token as the API):
//!
//! | method and path | effect |
//! |---|---|
//! | `GET /kube-sim/faults`, `PUT /kube-sim/faults` | read or replace the faults in force (JSON, see [`Faults`]) |
//! | `GET /kube-sim/stats` | requests, injected errors and drops per verb; pods stored and ever created |
//! | `GET /kube-sim/created` | every pod ever created, in order (deleted ones too), with when it first ran (`runningAt`) and when it stopped holding capacity (`endedAt`), see [`CreatedPod`](crate::CreatedPod) |
//! | `POST /kube-sim/nodes` | add a node: `{"cpuMillis":4000,"memoryBytes":17179869184,"maxPods":110}` (all optional) |
//! | `POST /kube-sim/nodes/{name}/lose` | the node stops responding (NotReady, pods evicted, node removed) |
//! | `DELETE /kube-sim/nodes/{name}` | the node object is deleted (its pods are garbage collected) |
//! | `POST /kube-sim/namespaces/{ns}/pods/{name}/evict` | the kubelet evicts the pod (node pressure) |
//! | `POST /kube-sim/namespaces/{ns}/pods/{name}/finish?exitCode=N` | a running container exits now with N |
//! | `POST /kube-sim/compact` | forget the watch history: watches from an earlier resourceVersion get 410 Expired |

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::cluster::Cluster;
use crate::config::NodeShape;
use crate::faults::Faults;
use crate::status::ApiError;

type Shared = State<Arc<Cluster>>;

pub(crate) fn routes() -> Router<Arc<Cluster>> {
    Router::new()
        .route("/kube-sim/faults", get(get_faults).put(put_faults))
        .route("/kube-sim/stats", get(stats))
        .route("/kube-sim/created", get(created))
        .route("/kube-sim/nodes", post(add_node))
        .route("/kube-sim/compact", post(compact))
        .route("/kube-sim/nodes/{name}", axum::routing::delete(delete_node))
        .route("/kube-sim/nodes/{name}/lose", post(lose_node))
        .route("/kube-sim/namespaces/{namespace}/pods/{name}/evict", post(evict))
        .route("/kube-sim/namespaces/{namespace}/pods/{name}/finish", post(finish))
}

async fn get_faults(cluster: Shared) -> Json<Faults> {
    Json(cluster.faults.get())
}

async fn put_faults(cluster: Shared, Json(faults): Json<Faults>) -> Result<Json<Faults>, ApiError> {
    cluster.faults.set(faults).map_err(ApiError::bad_request)?;
    Ok(Json(cluster.faults.get()))
}

async fn stats(cluster: Shared) -> Json<serde_json::Value> {
    let (pods, created, nodes) = {
        let state = cluster.lock();
        (state.pods.len(), state.created.len(), state.nodes.len())
    };
    Json(json!({ "verbs": cluster.faults.stats(), "pods": pods, "podsCreated": created, "nodes": nodes }))
}

async fn created(cluster: Shared) -> Response {
    Json(cluster.lock().created.clone()).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewNode {
    cpu_millis: Option<i64>,
    memory_bytes: Option<i64>,
    max_pods: Option<i64>,
}

async fn add_node(cluster: Shared, body: Option<Json<NewNode>>) -> Response {
    let spec = body.map(|b| b.0).unwrap_or_default();
    let defaults = cluster.lock().config.node_shape;
    let shape = NodeShape {
        cpu_millis: spec.cpu_millis.unwrap_or(defaults.cpu_millis),
        memory_bytes: spec.memory_bytes.unwrap_or(defaults.memory_bytes),
        max_pods: spec.max_pods.unwrap_or(defaults.max_pods),
    };
    let name = cluster.mutate(|state| state.add_node(shape, false));
    (StatusCode::CREATED, Json(json!({ "name": name }))).into_response()
}

async fn delete_node(cluster: Shared, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    if cluster.mutate(|state| state.delete_node(&name)) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("nodes", &name))
    }
}

async fn compact(cluster: Shared) -> StatusCode {
    cluster.mutate(|state| state.compact());
    StatusCode::NO_CONTENT
}

async fn lose_node(cluster: Shared, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    if cluster.mutate(|state| state.lose_node(&name)) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("nodes", &name))
    }
}

async fn evict(cluster: Shared, Path((namespace, name)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    let done = cluster.mutate(|state| {
        let pod = state.get_pod(&namespace, &name)?;
        let uid = crate::cluster::uid_of(&pod);
        Ok::<_, ApiError>(state.evict(&(namespace.clone(), name.clone()), &uid))
    })?;
    if done {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::conflict("pods", &name, "the pod is not on a node or has already ended"))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FinishQuery {
    exit_code: Option<i32>,
}

async fn finish(
    cluster: Shared,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<FinishQuery>,
) -> Result<StatusCode, ApiError> {
    let finished = cluster.mutate(|state| {
        let pod = state.get_pod(&namespace, &name)?;
        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        if running {
            state.finish(
                &(namespace.clone(), name.clone()),
                &crate::cluster::uid_of(&pod),
                Some(query.exit_code.unwrap_or(0)),
            );
        }
        Ok::<_, ApiError>(running)
    })?;
    if finished { Ok(StatusCode::NO_CONTENT) } else { Err(ApiError::conflict("pods", &name, "the pod is not running")) }
}
