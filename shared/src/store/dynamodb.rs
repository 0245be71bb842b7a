//! The DynamoDB job store: one item per job, every state change one conditional
//! `UpdateItem`, and a sparse index of the active jobs for the reconciler.
//!
//! # Table design
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `job_id` | S | partition key (no sort key): the job's idempotency key |
//! | `state` | S | [`JobState::as_str`] (`queued`, `setting_up`, ...) |
//! | `attempt` | N | 1 for the first attempt, +1 per retry |
//! | `spec` | S | the validated job as JSON text (absent for rejected submissions) |
//! | `namespace`, `pod_name`, `node` | S | where the current attempt runs, once known |
//! | `source` | M | `{kind: "sqs", message_id}`, `{kind: "event_bridge", event_id}`, `{kind: "schedule", schedule, scheduled_time}` or `{kind: "direct"}` |
//! | `created_at`, `updated_at` | S | RFC 3339, UTC, exactly nine fractional digits: text order is time order |
//! | `state_times` | M | state name → timestamp (S), for the current attempt |
//! | `exit_code` | N | the container's exit code |
//! | `failure_class`, `reason`, `message`, `termination_message` | S | why the job is where it is |
//! | `history` | L of M | every transition: `at`, `from` (absent at first), `to`, `reason`, `message`; `attempt` (N) |
//! | `expires_at` | N | the table's TTL attribute (seconds since the epoch); only on terminal records |
//! | `active` | S | `"1"` while the job is queued, setting up or executing, or failed with its retry owed ([`JobRecord::retry_pending`], read back from this attribute); absent otherwise |
//!
//! Absent optional fields are absent attributes (never `NULL`), so `REMOVE` is the one
//! way a field is cleared.
//!
//! `spec` is JSON text rather than a map: the store never reads into it, and text
//! keeps the JSON exactly as validated (a map would turn every number into `N`, losing
//! the difference between `1` and `1.0`, and would need a converter both ways for a
//! value nobody queries by attribute). The console shows it as readable JSON anyway.
//!
//! ## The `active` index
//!
//! A global secondary index named `active`, partition key `active` (S), sort key
//! `updated_at` (S), projection ALL. Only items that carry the `active` attribute are
//! in it, and a job carries it exactly while its state is active: a terminal
//! transition `REMOVE`s it in the same update that changes the state, and a retry back
//! to `queued` `SET`s it again. The reconciler therefore reads active jobs with a
//! `Query` on one key, oldest update first, never a `Scan` of the table, and its cost
//! grows with the number of active jobs, not with the history of the table.
//!
//! The price is one index partition: every active job shares the partition key `"1"`,
//! and a DynamoDB partition takes about 1,000 write units per second (one unit per
//! started KB of the projected item) and 3,000 read units. Every change of an active
//! job rewrites its index entry (a changed sort key is a delete plus a put, so two
//! index writes), and with projection ALL each write is the whole item, history
//! included. The model user's ~10,000 jobs a day are about four transitions each, a
//! few writes per second on average; a spike of a few thousand jobs dispatched within
//! a minute stays around a few hundred units per second with items of 1–3 KB. That is
//! well inside one partition, but not by orders of magnitude: if the index ever
//! throttles, DynamoDB throttles the table's writes with it. The way out, if it is ever
//! needed, is to write `active` as one of N shard values (from a hash of the job id)
//! and query the N partitions; the page token would then carry one position per shard.
//! The index is also eventually consistent: a job that just changed may appear in a
//! page with its previous state, which is why the reconciler acts through conditional
//! changes, never on a page alone.
//!
//! ## The `waiting` index
//!
//! A second sparse index, `waiting`: partition key `wait_queue` (S), sort key
//! `wait_order` (S), projection ALL. A job carries both attributes exactly while it
//! waits for room in its queue (`queued`, reason `Waiting`): the change that makes it
//! wait `SET`s them ([`podbridge_core::record::WaitPlace`]), every other change
//! `REMOVE`s them. The order key's text order is the queue's admission order, so the
//! jobs next in line are a `Query` with a small `Limit`, and a job's position is a
//! `Query` with `Select = COUNT` below its key. One partition per queue.
//!
//! ## Writes
//!
//! - Create: `PutItem` with `attribute_not_exists(job_id)`. When the job exists, the
//!   existing item comes back with the failed condition
//!   (`ReturnValuesOnConditionCheckFailure = ALL_OLD`), so a redelivery costs no
//!   second read.
//! - Change: one `UpdateItem` with the condition `#state = :expected AND #attempt =
//!   :expected_attempt`, appending to `history` with `list_append`, returning `ALL_NEW`;
//!   on a failed condition the current item comes back with the error (`ALL_OLD`), or
//!   nothing when the job does not exist (the condition also keeps `UpdateItem` from
//!   creating an item).
//! - A write whose answer was lost is repeated by the SDK, and the repeat fails its
//!   condition on the first one's write: a create that finds its own record answers
//!   [`Created::New`], a change that finds its own transition last in the history
//!   answers [`Changed::Applied`] (see [`crate::store`]'s `is_own_create` and
//!   `is_own_change`).
//! - A retry (`new_attempt`) replaces `state_times` and removes the per-attempt fields
//!   (`pod_name`, `node`, `exit_code`, `failure_class`, `termination_message`) unless
//!   the change sets them; `history` is kept.
//!
//! ## Page tokens
//!
//! The `next` token of an [`ActivePage`] is the position after the page's last job:
//! the JSON object `{"job_id": ..., "updated_at": ...}` encoded as unpadded base64url.
//! It is rebuilt into the index's `ExclusiveStartKey` (the constant `active` added).
//! The query asks for one job more than the page size, so `next` is `None` exactly
//! when no job follows: there is no trailing empty page.
//!
//! ## Items are bounded
//!
//! An item is at most 400 KB. `history` grows by one entry (a few hundred bytes) per
//! transition and the termination message is capped by Kubernetes at 4 KB, so even a
//! job retried many times stays far below the limit.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{BuildError, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ReturnValue, ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{ActivePage, Changed, Created, JobStore, is_own_change, is_own_create};
use podbridge_core::FailureClass;
use podbridge_core::record::{JobRecord, Source, StateChange, Transition, WaitPlace};
use podbridge_core::state::JobState;

/// The name of the sparse index of active jobs.
pub const ACTIVE_INDEX: &str = "active";
/// The name of the sparse index of jobs waiting for room, by queue in admission order.
pub const WAITING_INDEX: &str = "waiting";
/// The value of the `active` attribute while a job is active.
const ACTIVE: &str = "1";
/// The table's TTL attribute.
pub const TTL_ATTRIBUTE: &str = "expires_at";
/// How long [`create_table`] waits for the new table to become ACTIVE. On-demand
/// tables usually take a few seconds; moto answers at once.
const TABLE_READY_TIMEOUT: Duration = Duration::from_secs(120);
const TABLE_READY_POLL: Duration = Duration::from_millis(250);

