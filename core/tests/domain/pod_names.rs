//! Pod names never collide: `pod_name(id, attempt)` gives different names to different
//! job attempts, keeps ordinary ids readable, and is always a DNS label. Ids are
//! generated to stress the cases that collided before: plain ids shaped like a changed
//! id's name (`<id>-<hex>`), ids that differ only in case or punctuation, and ids at the
//! length where the attempt number stops fitting.

use std::collections::HashMap;

use podbridge_core::pod::pod_name;
use podbridge_core::validate::is_valid_job_id;
use proptest::prelude::*;

/// Attempts, the long ones included (they leave the least room for the id).
fn attempt() -> impl Strategy<Value = u32> {
    prop_oneof![1u32..=12, Just(99), Just(100), Just(u32::MAX)]
}

/// Valid job ids, biased towards the collision cases.
fn job_id() -> impl Strategy<Value = String> {
    let plain = "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?";
    let mixed = "[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?";
    let near_limit =
        (55usize..=63).prop_flat_map(|n| proptest::string::string_regex(&format!("[a-z0-9]{{{n}}}")).unwrap());
    let one_letter_alphabet = "[aA][aA._-]{0,6}[aA]";
    prop_oneof![
        3 => plain.prop_map(String::from),
        3 => mixed.prop_map(String::from),
        2 => near_limit,
        2 => one_letter_alphabet.prop_map(String::from),
        // Shaped like a changed id's name: `<x>-<8 hex>` (the old form) and `<x>--<20 hex>`.
        2 => ("[a-z0-9]{1,20}", "[0-9a-f]{8}").prop_map(|(x, h)| format!("{x}-{h}")),
        2 => ("[a-z0-9]{1,20}", "[0-9a-f]{20}").prop_map(|(x, h)| format!("{x}--{h}")),
    ]
    .prop_filter("a valid job id", |id| is_valid_job_id(id))
}

fn is_dns_label(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A plain id: already a pod name's base, kept as it is.
fn is_plain(id: &str, attempt: u32) -> bool {
    id.len() + 1 + attempt.to_string().len() <= 63
        && !id.contains("--")
        && id.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn different_job_attempts_never_share_a_pod_name(
        ids in prop::collection::vec(job_id(), 1..40),
        attempts in prop::collection::vec(attempt(), 1..4),
    ) {
        // Each id, and for each the id a sender would use to impersonate its changed
        // form (its name without the attempt): the old collision, made on purpose.
        let mut all: Vec<String> = ids.clone();
        for id in &ids {
            for &attempt in &attempts {
                let name = pod_name(id, attempt);
                let base = name.strip_suffix(&format!("-{attempt}")).unwrap().to_owned();
                if is_valid_job_id(&base) {
                    all.push(base.clone());
                }
                if let Some((head, _)) = base.rsplit_once("--") {
                    // The old form of the same name: `<readable>-<8 hex>`.
                    let old = format!("{head}-{}", &name[head.len() + 2..head.len() + 10]);
                    if is_valid_job_id(&old) {
                        all.push(old);
                    }
                }
            }
        }
        all.sort();
        all.dedup();
        let mut seen: HashMap<String, (String, u32)> = HashMap::new();
        for id in &all {
            for &attempt in &attempts {
                let name = pod_name(id, attempt);
                prop_assert!(is_dns_label(&name), "{id} {attempt}: {name}");
                prop_assert_eq!(&name, &pod_name(id, attempt), "deterministic");
                prop_assert!(name.ends_with(&format!("-{attempt}")), "{name}");
                if is_plain(id, attempt) {
                    prop_assert_eq!(&name, &format!("{id}-{attempt}"), "a plain id stays readable");
                } else {
                    prop_assert!(name.contains("--"), "a changed id's name is marked: {name}");
                }
                if let Some(other) = seen.insert(name.clone(), (id.clone(), attempt)) {
                    prop_assert_eq!(&other, &(id.clone(), attempt), "{} collides", name);
                }
            }
        }
    }
}

#[test]
fn names_of_ordinary_ids_are_unchanged() {
    assert_eq!(pod_name("report-1", 1), "report-1-1");
    assert_eq!(pod_name("nightly-report-2026-11-21", 2), "nightly-report-2026-11-21-2");
    assert_eq!(pod_name("nightly-report-20261121-020000", 1), "nightly-report-20261121-020000-1");
    let changed = pod_name("Nightly_Report.v2", 1);
    assert!(changed.starts_with("nightly-report-v2--") && changed.ends_with("-1"), "{changed}");
}
