//! The console's pages: each a template (under `cli/templates/console/`, compiled and
//! HTML-escaped by askama) filled from a view made of display-ready strings, so the
//! templates hold no logic beyond loops and conditions.

use std::collections::{BTreeMap, BTreeSet};

use askama::Template;
use jiff::{SignedDuration, Timestamp};
use podbridge_core::FailureClass;
use podbridge_core::pod::{CONTAINER, JOB_ID_LABEL};
use podbridge_core::record::JobRecord;
use podbridge_core::state::JobState;

use super::data::{self, Filter, WINDOWS};
use crate::output::{age, time};

/// What every page shows around its content.
#[derive(Debug, Clone)]
pub struct Page {
    pub title: String,
    /// The navigation entry to mark: `overview`, `jobs` or `queues`.
    pub tab: &'static str,
    /// Where the console reads from (the table and the endpoint or region).
    pub place: String,
    pub generated: String,
    pub read_only: bool,
    /// The token every form that changes something carries.
    pub csrf: String,
    /// The fingerprint of the active jobs the page was made from (hex), where its live
    /// updates start.
    pub fingerprint: String,
    /// The job the page shows (empty: none), whose own changes its live updates follow.
    pub job: String,
}

#[derive(Debug, Template)]
#[template(path = "console/error.html")]
pub struct ErrorPage {
    pub page: Page,
    pub heading: String,
    pub detail: String,
}

#[derive(Debug)]
pub struct WaitingRow {
    pub queue: String,
    pub count: u64,
    pub oldest: String,
}

#[derive(Debug)]
pub struct StuckRow {
    pub job_id: String,
    pub state: JobState,
    pub dwelt: String,
    pub why: String,
}

