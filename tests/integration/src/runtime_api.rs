//! A local Lambda Runtime API, and a function binary run against it as Lambda runs it.
//!
//! Lambda starts a function's executable with `AWS_LAMBDA_RUNTIME_API=host:port` and a few
//! more variables in its environment, and serves it the Runtime API over HTTP: the
//! function's runtime (`lambda_runtime` here) long-polls `GET
//! /2018-06-01/runtime/invocation/next` for an event, posts the result to
//! `.../invocation/{id}/response` or `.../invocation/{id}/error`, and reports a failed
//! start to `/2018-06-01/runtime/init/error`. [`RuntimeApi`] serves that interface on a
//! loopback port, so a test or a benchmark runs the *built* binary exactly as Lambda does
//! (same `main`, same environment variables, same HTTP contract) and sees what Lambda
//! would see: the response body, or the error and its type. [`FunctionProcess`] starts the
//! binary with a Lambda-like environment, keeps its output for failure messages, and
//! kills it when dropped, so a failing test leaves no process behind.
//!
//! Written from the Runtime API reference
//! (<https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html>). Left out because
//! podbridge's functions do not use them: response streaming, SnapStart's `/restore`
//! paths, extensions, and enforcing the timeout (`Lambda-Runtime-Deadline-Ms` is sent, but
//! nothing stops a function that runs past it).

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

/// The version prefix of every Runtime API path.
pub const API_PREFIX: &str = "/2018-06-01/runtime";
/// The largest response Lambda accepts from a function invoked synchronously: 6 MB.
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;
/// The memory size the function is told it has (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`).
const MEMORY_MB: u32 = 256;
/// The function timeout that `Lambda-Runtime-Deadline-Ms` is computed from.
const FUNCTION_TIMEOUT: Duration = Duration::from_secs(60);
/// The account and region of the ARN the function is told it was invoked as.
const ARN_PREFIX: &str = "arn:aws:lambda:us-east-1:123456789012:function";

/// How an invocation ended, as the function reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `POST .../invocation/{id}/response`: the function's result, byte for byte.
    Response(Vec<u8>),
    /// `POST .../invocation/{id}/error`: the function failed, and Lambda would report
    /// the error to the caller (for an SQS event source: the whole batch comes back).
    Error(ErrorReport),
}

impl Outcome {
    /// The response as JSON.
    ///
    /// # Errors
    ///
    /// When the function reported an error, or its response is not JSON.
    pub fn json(&self) -> anyhow::Result<Value> {
        match self {
            Outcome::Response(body) => serde_json::from_slice(body)
                .with_context(|| format!("the response is not JSON: {:?}", String::from_utf8_lossy(body))),
            Outcome::Error(report) => {
                Err(anyhow!("the invocation failed ({:?}): {}", report.error_type, report.message()))
            }
        }
    }
}

/// An error a function reported, to `.../error` or `/init/error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReport {
    /// The `Lambda-Runtime-Function-Error-Type` header, when sent.
    pub error_type: Option<String>,
    /// The body: by convention `{"errorType": ..., "errorMessage": ...}`.
    pub body: Vec<u8>,
}

impl ErrorReport {
    /// The body's `errorMessage`, or the whole body when it has none.
    pub fn message(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|body| body["errorMessage"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned())
    }
}

/// An event waiting for the function's next poll.
struct Queued {
    request_id: String,
    body: Vec<u8>,
}

struct Shared {
    function_name: String,
    queue: mpsc::UnboundedSender<Queued>,
    /// Behind an async lock: a `/next` poll holds it while it waits for an event.
    next: tokio::sync::Mutex<mpsc::UnboundedReceiver<Queued>>,
    /// Invocations handed out and not yet answered, by request id.
    in_flight: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    /// When the first `/next` poll arrived: the end of the function's cold start.
    first_poll: watch::Sender<Option<Instant>>,
    polls: AtomicUsize,
    init_error: Mutex<Option<ErrorReport>>,
    /// Set when the [`RuntimeApi`] is dropped, to end polls still waiting.
    closed: watch::Sender<bool>,
}

