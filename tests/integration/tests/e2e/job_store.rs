//! The DynamoDB job store against moto server: what a user (or the reconciler) finds in
//! the job table after podbridge created and moved jobs. Every test makes its own table
//! (a [`World`]'s), so tests run in parallel without seeing each other's jobs.
//!
//! Run through `make test` or
//! `tests/stack.sh run -- cargo test -p podbridge-tests --test e2e job_store::`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{Context as _, bail};
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::types::{AttributeValue, KeyType, ProjectionType, TimeToLiveStatus};
use futures::{StreamExt as _, TryStreamExt as _};
use jiff::Timestamp;
use podbridge::Error;
use podbridge::store::dynamodb::DynamoJobStore;
use podbridge::store::{ActivePage, Changed, Created, JobStore, active_pages};
use podbridge_core::{JobRecord, JobState, Source, StateChange};
use podbridge_tests::{Stack, World, eventually, unique_name};
use serde_json::json;

use JobState::*;

const TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);

/// A fresh job table (a world's) with its store and a raw client to look at what was
/// written.
struct Table {
    store: DynamoJobStore,
    ddb: aws_sdk_dynamodb::Client,
    name: String,
}

impl Table {
    async fn new() -> Table {
        let world = World::builder().build().await;
        Table { store: DynamoJobStore::clone(&world.store), ddb: world.stack.dynamodb(), name: world.table.clone() }
    }

    /// The job's item exactly as stored, read the way a person would with GetItem.
    async fn raw_item(&self, job_id: &str) -> anyhow::Result<Option<HashMap<String, AttributeValue>>> {
        let output = self
            .ddb
            .get_item()
            .table_name(&self.name)
            .key("job_id", AttributeValue::S(job_id.into()))
            .consistent_read(true)
            .send()
            .await?;
        Ok(output.item)
    }

    async fn delete(self) -> anyhow::Result<()> {
        self.ddb.delete_table().table_name(&self.name).send().await?;
        Ok(())
    }

    /// Applies a change that must apply, returning the record as written.
    async fn apply(&self, job_id: &str, change: &StateChange) -> anyhow::Result<JobRecord> {
        match self.store.change(job_id, change).await? {
            Changed::Applied(record) => Ok(*record),
            Changed::Conflict(current) => {
                bail!("{} -> {} on {job_id} conflicted with {current:?}", change.expected, change.to)
            }
        }
    }

    /// Every page of active jobs, following the tokens to the end as the reconciler
    /// does ([`active_pages`]); an error, not a hang, when the tokens do not advance.
    async fn active_pages(&self, page_size: u32) -> anyhow::Result<Vec<ActivePage>> {
        let pages: Vec<ActivePage> = active_pages(&self.store, page_size).take(101).try_collect().await?;
        if pages.len() > 100 {
            bail!("more than 100 pages: the tokens do not advance");
        }
        Ok(pages)
    }
}

/// A time with nanoseconds, so the tests see them survive the table.
fn at(second: i64) -> Timestamp {
    Timestamp::new(1_800_000_000 + second, 123_456_789).expect("a valid timestamp")
}

fn queued(job_id: &str, second: i64) -> JobRecord {
    let mut record = JobRecord::new(
        job_id,
        Queued,
        Source::Sqs { message_id: format!("msg-{job_id}") },
        at(second),
        "Dispatched",
        "received from the job queue",
    );
    record.spec = Some(json!({
        "image": "registry.example.com/etl:1.4",
        "command": ["etl", "--day", "2027-01-15"],
        "cpu": 0.5,
        "memory_mib": 512,
        "env": { "MODE": "full" }
    }));
    record.namespace = Some("batch".into());
    record
}

fn change(from: JobState, attempt: u32, to: JobState, second: i64, reason: &str) -> StateChange {
    StateChange::new(from, attempt, to, at(second), reason, &format!("{from} -> {to} ({reason})"))
}

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.into())
}

