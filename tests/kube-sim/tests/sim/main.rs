//! kube-sim's tests, one binary: the API's wire shapes, the pod lifecycle, fault
//! injection, and real `kubectl` against the simulated cluster.

mod api;
#[allow(dead_code)]
mod common;
mod faults;
mod kubectl;
mod lifecycle;
