//! `podbridge console`: the operator console in the browser, served by the CLI against
//! the same deployment as the other commands (the same flags and environment).
//!
//! Pages are rendered on the server (axum, askama templates) from the job table and the
//! queue table; a small script (`assets/console.js`) keeps them live: it listens to
//! `/events` (server-sent events), and when the active jobs change it fetches the page
//! again and swaps its content, without a reload. The chart is uPlot, embedded like
//! every other asset: nothing is fetched from the network at run time.
//!
//! Safe by default: it listens on loopback only unless `--listen` says otherwise, it
//! answers only requests addressed to the host it serves (no DNS rebinding), every page
//! carries a strict Content-Security-Policy (scripts and styles from itself only, no
//! inline script), and an action (cancel, retry) is taken only from a form of its own:
//! the form's token must match and a cross-site origin is refused. `--read-only` offers
//! no action at all. Cancel and retry go the way `podbridge cancel` and `podbridge
//! retry` go: a cancel message on the job queue, a Retry Job event on the bus.

mod data;
mod pages;

use std::convert::Infallible;
use std::hash::{Hash as _, Hasher as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures::Stream;
use jiff::Timestamp;
use podbridge::store::JobStore;
use podbridge_core::record::JobRecord;
use podbridge_core::validate::is_valid_job_id;
use serde::Deserialize;
use tracing::{info, warn};

use crate::connect::{self, Aws, Target};
use crate::output;
use pages::{Can, Page};

/// The port `podbridge console` listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 8077;
/// How often the live updates look for changed jobs.
const LIVE_EVERY: Duration = Duration::from_secs(2);

const EXAMPLES: &str = "\
Examples:
  podbridge console                          # http://127.0.0.1:8077, against PODBRIDGE_TABLE
  podbridge console --port 9000 --read-only  # look, but cancel and retry nothing
  source .podbridge-dev/env && podbridge console --port 8078   # against `podbridge dev`'s stack
                                             # (which serves one itself: $PODBRIDGE_CONSOLE_URL)

Exit codes: 0 stopped by Ctrl-C, 1 error (a missing setting, the port taken), 64 wrong command line.";

/// Serve the operator console in the browser.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Serve the operator console: an overview (jobs by state, failures by class, a chart of jobs \
        over time, stuck jobs, waiting jobs per queue), a filterable job list, each job's history and last \
        log lines, the queues with their waiting jobs in order, live as states change, with cancel and retry.\n\n\
        It reads the deployment the other commands read (PODBRIDGE_TABLE, PODBRIDGE_QUEUE_TABLE, and \
        AWS_ENDPOINT_URL for a local stack); cancel needs PODBRIDGE_QUEUE_URL and retry the event bus, as \
        `podbridge cancel` and `podbridge retry` do. Active jobs come from the active-jobs index; ended jobs \
        from a Scan of the table filtered by time, made at most once a minute per window.\n\n\
        It listens on 127.0.0.1 unless --listen names another address, answers only requests addressed to \
        it, and takes actions only from its own pages.",
    after_help = EXAMPLES
)]
pub struct Args {
    /// The port to listen on (0: any free port).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_PORT)]
    port: u16,
    /// The address to listen on. Anything but loopback lets others on the network reach
    /// the console (and, without --read-only, cancel and retry jobs).
    #[arg(long, value_name = "ADDRESS", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    listen: IpAddr,
    /// A host name the console answers to besides its address (and `localhost` on
    /// loopback): the name others reach it by with --listen. Repeat for more. Requests
    /// addressed to any other name are refused (no DNS rebinding).
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// Offer no action: no cancel, no retry.
    #[arg(long)]
    read_only: bool,
    /// A job queued (not waiting for room) or setting up for longer than this is shown
    /// as stuck (`30m`, `2h`).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = output::duration)]
    stuck_after: Duration,
    #[command(flatten)]
    connect: connect::Flags,
}

