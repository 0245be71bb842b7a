//! The queue table: queue definitions, their usage, and the slots of admitted jobs, in
//! a small table of its own (keys `pk` and `sk`, both S). Kept apart from the job
//! table so that its transactions touch small items in a small table, and so that
//! every item it holds is read in a few `Query`s:
//!
//! | `pk`     | `sk`          | attributes                                                   |
//! |----------|---------------|--------------------------------------------------------------|
//! | `queue`  | queue name    | `jobs`, `cpu`, `memory` (limits, each optional), `weight`, `paused`, `fail_unschedulable` |
//! | `limits` | `all`         | `jobs`, `cpu`, `memory`: the limit across all queues         |
//! | `usage`  | queue or `*`  | `jobs`, `cpu` (millicores), `memory` (bytes), `version`      |
//! | `slot`   | job id        | `queue`, `attempt`, `cpu`, `memory`, `at`                    |
//!
//! An acquire is one `TransactWriteItems` of three items: the slot put with
//! `attribute_not_exists(pk)`, and an `ADD` to the queue's usage and to `*`, each
//! conditional on the room its limit leaves (`jobs <= :limit - 1`, `cpu <= :limit -
//! request`, ...). A release is the slot's delete, conditional on its attempt, and the
//! same `ADD`s negated, in one transaction too: a release repeated, or raced by another
//! releaser, fails its condition and changes nothing. Every usage write adds one to
//! `version`, which a repair's conditional put expects unchanged.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::BuildError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, KeySchemaElement, KeyType, Put, ScalarAttributeType,
    TransactWriteItem, Update,
};
use jiff::Timestamp;
use podbridge_core::admission::{Limits, Queue, Resources, Slot};

use super::dynamodb::{DynamoJobStore, n, s, store_error};
use super::{ALL_QUEUES, Acquired, Definitions, QueueStore, Usage};
use crate::error::{Error, Result};

const QUEUE: &str = "queue";
const LIMITS: &str = "limits";
const USAGE: &str = "usage";
const SLOT: &str = "slot";
/// How often a transaction that met another on the same item (usage is shared by
/// every admission) is tried again, with a short random pause.
const CONFLICT_TRIES: u32 = 8;

type Item = HashMap<String, AttributeValue>;

fn key(pk: &str, sk: &str) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

impl DynamoJobStore {
    fn queue_table_name(&self) -> Result<&str> {
        self.queue_table
            .as_deref()
            .ok_or_else(|| Error::Config("this deployment has no queue table (set PODBRIDGE_QUEUE_TABLE)".to_owned()))
    }

    /// Every item under `pk`, strongly consistent, page by page.
    async fn items_under(&self, pk: &str) -> Result<Vec<Item>> {
        let table = self.queue_table_name()?;
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|err| store_error("read the queue table", err))?;
            items.extend(output.items.unwrap_or_default());
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// Runs a transaction, again while it only conflicts with another one; `Ok(None)`
    /// when it committed, `Ok(Some(codes))` with each item's cancellation code when a
    /// condition failed.
    async fn transact(&self, items: Vec<TransactWriteItem>, operation: &'static str) -> Result<Option<Vec<String>>> {
        let mut tries = 0;
        loop {
            tries += 1;
            let result = self.client.transact_write_items().set_transact_items(Some(items.clone())).send().await;
            let err = match result {
                Ok(_) => return Ok(None),
                Err(err) => err,
            };
            if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = err.as_service_error() {
                let codes: Vec<String> = cancelled
                    .cancellation_reasons()
                    .iter()
                    .map(|reason| reason.code().unwrap_or("None").to_owned())
                    .collect();
                let conflict = codes.iter().any(|code| code == "TransactionConflict");
                let condition = codes.iter().any(|code| code == "ConditionalCheckFailed");
                if condition {
                    return Ok(Some(codes));
                }
                if conflict && tries < CONFLICT_TRIES {
                    let pause = 5 + u64::from(rand_below(20)) * u64::from(tries);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    continue;
                }
            }
            return Err(store_error(operation, err));
        }
    }

