//! The core's tests, one binary: admission, messages and validation, the guardrails and caps, the
//! JSON Schema, pod names and golden files, pod status observation and reconcile
//! decisions. They need no service and no runtime.

mod admission;
mod guardrails;
mod messages;
mod observe;
mod pod_golden;
mod pod_names;
mod reconcile;
mod schema;
