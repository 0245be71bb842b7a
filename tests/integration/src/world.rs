//! The world a test runs against, built once here instead of in every test file (in
//! the spirit of controller-rs's `Context::test()` and linkerd2-proxy's shared test
//! crate): a fresh job table on the stack's moto, a cluster (the stack's kube-sim, or
//! one of the test's own), the guardrails, and the [`Submitter`] and [`Reconciler`]
//! over one [`Attempts`], so that they share their store and cluster handles as the
//! functions of a deployment do. Queues, an event bus and a latency proxy in front of
//! DynamoDB are there when a test asks for them.
//!
//! ```ignore
//! let world = World::builder()
//!     .own_cluster(SimConfig { faults, ..SimConfig::default() })
//!     .queue(3, 1)
//!     .build()
//!     .await;
//! send_all(&world.sqs, &world.queues().url, &bodies).await;
//! let delivery = world.deliver(world.queues(), Duration::from_secs(20)).await;
//! assert_eq!(world.recorded("report-1").await.state, JobState::SettingUp);
//! ```
//!
//! Everything a test may want to look at directly is a public field; what exists only
//! when asked for (the test's own kube-sim, the queues, the event subscription, the
//! proxy) is behind an accessor that panics, naming the builder option, when it was not.

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ObjectMeta, PostParams};
use kube_sim::{KubeSim, SimConfig};
use podbridge::cluster::KubeCluster;
use podbridge::eks::{ClientOptions, ClusterAccess};
use podbridge::journal::Journal;
use podbridge::metrics::Metrics;
use podbridge::services::{Attempts, Submitter};
use podbridge::settings::var;
use podbridge::store::Store;
use podbridge::store::dynamodb::{DynamoJobStore, create_table};
use podbridge_core::admission::{Limits, NodeSize};
use podbridge_core::pod::PodSettings;
use podbridge_core::reconcile::Thresholds;
use podbridge_core::record::JobRecord;
use podbridge_core::state::JobState;
use podbridge_core::tenancy::Tenancy;
use podbridge_core::validate::Guardrails;
use reconcile::{PassReport, Reconciler};
use serde_json::Value;

use crate::events::{Subscription, job_state_changes};
use crate::latency_proxy::LatencyProxy;
use crate::sqs::{Delivery, Queues, create_queues, deliver};
use crate::{REGION, Stack, unique_name};

/// The registry every test job's image comes from, and the only one the default
/// guardrails allow.
pub const IMAGE_PREFIX: &str = "registry.example.com/";

/// How long a world's terminal records are kept (what the table's TTL would act on).
const RECORD_TTL: Duration = Duration::from_secs(86_400);

/// Records of one SQS batch handled at once, as the dispatch function's default.
const BATCH_CONCURRENCY: usize = 10;

/// The store the functions write through: the job table, each transition published to
/// the event bus and counted.
pub type Journaled = podbridge::wiring::FunctionStore;

/// A job store a world can open on its table: the table itself ([`DynamoJobStore`]), or
/// the table journaled to the world's event bus ([`Journaled`]), as a function's is.
pub trait WorldStore: Store + Sized + 'static {
    /// The store on `table`; `events` is the world's subscription, when it has one.
    fn open(table: DynamoJobStore, events: Option<&Subscription>) -> Self;

    /// Publishes what was written since the last flush, as a function does after each
    /// invocation; nothing, for a store that publishes nothing.
    fn flush(&self) -> impl Future<Output = ()>;
}

impl WorldStore for DynamoJobStore {
    fn open(table: DynamoJobStore, _: Option<&Subscription>) -> Self {
        table
    }

    async fn flush(&self) {}
}

impl WorldStore for Journaled {
    fn open(table: DynamoJobStore, events: Option<&Subscription>) -> Self {
        let events = events.expect("a journaled world has an event bus (WorldBuilder::journaled makes one)");
        Journal::new(table, events.sink(), Metrics::new("podbridge", "test"))
    }

    async fn flush(&self) {
        Journal::flush(self).await;
    }
}