/// The job store on a DynamoDB table laid out as the module documentation describes.
#[derive(Debug, Clone)]
pub struct DynamoJobStore {
    pub(crate) client: Client,
    table: String,
    /// The queue table ([`crate::store::queue_table`]), when the deployment has one.
    pub(crate) queue_table: Option<String>,
}

impl DynamoJobStore {
    /// A store on `table`, which must exist (see [`create_table`]).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into(), queue_table: None }
    }

    /// The same store with its queue table (see [`crate::store::queue_table::create_table`]).
    pub fn with_queue_table(mut self, table: impl Into<String>) -> Self {
        self.queue_table = Some(table.into());
        self
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The jobs in the ended states among `states`, only those of `namespace` and only
    /// those whose state changed at or after `since` when given, in no particular order.
    ///
    /// Ended jobs are in no index, so this is a `Scan` of the table with a filter:
    /// DynamoDB reads (and bills) every item it passes, matching or not. It reads page
    /// after page until at least `enough` jobs have matched or the table ends, and
    /// returns every match of the pages it read (so possibly more than `enough`). The
    /// active states among `states` are left out: [`JobStore::active`] reads those jobs
    /// from the index.
    pub async fn ended(
        &self,
        states: &[JobState],
        namespace: Option<&str>,
        since: Option<Timestamp>,
        enough: usize,
    ) -> Result<Vec<JobRecord>> {
        let mut ended: Vec<JobState> = states.iter().copied().filter(|state| state.is_terminal()).collect();
        ended.sort();
        ended.dedup();
        if ended.is_empty() {
            return Ok(Vec::new());
        }
        // `#`-names throughout: `state` and `namespace` are DynamoDB reserved words.
        let mut names = HashMap::from([("#state".to_owned(), "state".to_owned())]);
        let mut values = HashMap::new();
        let placeholders: Vec<String> = ended
            .iter()
            .enumerate()
            .map(|(index, state)| {
                let placeholder = format!(":state{index}");
                values.insert(placeholder.clone(), s(state.as_str()));
                placeholder
            })
            .collect();
        let mut conditions = vec![format!("#state IN ({})", placeholders.join(", "))];
        if let Some(namespace) = namespace {
            names.insert("#namespace".to_owned(), "namespace".to_owned());
            values.insert(":namespace".to_owned(), s(namespace));
            conditions.push("#namespace = :namespace".to_owned());
        }
        if let Some(since) = since {
            // Stored times have nine fractional digits, so text order is time order.
            names.insert("#updated_at".to_owned(), "updated_at".to_owned());
            values.insert(":since".to_owned(), s(timestamp_text(since)));
            conditions.push("#updated_at >= :since".to_owned());
        }
        let filter = conditions.join(" AND ");
        let mut jobs = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression(&filter)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|err| store_error("scan for ended jobs", err))?;
            for item in output.items() {
                jobs.push(decode(string_attr(item, "job_id").unwrap_or("<no job_id>"), item)?);
            }
            start = output.last_evaluated_key;
            if jobs.len() >= enough || start.is_none() {
                return Ok(jobs);
            }
        }
    }

    /// A conditional put of `record` under `condition` (with its placeholders), as it
    /// answered; `Exists` carries what stood in its place. A repeated request whose first
    /// try was applied counts as written ([`is_own_create`]).
    async fn put_if(
        &self,
        record: &JobRecord,
        condition: &str,
        names: &[(&str, &str)],
        values: Vec<(&str, AttributeValue)>,
        operation: &'static str,
    ) -> Result<Created> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(encode(record)))
            .condition_expression(condition)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        for (placeholder, name) in names {
            put = put.expression_attribute_names(*placeholder, *name);
        }
        for (placeholder, value) in values {
            put = put.expression_attribute_values(placeholder, value);
        }
        let created = match put.send().await {
            Ok(_) => Created::New,
            Err(err) => match err.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(failed)) => match failed.item() {
                    Some(item) => Created::Exists(Box::new(decode(&record.job_id, item)?)),
                    None => self.existing(&record.job_id).await?,
                },
                _ => return Err(store_error(operation, err)),
            },
        };
        Ok(match created {
            Created::Exists(existing) if is_own_create(&existing, record) => Created::New,
            created => created,
        })
    }

    /// Reads the current item after a conditional put failed without returning it.
    /// DynamoDB always returns it (`ALL_OLD`); this is only for emulators that do not.
    async fn existing(&self, job_id: &str) -> Result<Created> {
        match self.get(job_id).await? {
            Some(record) => Ok(Created::Exists(Box::new(record))),
            // Deleted between the failed put and the read (TTL on a terminal record):
            // trying again will write it.
            None => Err(Error::Store {
                operation: "create job",
                retryable: true,
                source: format!("job {job_id:?} existed at the conditional put and was gone on the read after it")
                    .into(),
            }),
        }
    }

    /// The conditional update of [`JobStore::change`], as it answered.
    async fn update(&self, job_id: &str, change: &StateChange) -> Result<Updated> {
        let update = update_for(change);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("job_id", AttributeValue::S(job_id.to_owned()))
            .update_expression(update.expression())
            .condition_expression("#state = :expected AND #attempt = :expected_attempt")
            .set_expression_attribute_names(Some(update.names))
            .set_expression_attribute_values(Some(update.values))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => match output.attributes() {
                Some(item) => Ok(Updated::Done(Changed::Applied(Box::new(decode(job_id, item)?)))),
                None => Err(Error::CorruptRecord {
                    job_id: job_id.to_owned(),
                    message: "UpdateItem with ReturnValues ALL_NEW returned no attributes".to_owned(),
                }),
            },
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    Ok(Updated::Done(match failed.item().map(|item| decode(job_id, item)).transpose()? {
                        Some(current) if is_own_change(&current, change) => Changed::Applied(Box::new(current)),
                        current => Changed::Conflict(current.map(Box::new)),
                    }))
                }
                _ if is_item_too_large(&err) => Ok(Updated::TooLarge),
                _ => Err(store_error("change job state", err)),
            },
        }
    }

    /// Writes the record back with its history compacted ([`JobRecord::compacted`]),
    /// only if it is still the record that was read.
    async fn compact(&self, job_id: &str) -> Result<()> {
        let Some(record) = self.get(job_id).await? else { return Ok(()) };
        let compacted = record.compacted();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(encode(&compacted)))
            .condition_expression("#state = :state AND #attempt = :attempt AND updated_at = :updated")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#attempt", "attempt")
            .expression_attribute_values(":state", s(record.state.as_str()))
            .expression_attribute_values(":attempt", n(record.attempt))
            .expression_attribute_values(":updated", s(timestamp_text(record.updated_at)))
            .send()
            .await;
        match result {
            Ok(_) => {
                tracing::warn!(
                    job_id,
                    kept = compacted.history.len(),
                    was = record.history.len(),
                    "the record's history was compacted to stay within DynamoDB's item size"
                );
                Ok(())
            }
            // Moved meanwhile: the change that follows finds out.
            Err(err) if matches!(err.as_service_error(), Some(PutItemError::ConditionalCheckFailedException(_))) => {
                Ok(())
            }
            Err(err) => Err(store_error("compact a job record", err)),
        }
    }
}

