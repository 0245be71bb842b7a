//! Metrics as CloudWatch Embedded Metric Format (EMF) log lines: a function counts what
//! it did while it works and prints the documents once per invocation; CloudWatch Logs
//! turns them into metrics. No API call, no latency, nothing to fail in the handler.
//!
//! Every metric has the dimension `Function`. `Failed` also has `FailureClass` and
//! `StaleFound` also has `State`; both are published under the two dimension sets, so
//! the per-function total needs no metric math. Only what was counted is printed: a
//! metric with no data point is missing data, which alarms treat as not breaching.
//!
//! Spec: <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Map, Value, json};

use podbridge_core::failure::FailureClass;
use podbridge_core::state::JobState;

/// EMF takes at most 100 values for one metric in one document; more go to the next.
const MAX_VALUES: usize = 100;

/// The dimension every metric has: which function counted it.
const FUNCTION: &str = "Function";

/// Something counted (unit `Count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Counter {
    /// A job was recorded and its pod created.
    Dispatched,
    /// A job's container started running.
    Started,
    /// A job succeeded.
    Succeeded,
    /// A job attempt failed, by class.
    Failed(FailureClass),
    /// The reconciler found a job stuck in a state past its limit.
    StaleFound(JobState),
    /// A failed attempt was retried.
    Retries,
    /// A submission was rejected.
    Rejected,
    /// A job was cancelled.
    Cancelled,
    /// A job state change event could not be published.
    EventsFailed,
    /// A job began to wait for room in its queue.
    Waiting,
    /// An attempt the full cluster could not place was put back to wait.
    RequeuedForCapacity,
    /// A queue's stored usage differed from its slots and was set to the truth.
    DriftRepaired,
}

impl Counter {
    /// The metric name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Dispatched => "Dispatched",
            Self::Started => "Started",
            Self::Succeeded => "Succeeded",
            Self::Failed(_) => "Failed",
            Self::StaleFound(_) => "StaleFound",
            Self::Retries => "Retries",
            Self::Rejected => "Rejected",
            Self::Cancelled => "Cancelled",
            Self::EventsFailed => "EventsFailed",
            Self::Waiting => "Waiting",
            Self::RequeuedForCapacity => "RequeuedForCapacity",
            Self::DriftRepaired => "DriftRepaired",
        }
    }

    /// The dimension besides `Function`, if the counter has one.
    fn dimension(self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::Failed(class) => Some(("FailureClass", class.as_str())),
            Self::StaleFound(state) => Some(("State", state.as_str())),
            _ => None,
        }
    }
}

/// Something timed (unit `Milliseconds`); every value is kept, so CloudWatch can give
/// percentiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timing {
    /// How long one reconcile run took.
    ReconcileDuration,
    /// From a pod's change (its status time) to the job's record of it.
    StateLatency,
    /// From a job's attempt being queued to its admission (its pod created).
    AdmissionWait,
}

impl Timing {
    /// The metric name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ReconcileDuration => "ReconcileDuration",
            Self::StateLatency => "StateLatency",
            Self::AdmissionWait => "AdmissionWait",
        }
    }
}

#[derive(Debug, Default)]
struct Data {
    counts: BTreeMap<Counter, u64>,
    timings: BTreeMap<Timing, Vec<f64>>,
    queues: BTreeMap<String, QueueFigures>,
}

/// What a pass found in one queue, published with the dimension `Queue` and rolled up
/// under `Function` alone (one value per queue, so the `Maximum` is the worst queue).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueFigures {
    /// `WaitingJobs`: its jobs waiting for room.
    pub waiting: u64,
    /// `QueueStalledSeconds`: how long it has had waiting jobs and admitted none (0 when
    /// nothing waits, or it is paused on purpose).
    pub stalled_seconds: u64,
}

/// The metrics of one function, collected through `&self` so concurrent tasks of one
/// invocation can share them; [`Metrics::flush`] prints them at the end.
#[derive(Debug)]
pub struct Metrics {
    namespace: String,
    function: String,
    data: Mutex<Data>,
}

