//! EKS authentication and the Kubernetes client podbridge's functions use.
//!
//! On EKS a function authenticates with its own IAM role: the bearer token is a presigned
//! STS `GetCallerIdentity` URL ([`token`]), exactly what `aws eks get-token` and
//! aws-iam-authenticator produce. [`TokenSource`] caches it and signs a new one before
//! EKS would reject the old, and the client built by [`client`] (or [`bearer_client`])
//! asks for a token on every request, so a Lambda container that lives for hours never
//! sends an expired one. For local use, [`ClusterAccess::Kubeconfig`] reads a kubeconfig.
//!
//! Every client is built with kube's retries off and with short timeouts
//! ([`ClientOptions`]): a handler has a deadline and a queue that redelivers, so podbridge
//! decides retries itself instead of sitting in kube's back-off.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_eks::error::{DisplayErrorContext, SdkError};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use futures::future::BoxFuture;
use http::header::{AUTHORIZATION, HeaderValue};
use kube::client::{Body, ClientBuilder};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::{Mutex, RwLock};
use tower::{BoxError, Layer, Service, ServiceExt as _};

use crate::error::{Error, Result, error_chain};

/// The prefix EKS expects in front of the base64url-encoded presigned URL.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";
/// How long EKS accepts a token: aws-iam-authenticator checks that the URL's `X-Amz-Date` is
/// at most 15 minutes old (the URL's own `X-Amz-Expires` of 60 s is not what limits it).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// How long before [`TOKEN_LIFETIME`] runs out a cached token is replaced. Five minutes
/// (refresh after ten) covers clock skew between Lambda and EKS and a request that is
/// still queued or retried with the old token.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// `X-Amz-Expires` of the presigned URL: 60 s, what `aws eks get-token` and
/// aws-iam-authenticator send.
const PRESIGN_EXPIRES: Duration = Duration::from_secs(60);
/// The header that binds a token to one cluster, so it cannot be replayed against another.
const CLUSTER_ID_HEADER: &str = "x-k8s-aws-id";
/// botocore and the AWS CLI put the signature last; so does [`token`].
const SIGNATURE_PARAM: &str = "X-Amz-Signature";

/// Signs an EKS bearer token for `cluster` with `credentials` at `time`.
///
/// The token is `k8s-aws-v1.` followed by the base64url (unpadded) encoding of a presigned
/// `https://sts.{region}.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15` URL
/// whose signed headers include `x-k8s-aws-id: <cluster>`, parameters in botocore's order.
/// Pure: the same inputs give the same token, byte for byte.
pub fn token(credentials: &Credentials, region: &str, cluster: &str, time: SystemTime) -> Result<String> {
    let url = format!("https://sts.{region}.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15");
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(PRESIGN_EXPIRES);
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(time)
        .settings(settings)
        .build()
        .map_err(signing_error)?
        .into();
    // An empty body, hashed, is what botocore signs for a presigned GET outside S3.
    let request =
        SignableRequest::new("GET", url.as_str(), [(CLUSTER_ID_HEADER, cluster)].into_iter(), SignableBody::empty())
            .map_err(signing_error)?;
    let (instructions, _) = sign(request, &params).map_err(signing_error)?.into_parts();

    // aws-sigv4 returns the signature before the session token; botocore appends it last.
    // The order does not change the signature, but matching it keeps tokens comparable.
    let mut url = url;
    let mut signature = None;
    for (name, value) in instructions.params() {
        if *name == SIGNATURE_PARAM {
            signature = Some(value);
        } else {
            push_param(&mut url, name, value);
        }
    }
    if let Some(signature) = signature {
        push_param(&mut url, SIGNATURE_PARAM, signature);
    }
    Ok(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(url)))
}

/// Appends `&name=value`, percent-encoding everything but RFC 3986's unreserved characters,
/// as SigV4 (and botocore) do.
fn push_param(url: &mut String, name: &str, value: &str) {
    url.push('&');
    url.push_str(name);
    url.push('=');
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            url.push(char::from(byte));
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
}