impl JobStore for DynamoJobStore {
    async fn create(&self, record: &JobRecord) -> Result<Created> {
        self.put_if(record, "attribute_not_exists(job_id)", &[], Vec::new(), "create job").await
    }

    async fn replace_tombstone(&self, record: &JobRecord, tombstone: &JobRecord) -> Result<Created> {
        // Only the tombstone that was read: still cancelled, never submitted, and the
        // same write (its creation time is taken to the nanosecond).
        let condition = "attribute_not_exists(job_id) OR (#state = :cancelled AND attribute_not_exists(spec) AND created_at = :created)";
        let values = vec![
            (":cancelled", s(JobState::Cancelled.as_str())),
            (":created", s(timestamp_text(tombstone.created_at))),
        ];
        self.put_if(record, condition, &[("#state", "state")], values, "replace a cancel recorded before its job").await
    }

    async fn get(&self, job_id: &str) -> Result<Option<JobRecord>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("job_id", AttributeValue::S(job_id.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| store_error("get job", err))?;
        output.item().map(|item| decode(job_id, item)).transpose()
    }

    async fn change(&self, job_id: &str, change: &StateChange) -> Result<Changed> {
        super::debug_assert_allowed(job_id, change);
        match self.update(job_id, change).await? {
            Updated::Done(changed) => Ok(changed),
            // The history has grown past what an item may hold: write the record back
            // compacted (its first and last entries kept), then the change.
            Updated::TooLarge => {
                self.compact(job_id).await?;
                match self.update(job_id, change).await? {
                    Updated::Done(changed) => Ok(changed),
                    Updated::TooLarge => Err(Error::Store {
                        operation: "change job state",
                        retryable: false,
                        source: format!("job {job_id}'s record is over DynamoDB's item size even compacted").into(),
                    }),
                }
            }
        }
    }

    async fn active(&self, page_size: u32, from: Option<&str>) -> Result<ActivePage> {
        // DynamoDB refuses a Limit of 0, and a page of nothing would never advance.
        let page_size = page_size.max(1);
        let start = from.map(decode_token).transpose()?;
        let limit = i32::try_from(page_size.saturating_add(1)).unwrap_or(i32::MAX);
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(ACTIVE_INDEX)
            .key_condition_expression("#active = :active")
            .expression_attribute_names("#active", "active")
            .expression_attribute_values(":active", AttributeValue::S(ACTIVE.to_owned()))
            .set_exclusive_start_key(start)
            .limit(limit)
            .send()
            .await
            .map_err(|err| store_error("query active jobs", err))?;

        let mut items = output.items().iter().collect::<Vec<_>>();
        let more = items.len() > page_size as usize || output.last_evaluated_key().is_some();
        items.truncate(page_size as usize);
        let next = match (more, items.last()) {
            (false, _) => None,
            (true, Some(last)) => Some(encode_token(last)?),
            // A page cut short by DynamoDB's 1 MB limit before any item: continue
            // from where DynamoDB stopped.
            (true, None) => output.last_evaluated_key().map(encode_token).transpose()?,
        };
        let jobs = items
            .into_iter()
            .map(|item| decode(string_attr(item, "job_id").unwrap_or("<no job_id>"), item))
            .collect::<Result<Vec<_>>>()?;
        Ok(ActivePage { jobs, next })
    }

    async fn waiting(&self, queue: &str, limit: u32) -> Result<Vec<JobRecord>> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(WAITING_INDEX)
            .key_condition_expression("wait_queue = :queue")
            .expression_attribute_values(":queue", s(queue))
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|err| store_error("query waiting jobs", err))?;
        output.items().iter().map(|item| decode(string_attr(item, "job_id").unwrap_or("<no job_id>"), item)).collect()
    }

    async fn ahead_of(&self, record: &JobRecord) -> Result<Option<u64>> {
        let Some(place) = &record.wait else { return Ok(None) };
        let mut ahead = 0_u64;
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(WAITING_INDEX)
                .key_condition_expression("wait_queue = :queue AND wait_order < :order")
                .expression_attribute_values(":queue", s(&place.queue))
                .expression_attribute_values(":order", s(&place.order))
                .select(aws_sdk_dynamodb::types::Select::Count)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|err| store_error("count the jobs waiting ahead", err))?;
            ahead += u64::try_from(output.count()).unwrap_or_default();
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(Some(ahead));
            }
        }
    }
}

/// Creates the job table with its `active` index (on-demand billing), waits until it
/// is ACTIVE, and turns on TTL on `expires_at`.
///
/// For tests and the local stack; deployed tables come from the SAM template, which
/// must describe the same keys, index and TTL attribute. Fails if the table exists.
pub async fn create_table(client: &Client, table: &str) -> Result<()> {
    let build = |err: BuildError| Error::Store { operation: "create table", retryable: false, source: err.into() };
    let string_attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(build)
    };
    let key = |name: &str, key_type: KeyType| {
        KeySchemaElement::builder().attribute_name(name).key_type(key_type).build().map_err(build)
    };
    let index = |name: &str, hash: &str, range: &str| {
        GlobalSecondaryIndex::builder()
            .index_name(name)
            .key_schema(key(hash, KeyType::Hash)?)
            .key_schema(key(range, KeyType::Range)?)
            .projection(Projection::builder().projection_type(ProjectionType::All).build())
            .build()
            .map_err(build)
    };
    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(string_attr("job_id")?)
        .attribute_definitions(string_attr("active")?)
        .attribute_definitions(string_attr("updated_at")?)
        .attribute_definitions(string_attr("wait_queue")?)
        .attribute_definitions(string_attr("wait_order")?)
        .key_schema(key("job_id", KeyType::Hash)?)
        .global_secondary_indexes(index(ACTIVE_INDEX, "active", "updated_at")?)
        .global_secondary_indexes(index(WAITING_INDEX, "wait_queue", "wait_order")?)
        .send()
        .await
        .map_err(|err| store_error("create table", err))?;

    wait_until_active(client, table).await?;

    let ttl = TimeToLiveSpecification::builder().attribute_name(TTL_ATTRIBUTE).enabled(true).build().map_err(build)?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(ttl)
        .send()
        .await
        .map_err(|err| store_error("enable TTL", err))?;
    Ok(())
}

/// Waits until a table just created is ACTIVE.
pub(crate) async fn wait_until_active(client: &Client, table: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + TABLE_READY_TIMEOUT;
    loop {
        let described =
            client.describe_table().table_name(table).send().await.map_err(|err| store_error("describe table", err))?;
        if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout { operation: "create table", after: TABLE_READY_TIMEOUT });
        }
        tokio::time::sleep(TABLE_READY_POLL).await;
    }
}

// ---------------------------------------------------------------------------------
// Errors

/// What the conditional update of a change answered.
enum Updated {
    Done(Changed),
    /// DynamoDB refused it: the item would exceed its size limit.
    TooLarge,
}

