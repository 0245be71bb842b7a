//! The HTTPS server: TLS, bearer-token authentication, fault injection, and the
//! routes of `api.rs` and `admin.rs`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, Response, header};
use axum::response::IntoResponse;
use base64::Engine;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::cluster::{Cluster, CreatedPod};
use crate::config::{NodeShape, SimConfig};
use crate::faults::{Decision, Faults, VerbStats};
use crate::status::ApiError;
use crate::{admin, api, tls};

/// A running simulated cluster. Dropping it stops the server.
#[derive(Debug)]
pub struct KubeSim {
    addr: SocketAddr,
    ca_pem: String,
    cluster: Arc<Cluster>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Paths any client may read without a token, as `system:public-info-viewer` allows.
fn is_public(path: &str) -> bool {
    matches!(path, "/version" | "/healthz" | "/livez" | "/readyz")
}

/// The Kubernetes verb of a resource request, or `None` for discovery and admin paths.
fn verb_of(method: &Method, path: &str, query: Option<&str>) -> Option<&'static str> {
    let rest = path.strip_prefix("/api/v1/")?;
    let segments = rest.split('/').filter(|s| !s.is_empty()).count();
    let watch = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    Some(match *method {
        Method::POST => "create",
        Method::DELETE => "delete",
        Method::PUT => "update",
        Method::PATCH => "patch",
        _ if path.ends_with("/log") => "log",
        _ if watch => "watch",
        // Collections have an odd number of segments (`pods`, `namespaces/x/pods`).
        _ if segments % 2 == 1 => "list",
        _ => "get",
    })
}

async fn handle(
    cluster: Arc<Cluster>,
    router: Router,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let path = request.uri().path().to_owned();
    if !is_public(&path) {
        let expected = format!("Bearer {}", cluster.token);
        let presented = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if presented != Some(expected.as_str()) {
            return Ok(ApiError::unauthorized().into_response());
        }
    }
    if let Some(verb) = verb_of(request.method(), &path, request.uri().query()) {
        let (delay, decision) = cluster.faults.decide(verb);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match decision {
            Decision::Serve => {}
            Decision::Fail(error) => return Ok(error.into_response()),
            // Returning an error makes hyper close the connection with no response.
            Decision::Drop => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "kube-sim: injected dropped connection",
                ));
            }
        }
    }
    let request = request.map(Body::new);
    Ok(router.oneshot(request).await.unwrap_or_else(|never| match never {}))
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor, cluster: Arc<Cluster>) {
    let router = Router::new().merge(api::routes()).merge(admin::routes()).with_state(cluster.clone());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let cluster = cluster.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await else {
                return;
            };
            let service = hyper::service::service_fn(move |request| handle(cluster.clone(), router.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
        });
    }
}

impl KubeSim {
    /// Starts a simulated cluster listening on `listen` (port 0 picks a free port).
    /// It accepts connections when this returns.
    pub async fn start(listen: SocketAddr, config: SimConfig) -> anyhow::Result<Self> {
        config.faults.check().map_err(anyhow::Error::msg)?;
        let pki = tls::generate()?;
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let cluster = Cluster::new(config);
        let acceptor = TlsAcceptor::from(pki.server_config);
        let tasks =
            vec![tokio::spawn(serve(listener, acceptor, cluster.clone())), tokio::spawn(cluster.clone().drive())];
        Ok(Self { addr, ca_pem: pki.ca_pem, cluster, tasks })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// PEM of the CA that signed the serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The bearer token clients must present.
    pub fn token(&self) -> &str {
        &self.cluster.token
    }

    /// A kubeconfig for this cluster, with context `kube-sim` and namespace `default`.
    pub fn kubeconfig(&self) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\ncontexts:\n- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: {user}\n    namespace: default\ncurrent-context: kube-sim\nusers:\n- name: {user}\n  user:\n    token: {token}\n",
            url = self.url(),
            user = self.cluster.user,
            token = self.cluster.token,
        )
    }

    /// Writes the kubeconfig to `path` atomically (a reader never sees half a file).
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        std::fs::write(&temporary, self.kubeconfig())?;
        std::fs::rename(&temporary, path)
    }

    /// Every pod ever created, in creation order.
    pub fn created_pods(&self) -> Vec<CreatedPod> {
        self.cluster.lock().created.clone()
    }

    /// Replaces the faults in force.
    pub fn set_faults(&self, faults: Faults) -> Result<(), String> {
        self.cluster.faults.set(faults)
    }

    /// Requests, injected errors and drops per verb.
    pub fn verb_stats(&self) -> std::collections::BTreeMap<String, VerbStats> {
        self.cluster.faults.stats()
    }

    /// Adds a Ready node; returns its name.
    pub fn add_node(&self, shape: NodeShape) -> String {
        self.cluster.mutate(|state| state.add_node(shape, false))
    }

    /// The names of the nodes, in order.
    pub fn node_names(&self) -> Vec<String> {
        self.cluster.lock().nodes.keys().cloned().collect()
    }

    /// The node stops responding; see the crate docs for what follows.
    pub fn lose_node(&self, name: &str) -> bool {
        self.cluster.mutate(|state| state.lose_node(name))
    }

    /// The node object is deleted; its pods are garbage collected.
    pub fn delete_node(&self, name: &str) -> bool {
        self.cluster.mutate(|state| state.delete_node(name))
    }

    /// The kubelet evicts the pod now; false when it is not on a node or has ended.
    pub fn evict_pod(&self, namespace: &str, name: &str) -> bool {
        self.cluster.mutate(|state| {
            let Ok(pod) = state.get_pod(namespace, name) else {
                return false;
            };
            state.evict(&(namespace.to_owned(), name.to_owned()), &crate::cluster::uid_of(&pod))
        })
    }

    /// Forgets the watch history, as an etcd compaction does: a watch from any earlier
    /// resourceVersion answers 410 Expired, and the watcher must list again.
    pub fn compact(&self) {
        self.cluster.mutate(|state| state.compact());
    }
}