#[derive(Debug, Template)]
#[template(path = "console/overview.html")]
pub struct Overview {
    pub page: Page,
    pub window: &'static str,
    pub windows: Vec<(&'static str, bool)>,
    pub counts: Vec<(JobState, usize)>,
    pub partial: bool,
    pub ended_max: usize,
    pub failures: Vec<(FailureClass, usize)>,
    pub waiting: Vec<WaitingRow>,
    pub stuck: Vec<StuckRow>,
    pub stuck_after: String,
    /// The chart's data as JSON, with `<` escaped so it cannot end its script element.
    pub chart_json: String,
}

/// The overview from the active jobs and the ones that ended within `window`.
#[allow(clippy::too_many_arguments)]
pub fn overview(
    page: Page,
    window: (&'static str, SignedDuration),
    active: &[JobRecord],
    ended: &[&JobRecord],
    partial: bool,
    stuck_after: std::time::Duration,
    now: Timestamp,
) -> Overview {
    let chart = data::chart(active, ended, window.1, now, 48);
    let chart_json = serde_json::to_string(&chart).unwrap_or_default().replace('<', "\\u003c");
    Overview {
        page,
        window: window.0,
        windows: WINDOWS.iter().map(|(name, _)| (*name, *name == window.0)).collect(),
        counts: data::counts(active, ended).into_iter().collect(),
        partial,
        ended_max: data::ENDED_MAX,
        failures: data::failures(ended),
        waiting: data::waiting_by_queue(active)
            .into_iter()
            .map(|(queue, (count, oldest))| WaitingRow { queue, count, oldest: age(now.duration_since(oldest)) })
            .collect(),
        stuck: data::stuck(active, stuck_after, now)
            .into_iter()
            .map(|s| StuckRow { dwelt: age(now.duration_since(s.since)), job_id: s.job_id, state: s.state, why: s.why })
            .collect(),
        stuck_after: age(SignedDuration::try_from(stuck_after).unwrap_or(SignedDuration::MAX)),
        chart_json,
    }
}

#[derive(Debug)]
pub struct JobRow {
    pub job_id: String,
    pub state: JobState,
    pub queue: String,
    pub namespace: String,
    pub attempt: u32,
    pub class: String,
    pub created: String,
    pub updated: String,
}

#[derive(Debug, Template)]
#[template(path = "console/jobs.html")]
pub struct Jobs {
    pub page: Page,
    pub state_options: Vec<(String, bool)>,
    pub queue_options: Vec<(String, bool)>,
    pub class_options: Vec<(String, bool)>,
    pub since_options: Vec<(String, bool)>,
    pub namespace: String,
    pub q: String,
    /// Column label, sort key, link that sorts by it (empty: not sortable), mark.
    pub headers: Vec<(&'static str, &'static str, String, &'static str)>,
    pub rows: Vec<JobRow>,
    pub shown: usize,
    pub total: usize,
    pub source_note: String,
    /// What is wrong with the filters, said on the page (empty: nothing).
    pub problem: String,
    pub page_number: usize,
    pub pages: usize,
    pub prev: String,
    pub next: String,
}

/// Rows per page of the job list.
pub const PAGE_ROWS: usize = 50;

/// The query string of `filter` with `sort`, `dir` and `page` replaced.
fn link(filter: &Filter, sort: Option<&str>, dir: Option<&str>, page: usize) -> String {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    for (key, value) in [
        ("state", &filter.state),
        ("queue", &filter.queue),
        ("namespace", &filter.namespace),
        ("class", &filter.class),
        ("since", &filter.since),
        ("q", &filter.q),
    ] {
        if let Some(value) = value.as_deref().filter(|v| !v.trim().is_empty()) {
            pairs.push((key, value.to_owned()));
        }
    }
    if let Some(sort) = sort {
        pairs.push(("sort", sort.to_owned()));
    }
    if let Some(dir) = dir {
        pairs.push(("dir", dir.to_owned()));
    }
    if page > 1 {
        pairs.push(("page", page.to_string()));
    }
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
    if query.is_empty() { "/jobs".to_owned() } else { format!("/jobs?{}", query.join("&")) }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The job list: `records` are every candidate read (active, and ended when asked).
pub fn jobs(page: Page, filter: &Filter, records: &[&JobRecord], partial: bool, now: Timestamp) -> Jobs {
    let mut matching: Vec<&JobRecord> = records.iter().copied().filter(|r| filter.matches(r, now)).collect();
    filter.sort(&mut matching);
    let total = matching.len();
    let pages = total.div_ceil(PAGE_ROWS).max(1);
    let number = filter.page().clamp(1, pages);
    let rows: Vec<JobRow> = matching
        .iter()
        .skip((number - 1) * PAGE_ROWS)
        .take(PAGE_ROWS)
        .map(|record| JobRow {
            job_id: record.job_id.clone(),
            state: record.state,
            queue: data::queue_of(record).unwrap_or_else(|| "-".into()),
            namespace: record.namespace.clone().unwrap_or_else(|| "-".into()),
            attempt: record.attempt,
            class: record.failure_class.map_or("-", FailureClass::as_str).to_owned(),
            created: time(record.created_at),
            updated: format!("{} ago", age(now.duration_since(record.updated_at))),
        })
        .collect();
    let sort = filter.sort.as_deref().filter(|s| !s.is_empty());
    let dir = filter.dir.as_deref().filter(|s| !s.is_empty());
    let header = |label: &'static str, key: &'static str| {
        let current = sort.unwrap_or("updated") == key;
        let by_name = matches!(key, "id" | "state");
        // Clicking the current column turns its order around.
        let ascending_now = if by_name { dir != Some("desc") } else { dir == Some("asc") };
        let next_dir = if current {
            if ascending_now { "desc" } else { "asc" }
        } else if by_name {
            "asc"
        } else {
            "desc"
        };
        let mark = if current { if ascending_now { " ↑" } else { " ↓" } } else { "" };
        (label, key, link(filter, Some(key), Some(next_dir), 1), mark)
    };
    let state_text = filter.state.clone().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| "active".into());
    let options = |values: Vec<String>, chosen: Option<&str>| -> Vec<(String, bool)> {
        values.into_iter().map(|v| (v.clone(), Some(v.as_str()) == chosen)).collect()
    };
    let mut state_values = vec!["active".to_owned(), "all".to_owned()];
    state_values.extend(JobState::ALL.iter().map(ToString::to_string));
    let mut source_note = if filter.wants_ended() {
        format!(
            "Active jobs from the active-jobs index; ended jobs that changed within the last {} from a Scan of the table \
             (made at most once a minute).",
            filter.window().0
        )
    } else {
        "Active jobs, from the active-jobs index.".to_owned()
    };
    if partial {
        source_note.push_str(&format!(" The Scan stopped at {} ended jobs: the list is partial.", data::ENDED_MAX));
    }
    // `default`, the queues of every job read, and the one asked for even if none is shown.
    let mut queues: BTreeSet<String> = records.iter().filter_map(|r| data::queue_of(r)).collect();
    queues.insert(podbridge_core::job::DEFAULT_QUEUE.to_owned());
    queues.extend(filter.queue.clone().filter(|q| !q.trim().is_empty()));
    Jobs {
        page,
        state_options: options(state_values, Some(state_text.as_str())),
        queue_options: options(queues.into_iter().collect(), filter.queue.as_deref()),
        class_options: options(
            FailureClass::ALL.iter().map(|c| c.as_str().to_owned()).collect(),
            filter.class.as_deref(),
        ),
        since_options: options(WINDOWS.iter().map(|(n, _)| (*n).to_owned()).collect(), filter.since.as_deref()),
        namespace: filter.namespace.clone().unwrap_or_default(),
        q: filter.q.clone().unwrap_or_default(),
        headers: vec![
            header("Job", "id"),
            header("State", "state"),
            ("Queue", "queue", String::new(), ""),
            ("Namespace", "namespace", String::new(), ""),
            ("Attempt", "attempt", String::new(), ""),
            ("Failure class", "class", String::new(), ""),
            header("Recorded", "created"),
            header("Changed", "updated"),
        ],
        shown: rows.len(),
        rows,
        total,
        source_note,
        problem: filter.problem().unwrap_or_default(),
        page_number: number,
        pages,
        prev: if number > 1 { link(filter, sort, dir, number - 1) } else { String::new() },
        next: if number < pages { link(filter, sort, dir, number + 1) } else { String::new() },
    }
}

#[derive(Debug)]
pub struct Step {
    pub state: JobState,
    pub at: String,
    pub dwelt: String,
    pub reason: String,
    pub message: String,
}

#[derive(Debug)]
pub struct AttemptView {
    pub number: u32,
    pub steps: Vec<Step>,
}

#[derive(Debug, Template)]
#[template(path = "console/job.html")]
pub struct Job {
    pub page: Page,
    pub flash: String,
    pub job_id: String,
    pub state: JobState,
    pub attempt: u32,
    pub next_attempt: u32,
    pub queue: String,
    pub namespace: String,
    pub pod: String,
    pub node: String,
    pub failure_class: String,
    pub exit_code: String,
    pub created: String,
    pub source: String,
    pub summary: String,
    pub can_cancel: bool,
    pub can_retry: bool,
    pub action_note: String,
    pub last_log: String,
    /// Newest attempt first.
    pub attempts: Vec<AttemptView>,
    pub kubectl: String,
}

/// What the console can do, for the job page's buttons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Can {
    /// A queue to send cancel messages to is configured.
    pub cancel: bool,
    /// A bus to put Retry Job events on is configured (always: `default`).
    pub retry: bool,
}

/// The page of one job.
pub fn job(page: Page, record: &JobRecord, ahead: Option<u64>, flash: String, can: Can, now: Timestamp) -> Job {
    let dash = || "-".to_owned();
    let mut attempts: BTreeMap<u32, Vec<Step>> = BTreeMap::new();
    for (i, change) in record.history.iter().enumerate() {
        let until = record.history.get(i + 1).map_or(now, |next| next.at);
        let dwelt = if change.to.is_terminal() && i + 1 == record.history.len() {
            String::new()
        } else {
            format!("for {}", age(until.duration_since(change.at)))
        };
        attempts.entry(change.attempt).or_default().push(Step {
            state: change.to,
            at: time(change.at),
            dwelt,
            reason: change.reason.clone(),
            message: change.message.clone(),
        });
    }
    let namespace = record.namespace.clone().unwrap_or_else(|| "NAMESPACE".into());
    let kubectl = match &record.pod_name {
        Some(pod) => format!(
            "kubectl -n {namespace} get pod {pod} -o yaml\n\
             kubectl -n {namespace} describe pod {pod}\n\
             kubectl -n {namespace} logs {pod} -c {CONTAINER}\n\
             kubectl -n {namespace} get events --field-selector involvedObject.name={pod}\n\
             kubectl -n {namespace} get pods -l {JOB_ID_LABEL}={}",
            record.job_id
        ),
        None => format!("kubectl -n {namespace} get pods -l {JOB_ID_LABEL}={}", record.job_id),
    };
    let active = record.state.is_active();
    let retryable = matches!(record.state, JobState::Failed | JobState::Cancelled)
        && record.spec.is_some()
        && !record.retry_pending;
    let action_note = if active && !can.cancel {
        format!(
            "Cancelling needs the job queue: set {} (or {}) for the console.",
            crate::connect::QUEUE_URL.variable,
            crate::connect::QUEUE_URL.flag
        )
    } else if record.retry_pending {
        "Its rules retry it: the reconciler starts the next attempt after its back-off.".to_owned()
    } else {
        String::new()
    };
    Job {
        page,
        flash,
        job_id: record.job_id.clone(),
        state: record.state,
        attempt: record.attempt,
        next_attempt: record.attempt + 1,
        queue: data::queue_of(record).unwrap_or_else(dash),
        namespace: record.namespace.clone().unwrap_or_else(dash),
        pod: record.pod_name.clone().unwrap_or_else(dash),
        node: record.node.clone().unwrap_or_else(dash),
        failure_class: record.failure_class.map_or("-", FailureClass::as_str).to_owned(),
        exit_code: record.exit_code.map_or_else(dash, |code| code.to_string()),
        created: time(record.created_at),
        source: crate::get::source(&record.source),
        summary: match ahead {
            Some(ahead) if record.is_waiting() => crate::get::waiting(record, Ok(ahead)),
            _ => [record.reason.as_deref(), record.message.as_deref()]
                .into_iter()
                .flatten()
                .filter(|text| !text.is_empty())
                .collect::<Vec<_>>()
                .join(": "),
        },
        can_cancel: active && can.cancel,
        can_retry: retryable && can.retry,
        action_note,
        last_log: record.termination_message.clone().unwrap_or_default(),
        attempts: attempts.into_iter().rev().map(|(number, steps)| AttemptView { number, steps }).collect(),
        kubectl,
    }
}

#[derive(Debug)]
pub struct LineEntry {
    pub position: usize,
    pub job_id: String,
    pub priority: String,
    pub waited: String,
    pub why: String,
}

#[derive(Debug)]
pub struct QueueRow {
    pub name: String,
    pub limits: String,
    pub weight: String,
    pub paused: String,
    pub admitted: String,
    pub running: u64,
    pub not_running: u64,
    pub waiting: u64,
    pub oldest: String,
    pub line: Vec<LineEntry>,
    pub more: bool,
}

#[derive(Debug, Template)]
#[template(path = "console/queues.html")]
pub struct QueuesPage {
    pub page: Page,
    pub queues: Vec<QueueRow>,
    pub total_limits: String,
    pub total_admitted: String,
    pub line_max: usize,
}

/// How many waiting jobs of each queue the queues page lists.
pub const LINE_MAX: usize = 50;

/// The waiting line of a queue as shown: `records` in admission order.
pub fn line(records: Vec<JobRecord>, now: Timestamp) -> Vec<LineEntry> {
    records
        .into_iter()
        .enumerate()
        .map(|(i, record)| LineEntry {
            position: i + 1,
            priority: record.stored_job().map_or_else(|_| "-".into(), |job| job.priority.to_string()),
            waited: age(now.duration_since(data::in_state_since(&record))),
            why: record.message.as_deref().map(crate::get::without_place).unwrap_or_default().to_owned(),
            job_id: record.job_id,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Page {
        Page {
            title: "t".into(),
            tab: "jobs",
            place: "p".into(),
            generated: "g".into(),
            read_only: false,
            csrf: "token".into(),
            fingerprint: String::new(),
            job: String::new(),
        }
    }

    #[test]
    fn what_a_job_wrote_is_shown_as_text_never_as_markup() {
        let now: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let mut record = JobRecord::new(
            "j-1",
            JobState::Failed,
            podbridge_core::record::Source::Direct,
            now,
            "Error",
            "<img src=x onerror=alert(1)>",
        );
        record.termination_message = Some("</pre><script>alert(1)</script>".into());
        let can = Can { cancel: true, retry: true };
        let html = job(page(), &record, None, String::new(), can, now).render().unwrap();
        assert!(!html.contains("<script>alert") && !html.contains("<img src=x"), "{html}");
        assert!(html.contains("&#60;/pre&#62;&#60;script&#62;alert(1)&#60;/script&#62;"), "escaped: {html}");
        // The chart's data cannot end its script element either.
        let overview = overview(page(), data::window(None), &[], &[], false, std::time::Duration::from_secs(60), now);
        assert!(!overview.chart_json.contains('<'));
    }

    #[test]
    fn the_job_list_pages_sorts_and_turns_its_order_around() {
        let now: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let records: Vec<JobRecord> = (0..120)
            .map(|i| {
                let at = now.checked_sub(jiff::SignedDuration::from_secs(i)).unwrap();
                JobRecord::new(
                    &format!("j-{i:03}"),
                    JobState::Queued,
                    podbridge_core::record::Source::Direct,
                    at,
                    "R",
                    "m",
                )
            })
            .collect();
        let refs: Vec<&JobRecord> = records.iter().collect();
        let filter: Filter = serde_json::from_str(r#"{"page": "3"}"#).unwrap();
        let list = jobs(page(), &filter, &refs, false, now);
        assert_eq!((list.page_number, list.pages, list.shown, list.total), (3, 3, 20, 120));
        assert_eq!(list.rows[0].job_id, "j-100", "newest change first: page 3 starts at the 101st");
        assert!(list.next.is_empty() && list.prev == "/jobs?page=2");
        // Past the end, or unreadable: the nearest page.
        let far: Filter = serde_json::from_str(r#"{"page": "99"}"#).unwrap();
        assert_eq!(jobs(page(), &far, &refs, false, now).page_number, 3);
        let junk: Filter = serde_json::from_str(r#"{"page": "abc"}"#).unwrap();
        assert_eq!(jobs(page(), &junk, &refs, false, now).page_number, 1);
        // The header of the current column turns the order around; another starts in its own.
        let by_id: Filter = serde_json::from_str(r#"{"sort": "id"}"#).unwrap();
        let list = jobs(page(), &by_id, &refs, false, now);
        assert_eq!(list.rows[0].job_id, "j-000");
        let id_header = list.headers.iter().find(|h| h.1 == "id").unwrap();
        assert_eq!((id_header.2.as_str(), id_header.3), ("/jobs?sort=id&dir=desc", " ↑"));
        let changed = list.headers.iter().find(|h| h.1 == "updated").unwrap();
        assert_eq!(changed.2, "/jobs?sort=updated&dir=desc");
    }

    #[test]
    fn filters_no_state_class_or_window_has_are_said_on_the_page() {
        let filter: Filter = serde_json::from_str(r#"{"state": "running", "since": "3w"}"#).unwrap();
        let list = jobs(page(), &filter, &[], false, "2026-11-30T12:00:00Z".parse().unwrap());
        assert!(
            list.problem.contains("\"running\" is not a state") && list.problem.contains("\"3w\""),
            "{}",
            list.problem
        );
    }

    #[test]
    fn links_keep_the_filters_and_encode_their_values() {
        let filter: Filter = serde_json::from_str(r#"{"state": "failed", "q": "a b&c", "namespace": ""}"#).unwrap();
        assert_eq!(link(&filter, Some("id"), Some("asc"), 2), "/jobs?state=failed&q=a%20b%26c&sort=id&dir=asc&page=2");
        assert_eq!(link(&Filter::default(), None, None, 1), "/jobs");
    }
}
