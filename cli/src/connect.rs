//! Where the operator commands find a deployment: its job table, its queue table, its
//! queue and its event bus, and the AWS clients that reach them.
//!
//! Every command takes the same five flags, and each flag overrides an environment
//! variable: the variables the functions themselves read (`PODBRIDGE_TABLE`,
//! `PODBRIDGE_QUEUE_TABLE`, `PODBRIDGE_EVENT_BUS`), the queue's URL (`PODBRIDGE_QUEUE_URL`, the stack's
//! `JobQueueUrl` output), and `AWS_ENDPOINT_URL`, which points every client at a local
//! stack (moto). `podbridge dev` prints `export` lines for exactly these, so a shell
//! that pasted them talks to the local stack and one that did not talks to AWS.
//! Region and credentials are the AWS SDK's usual chain (`AWS_REGION`, `AWS_PROFILE`,
//! ...).
//!
//! A command asks only for what it uses, so `podbridge get` works without a queue and
//! `podbridge cancel` without a table; what it needs and lacks is an error naming the
//! variable and the flag.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use podbridge::settings::{DEFAULT_EVENT_BUS, var};
use podbridge::store::dynamodb::DynamoJobStore;

/// One connection setting: a flag that overrides an environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub variable: &'static str,
    pub flag: &'static str,
    /// What the value is, for the error when it is missing.
    what: &'static str,
}

/// The DynamoDB job table.
pub const TABLE: Setting =
    Setting { variable: var::TABLE, flag: "--table", what: "the name of the DynamoDB job table" };
/// The DynamoDB queue table: the queues' definitions, their usage and the slots of
/// admitted jobs.
pub const QUEUE_TABLE: Setting = Setting {
    variable: var::QUEUE_TABLE,
    flag: "--queue-table",
    what: "the name of the DynamoDB queue table (the stack's QueueTableName output)",
};
/// The SQS job queue (dispatch's trigger).
pub const QUEUE_URL: Setting = Setting {
    variable: QUEUE_URL_VAR,
    flag: "--queue-url",
    what: "the URL of the job queue (the stack's JobQueueUrl output)",
};
/// The EventBridge bus the trigger's rule listens on and job state changes go to.
pub const EVENT_BUS: Setting =
    Setting { variable: var::EVENT_BUS, flag: "--bus", what: "the name or ARN of the event bus" };
/// The endpoint of every AWS client (a local stack); the AWS SDK reads the variable too.
pub const ENDPOINT_URL: Setting =
    Setting { variable: "AWS_ENDPOINT_URL", flag: "--endpoint-url", what: "the URL of the AWS endpoint" };
/// The variables only the CLI reads (the functions are told their queues by their
/// triggers); `podbridge dev` exports them. The functions' variables are named in
/// `podbridge::settings::var`.
pub const QUEUE_URL_VAR: &str = "PODBRIDGE_QUEUE_URL";
/// The job queue's dead-letter queue (exported by `podbridge dev`).
pub const DLQ_URL_VAR: &str = "PODBRIDGE_DLQ_URL";
/// The trigger's queue in the local stack, where ticks and job events are delivered.
pub const TRIGGER_QUEUE_URL_VAR: &str = "PODBRIDGE_TRIGGER_QUEUE_URL";
/// The URL of the console `podbridge dev` serves (read by people and scripts).
pub const CONSOLE_URL_VAR: &str = "PODBRIDGE_CONSOLE_URL";
/// The trigger's dead-letter queue.
pub const TRIGGER_DLQ_URL_VAR: &str = "PODBRIDGE_TRIGGER_DLQ_URL";

/// What a missing setting's error adds about where values come from.
const WHERE_FROM: &str = "`podbridge dev` prints the export lines for the local stack; for a deployed \
     stack, `sam list stack-outputs` shows JobTableName, QueueTableName, JobQueueUrl and EventBusName";

