//! Guardrails that hold: each attack a sender might try is refused, with the field and
//! the reason; the caps bound every list and string; a job recorded yesterday is held to
//! the guardrails in force today. Pure: no service needed.

use podbridge_core::job::{
    MAX_ARG_BYTES, MAX_COMMAND_ENTRIES, MAX_ENV_ENTRIES, MAX_EXIT_CODES, MAX_LABELS, MAX_NODE_SELECTOR_TERMS,
    MAX_REASON_BYTES, MAX_RETRY_CLASSES, MAX_TOLERATIONS,
};
use podbridge_core::pod::{PodSettings, build_pod};
use podbridge_core::validate::{Guardrails, Job, MAX_PROBLEMS, Parsed, parse_message, recheck};
use serde_json::{Value, json};

fn guardrails() -> Guardrails {
    Guardrails {
        namespaces: vec!["podbridge-jobs".into(), "etl".into()],
        image_prefixes: vec!["registry.example.com/team".into(), "docker.io/library/".into()],
        service_accounts: vec!["report-writer".into()],
        allow_secret_refs: true,
        priority_classes: vec!["batch-low".into(), "batch-high".into()],
        toleration_keys: vec!["batch-only".into(), "example.com/gpu".into()],
        node_selector_keys: vec!["node.kubernetes.io/instance-type".into()],
        label_prefixes: vec!["team.example.com/".into(), "jobs.example.com".into()],
        ..Guardrails::default()
    }
}

/// A job message with `fields` over a valid minimal job.
fn message(fields: Value) -> Value {
    let mut job = json!({ "id": "job-1", "image": "registry.example.com/team/app:1" });
    for (key, value) in fields.as_object().unwrap() {
        job[key] = value.clone();
    }
    json!({ "version": 1, "job": job })
}

fn parse(message: &Value, guardrails: &Guardrails) -> Result<Job, Vec<String>> {
    match parse_message(message.to_string().as_bytes(), "sqs-fallback", guardrails) {
        Ok(Parsed::Job(job)) => Ok(*job),
        Ok(Parsed::Cancel(_)) => panic!("a job message"),
        Err(rejection) => Err(rejection.problems.iter().map(ToString::to_string).collect()),
    }
}

fn accepted(fields: Value) -> Job {
    parse(&message(fields.clone()), &guardrails()).unwrap_or_else(|problems| panic!("{fields} rejected: {problems:?}"))
}

/// Checks that the job with `fields` is rejected with a problem on `field` containing `needle`.
fn refused(fields: Value, field: &str, needle: &str) {
    let problems = parse(&message(fields.clone()), &guardrails()).expect_err(&format!("{fields} must be rejected"));
    assert!(
        problems.iter().any(|p| p.starts_with(&format!("{field}: ")) && p.contains(needle)),
        "{fields}: expected a problem on {field} containing {needle:?}, got {problems:?}"
    );
}

#[test]
fn an_image_prefix_admits_whole_hosts_and_path_components_only() {
    let image = |text: &str| json!({ "image": text });
    refused(image("registry.example.com.evil.io/team/x"), "job.image", "is not from an allowed registry");
    refused(image("registry.example.com/team-evil/x"), "job.image", "is not from an allowed registry");
    refused(image("registry.example.com/teamx:1"), "job.image", "is not from an allowed registry");
    refused(image("registry.example.com:5000/team/x"), "job.image", "is not from an allowed registry");
    refused(image("evil.io/registry.example.com/team/x"), "job.image", "is not from an allowed registry");
    // Docker Hub's short names are read as the runtime reads them: team/x is not ours.
    refused(image("team/x"), "job.image", "\"team/x\" (that is docker.io/team/x) is not from an allowed registry");
    assert_eq!(accepted(image("registry.example.com/team/x:1")).image, "registry.example.com/team/x:1");
    assert_eq!(accepted(image("registry.example.com/team/a/b")).image, "registry.example.com/team/a/b");
    let with_slash = Guardrails { image_prefixes: vec!["registry.example.com/team/".into()], ..guardrails() };
    let bare = Guardrails { image_prefixes: vec!["registry.example.com/team".into()], ..guardrails() };
    for text in ["registry.example.com/team/x", "registry.example.com/team-evil/x", "registry.example.com/x"] {
        let m = message(image(text));
        assert_eq!(parse(&m, &with_slash).is_ok(), parse(&m, &bare).is_ok(), "team/ and team mean the same: {text}");
    }
    // An official image by its short name is recorded (and run) by its full name.
    let job = accepted(image("busybox:1.36"));
    assert_eq!(job.image, "docker.io/library/busybox:1.36");
    let pod = build_pod(&job, 1, &PodSettings::default());
    assert_eq!(pod.spec.unwrap().containers[0].image.as_deref(), Some("docker.io/library/busybox:1.36"));
}

