//! Who may act in which namespaces: one deployment shared by several teams.
//!
//! A request's [`Sender`] is what podbridge knows about who sent it without trusting
//! the request itself: for an SQS message, the IAM principal SQS recorded (`SenderId`)
//! and the queue it came through; for an EventBridge event, its `source` and `account`
//! (which the bus policy restricts); a schedule's tick and the operator's own commands
//! are the deployment's. The operator's [`Tenancy`] maps senders to the namespaces they
//! may use; the submission core enforces it for every submit, cancel and retry, so no
//! trigger path can skip it. No rules means one team: every sender may use every
//! namespace the guardrails allow.
//!
//! Pure: no IO, tested with plain values.

use std::fmt;

use serde::Deserialize;

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// An SQS message: the `SenderId` SQS recorded (an IAM role's unique id and session,
    /// `AROA…:session`, an IAM user's `AIDA…`, or an account id) and the queue's ARN.
    Queue { sender_id: Option<String>, queue_arn: Option<String> },
    /// An EventBridge event: its `source` and the account that put it.
    Event { source: String, account: Option<String> },
    /// A schedule's tick: the deployment's own configuration.
    Schedule,
    /// The operator, with the deployment's own credentials (`podbridge submit --direct`,
    /// `podbridge dev`, tests).
    Operator,
}

impl fmt::Display for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Queue { sender_id, queue_arn } => write!(
                f,
                "sender {} through queue {}",
                sender_id.as_deref().unwrap_or("(unknown)"),
                queue_arn.as_deref().unwrap_or("(unknown)")
            ),
            Self::Event { source, account } => {
                write!(f, "event source {source:?} of account {}", account.as_deref().unwrap_or("(unknown)"))
            }
            Self::Schedule => f.write_str("a schedule"),
            Self::Operator => f.write_str("the operator"),
        }
    }
}

/// A text that matches exactly, or by prefix when it ends with `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern(String);

impl Pattern {
    fn matches(&self, text: Option<&str>) -> bool {
        let Some(text) = text else { return false };
        match self.0.strip_suffix('*') {
            Some(prefix) => text.starts_with(prefix),
            None => text == self.0,
        }
    }
}

/// One rule of `PODBRIDGE_SENDERS`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RuleSpec {
    /// An SQS `SenderId` (a trailing `*` matches any session of a role: `AROA…:*`).
    #[serde(default)]
    sender_id: Option<String>,
    /// An SQS queue's ARN (a trailing `*` allowed).
    #[serde(default)]
    queue: Option<String>,
    /// An EventBridge event's `source` (a trailing `*` allowed).
    #[serde(default)]
    event_source: Option<String>,
    /// The account an event must come from (with `eventSource` only).
    #[serde(default)]
    account: Option<String>,
    /// The namespaces the matching senders may use.
    namespaces: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    Queue { sender_id: Option<Pattern>, queue: Option<Pattern> },
    Event { source: Pattern, account: Option<Pattern> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    matcher: Matcher,
    namespaces: Vec<String>,
}

impl Rule {
    fn matches(&self, sender: &Sender) -> bool {
        match (&self.matcher, sender) {
            (Matcher::Queue { sender_id, queue }, Sender::Queue { sender_id: id, queue_arn }) => {
                sender_id.as_ref().is_none_or(|p| p.matches(id.as_deref()))
                    && queue.as_ref().is_none_or(|p| p.matches(queue_arn.as_deref()))
            }
            (Matcher::Event { source, account }, Sender::Event { source: s, account: a }) => {
                source.matches(Some(s)) && account.as_ref().is_none_or(|p| p.matches(a.as_deref()))
            }
            _ => false,
        }
    }
}

/// The operator's map from senders to namespaces (`PODBRIDGE_SENDERS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tenancy {
    /// `None`: one team, every sender may use every namespace.
    rules: Option<Vec<Rule>>,
}

impl Tenancy {
    /// One team: every sender may use every namespace the guardrails allow.
    pub fn open() -> Self {
        Self { rules: None }
    }