/// The connection flags every operator command takes.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Connection (each flag overrides its environment variable)")]
pub struct Flags {
    /// The DynamoDB job table [env: PODBRIDGE_TABLE].
    #[arg(long, value_name = "NAME")]
    pub table: Option<String>,
    /// The DynamoDB queue table [env: PODBRIDGE_QUEUE_TABLE].
    #[arg(long, value_name = "NAME")]
    pub queue_table: Option<String>,
    /// The URL of the job queue [env: PODBRIDGE_QUEUE_URL].
    #[arg(long, value_name = "URL")]
    pub queue_url: Option<String>,
    /// The EventBridge bus, a name or an ARN [env: PODBRIDGE_EVENT_BUS; default: default].
    #[arg(long, value_name = "BUS")]
    pub bus: Option<String>,
    /// The endpoint of every AWS call, e.g. a local stack's moto server
    /// [env: AWS_ENDPOINT_URL; default: AWS itself].
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
}

/// The connection settings, each resolved from its flag, else its variable (blank
/// counts as unset, as it does for the functions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    table: Option<String>,
    queue_table: Option<String>,
    queue_url: Option<String>,
    bus: String,
    endpoint_url: Option<String>,
}

impl Target {
    /// Resolves `args` against the process environment.
    pub fn from_env(args: &Flags) -> Self {
        Self::from_lookup(args, |name| std::env::var(name).ok())
    }

    /// Resolves `args` against `env` (the environment, or a map in tests).
    pub fn from_lookup(args: &Flags, env: impl Fn(&str) -> Option<String>) -> Self {
        let pick = |flag: &Option<String>, setting: Setting| {
            flag.clone().or_else(|| env(setting.variable)).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
        };
        Self {
            table: pick(&args.table, TABLE),
            queue_table: pick(&args.queue_table, QUEUE_TABLE),
            queue_url: pick(&args.queue_url, QUEUE_URL),
            bus: pick(&args.bus, EVENT_BUS).unwrap_or_else(|| DEFAULT_EVENT_BUS.to_owned()),
            endpoint_url: pick(&args.endpoint_url, ENDPOINT_URL),
        }
    }

    /// The job table, or an error naming the variable and the flag.
    pub fn table(&self) -> anyhow::Result<&str> {
        required(self.table.as_deref(), TABLE)
    }

    /// The job table when one is configured: for commands that only use it to say more.
    pub fn table_if_set(&self) -> Option<&str> {
        self.table.as_deref()
    }

    /// The queue table, or an error naming the variable and the flag.
    pub fn queue_table(&self) -> anyhow::Result<&str> {
        required(self.queue_table.as_deref(), QUEUE_TABLE)
    }

    /// The queue table when one is configured: the job store gets it where it is set.
    pub fn queue_table_if_set(&self) -> Option<&str> {
        self.queue_table.as_deref()
    }

    /// The job queue's URL, or an error naming the variable and the flag.
    pub fn queue_url(&self) -> anyhow::Result<&str> {
        required(self.queue_url.as_deref(), QUEUE_URL)
    }

    /// The event bus (`default` unless configured).
    pub fn bus(&self) -> &str {
        &self.bus
    }

    /// Loads the AWS configuration: the SDK's region and credentials chain, and the
    /// endpoint when one is configured.
    pub async fn connect(&self) -> anyhow::Result<Aws> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(endpoint) = &self.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        let sdk = loader.load().await;
        let Some(region) = sdk.region().map(ToString::to_string) else {
            anyhow::bail!(
                "no AWS region is configured: set AWS_REGION (or a region in the profile AWS_PROFILE names); \
                 the local stack's export lines set it"
            );
        };
        let place = match &self.endpoint_url {
            Some(endpoint) => format!("{endpoint} (region {region})"),
            None => format!("AWS region {region}"),
        };
        Ok(Aws { sdk, place })
    }
}

fn required(value: Option<&str>, setting: Setting) -> anyhow::Result<&str> {
    value.ok_or_else(|| {
        anyhow::anyhow!(
            "{} is not set: set it to {}, or pass {}; {WHERE_FROM}",
            setting.variable,
            setting.what,
            setting.flag
        )
    })
}