#[test]
fn an_image_that_is_not_a_reference_is_refused_with_the_reason() {
    let check = |text: &str, needle: &str| refused(json!({ "image": text }), "job.image", needle);
    check("registry.example.com/team/", "empty path component");
    check("registry.example.com/team//x", "empty path component");
    check("registry.example.com/team/../../admin/x", "path component \"..\" is not allowed");
    check("registry.example.com/team/X", "uppercase");
    check("registry.example.com/team/a b", "whitespace (U+0020)");
    check("registry.example.com/team/a\u{1b}b", "control character (U+001B)");
    check("registry.example.com/team/a\u{200b}", "non-ASCII character (U+200B)");
    check("registry.example.com/tеam/x", "non-ASCII character (U+0435)");
    check("registry.example.com/team/x:", "tag \"\" is not allowed");
    check("registry.example.com/team/x@sha256:1234", "digest \"sha256:1234\" is not allowed");
    check(&format!("registry.example.com/team/{}", "x".repeat(600)), "at most 512 are allowed");
    // Spaces around the reference mean nothing and are trimmed, as before.
    assert_eq!(accepted(json!({ "image": "  registry.example.com/team/x\n" })).image, "registry.example.com/team/x");
}

#[test]
fn priority_classes_are_an_allow_list_and_system_classes_never_allowed() {
    assert_eq!(accepted(json!({ "priorityClassName": "batch-low" })).priority_class_name.as_deref(), Some("batch-low"));
    refused(json!({ "priorityClassName": "critical" }), "job.priorityClassName", "allowed: batch-low, batch-high");
    refused(json!({ "priorityClassName": "system-node-critical" }), "job.priorityClassName", "system- classes");
    let listed = Guardrails { priority_classes: vec!["system-cluster-critical".into()], ..guardrails() };
    let problems = parse(&message(json!({ "priorityClassName": "system-cluster-critical" })), &listed).unwrap_err();
    assert!(problems[0].contains("system- classes are for the cluster's own components"), "{problems:?}");
    refused(json!({ "priorityClassName": "Batch_Low" }), "job.priorityClassName", "is not a PriorityClass name");
}

#[test]
fn tolerations_need_an_allowed_key_and_the_syntax_the_api_server_enforces() {
    let toleration = |t: Value| json!({ "tolerations": [t] });
    let job = accepted(toleration(json!({ "key": "batch-only", "operator": "Exists", "effect": "NoSchedule" })));
    assert_eq!(job.tolerations[0].key.as_deref(), Some("batch-only"));
    accepted(toleration(json!({ "key": "example.com/gpu", "value": "a100" })));
    // The empty-key Exists toleration tolerates every taint, not-ready and unreachable included.
    refused(
        toleration(json!({ "operator": "Exists" })),
        "job.tolerations[0].key",
        "the node not-ready and unreachable",
    );
    refused(toleration(json!({ "key": "", "operator": "Exists" })), "job.tolerations[0].key", "is required");
    refused(toleration(json!({ "value": "x" })), "job.tolerations[0].key", "is required with operator Equal");
    refused(
        toleration(json!({ "key": "node.kubernetes.io/unreachable", "operator": "Exists" })),
        "job.tolerations[0].key",
        "\"node.kubernetes.io/unreachable\" is not allowed; allowed: batch-only, example.com/gpu",
    );
    refused(
        toleration(json!({ "key": "batch-only", "operator": "Exists", "value": "x" })),
        "job.tolerations[0].value",
        "must be empty when operator is Exists",
    );
    refused(
        toleration(json!({ "key": "batch-only", "value": "a b" })),
        "job.tolerations[0].value",
        "is not a label value",
    );
    refused(toleration(json!({ "key": "bad key" })), "job.tolerations[0].key", "is not a taint key");
    refused(
        toleration(json!({ "key": "batch-only", "tolerationSeconds": 5 })),
        "job.tolerations[0].tolerationSeconds",
        "only allowed with effect NoExecute",
    );
}