/// Whether DynamoDB refused a write because the item would be over 400 KB.
fn is_item_too_large<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    let SdkError::ServiceError(service) = err else { return false };
    service.err().code() == Some("ValidationException")
        && service.err().message().is_some_and(|m| m.contains("exceeded the maximum allowed size"))
}

/// Wraps an SDK error, deciding once whether the call is worth repeating.
pub(crate) fn store_error<E>(operation: &'static str, err: SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let retryable = match &err {
        // The request could not even be built: the same input fails the same way.
        SdkError::ConstructionFailure(_) => false,
        SdkError::ServiceError(service) => {
            retryable_service_error(service.err().code(), service.raw().status().as_u16())
        }
        // Timeouts, connection failures and unreadable responses say nothing about the
        // request itself; the SDK has already retried them, later may work.
        _ => true,
    };
    Error::Store { operation, retryable, source: err.into() }
}

/// Whether a DynamoDB error answer is worth retrying: throttling, capacity and server
/// errors are; a malformed request, a missing table or missing permissions are not.
fn retryable_service_error(code: Option<&str>, status: u16) -> bool {
    match code {
        Some(
            "ThrottlingException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "LimitExceededException"
            | "TransactionConflictException"
            | "InternalServerError"
            | "ServiceUnavailable"
            // The SDK refreshes credentials; the next attempt signs with new ones.
            | "ExpiredTokenException",
        ) => true,
        Some(
            "ValidationException"
            | "SerializationException"
            | "ResourceNotFoundException"
            | "ResourceInUseException"
            | "AccessDeniedException"
            | "UnrecognizedClientException"
            | "MissingAuthenticationTokenException"
            | "InvalidSignatureException"
            | "ItemCollectionSizeLimitExceededException",
        ) => false,
        _ => status == 429 || status >= 500,
    }
}

// ---------------------------------------------------------------------------------
// Records to items

/// A timestamp as stored: UTC with nine fractional digits, so that text order (the
/// index's sort order) is time order.
fn timestamp_text(at: Timestamp) -> String {
    format!("{at:.9}")
}

pub(crate) fn s(text: impl Into<String>) -> AttributeValue {
    AttributeValue::S(text.into())
}

pub(crate) fn n(number: impl ToString) -> AttributeValue {
    AttributeValue::N(number.to_string())
}

/// The item of `record`. `active` is derived from the state, and `expires_at` is kept
/// only on terminal records: the TTL must never delete a job that is still followed.
fn encode(record: &JobRecord) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        ("job_id".to_owned(), s(&record.job_id)),
        ("state".to_owned(), s(record.state.as_str())),
        ("attempt".to_owned(), n(record.attempt)),
        ("source".to_owned(), encode_source(&record.source)),
        ("created_at".to_owned(), s(timestamp_text(record.created_at))),
        ("updated_at".to_owned(), s(timestamp_text(record.updated_at))),
        ("state_times".to_owned(), encode_state_times(&record.state_times)),
        ("history".to_owned(), AttributeValue::L(record.history.iter().map(encode_transition).collect())),
    ]);
    let mut optional = |name: &str, value: Option<AttributeValue>| {
        if let Some(value) = value {
            item.insert(name.to_owned(), value);
        }
    };
    optional("spec", record.spec.as_ref().map(|spec| s(spec.to_string())));
    optional("namespace", record.namespace.as_ref().map(s));
    optional("pod_name", record.pod_name.as_ref().map(s));
    optional("node", record.node.as_ref().map(s));
    optional("exit_code", record.exit_code.map(n));
    optional("failure_class", record.failure_class.map(|c| s(c.as_str())));
    optional("reason", record.reason.as_ref().map(s));
    optional("message", record.message.as_ref().map(s));
    optional("termination_message", record.termination_message.as_ref().map(s));
    optional(TTL_ATTRIBUTE, record.expires_at.filter(|_| !record.is_followed()).map(n));
    optional("active", record.is_followed().then(|| s(ACTIVE)));
    optional("wait_queue", record.wait.as_ref().map(|w| s(&w.queue)));
    optional("wait_order", record.wait.as_ref().map(|w| s(&w.order)));
    item
}

fn encode_source(source: &Source) -> AttributeValue {
    let map = match source {
        Source::Sqs { message_id } => {
            HashMap::from([("kind".to_owned(), s("sqs")), ("message_id".to_owned(), s(message_id))])
        }
        Source::EventBridge { event_id } => {
            HashMap::from([("kind".to_owned(), s("event_bridge")), ("event_id".to_owned(), s(event_id))])
        }
        Source::Schedule { schedule, scheduled_time } => HashMap::from([
            ("kind".to_owned(), s("schedule")),
            ("schedule".to_owned(), s(schedule)),
            ("scheduled_time".to_owned(), s(scheduled_time)),
        ]),
        Source::Direct => HashMap::from([("kind".to_owned(), s("direct"))]),
    };
    AttributeValue::M(map)
}

fn encode_state_times(times: &BTreeMap<JobState, Timestamp>) -> AttributeValue {
    AttributeValue::M(times.iter().map(|(state, at)| (state.as_str().to_owned(), s(timestamp_text(*at)))).collect())
}

fn encode_transition(transition: &Transition) -> AttributeValue {
    let mut map = HashMap::from([
        ("at".to_owned(), s(timestamp_text(transition.at))),
        ("to".to_owned(), s(transition.to.as_str())),
        ("attempt".to_owned(), n(transition.attempt)),
        ("reason".to_owned(), s(&transition.reason)),
        ("message".to_owned(), s(&transition.message)),
    ]);
    if let Some(from) = transition.from {
        map.insert("from".to_owned(), s(from.as_str()));
    }
    AttributeValue::M(map)
}

/// An `UpdateItem`'s expression and its placeholders, built so that every placeholder
/// is used (DynamoDB refuses unused ones) and no path is both set and removed.
#[derive(Debug, Default)]
struct Update {
    set: Vec<String>,
    remove: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Update {
    /// The placeholder of an attribute name. Every name goes through one, since
    /// `state`, `source`, `message` and others are DynamoDB reserved words.
    fn name(&mut self, attribute: &str) -> String {
        let placeholder = format!("#{attribute}");
        self.names.insert(placeholder.clone(), attribute.to_owned());
        placeholder
    }

    fn value(&mut self, placeholder: &str, value: AttributeValue) -> String {
        self.values.insert(placeholder.to_owned(), value);
        placeholder.to_owned()
    }

    fn set(&mut self, attribute: &str, value: AttributeValue) {
        let name = self.name(attribute);
        let value = self.value(&format!(":{attribute}"), value);
        self.set.push(format!("{name} = {value}"));
    }

    fn remove(&mut self, attribute: &str) {
        let name = self.name(attribute);
        self.remove.push(name);
    }

    fn expression(&self) -> String {
        let mut expression = format!("SET {}", self.set.join(", "));
        if !self.remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", self.remove.join(", ")));
        }
        expression
    }
}

