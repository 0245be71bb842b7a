//! The domain crate's tests, one binary: messages and validation, the guardrails and
//! caps, the JSON Schema, pod names and golden files, pod status observation, reconcile
//! decisions and the EKS token.

mod eks_token;
mod guardrails;
mod hostile;
mod messages;
mod observe;
mod pod_golden;
mod pod_names;
mod reconcile;
mod schema;