impl Metrics {
    /// Metrics in the CloudWatch `namespace` (1 to 255 of `A-Za-z0-9._#:/-`), with
    /// `function` as the value of the `Function` dimension.
    pub fn new(namespace: impl Into<String>, function: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), function: function.into(), data: Mutex::default() }
    }

    /// Counts one.
    pub fn count(&self, counter: Counter) {
        self.add(counter, 1);
    }

    /// Counts `n`.
    pub fn add(&self, counter: Counter, n: u64) {
        *self.lock().counts.entry(counter).or_default() += n;
    }

    /// Records one duration.
    pub fn time(&self, timing: Timing, duration: Duration) {
        self.lock().timings.entry(timing).or_default().push(duration.as_secs_f64() * 1000.0);
    }

    /// Records what a pass found in `queue`.
    pub fn queue(&self, queue: &str, figures: QueueFigures) {
        self.lock().queues.insert(queue.to_owned(), figures);
    }

    /// The EMF documents of everything recorded so far, one JSON line each, stamped
    /// `timestamp_ms` (milliseconds since the epoch). Empty when nothing was recorded.
    pub fn emf_lines(&self, timestamp_ms: i64) -> Vec<String> {
        self.render(&self.lock(), timestamp_ms)
    }

    /// Prints the documents to stdout, where Lambda's log capture hands them to
    /// CloudWatch, and starts over.
    pub fn flush(&self) {
        // A Lambda cannot do anything useful about a broken stdout, and a metric is not
        // worth failing an invocation over.
        let _ = self.flush_to(&mut io::stdout().lock());
    }

    /// Writes the documents to `out`, one per line, and starts over.
    pub fn flush_to(&self, out: &mut impl Write) -> io::Result<()> {
        let data = std::mem::take(&mut *self.lock());
        for line in self.render(&data, jiff::Timestamp::now().as_millisecond()) {
            writeln!(out, "{line}")?;
        }
        out.flush()
    }

    fn lock(&self) -> MutexGuard<'_, Data> {
        // Nothing panics while holding the lock, so poisoned data is still whole.
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One document per dimension set. The `Function`-only counters travel with the first
    /// hundred values of each timing, further values in documents of their own.
    fn render(&self, data: &Data, timestamp_ms: i64) -> Vec<String> {
        let mut by_dimension: BTreeMap<_, Vec<(&str, &str, Value)>> = BTreeMap::new();
        for (counter, n) in &data.counts {
            by_dimension.entry(counter.dimension()).or_default().push((counter.name(), "Count", json!(n)));
        }
        let mut lines = Vec::new();
        let plain = by_dimension.remove(&None).unwrap_or_default();
        let rounds = data.timings.values().map(|values| values.len().div_ceil(MAX_VALUES)).max().unwrap_or(0).max(1);
        for round in 0..rounds {
            let mut metrics = if round == 0 { plain.clone() } else { Vec::new() };
            for (timing, values) in &data.timings {
                if let Some(chunk) = values.chunks(MAX_VALUES).nth(round) {
                    metrics.push((timing.name(), "Milliseconds", json!(chunk)));
                }
            }
            if !metrics.is_empty() {
                lines.push(self.document(timestamp_ms, None, metrics));
            }
        }
        for (dimension, metrics) in by_dimension {
            lines.push(self.document(timestamp_ms, dimension, metrics));
        }
        for (queue, figures) in &data.queues {
            let metrics = vec![
                ("WaitingJobs", "Count", json!(figures.waiting)),
                ("QueueStalledSeconds", "Seconds", json!(figures.stalled_seconds)),
            ];
            lines.push(self.document(timestamp_ms, Some(("Queue", queue.as_str())), metrics));
        }
        lines
    }

    fn document(&self, timestamp_ms: i64, extra: Option<(&str, &str)>, metrics: Vec<(&str, &str, Value)>) -> String {
        let mut root = Map::new();
        root.insert(FUNCTION.into(), json!(self.function));
        let mut dimension_sets = vec![vec![FUNCTION]];
        if let Some((key, value)) = extra {
            dimension_sets.insert(0, vec![FUNCTION, key]);
            root.insert(key.into(), json!(value));
        }
        let definitions: Vec<Value> =
            metrics.iter().map(|(name, unit, _)| json!({"Name": name, "Unit": unit})).collect();
        for (name, _, value) in metrics {
            root.insert(name.into(), value);
        }
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": dimension_sets,
                    "Metrics": definitions,
                }],
            }),
        );
        Value::Object(root).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_717_207_200_000;

    fn keys(object: &Map<String, Value>) -> Vec<&str> {
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    }

    /// Parses an EMF line and checks it against the specification; returns the document.
    fn check_emf(line: &str) -> Value {
        assert!(!line.contains('\n'), "one document per line: {line}");
        let doc: Value = serde_json::from_str(line).unwrap();
        let root = doc.as_object().unwrap();
        let aws = root["_aws"].as_object().unwrap();
        assert_eq!(keys(aws), ["CloudWatchMetrics", "Timestamp"], "no other members");
        assert!(aws["Timestamp"].is_i64());
        let directives = aws["CloudWatchMetrics"].as_array().unwrap();
        assert!(!directives.is_empty());
        for directive in directives {
            let directive = directive.as_object().unwrap();
            assert_eq!(keys(directive), ["Dimensions", "Metrics", "Namespace"]);
            let namespace = directive["Namespace"].as_str().unwrap();
            assert!((1..=255).contains(&namespace.len()));
            assert!(namespace.chars().all(|c| c.is_ascii_alphanumeric() || "._#:/-".contains(c)), "{namespace}");
            for set in directive["Dimensions"].as_array().unwrap() {
                let set = set.as_array().unwrap();
                assert!(set.len() <= 30);
                for key in set {
                    let value = root[key.as_str().unwrap()].as_str().expect("a dimension is a string member");
                    assert!(!value.trim().is_empty() && value.is_ascii());
                }
            }
            let definitions = directive["Metrics"].as_array().unwrap();
            assert!((1..=100).contains(&definitions.len()));
            for definition in definitions {
                let definition = definition.as_object().unwrap();
                assert_eq!(keys(definition), ["Name", "Unit"]);
                let name = definition["Name"].as_str().unwrap();
                assert!(
                    ["Count", "Milliseconds", "Seconds"].contains(&definition["Unit"].as_str().unwrap()),
                    "{definition:?}"
                );
                match &root[name] {
                    Value::Number(_) => {}
                    Value::Array(values) => {
                        assert!((1..=MAX_VALUES).contains(&values.len()));
                        assert!(values.iter().all(Value::is_number));
                    }
                    other => panic!("metric {name} has no numeric member: {other:?}"),
                }
            }
        }
        doc
    }

    fn documents(metrics: &Metrics) -> Vec<Value> {
        metrics.emf_lines(NOW).iter().map(|line| check_emf(line)).collect()
    }

    #[test]
    fn nothing_recorded_prints_nothing() {
        assert!(Metrics::new("podbridge", "dispatch").emf_lines(NOW).is_empty());
    }

    #[test]
    fn one_document_per_dimension_set() {
        let metrics = Metrics::new("podbridge", "reconcile");
        metrics.add(Counter::Dispatched, 3);
        metrics.count(Counter::Succeeded);
        metrics.count(Counter::Failed(FailureClass::OomKilled));
        metrics.count(Counter::Failed(FailureClass::OomKilled));
        metrics.count(Counter::Failed(FailureClass::ImagePull));
        metrics.count(Counter::StaleFound(JobState::SettingUp));
        metrics.time(Timing::ReconcileDuration, Duration::from_millis(1250));

        let docs = documents(&metrics);
        assert_eq!(
            docs[0],
            json!({
                "_aws": {
                    "Timestamp": NOW,
                    "CloudWatchMetrics": [{
                        "Namespace": "podbridge",
                        "Dimensions": [["Function"]],
                        "Metrics": [
                            {"Name": "Dispatched", "Unit": "Count"},
                            {"Name": "Succeeded", "Unit": "Count"},
                            {"Name": "ReconcileDuration", "Unit": "Milliseconds"}
                        ]
                    }]
                },
                "Function": "reconcile",
                "Dispatched": 3,
                "Succeeded": 1,
                "ReconcileDuration": [1250.0]
            })
        );
        let by_class = |doc: &Value| (doc["FailureClass"].clone(), doc["Failed"].clone());
        assert_eq!(by_class(&docs[1]), (json!("image_pull"), json!(1)));
        assert_eq!(by_class(&docs[2]), (json!("oom_killed"), json!(2)));
        assert_eq!(
            docs[2]["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Function", "FailureClass"], ["Function"]])
        );
        assert_eq!((docs[3]["State"].clone(), docs[3]["StaleFound"].clone()), (json!("setting_up"), json!(1)));
        assert_eq!(docs.len(), 4);
    }

    #[test]
    fn more_than_a_hundred_values_spill_into_further_documents() {
        let metrics = Metrics::new("podbridge", "reconcile");
        metrics.count(Counter::Started);
        for ms in 0..250 {
            metrics.time(Timing::StateLatency, Duration::from_millis(ms));
        }
        let docs = documents(&metrics);
        assert_eq!(docs.len(), 3);
        assert_eq!(
            docs.iter().map(|doc| doc["Started"].clone()).collect::<Vec<_>>(),
            [json!(1), Value::Null, Value::Null]
        );
        let values: Vec<f64> = docs
            .iter()
            .flat_map(|doc| doc["StateLatency"].as_array().unwrap().clone())
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(values, (0..250).map(f64::from).collect::<Vec<_>>());
    }

    #[test]
    fn each_queue_is_a_document_with_its_own_dimension_rolled_up_under_the_function() {
        let metrics = Metrics::new("podbridge", "reconcile");
        metrics.queue("etl", QueueFigures { waiting: 12, stalled_seconds: 900 });
        metrics.queue("ml", QueueFigures { waiting: 0, stalled_seconds: 0 });
        let docs = documents(&metrics);
        assert_eq!(docs.len(), 2);
        assert_eq!((docs[0]["Queue"].clone(), docs[0]["WaitingJobs"].clone()), (json!("etl"), json!(12)));
        assert_eq!(docs[0]["QueueStalledSeconds"], json!(900));
        assert_eq!(docs[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Function", "Queue"], ["Function"]]));
        assert_eq!(docs[1]["Queue"], json!("ml"));
    }

    #[test]
    fn flush_writes_lines_and_starts_over() {
        let metrics = Metrics::new("podbridge", "dispatch");
        metrics.count(Counter::Rejected);
        metrics.count(Counter::EventsFailed);
        let mut out = Vec::new();
        metrics.flush_to(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let docs: Vec<Value> = text.lines().map(check_emf).collect();
        assert_eq!(docs.len(), 1);
        assert_eq!((docs[0]["Rejected"].clone(), docs[0]["EventsFailed"].clone()), (json!(1), json!(1)));
        assert!(metrics.emf_lines(NOW).is_empty());
    }
}