/// The update that applies `change`, with the placeholders of its condition
/// (`#state = :expected AND #attempt = :expected_attempt`). It means what
/// [`JobRecord::apply`] does in memory.
fn update_for(change: &StateChange) -> Update {
    let mut update = Update::default();
    let at = timestamp_text(change.at);
    let attempt = change.new_attempt.unwrap_or(change.expected_attempt);

    update.value(":expected", s(change.expected.as_str()));
    update.value(":expected_attempt", n(change.expected_attempt));
    update.set("state", s(change.to.as_str()));
    update.set("updated_at", s(&at));
    update.set("reason", s(&change.reason));
    update.set("message", s(&change.message));
    if let Some(new_attempt) = change.new_attempt {
        update.set("attempt", n(new_attempt));
        // A new attempt starts a new set of state times.
        update.set("state_times", AttributeValue::M(HashMap::from([(change.to.as_str().to_owned(), s(&at))])));
    } else {
        // `#attempt` is still needed by the condition.
        update.name("attempt");
        // A waiting job told anew why it waits keeps the time it was queued.
        if change.expected != change.to {
            let times = update.name("state_times");
            let entry = update.name(change.to.as_str());
            let at = update.value(":at", s(&at));
            update.set.push(format!("{times}.{entry} = {at}"));
        }
    }

    let entry = Transition {
        at: change.at,
        from: Some(change.expected),
        to: change.to,
        attempt,
        reason: change.reason.clone(),
        message: change.message.clone(),
    };
    let history = update.name("history");
    let entry = update.value(":history_entry", AttributeValue::L(vec![encode_transition(&entry)]));
    let empty = update.value(":empty_list", AttributeValue::L(Vec::new()));
    update.set.push(format!("{history} = list_append(if_not_exists({history}, {empty}), {entry})"));

    // The per-attempt fields: set when the change carries them; a retry clears the
    // ones it does not carry, as the previous attempt's pod and outcome are not its.
    let fields = [
        ("pod_name", change.pod_name.as_ref().map(s)),
        ("node", change.node.as_ref().map(s)),
        ("exit_code", change.exit_code.map(n)),
        ("failure_class", change.failure_class.map(|c| s(c.as_str()))),
        ("termination_message", change.termination_message.as_ref().map(s)),
    ];
    for (attribute, value) in fields {
        match value {
            Some(value) => update.set(attribute, value),
            None if change.new_attempt.is_some() => update.remove(attribute),
            None => {}
        }
    }

    // Only a queued job can be waiting: a change from any other state has no place
    // to clear.
    match &change.wait {
        Some(place) => {
            update.set("wait_queue", s(&place.queue));
            update.set("wait_order", s(&place.order));
        }
        None if change.expected == JobState::Queued => {
            update.remove("wait_queue");
            update.remove("wait_order");
        }
        None => {}
    }

    if change.to.is_active() || change.retry_pending {
        update.set("active", s(ACTIVE));
        update.remove(TTL_ATTRIBUTE);
    } else {
        update.remove("active");
        match change.expires_at {
            Some(expires_at) => update.set(TTL_ATTRIBUTE, n(expires_at)),
            None => update.remove(TTL_ATTRIBUTE),
        }
    }
    update
}

// ---------------------------------------------------------------------------------
// Items to records

/// The record of `item`, or [`Error::CorruptRecord`] naming the job and the attribute.
fn decode(job_id: &str, item: &HashMap<String, AttributeValue>) -> Result<JobRecord> {
    decode_fields(item).map_err(|message| Error::CorruptRecord { job_id: job_id.to_owned(), message })
}

/// Reading failures are messages naming the attribute path (`history[2].to`).
type Decoded<T> = std::result::Result<T, String>;

fn decode_fields(item: &HashMap<String, AttributeValue>) -> Decoded<JobRecord> {
    let field = Fields { map: item, path: "" };
    let state = field.state("state")?;
    Ok(JobRecord {
        job_id: field.string("job_id")?.to_owned(),
        attempt: field.number("attempt")?,
        state,
        spec: field
            .optional_string("spec")?
            .map(|text| serde_json::from_str(text).map_err(|err| format!("attribute `spec`: not JSON: {err}")))
            .transpose()?,
        namespace: field.optional_owned("namespace")?,
        pod_name: field.optional_owned("pod_name")?,
        node: field.optional_owned("node")?,
        source: decode_source(&field.map_of("source")?)?,
        created_at: field.timestamp("created_at")?,
        updated_at: field.timestamp("updated_at")?,
        state_times: decode_state_times(&field.map_of("state_times")?)?,
        exit_code: field.optional_number("exit_code")?,
        // A class this version does not know (written by a newer one, during a rolling
        // deploy) reads as `unknown` rather than making the whole record unreadable.
        failure_class: field
            .optional_string("failure_class")?
            .map(|class| class.parse().unwrap_or(FailureClass::Unknown)),
        reason: field.optional_owned("reason")?,
        message: field.optional_owned("message")?,
        termination_message: field.optional_owned("termination_message")?,
        history: decode_history(item.get("history"))?,
        expires_at: field.optional_number(TTL_ATTRIBUTE)?,
        // A terminal record in the active index is owed its retry.
        retry_pending: field.optional_string("active")?.is_some() && state.is_terminal(),
        wait: match (field.optional_owned("wait_queue")?, field.optional_owned("wait_order")?) {
            (Some(queue), Some(order)) => Some(WaitPlace { queue, order }),
            _ => None,
        },
    })
}

/// Typed reads of one map's attributes, with `path` naming the map in messages.
struct Fields<'a> {
    map: &'a HashMap<String, AttributeValue>,
    path: &'a str,
}

impl<'a> Fields<'a> {
    fn at(&self, name: &str) -> String {
        if self.path.is_empty() { format!("attribute `{name}`") } else { format!("attribute `{}.{name}`", self.path) }
    }

    fn optional_string(&self, name: &str) -> Decoded<Option<&'a str>> {
        match self.map.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(text)) => Ok(Some(text)),
            Some(other) => Err(format!("{}: expected a string (S), found {}", self.at(name), kind(other))),
        }
    }

    fn string(&self, name: &str) -> Decoded<&'a str> {
        self.optional_string(name)?.ok_or_else(|| format!("{}: missing", self.at(name)))
    }

    fn optional_owned(&self, name: &str) -> Decoded<Option<String>> {
        Ok(self.optional_string(name)?.map(str::to_owned))
    }

    fn optional_number<T: std::str::FromStr>(&self, name: &str) -> Decoded<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        match self.map.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(text)) => {
                text.parse().map(Some).map_err(|err| format!("{}: {text:?} does not fit: {err}", self.at(name)))
            }
            Some(other) => Err(format!("{}: expected a number (N), found {}", self.at(name), kind(other))),
        }
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Decoded<T>
    where
        T::Err: std::fmt::Display,
    {
        self.optional_number(name)?.ok_or_else(|| format!("{}: missing", self.at(name)))
    }

    fn state(&self, name: &str) -> Decoded<JobState> {
        self.string(name)?.parse().map_err(|err| format!("{}: {err}", self.at(name)))
    }

    /// An optional string attribute holding one of the core's named values (a state, a
    /// failure class).
    fn optional_parsed<T: std::str::FromStr>(&self, name: &str) -> Decoded<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        self.optional_string(name)?
            .map(|text| text.parse().map_err(|err| format!("{}: {err}", self.at(name))))
            .transpose()
    }

    fn timestamp(&self, name: &str) -> Decoded<Timestamp> {
        let text = self.string(name)?;
        text.parse().map_err(|err| format!("{}: {text:?} is not an RFC 3339 timestamp: {err}", self.at(name)))
    }

    /// A nested map, read with its own path.
    fn map_of(&self, name: &'a str) -> Decoded<Fields<'a>> {
        match self.map.get(name) {
            Some(AttributeValue::M(map)) => Ok(Fields { map, path: name }),
            Some(other) => Err(format!("{}: expected a map (M), found {}", self.at(name), kind(other))),
            None => Err(format!("{}: missing", self.at(name))),
        }
    }
}