#[tokio::test]
async fn given_a_recorded_job_when_the_same_job_id_is_created_again_then_the_second_create_finds_the_first_record_unchanged()
-> anyhow::Result<()> {
    let table = Table::new().await;
    let first = queued("job-1", 0);

    assert_eq!(table.store.create(&first).await?, Created::New);
    let mut redelivered = queued("job-1", 60);
    redelivered.source = Source::Sqs { message_id: "another-message".into() };
    redelivered.namespace = Some("elsewhere".into());
    let second = table.store.create(&redelivered).await?;

    assert_eq!(second, Created::Exists(Box::new(first.clone())), "the second create reports the first record");
    assert_eq!(table.store.get("job-1").await?, Some(first), "the record is the first one, field for field");
    let item = table.raw_item("job-1").await?.context("the item exists")?;
    assert_eq!(item.get("namespace"), Some(&s("batch")));
    assert_eq!(item.get("state"), Some(&s("queued")));
    assert_eq!(item.get("active"), Some(&s("1")), "a queued job is in the active index");
    assert_eq!(item.get("created_at"), Some(&s("2027-01-15T08:00:00.123456789Z")), "RFC 3339 with nanoseconds");
    assert!(matches!(item.get("spec"), Some(AttributeValue::S(text)) if text.contains("\"memory_mib\":512")));
    assert_eq!(table.store.get("job-2").await?, None, "an unknown job is None");
    table.delete().await
}

#[tokio::test]
async fn given_a_queued_job_when_it_is_set_up_runs_and_fails_then_the_record_holds_the_outcome_every_state_time_and_the_full_history()
-> anyhow::Result<()> {
    let table = Table::new().await;
    let mut expected = queued("job-1", 0);
    table.store.create(&expected).await?;

    let mut setting_up = change(Queued, 1, SettingUp, 1, "PodCreated");
    setting_up.pod_name = Some("job-1-a1".into());
    let mut executing = change(SettingUp, 1, Executing, 5, "Started");
    executing.node = Some("node-a".into());
    let mut failed = change(Executing, 1, Failed, 65, "Error");
    failed.exit_code = Some(3);
    failed.failure_class = Some(podbridge_core::FailureClass::ExitCode);
    failed.termination_message = Some("loading day 2027-01-15\nerror: input missing".into());
    failed.expires_at = Some(1_802_592_065);
    for step in [&setting_up, &executing, &failed] {
        expected.apply(step);
        let written = table.apply("job-1", step).await?;
        assert_eq!(written, expected, "the store returns the record as it now is after {}", step.to);
    }

    let record = table.store.get("job-1").await?.context("the job exists")?;
    assert_eq!(record, expected);
    assert_eq!((record.state, record.attempt), (Failed, 1));
    assert_eq!(record.exit_code, Some(3));
    assert_eq!(record.failure_class.map(|c| c.as_str()), Some("exit_code"));
    assert_eq!(record.termination_message.as_deref(), Some("loading day 2027-01-15\nerror: input missing"));
    assert_eq!((record.pod_name.as_deref(), record.node.as_deref()), (Some("job-1-a1"), Some("node-a")));
    assert_eq!((record.reason.as_deref(), record.updated_at, record.created_at), (Some("Error"), at(65), at(0)));
    assert_eq!(
        record.state_times,
        BTreeMap::from([(Queued, at(0)), (SettingUp, at(1)), (Executing, at(5)), (Failed, at(65))])
    );
    let history: Vec<_> = record.history.iter().map(|t| (t.at, t.from, t.to, t.attempt, t.reason.as_str())).collect();
    assert_eq!(
        history,
        [
            (at(0), None, Queued, 1, "Dispatched"),
            (at(1), Some(Queued), SettingUp, 1, "PodCreated"),
            (at(5), Some(SettingUp), Executing, 1, "Started"),
            (at(65), Some(Executing), Failed, 1, "Error"),
        ]
    );
    assert_eq!(record.history[3].message, "executing -> failed (Error)");

    let item = table.raw_item("job-1").await?.context("the item exists")?;
    assert_eq!(item.get("expires_at"), Some(&AttributeValue::N("1802592065".into())), "the TTL attribute is set");
    assert_eq!(item.get("exit_code"), Some(&AttributeValue::N("3".into())));
    assert_eq!(item.get("active"), None, "a failed job is not in the active index");
    table.delete().await
}

