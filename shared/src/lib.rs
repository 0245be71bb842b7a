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
pub mod journal;
pub mod metrics;
pub mod setup;
pub mod store;
pub mod submit;

pub use error::{Error, Result};