    /// Reads `PODBRIDGE_SENDERS`: a JSON array of rules, each with `namespaces` and one
    /// way to match a sender (`senderId` and/or `queue` for SQS, `eventSource` with an
    /// optional `account` for EventBridge). Every namespace must be one of `allowed`
    /// (the deployment's `PODBRIDGE_NAMESPACES`).
    pub fn parse(text: &str, allowed: &[String]) -> Result<Self, String> {
        let specs: Vec<RuleSpec> = serde_json::from_str(text).map_err(|e| {
            format!(
                "PODBRIDGE_SENDERS is not a JSON array of rules ({e}); each rule is {{\"namespaces\": [...]}} \
                 with \"senderId\" and/or \"queue\" (SQS), or \"eventSource\" and optionally \"account\" (EventBridge)"
            )
        })?;
        let mut rules = Vec::with_capacity(specs.len());
        for (index, spec) in specs.into_iter().enumerate() {
            let at = format!("PODBRIDGE_SENDERS[{index}]");
            if spec.namespaces.is_empty() {
                return Err(format!("{at}.namespaces is empty: name the namespaces these senders may use"));
            }
            if let Some(unknown) = spec.namespaces.iter().find(|n| !allowed.contains(n)) {
                return Err(format!(
                    "{at}.namespaces: {unknown:?} is not one of PODBRIDGE_NAMESPACES ({})",
                    allowed.join(", ")
                ));
            }
            let pattern = |text: Option<String>, field: &str| -> Result<Option<Pattern>, String> {
                match text {
                    Some(t) if t.trim().is_empty() || t == "*" => {
                        Err(format!("{at}.{field} must name something (a lone `*` would match every sender)"))
                    }
                    other => Ok(other.map(Pattern)),
                }
            };
            let sqs = spec.sender_id.is_some() || spec.queue.is_some();
            let matcher = match (sqs, spec.event_source) {
                (true, None) if spec.account.is_none() => Matcher::Queue {
                    sender_id: pattern(spec.sender_id, "senderId")?,
                    queue: pattern(spec.queue, "queue")?,
                },
                (false, Some(source)) => Matcher::Event {
                    source: pattern(Some(source), "eventSource")?.unwrap_or_else(|| unreachable!("given")),
                    account: pattern(spec.account, "account")?,
                },
                _ => {
                    return Err(format!(
                        "{at} must match SQS senders (\"senderId\" and/or \"queue\") or events (\"eventSource\", \
                         optionally \"account\"), not both or neither"
                    ));
                }
            };
            rules.push(Rule { matcher, namespaces: spec.namespaces });
        }
        Ok(Self { rules: Some(rules) })
    }

    /// Whether senders are told apart (the operator gave rules).
    pub fn is_scoped(&self) -> bool {
        self.rules.is_some()
    }

    /// The namespaces `sender` may use, in the order of `allowed` (the deployment's
    /// namespaces, whose first is the default), so the default stays the first of them.
    pub fn namespaces_for(&self, sender: &Sender, allowed: &[String]) -> Vec<String> {
        let Some(rules) = &self.rules else { return allowed.to_vec() };
        if matches!(sender, Sender::Schedule | Sender::Operator) {
            return allowed.to_vec();
        }
        let granted: Vec<&String> = rules.iter().filter(|r| r.matches(sender)).flat_map(|r| &r.namespaces).collect();
        allowed.iter().filter(|n| granted.contains(n)).cloned().collect()
    }
}

