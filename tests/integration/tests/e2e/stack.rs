//! The local stack itself: what podbridge relies on from the cluster, DynamoDB and SQS
//! works through the same clients and configuration the functions use.
//!
//! Run through `make test` or `tests/stack.sh run -- cargo test -p podbridge-tests`.

use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableStatus,
};
use aws_sdk_sqs::types::QueueAttributeName;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use podbridge_tests::{Stack, eventually, unique_name};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);
const RUN_LABEL: &str = "podbridge-test/run";

fn test_pod(name: &str, run: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { RUN_LABEL: run } },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{ "name": "main", "image": "busybox:1.36", "command": ["true"] }]
        }
    }))
    .expect("the test pod is a valid Pod")
}

#[tokio::test]
async fn given_the_stack_kubeconfig_when_a_pod_is_created_then_a_label_selector_lists_it_with_server_set_metadata()
-> anyhow::Result<()> {
    let stack = Stack::from_env().await;
    let pods: Api<Pod> = Api::namespaced(stack.kube.clone(), "default");
    let run = unique_name("run");
    let ours = unique_name("pod");
    let other = unique_name("pod");

    pods.create(&PostParams::default(), &test_pod(&ours, &run)).await.context("creating our pod")?;
    pods.create(&PostParams::default(), &test_pod(&other, &unique_name("run")))
        .await
        .context("creating a pod of another run")?;

    let listed = pods
        .list(&ListParams::default().labels(&format!("{RUN_LABEL}={run}")))
        .await
        .context("listing pods by label")?;

    let names: Vec<_> = listed.items.iter().map(|pod| pod.metadata.name.clone().unwrap_or_default()).collect();
    assert_eq!(names, vec![ours.clone()], "the selector matches our pod only");
    let meta = &listed.items[0].metadata;
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    assert!(meta.uid.as_deref().is_some_and(|uid| !uid.is_empty()), "uid set: {meta:?}");
    assert!(meta.resource_version.as_deref().is_some_and(|rv| !rv.is_empty()), "resourceVersion set: {meta:?}");
    assert!(meta.creation_timestamp.is_some(), "creationTimestamp set: {meta:?}");

    // Cleanup for real clusters; kube-sim is discarded with the stack anyway.
    for name in [&ours, &other] {
        let _ = pods.delete(name, &DeleteParams::default()).await;
    }
    Ok(())
}

#[tokio::test]
async fn given_a_job_table_when_the_same_key_is_put_twice_with_attribute_not_exists_then_the_second_put_fails_and_the_first_record_stays()
-> anyhow::Result<()> {
    let stack = Stack::from_env().await;
    let ddb = stack.dynamodb();
    let table = unique_name("jobs");

    let string_attr =
        |name: &str| AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build();
    let key =
        |name: &str, key_type: KeyType| KeySchemaElement::builder().attribute_name(name).key_type(key_type).build();
    ddb.create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(string_attr("pk")?)
        .attribute_definitions(string_attr("sk")?)
        .attribute_definitions(string_attr("gsi1pk")?)
        .attribute_definitions(string_attr("gsi1sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("gsi1")
                .key_schema(key("gsi1pk", KeyType::Hash)?)
                .key_schema(key("gsi1sk", KeyType::Range)?)
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()?,
        )
        .send()
        .await
        .context("creating the table")?;
    eventually("the table to become ACTIVE", TIMEOUT, POLL, || async {
        let described = ddb.describe_table().table_name(&table).send().await.ok()?;
        let status = described.table()?.table_status()?;
        (*status == TableStatus::Active).then_some(())
    })
    .await;

    let put = |state: &str| {
        ddb.put_item()
            .table_name(&table)
            .item("pk", AttributeValue::S("JOB#1".into()))
            .item("sk", AttributeValue::S("META".into()))
            .item("gsi1pk", AttributeValue::S(format!("STATE#{state}")))
            .item("gsi1sk", AttributeValue::S("2026-01-01T00:00:00Z".into()))
            .item("state", AttributeValue::S(state.into()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
    };
    put("queued").await.context("the first put")?;
    let second = put("executing").await;

    let err = second.expect_err("the second put of the same key must be refused");
    assert!(
        err.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()),
        "expected ConditionalCheckFailedException, got {err:?}"
    );
    let stored = ddb
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("JOB#1".into()))
        .key("sk", AttributeValue::S("META".into()))
        .consistent_read(true)
        .send()
        .await?;
    assert_eq!(
        stored.item().and_then(|item| item.get("state")),
        Some(&AttributeValue::S("queued".into())),
        "the first record is unchanged"
    );
    // The GSI is eventually consistent on real DynamoDB, hence the polling.
    let by_state = eventually("the record in the GSI", TIMEOUT, POLL, || async {
        let page = ddb
            .query()
            .table_name(&table)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :state")
            .expression_attribute_values(":state", AttributeValue::S("STATE#queued".into()))
            .send()
            .await
            .ok()?;
        (!page.items().is_empty()).then(|| page.items().to_vec())
    })
    .await;
    assert_eq!(by_state.len(), 1);
    assert_eq!(by_state[0].get("pk"), Some(&AttributeValue::S("JOB#1".into())));

    ddb.delete_table().table_name(&table).send().await?;
    Ok(())
}

#[tokio::test]
async fn given_a_queue_with_a_dlq_after_two_receives_when_the_message_is_received_again_then_it_is_in_the_dlq_and_not_in_the_queue()
-> anyhow::Result<()> {
    let stack = Stack::from_env().await;
    let sqs = stack.sqs();

    let dlq_url =
        sqs.create_queue().queue_name(unique_name("jobs-dlq")).send().await?.queue_url.context("the DLQ has a URL")?;
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|mut attrs| attrs.remove(&QueueAttributeName::QueueArn))
        .context("the DLQ has an ARN")?;
    let redrive = json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2" }).to_string();
    let queue_url = sqs
        .create_queue()
        .queue_name(unique_name("jobs"))
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .send()
        .await?
        .queue_url
        .context("the queue has a URL")?;

    sqs.send_message().queue_url(&queue_url).message_body("job-1").send().await?;

    // Received twice and never deleted: a handler that failed twice. A visibility
    // timeout of 0 makes the message visible again at once.
    let receive = |url: String| {
        let sqs = sqs.clone();
        async move {
            sqs.receive_message()
                .queue_url(url)
                .visibility_timeout(0)
                .max_number_of_messages(1)
                .send()
                .await
                .expect("ReceiveMessage succeeds")
                .messages
                .unwrap_or_default()
                .into_iter()
                .next()
        }
    };
    for attempt in 1..=2 {
        let message =
            eventually(&format!("receive #{attempt} from the queue"), TIMEOUT, POLL, || receive(queue_url.clone()))
                .await;
        assert_eq!(message.body(), Some("job-1"), "receive #{attempt}");
    }

    let third = receive(queue_url.clone()).await;
    assert!(third.is_none(), "a third receive must not deliver the message: {third:?}");
    let dead = eventually("the message in the DLQ", TIMEOUT, POLL, || receive(dlq_url.clone())).await;
    assert_eq!(dead.body(), Some("job-1"));
    assert!(receive(queue_url.clone()).await.is_none(), "the queue is empty");

    sqs.delete_queue().queue_url(&queue_url).send().await?;
    sqs.delete_queue().queue_url(&dlq_url).send().await?;
    Ok(())
}