/// Runs `podbridge console` until Ctrl-C.
pub async fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let target = Target::from_env(&args.connect);
    let aws = target.connect().await?;
    let options = Options { read_only: args.read_only, stuck_after: args.stuck_after };
    let console = Console::new(&target, aws, options)?;
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.listen, args.port)).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {}:{}: {e} (choose another with --port)", args.listen, args.port)
    })?;
    let address = listener.local_addr()?;
    eprintln!("podbridge console: http://{address} (Ctrl-C stops it)");
    if !address.ip().is_loopback() && !args.read_only {
        eprintln!(
            "warning: the console listens on {address} with actions enabled: anyone who can reach it can cancel \
             and retry jobs (--read-only offers none)"
        );
    }
    serve(listener, console, &args.allow_hosts, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// What a console may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub read_only: bool,
    pub stuck_after: Duration,
}

/// One console: the deployment it reads and acts on, and its own secrets.
#[derive(Debug)]
pub struct Console {
    jobs: data::Jobs,
    aws: Aws,
    queue_table: Option<String>,
    queue_url: Option<String>,
    bus: String,
    place: String,
    options: Options,
    /// The token every form of this process carries; a request without it changes nothing.
    csrf: String,
    /// Set when the server stops: the live streams end, so the server can.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl Console {
    /// A console on `target`'s deployment (its job table is required).
    pub fn new(target: &Target, aws: Aws, options: Options) -> anyhow::Result<Arc<Console>> {
        let table = target.table()?.to_owned();
        let store = aws.store(&table, target.queue_table_if_set());
        let token: [u8; 32] = rand::random();
        Ok(Arc::new(Console {
            jobs: data::Jobs::new(store),
            place: format!("table {table} · {}", aws.place()),
            aws,
            queue_table: target.queue_table_if_set().map(str::to_owned),
            queue_url: target.queue_url().ok().map(str::to_owned),
            bus: target.bus().to_owned(),
            options,
            csrf: token.iter().map(|b| format!("{b:02x}")).collect(),
            stopping: tokio::sync::watch::Sender::new(false),
        }))
    }

    /// What a page shows around its content. `fingerprint` is that of the active jobs it
    /// was made from: its live updates start from there, so a change between the page
    /// and its event stream is not missed.
    fn page(&self, title: impl Into<String>, tab: &'static str, fingerprint: Option<u64>) -> Page {
        Page {
            job: String::new(),
            fingerprint: fingerprint.map(|f| format!("{f:x}")).unwrap_or_default(),
            title: title.into(),
            tab,
            place: self.place.clone(),
            generated: output::time(Timestamp::now()),
            read_only: self.options.read_only,
            csrf: self.csrf.clone(),
        }
    }

    /// An error page: what could not be done, and why.
    fn failure(&self, status: StatusCode, heading: &str, detail: impl std::fmt::Display) -> Response {
        let page = pages::ErrorPage {
            page: self.page(heading, "", None),
            heading: heading.to_owned(),
            detail: detail.to_string(),
        };
        (status, render(&page)).into_response()
    }

    /// The fingerprint of the active jobs now (none when they cannot be read: the page
    /// then updates at the first change its stream sees).
    async fn fingerprint(&self) -> Option<u64> {
        self.jobs.active().await.ok().map(|read| fingerprint(&read.records))
    }

    /// The record of job `id` as it is now, or the page that says why there is none.
    async fn recorded(&self, id: &str) -> Result<JobRecord, Box<Response>> {
        match self.jobs.store.get(id).await {
            Ok(Some(record)) => Ok(record),
            Ok(None) => Err(Box::new(self.failure(
                StatusCode::NOT_FOUND,
                "No such job",
                format!("No job {id} is recorded in this table (records expire after the deployment's TTL)."),
            ))),
            Err(e) => Err(Box::new(self.store_failure(&e, &format!("reading job {id}")))),
        }
    }

    /// A store error, explained as the CLI explains it.
    fn store_failure(&self, error: &podbridge::error::Error, what: &str) -> Response {
        self.failure(StatusCode::BAD_GATEWAY, "The deployment could not be read", self.aws.explain(error, what))
    }
}

/// Serves `console` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    console: Arc<Console>,
    names: &[String],
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let address = listener.local_addr()?;
    let stopping = console.clone();
    // The live streams never end by themselves: told to, they let the server stop.
    let shutdown = async move {
        shutdown.await;
        stopping.stopping.send_replace(true);
    };
    axum::serve(listener, router(console, allowed_hosts(address, names))).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