fn signing_error(error: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Auth { message: "cannot presign STS GetCallerIdentity".into(), retryable: false, source: Some(error.into()) }
}

/// Where a bearer token for each Kubernetes request comes from.
///
/// [`TokenSource`] is the production one; any `Fn() -> impl Future<Output = Result<String>>`
/// closure is one too, which is what tests use.
pub trait BearerToken: Send + Sync + 'static {
    /// A token valid for at least the next request.
    fn token(&self) -> impl Future<Output = Result<String>> + Send;
}

impl<F, Fut> BearerToken for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String>> + Send,
{
    fn token(&self) -> impl Future<Output = Result<String>> + Send {
        self()
    }
}

/// A clock, injectable so the refresh logic can be tested without waiting.
type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// EKS tokens for one cluster, signed with the function's own credentials and cached
/// until [`TOKEN_REFRESH_MARGIN`] before they expire.
pub struct TokenSource {
    credentials: SharedCredentialsProvider,
    region: String,
    cluster: String,
    clock: Clock,
    cached: RwLock<Option<CachedToken>>,
}

struct CachedToken {
    token: String,
    refresh_at: SystemTime,
}

impl std::fmt::Debug for TokenSource {
    // By hand: the clock is not `Debug`, and the token is a credential that must not reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("region", &self.region)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// Tokens for `cluster` in `region`, signed with credentials from `credentials`.
    pub fn new(credentials: SharedCredentialsProvider, region: impl Into<String>, cluster: impl Into<String>) -> Self {
        Self {
            credentials,
            region: region.into(),
            cluster: cluster.into(),
            clock: Arc::new(SystemTime::now),
            cached: RwLock::new(None),
        }
    }

    /// Tokens for `cluster`, with the region and credentials provider of `sdk_config`.
    pub fn from_sdk_config(sdk_config: &SdkConfig, cluster: impl Into<String>) -> Result<Self> {
        let region = sdk_config.region().ok_or_else(|| Error::Config("no AWS region: set AWS_REGION".into()))?;
        let credentials = sdk_config
            .credentials_provider()
            .ok_or_else(|| Error::Config("the AWS configuration has no credentials provider".into()))?;
        Ok(Self::new(credentials, region.as_ref(), cluster))
    }

    /// Replaces the clock (`SystemTime::now`); for tests.
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The cached token, or a new one signed with freshly resolved credentials when the
    /// cached one is due for refresh. Lambda rotates the role's credentials, so they are
    /// resolved again for every new token rather than kept.
    pub async fn token(&self) -> Result<String> {
        // The hot path: a shared lock and a clone.
        if let Some(token) = fresh(&*self.cached.read().await, (self.clock)()) {
            return Ok(token);
        }
        // One task refreshes while the others wait for its result instead of all signing.
        let mut cached = self.cached.write().await;
        let now = (self.clock)();
        if let Some(token) = fresh(&cached, now) {
            return Ok(token);
        }
        let credentials = self.credentials.provide_credentials().await.map_err(credentials_error)?;
        let token = token(&credentials, &self.region, &self.cluster, now)?;
        // A signature is only as good as the credentials behind it.
        let mut refresh_at = now + (TOKEN_LIFETIME - TOKEN_REFRESH_MARGIN);
        if let Some(expiry) = credentials.expiry() {
            refresh_at = refresh_at.min(expiry);
        }
        tracing::debug!(cluster = %self.cluster, "signed a new EKS token");
        *cached = Some(CachedToken { token: token.clone(), refresh_at });
        Ok(token)
    }
}

fn fresh(cached: &Option<CachedToken>, now: SystemTime) -> Option<String> {
    cached.as_ref().filter(|cached| now < cached.refresh_at).map(|cached| cached.token.clone())
}