/// What a world is built with; see [`World::builder`].
#[derive(Debug)]
pub struct WorldBuilder<S = DynamoJobStore> {
    name: String,
    guardrails: Guardrails,
    thresholds: Thresholds,
    admission: (Limits, Option<NodeSize>),
    own_cluster: Option<SimConfig>,
    fresh_namespace: bool,
    kube_timeout: Duration,
    concurrency: usize,
    follow_window: Option<Duration>,
    max_manual_retries: Option<u32>,
    queue: Option<(u32, u32)>,
    events: Option<Value>,
    latency_proxy: Option<u64>,
    dynamodb_attempt_timeout: Option<Duration>,
    store: PhantomData<fn() -> S>,
}

impl<S> WorldBuilder<S> {
    /// The prefix of the world's table and queue names (default `jobs`), to tell them
    /// apart in moto.
    pub fn name(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.name);
        self
    }

    /// The deployment's guardrails (default: images from [`IMAGE_PREFIX`] only, the
    /// rest [`Guardrails::default`]). Their first namespace is where jobs without one run.
    pub fn guardrails(mut self, guardrails: Guardrails) -> Self {
        self.guardrails = guardrails;
        self
    }

    /// The reconciler's limits (default [`Thresholds::default`]).
    pub fn thresholds(mut self, thresholds: Thresholds) -> Self {
        self.thresholds = thresholds;
        self
    }

    /// The limit across all queues when the queue table sets none, and the configured
    /// largest node (the deployment's `PODBRIDGE_MAX_ADMITTED_*` and
    /// `PODBRIDGE_LARGEST_NODE_*`). Default: no limit, no configured node.
    pub fn admission(mut self, total: Limits, largest_node: Option<NodeSize>) -> Self {
        self.admission = (total, largest_node);
        self
    }

    /// A kube-sim of the test's own, started in this process with `config`, instead of
    /// the stack's: for faults, timings and nodes no other test may see, and for
    /// [`World::sim`] (its creation log, its nodes, its faults).
    pub fn own_cluster(mut self, config: SimConfig) -> Self {
        self.own_cluster = Some(config);
        self
    }

    /// Creates a namespace of the world's own in its cluster and makes it the
    /// guardrails' only namespace, so that no pod of another run is in the way.
    pub fn fresh_namespace(mut self) -> Self {
        self.fresh_namespace = true;
        self
    }

    /// The deadline of each Kubernetes call (default 5 s). The client's read and write
    /// timeouts are the deployment's default, or this when it is longer.
    pub fn kube_timeout(mut self, timeout: Duration) -> Self {
        self.kube_timeout = timeout;
        self
    }

    /// Jobs the reconciler works on at once (default 10).
    pub fn reconcile_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// How long each watch window of [`Reconciler::run`] lasts (default the reconciler's).
    pub fn follow_window(mut self, window: Duration) -> Self {
        self.follow_window = Some(window);
        self
    }

    /// Bounds the retries on request of one job (default the deployment's default).
    pub fn max_manual_retries(mut self, max: u32) -> Self {
        self.max_manual_retries = Some(max);
        self
    }

    /// A job queue and its dead-letter queue ([`World::queues`]), redriving after
    /// `max_receives` receives, with a visibility timeout of `visibility` seconds.
    pub fn queue(mut self, max_receives: u32, visibility: u32) -> Self {
        self.queue = Some((max_receives, visibility));
        self
    }

    /// A bus of the world's own with a rule sending podbridge's job state changes to a
    /// queue, as a consumer sets it up ([`World::events`]).
    pub fn events(self) -> Self {
        self.events_matching(job_state_changes())
    }

    /// A bus of the world's own with a rule sending the events that match `pattern` to
    /// a queue ([`World::events`]): what a rule delivers to the trigger function, say.
    pub fn events_matching(mut self, pattern: Value) -> Self {
        self.events = Some(pattern);
        self
    }

    /// The store journaled to the world's bus, as the functions' store is: every write
    /// is announced once [`WorldStore::flush`] runs (which [`World::submit`] and
    /// [`World::pass`] do). Implies [`WorldBuilder::events`] unless a pattern was given.
    pub fn journaled(self) -> WorldBuilder<Journaled> {
        let with_events = if self.events.is_some() { self } else { self.events() };
        WorldBuilder {
            name: with_events.name,
            guardrails: with_events.guardrails,
            thresholds: with_events.thresholds,
            admission: with_events.admission,
            own_cluster: with_events.own_cluster,
            fresh_namespace: with_events.fresh_namespace,
            kube_timeout: with_events.kube_timeout,
            concurrency: with_events.concurrency,
            follow_window: with_events.follow_window,
            max_manual_retries: with_events.max_manual_retries,
            queue: with_events.queue,
            events: with_events.events,
            latency_proxy: with_events.latency_proxy,
            dynamodb_attempt_timeout: with_events.dynamodb_attempt_timeout,
            store: PhantomData,
        }
    }

    /// Sends the store's DynamoDB requests through a [`LatencyProxy`] to moto
    /// ([`World::proxy`]), whose choices of what to hold back follow `seed`.
    pub fn latency_proxy(mut self, seed: u64) -> Self {
        self.latency_proxy = Some(seed);
        self
    }

    /// The store's DynamoDB client gives up on an attempt after `timeout` (and tries
    /// again, as the SDK does). The functions' clients set none.
    pub fn dynamodb_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.dynamodb_attempt_timeout = Some(timeout);
        self
    }
}