#[tokio::test]
async fn given_a_job_another_writer_moved_when_a_stale_writer_changes_it_then_it_gets_a_conflict_with_the_current_record_and_nothing_is_written()
-> anyhow::Result<()> {
    let table = Table::new().await;
    table.store.create(&queued("job-1", 0)).await?;
    table.apply("job-1", &change(Queued, 1, Failed, 1, "ImagePullBackOff")).await?;
    let mut retry = change(Failed, 1, Queued, 2, "Retry");
    retry.new_attempt = Some(2);
    let current = table.apply("job-1", &retry).await?;
    let item_before = table.raw_item("job-1").await?;

    // A writer that still sees attempt 1 queued: the state matches, the attempt does not.
    let mut old_attempt = change(Queued, 1, SettingUp, 3, "PodCreated");
    old_attempt.pod_name = Some("job-1-a1".into());
    // A writer that believes the job is still failed.
    let old_state = change(Failed, 1, Queued, 3, "Retry");

    for stale in [&old_attempt, &old_state] {
        let outcome = table.store.change("job-1", stale).await?;
        assert_eq!(
            outcome,
            Changed::Conflict(Some(Box::new(current.clone()))),
            "{} at attempt {} is stale",
            stale.expected,
            stale.expected_attempt
        );
    }
    assert_eq!(table.raw_item("job-1").await?, item_before, "nothing was written");

    let missing = table.store.change("job-2", &change(Queued, 1, SettingUp, 3, "PodCreated")).await?;
    assert_eq!(missing, Changed::Conflict(None), "a job that does not exist is a conflict without a record");
    assert_eq!(table.raw_item("job-2").await?, None, "a change never creates an item");
    table.delete().await
}

#[tokio::test]
async fn given_an_executing_job_when_it_fails_then_it_leaves_the_active_index_with_an_expiry_and_when_retried_it_is_back_as_attempt_2_with_its_history()
-> anyhow::Result<()> {
    let table = Table::new().await;
    table.store.create(&queued("job-1", 0)).await?;
    let mut setting_up = change(Queued, 1, SettingUp, 1, "PodCreated");
    setting_up.pod_name = Some("job-1-a1".into());
    table.apply("job-1", &setting_up).await?;
    let mut executing = change(SettingUp, 1, Executing, 2, "Started");
    executing.node = Some("node-a".into());
    table.apply("job-1", &executing).await?;
    let mut failed = change(Executing, 1, Failed, 3, "OOMKilled");
    failed.exit_code = Some(137);
    failed.failure_class = Some(podbridge_core::FailureClass::OomKilled);
    failed.termination_message = Some("killed".into());
    failed.expires_at = Some(1_802_592_003);
    table.apply("job-1", &failed).await?;

    let active_ids =
        |pages: Vec<ActivePage>| pages.into_iter().flat_map(|page| page.jobs).map(|job| job.job_id).collect::<Vec<_>>();
    assert!(active_ids(table.active_pages(10).await?).is_empty(), "a failed job is not active");
    let item = table.raw_item("job-1").await?.context("the item exists")?;
    assert_eq!((item.get("active"), item.get("expires_at")), (None, Some(&AttributeValue::N("1802592003".into()))));

    let mut retry = change(Failed, 1, Queued, 10, "Retry");
    retry.new_attempt = Some(2);
    let record = table.apply("job-1", &retry).await?;

    assert_eq!((record.state, record.attempt), (Queued, 2));
    assert_eq!(record.state_times, BTreeMap::from([(Queued, at(10))]), "the state times of attempt 2 only");
    assert_eq!(
        (record.pod_name, record.node, record.exit_code, record.failure_class, record.termination_message),
        (None, None, None, None, None),
        "the per-attempt fields of attempt 1 are gone"
    );
    assert_eq!(record.expires_at, None, "a queued job never expires");
    let moves: Vec<_> = record.history.iter().map(|t| (t.from, t.to, t.attempt)).collect();
    assert_eq!(
        moves,
        [
            (None, Queued, 1),
            (Some(Queued), SettingUp, 1),
            (Some(SettingUp), Executing, 1),
            (Some(Executing), Failed, 1),
            (Some(Failed), Queued, 2),
        ],
        "the history keeps attempt 1"
    );
    let item = table.raw_item("job-1").await?.context("the item exists")?;
    for gone in ["pod_name", "node", "exit_code", "failure_class", "termination_message", "expires_at"] {
        assert_eq!(item.get(gone), None, "{gone} is removed from the item");
    }
    let listed = eventually("the retried job back in the active index", TIMEOUT, POLL, || async {
        let pages = table.active_pages(10).await.ok()?;
        let jobs: Vec<_> = pages.into_iter().flat_map(|page| page.jobs).collect();
        (!jobs.is_empty()).then_some(jobs)
    })
    .await;
    assert_eq!(listed.iter().map(|job| (job.job_id.as_str(), job.attempt)).collect::<Vec<_>>(), [("job-1", 2)]);

    // Attempt 2 goes on like any attempt.
    let mut setting_up = change(Queued, 2, SettingUp, 11, "PodCreated");
    setting_up.pod_name = Some("job-1-a2".into());
    let record = table.apply("job-1", &setting_up).await?;
    assert_eq!(record.state_times, BTreeMap::from([(Queued, at(10)), (SettingUp, at(11))]));
    assert_eq!(record.pod_name.as_deref(), Some("job-1-a2"));
    table.delete().await
}