impl BearerToken for TokenSource {
    fn token(&self) -> impl Future<Output = Result<String>> + Send {
        TokenSource::token(self)
    }
}

fn credentials_error(error: CredentialsError) -> Error {
    // Missing or misconfigured credentials stay so; a provider that failed or timed out may not.
    let retryable = matches!(
        error,
        CredentialsError::ProviderTimedOut(_) | CredentialsError::ProviderError(_) | CredentialsError::Unhandled(_)
    );
    Error::Auth {
        message: "cannot resolve the function's AWS credentials".into(),
        retryable,
        source: Some(error.into()),
    }
}

/// How a function reaches its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterAccess {
    /// An EKS cluster, authenticated with the function's IAM role. Endpoint and CA come
    /// from the configuration when given, else from EKS `DescribeCluster`.
    Eks {
        /// The EKS cluster name, also bound into every token.
        cluster_name: String,
        /// The API server URL (`https://...eks.amazonaws.com`).
        endpoint: Option<String>,
        /// The cluster's CA certificate(s) as PEM text (decoded, not base64).
        ca_pem: Option<Vec<u8>>,
    },
    /// Any cluster described by a kubeconfig, with its own authentication (local use).
    Kubeconfig {
        /// The kubeconfig file; `None` follows `KUBECONFIG` or `~/.kube/config`.
        path: Option<PathBuf>,
    },
}

/// Timeouts of the Kubernetes client. kube's own retries are always off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Establishing the TCP and TLS connection.
    pub connect_timeout: Duration,
    /// Waiting for each read from the server, counted from the last write. A watch that
    /// may stay silent longer than this needs a larger value.
    pub read_timeout: Duration,
    /// Each write of the request.
    pub write_timeout: Duration,
}

/// Defaults sized for a Lambda handler with a deadline of tens of seconds: an API server
/// that has not answered in 10 s is better retried through the queue than waited for.
impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
        }
    }
}

impl ClientOptions {
    fn apply(&self, config: &mut kube::Config) {
        // kube 5 retries 429/503/504 up to 15 times with back-off to 1,000 s by default.
        config.default_retry = false;
        config.connect_timeout = Some(self.connect_timeout);
        config.read_timeout = Some(self.read_timeout);
        config.write_timeout = Some(self.write_timeout);
        // Without this, the time a pooled connection sat idle counts against the read timeout.
        config.reset_reader_on_write = true;
    }
}

/// Builds the Kubernetes client for `access`. For EKS, calls `DescribeCluster` once when
/// the endpoint or CA is not configured, and signs a first token so that missing
/// credentials show at start-up rather than at the first job.
pub async fn client(access: &ClusterAccess, sdk_config: &SdkConfig, options: &ClientOptions) -> Result<kube::Client> {
    match access {
        ClusterAccess::Kubeconfig { path } => {
            let kubeconfig_error = |error: kube::config::KubeconfigError| {
                let file =
                    path.as_ref().map_or("KUBECONFIG or ~/.kube/config".into(), |path| path.display().to_string());
                Error::Config(format!("kubeconfig {file}: {}", error_chain(&error)))
            };
            let mut config = match path {
                Some(path) => {
                    let kubeconfig = Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
                    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await
                }
                None => kube::Config::from_kubeconfig(&KubeConfigOptions::default()).await,
            }
            .map_err(kubeconfig_error)?;
            options.apply(&mut config);
            kube::Client::try_from(config).map_err(client_error)
        }
        ClusterAccess::Eks { cluster_name, endpoint, ca_pem } => {
            let tokens = TokenSource::from_sdk_config(sdk_config, cluster_name)?;
            tokens.token().await?;
            match (endpoint, ca_pem) {
                (Some(endpoint), Some(ca_pem)) => bearer_client(endpoint, ca_pem, tokens, options),
                _ => {
                    let (described_endpoint, described_ca) = describe_cluster(sdk_config, cluster_name).await?;
                    let endpoint = endpoint.as_deref().unwrap_or(&described_endpoint);
                    bearer_client(endpoint, ca_pem.as_deref().unwrap_or(&described_ca), tokens, options)
                }
            }
        }
    }
}