impl<S: WorldStore> WorldBuilder<S> {
    /// Connects to the stack and builds the world.
    ///
    /// # Panics
    ///
    /// When the stack is missing (see [`Stack::from_env`]) or any part of the world
    /// cannot be made: a test without its world is a failure, never a skipped test.
    pub async fn build(self) -> World<S> {
        let stack = Stack::from_env().await;
        let table = unique_name(&self.name);
        create_table(&stack.dynamodb(), &table)
            .await
            .unwrap_or_else(|error| panic!("cannot create the job table {table}: {error}"));
        let queue_table = format!("{table}-queues");
        podbridge::store::queue_table::create_table(&stack.dynamodb(), &queue_table)
            .await
            .unwrap_or_else(|error| panic!("cannot create the queue table {queue_table}: {error}"));

        let proxy = match self.latency_proxy {
            Some(seed) => {
                Some(LatencyProxy::to_url(&stack.aws_endpoint, seed).await.expect("the DynamoDB proxy starts"))
            }
            None => None,
        };
        let mut dynamodb = aws_sdk_dynamodb::config::Builder::from(&stack.aws);
        if let Some(proxy) = &proxy {
            dynamodb = dynamodb.endpoint_url(proxy.url());
        }
        if let Some(timeout) = self.dynamodb_attempt_timeout {
            dynamodb = dynamodb.timeout_config(TimeoutConfig::builder().operation_attempt_timeout(timeout).build());
        }
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(dynamodb.build());

        let events = match self.events {
            Some(pattern) => Some(Subscription::matching(&stack, pattern).await.expect("an event subscription")),
            None => None,
        };
        let store =
            Arc::new(S::open(DynamoJobStore::new(dynamodb, &table).with_queue_table(&queue_table), events.as_ref()));

        let own = match self.own_cluster {
            Some(config) => Some(OwnCluster::start(config).await),
            None => None,
        };
        let kubeconfig = own.as_ref().map_or(stack.kubeconfig.as_path(), |own| own.kubeconfig.0.as_path());
        let kube = kube_client(kubeconfig, &stack, self.kube_timeout).await;
        let mut guardrails = self.guardrails;
        if self.fresh_namespace {
            let name = unique_name("ns");
            let namespace = Namespace {
                metadata: ObjectMeta { name: Some(name.clone()), ..ObjectMeta::default() },
                ..Namespace::default()
            };
            Api::<Namespace>::all(kube.clone())
                .create(&PostParams::default(), &namespace)
                .await
                .unwrap_or_else(|error| panic!("cannot create the namespace {name}: {error}"));
            guardrails.namespaces = vec![name];
        }

        let cluster = Arc::new(KubeCluster::new(kube.clone(), self.kube_timeout));
        let attempts =
            Attempts::new(Arc::clone(&store), Arc::clone(&cluster), guardrails, PodSettings::default(), RECORD_TTL)
                .with_admission(self.admission.0, self.admission.1);
        let mut submitter = Submitter::over(attempts.clone());
        if let Some(max) = self.max_manual_retries {
            submitter = submitter.with_max_manual_retries(max);
        }
        let mut reconciler = Reconciler::new(attempts.clone(), self.thresholds, self.concurrency);
        if let Some(window) = self.follow_window {
            reconciler = reconciler.with_follow_window(window);
        }
        let sqs = stack.sqs();
        let queues = match self.queue {
            Some((max_receives, visibility)) => {
                Some(create_queues(&sqs, &unique_name(&self.name), max_receives, visibility).await)
            }
            None => None,
        };
        World {
            stack,
            table,
            queue_table,
            store,
            kube,
            cluster,
            attempts,
            submitter,
            reconciler,
            sqs,
            queues,
            events,
            received: Mutex::default(),
            proxy,
            own,
        }
    }
}