    /// Writes `item` whole (an operator's definition: the last write wins).
    async fn put(&self, item: Item, operation: &'static str) -> Result<()> {
        self.client
            .put_item()
            .table_name(self.queue_table_name()?)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|err| store_error(operation, err))?;
        Ok(())
    }

    async fn read_slot(&self, job_id: &str) -> Result<Option<Slot>> {
        let output = self
            .client
            .get_item()
            .table_name(self.queue_table_name()?)
            .set_key(Some(key(SLOT, job_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| store_error("read a slot", err))?;
        output.item.as_ref().map(decode_slot).transpose()
    }

    /// Deletes `slot` and takes exactly what it holds from its queue's usage and from
    /// all queues', in one transaction that holds only if the stored slot is this one
    /// (attempt, queue and size); false, with nothing written, when it is not.
    async fn release_exactly(&self, slot: &Slot) -> Result<bool> {
        let delete = Delete::builder()
            .table_name(self.queue_table_name()?)
            .set_key(Some(key(SLOT, &slot.job_id)))
            .condition_expression("#attempt = :attempt AND #queue = :queue AND #cpu = :cpu AND #memory = :memory")
            .expression_attribute_names("#attempt", "attempt")
            .expression_attribute_names("#queue", "queue")
            .expression_attribute_names("#cpu", "cpu")
            .expression_attribute_names("#memory", "memory")
            .expression_attribute_values(":attempt", n(slot.attempt))
            .expression_attribute_values(":queue", s(&slot.queue))
            .expression_attribute_values(":cpu", n(slot.request.cpu_millis))
            .expression_attribute_values(":memory", n(slot.request.memory_bytes))
            .build()
            .map_err(|err| build_error("slot delete", err))?;
        let items = vec![
            TransactWriteItem::builder().delete(delete).build(),
            TransactWriteItem::builder()
                .update(self.usage_update(&slot.queue, slot.request, -1, &Limits::NONE)?)
                .build(),
            TransactWriteItem::builder()
                .update(self.usage_update(ALL_QUEUES, slot.request, -1, &Limits::NONE)?)
                .build(),
        ];
        Ok(self.transact(items, "release a slot").await?.is_none())
    }

    /// The update that adds `amount` (negated when `sign` is -1) to a usage, conditional
    /// on the room `limits` leave for it.
    fn usage_update(&self, queue: &str, amount: Resources, sign: i64, limits: &Limits) -> Result<Update> {
        let table = self.queue_table_name()?;
        let signed = |value: u64| i64::try_from(value).unwrap_or(i64::MAX).saturating_mul(sign);
        let mut update = Update::builder()
            .table_name(table)
            .set_key(Some(key(USAGE, queue)))
            .update_expression("ADD jobs :jobs, cpu :cpu, #memory :memory, version :one")
            .expression_attribute_names("#memory", "memory")
            .expression_attribute_values(":jobs", n(signed(u64::from(amount.jobs))))
            .expression_attribute_values(":cpu", n(signed(amount.cpu_millis)))
            .expression_attribute_values(":memory", n(signed(amount.memory_bytes)))
            .expression_attribute_values(":one", n(1));
        let mut conditions = Vec::new();
        let rooms = [
            ("jobs", "jobs", limits.jobs.map(u64::from), u64::from(amount.jobs)),
            ("cpu", "cpu", limits.cpu_millis, amount.cpu_millis),
            ("#memory", "memory", limits.memory_bytes, amount.memory_bytes),
        ];
        for (name, placeholder, limit, wanted) in rooms {
            let Some(limit) = limit else { continue };
            // `acquire` answered `Full` before any transaction for a request over a limit.
            let room = limit.saturating_sub(wanted);
            conditions.push(format!("(attribute_not_exists({name}) OR {name} <= :room_{placeholder})"));
            update = update.expression_attribute_values(format!(":room_{placeholder}"), n(room));
        }
        if !conditions.is_empty() {
            update = update.condition_expression(conditions.join(" AND "));
        }
        update.build().map_err(|err| build_error("usage update", err))
    }
}

/// Whether `request` alone is within every limit of `limits`.
fn fits_at_all(request: Resources, limits: &Limits) -> bool {
    limits.jobs.is_none_or(|l| request.jobs <= l)
        && limits.cpu_millis.is_none_or(|l| request.cpu_millis <= l)
        && limits.memory_bytes.is_none_or(|l| request.memory_bytes <= l)
}

fn build_error(what: &'static str, err: BuildError) -> Error {
    Error::Store { operation: what, retryable: false, source: err.into() }
}

/// A small random number, for the pause between conflicting transactions (the low
/// bits of the clock's nanoseconds: enough to spread writers apart).
fn rand_below(bound: u32) -> u32 {
    Timestamp::now().subsec_nanosecond().unsigned_abs() % bound.max(1)
}

impl QueueStore for DynamoJobStore {
    async fn definitions(&self) -> Result<Definitions> {
        let queues = self.items_under(QUEUE).await?.iter().map(decode_queue).collect::<Result<Vec<_>>>()?;
        let total = self.items_under(LIMITS).await?.first().map(decode_limits).transpose()?;
        Ok(Definitions { queues, total })
    }

    async fn put_queue(&self, queue: &Queue) -> Result<()> {
        let mut item = key(QUEUE, &queue.name);
        item.extend(encode_limits(&queue.limits));
        item.insert("weight".to_owned(), n(queue.weight));
        item.insert("paused".to_owned(), AttributeValue::Bool(queue.paused));
        item.insert("fail_unschedulable".to_owned(), AttributeValue::Bool(queue.fail_unschedulable));
        self.put(item, "write a queue").await
    }

    async fn put_total(&self, limits: &Limits) -> Result<()> {
        let mut item = key(LIMITS, "all");
        item.extend(encode_limits(limits));
        self.put(item, "write the limit across queues").await
    }

    async fn usage(&self) -> Result<BTreeMap<String, Usage>> {
        self.items_under(USAGE)
            .await?
            .iter()
            .map(|item| Ok((text(item, "sk")?.to_owned(), decode_usage(item)?)))
            .collect()
    }

    async fn acquire(&self, slot: &Slot, queue: &Limits, total: &Limits) -> Result<Acquired> {
        let table = self.queue_table_name()?;
        // A request over a limit would find `room` 0 and pass an empty queue's condition.
        if !fits_at_all(slot.request, queue) || !fits_at_all(slot.request, total) {
            return Ok(match self.read_slot(&slot.job_id).await? {
                Some(held) if held.attempt == slot.attempt => Acquired::Held,
                _ => Acquired::Full,
            });
        }
        let mut item = key(SLOT, &slot.job_id);
        item.insert("queue".to_owned(), s(&slot.queue));
        item.insert("attempt".to_owned(), n(slot.attempt));
        item.insert("cpu".to_owned(), n(slot.request.cpu_millis));
        item.insert("memory".to_owned(), n(slot.request.memory_bytes));
        item.insert("at".to_owned(), s(format!("{:.9}", Timestamp::now())));
        let put = Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|err| build_error("slot put", err))?;
        let items = vec![
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder().update(self.usage_update(&slot.queue, slot.request, 1, queue)?).build(),
            TransactWriteItem::builder().update(self.usage_update(ALL_QUEUES, slot.request, 1, total)?).build(),
        ];
        match self.transact(items, "acquire a slot").await? {
            None => Ok(Acquired::Admitted),
            Some(codes) if codes.first().is_some_and(|c| c == "ConditionalCheckFailed") => {
                match self.read_slot(&slot.job_id).await? {
                    Some(held) if held.attempt == slot.attempt => Ok(Acquired::Held),
                    Some(other) => Ok(Acquired::Other(other)),
                    // Released between the two reads: the caller tries again.
                    None => Err(Error::Store {
                        operation: "acquire a slot",
                        retryable: true,
                        source: format!("the slot of job {} came and went", slot.job_id).into(),
                    }),
                }
            }
            Some(_) => Ok(Acquired::Full),
        }
    }

    async fn release(&self, job_id: &str, attempt: u32) -> Result<bool> {
        let Some(slot) = self.read_slot(job_id).await?.filter(|slot| slot.attempt == attempt) else {
            return Ok(false);
        };
        // Changed between the read and the delete (released meanwhile): nothing to give.
        self.release_exactly(&slot).await
    }

    async fn release_known(&self, slot: &Slot) -> Result<bool> {
        if self.release_exactly(slot).await? {
            return Ok(true);
        }
        // Not that slot (another attempt's, another size) or none: read what is held.
        self.release(&slot.job_id, slot.attempt).await
    }

    async fn slots(&self) -> Result<Vec<Slot>> {
        self.items_under(SLOT).await?.iter().map(decode_slot).collect()
    }

    async fn slot(&self, job_id: &str) -> Result<Option<Slot>> {
        self.read_slot(job_id).await
    }

    async fn repair(&self, queue: &str, seen: &Usage, truth: Resources) -> Result<bool> {
        let mut item = key(USAGE, queue);
        item.insert("jobs".to_owned(), n(truth.jobs));
        item.insert("cpu".to_owned(), n(truth.cpu_millis));
        item.insert("memory".to_owned(), n(truth.memory_bytes));
        item.insert("version".to_owned(), n(seen.version + 1));
        let put = self.client.put_item().table_name(self.queue_table_name()?).set_item(Some(item));
        let put = if seen.version == 0 {
            put.condition_expression("attribute_not_exists(version)")
        } else {
            put.condition_expression("version = :seen").expression_attribute_values(":seen", n(seen.version))
        };
        match put.send().await {
            Ok(_) => Ok(true),
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(false)
            }
            Err(err) => Err(store_error("repair a queue's usage", err)),
        }
    }
}