/// The console's routes, behind its guard, answering requests addressed to `hosts`.
fn router(console: Arc<Console>, hosts: Vec<String>) -> Router {
    let hosts = Arc::new(hosts);
    Router::new()
        .route("/", get(overview))
        .route("/jobs", get(jobs))
        .route("/jobs/{id}", get(job))
        .route("/jobs/{id}/cancel", post(cancel))
        .route("/jobs/{id}/retry", post(retry))
        .route("/queues", get(queues))
        .route("/events", get(events))
        .route("/assets/{name}", get(asset))
        .route("/favicon.ico", get(|| asset(Path("favicon.svg".to_owned()))))
        .with_state(console)
        .layer(middleware::from_fn_with_state(hosts, guard))
}

/// The `Host` values a request to the console may carry: its own address, the loopback
/// names when it listens on loopback or on every address, and the operator's `names`;
/// never any name at all, which would let a page of another site that rebinds its
/// name to the console's address read the console and act through it.
fn allowed_hosts(address: SocketAddr, names: &[String]) -> Vec<String> {
    let port = address.port();
    let mut hosts = vec![address.to_string()];
    if address.ip().is_loopback() || address.ip().is_unspecified() {
        hosts.extend([format!("localhost:{port}"), format!("127.0.0.1:{port}"), format!("[::1]:{port}")]);
    }
    hosts.extend(names.iter().map(|name| format!("{name}:{port}")));
    // A browser leaves the port out of `Host` when it is the scheme's default.
    if port == 80 {
        let bare: Vec<String> = hosts.iter().filter_map(|h| h.strip_suffix(":80").map(str::to_owned)).collect();
        hosts.extend(bare);
    }
    hosts
}