/// A Lambda Runtime API on `127.0.0.1` and a port of its own, for one function.
///
/// Events queued with [`RuntimeApi::enqueue`] (or [`FunctionProcess::invoke`]) are handed
/// out, in order, to the function's `GET .../invocation/next` polls, each with a new request
/// id; the invocation completes when the function posts the response or error for that id.
/// One function process per `RuntimeApi`, as one execution environment has one runtime.
pub struct RuntimeApi {
    address: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RuntimeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeApi")
            .field("address", &self.address)
            .field("function_name", &self.shared.function_name)
            .finish_non_exhaustive()
    }
}

impl RuntimeApi {
    /// Serves the Runtime API for a function called `function_name`.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub async fn start(function_name: &str) -> std::io::Result<RuntimeApi> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (queue, next) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            function_name: function_name.to_owned(),
            queue,
            next: tokio::sync::Mutex::new(next),
            in_flight: Mutex::new(HashMap::new()),
            first_poll: watch::Sender::new(None),
            polls: AtomicUsize::new(0),
            init_error: Mutex::new(None),
            closed: watch::Sender::new(false),
        });
        let app = Router::new()
            .route(&format!("{API_PREFIX}/invocation/next"), get(next_invocation))
            .route(&format!("{API_PREFIX}/invocation/{{id}}/response"), post(invocation_response))
            .route(&format!("{API_PREFIX}/invocation/{{id}}/error"), post(invocation_error))
            .route(&format!("{API_PREFIX}/init/error"), post(init_error))
            // axum's default limit is 2 MB; Lambda's is 6 MB, checked in the handler so the
            // function gets Lambda's answer rather than axum's.
            .layer(DefaultBodyLimit::disable())
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            // Ends only with an accept error; nothing to report it to but the test's output.
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("runtime API: the server stopped: {error}");
            }
        });
        Ok(RuntimeApi { address, shared, server })
    }

    /// The value of `AWS_LAMBDA_RUNTIME_API`: `127.0.0.1:PORT`, no scheme, as Lambda sets it.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The variables Lambda puts in every function's environment, pointing at this API.
    pub fn lambda_environment(&self) -> Vec<(String, String)> {
        lambda_environment(&self.shared.function_name, &self.address.to_string())
    }

    /// Queues `event` for the function's next poll; returns its request id and where
    /// its outcome will arrive.
    pub fn enqueue(&self, event: &Value) -> (String, oneshot::Receiver<Outcome>) {
        let request_id = request_id();
        let (done, outcome) = oneshot::channel();
        self.shared.in_flight.lock().unwrap().insert(request_id.clone(), done);
        let body = serde_json::to_vec(event).expect("a serde_json::Value always serializes");
        // The receiver lives in `shared`, as long as `self`: the send cannot fail.
        let _ = self.shared.queue.send(Queued { request_id: request_id.clone(), body });
        (request_id, outcome)
    }

    /// Waits up to `timeout` for the function's first `/next` poll; returns when it
    /// arrived, or `None`. A runtime polls once its initialisation is done, so the time
    /// from starting the process to this instant is its cold start.
    pub async fn first_poll(&self, timeout: Duration) -> Option<Instant> {
        let mut first = self.shared.first_poll.subscribe();
        match tokio::time::timeout(timeout, first.wait_for(Option::is_some)).await {
            Ok(Ok(instant)) => *instant,
            _ => None,
        }
    }

    /// How many `/next` polls have arrived: one more than the invocations the function
    /// has taken when it is waiting for work.
    pub fn polls(&self) -> usize {
        self.shared.polls.load(Ordering::SeqCst)
    }

    /// What the function posted to `/init/error`, if anything.
    pub fn init_error(&self) -> Option<ErrorReport> {
        self.shared.init_error.lock().unwrap().clone()
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        // Stop accepting, and end the polls still waiting so their connections close.
        self.shared.closed.send_replace(true);
        self.server.abort();
    }
}