fn decode_source(fields: &Fields<'_>) -> Decoded<Source> {
    match fields.string("kind")? {
        "sqs" => Ok(Source::Sqs { message_id: fields.string("message_id")?.to_owned() }),
        "event_bridge" => Ok(Source::EventBridge { event_id: fields.string("event_id")?.to_owned() }),
        "schedule" => Ok(Source::Schedule {
            schedule: fields.string("schedule")?.to_owned(),
            scheduled_time: fields.string("scheduled_time")?.to_owned(),
        }),
        "direct" => Ok(Source::Direct),
        other => Err(format!("{}: unknown source kind {other:?}", fields.at("kind"))),
    }
}

fn decode_state_times(fields: &Fields<'_>) -> Decoded<BTreeMap<JobState, Timestamp>> {
    fields
        .map
        .keys()
        .map(|name| {
            let state = name.parse().map_err(|err| format!("{}: {err}", fields.at(name)))?;
            Ok((state, fields.timestamp(name)?))
        })
        .collect()
}

fn decode_history(value: Option<&AttributeValue>) -> Decoded<Vec<Transition>> {
    let entries = match value {
        Some(AttributeValue::L(entries)) => entries,
        Some(other) => return Err(format!("attribute `history`: expected a list (L), found {}", kind(other))),
        None => return Err("attribute `history`: missing".to_owned()),
    };
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let path = format!("history[{index}]");
            let AttributeValue::M(map) = entry else {
                return Err(format!("attribute `{path}`: expected a map (M), found {}", kind(entry)));
            };
            let fields = Fields { map, path: &path };
            Ok(Transition {
                at: fields.timestamp("at")?,
                from: fields.optional_parsed("from")?,
                to: fields.state("to")?,
                attempt: fields.number("attempt")?,
                reason: fields.string("reason")?.to_owned(),
                message: fields.string("message")?.to_owned(),
            })
        })
        .collect()
}

/// The DynamoDB type name of a value, for messages.
fn kind(value: &AttributeValue) -> &'static str {
    match value {
        AttributeValue::S(_) => "S",
        AttributeValue::N(_) => "N",
        AttributeValue::B(_) => "B",
        AttributeValue::Bool(_) => "BOOL",
        AttributeValue::Null(_) => "NULL",
        AttributeValue::M(_) => "M",
        AttributeValue::L(_) => "L",
        AttributeValue::Ss(_) => "SS",
        AttributeValue::Ns(_) => "NS",
        AttributeValue::Bs(_) => "BS",
        _ => "an unknown type",
    }
}

fn string_attr<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(text)) => Some(text),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------
// Page tokens

/// The position after a page: the index entry of its last job.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct PageToken {
    job_id: String,
    updated_at: String,
}