/// A Kubernetes client for the cluster of `kubeconfig`, built as every podbridge
/// function builds its own ([`podbridge::eks::client`], kube's retries off, so a test
/// sees every answer).
async fn kube_client(kubeconfig: &Path, stack: &Stack, timeout: Duration) -> kube::Client {
    let defaults = ClientOptions::default();
    let options = ClientOptions {
        read_timeout: defaults.read_timeout.max(timeout),
        write_timeout: defaults.write_timeout.max(timeout),
        ..defaults
    };
    let access = ClusterAccess::Kubeconfig { path: Some(kubeconfig.to_owned()) };
    podbridge::eks::client(&access, &stack.aws, &options)
        .await
        .unwrap_or_else(|error| panic!("no Kubernetes client for the kubeconfig {}: {error}", kubeconfig.display()))
}

/// A kube-sim of the test's own and its kubeconfig, written for whatever reads one (the
/// world's client, a function the test starts).
#[derive(Debug)]
struct OwnCluster {
    sim: KubeSim,
    kubeconfig: TempFile,
}

impl OwnCluster {
    async fn start(config: SimConfig) -> OwnCluster {
        let sim = KubeSim::start("127.0.0.1:0".parse().expect("an address"), config).await.expect("kube-sim starts");
        let kubeconfig = TempFile(std::env::temp_dir().join(format!("{}.kubeconfig", unique_name("kube-sim"))));
        sim.write_kubeconfig(&kubeconfig.0).expect("kube-sim's kubeconfig is written");
        OwnCluster { sim, kubeconfig }
    }
}

/// A file removed when the world goes, however the test ends.
#[derive(Debug)]
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Everything one test runs against; see the [module docs](self).
pub struct World<S = DynamoJobStore> {
    /// The local stack: AWS configuration and a client of the stack's own kube-sim.
    pub stack: Stack,
    /// The name of the world's fresh job table.
    pub table: String,
    /// The name of its queue table.
    pub queue_table: String,
    /// The job store on that table (through the proxy, when there is one).
    pub store: Arc<S>,
    /// A client of the world's cluster (the stack's, or the test's own).
    pub kube: kube::Client,
    /// The cluster adapter over [`World::kube`].
    pub cluster: Arc<KubeCluster>,
    /// What starts attempts; the submitter and the reconciler share it.
    pub attempts: Attempts<S, KubeCluster>,
    /// What serves senders: every sender may use every namespace (see
    /// [`World::with_tenancy`]).
    pub submitter: Submitter<S, KubeCluster>,
    pub reconciler: Reconciler<S, KubeCluster>,
    pub sqs: aws_sdk_sqs::Client,
    queues: Option<Queues>,
    events: Option<Subscription>,
    /// Every event the subscription delivered so far ([`World::events_of`]).
    received: Mutex<Vec<Value>>,
    proxy: Option<LatencyProxy>,
    own: Option<OwnCluster>,
}

