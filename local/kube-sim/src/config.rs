//! Everything a simulated cluster can be started with.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::faults::Faults;

/// A simulated node's size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NodeShape {
    /// Allocatable CPU in millicores.
    pub cpu_millis: i64,
    /// Allocatable memory in bytes.
    pub memory_bytes: i64,
    /// How many pods fit regardless of resources (the kubelet's `maxPods`).
    pub max_pods: i64,
}

impl Default for NodeShape {
    fn default() -> Self {
        Self { cpu_millis: 4_000, memory_bytes: 16 << 30, max_pods: 110 }
    }
}

/// A cluster-autoscaler stand-in: adds a node when a pod cannot be scheduled but would
/// fit an empty node, and removes nodes it added once they have been idle.
#[derive(Debug, Clone, PartialEq)]
pub struct Autoscaler {
    pub scale_up_delay: Duration,
    pub scale_down_idle: Duration,
    pub max_nodes: usize,
    pub shape: NodeShape,
}

/// How long each stage of a pod's life takes (all adjustable so tests stay fast).
#[derive(Debug, Clone, PartialEq)]
pub struct Timings {
    /// From creation to the scheduler's decision.
    pub schedule: Duration,
    /// From binding to the kubelet starting the pod (`ContainerCreating`).
    pub start: Duration,
    /// Default image pull time (a pod's `pull=` term overrides it).
    pub pull: Duration,
    /// First image pull back-off; doubles up to ten times this.
    pub pull_backoff: Duration,
    /// Default run time of a container (`None`: until killed); `run=` overrides it.
    pub run: Option<Duration>,
    /// How long a container takes to exit after SIGTERM (unless it ignores it).
    pub termination: Duration,
    /// How long the pod garbage collector waits before deleting pods of a lost node.
    pub pod_gc: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            schedule: Duration::from_millis(10),
            start: Duration::from_millis(20),
            pull: Duration::from_millis(50),
            pull_backoff: Duration::from_millis(500),
            run: Some(Duration::from_secs(1)),
            termination: Duration::from_millis(100),
            pod_gc: Duration::from_secs(1),
        }
    }
}

/// The configuration of one simulated cluster.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Namespaces that exist at start (more can be created through the API).
    pub namespaces: Vec<String>,
    /// The bearer token clients must present; generated when `None`.
    pub token: Option<String>,
    /// The user name RBAC messages mention.
    pub user: String,
    /// When set, the token may only touch these namespaces (403 elsewhere, and for
    /// cluster-scoped reads), as a namespaced RBAC Role would allow.
    pub allowed_namespaces: Option<Vec<String>>,
    /// Nodes present at start.
    pub nodes: usize,
    pub node_shape: NodeShape,
    pub autoscaler: Option<Autoscaler>,
    pub timings: Timings,
    pub faults: Faults,
    /// How many changes watches can resume from; older resourceVersions get 410.
    pub watch_history: usize,
    /// How many events are kept (the oldest are dropped first).
    pub max_events: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            namespaces: vec!["default".into(), "kube-system".into(), "podbridge-jobs".into()],
            token: None,
            user: "podbridge".into(),
            allowed_namespaces: None,
            nodes: 3,
            node_shape: NodeShape::default(),
            autoscaler: None,
            timings: Timings::default(),
            faults: Faults::default(),
            watch_history: 10_000,
            max_events: 100_000,
        }
    }
}