/// Builds a client for the API server at `endpoint` (HTTPS), trusting the CA certificates
/// in `ca_pem`, that sends `Authorization: Bearer <token>` with a token fetched from
/// `tokens` for every request. The rest of the stack is kube's own (base URI, TLS,
/// timeouts, tracing), with the options of [`ClientOptions`] and retries off.
pub fn bearer_client(
    endpoint: &str,
    ca_pem: &[u8],
    tokens: impl BearerToken,
    options: &ClientOptions,
) -> Result<kube::Client> {
    let url: http::Uri = endpoint
        .parse()
        .map_err(|error| Error::Config(format!("cluster endpoint {endpoint:?} is not a URL: {error}")))?;
    // The token is a credential: never send it in clear text.
    if url.scheme() != Some(&http::uri::Scheme::HTTPS) {
        return Err(Error::Config(format!("cluster endpoint {endpoint:?} must be https")));
    }
    let mut config = kube::Config::new(url);
    config.root_cert = Some(pem_certificates(ca_pem).map_err(|error| Error::Config(format!("cluster CA: {error}")))?);
    options.apply(&mut config);
    let builder = ClientBuilder::try_from(config).map_err(client_error)?;
    Ok(builder.with_layer(&BearerLayer { tokens: Arc::new(tokens) }).build())
}

fn client_error(error: kube::Error) -> Error {
    Error::Config(format!("cannot build the Kubernetes client: {}", error_chain(&error)))
}

/// The cluster's endpoint and CA (PEM) from EKS `DescribeCluster`.
async fn describe_cluster(sdk_config: &SdkConfig, cluster: &str) -> Result<(String, Vec<u8>)> {
    let described =
        aws_sdk_eks::Client::new(sdk_config).describe_cluster().name(cluster).send().await.map_err(|error| {
            // Throttling, server errors and the network may pass; a missing cluster or a denied call will not.
            let retryable = match &error {
                SdkError::ServiceError(_) => {
                    error.raw_response().is_some_and(|raw| matches!(raw.status().as_u16(), 429 | 500..=599))
                }
                SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
                _ => false,
            };
            let message = format!("DescribeCluster {cluster:?} failed: {}", DisplayErrorContext(&error));
            Error::Auth { message, retryable, source: Some(error.into()) }
        })?;
    let not_ready = |what: &str| Error::Auth {
        message: format!("DescribeCluster {cluster:?} returned no {what} (is the cluster still being created?)"),
        retryable: true,
        source: None,
    };
    let described = described.cluster().ok_or_else(|| not_ready("cluster"))?;
    let endpoint = described.endpoint().ok_or_else(|| not_ready("endpoint"))?;
    let ca = described.certificate_authority().and_then(|ca| ca.data()).ok_or_else(|| not_ready("CA"))?;
    let ca_pem = STANDARD.decode(ca.trim()).map_err(|error| Error::Auth {
        message: format!("DescribeCluster {cluster:?} returned a CA that is not base64"),
        retryable: false,
        source: Some(error.into()),
    })?;
    Ok((endpoint.to_owned(), ca_pem))
}

/// The DER bodies of the `CERTIFICATE` blocks of a PEM text, as kube's `root_cert` wants.
pub(crate) fn pem_certificates(pem: &[u8]) -> std::result::Result<Vec<Vec<u8>>, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut rest = std::str::from_utf8(pem).map_err(|_| "not PEM text".to_owned())?;
    let mut certificates = Vec::new();
    while let Some(start) = rest.find(BEGIN) {
        rest = &rest[start + BEGIN.len()..];
        let end = rest.find(END).ok_or("a certificate has no END line")?;
        let body: String = rest[..end].chars().filter(|c| !c.is_ascii_whitespace()).collect();
        certificates.push(STANDARD.decode(body).map_err(|error| format!("a certificate is not base64: {error}"))?);
        rest = &rest[end + END.len()..];
    }
    if certificates.is_empty() {
        return Err("no PEM CERTIFICATE block".into());
    }
    Ok(certificates)
}