#[tokio::test]
async fn given_25_active_jobs_among_terminal_ones_when_paging_by_10_then_3_pages_hold_every_active_job_once_oldest_update_first()
-> anyhow::Result<()> {
    let table = Table::new().await;
    let mut active = BTreeSet::new();
    for i in 0..25_i64 {
        // Creation times out of id order, so the pages must follow updated_at.
        let job_id = format!("job-{i:02}");
        table.store.create(&queued(&job_id, (i * 7) % 25)).await?;
        // A mix of the three active states, some updated after creation.
        let moved = match i % 3 {
            1 => Some(SettingUp),
            2 => Some(Executing),
            _ => None,
        };
        if let Some(to) = moved {
            table.apply(&job_id, &change(Queued, 1, to, 30 + i, "Moved")).await?;
        }
        active.insert(job_id);
    }
    for (i, terminal) in [Succeeded, Failed, Cancelled].into_iter().enumerate() {
        let job_id = format!("done-{i}");
        table.store.create(&queued(&job_id, 0)).await?;
        table.apply(&job_id, &change(Queued, 1, terminal, 1, "Finished")).await?;
    }
    let rejected = JobRecord::new("done-rejected", Rejected, Source::Direct, at(0), "Invalid", "no image");
    table.store.create(&rejected).await?;

    // The index is eventually consistent on DynamoDB: wait until it shows every job.
    let pages = eventually("all 25 active jobs in the index", TIMEOUT, POLL, || async {
        let pages = table.active_pages(10).await.ok()?;
        (pages.iter().map(|page| page.jobs.len()).sum::<usize>() == active.len()).then_some(pages)
    })
    .await;

    let sizes: Vec<_> = pages.iter().map(|page| page.jobs.len()).collect();
    assert_eq!(sizes, [10, 10, 5], "three pages, the last one without a next token");
    assert!(pages[2].next.is_none());
    let jobs: Vec<_> = pages.into_iter().flat_map(|page| page.jobs).collect();
    let listed: BTreeSet<_> = jobs.iter().map(|job| job.job_id.clone()).collect();
    assert_eq!(listed.len(), jobs.len(), "no job is listed twice");
    assert_eq!(listed, active, "every active job is listed, no terminal one");
    assert!(jobs.iter().all(|job| job.state.is_active()));
    assert!(jobs.windows(2).all(|pair| pair[0].updated_at <= pair[1].updated_at), "oldest update first");
    assert_eq!(jobs.first().map(|job| job.updated_at), Some(at(0)));
    table.delete().await
}

#[tokio::test]
async fn given_jobs_in_every_state_when_the_active_index_is_queried_then_it_holds_only_the_queued_setting_up_and_executing_ones()
-> anyhow::Result<()> {
    let table = Table::new().await;
    for (i, state) in JobState::ALL.into_iter().enumerate() {
        let job_id = state.as_str();
        if state == Rejected {
            let record = JobRecord::new(job_id, Rejected, Source::Direct, at(0), "Invalid", "no image");
            table.store.create(&record).await?;
        } else {
            table.store.create(&queued(job_id, i as i64)).await?;
            if state != Queued {
                table.apply(job_id, &change(Queued, 1, state, 10 + i as i64, "Moved")).await?;
            }
        }
    }

    // The index itself, queried as the store does: it holds only active jobs, so the
    // reconciler's cost follows them and it never needs a Scan.
    let indexed = eventually("the three active jobs in the index", TIMEOUT, POLL, || async {
        let output = table
            .ddb
            .query()
            .table_name(&table.name)
            .index_name("active")
            .key_condition_expression("active = :one")
            .expression_attribute_values(":one", s("1"))
            .send()
            .await
            .ok()?;
        let ids: Vec<_> = output
            .items()
            .iter()
            .filter_map(|item| match item.get("job_id") {
                Some(AttributeValue::S(id)) => Some(id.clone()),
                _ => None,
            })
            .collect();
        (ids.len() >= 3).then_some(ids)
    })
    .await;
    assert_eq!(indexed, ["queued", "setting_up", "executing"], "ordered by updated_at");
    let page = table.store.active(100, None).await?;
    assert_eq!(page.jobs.iter().map(|job| job.state).collect::<Vec<_>>(), [Queued, SettingUp, Executing]);
    assert_eq!(page.next, None);

    // The table is what the SAM template must also declare.
    let described = table.ddb.describe_table().table_name(&table.name).send().await?;
    let description = described.table().context("the table is described")?;
    let index = description
        .global_secondary_indexes()
        .iter()
        .find(|index| index.index_name() == Some("active"))
        .context("the active index exists")?;
    let keys: Vec<_> = index.key_schema().iter().map(|key| (key.attribute_name(), key.key_type().clone())).collect();
    assert_eq!(keys, [("active", KeyType::Hash), ("updated_at", KeyType::Range)]);
    assert_eq!(index.projection().and_then(|p| p.projection_type()), Some(&ProjectionType::All));
    let ttl = table.ddb.describe_time_to_live().table_name(&table.name).send().await?;
    let ttl = ttl.time_to_live_description().context("TTL is described")?;
    assert_eq!(ttl.attribute_name(), Some("expires_at"));
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
    table.delete().await
}

