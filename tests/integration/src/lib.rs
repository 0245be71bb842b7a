//! Support for podbridge's integration tests: the local stack's clients, the [`World`]
//! a test runs against (table, cluster, services, queues and bus), unique names, and
//! bounded polling.
//!
//! The tests run against real local services started by `tests/stack.sh`: moto server
//! for the AWS APIs and kube-sim (or any cluster named by a kubeconfig) for Kubernetes.
//! Run them with `make test`, or `tests/stack.sh run -- cargo test -p podbridge-tests`.
//! Without the stack's environment every test panics with that advice: a missing service
//! is a failure, never a silently skipped test.

pub mod events;
pub mod latency_proxy;
pub mod runtime_api;
pub mod sqs;
pub mod world;

pub use world::{Journaled, World, WorldBuilder};

use std::env;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use podbridge::eks::{ClientOptions, ClusterAccess};

/// The region every AWS client of the tests uses; moto serves any region.
pub const REGION: &str = "us-east-1";

/// What to tell someone who ran the tests without the stack.
const HOW_TO_RUN: &str = "the integration tests need the local stack: run them with `make test` \
     or `tests/stack.sh run -- cargo test -p podbridge-tests` (or start it with `make stack` \
     and paste its `export` lines into this shell)";

/// The local stack as the tests see it: AWS configuration pointing at moto server and a
/// Kubernetes client for the cluster named by `KUBECONFIG`.
#[derive(Clone)]
pub struct Stack {
    /// AWS configuration for the stack's endpoint, with static dummy credentials.
    pub aws: SdkConfig,
    /// A Kubernetes client built from the stack's kubeconfig.
    pub kube: kube::Client,
    /// The AWS endpoint URL every client uses (`AWS_ENDPOINT_URL`).
    pub aws_endpoint: String,
    /// The kubeconfig the Kubernetes client was built from (`KUBECONFIG`).
    pub kubeconfig: PathBuf,
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // kube::Client has no Debug; the endpoints are what identifies the stack.
        f.debug_struct("Stack")
            .field("aws_endpoint", &self.aws_endpoint)
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl Stack {
    /// Connects to the stack described by the environment that `tests/stack.sh` sets.
    ///
    /// # Panics
    ///
    /// When `PODBRIDGE_STACK`, `AWS_ENDPOINT_URL` or `KUBECONFIG` is missing, or the
    /// kubeconfig cannot be read, with a message saying how to run the tests. The
    /// `PODBRIDGE_STACK=1` check keeps the tests from creating tables and queues in
    /// whatever AWS account a developer's shell happens to point at.
    pub async fn from_env() -> Stack {
        if env::var("PODBRIDGE_STACK").as_deref() != Ok("1") {
            panic!("PODBRIDGE_STACK=1 is not set: {HOW_TO_RUN}");
        }
        let aws_endpoint = require_env("AWS_ENDPOINT_URL");
        let kubeconfig = PathBuf::from(require_env("KUBECONFIG"));

        let aws = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&aws_endpoint)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "podbridge-tests"))
            .load()
            .await;

        // Built as the functions build theirs: kube's retries off, so tests see every answer.
        let access = ClusterAccess::Kubeconfig { path: Some(kubeconfig.clone()) };
        let kube = podbridge::eks::client(&access, &aws, &ClientOptions::default()).await.unwrap_or_else(|err| {
            panic!("no Kubernetes client for KUBECONFIG={}: {err}; {HOW_TO_RUN}", kubeconfig.display())
        });
        Stack { aws, kube, aws_endpoint, kubeconfig }
    }

    /// A DynamoDB client for the stack.
    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.aws)
    }

    /// An SQS client for the stack.
    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.aws)
    }
}

fn require_env(name: &str) -> String {
    match env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!("{name} is not set: {HOW_TO_RUN}"),
    }
}

/// The names of every pod ever created for `job_id`, in order, from kube-sim's
/// creation log (deleted pods included): what "one pod per attempt" is checked on.
pub fn pods_created_for(sim: &kube_sim::KubeSim, job_id: &str) -> Vec<String> {
    sim.created_pods()
        .into_iter()
        .filter(|p| p.labels.get(podbridge_core::pod::JOB_ID_LABEL).map(String::as_str) == Some(job_id))
        .map(|p| p.name)
        .collect()
}

/// The most pods that held capacity at one moment, among those of kube-sim's creation
/// log that `include` selects: a pod holds it from its creation until its phase ended or
/// it left the store (still holding, if neither happened yet). What "a limit was never
/// exceeded" is checked on: the cluster's own record, not podbridge's counters.
pub fn most_at_once(sim: &kube_sim::KubeSim, include: impl Fn(&kube_sim::CreatedPod) -> bool) -> usize {
    let at = |text: &str| text.parse::<jiff::Timestamp>().expect("kube-sim writes RFC 3339 times");
    // +1 at each creation, -1 at each end; ends sort before creations at the same
    // instant (a slot given back is free for the next pod).
    let mut changes: Vec<(jiff::Timestamp, i32)> = Vec::new();
    for pod in sim.created_pods().iter().filter(|p| include(p)) {
        changes.push((at(&pod.created_at), 1));
        if let Some(ended) = &pod.ended_at {
            changes.push((at(ended), -1));
        }
    }
    changes.sort();
    let (mut now, mut most) = (0_i32, 0_i32);
    for (_, change) in changes {
        now += change;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

/// User plus system CPU time of this process, from /proc (clock ticks of 10 ms): what
/// the benchmarks divide by the jobs handled.
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// A name no other test of this run, nor of an earlier run, has used: `prefix`, then a
/// time-and-process stamp and a per-process counter, e.g. `jobs-m3k9x2a1-4f2-3`.
///
/// The result is lowercase letters, digits and `-` only, so it is valid as a DynamoDB
/// table name, an SQS queue name, a Kubernetes object name and a label value, as long as
/// `prefix` is too and is at most 40 characters long.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
    format!("{prefix}-{}-{}-{}", base36(millis), base36(u128::from(std::process::id())), base36(u128::from(n)))
}

fn base36(mut n: u128) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("base36 digits are ASCII")
}

/// Polls `check` until it returns `Some`, every `interval`, for at most `timeout`.
///
/// # Panics
///
/// When `timeout` passes without a `Some`, naming `what` was awaited: tests wait for
/// what they observe with this rather than with fixed sleeps.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, interval: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_are_valid_kubernetes_names() {
        let a = unique_name("jobs");
        let b = unique_name("jobs");
        assert_ne!(a, b);
        for name in [&a, &b] {
            assert!(name.starts_with("jobs-"), "{name}");
            assert!(name.len() <= 63, "{name}");
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{name}");
        }
    }

    #[test]
    fn base36_writes_zero_and_larger_numbers() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
    }
}