/// Adds a bearer token, fetched per request, in front of kube's stack.
struct BearerLayer<T> {
    tokens: Arc<T>,
}

impl<S, T> Layer<S> for BearerLayer<T> {
    type Service = BearerService<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerService { inner: Arc::new(Mutex::new(inner)), tokens: Arc::clone(&self.tokens) }
    }
}

/// The token is awaited before the request reaches the inner service, so the inner service
/// must be usable from the response future. kube's stack is boxed and not `Clone`, hence
/// the mutex: it is held only for readiness and `call` (kube's stack is always ready), not
/// while the response is awaited, so requests still run concurrently.
struct BearerService<S, T> {
    inner: Arc<Mutex<S>>,
    tokens: Arc<T>,
}

impl<S, T> Service<http::Request<Body>> for BearerService<S, T>
where
    S: Service<http::Request<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    T: BearerToken,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness of the inner service is awaited in `call`, under the lock.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let (inner, tokens) = (Arc::clone(&self.inner), Arc::clone(&self.tokens));
        Box::pin(async move {
            let token = tokens.token().await?;
            let mut value = HeaderValue::try_from(format!("Bearer {token}"))?;
            value.set_sensitive(true);
            request.headers_mut().insert(AUTHORIZATION, value);
            let response = {
                let mut inner = inner.lock().await;
                inner.ready().await.map_err(Into::into)?;
                inner.call(request)
            };
            response.await.map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn pem_certificates_reads_every_block_and_rejects_the_rest() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAAEC\nAw==\n-----END CERTIFICATE-----\n\
                   -----BEGIN CERTIFICATE-----\nBAU=\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_certificates(pem.as_bytes()).unwrap(), vec![vec![0, 1, 2, 3], vec![4, 5]]);
        assert!(pem_certificates(b"no pem here").is_err());
        assert!(pem_certificates(b"-----BEGIN CERTIFICATE-----\nAAEC").is_err());
        assert!(pem_certificates(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----").is_err());
    }

    #[test]
    fn push_param_encodes_like_sigv4() {
        let mut url = String::new();
        push_param(&mut url, "X-Amz-Security-Token", "a/b+c=d-e_f.g~h");
        assert_eq!(url, "&X-Amz-Security-Token=a%2Fb%2Bc%3Dd-e_f.g~h");
    }

    #[tokio::test]
    async fn bearer_layer_fetches_a_token_for_every_request() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let tokens = move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Ok(format!("token-{n}")) }
        };
        let echo = tower::service_fn(|request: http::Request<Body>| async move {
            Ok::<_, BoxError>(request.headers().get(AUTHORIZATION).cloned())
        });
        let mut service = BearerLayer { tokens: Arc::new(tokens) }.layer(echo);
        for n in 1..=2 {
            let header = service.ready().await.unwrap().call(http::Request::new(Body::empty())).await.unwrap().unwrap();
            assert_eq!(header, format!("Bearer token-{n}"));
            assert!(header.is_sensitive());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn bearer_layer_fails_the_request_when_no_token() {
        let tokens = || async { Err(Error::Config("no token".into())) };
        let echo = tower::service_fn(|_: http::Request<Body>| async { Ok::<_, BoxError>(()) });
        let mut service = BearerLayer { tokens: Arc::new(tokens) }.layer(echo);
        let error = service.call(http::Request::new(Body::empty())).await.unwrap_err();
        assert!(error.to_string().contains("no token"), "{error}");
    }
}
