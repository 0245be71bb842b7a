//! The podbridge domain: what a job is and how its state may change.
//!
//! This crate is the core of podbridge. The core does no IO: it is plain values and
//! decisions, tested without any service. Adapters (the DynamoDB job store, the
//! Kubernetes cluster, the EventBridge sink) sit behind one small trait each and
//! arrive with the features that need them; only `functions/` knows about Lambda.

pub mod state;

pub use state::{JobState, UnknownState};
