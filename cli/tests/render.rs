//! `podbridge render` run as a user runs it: the built binary, a message file or stdin,
//! the PODBRIDGE_* environment, and what comes out on stdout, stderr and the exit code.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

/// The guardrails the golden pods in `core/tests/golden/` were built with.
const DEPLOYMENT: [(&str, &str); 8] = [
    ("PODBRIDGE_NAMESPACES", "podbridge-jobs"),
    ("PODBRIDGE_IMAGE_PREFIXES", "registry.example.com/"),
    ("PODBRIDGE_SERVICE_ACCOUNTS", "report-writer"),
    ("PODBRIDGE_ALLOW_SECRET_REFS", "true"),
    ("PODBRIDGE_PRIORITY_CLASSES", "batch-low"),
    ("PODBRIDGE_TOLERATION_KEYS", "batch-only"),
    ("PODBRIDGE_NODE_SELECTOR_KEYS", "node.kubernetes.io/instance-type"),
    ("PODBRIDGE_LABEL_PREFIXES", "jobs.example.com/"),
];

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn example(name: &str) -> String {
    repo_file(&format!("examples/{name}")).display().to_string()
}

/// Runs `podbridge ARGS` with exactly the PODBRIDGE_* variables given (none are
/// inherited from the test's environment), feeding `stdin` when given.
fn podbridge(args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_podbridge"));
    command.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PODBRIDGE_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    let mut child = command.spawn().expect("the podbridge binary starts");
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or_default()).unwrap();
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a successful run and returns its stdout.
fn success(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(0), "stderr:\n{}", text(&output.stderr));
    text(&output.stdout)
}

fn golden(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo_file(&format!("core/tests/golden/{name}"))).unwrap()).unwrap()
}

#[test]
fn given_the_full_example_when_rendered_then_yaml_and_json_are_the_same_pod_as_dispatch_builds() {
    let file = example("job-full.json");
    let yaml = success(&podbridge(&["render", &file], &DEPLOYMENT, None));
    let json = podbridge(&["render", &file, "--json"], &DEPLOYMENT, None);
    assert_eq!(text(&json.stderr), "", "a configured deployment needs no note");
    let json = success(&json);

    assert!(yaml.starts_with("apiVersion: v1\nkind: Pod\n"), "kubectl needs apiVersion and kind:\n{yaml}");
    let from_yaml: Pod = serde_norway::from_str(&yaml).unwrap();
    let from_json: Pod = serde_json::from_str(&json).unwrap();
    assert_eq!(from_yaml, from_json);
    assert_eq!(from_json.metadata.name.as_deref(), Some("nightly-report-2026-11-21-1"));
    // The same guardrails as the golden files, so exactly the pod dispatch creates.
    assert_eq!(serde_json::to_value(&from_json).unwrap(), golden("job-full.attempt-1.pod.json"));
}

#[test]
fn given_attempt_2_when_rendered_then_the_retry_pod_with_its_own_name_is_printed() {
    let json =
        success(&podbridge(&["render", &example("job-full.json"), "--attempt", "2", "--json"], &DEPLOYMENT, None));
    let pod: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(pod, golden("job-full.attempt-2.pod.json"));
    assert_eq!(pod["metadata"]["name"], "nightly-report-2026-11-21-2");
}

#[test]
fn given_flags_instead_of_variables_when_rendered_then_the_flags_are_the_guardrails() {
    let args = [
        "render",
        &example("job-full.json"),
        "--json",
        "--namespace-allowed",
        "podbridge-jobs",
        "--image-prefix",
        "registry.example.com/",
        "--service-account",
        "report-writer",
        "--allow-secret-refs",
    ];
    // The allow-lists the example needs have no flags: they come from the variables.
    let output = podbridge(&args, &DEPLOYMENT[4..], None);
    assert_eq!(text(&output.stderr), "");
    let pod: Value = serde_json::from_str(&success(&output)).unwrap();
    assert_eq!(pod, golden("job-full.attempt-1.pod.json"));
}

#[test]
fn given_no_deployment_environment_when_rendered_then_local_guardrails_are_assumed_in_a_one_line_note() {
    let output = podbridge(&["render", &example("job-minimal.json")], &[], None);
    let yaml = success(&output);
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("note: ") && stderr.contains("PODBRIDGE_NAMESPACES=podbridge-jobs"), "{stderr}");
    assert!(stderr.contains("PODBRIDGE_IMAGE_PREFIXES=*"), "{stderr}");
    let pod: Pod = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(pod.metadata.name.as_deref(), Some("hello-2026-11-21-1"));
    assert_eq!(pod.metadata.namespace.as_deref(), Some("podbridge-jobs"));
}

