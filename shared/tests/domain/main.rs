//! The domain crate's tests, one binary: messages and validation, the JSON Schema, pod
//! golden files, pod status observation, reconcile decisions and the EKS token.

mod eks_token;
mod hostile;
mod messages;
mod observe;
mod pod_golden;
mod reconcile;
mod schema;
