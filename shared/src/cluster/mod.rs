//! The cluster port: where pods are created, read, watched and deleted. One trait;
//! [`KubeCluster`] is the real adapter, on `kube::Api<Pod>`, and [`MemoryCluster`] an
//! in-memory one for fast tests of the services' race paths.

use std::future::Future;
use std::time::Duration;

use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::{Event, Pod};

use crate::error::Result;

mod kube;
mod memory;

pub use self::kube::KubeCluster;
pub use memory::MemoryCluster;

/// What a pod create found.
#[derive(Debug, Clone, PartialEq)]
pub enum PodCreated {
    /// The pod was created.
    New(Box<Pod>),
    /// A pod of that name already existed; here it is (the caller decides whether it
    /// is the same job attempt).
    Exists(Box<Pod>),
}

/// The managed pods of a namespace, as one consistent list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodList {
    pub pods: Vec<Pod>,
    /// Requests the list took (one per page).
    pub requests: u32,
    /// The list's resourceVersion: a watch from it sees every change after the list.
    pub resource_version: String,
}

/// One change seen by a watch on managed pods.
#[derive(Debug, Clone, PartialEq)]
pub enum PodEvent {
    /// The pod was added or changed; here it is now.
    Changed(Box<Pod>),
    /// The pod was deleted; here it was last.
    Deleted(Box<Pod>),
    /// Nothing changed up to this resourceVersion.
    Bookmark(String),
    /// The resourceVersion the watch started from is no longer in the API server's
    /// history (410 Expired): the watcher must list again.
    Expired,
}

/// A stream of pod changes, ended by the server at the watch's timeout.
pub type PodEvents = BoxStream<'static, Result<PodEvent>>;

pub use podbridge_core::admission::NodeSize;

/// The Kubernetes API, as podbridge uses it.
pub trait Cluster: Send + Sync {
    /// Creates `pod` in its namespace.
    fn create_pod(&self, pod: &Pod) -> impl Future<Output = Result<PodCreated>> + Send;

    /// Reads a pod, `None` when it does not exist.
    fn get_pod(&self, namespace: &str, name: &str) -> impl Future<Output = Result<Option<Pod>>> + Send;

    /// Deletes a pod (only the one with `uid`, when given); false when it was not there.
    fn delete_pod(&self, namespace: &str, name: &str, uid: Option<&str>) -> impl Future<Output = Result<bool>> + Send;

    /// Every pod podbridge manages in `namespace`, read in pages of `page_size`.
    fn list_managed_pods(&self, namespace: &str, page_size: u32) -> impl Future<Output = Result<PodList>> + Send;

    /// The events about the pod `name` (the kubelet's reports, such as `FailedMount`),
    /// newest last as the API lists them.
    fn pod_events(&self, namespace: &str, name: &str) -> impl Future<Output = Result<Vec<Event>>> + Send;

    /// The most CPU and the most memory any one node can give pods (its allocatable),
    /// of the nodes the API lists; `None` when it lists none.
    fn largest_node(&self) -> impl Future<Output = Result<Option<NodeSize>>> + Send;

    /// Watches the pods podbridge manages in `namespace` for changes after
    /// `resource_version`, for at most `timeout`.
    fn watch_managed_pods(
        &self,
        namespace: &str,
        resource_version: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<PodEvents>> + Send;
}