#[test]
fn node_selector_keys_are_an_allow_list() {
    let job = accepted(json!({ "nodeSelector": { "node.kubernetes.io/instance-type": "m7g.xlarge" } }));
    assert_eq!(job.node_selector.len(), 1);
    refused(
        json!({ "nodeSelector": { "node-role.kubernetes.io/control-plane": "" } }),
        "job.nodeSelector",
        "key \"node-role.kubernetes.io/control-plane\" is not allowed; allowed: node.kubernetes.io/instance-type",
    );
    refused(json!({ "nodeSelector": { "a/b/c": "x" } }), "job.nodeSelector", "is not a label key");
    refused(
        json!({ "nodeSelector": { "node.kubernetes.io/instance-type": "x".repeat(64) } }),
        "job.nodeSelector",
        "is not a label value",
    );
}

#[test]
fn labels_are_only_under_the_allowed_prefixes_so_a_pod_cannot_join_another_apps_service() {
    let job = accepted(json!({ "labels": { "team.example.com/report": "nightly", "jobs.example.com/x": "" } }));
    assert_eq!(job.labels.len(), 2);
    // `app=web` would make the job a Service's endpoint or match its NetworkPolicy.
    refused(json!({ "labels": { "app": "web" } }), "job.labels", "key \"app\" is not allowed; allowed: keys under");
    refused(json!({ "labels": { "app.kubernetes.io/name": "web" } }), "job.labels", "is not allowed");
    refused(json!({ "labels": { "evil.team.example.com/x": "y" } }), "job.labels", "is not allowed");
    refused(json!({ "labels": { "team.example.com.evil.io/x": "y" } }), "job.labels", "is not allowed");
    refused(json!({ "labels": { "podbridge.dev/job-id": "other" } }), "job.labels", "reserved for podbridge");
    refused(json!({ "labels": { "team.example.com/x": "a;b" } }), "job.labels", "is not a label value");
    refused(json!({ "labels": { "team.example.com/-x": "y" } }), "job.labels", "is not a label key");
    // Reserved keys stay reserved even when an operator lists their prefix.
    let careless =
        Guardrails { label_prefixes: vec!["podbridge.dev".into(), "app.kubernetes.io/".into()], ..guardrails() };
    for key in ["podbridge.dev/job-id", "app.kubernetes.io/managed-by"] {
        let problems = parse(&message(json!({ "labels": { key: "x" } })), &careless).unwrap_err();
        assert!(problems[0].contains("reserved for podbridge"), "{key}: {problems:?}");
    }
    let none = Guardrails { label_prefixes: Vec::new(), ..guardrails() };
    let problems = parse(&message(json!({ "labels": { "team.example.com/x": "y" } })), &none).unwrap_err();
    assert_eq!(problems, ["job.labels: key \"team.example.com/x\" is not allowed; allowed: none"]);
}

#[test]
fn quantities_a_kubelet_could_not_run_are_refused() {
    let resources = |r: Value| json!({ "resources": r });
    refused(resources(json!({ "memory": "1m" })), "job.resources.memory", "is below the minimum of 4Mi");
    refused(resources(json!({ "memory": "1Mi" })), "job.resources.memory", "allowed: 4Mi to 16Gi");
    refused(resources(json!({ "memoryLimit": "100" })), "job.resources.memoryLimit", "below the minimum of 4Mi");
    refused(resources(json!({ "memory": "0" })), "job.resources.memory", "must be more than zero");
    refused(resources(json!({ "cpu": "0.0001" })), "job.resources.cpu", "less than 1m");
    refused(resources(json!({ "cpuLimit": "0" })), "job.resources.cpuLimit", "must be more than zero");
    let job = accepted(resources(json!({ "cpu": "1m", "memory": "4Mi" })));
    assert_eq!((job.cpu(), job.memory()), ("1m".to_owned(), "4Mi".to_owned()));
}