async fn next_invocation(State(shared): State<Arc<Shared>>) -> Response {
    let arrived = Instant::now();
    shared.first_poll.send_if_modified(|first| {
        if first.is_some() {
            return false;
        }
        *first = Some(arrived);
        true
    });
    shared.polls.fetch_add(1, Ordering::SeqCst);
    let mut closed = shared.closed.subscribe();
    let queued = tokio::select! {
        queued = async { shared.next.lock().await.recv().await } => queued,
        _ = closed.wait_for(|closed| *closed) => None,
    };
    let Some(Queued { request_id, body }) = queued else {
        return (StatusCode::GONE, "the runtime API is shutting down").into_response();
    };
    let deadline = SystemTime::now() + FUNCTION_TIMEOUT;
    let deadline_ms = deadline.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    let mut response = Response::new(body.into());
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        headers.insert(name, HeaderValue::try_from(value).expect("ids, numbers and ARNs are valid header values"));
    };
    set("lambda-runtime-aws-request-id", request_id);
    set("lambda-runtime-deadline-ms", deadline_ms.to_string());
    set("lambda-runtime-invoked-function-arn", format!("{ARN_PREFIX}:{}", shared.function_name));
    set("lambda-runtime-trace-id", trace_id());
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn invocation_response(State(shared): State<Arc<Shared>>, UrlPath(id): UrlPath<String>, body: Bytes) -> Response {
    if body.len() > MAX_RESPONSE_BYTES {
        // What Lambda answers; the invocation then fails with a function error.
        complete(&shared, &id, Outcome::Error(too_large(body.len())));
        return api_error(StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge", "the response is over 6 MB");
    }
    complete(&shared, &id, Outcome::Response(body.to_vec()))
}

async fn invocation_error(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    complete(&shared, &id, Outcome::Error(error_report(&headers, &body)))
}

async fn init_error(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    *shared.init_error.lock().unwrap() = Some(error_report(&headers, &body));
    accepted()
}

fn complete(shared: &Shared, id: &str, outcome: Outcome) -> Response {
    let Some(done) = shared.in_flight.lock().unwrap().remove(id) else {
        // An unknown id, or one already answered: Lambda's answer to both.
        return api_error(StatusCode::BAD_REQUEST, "InvalidRequestID", "invalid request ID");
    };
    // The caller may have stopped waiting (a timeout); the function still did its part.
    let _ = done.send(outcome);
    accepted()
}

fn error_report(headers: &HeaderMap, body: &[u8]) -> ErrorReport {
    let error_type =
        headers.get("lambda-runtime-function-error-type").and_then(|value| value.to_str().ok()).map(str::to_owned);
    ErrorReport { error_type, body: body.to_vec() }
}

fn too_large(size: usize) -> ErrorReport {
    let body = json!({
        "errorType": "Function.ResponseSizeTooLarge",
        "errorMessage": format!("Response payload size ({size} bytes) exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."),
    });
    ErrorReport { error_type: Some("Function.ResponseSizeTooLarge".into()), body: body.to_string().into_bytes() }
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, axum::Json(json!({ "status": "OK" }))).into_response()
}

fn api_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    (status, axum::Json(json!({ "errorType": error_type, "errorMessage": message }))).into_response()
}

/// A request id in UUID form, unique within this process and across runs.
fn request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    let hex = format!("{:020x}{:04x}{:08x}", nanos & ((1 << 80) - 1), std::process::id() & 0xffff, n & 0xffff_ffff);
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// An X-Ray trace header in the format Lambda sends.
fn trace_id() -> String {
    let id = request_id().replace('-', "");
    let epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    format!("Root=1-{epoch:08x}-{};Parent={};Sampled=0", &id[8..32], &id[16..32])
}

/// A function binary running against a [`RuntimeApi`]; killed when dropped.
///
/// The process gets exactly the environment it is given plus the Runtime API's
/// variables, nothing inherited: a developer's `AWS_PROFILE` or `PODBRIDGE_*` must not
/// change what the test sees, as nothing but the function's configuration reaches a
/// function in Lambda. Its stdout and stderr (the function's logs) are collected, for
/// failure messages.
pub struct FunctionProcess {
    child: Child,
    started: Instant,
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    exit: Option<ExitStatus>,
}

impl std::fmt::Debug for FunctionProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionProcess")
            .field("pid", &self.child.id())
            .field("exit", &self.exit)
            .finish_non_exhaustive()
    }
}

