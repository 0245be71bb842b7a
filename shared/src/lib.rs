//! The podbridge domain: what a job is, how its state may change, and the adapters
//! that record it and run it.
//!
//! The core (job messages, validation, the pod builder, state rules) does no IO: it is
//! plain values and decisions, tested without any service. Adapters sit behind one
//! small trait each: the job store ([`store::JobStore`], DynamoDB), the cluster
//! ([`cluster::Cluster`], the Kubernetes API). [`submit::Submitter`] is the one path
//! from a message to a recorded job with its pod. Only `functions/` knows about Lambda.

pub mod cluster;
pub mod config;
pub mod eks;
pub mod error;
pub mod events;
pub mod failure;
pub mod job;
pub mod journal;
pub mod metrics;
pub mod observe;
pub mod pod;
pub mod quantity;
pub mod reconcile;
pub mod record;
pub mod setup;
pub mod state;
pub mod store;
pub mod submit;
pub mod tenancy;
pub mod validate;

pub use error::{Error, Result};
pub use failure::FailureClass;
pub use record::{JobRecord, Source, StateChange, Transition};
pub use state::{JobState, UnknownState};