fn encode_limits(limits: &Limits) -> Item {
    let mut item = Item::new();
    if let Some(jobs) = limits.jobs {
        item.insert("jobs".to_owned(), n(jobs));
    }
    if let Some(cpu) = limits.cpu_millis {
        item.insert("cpu".to_owned(), n(cpu));
    }
    if let Some(memory) = limits.memory_bytes {
        item.insert("memory".to_owned(), n(memory));
    }
    item
}

fn corrupt(item: &Item, message: String) -> Error {
    let at = format!(
        "{}/{}",
        item.get("pk").and_then(|v| v.as_s().ok()).map_or("?", String::as_str),
        item.get("sk").and_then(|v| v.as_s().ok()).map_or("?", String::as_str)
    );
    Error::Config(format!("queue table item {at}: {message}"))
}

fn text<'a>(item: &'a Item, name: &str) -> Result<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value),
        _ => Err(corrupt(item, format!("attribute `{name}`: missing or not a string"))),
    }
}

fn number<T: std::str::FromStr>(item: &Item, name: &str) -> Result<Option<T>> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::N(value)) => value
            .parse()
            .map(Some)
            .map_err(|_| corrupt(item, format!("attribute `{name}`: {value:?} is not a number in range"))),
        Some(_) => Err(corrupt(item, format!("attribute `{name}`: not a number"))),
    }
}

