//! The end-to-end tests, one binary: each module drives podbridge against the local stack
//! (moto for AWS, kube-sim for Kubernetes) and asserts what a user would observe.
//! Run them through `tests/stack.sh run -- cargo test -p podbridge-tests`.

mod attacks;
mod chaos;
mod dispatch;
mod eks_auth;
mod events;
mod failures;
mod job_store;
mod lambda_runtime;
mod queues;
mod reconcile;
mod stack;
mod trigger;
