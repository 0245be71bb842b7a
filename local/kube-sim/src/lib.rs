//! `kube-sim`: a simulated Kubernetes API server for podbridge's tests and local stack.
//!
//! It serves over HTTPS, with a CA and serving certificate generated at start, the
//! part of the Kubernetes API that podbridge and `kubectl` use — discovery, pods
//! (create, get, list, watch, delete, log, and the `status` subresource: get, update,
//! and patch as JSON, merge or strategic merge patch), events, nodes and namespaces —
//! with the real apiserver's status codes, `Status` bodies and object shapes. Pods live
//! through a simulated lifecycle (scheduling on nodes with capacity, admission by the
//! kubelet, image pull, init containers and sidecars injected as a webhook would,
//! running, exit, OOM, start errors, volumes that do not mount, deadlines, evictions,
//! node loss, graceful deletion) that each pod chooses through its behaviour (see
//! [`behavior`]), and faults can be injected at start or at runtime (see [`faults`]
//! and the admin endpoint in `admin.rs`). A client that writes a pod's status takes
//! over from the simulated kubelet for that pod (see `lifecycle.rs`).
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let sim = kube_sim::KubeSim::start("127.0.0.1:0".parse()?, kube_sim::SimConfig::default()).await?;
//! std::fs::write("kubeconfig", sim.kubeconfig())?;
//! # Ok(()) }
//! ```
//!
//! What it does not do, on purpose: PATCH or PUT of a pod itself (only of its status),
//! server-side apply, other resource kinds, consistent snapshots for paginated lists (a
//! continuation reads the current state after the last key, instead of the state at
//! the first page's revision), protobuf, restarting containers (every pod behaves as
//! `restartPolicy: Never`), and admission beyond the apiserver's own defaulting and
//! validation and the injection the `init-fail` and `sidecar` behaviours ask for.

mod admin;
mod api;
pub mod behavior;
mod cluster;
pub mod config;
pub mod faults;
mod inject;
mod lifecycle;
mod patch;
mod selector;
mod server;
mod status;
mod table;
mod tls;
pub mod units;
mod validation;

pub use cluster::CreatedPod;
pub use config::{Autoscaler, NodeShape, SimConfig, Timings};
pub use faults::{ErrorFault, Faults, VerbStats};
pub use server::KubeSim;