impl FunctionProcess {
    /// Starts `program` with `env` and `api`'s Lambda variables.
    ///
    /// # Errors
    ///
    /// When the program cannot be started.
    pub fn spawn(program: &Path, api: &RuntimeApi, env: &[(String, String)]) -> anyhow::Result<FunctionProcess> {
        Self::spawn_with(program, api.lambda_environment(), env)
    }

    /// Starts `program` with `env` and the Lambda variables `lambda_env` (see
    /// [`lambda_environment`]), for a Runtime API served by another program.
    ///
    /// # Errors
    ///
    /// When the program cannot be started.
    pub fn spawn_with(
        program: &Path,
        lambda_env: Vec<(String, String)>,
        env: &[(String, String)],
    ) -> anyhow::Result<FunctionProcess> {
        let mut command = Command::new(program);
        command
            .env_clear()
            .envs(lambda_env)
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command.spawn().with_context(|| format!("cannot start {}", program.display()))?;
        let output = Arc::new(Mutex::new(Vec::new()));
        // Threads drain both pipes, so a chatty function never blocks on a full pipe.
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            readers.push(drain(stdout, Arc::clone(&output)));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.push(drain(stderr, Arc::clone(&output)));
        }
        Ok(FunctionProcess { child, started, output, readers, exit: None })
    }

    /// When the process was started (just before `exec`).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything the function wrote so far, stdout and stderr interleaved.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// The exit status, once the process has ended.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Waits up to `timeout` for the process to end by itself.
    pub async fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for the function's first poll of `api`; returns when it arrived (the time
    /// since [`FunctionProcess::started`] is the cold start).
    ///
    /// # Errors
    ///
    /// When the process exits first, or `timeout` passes first; the error carries the
    /// function's output.
    pub async fn first_poll(&mut self, api: &RuntimeApi, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            // The instant is taken by the server when the poll arrives: waiting in steps
            // does not change it.
            if let Some(arrived) = api.first_poll(Duration::from_millis(20)).await {
                return Ok(arrived);
            }
            if let Some(status) = self.exit_status() {
                bail!("the function exited ({status}) before polling for an event; its output:\n{}", self.output());
            }
            if Instant::now() >= deadline {
                bail!("the function did not poll for an event within {timeout:?}; its output:\n{}", self.output());
            }
        }
    }

    /// Invokes the function through `api` (which it must be polling) and waits for the outcome.
    ///
    /// # Errors
    ///
    /// When the process exits first, or `timeout` passes first; the error carries the
    /// function's output.
    pub async fn invoke(&mut self, api: &RuntimeApi, event: &Value, timeout: Duration) -> anyhow::Result<Outcome> {
        let (request_id, mut outcome) = api.enqueue(event);
        let deadline = Instant::now() + timeout;
        loop {
            // Waits in short steps, so a function that dies is noticed at once rather than
            // after the whole timeout.
            match tokio::time::timeout(Duration::from_millis(20), &mut outcome).await {
                Ok(Ok(outcome)) => return Ok(outcome),
                Ok(Err(_)) => bail!("invocation {request_id}: the runtime API dropped it"),
                Err(_) => {}
            }
            if let Some(status) = self.exit_status() {
                bail!("the function exited ({status}) during invocation {request_id}; its output:\n{}", self.output());
            }
            if Instant::now() >= deadline {
                api.shared.in_flight.lock().unwrap().remove(&request_id);
                bail!(
                    "invocation {request_id}: no response or error within {timeout:?}; the function's output:\n{}",
                    self.output()
                );
            }
        }
    }

    /// The process's peak resident set size so far (`VmHWM` in `/proc/PID/status`), in
    /// bytes; `None` once it has exited or where `/proc` does not exist.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kib = status.lines().find_map(|line| line.strip_prefix("VmHWM:"))?.split_whitespace().next()?;
        kib.parse::<u64>().ok().map(|kib| kib * 1024)
    }

    /// Kills the process (if it still runs) and reaps it. Also done on drop.
    pub fn stop(&mut self) {
        if self.exit_status().is_none() {
            // SIGKILL, as Lambda ends an execution environment; the kill fails only when
            // the process has already exited, which `wait` then collects.
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
        for reader in self.readers.drain(..) {
            // The pipes close with the process, so the readers end.
            let _ = reader.join();
        }
    }
}

