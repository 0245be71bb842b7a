//! podbridge's adapters and services: what carries out the core's decisions
//! ([`podbridge_core`]) against DynamoDB, EventBridge and the Kubernetes API.
//!
//! - Ports, each one small trait with its adapters beside it: the job store
//!   ([`store::JobStore`]: DynamoDB, memory), the cluster ([`cluster::Cluster`]: kube,
//!   memory), job state change events ([`events::EventSink`]: EventBridge, memory), and
//!   EKS authentication ([`eks`]: a presigned STS token for the cluster's client).
//! - [`journal::Journal`]: the store wrapper that announces and counts every transition
//!   that was written, and only those; [`metrics`]: CloudWatch EMF lines.
//! - Services ([`services`]): [`services::Submitter`] serves what senders ask (submit,
//!   cancel, retry); [`services::Attempts`] starts attempts for it and for the
//!   reconciler.
//! - [`settings`]: every `PODBRIDGE_*` variable, read once; [`wiring`]: the one path from
//!   settings to ready clients, for the functions, the CLI and `podbridge dev`.
//!
//! Only `functions/` knows about Lambda.

pub mod cluster;
pub mod eks;
pub mod error;
pub mod events;
pub mod journal;
pub mod metrics;
pub mod services;
pub mod settings;
pub mod store;
pub mod wiring;

pub use error::{Error, Result};