/// The Content-Security-Policy of every answer: everything from the console itself, no
/// inline script, no framing, forms posting only to itself.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Refuses requests addressed to another host (DNS rebinding), and adds the security
/// headers to every answer.
async fn guard(State(hosts): State<Arc<Vec<String>>>, request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    if !hosts.iter().any(|allowed| allowed.eq_ignore_ascii_case(host)) {
        let message = format!(
            "this console answers only requests addressed to {} (--allow-host adds a name), not to {host:?}\n",
            hosts.join(", ")
        );
        return (StatusCode::MISDIRECTED_REQUEST, message).into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Not `no-referrer`: with it a browser sends `Origin: null` on the console's own forms.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// A template as an HTML answer (a template that cannot render is a bug: said plainly).
fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("the page could not be rendered: {e}\n")).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct WindowQuery {
    window: Option<String>,
}

async fn overview(State(console): State<Arc<Console>>, Query(query): Query<WindowQuery>) -> Response {
    let window = data::window(query.window.as_deref());
    let active = match console.jobs.active().await {
        Ok(read) => read,
        Err(e) => return console.store_failure(&e, "reading the active jobs"),
    };
    let ended = match console.jobs.ended(window).await {
        Ok(read) => read,
        Err(e) => return console.store_failure(&e, "scanning the table for the jobs that ended"),
    };
    let page = pages::overview(
        console.page("Overview", "overview", Some(fingerprint(&active.records))),
        window,
        &active.records,
        &data::only_ended(&ended.records, &active.records),
        ended.partial,
        console.options.stuck_after,
        Timestamp::now(),
    );
    render(&page)
}

async fn jobs(State(console): State<Arc<Console>>, Query(filter): Query<data::Filter>) -> Response {
    let active = match console.jobs.active().await {
        Ok(read) => read,
        Err(e) => return console.store_failure(&e, "reading the active jobs"),
    };
    let ended = if filter.wants_ended() {
        match console.jobs.ended(filter.window()).await {
            Ok(read) => Some(read),
            Err(e) => return console.store_failure(&e, "scanning the table for the jobs that ended"),
        }
    } else {
        None
    };
    let mut records: Vec<&JobRecord> = active.records.iter().collect();
    if let Some(ended) = &ended {
        records.extend(data::only_ended(&ended.records, &active.records));
    }
    // An id searched for that nothing listed has: the job's own page, whenever it ran.
    if let Some(id) = filter.q.as_deref().map(str::trim).filter(|q| is_valid_job_id(q))
        && !records.iter().any(|r| r.job_id.contains(id))
    {
        match console.jobs.store.get(id).await {
            Ok(Some(_)) => return Redirect::to(&format!("/jobs/{id}")).into_response(),
            Ok(None) => {}
            Err(e) => return console.store_failure(&e, &format!("reading job {id}")),
        }
    }
    let partial = ended.as_ref().is_some_and(|read| read.partial);
    let page = console.page("Jobs", "jobs", Some(fingerprint(&active.records)));
    render(&pages::jobs(page, &filter, &records, partial, Timestamp::now()))
}

/// The refusal of a path's job id that no job can have.
fn not_a_job(console: &Console, id: &str) -> Option<Response> {
    output::job_id(id).err().map(|why| console.failure(StatusCode::NOT_FOUND, "No such job", format!("{id:?}: {why}")))
}

#[derive(Debug, Deserialize)]
struct JobQuery {
    /// The action just sent from this page, to say so.
    sent: Option<String>,
}

async fn job(State(console): State<Arc<Console>>, Path(id): Path<String>, Query(query): Query<JobQuery>) -> Response {
    if let Some(refused) = not_a_job(&console, &id) {
        return refused;
    }
    // Before the record: a change after this is one the page's stream reports.
    let active = console.fingerprint().await;
    let record = match console.recorded(&id).await {
        Ok(record) => record,
        Err(page) => return *page,
    };
    let ahead = if record.is_waiting() { console.jobs.store.ahead_of(&record).await.ok().flatten() } else { None };
    let flash = match query.sent.as_deref() {
        Some("cancel") => "Cancel sent to the job queue: dispatch cancels the job when it takes the message.",
        Some("retry") => "Retry Job event put on the bus: the trigger starts the next attempt.",
        _ => "",
    };
    let can = Can { cancel: console.queue_url.is_some(), retry: true };
    // The job's own last change too: a retry that runs and ends between two looks at
    // the active jobs still moves it.
    let seen = active.map(|active| with_job(active, Some(&record)));
    let mut page = console.page(id.clone(), "jobs", seen);
    page.job.clone_from(&id);
    render(&pages::job(page, &record, ahead, flash.to_owned(), can, Timestamp::now()))
}

async fn queues(State(console): State<Arc<Console>>) -> Response {
    let Some(queue_table) = console.queue_table.as_deref() else {
        return console.failure(
            StatusCode::NOT_FOUND,
            "No queue table",
            format!(
                "The queues live in the queue table: set {} (or {}) for the console.",
                connect::QUEUE_TABLE.variable,
                connect::QUEUE_TABLE.flag
            ),
        );
    };
    let active = match console.jobs.active().await {
        Ok(read) => read,
        Err(e) => return console.store_failure(&e, "reading the active jobs"),
    };
    let seen = Some(fingerprint(&active.records));
    let list = match crate::queues::read_list(&console.aws, &console.jobs.store, queue_table, &active.records).await {
        Ok(list) => list,
        Err(e) => return console.failure(StatusCode::BAD_GATEWAY, "The queues could not be read", format!("{e:#}")),
    };
    let now = Timestamp::now();
    let mut rows = Vec::new();
    for queue in list.queues {
        let line = if queue.waiting > 0 {
            match console.jobs.store.waiting(&queue.name, u32::try_from(pages::LINE_MAX + 1).unwrap_or(u32::MAX)).await
            {
                Ok(records) => records,
                Err(e) => {
                    return console.store_failure(&e, &format!("reading the jobs waiting in queue {}", queue.name));
                }
            }
        } else {
            Vec::new()
        };
        let more = line.len() > pages::LINE_MAX;
        let dash = || "-".to_owned();
        rows.push(pages::QueueRow {
            limits: queue.limits.as_ref().map_or_else(|| "not defined".to_owned(), |l| l.text.clone()),
            weight: queue.weight.map_or_else(dash, |w| w.to_string()),
            paused: queue.paused.map_or_else(dash, |p| if p { "yes".into() } else { "no".into() }),
            admitted: queue.admitted.text.clone(),
            running: queue.running,
            not_running: queue.not_running,
            waiting: queue.waiting,
            oldest: queue.oldest_waiting_since.map_or_else(dash, |since| output::age(now.duration_since(since))),
            line: pages::line(line.into_iter().take(pages::LINE_MAX).collect(), now),
            more,
            name: queue.name,
        });
    }
    let page = pages::QueuesPage {
        page: console.page("Queues", "queues", seen),
        queues: rows,
        total_limits: list.all_queues.limits.text,
        total_admitted: list.all_queues.admitted.text,
        line_max: pages::LINE_MAX,
    };
    render(&page)
}

/// A form that changes something: only its token is read.
#[derive(Debug, Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
}

