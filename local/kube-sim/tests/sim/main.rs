//! kube-sim's tests, one binary: the API's wire shapes, the pod lifecycle and the
//! failure behaviours, the status subresource, fault injection, and real `kubectl`
//! against the simulated cluster.

mod api;
#[allow(dead_code)]
mod common;
mod failures;
mod faults;
mod kubectl;
mod lifecycle;
mod status;