impl<S> fmt::Debug for World<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The services hold clients without Debug; the names identify the world.
        f.debug_struct("World")
            .field("stack", &self.stack)
            .field("table", &self.table)
            .field("kubeconfig", &self.kubeconfig())
            .field("queues", &self.queues)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl World {
    /// A world with a fresh table on the stack's moto and the stack's cluster, images
    /// from [`IMAGE_PREFIX`], default thresholds, no queue and no bus; the builder's
    /// options change what the test needs changed.
    pub fn builder() -> WorldBuilder {
        WorldBuilder {
            name: "jobs".to_owned(),
            guardrails: Guardrails { image_prefixes: vec![IMAGE_PREFIX.into()], ..Guardrails::default() },
            thresholds: Thresholds::default(),
            admission: (Limits::NONE, None),
            own_cluster: None,
            fresh_namespace: false,
            kube_timeout: Duration::from_secs(5),
            concurrency: 10,
            follow_window: None,
            max_manual_retries: None,
            queue: None,
            events: None,
            latency_proxy: None,
            dynamodb_attempt_timeout: None,
            store: PhantomData,
        }
    }
}

impl<S> World<S> {
    /// The test's own kube-sim.
    ///
    /// # Panics
    ///
    /// When the world uses the stack's cluster ([`WorldBuilder::own_cluster`] was not asked).
    pub fn sim(&self) -> &KubeSim {
        &self.own.as_ref().expect("this world uses the stack's cluster: build it with WorldBuilder::own_cluster").sim
    }

    /// The kubeconfig of the world's cluster, for whatever reads one.
    pub fn kubeconfig(&self) -> &Path {
        self.own.as_ref().map_or(self.stack.kubeconfig.as_path(), |own| own.kubeconfig.0.as_path())
    }

    /// The world's job queue and its dead-letter queue.
    ///
    /// # Panics
    ///
    /// When [`WorldBuilder::queue`] was not asked.
    pub fn queues(&self) -> &Queues {
        self.queues.as_ref().expect("this world has no queue: build it with WorldBuilder::queue")
    }

    /// The world's event bus, and the queue its rule sends events to.
    ///
    /// # Panics
    ///
    /// When neither [`WorldBuilder::events`] nor [`WorldBuilder::journaled`] was asked.
    pub fn events(&self) -> &Subscription {
        self.events.as_ref().expect("this world has no event bus: build it with WorldBuilder::events")
    }

    /// The proxy between the store and moto.
    ///
    /// # Panics
    ///
    /// When [`WorldBuilder::latency_proxy`] was not asked.
    pub fn proxy(&self) -> &LatencyProxy {
        self.proxy.as_ref().expect("this world has no proxy: build it with WorldBuilder::latency_proxy")
    }

    /// Where a job that names no namespace runs: the guardrails' first.
    pub fn namespace(&self) -> &str {
        &self.attempts.guardrails().namespaces[0]
    }

    /// The pods of [`World::namespace`].
    pub fn pods(&self) -> Api<Pod> {
        self.pods_in(self.namespace())
    }

    /// The pods of `namespace`.
    pub fn pods_in(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.kube.clone(), namespace)
    }

    /// The names of every pod ever created for `job_id`, in order, from the creation
    /// log of the test's own kube-sim (deleted pods included).
    pub fn pods_created_for(&self, job_id: &str) -> Vec<String> {
        crate::pods_created_for(self.sim(), job_id)
    }

    /// A store on the world's table through the stack's own client, past the proxy
    /// and its timeouts: to read what was written, as a person would.
    pub fn direct_store(&self) -> DynamoJobStore {
        DynamoJobStore::new(self.stack.dynamodb(), &self.table).with_queue_table(&self.queue_table)
    }

    /// Another queue and its dead-letter queue (`prefix`, then a unique suffix).
    pub async fn new_queues(&self, prefix: &str, max_receives: u32, visibility: u32) -> Queues {
        create_queues(&self.sqs, &unique_name(prefix), max_receives, visibility).await
    }

    /// The environment a function binary of this deployment runs with: the world's
    /// table, the guardrails' namespaces and image prefixes (their other limits are
    /// the deployment's defaults), the world's cluster, the event bus when the world
    /// has one, and the stack's AWS endpoint with dummy credentials.
    pub fn function_env(&self) -> Vec<(String, String)> {
        let guardrails = self.attempts.guardrails();
        let mut env = vec![
            (var::TABLE, self.table.clone()),
            (var::QUEUE_TABLE, self.queue_table.clone()),
            (var::NAMESPACES, guardrails.namespaces.join(",")),
            (var::IMAGE_PREFIXES, guardrails.image_prefixes.join(",")),
            ("KUBECONFIG", self.kubeconfig().display().to_string()),
            ("AWS_ENDPOINT_URL", self.stack.aws_endpoint.clone()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_DEFAULT_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ];
        if let Some(events) = &self.events {
            env.push((var::EVENT_BUS, events.bus.clone()));
        }
        env.into_iter().map(|(name, value)| (name.to_owned(), value)).collect()
    }

    /// The events of `job_id` the subscription delivered so far (the `detail` of each),
    /// in the order of their transitions.
    pub async fn events_of(&self, job_id: &str) -> Vec<Value> {
        let new = self.events().drain().await.expect("events from the subscription");
        let mut all = self.received.lock().unwrap_or_else(PoisonError::into_inner);
        all.extend(new);
        let mut events: Vec<Value> =
            all.iter().filter(|e| e["detail"]["jobId"] == job_id).map(|e| e["detail"].clone()).collect();
        let at = |e: &Value| e["at"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok());
        events.sort_by_key(|e| (at(e), e["attempt"].as_u64()));
        events
    }
}