/// Whether `given` is `token`, compared in time that does not depend on where they differ.
fn same_token(given: &str, token: &str) -> bool {
    given.len() == token.len() && given.bytes().zip(token.bytes()).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}

/// The refusal of a request that changes something, unless it came from one of the
/// console's own pages (its token matches, and the browser says it is not cross-site)
/// and the console takes actions.
fn refusal(console: &Console, headers: &HeaderMap, form: &ActionForm) -> Option<Response> {
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| !matches!(site, "same-origin" | "none"));
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let foreign_origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|origin| !origin.eq_ignore_ascii_case(&format!("http://{host}")));
    if cross_site || foreign_origin || form.csrf.is_empty() || !same_token(&form.csrf, &console.csrf) {
        return Some(console.failure(
            StatusCode::FORBIDDEN,
            "Refused",
            "Actions are taken only from the console's own pages (the request's token or origin did not match).",
        ));
    }
    if console.options.read_only {
        return Some(console.failure(StatusCode::FORBIDDEN, "Read-only", "This console was started with --read-only."));
    }
    None
}

async fn cancel(
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Some(refused) = refusal(&console, &headers, &form).or_else(|| not_a_job(&console, &id)) {
        return refused;
    }
    let Some(queue_url) = console.queue_url.as_deref() else {
        return console.failure(
            StatusCode::CONFLICT,
            "No job queue",
            format!(
                "Cancelling sends a cancel message to the job queue: set {} (or {}).",
                connect::QUEUE_URL.variable,
                connect::QUEUE_URL.flag
            ),
        );
    };
    // Only a recorded job: a cancel of an id not recorded yet would keep a job sent
    // later under that id from ever running (`podbridge cancel` does that on purpose).
    let namespace = match console.recorded(&id).await {
        Ok(record) => record.namespace,
        Err(page) => return *page,
    };
    let body = crate::cancel::message(&id, Some("cancelled from the console"), namespace.as_deref()).to_string();
    if let Err(e) = console.aws.send_message(queue_url, &body).await {
        warn!(job_id = %id, error = %format!("{e:#}"), "the console could not send a cancel");
        return console.failure(StatusCode::BAD_GATEWAY, "The cancel could not be sent", format!("{e:#}"));
    }
    info!(job_id = %id, action = "cancel", "sent from the console");
    console.jobs.forget().await;
    Redirect::to(&format!("/jobs/{id}?sent=cancel")).into_response()
}

async fn retry(
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Some(refused) = refusal(&console, &headers, &form).or_else(|| not_a_job(&console, &id)) {
        return refused;
    }
    let record = match console.recorded(&id).await {
        Ok(record) => record,
        Err(page) => return *page,
    };
    let attempt = match crate::retry::retryable_attempt(&record, None) {
        Ok(attempt) => attempt,
        Err(e) => return console.failure(StatusCode::CONFLICT, "Not retried", format!("{e:#}")),
    };
    let detail = crate::retry::detail(&id, Some(attempt), Some("retried from the console"));
    if let Err(e) = crate::retry::put(&console.aws, &console.bus, &detail).await {
        warn!(job_id = %id, error = %format!("{e:#}"), "the console could not send a retry");
        return console.failure(StatusCode::BAD_GATEWAY, "The retry could not be sent", format!("{e:#}"));
    }
    info!(job_id = %id, attempt, action = "retry", "sent from the console");
    console.jobs.forget().await;
    Redirect::to(&format!("/jobs/{id}?sent=retry")).into_response()
}

/// A digest of the active jobs: each one's id, state, attempt and last change.
fn fingerprint(records: &[JobRecord]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for record in records {
        (&record.job_id, record.state, record.attempt, record.updated_at.as_nanosecond()).hash(&mut hasher);
    }
    hasher.finish()
}

