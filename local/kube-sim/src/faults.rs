//! Fault injection: latency, error responses per verb and dropped connections, set at
//! start (`--latency`, `--error`, `--drop-rate`) and changed at runtime through
//! `PUT /kube-sim/faults`. Faults apply to resource requests (`/api/v1/...`) only, never
//! to discovery or the admin endpoints.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::status::ApiError;

/// An error response injected for a share of the requests of one verb.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorFault {
    /// `create`, `get`, `list`, `watch`, `delete`, `log`, or `*` for every verb (which
    /// also covers `update` and `patch` of the pod status subresource).
    pub verb: String,
    /// Probability in `[0, 1]`.
    pub rate: f64,
    /// 500, 503 or 429 (429 carries `Retry-After`).
    pub code: u16,
}

impl std::str::FromStr for ErrorFault {
    type Err = String;

    /// `VERB=RATE:CODE`, e.g. `create=0.1:503`.
    fn from_str(text: &str) -> Result<Self, String> {
        let usage = || format!("invalid error fault {text:?}: expected VERB=RATE:CODE, e.g. create=0.1:503");
        let (verb, rest) = text.split_once('=').ok_or_else(usage)?;
        let (rate, code) = rest.split_once(':').ok_or_else(usage)?;
        let fault = Self {
            verb: verb.to_owned(),
            rate: rate.parse().map_err(|_| usage())?,
            code: code.parse().map_err(|_| usage())?,
        };
        fault.check()?;
        Ok(fault)
    }
}

impl ErrorFault {
    fn check(&self) -> Result<(), String> {
        const VERBS: [&str; 7] = ["*", "create", "get", "list", "watch", "delete", "log"];
        if !VERBS.contains(&self.verb.as_str()) {
            return Err(format!("error fault verb {:?} is not one of {}", self.verb, VERBS.join(", ")));
        }
        if !(0.0..=1.0).contains(&self.rate) {
            return Err(format!("error fault rate {} is not between 0 and 1", self.rate));
        }
        if ![500, 503, 429].contains(&self.code) {
            return Err(format!("error fault code {} is not one of 500, 503, 429", self.code));
        }
        Ok(())
    }
}

/// The faults in force.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Faults {
    /// Fixed latency added to every resource request, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Extra random latency, uniform in `[0, jitter_ms]`.
    #[serde(default)]
    pub jitter_ms: u64,
    /// Probability that the connection is closed without a response.
    #[serde(default)]
    pub drop_rate: f64,
    #[serde(default)]
    pub errors: Vec<ErrorFault>,
    /// The `Retry-After` of injected 429s, in seconds.
    #[serde(default = "one")]
    pub retry_after_seconds: u32,
}

fn one() -> u32 {
    1
}

impl Faults {
    /// Checks every field, naming the wrong one.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.drop_rate) {
            return Err(format!("dropRate {} is not between 0 and 1", self.drop_rate));
        }
        self.errors.iter().try_for_each(ErrorFault::check)
    }
}

/// What to do with one request.
#[derive(Debug, PartialEq)]
pub enum Decision {
    Serve,
    Fail(ApiError),
    Drop,
}

/// Per-verb request counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerbStats {
    pub requests: u64,
    pub injected_errors: u64,
    pub dropped: u64,
}

/// The faults in force and what they did.
#[derive(Debug, Default)]
pub struct FaultInjector {
    faults: Mutex<Faults>,
    stats: Mutex<BTreeMap<String, VerbStats>>,
}

impl FaultInjector {
    pub fn new(faults: Faults) -> Self {
        Self { faults: Mutex::new(faults), stats: Mutex::default() }
    }

    pub fn get(&self) -> Faults {
        self.faults.lock().unwrap().clone()
    }

    pub fn set(&self, faults: Faults) -> Result<(), String> {
        faults.check()?;
        *self.faults.lock().unwrap() = faults;
        Ok(())
    }

    pub fn stats(&self) -> BTreeMap<String, VerbStats> {
        self.stats.lock().unwrap().clone()
    }

    /// Decides the fate of a request of `verb`, and how long to delay it first.
    pub fn decide(&self, verb: &str) -> (Duration, Decision) {
        let faults = self.faults.lock().unwrap().clone();
        let mut rng = rand::rng();
        let jitter = if faults.jitter_ms > 0 { rng.random_range(0..=faults.jitter_ms) } else { 0 };
        let delay = Duration::from_millis(faults.latency_ms + jitter);
        let decision = if faults.drop_rate > 0.0 && rng.random_bool(faults.drop_rate) {
            Decision::Drop
        } else {
            faults
                .errors
                .iter()
                .filter(|f| f.verb == "*" || f.verb == verb)
                .find(|f| f.rate > 0.0 && rng.random_bool(f.rate))
                .map_or(Decision::Serve, |f| {
                    Decision::Fail(match f.code {
                        429 => ApiError::too_many_requests(faults.retry_after_seconds),
                        503 => ApiError::unavailable(
                            "the server is currently unable to handle the request (injected by kube-sim)",
                        ),
                        _ => ApiError::internal("injected by kube-sim"),
                    })
                })
        };
        let mut stats = self.stats.lock().unwrap();
        let entry = stats.entry(verb.to_owned()).or_default();
        entry.requests += 1;
        match decision {
            Decision::Fail(_) => entry.injected_errors += 1,
            Decision::Drop => entry.dropped += 1,
            Decision::Serve => {}
        }
        (delay, decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_error_faults() {
        let fault: ErrorFault = "create=0.25:503".parse().unwrap();
        assert_eq!(fault, ErrorFault { verb: "create".into(), rate: 0.25, code: 503 });
        assert!("create=2:503".parse::<ErrorFault>().unwrap_err().contains("between 0 and 1"));
        assert!("patch=0.1:500".parse::<ErrorFault>().unwrap_err().contains("verb"));
        assert!("create=0.1:404".parse::<ErrorFault>().unwrap_err().contains("code"));
        assert!("create".parse::<ErrorFault>().is_err());
    }

    #[test]
    fn certain_faults_always_fire_and_are_counted() {
        let injector = FaultInjector::new(Faults {
            errors: vec![ErrorFault { verb: "create".into(), rate: 1.0, code: 429 }],
            retry_after_seconds: 7,
            ..Faults::default()
        });
        let (_, decision) = injector.decide("create");
        let Decision::Fail(error) = decision else { panic!("expected an injected error") };
        assert_eq!((error.code, error.retry_after), (429, Some(7)));
        assert_eq!(injector.decide("list").1, Decision::Serve);
        injector.set(Faults { drop_rate: 1.0, ..Faults::default() }).unwrap();
        assert_eq!(injector.decide("get").1, Decision::Drop);
        let stats = injector.stats();
        assert_eq!(stats["create"].injected_errors, 1);
        assert_eq!(stats["get"].dropped, 1);
        assert_eq!(stats["list"].requests, 1);
    }
}