/// Copies everything `pipe` yields into `output`, until the pipe closes.
fn drain(mut pipe: impl Read + Send + 'static, output: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 8192];
        while let Ok(n @ 1..) = pipe.read(&mut buffer) {
            output.lock().unwrap().extend_from_slice(&buffer[..n]);
        }
    })
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The variables Lambda puts in every function's environment that a runtime reads
/// (<https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime>).
/// `lambda_runtime` panics at start without the function name, memory size and version.
/// `runtime_api` is `host:port`, as Lambda sets it (or a base URL, as cargo-lambda's
/// emulator wants).
pub fn lambda_environment(name: &str, runtime_api: &str) -> Vec<(String, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", name.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", MEMORY_MB.to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/21/[$LATEST]0123456789abcdef0123456789abcdef".into()),
        ("_HANDLER", "bootstrap".into()),
        ("LAMBDA_TASK_ROOT", "/var/task".into()),
        ("TZ", ":UTC".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Reads the event fixture `tests/lambda/NAME` (shared by the tests, the benchmarks and
/// the emulator-backed tests).
///
/// # Panics
///
/// When the file is missing or not JSON.
pub fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lambda").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Gives the job of every record of an SQS event a unique id ([`crate::unique_name`] of
/// its id), so that a rerun against a long-lived stack (`make stack`) never meets the
/// pods or records of an earlier run. Returns the new job ids by message id; records whose
/// body is not a job with an id are left as they are.
pub fn unique_job_ids(event: &mut Value) -> HashMap<String, String> {
    let mut ids = HashMap::new();
    for record in event["Records"].as_array_mut().into_iter().flatten() {
        let Some(mut body) = record["body"].as_str().and_then(|body| serde_json::from_str::<Value>(body).ok()) else {
            continue;
        };
        let Some(id) = body["job"]["id"].as_str().map(crate::unique_name) else { continue };
        body["job"]["id"] = json!(id);
        record["body"] = json!(body.to_string());
        if let Some(message_id) = record["messageId"].as_str() {
            ids.insert(message_id.to_owned(), id);
        }
    }
    ids
}

/// The path of binary `bin` of the workspace package in directory `package_dir`
/// (relative to the workspace root), freshly built.
///
/// Cargo gives a binary's path only to the tests and benchmarks of its own package
/// (`CARGO_BIN_EXE_<name>`), and never builds a dependency's binaries, so this asks
/// cargo itself: `cargo build --workspace --tests --bin BIN`, with the profile of this
/// test (release when built without debug assertions). Asking cargo, rather than looking
/// for `target/debug/BIN`, guarantees the binary is built from the current source and
/// never a stale leftover. `--workspace --tests` resolves features exactly as `cargo test
/// --workspace` does, so under `make test` every artifact is already fresh and the call
/// takes a fraction of a second; `-p PACKAGE` alone would unify features differently and
/// rebuild tokio, hyper, kube and the AWS SDK a second time (measured: 53 crates, minutes
/// on a fresh 2-core machine). Cargo holds its build lock only while it compiles, not
/// while tests run, so the nested call does not wait for the cargo that runs this test.
///
/// `PODBRIDGE_<BIN>_BIN` (e.g. `PODBRIDGE_DISPATCH_BIN=target/lambda/dispatch/bootstrap`)
/// names a prebuilt binary instead, to run the tests against the artifact to be deployed.
///
/// # Panics
///
/// When cargo fails or reports no such binary, with cargo's output.
pub fn cargo_binary(package_dir: &str, bin: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let override_var = format!("PODBRIDGE_{}_BIN", bin.to_uppercase().replace('-', "_"));
    if let Some(path) = std::env::var_os(&override_var) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{override_var}={} is not a file", path.display());
        return path;
    }
    // One build per binary and test process, however many tests ask at once.
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = built.get(bin) {
        return path.clone();
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // `CARGO` is the cargo that runs this test; a plain `cargo` is the fallback.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command.current_dir(&workspace).args(["build", "--workspace", "--tests", "--bin", bin]);
    command.arg("--message-format=json-render-diagnostics");
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let output = command.output().unwrap_or_else(|error| panic!("cannot run {cargo:?} to build {bin}: {error}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "`cargo build --bin {bin}` failed ({}):\n{stderr}", output.status);
    let manifest = workspace.join(package_dir).join("Cargo.toml");
    let path = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact" && message["profile"]["test"] == false)
        .filter(|message| message["target"]["name"] == bin && message["target"]["kind"] == json!(["bin"]))
        .filter(|message| {
            // Cargo reports the manifest canonicalised; `workspace` holds `..`.
            let reported = message["manifest_path"].as_str().map(Path::new);
            reported.is_some_and(|reported| Some(reported.to_path_buf()) == manifest.canonicalize().ok())
        })
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo built no binary {bin} of {}:\n{stderr}", manifest.display()));
    built.insert(bin.to_owned(), path.clone());
    path
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Sends one HTTP/1.1 request and returns the status line, headers and body, lowercased.
    async fn http(address: SocketAddr, method: &str, path: &str, body: &str) -> String {
        http_with(address, method, path, "", body).await
    }

    /// [`http`] with `extra` header lines, each ending in `\r\n`.
    async fn http_with(address: SocketAddr, method: &str, path: &str, extra: &str, body: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let length = body.len();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: {address}\r\n{extra}content-length: {length}\r\nconnection: close\r\n\r\n{body}"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response.to_lowercase()
    }

    #[tokio::test]
    async fn an_invocation_goes_out_with_lambdas_headers_and_completes_with_its_own_request_id_only() {
        let api = RuntimeApi::start("dispatch").await.unwrap();
        let (request_id, outcome) = api.enqueue(&json!({ "Records": [] }));

        let next = http(api.address(), "GET", &format!("{API_PREFIX}/invocation/next"), "").await;
        let wrong = http(api.address(), "POST", &format!("{API_PREFIX}/invocation/nope/response"), "{}").await;
        let right =
            http(api.address(), "POST", &format!("{API_PREFIX}/invocation/{request_id}/response"), "{\"ok\":1}").await;
        let again = http(api.address(), "POST", &format!("{API_PREFIX}/invocation/{request_id}/response"), "{}").await;

        assert!(next.starts_with("http/1.1 200"), "{next}");
        for header in [
            format!("lambda-runtime-aws-request-id: {request_id}"),
            "lambda-runtime-deadline-ms: ".into(),
            "lambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:123456789012:function:dispatch".into(),
            "lambda-runtime-trace-id: root=1-".into(),
        ] {
            assert!(next.contains(&header), "{header} in {next}");
        }
        assert!(next.ends_with("{\"records\":[]}"), "{next}");
        assert!(wrong.starts_with("http/1.1 400") && wrong.contains("invalidrequestid"), "{wrong}");
        assert!(right.starts_with("http/1.1 202"), "{right}");
        assert!(again.starts_with("http/1.1 400"), "an invocation completes once: {again}");
        assert_eq!(outcome.await.unwrap(), Outcome::Response(b"{\"ok\":1}".to_vec()));
        assert_eq!(api.polls(), 1);
    }

    #[tokio::test]
    async fn errors_keep_their_type_and_message() {
        let api = RuntimeApi::start("dispatch").await.unwrap();
        let (request_id, outcome) = api.enqueue(&json!({}));
        http(api.address(), "GET", &format!("{API_PREFIX}/invocation/next"), "").await;
        let body = r#"{"errorType":"Boom","errorMessage":"it broke"}"#;

        let error_type = "lambda-runtime-function-error-type: Boom\r\n";
        let path = format!("{API_PREFIX}/invocation/{request_id}/error");
        let posted = http_with(api.address(), "POST", &path, error_type, body).await;
        assert!(posted.starts_with("http/1.1 202"), "{posted}");
        http(api.address(), "POST", &format!("{API_PREFIX}/init/error"), body).await;

        let Outcome::Error(report) = outcome.await.unwrap() else { panic!("expected an error") };
        assert_eq!((report.error_type.as_deref(), report.message().as_str()), (Some("Boom"), "it broke"));
        assert_eq!(api.init_error().map(|report| report.message()).as_deref(), Some("it broke"));
    }
}