/// A page's fingerprint that also follows one job: the active jobs' and the job's own
/// last change.
fn with_job(active: u64, record: Option<&JobRecord>) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (active, record.map(|r| (r.attempt, r.state, r.updated_at.as_nanosecond()))).hash(&mut hasher);
    hasher.finish()
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    /// The fingerprint the page was made from (hex).
    since: Option<String>,
    /// The job the page shows, whose own changes count too.
    job: Option<String>,
}

/// Server-sent events: `changed` whenever the active jobs (their states, attempts or
/// changes) differ from what the page was made from, then from the last look; a look
/// every [`LIVE_EVERY`].
async fn events(
    State(console): State<Arc<Console>>,
    Query(query): Query<EventsQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let since = query.since.and_then(|hex| u64::from_str_radix(&hex, 16).ok());
    let job = query.job.filter(|id| is_valid_job_id(id));
    let stopping = console.stopping.subscribe();
    let stream = futures::stream::unfold((console, since, stopping), move |(console, mut last, mut stopping)| {
        let job = job.clone();
        async move {
            loop {
                if *stopping.borrow() {
                    return None;
                }
                tokio::select! {
                    () = tokio::time::sleep(LIVE_EVERY) => {}
                    _ = stopping.changed() => return None,
                }
                let Ok(read) = console.jobs.active().await else { continue };
                let mut seen = fingerprint(&read.records);
                if let Some(id) = &job {
                    let Ok(record) = console.jobs.store.get(id).await else { continue };
                    seen = with_job(seen, record.as_ref());
                }
                let changed = last.is_some_and(|last| last != seen);
                last = Some(seen);
                if changed {
                    let event = Event::default().event("changed").data(format!("{seen:x}"));
                    return Some((Ok(event), (console, last, stopping)));
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The embedded assets: the console's script and style, and uPlot (MIT, 1.6.32, from
/// npm; its licence beside it).
async fn asset(Path(name): Path<String>) -> Response {
    let (content_type, body): (&str, &'static [u8]) = match name.as_str() {
        "console.js" => ("text/javascript; charset=utf-8", include_bytes!("assets/console.js")),
        "console.css" => ("text/css; charset=utf-8", include_bytes!("assets/console.css")),
        // Also `/favicon.ico`: browsers ask for it whatever the page says.
        "favicon.svg" => ("image/svg+xml", include_bytes!("assets/favicon.svg")),
        "uPlot.iife.min.js" => ("text/javascript; charset=utf-8", include_bytes!("assets/vendor/uPlot.iife.min.js")),
        "uPlot.min.css" => ("text/css; charset=utf-8", include_bytes!("assets/vendor/uPlot.min.css")),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt as _;

    use super::*;

    /// A console on a table nobody reads: the requests below are refused or served
    /// before any AWS call.
    fn app(read_only: bool) -> (Router, String) {
        let flags = connect::Flags { table: Some("jobs".into()), ..connect::Flags::default() };
        let target = Target::from_lookup(&flags, |_| None);
        let sdk = aws_config::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
        let options = Options { read_only, stuck_after: Duration::from_secs(600) };
        let console = Console::new(&target, Aws::new(sdk, "nowhere".into()), options).unwrap();
        let csrf = console.csrf.clone();
        (router(console, allowed_hosts("127.0.0.1:8077".parse().unwrap(), &[])), csrf)
    }

    async fn send(app: Router, request: axum::http::Request<Body>) -> Response {
        app.oneshot(request).await.unwrap()
    }

    fn get(uri: &str, host: &str) -> axum::http::Request<Body> {
        axum::http::Request::get(uri).header(header::HOST, host).body(Body::empty()).unwrap()
    }

    fn post(uri: &str, origin: &str, form: &str) -> axum::http::Request<Body> {
        axum::http::Request::post(uri)
            .header(header::HOST, "127.0.0.1:8077")
            .header(header::ORIGIN, origin)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.to_owned()))
            .unwrap()
    }

    #[tokio::test]
    async fn a_request_addressed_to_another_host_is_refused_and_every_answer_carries_the_policy() {
        let (app, _) = app(false);
        let refused = send(app.clone(), get("/assets/console.js", "evil.example:8077")).await;
        assert_eq!(refused.status(), StatusCode::MISDIRECTED_REQUEST);
        for host in ["127.0.0.1:8077", "localhost:8077"] {
            let served = send(app.clone(), get("/assets/console.js", host)).await;
            assert_eq!(served.status(), StatusCode::OK, "{host}");
            assert_eq!(served.headers()[header::CONTENT_SECURITY_POLICY], CSP);
            assert_eq!(served.headers()[header::X_FRAME_OPTIONS], "DENY");
        }
        let missing = send(app, get("/assets/nothing.js", "127.0.0.1:8077")).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_hosts_are_the_address_loopback_names_and_the_operators_never_any() {
        let loopback = allowed_hosts("127.0.0.1:8077".parse().unwrap(), &[]);
        assert_eq!(loopback, ["127.0.0.1:8077", "localhost:8077", "127.0.0.1:8077", "[::1]:8077"]);
        let everywhere = allowed_hosts("0.0.0.0:9000".parse().unwrap(), &["console.internal".to_owned()]);
        assert!(
            everywhere.contains(&"console.internal:9000".to_owned())
                && everywhere.contains(&"localhost:9000".to_owned())
        );
        assert!(!everywhere.iter().any(|h| h.contains("evil") || h == "*"));
        let default_port = allowed_hosts("[::1]:80".parse().unwrap(), &[]);
        assert!(default_port.contains(&"[::1]".to_owned()) && default_port.contains(&"localhost".to_owned()));
    }

    #[tokio::test]
    async fn a_console_on_every_address_still_refuses_a_name_it_was_not_given() {
        let flags = connect::Flags { table: Some("jobs".into()), ..connect::Flags::default() };
        let target = Target::from_lookup(&flags, |_| None);
        let sdk = aws_config::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
        let options = Options { read_only: false, stuck_after: Duration::from_secs(600) };
        let console = Console::new(&target, Aws::new(sdk, "nowhere".into()), options).unwrap();
        let app = router(console, allowed_hosts("0.0.0.0:8077".parse().unwrap(), &["ops.example".to_owned()]));
        let rebound = send(app.clone(), get("/assets/console.js", "attacker.example:8077")).await;
        assert_eq!(rebound.status(), StatusCode::MISDIRECTED_REQUEST);
        let body = axum::body::to_bytes(rebound.into_body(), 1 << 16).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("--allow-host"), "the refusal says how to add a name");
        assert_eq!(send(app, get("/assets/console.js", "ops.example:8077")).await.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn an_action_with_the_token_from_the_console_itself_passes_the_guard() {
        // No queue is configured: a request that passes the guard is answered 409 (what
        // is missing), one refused by it 403.
        let (console, token) = app(false);
        let answer =
            send(console.clone(), post("/jobs/j/cancel", "http://127.0.0.1:8077", &format!("csrf={token}"))).await;
        assert_eq!(answer.status(), StatusCode::CONFLICT);
        let body = axum::body::to_bytes(answer.into_body(), 1 << 20).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("PODBRIDGE_QUEUE_URL"));
        // The same request, said by the browser to come from another site.
        let mut cross = post("/jobs/j/cancel", "http://127.0.0.1:8077", &format!("csrf={token}"));
        cross.headers_mut().insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert_eq!(send(console.clone(), cross).await.status(), StatusCode::FORBIDDEN);
        // An id no job can have, with a good token.
        let bad = send(console, post("/jobs/a%20b/cancel", "http://127.0.0.1:8077", &format!("csrf={token}"))).await;
        assert_eq!(bad.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn an_action_without_the_token_or_from_another_origin_or_on_a_read_only_console_is_refused() {
        let (console, token) = app(false);
        let own = "http://127.0.0.1:8077";
        for (origin, form) in [
            (own, "csrf=".to_owned()),
            (own, "csrf=guess".to_owned()),
            ("http://evil.example", format!("csrf={token}")),
        ] {
            let answer = send(console.clone(), post("/jobs/j/cancel", origin, &form)).await;
            assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{origin} {form}");
            let answer = send(console.clone(), post("/jobs/j/retry", origin, &form)).await;
            assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{origin} {form}");
        }
        let (looking, token) = app(true);
        let answer = send(looking, post("/jobs/j/cancel", own, &format!("csrf={token}"))).await;
        assert_eq!(answer.status(), StatusCode::FORBIDDEN);
        let body = axum::body::to_bytes(answer.into_body(), 1 << 20).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("--read-only"));
    }
}