#[tokio::test]
async fn given_five_writers_racing_on_the_same_move_when_they_write_at_once_then_exactly_one_applies_and_the_history_has_one_entry_for_it()
-> anyhow::Result<()> {
    let table = Table::new().await;
    table.store.create(&queued("job-1", 0)).await?;

    let writers = (0..5).map(|writer| {
        let store = table.store.clone();
        let mut change = change(Queued, 1, SettingUp, 1 + writer, "PodCreated");
        change.pod_name = Some(format!("writer-{writer}"));
        tokio::spawn(async move { store.change("job-1", &change).await })
    });
    let mut applied = Vec::new();
    let mut conflicts = 0;
    for writer in writers.collect::<Vec<_>>() {
        match writer.await?? {
            Changed::Applied(record) => applied.push(record),
            Changed::Conflict(Some(current)) if current.state == SettingUp => conflicts += 1,
            other => bail!("unexpected outcome {other:?}"),
        }
    }

    assert_eq!((applied.len(), conflicts), (1, 4), "one writer wins, the others see its record");
    let record = table.store.get("job-1").await?.context("the job exists")?;
    assert_eq!(record.pod_name, applied[0].pod_name, "the winner's pod is recorded");
    assert_eq!(record.history.len(), 2, "one history entry for the one move");
    table.delete().await
}

#[tokio::test]
async fn given_an_item_with_an_unknown_state_when_it_is_read_then_the_error_names_the_job_and_the_attribute()
-> anyhow::Result<()> {
    let table = Table::new().await;
    table.store.create(&queued("job-1", 0)).await?;
    table
        .ddb
        .update_item()
        .table_name(&table.name)
        .key("job_id", s("job-1"))
        .update_expression("SET #state = :state")
        .expression_attribute_names("#state", "state")
        .expression_attribute_values(":state", s("running"))
        .send()
        .await?;

    match table.store.get("job-1").await {
        Err(err @ Error::CorruptRecord { .. }) => {
            let text = err.to_string();
            assert!(text.contains("\"job-1\"") && text.contains("attribute `state`"), "{text}");
            assert!(!err.is_retryable());
        }
        other => bail!("expected a corrupt record error, got {other:?}"),
    }
    table.delete().await
}

#[tokio::test]
async fn given_a_missing_table_or_an_unreachable_endpoint_when_the_store_is_used_then_only_the_unreachable_endpoint_is_worth_retrying()
-> anyhow::Result<()> {
    let stack = Stack::from_env().await;
    let missing = DynamoJobStore::new(stack.dynamodb(), unique_name("no-such-table"));
    let err = missing.get("job-1").await.expect_err("a missing table fails");
    assert!(matches!(err, Error::Store { operation: "get job", .. }), "{err:?}");
    assert!(!err.is_retryable(), "a missing table is a deployment error: {err:?}");
    let err = missing.create(&queued("job-1", 0)).await.expect_err("a missing table fails");
    assert!(!err.is_retryable(), "{err:?}");

    // Port 1 on loopback refuses connections; the SDK's own retries are off so the
    // test does not wait for its back-off.
    let config = aws_sdk_dynamodb::config::Builder::from(&stack.aws)
        .endpoint_url("http://127.0.0.1:1")
        .retry_config(RetryConfig::disabled())
        .build();
    let unreachable = DynamoJobStore::new(aws_sdk_dynamodb::Client::from_conf(config), "jobs");
    let err = unreachable.get("job-1").await.expect_err("nothing listens on port 1");
    assert!(err.is_retryable(), "a connection failure is worth retrying: {err:?}");
    let err = unreachable.active(10, None).await.expect_err("nothing listens on port 1");
    assert!(matches!(err, Error::Store { operation: "query active jobs", retryable: true, .. }), "{err:?}");
    Ok(())
}