/// The token of the position after `key` (an item of the index, or DynamoDB's
/// `LastEvaluatedKey`, which holds the same key attributes).
fn encode_token(key: &HashMap<String, AttributeValue>) -> Result<String> {
    let attribute = |name: &str| {
        string_attr(key, name).map(str::to_owned).ok_or_else(|| Error::CorruptRecord {
            job_id: string_attr(key, "job_id").unwrap_or("<no job_id>").to_owned(),
            message: format!("attribute `{name}`: missing from an entry of the active index"),
        })
    };
    let token = PageToken { job_id: attribute("job_id")?, updated_at: attribute("updated_at")? };
    let json = serde_json::to_vec(&token).map_err(|err| Error::Store {
        operation: "query active jobs",
        retryable: false,
        source: err.into(),
    })?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

/// The `ExclusiveStartKey` of a token made by [`encode_token`].
fn decode_token(token: &str) -> Result<HashMap<String, AttributeValue>> {
    let invalid = |reason: String| Error::Store {
        operation: "query active jobs",
        retryable: false,
        source: format!("invalid page token {token:?}: {reason} (pass back the `next` of the previous page)").into(),
    };
    let json = URL_SAFE_NO_PAD.decode(token).map_err(|err| invalid(err.to_string()))?;
    let token: PageToken = serde_json::from_slice(&json).map_err(|err| invalid(err.to_string()))?;
    Ok(HashMap::from([
        ("job_id".to_owned(), s(token.job_id)),
        ("updated_at".to_owned(), s(token.updated_at)),
        ("active".to_owned(), s(ACTIVE)),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use podbridge_core::FailureClass;
    use serde_json::json;

    fn at(second: i64, nanos: i32) -> Timestamp {
        Timestamp::new(second, nanos).unwrap()
    }

    fn full_record() -> JobRecord {
        let mut record = JobRecord::new(
            "job-1",
            JobState::Queued,
            Source::Sqs { message_id: "m-1".into() },
            at(1_800_000_000, 5),
            "Dispatched",
            "received from the queue",
        );
        record.spec = Some(json!({"image": "busybox:1.36", "cpu": 0.5, "retries": 3, "args": ["a", 1.0, null]}));
        record.namespace = Some("batch".into());
        let mut change = StateChange::new(
            JobState::Queued,
            1,
            JobState::Failed,
            at(1_800_000_060, 123_456_789),
            "Error",
            "exit code 3",
        );
        change.pod_name = Some("job-1-a1".into());
        change.node = Some("node-1".into());
        change.exit_code = Some(-3);
        change.failure_class = Some(FailureClass::ExitCode);
        change.termination_message = Some("last\nlines".into());
        change.expires_at = Some(1_802_592_060);
        record.apply(&change);
        record
    }

    #[test]
    fn a_record_survives_the_round_trip_through_an_item() {
        let record = full_record();
        assert_eq!(decode("job-1", &encode(&record)).unwrap(), record);

        let queued = JobRecord::new("job-2", JobState::Queued, Source::Direct, at(0, 0), "r", "m");
        assert_eq!(decode("job-2", &encode(&queued)).unwrap(), queued);
        let scheduled = JobRecord::new(
            "job-3",
            JobState::Rejected,
            Source::EventBridge { event_id: "e".into() },
            at(1, 1),
            "Invalid",
            "no image",
        );
        assert_eq!(decode("job-3", &encode(&scheduled)).unwrap(), scheduled);
        let ticked = JobRecord::new(
            "nightly-20261121-020000",
            JobState::Queued,
            Source::Schedule { schedule: "nightly".into(), scheduled_time: "2026-11-21T02:00:00Z".into() },
            at(1, 1),
            "Submitted",
            "tick",
        );
        assert_eq!(decode("nightly-20261121-020000", &encode(&ticked)).unwrap(), ticked);
    }

    #[test]
    fn a_failure_class_this_version_does_not_know_reads_as_unknown() {
        let mut item = encode(&full_record());
        item.insert("failure_class".into(), AttributeValue::S("gpu_fell_off_the_bus".into()));
        let record = decode("job-1", &item).expect("a newer version's class keeps the record readable");
        assert_eq!(record.failure_class, Some(FailureClass::Unknown));
        assert_eq!(decode("job-1", &encode(&full_record())).unwrap().failure_class, full_record().failure_class);
    }

    #[test]
    fn active_and_expiry_attributes_follow_the_state() {
        let failed = encode(&full_record());
        assert_eq!(failed.get("active"), None);
        assert_eq!(failed.get("expires_at"), Some(&AttributeValue::N("1802592060".into())));

        let mut queued = JobRecord::new("job-2", JobState::Queued, Source::Direct, at(0, 0), "r", "m");
        queued.expires_at = Some(5);
        let item = encode(&queued);
        assert_eq!(item.get("active"), Some(&AttributeValue::S("1".into())));
        assert_eq!(item.get("expires_at"), None, "an active job never expires");
    }

    #[test]
    fn timestamps_are_stored_with_nine_digits_so_text_order_is_time_order() {
        assert_eq!(timestamp_text(at(1_800_000_000, 0)), "2027-01-15T08:00:00.000000000Z");
        assert_eq!(timestamp_text(at(1_800_000_000, 500_000_000)), "2027-01-15T08:00:00.500000000Z");
        let times = [at(1_800_000_000, 0), at(1_800_000_000, 5), at(1_800_000_000, 500_000_000), at(1_800_000_001, 0)];
        for pair in times.windows(2) {
            assert!(timestamp_text(pair[0]) < timestamp_text(pair[1]), "{pair:?}");
        }
    }

    #[test]
    fn unreadable_items_name_the_job_and_the_attribute() {
        // (attribute, its new value or None to remove it, what the message must say)
        let bad_history_entry = AttributeValue::L(vec![
            encode_transition(&full_record().history[0]),
            AttributeValue::M(HashMap::from([("at".into(), s("2027-01-15T08:00:00Z"))])),
        ]);
        let cases = [
            ("state", Some(s("running")), "attribute `state`: unknown job state \"running\""),
            ("attempt", None, "attribute `attempt`: missing"),
            ("attempt", Some(s("1")), "attribute `attempt`: expected a number (N), found S"),
            ("exit_code", Some(n("1.5")), "attribute `exit_code`: \"1.5\" does not fit"),
            ("spec", Some(s("{")), "attribute `spec`: not JSON"),
            ("updated_at", Some(s("yesterday")), "attribute `updated_at`: \"yesterday\" is not an RFC 3339"),
            ("source", Some(s("sqs")), "attribute `source`: expected a map (M), found S"),
            ("state_times", Some(AttributeValue::M(HashMap::from([("done".into(), s("x"))]))), "`state_times.done`"),
            ("history", Some(bad_history_entry), "attribute `history[1].to`: missing"),
        ];
        for (attribute, value, expected) in cases {
            let mut item = encode(&full_record());
            match value {
                Some(value) => item.insert(attribute.to_owned(), value),
                None => item.remove(attribute),
            };
            match decode("job-1", &item) {
                Err(Error::CorruptRecord { job_id, message }) => {
                    assert_eq!(job_id, "job-1");
                    assert!(message.contains(expected), "{message:?} should contain {expected:?}");
                }
                other => panic!("expected CorruptRecord containing {expected:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_plain_change_sets_one_state_time_and_keeps_per_attempt_fields() {
        let mut change = StateChange::new(JobState::Queued, 1, JobState::SettingUp, at(10, 0), "PodCreated", "created");
        change.pod_name = Some("pod".into());
        let update = update_for(&change);
        let expression = update.expression();
        assert!(expression.contains("#state_times.#setting_up = :at"), "{expression}");
        assert!(expression.contains("#pod_name = :pod_name"), "{expression}");
        assert!(expression.contains("#active = :active"), "{expression}");
        assert!(expression.ends_with("REMOVE #wait_queue, #wait_order, #expires_at"), "{expression}");
        assert!(!expression.contains("#node"), "{expression}");
        assert!(update.names.contains_key("#attempt"), "the condition uses #attempt");
        assert!(update.values.contains_key(":expected") && update.values.contains_key(":expected_attempt"));
    }

    #[test]
    fn a_retry_replaces_state_times_and_removes_what_it_does_not_set() {
        let mut change = StateChange::new(JobState::Failed, 1, JobState::Queued, at(10, 0), "Retry", "attempt 2");
        change.new_attempt = Some(2);
        change.node = Some("kept".into());
        let expression = update_for(&change).expression();
        assert!(expression.contains("#state_times = :state_times"), "{expression}");
        assert!(expression.contains("#attempt = :attempt"), "{expression}");
        assert!(expression.contains("#node = :node"), "{expression}");
        let removed = expression.split_once(" REMOVE ").map(|(_, r)| r).unwrap_or_default();
        assert_eq!(removed, "#pod_name, #exit_code, #failure_class, #termination_message, #expires_at");
    }

    #[test]
    fn a_job_that_waits_enters_the_waiting_index_and_leaves_it_on_its_next_change() {
        let mut wait = StateChange::new(JobState::Queued, 1, JobState::Queued, at(10, 0), "Waiting", "queue etl: full");
        let place = WaitPlace::new("etl", 5, at(9, 0), "job");
        wait.wait = Some(place.clone());
        let update = update_for(&wait);
        assert!(update.expression().contains("#wait_queue = :wait_queue, #wait_order = :wait_order"));
        assert!(!update.expression().contains("#state_times"), "it has been queued since it was queued");
        assert_eq!(update.values.get(":wait_order"), Some(&s(&place.order)));
        let mut record = full_record();
        record.wait = Some(place);
        assert_eq!(
            decode(&record.job_id, &encode(&record)).unwrap().wait,
            record.wait,
            "the place survives the round trip"
        );
        let started = StateChange::new(JobState::Executing, 1, JobState::Succeeded, at(11, 0), "Completed", "ok");
        assert!(!update_for(&started).expression().contains("wait"), "only a queued job can be waiting");
    }

    #[test]
    fn a_terminal_change_leaves_the_index_and_may_expire() {
        let mut change = StateChange::new(JobState::Executing, 1, JobState::Succeeded, at(10, 0), "Completed", "ok");
        change.expires_at = Some(99);
        let update = update_for(&change);
        assert!(update.expression().contains("#expires_at = :expires_at"));
        assert!(update.expression().ends_with("REMOVE #active"));
        assert_eq!(update.values.get(":expires_at"), Some(&n(99)));
    }

    #[test]
    fn page_tokens_round_trip_to_the_index_start_key() {
        let item = encode(&full_record());
        let token = encode_token(&item).unwrap();
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{token}");
        let key = decode_token(&token).unwrap();
        assert_eq!(key.len(), 3);
        assert_eq!(key.get("job_id"), item.get("job_id"));
        assert_eq!(key.get("updated_at"), item.get("updated_at"));
        assert_eq!(key.get("active"), Some(&s("1")));

        for bad in ["", "not base64!", &URL_SAFE_NO_PAD.encode("{}")] {
            let err = decode_token(bad).unwrap_err();
            assert!(!err.is_retryable(), "{err:?}");
            assert!(std::error::Error::source(&err).unwrap().to_string().contains("invalid page token"), "{err:?}");
        }
    }

    #[test]
    fn retryable_errors_are_throttling_and_server_errors() {
        let check = |code: Option<&str>, status: u16, expected: bool| {
            assert_eq!(retryable_service_error(code, status), expected, "{code:?} {status}");
        };
        check(Some("ThrottlingException"), 400, true);
        check(Some("ProvisionedThroughputExceededException"), 400, true);
        check(Some("RequestLimitExceeded"), 400, true);
        check(Some("InternalServerError"), 500, true);
        check(Some("ServiceUnavailable"), 503, true);
        check(Some("ValidationException"), 400, false);
        check(Some("ResourceNotFoundException"), 400, false);
        check(Some("AccessDeniedException"), 400, false);
        check(Some("UnrecognizedClientException"), 400, false);
        check(Some("SomethingNew"), 400, false);
        check(Some("SomethingNew"), 502, true);
        check(None, 500, true);
        check(None, 429, true);
        check(None, 403, false);
    }

    /// GIVEN a table whose matching ended jobs come back in two Scan pages
    /// WHEN `ended` asks for some states, a namespace and a time
    /// THEN it sends one filter naming them (the time as stored), follows the pages only
    /// while fewer than `enough` jobs matched, and reads each item back into its record.
    #[tokio::test]
    async fn ended_jobs_are_scanned_with_one_filter_page_by_page_and_read_back() {
        use std::sync::{Arc, Mutex};
        use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

        /// A value as DynamoDB's JSON protocol writes it.
        fn wire(value: &AttributeValue) -> serde_json::Value {
            let map = |map: &HashMap<String, AttributeValue>| {
                map.iter().map(|(name, value)| (name.clone(), wire(value))).collect::<serde_json::Map<_, _>>()
            };
            match value {
                AttributeValue::S(text) => json!({ "S": text }),
                AttributeValue::N(number) => json!({ "N": number }),
                AttributeValue::M(entries) => json!({ "M": map(entries) }),
                AttributeValue::L(list) => json!({ "L": list.iter().map(wire).collect::<Vec<_>>() }),
                other => panic!("a job item holds no {other:?}"),
            }
        }
        let item = |record: &JobRecord| wire(&AttributeValue::M(encode(record)))["M"].clone();

        let failed = full_record();
        let mut cancelled =
            JobRecord::new("job-2", JobState::Cancelled, Source::Direct, at(1_800_000_100, 0), "Cancelled", "asked");
        cancelled.namespace = Some("batch".into());
        let next = json!({ "job_id": { "S": "job-1" } });
        let first_page = json!({ "Items": [item(&failed)], "Count": 1, "ScannedCount": 40, "LastEvaluatedKey": next });
        let last_page = json!({ "Items": [item(&cancelled)], "Count": 1, "ScannedCount": 12 });

        // DynamoDB on a loopback port: the first page without a start key, the last with
        // one; every request kept.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
        let kept = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (kept, first_page, last_page) = (Arc::clone(&kept), first_page.clone(), last_page.clone());
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    loop {
                        let mut length = 0;
                        loop {
                            let mut line = String::new();
                            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            if let Some((name, value)) = line.split_once(':')
                                && name.eq_ignore_ascii_case("content-length")
                            {
                                length = value.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0; length];
                        stream.read_exact(&mut body).await.unwrap();
                        let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        let page = if request.get("ExclusiveStartKey").is_some() { &last_page } else { &first_page };
                        kept.lock().unwrap().push(request);
                        let page = page.to_string();
                        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0";
                        let answer = format!("{head}\r\ncontent-length: {}\r\n\r\n{page}", page.len());
                        stream.get_mut().write_all(answer.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("id", "secret", None, None, "test"))
            .build();
        let store = DynamoJobStore::new(Client::from_conf(config), "jobs");
        let states = [JobState::Queued, JobState::Failed, JobState::Cancelled, JobState::Failed];
        let since = at(1_800_000_000, 5);

        let jobs = store.ended(&states, Some("batch"), Some(since), 10).await.unwrap();
        assert_eq!(jobs, [failed.clone(), cancelled]);
        let sent = requests.lock().unwrap().clone();
        assert_eq!(sent.len(), 2, "{sent:#?}");
        let scan = &sent[0];
        assert_eq!(scan["TableName"], "jobs");
        assert_eq!(
            scan["FilterExpression"],
            "#state IN (:state0, :state1) AND #namespace = :namespace AND #updated_at >= :since"
        );
        assert_eq!(
            scan["ExpressionAttributeNames"],
            json!({ "#state": "state", "#namespace": "namespace", "#updated_at": "updated_at" })
        );
        assert_eq!(
            scan["ExpressionAttributeValues"],
            json!({
                ":state0": { "S": "failed" }, ":state1": { "S": "cancelled" },
                ":namespace": { "S": "batch" }, ":since": { "S": "2027-01-15T08:00:00.000000005Z" },
            }),
            "only the ended states, each once; the time with nine digits"
        );
        assert_eq!(scan.get("ExclusiveStartKey"), None);
        assert_eq!(sent[1]["ExclusiveStartKey"], next, "the next page starts where DynamoDB stopped");
        assert_eq!(sent[1]["FilterExpression"], scan["FilterExpression"]);

        requests.lock().unwrap().clear();
        let jobs = store.ended(&[JobState::Failed], None, None, 1).await.unwrap();
        assert_eq!(jobs, [failed], "enough after the first page");
        let sent = requests.lock().unwrap().clone();
        assert_eq!(sent.len(), 1, "{sent:#?}");
        assert_eq!(sent[0]["FilterExpression"], "#state IN (:state0)");
        assert_eq!(sent[0]["ExpressionAttributeNames"], json!({ "#state": "state" }));

        requests.lock().unwrap().clear();
        let active = [JobState::Queued, JobState::SettingUp, JobState::Executing];
        assert_eq!(store.ended(&active, None, None, 10).await.unwrap(), []);
        assert!(requests.lock().unwrap().is_empty(), "no ended state asked for: no Scan");
    }
}
