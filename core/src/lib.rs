//! The podbridge core: what a job is, what it may ask for, how its state may change,
//! and what to do about it. Plain values and decisions only.
//!
//! This crate does no IO, and cannot: it depends on no async runtime, no AWS SDK and
//! no Kubernetes client (k8s-openapi's types are values like any other). Every rule of
//! the product that can be a function of its inputs lives here, tested with plain
//! values: admission to queues with limits ([`admission`]), the message format ([`job`]), validation and guardrails ([`validate`]),
//! quantities, the pod builder ([`pod`]), states and records ([`state`], [`record`]),
//! reading a pod's status ([`observe`]), the reconcile decisions ([`reconcile`]),
//! failure classes and retry rules ([`failure`]) and who may act in which namespace
//! ([`tenancy`]). The `podbridge` crate carries these decisions out against DynamoDB,
//! EventBridge and the Kubernetes API.

pub mod admission;
pub mod failure;
pub mod job;
pub mod observe;
pub mod pod;
pub mod quantity;
pub mod reconcile;
pub mod record;
pub mod state;
pub mod tenancy;
pub mod validate;

pub use failure::FailureClass;
pub use record::{JobRecord, Source, StateChange, Transition};
pub use state::{JobState, UnknownState};