impl<S: WorldStore> World<S> {
    /// The job's record, if there is one.
    pub async fn record(&self, job_id: &str) -> Option<JobRecord> {
        self.store.get(job_id).await.unwrap()
    }

    /// The job's record, which must be there.
    pub async fn recorded(&self, job_id: &str) -> JobRecord {
        self.record(job_id).await.unwrap_or_else(|| panic!("job {job_id} is not recorded"))
    }

    /// Scopes senders to their namespaces, as `PODBRIDGE_SENDERS` does.
    pub fn with_tenancy(mut self, tenancy: Tenancy) -> Self {
        self.submitter = self.submitter.with_tenancy(tenancy);
        self
    }

    /// A submitter over the world's store and cluster held to other guardrails: the
    /// same deployment after its operator changed them.
    pub fn submitter_with(&self, guardrails: Guardrails) -> Submitter<S, KubeCluster> {
        let attempts = Attempts::new(
            Arc::clone(&self.store),
            Arc::clone(&self.cluster),
            guardrails,
            PodSettings::default(),
            self.attempts.record_ttl(),
        );
        Submitter::over(attempts)
    }

    /// Polls `queues` and hands each batch to the dispatch function's handler, as
    /// Lambda's event source mapping would, until the queue is empty or `timeout` passes.
    pub async fn deliver(&self, queues: &Queues, timeout: Duration) -> Delivery {
        deliver(&self.sqs, queues, timeout, |event| dispatch::handle(&self.submitter, event, BATCH_CONCURRENCY)).await
    }

    /// Dispatches one message, as the dispatch function handles a batch of one, and
    /// publishes its events.
    ///
    /// # Panics
    ///
    /// When the handler reports the message as failed.
    pub async fn submit(&self, body: &str) {
        let mut record = SqsMessage::default();
        record.message_id = Some(unique_name("m"));
        record.body = Some(body.to_owned());
        let mut event = SqsEvent::default();
        event.records = vec![record];
        let response = dispatch::handle(&self.submitter, event, BATCH_CONCURRENCY).await;
        assert!(response.batch_item_failures.is_empty(), "dispatched");
        // As the dispatch function does after each batch.
        self.store.flush().await;
    }

    /// One reconcile pass, and its events published, as the reconcile function does.
    pub async fn pass(&self) -> PassReport {
        let report = self.reconciler.pass(jiff::Timestamp::now()).await.expect("a pass");
        self.store.flush().await;
        report
    }

    /// Runs passes until the job is in `state` (at most 15 s).
    pub async fn reconcile_until(&self, job_id: &str, state: JobState) -> JobRecord {
        for _ in 0..300 {
            self.pass().await;
            if let Some(record) = self.record(job_id).await.filter(|r| r.state == state) {
                return record;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{job_id} never reached {state}: {:#?}", self.record(job_id).await);
    }
}
