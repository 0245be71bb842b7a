//! The AWS side of the local stack on moto: what `infra/template.yaml` defines, with the
//! same shape (the job table with its active-jobs and waiting-jobs indexes and TTL, the
//! queue table (queue definitions, their usage and the slots of admitted jobs), the job
//! queue with its
//! dead-letter queue and redrive, the event bus, the trigger's rule and dead-letter
//! queue), plus a queue that receives every Job State Change so `dev` can show them.

use anyhow::Context as _;
use aws_sdk_eventbridge::types::Target;
use aws_sdk_sqs::types::QueueAttributeName;
use podbridge::events::{DETAIL_TYPE, SOURCE};
use serde_json::json;

/// Names and URLs of what was created.
#[derive(Debug, Clone)]
pub struct Resources {
    pub table: String,
    /// The queue table, beside the job table.
    pub queue_table: String,
    pub queue_url: String,
    pub dlq_url: String,
    pub bus: String,
    /// Where the trigger's rule delivers Submit, Cancel and Retry Job events.
    pub trigger_queue_url: String,
    pub trigger_dlq_url: String,
    /// Where every Job State Change is delivered, for the live log.
    pub changes_queue_url: String,
}

/// Queue settings, as the template's parameters.
#[derive(Debug, Clone, Copy)]
pub struct QueueSettings {
    pub visibility_timeout: u32,
    pub max_receive_count: u32,
}

/// Creates everything under the prefix `name` (reusing what exists).
pub async fn create(sdk: &aws_config::SdkConfig, name: &str, queues: QueueSettings) -> anyhow::Result<Resources> {
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let events = aws_sdk_eventbridge::Client::new(sdk);

    let table = format!("{name}-jobs");
    let exists = dynamodb.describe_table().table_name(&table).send().await.is_ok();
    if !exists {
        podbridge::store::dynamodb::create_table(&dynamodb, &table).await.context("creating the job table")?;
    }
    let queue_table = format!("{name}-queues");
    let exists = dynamodb.describe_table().table_name(&queue_table).send().await.is_ok();
    if !exists {
        podbridge::store::queue_table::create_table(&dynamodb, &queue_table)
            .await
            .context("creating the queue table")?;
    }
    let (queue_url, dlq_url) = queue_with_dlq(&sqs, &format!("{name}-jobs"), queues).await?;
    let (trigger_queue_url, trigger_dlq_url) = queue_with_dlq(&sqs, &format!("{name}-trigger"), queues).await?;
    // Shown changes are deleted at once; a batch received as `dev` stops comes back fast.
    let changes_queue_url =
        queue(&sqs, &format!("{name}-changes"), &[(QueueAttributeName::VisibilityTimeout, "1".to_owned())]).await?;

    let bus = format!("{name}-bus");
    if events.describe_event_bus().name(&bus).send().await.is_err() {
        events.create_event_bus().name(&bus).send().await.context("creating the event bus")?;
    }
    let requests = json!({ "detail-type": [trigger::SUBMIT_JOB, trigger::CANCEL_JOB, trigger::RETRY_JOB] });
    rule(&events, &sqs, &bus, &format!("{name}-trigger"), &requests.to_string(), &trigger_queue_url).await?;
    let changes = json!({ "source": [SOURCE], "detail-type": [DETAIL_TYPE] });
    rule(&events, &sqs, &bus, &format!("{name}-changes"), &changes.to_string(), &changes_queue_url).await?;
    Ok(Resources { table, queue_table, queue_url, dlq_url, bus, trigger_queue_url, trigger_dlq_url, changes_queue_url })
}

async fn queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &[(QueueAttributeName, String)],
) -> anyhow::Result<String> {
    let mut create = sqs.create_queue().queue_name(name);
    for (key, value) in attributes {
        create = create.attributes(key.clone(), value);
    }
    create.send().await.with_context(|| format!("creating queue {name}"))?.queue_url.context("a queue URL")
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<String> {
    let attributes =
        sqs.get_queue_attributes().queue_url(url).attribute_names(QueueAttributeName::QueueArn).send().await?;
    attributes.attributes.unwrap_or_default().remove(&QueueAttributeName::QueueArn).context("the queue's ARN")
}

/// A queue whose messages move to `<name>-dlq` after `max_receive_count` receives.
async fn queue_with_dlq(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    settings: QueueSettings,
) -> anyhow::Result<(String, String)> {
    let dlq_url = queue(sqs, &format!("{name}-dlq"), &[]).await?;
    let dlq_arn = queue_arn(sqs, &dlq_url).await?;
    let redrive = json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": settings.max_receive_count.to_string() });
    let url = queue(
        sqs,
        name,
        &[
            (QueueAttributeName::RedrivePolicy, redrive.to_string()),
            (QueueAttributeName::VisibilityTimeout, settings.visibility_timeout.to_string()),
        ],
    )
    .await?;
    Ok((url, dlq_url))
}

async fn rule(
    events: &aws_sdk_eventbridge::Client,
    sqs: &aws_sdk_sqs::Client,
    bus: &str,
    name: &str,
    pattern: &str,
    queue_url: &str,
) -> anyhow::Result<()> {
    events.put_rule().name(name).event_bus_name(bus).event_pattern(pattern).send().await.context("creating a rule")?;
    let target = Target::builder().id("queue").arn(queue_arn(sqs, queue_url).await?).build()?;
    let put = events.put_targets().rule(name).event_bus_name(bus).targets(target).send().await?;
    anyhow::ensure!(put.failed_entry_count == 0, "the rule {name} refused its target: {:?}", put.failed_entries);
    Ok(())
}