#[test]
fn every_list_and_string_has_a_cap() {
    let many = |n: usize, item: Value| Value::Array(vec![item; n]);
    refused(json!({ "args": many(MAX_COMMAND_ENTRIES + 1, json!("a")) }), "job.args", "at most 256 are allowed");
    refused(json!({ "command": many(MAX_COMMAND_ENTRIES + 1, json!("a")) }), "job.command", "at most 256");
    refused(json!({ "args": ["x".repeat(MAX_ARG_BYTES + 1)] }), "job.args[0]", "is 4097 bytes; at most 4096");
    refused(
        json!({ "command": ["x".repeat(4000), "x".repeat(4000)], "args": ["x".repeat(200)] }),
        "job.args",
        "job.command and job.args hold 8200 bytes together; at most 8192",
    );
    refused(json!({ "args": ["a\u{1b}[31m"] }), "job.args[0]", "control character (U+001B)");
    refused(json!({ "command": ["a\u{0}"] }), "job.command[0]", "control character (U+0000)");
    accepted(json!({ "args": ["line one\nline two\ttabbed\r"] }));

    let env: Vec<Value> = (0..=MAX_ENV_ENTRIES).map(|i| json!({ "name": format!("V{i}"), "value": "x" })).collect();
    refused(json!({ "env": env }), "job.env", "has 65 entries; at most 64");
    refused(json!({ "env": [{ "name": "V", "value": "x".repeat(MAX_ARG_BYTES + 1) }] }), "job.env[0].value", "4096");
    let big: Vec<Value> = (0..3).map(|i| json!({ "name": format!("V{i}"), "value": "x".repeat(3000) })).collect();
    refused(json!({ "env": big }), "job.env", "at most 8192 are allowed");
    refused(json!({ "env": [{ "name": "N".repeat(257), "value": "x" }] }), "job.env[0].name", "1 to 256");
    refused(
        json!({ "env": [{ "name": "S", "secret": { "name": "db", "key": "k".repeat(254) } }] }),
        "job.env[0].secret.key",
        "is not a Secret key",
    );

    let map = |n: usize, prefix: &str| -> Value {
        Value::Object((0..n).map(|i| (format!("{prefix}k{i}"), json!("v"))).collect())
    };
    refused(json!({ "labels": map(MAX_LABELS + 1, "team.example.com/") }), "job.labels", "has 17 labels; at most 16");
    refused(
        json!({ "nodeSelector": map(MAX_NODE_SELECTOR_TERMS + 1, "") }),
        "job.nodeSelector",
        "has 9 terms; at most 8",
    );
    refused(
        json!({ "tolerations": many(MAX_TOLERATIONS + 1, json!({ "key": "batch-only" })) }),
        "job.tolerations",
        "has 9 entries; at most 8",
    );
    refused(
        json!({ "retry": { "exitCodes": many(MAX_EXIT_CODES + 1, json!(3)) } }),
        "job.retry.exitCodes",
        "has 33 entries; at most 32",
    );
    refused(
        json!({ "retry": { "on": many(MAX_RETRY_CLASSES + 1, json!("evicted")) } }),
        "job.retry.on",
        &format!("has {} entries; at most {MAX_RETRY_CLASSES} are allowed (each class once)", MAX_RETRY_CLASSES + 1),
    );

    let cancel = json!({ "version": 1, "cancel": { "id": "job-1", "reason": "r".repeat(MAX_REASON_BYTES + 1) } });
    let rejection = parse_message(cancel.to_string().as_bytes(), "sqs-x", &guardrails()).unwrap_err();
    assert_eq!(rejection.to_string(), "cancel.reason: is 1025 bytes; at most 1024 are allowed");
    assert_eq!(rejection.job_id.as_deref(), Some("job-1"));
}

#[test]
fn a_rejection_lists_at_most_twenty_problems_then_how_many_more() {
    let env: Vec<Value> = (0..50).map(|i| json!({ "name": format!("{i}bad"), "value": "x" })).collect();
    let problems = parse(&message(json!({ "env": env })), &guardrails()).unwrap_err();
    assert_eq!(problems.len(), MAX_PROBLEMS + 1);
    assert!(problems[..MAX_PROBLEMS].iter().all(|p| p.starts_with("job.env[")), "{problems:?}");
    assert_eq!(problems[MAX_PROBLEMS], "job: 30 more problems are not listed (at most 20 are)");
}