/// Job ids of the form `<name>-YYYYMMDD-HHMMSS` belong to schedule ticks: only a tick
/// may record a job (or a cancel, or a rejection) under one, so a client can never take
/// the id a schedule's tick will use.
pub fn is_tick_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    let Some(split) = bytes.len().checked_sub(16) else { return false };
    let (name, stamp) = bytes.split_at(split);
    let digits = |range: std::ops::Range<usize>| stamp[range].iter().all(u8::is_ascii_digit);
    !name.is_empty() && stamp[0] == b'-' && digits(1..9) && stamp[9] == b'-' && digits(10..16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<String> {
        vec!["team-a".into(), "team-b".into(), "shared".into()]
    }

    fn queue(sender_id: &str, queue: &str) -> Sender {
        Sender::Queue { sender_id: Some(sender_id.into()), queue_arn: Some(queue.into()) }
    }

    #[test]
    fn senders_get_the_namespaces_of_the_rules_they_match() {
        let tenancy = Tenancy::parse(
            r#"[
                {"queue": "arn:aws:sqs:us-east-1:111122223333:team-a-jobs", "namespaces": ["team-a"]},
                {"senderId": "AROAEXAMPLEB:*", "namespaces": ["team-b", "shared"]},
                {"eventSource": "team-b.*", "account": "111122223333", "namespaces": ["team-b"]}
            ]"#,
            &all(),
        )
        .unwrap();
        let check = |sender: Sender, expected: &[&str]| {
            assert_eq!(tenancy.namespaces_for(&sender, &all()), expected, "{sender}");
        };
        check(queue("AIDAANYONE", "arn:aws:sqs:us-east-1:111122223333:team-a-jobs"), &["team-a"]);
        check(queue("AROAEXAMPLEB:lambda-1", "arn:aws:sqs:us-east-1:111122223333:jobs"), &["team-b", "shared"]);
        check(
            queue("AROAEXAMPLEB:x", "arn:aws:sqs:us-east-1:111122223333:team-a-jobs"),
            &["team-a", "team-b", "shared"],
        );
        check(queue("AROAOTHER:x", "arn:aws:sqs:us-east-1:111122223333:jobs"), &[]);
        check(Sender::Queue { sender_id: None, queue_arn: None }, &[]);
        check(Sender::Event { source: "team-b.nightly".into(), account: Some("111122223333".into()) }, &["team-b"]);
        check(Sender::Event { source: "team-b.nightly".into(), account: Some("444455556666".into()) }, &[]);
        check(Sender::Event { source: "podbridge".into(), account: Some("111122223333".into()) }, &[]);
        check(Sender::Schedule, &["team-a", "team-b", "shared"]);
        check(Sender::Operator, &["team-a", "team-b", "shared"]);
        assert!(tenancy.is_scoped());
    }

    #[test]
    fn without_rules_every_sender_may_use_every_namespace() {
        let open = Tenancy::open();
        assert!(!open.is_scoped());
        assert_eq!(open.namespaces_for(&queue("x", "y"), &all()), all());
    }

    #[test]
    fn bad_rules_are_refused_with_the_field_named() {
        let check = |text: &str, expected: &str| {
            let error = Tenancy::parse(text, &all()).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        };
        check("{}", "JSON array");
        check(r#"[{"queue": "q"}]"#, "namespaces");
        check(r#"[{"queue": "q", "namespaces": []}]"#, "PODBRIDGE_SENDERS[0].namespaces is empty");
        check(r#"[{"queue": "q", "namespaces": ["prod"]}]"#, "\"prod\" is not one of PODBRIDGE_NAMESPACES");
        check(r#"[{"namespaces": ["team-a"]}]"#, "not both or neither");
        check(r#"[{"queue": "q", "eventSource": "s", "namespaces": ["team-a"]}]"#, "not both or neither");
        check(r#"[{"senderId": "*", "namespaces": ["team-a"]}]"#, "senderId must name something");
        check(r#"[{"queue": "q", "account": "1", "namespaces": ["team-a"]}]"#, "not both or neither");
        check(r#"[{"queue": "q", "namespaces": ["team-a"], "team": "x"}]"#, "unknown field");
    }

    #[test]
    fn tick_ids_have_their_own_form() {
        for tick in ["nightly-20261121-020000", "a-20260101-000000"] {
            assert!(is_tick_id(tick), "{tick}");
        }
        for other in ["nightly-2026-11-21", "-20261121-020000", "nightly-20261121-02000x", "report", "20261121-020000"]
        {
            assert!(!is_tick_id(other), "{other}");
        }
    }
}