fn flag(item: &Item, name: &str) -> bool {
    matches!(item.get(name), Some(AttributeValue::Bool(true)))
}

fn decode_limits(item: &Item) -> Result<Limits> {
    Ok(Limits { jobs: number(item, "jobs")?, cpu_millis: number(item, "cpu")?, memory_bytes: number(item, "memory")? })
}

fn decode_queue(item: &Item) -> Result<Queue> {
    Ok(Queue {
        name: text(item, "sk")?.to_owned(),
        limits: decode_limits(item)?,
        weight: number(item, "weight")?.unwrap_or(podbridge_core::admission::DEFAULT_WEIGHT),
        paused: flag(item, "paused"),
        fail_unschedulable: flag(item, "fail_unschedulable"),
    })
}

fn decode_usage(item: &Item) -> Result<Usage> {
    // A usage taken below zero would be a bug: it reads as zero, says so, and the next
    // pass's repair sets it to the truth.
    let raw = |name: &str| -> Result<i64> { Ok(number::<i64>(item, name)?.unwrap_or(0)) };
    let (jobs, cpu, memory) = (raw("jobs")?, raw("cpu")?, raw("memory")?);
    let count = |value: i64| value.max(0).unsigned_abs();
    Ok(Usage {
        held: Resources {
            jobs: u32::try_from(count(jobs)).unwrap_or(u32::MAX),
            cpu_millis: count(cpu),
            memory_bytes: count(memory),
        },
        version: number(item, "version")?.unwrap_or(0),
        below_zero: jobs < 0 || cpu < 0 || memory < 0,
    })
}

fn decode_slot(item: &Item) -> Result<Slot> {
    Ok(Slot {
        job_id: text(item, "sk")?.to_owned(),
        attempt: number(item, "attempt")?.ok_or_else(|| corrupt(item, "attribute `attempt`: missing".to_owned()))?,
        queue: text(item, "queue")?.to_owned(),
        request: Resources {
            jobs: 1,
            cpu_millis: number(item, "cpu")?.unwrap_or(0),
            memory_bytes: number(item, "memory")?.unwrap_or(0),
        },
    })
}

/// Creates the queue table (on-demand billing) and waits until it is ACTIVE. For
/// tests and the local stack; deployed tables come from the SAM template.
pub async fn create_table(client: &Client, table: &str) -> Result<()> {
    let build = |err: BuildError| build_error("create queue table", err);
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(build)
    };
    let key_of = |name: &str, key_type: KeyType| {
        KeySchemaElement::builder().attribute_name(name).key_type(key_type).build().map_err(build)
    };
    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("pk")?)
        .attribute_definitions(attribute("sk")?)
        .key_schema(key_of("pk", KeyType::Hash)?)
        .key_schema(key_of("sk", KeyType::Range)?)
        .send()
        .await
        .map_err(|err| store_error("create queue table", err))?;
    super::dynamodb::wait_until_active(client, table).await
}