/// The AWS configuration of one command, and the clients built from it.
#[derive(Debug, Clone)]
pub struct Aws {
    sdk: SdkConfig,
    /// Where the calls go, for messages: the endpoint, or the AWS region.
    place: String,
}

impl Aws {
    /// The clients of `sdk`, whose calls go to `place` (in words, for messages).
    pub fn new(sdk: SdkConfig, place: String) -> Self {
        Self { sdk, place }
    }

    pub fn sdk(&self) -> &SdkConfig {
        &self.sdk
    }

    /// Where the calls go, in words: the endpoint, or the AWS region.
    pub fn place(&self) -> &str {
        &self.place
    }

    /// The job store on `table`, with the queue table `queue_table` when one is
    /// configured ([`Target::queue_table_if_set`]; a command that reads or changes queues
    /// requires it with [`Target::queue_table`]).
    pub fn store(&self, table: &str, queue_table: Option<&str>) -> DynamoJobStore {
        let store = DynamoJobStore::new(aws_sdk_dynamodb::Client::new(&self.sdk), table);
        match queue_table {
            Some(queue_table) => store.with_queue_table(queue_table),
            None => store,
        }
    }

    pub fn events(&self) -> aws_sdk_eventbridge::Client {
        aws_sdk_eventbridge::Client::new(&self.sdk)
    }

    /// Sends `body` to the queue; returns the SQS message id.
    pub async fn send_message(&self, queue_url: &str, body: &str) -> anyhow::Result<String> {
        let sent = aws_sdk_sqs::Client::new(&self.sdk)
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|error| self.explain_sdk(&error, &format!("sending a message to the queue {queue_url}")))?;
        sent.message_id
            .ok_or_else(|| anyhow::anyhow!("the queue {queue_url} answered SendMessage without a message id"))
    }

    /// `error`, from doing `what`, as an error that says where the call went and, when
    /// its cause is a familiar one, what to check.
    pub fn explain(&self, error: &(dyn std::error::Error + 'static), what: &str) -> anyhow::Error {
        self.explained(&causes(error), what)
    }

    /// [`Aws::explain`] for an error of an SDK call: an answer of the service is its
    /// code and message, rather than the SDK's rendering of its metadata.
    pub fn explain_sdk<E, R>(&self, error: &SdkError<E, R>, what: &str) -> anyhow::Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
    {
        match (error, error.code()) {
            (SdkError::ServiceError(_), Some(code)) => {
                self.explained(&format!("{code}: {}", error.message().unwrap_or("(no message)")), what)
            }
            _ => self.explain(error, what),
        }
    }

    fn explained(&self, cause: &str, what: &str) -> anyhow::Error {
        match hint(cause) {
            Some(hint) => anyhow::anyhow!("{what} at {} failed: {cause}\n  hint: {hint}", self.place),
            None => anyhow::anyhow!("{what} at {} failed: {cause}", self.place),
        }
    }
}