#[test]
fn the_stored_job_has_no_null_members_and_records_written_with_them_still_read() {
    let job = accepted(json!({ "tolerations": [{ "key": "batch-only", "operator": "Exists" }] }));
    let stored = serde_json::to_value(&job).unwrap();
    fn nulls(value: &Value, path: &str, found: &mut Vec<String>) {
        match value {
            Value::Null => found.push(path.to_owned()),
            Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| nulls(v, &format!("{path}[{i}]"), found)),
            Value::Object(members) => members.iter().for_each(|(k, v)| nulls(v, &format!("{path}.{k}"), found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    nulls(&stored, "spec", &mut found);
    assert!(found.is_empty(), "null members: {found:?}");
    assert_eq!(serde_json::from_value::<Job>(stored.clone()).unwrap(), job);

    // A record written before: every absent option was `null`.
    let mut old = stored;
    for member in ["cpu_limit_millis", "priority_class_name", "service_account_name"] {
        old[member] = Value::Null;
    }
    old["tolerations"][0]["value"] = Value::Null;
    old["tolerations"][0]["effect"] = Value::Null;
    old["tolerations"][0]["toleration_seconds"] = Value::Null;
    assert_eq!(serde_json::from_value::<Job>(old).unwrap(), job);
}

/// A job valid yesterday, with every guarded field used.
fn yesterdays_job() -> Job {
    accepted(json!({
        "namespace": "etl",
        "image": "registry.example.com/team/report:4",
        "env": [{ "name": "P", "secret": { "name": "db", "key": "password" } }],
        "resources": { "cpu": "2", "memory": "2Gi", "cpuLimit": "3", "memoryLimit": "3Gi" },
        "timeoutSeconds": 7200,
        "retry": { "maxAttempts": 5 },
        "labels": { "team.example.com/report": "nightly" },
        "nodeSelector": { "node.kubernetes.io/instance-type": "m7g.xlarge" },
        "tolerations": [{ "key": "batch-only", "operator": "Exists", "effect": "NoSchedule" }],
        "priorityClassName": "batch-high",
        "serviceAccountName": "report-writer",
        "keepPodSeconds": 3600
    }))
}

fn recheck_problems(job: &Job, guardrails: &Guardrails) -> Vec<String> {
    match recheck(job, guardrails) {
        Ok(()) => Vec::new(),
        Err(rejection) => {
            assert_eq!(rejection.job_id.as_deref(), Some(job.id.as_str()));
            rejection.problems.iter().map(ToString::to_string).collect()
        }
    }
}

#[test]
fn a_stored_job_is_held_to_the_guardrails_in_force_now() {
    let job = yesterdays_job();
    assert_eq!(recheck(&job, &guardrails()), Ok(()), "unchanged guardrails: nothing to say");

    // The operator narrows the image prefixes and lowers the CPU ceiling.
    let today = Guardrails {
        image_prefixes: vec!["registry.example.com/platform/".into()],
        max_cpu_millis: 1_000,
        ..guardrails()
    };
    assert_eq!(
        recheck_problems(&job, &today),
        [
            "job.image: \"registry.example.com/team/report:4\" is no longer from an allowed registry; allowed \
             prefixes now: registry.example.com/platform/",
            "job.resources.cpu: \"2\" is no longer allowed: over the ceiling of 1 now in force",
            "job.resources.cpuLimit: \"3\" is no longer allowed: over the ceiling of 1 now in force",
        ]
    );

    // Everything else narrowed at once: every problem is named.
    let strict = Guardrails {
        namespaces: vec!["podbridge-jobs".into()],
        service_accounts: Vec::new(),
        allow_secret_refs: false,
        max_memory_bytes: 1 << 30,
        max_timeout_seconds: 3600,
        max_attempts: 3,
        max_keep_pod_seconds: 600,
        priority_classes: vec!["batch-low".into()],
        toleration_keys: Vec::new(),
        node_selector_keys: Vec::new(),
        label_prefixes: vec!["jobs.example.com".into()],
        ..guardrails()
    };
    let problems = recheck_problems(&job, &strict);
    let fields: Vec<&str> = problems.iter().map(|p| p.split(": ").next().unwrap()).collect();
    assert_eq!(
        fields,
        [
            "job.namespace",
            "job.env[0].secret",
            "job.resources.memory",
            "job.resources.memoryLimit",
            "job.timeoutSeconds",
            "job.retry.maxAttempts",
            "job.labels",
            "job.nodeSelector",
            "job.tolerations[0].key",
            "job.priorityClassName",
            "job.serviceAccountName",
            "job.keepPodSeconds",
        ]
    );
    assert!(problems.iter().all(|p| p.contains("no longer")), "{problems:#?}");
    assert!(problems.contains(&"job.namespace: \"etl\" is no longer allowed; allowed now: podbridge-jobs".to_owned()));
    assert!(problems.contains(&"job.retry.maxAttempts: 5 is no longer allowed; allowed now: 1 to 3".to_owned()));
}

#[test]
fn a_stored_job_accepted_under_the_old_rules_is_held_to_the_new_ones() {
    // Recorded before tolerations needed a key and labels an allowed prefix.
    let mut job = yesterdays_job();
    job.tolerations[0].key = None;
    job.labels.insert("app".into(), "web".into());
    job.image = "registry.example.com/team-evil/x".into();
    let problems = recheck_problems(&job, &guardrails());
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].starts_with("job.image: \"registry.example.com/team-evil/x\" is no longer from an allowed"));
    assert!(problems[1].starts_with("job.labels: key \"app\" is no longer allowed; allowed now: keys under"));
    assert!(problems[2].starts_with("job.tolerations[0].key: is required: a toleration without a key"));
}

#[test]
fn a_memory_increase_past_a_lowered_ceiling_is_reported() {
    let spec = json!({ "resources": { "memory": "2Gi" }, "retry": { "on": ["oom_killed"], "oomMemoryFactor": 2 } });
    let job = accepted(spec);
    let lowered = Guardrails { max_memory_bytes: 3 << 30, ..guardrails() };
    assert_eq!(recheck(&job, &lowered), Ok(()));
    let problems = recheck_problems(&job.with_memory_after(1), &lowered);
    assert_eq!(problems, ["job.resources.memory: \"4Gi\" is no longer allowed: over the ceiling of 3Gi now in force"]);
}

#[test]
fn guardrails_narrowed_to_a_senders_namespaces_keep_the_senders_order() {
    let all = Guardrails { namespaces: vec!["a".into(), "b".into(), "c".into()], ..guardrails() };
    let narrowed = all.for_namespaces(&["c".into(), "x".into(), "a".into(), "c".into()]);
    assert_eq!(narrowed.namespaces, ["c", "a"]);
    assert_eq!(Guardrails { namespaces: all.namespaces.clone(), ..narrowed.clone() }, all, "nothing else changes");
    assert_eq!(accepted_with(&narrowed, json!({})).namespace, "c", "the sender's first is the default");
    let problems = parse(&message(json!({ "namespace": "b" })), &narrowed).unwrap_err();
    assert_eq!(problems, ["job.namespace: \"b\" is not allowed; allowed: c, a"]);

    let nothing = all.for_namespaces(&["x".into()]);
    assert!(nothing.namespaces.is_empty());
    let problems = parse(&message(json!({})), &nothing).unwrap_err();
    assert_eq!(problems, ["job.namespace: no namespace is allowed here; allowed: none"]);
}

fn accepted_with(guardrails: &Guardrails, fields: Value) -> Job {
    parse(&message(fields), guardrails).unwrap()
}

#[test]
fn a_field_path_made_long_by_an_unknown_key_is_cut_short() {
    let key = "x".repeat(10_000);
    let body = json!({ "version": 1, "job": { "image": "registry.example.com/team/x", "retry": { key.clone(): 1 } } });
    let rejection = parse_message(body.to_string().as_bytes(), "sqs-x", &guardrails()).unwrap_err();
    let field = &rejection.problems[0].field;
    assert!(field.starts_with("job.retry.xxx") && field.ends_with("...") && field.len() <= 163, "{field}");
    assert!(rejection.problems[0].message.starts_with("unknown field"), "{}", rejection.problems[0].message);
}