#[test]
fn given_a_bad_message_when_rendered_then_every_problem_is_on_stderr_and_the_exit_code_is_2() {
    let message = json!({
        "version": 1,
        "job": {
            "id": "bad-1",
            "namespace": "kube-system",
            "image": "docker.io/library/busybox",
            "resources": { "memory": "64Gi" },
            "timeoutSeconds": 0
        }
    });
    let output = podbridge(&["render", "-"], &DEPLOYMENT, Some(message.to_string().as_bytes()));
    assert_eq!(output.status.code(), Some(2), "stderr:\n{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "", "no pod for a rejected message");
    let stderr = text(&output.stderr);
    for field in ["job.namespace", "job.image", "job.resources.memory", "job.timeoutSeconds"] {
        assert!(stderr.lines().any(|line| line.starts_with(&format!("{field}: "))), "no line for {field}:\n{stderr}");
    }
    assert!(stderr.contains("allowed prefixes: registry.example.com/"), "{stderr}");
    assert!(stderr.lines().last().unwrap().starts_with("rejected: ") && stderr.contains("\"bad-1\""), "{stderr}");

    let privileged = json!({ "version": 1, "job": { "image": "registry.example.com/x", "privileged": true } });
    let output = podbridge(&["render", "-"], &DEPLOYMENT, Some(privileged.to_string().as_bytes()));
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).starts_with("job.privileged: unknown field `privileged`"), "{}", text(&output.stderr));
}

#[test]
fn given_a_cancel_message_when_rendered_then_nothing_is_printed_and_it_succeeds() {
    let output = podbridge(&["render", &example("cancel.json")], &[], None);
    assert_eq!(success(&output), "");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("nightly-report-2026-11-21") && stderr.contains("creates no pod"), "{stderr}");
}

#[test]
fn given_a_job_without_id_on_stdin_when_rendered_then_it_is_named_after_the_message_id() {
    let message = br#"{"version": 1, "job": {"image": "registry.example.com/batch/hello:1.0"}}"#;
    let output = podbridge(&["render", "-", "--json", "--message-id", "abc-123"], &DEPLOYMENT, Some(message));
    let pod: Value = serde_json::from_str(&success(&output)).unwrap();
    assert_eq!(pod["metadata"]["name"], "sqs-abc-123-1");
    assert_eq!(pod["metadata"]["labels"]["podbridge.dev/job-id"], "sqs-abc-123");
    assert!(text(&output.stderr).contains("the job has no id"), "{}", text(&output.stderr));
}

#[test]
fn given_a_wrong_command_line_or_environment_then_the_exit_code_says_which() {
    let minimal = example("job-minimal.json");
    let code = |args: &[&str], env: &[(&str, &str)]| podbridge(args, env, None);

    // 64, not clap's 2: a script must be able to tell a rejected message from a typo.
    assert_eq!(code(&["render"], &[]).status.code(), Some(64));
    assert_eq!(code(&["render", &minimal, "--attempt", "0"], &[]).status.code(), Some(64));
    assert_eq!(code(&["render", &minimal, "--no-such-flag"], &[]).status.code(), Some(64));

    let bad_variable = code(&["render", &minimal], &[("PODBRIDGE_MAX_MEMORY", "lots")]);
    assert_eq!(bad_variable.status.code(), Some(1));
    assert!(text(&bad_variable.stderr).contains("PODBRIDGE_MAX_MEMORY"), "{}", text(&bad_variable.stderr));

    let missing = code(&["render", "no-such-file.json"], &[]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("no-such-file.json"), "{}", text(&missing.stderr));

    // The minimal job may run 3 times; a fourth pod is never created.
    let past = code(&["render", &minimal, "--attempt", "4"], &[]);
    assert_eq!(past.status.code(), Some(1));
    assert!(text(&past.stderr).contains("retry.maxAttempts is 3"), "{}", text(&past.stderr));
}

#[test]
fn help_names_every_flag_the_variables_and_the_exit_codes() {
    let help = success(&podbridge(&["render", "--help"], &[], None));
    for needle in [
        "--attempt",
        "--json",
        "--message-id",
        "--namespace-allowed",
        "--image-prefix",
        "--service-account",
        "--allow-secret-refs",
        "PODBRIDGE_NAMESPACES",
        "kubectl apply --dry-run=server",
        "Exit codes",
    ] {
        assert!(help.contains(needle), "render --help does not mention {needle}:\n{help}");
    }
    assert!(success(&podbridge(&["--help"], &[], None)).contains("render"));
}

#[test]
fn given_a_rendered_pod_when_kubectl_applies_it_with_server_dry_run_then_the_api_server_accepts_it() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sim = runtime
        .block_on(kube_sim::KubeSim::start("127.0.0.1:0".parse().unwrap(), kube_sim::SimConfig::default()))
        .expect("kube-sim starts");
    let dir = std::env::temp_dir().join(format!("podbridge-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();

    let yaml = success(&podbridge(&["render", &example("job-full.json")], &DEPLOYMENT, None));
    // kube-sim serves no OpenAPI document, hence --validate=false (see docs/ARCHITECTURE.md).
    let mut kubectl = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(["apply", "--dry-run=server", "--validate=false", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl must be on PATH (Debian package kubernetes-client)");
    kubectl.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let output = kubectl.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    assert!(output.status.success(), "kubectl apply failed: {}", text(&output.stderr));
    assert_eq!(text(&output.stdout).trim(), "pod/nightly-report-2026-11-21-1 created (server dry run)");
    assert!(sim.created_pods().is_empty(), "a dry run creates nothing");
}