/// An error and its causes on one line, leaving out a cause whose text is already
/// there (the SDK repeats a service's answer at two levels).
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// What to check, for the causes an operator meets most: a wrong name, no stack, no
/// credentials. `chain` is the error with its causes on one line.
fn hint(chain: &str) -> Option<String> {
    let has = |needle: &str| chain.contains(needle);
    let hint = if has("NonExistentQueue") || has("QueueDoesNotExist") {
        format!("the queue does not exist there: check {} / {}", QUEUE_URL.variable, QUEUE_URL.flag)
    } else if has("Requested resource not found") || has("non-existent table") {
        format!(
            "the table does not exist there: check {} / {}, {} / {} and the region",
            TABLE.variable, TABLE.flag, QUEUE_TABLE.variable, QUEUE_TABLE.flag
        )
    } else if has("ResourceNotFoundException") && (has("bus") || has("Bus")) {
        format!("the event bus does not exist there: check {} / {}", EVENT_BUS.variable, EVENT_BUS.flag)
    } else if has("credentials") || has("UnrecognizedClientException") || has("InvalidClientTokenId") {
        "no usable AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".to_owned()
    } else if has("dispatch failure") || has("Connection refused") || has("connection refused") || has("dns error") {
        format!(
            "nothing answered: is the local stack running (`podbridge dev`), and is {} / {} right?",
            ENDPOINT_URL.variable, ENDPOINT_URL.flag
        )
    } else {
        return None;
    };
    Some(hint)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn target(env: &[(&str, &str)], args: &Flags) -> Target {
        let map: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Target::from_lookup(args, |name| map.get(name).cloned())
    }

    #[test]
    fn flags_override_variables_and_blank_is_unset() {
        let env = [
            ("PODBRIDGE_TABLE", "jobs-env"),
            ("PODBRIDGE_QUEUE_TABLE", "queues-env"),
            ("PODBRIDGE_QUEUE_URL", " "),
            ("PODBRIDGE_EVENT_BUS", "bus-env"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
        ];
        let from_env = target(&env, &Flags::default());
        assert_eq!(from_env.table().unwrap(), "jobs-env");
        assert_eq!(from_env.queue_table().unwrap(), "queues-env");
        assert_eq!(from_env.bus(), "bus-env");
        assert_eq!(from_env.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
        assert!(from_env.queue_url().is_err(), "a blank variable is unset");

        let args = Flags {
            table: Some("jobs-flag".into()),
            queue_table: Some("queues-flag".into()),
            queue_url: Some("http://q".into()),
            bus: Some("bus-flag".into()),
            endpoint_url: Some("http://e".into()),
        };
        let from_flags = target(&env, &args);
        assert_eq!(from_flags.table().unwrap(), "jobs-flag");
        assert_eq!(from_flags.queue_table().unwrap(), "queues-flag");
        assert_eq!(from_flags.queue_url().unwrap(), "http://q");
        assert_eq!(from_flags.bus(), "bus-flag");
        assert_eq!(from_flags.endpoint_url.as_deref(), Some("http://e"));
    }

    #[test]
    fn a_missing_setting_names_its_variable_and_flag() {
        let empty = target(&[], &Flags::default());
        assert_eq!(empty.bus(), "default");
        assert_eq!(empty.table_if_set(), None);
        assert_eq!(empty.queue_table_if_set(), None);
        let error = empty.table().unwrap_err().to_string();
        assert!(error.starts_with("PODBRIDGE_TABLE is not set") && error.contains("--table"), "{error}");
        let error = empty.queue_table().unwrap_err().to_string();
        assert!(
            error.starts_with("PODBRIDGE_QUEUE_TABLE is not set")
                && error.contains("--queue-table")
                && error.contains("QueueTableName"),
            "{error}"
        );
        let error = empty.queue_url().unwrap_err().to_string();
        assert!(error.starts_with("PODBRIDGE_QUEUE_URL is not set") && error.contains("--queue-url"), "{error}");
    }

    #[test]
    fn familiar_causes_get_a_hint() {
        let check = |chain: &str, expected: Option<&str>| {
            let hint = hint(chain);
            match expected {
                Some(needle) => assert!(hint.as_deref().is_some_and(|h| h.contains(needle)), "{chain}: {hint:?}"),
                None => assert_eq!(hint, None, "{chain}"),
            }
        };
        check(
            "job store: get job failed: service error: ResourceNotFoundException: Requested resource not found",
            Some("PODBRIDGE_TABLE"),
        );
        check(
            "service error: AWS.SimpleQueueService.NonExistentQueue: The specified queue does not exist",
            Some("PODBRIDGE_QUEUE_URL"),
        );
        check("ResourceNotFoundException: Cannot do operations on a non-existent table", Some("PODBRIDGE_TABLE"));
        check("ResourceNotFoundException: Event bus nope does not exist.", Some("PODBRIDGE_EVENT_BUS"));
        check(
            "dispatch failure: io error: client error (Connect): tcp connect error: Connection refused (os error 111)",
            Some("AWS_ENDPOINT_URL"),
        );
        check("failed to construct request: no credentials in the property bag", Some("AWS_PROFILE"));
        check("service error: ValidationException: something else", None);
    }
}
