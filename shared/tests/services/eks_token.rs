//! EKS authentication: the token against botocore's, the token cache, the environment,
//! and the kubeconfig client against a local HTTP server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use podbridge::Error;
use podbridge::eks::{self, ClientOptions, ClusterAccess, TOKEN_PREFIX, TokenSource};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const ACCESS_KEY: &str = "AKIDEXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SESSION_TOKEN: &str = "FQoGZXIvYXdzEXAMPLE//session+token/with=chars";
const REGION: &str = "us-east-1";
const CLUSTER: &str = "podbridge-test";

/// 2024-01-02T03:04:05Z, the time frozen in the reference script below.
fn reference_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_164_645)
}

// The reference tokens were produced by botocore 1.44.5 (Python 3, `pip install botocore` in a
// throwaway venv), presigning the way `aws eks get-token` (awscli/customizations/eks/get_token.py)
// does, with the signing time frozen:
//
//     import base64, datetime
//     import botocore.auth, botocore.session
//     FROZEN = datetime.datetime(2024, 1, 2, 3, 4, 5)  # naive UTC, as botocore expects
//     botocore.auth.get_current_datetime = lambda remove_tzinfo=True: FROZEN
//
//     def token(cluster, session_token=None):
//         session = botocore.session.get_session()
//         session.set_credentials('AKIDEXAMPLE', 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', session_token)
//         sts = session.create_client('sts', region_name='us-east-1')
//         def retrieve(params, context, **kw):
//             if 'x-k8s-aws-id' in params:
//                 context['x-k8s-aws-id'] = params.pop('x-k8s-aws-id')
//         def inject(request, **kw):
//             if 'x-k8s-aws-id' in request.context:
//                 request.headers['x-k8s-aws-id'] = request.context['x-k8s-aws-id']
//         sts.meta.events.register('provide-client-params.sts.GetCallerIdentity', retrieve)
//         sts.meta.events.register('before-sign.sts.GetCallerIdentity', inject)
//         url = sts.generate_presigned_url('get_caller_identity', Params={'x-k8s-aws-id': cluster},
//                                          ExpiresIn=60, HttpMethod='GET')
//         return 'k8s-aws-v1.' + base64.urlsafe_b64encode(url.encode()).decode().rstrip('=')
//
//     print(token('podbridge-test'))
//     print(token('podbridge-test', 'FQoGZXIvYXdzEXAMPLE//session+token/with=chars'))
//
// botocore orders the query as Action, Version, X-Amz-Algorithm, -Credential, -Date, -Expires,
// -SignedHeaders, [-Security-Token,] -Signature; podbridge emits the same order, so the tokens
// are compared byte for byte.

/// botocore's token without a session token. Decoded:
/// `https://sts.us-east-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20240102%2Fus-east-1%2Fsts%2Faws4_request&X-Amz-Date=20240102T030405Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id&X-Amz-Signature=c1abcb5b310e9adbe719b6771ee181c6d85ea1295cdf0761c502f284fa8a6eb7`
const REFERENCE_TOKEN: &str = "k8s-aws-v1.aHR0cHM6Ly9zdHMudXMtZWFzdC0xLmFtYXpvbmF3cy5jb20vP0FjdGlvbj1HZXRDYWxsZXJJZGVudGl0eSZWZXJzaW9uPTIwMTEtMDYtMTUmWC1BbXotQWxnb3JpdGhtPUFXUzQtSE1BQy1TSEEyNTYmWC1BbXotQ3JlZGVudGlhbD1BS0lERVhBTVBMRSUyRjIwMjQwMTAyJTJGdXMtZWFzdC0xJTJGc3RzJTJGYXdzNF9yZXF1ZXN0JlgtQW16LURhdGU9MjAyNDAxMDJUMDMwNDA1WiZYLUFtei1FeHBpcmVzPTYwJlgtQW16LVNpZ25lZEhlYWRlcnM9aG9zdCUzQngtazhzLWF3cy1pZCZYLUFtei1TaWduYXR1cmU9YzFhYmNiNWIzMTBlOWFkYmU3MTliNjc3MWVlMTgxYzZkODVlYTEyOTVjZGYwNzYxYzUwMmYyODRmYThhNmViNw";

/// botocore's token with the session token `SESSION_TOKEN`. Decoded:
/// `https://sts.us-east-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20240102%2Fus-east-1%2Fsts%2Faws4_request&X-Amz-Date=20240102T030405Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id&X-Amz-Security-Token=FQoGZXIvYXdzEXAMPLE%2F%2Fsession%2Btoken%2Fwith%3Dchars&X-Amz-Signature=8160c3c2292aa693a25b5f22b62965d3955675f7b64f1e181f4015c356992e52`
const REFERENCE_SESSION_TOKEN: &str = "k8s-aws-v1.aHR0cHM6Ly9zdHMudXMtZWFzdC0xLmFtYXpvbmF3cy5jb20vP0FjdGlvbj1HZXRDYWxsZXJJZGVudGl0eSZWZXJzaW9uPTIwMTEtMDYtMTUmWC1BbXotQWxnb3JpdGhtPUFXUzQtSE1BQy1TSEEyNTYmWC1BbXotQ3JlZGVudGlhbD1BS0lERVhBTVBMRSUyRjIwMjQwMTAyJTJGdXMtZWFzdC0xJTJGc3RzJTJGYXdzNF9yZXF1ZXN0JlgtQW16LURhdGU9MjAyNDAxMDJUMDMwNDA1WiZYLUFtei1FeHBpcmVzPTYwJlgtQW16LVNpZ25lZEhlYWRlcnM9aG9zdCUzQngtazhzLWF3cy1pZCZYLUFtei1TZWN1cml0eS1Ub2tlbj1GUW9HWlhJdllYZHpFWEFNUExFJTJGJTJGc2Vzc2lvbiUyQnRva2VuJTJGd2l0aCUzRGNoYXJzJlgtQW16LVNpZ25hdHVyZT04MTYwYzNjMjI5MmFhNjkzYTI1YjVmMjJiNjI5NjVkMzk1NTY3NWY3YjY0ZjFlMTgxZjQwMTVjMzU2OTkyZTUy";

fn credentials(session_token: Option<&str>) -> Credentials {
    Credentials::new(ACCESS_KEY, SECRET_KEY, session_token.map(str::to_owned), None, "test")
}

fn decoded(token: &str) -> String {
    let encoded = token.strip_prefix(TOKEN_PREFIX).expect("token prefix");
    String::from_utf8(URL_SAFE_NO_PAD.decode(encoded).expect("base64url without padding")).expect("utf-8")
}

#[test]
fn token_matches_botocore_without_session_token() {
    let token = eks::token(&credentials(None), REGION, CLUSTER, reference_time()).unwrap();
    assert_eq!(decoded(&token), decoded(REFERENCE_TOKEN), "decoded URLs differ");
    assert_eq!(token, REFERENCE_TOKEN);
}

#[test]
fn token_matches_botocore_with_session_token() {
    let token = eks::token(&credentials(Some(SESSION_TOKEN)), REGION, CLUSTER, reference_time()).unwrap();
    assert_eq!(decoded(&token), decoded(REFERENCE_SESSION_TOKEN), "decoded URLs differ");
    assert_eq!(token, REFERENCE_SESSION_TOKEN);
}

#[test]
fn token_is_bound_to_cluster_region_and_time() {
    let base = eks::token(&credentials(None), REGION, CLUSTER, reference_time()).unwrap();
    let other_cluster = eks::token(&credentials(None), REGION, "other", reference_time()).unwrap();
    let later = eks::token(&credentials(None), REGION, CLUSTER, reference_time() + Duration::from_secs(1)).unwrap();
    let other_region = eks::token(&credentials(None), "eu-west-1", CLUSTER, reference_time()).unwrap();
    assert_ne!(base, other_cluster);
    assert_ne!(base, later);
    assert!(decoded(&other_region).starts_with("https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&"));
}

// ---------------------------------------------------------------------------------------
// TokenSource: caching and refresh with an injected clock.

/// Hands out `AKID0`, `AKID1`, ... so each resolution is visible in the token.
#[derive(Debug)]
struct RotatingCredentials {
    calls: Arc<AtomicUsize>,
    expiry: Option<SystemTime>,
}

impl ProvideCredentials for RotatingCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        future::ProvideCredentials::ready(Ok(Credentials::new(
            format!("AKID{n}"),
            SECRET_KEY,
            None,
            self.expiry,
            "test",
        )))
    }
}

fn rotating(expiry: Option<SystemTime>) -> (SharedCredentialsProvider, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    (SharedCredentialsProvider::new(RotatingCredentials { calls: Arc::clone(&calls), expiry }), calls)
}

fn manual_clock() -> (Arc<Mutex<SystemTime>>, impl Fn() -> SystemTime + Send + Sync + 'static) {
    let now = Arc::new(Mutex::new(reference_time()));
    let clock = Arc::clone(&now);
    (now, move || *clock.lock().unwrap())
}

fn advance(now: &Mutex<SystemTime>, by: Duration) {
    *now.lock().unwrap() += by;
}

fn signed_with(n: usize, at: SystemTime) -> String {
    eks::token(&Credentials::new(format!("AKID{n}"), SECRET_KEY, None, None, "test"), REGION, CLUSTER, at).unwrap()
}

#[tokio::test]
async fn token_source_caches_until_ten_minutes_then_resigns_with_fresh_credentials() {
    let (provider, calls) = rotating(None);
    let (now, clock) = manual_clock();
    let source = TokenSource::new(provider, REGION, CLUSTER).with_clock(clock);

    let first = source.token().await.unwrap();
    assert_eq!(first, signed_with(0, reference_time()));

    // Within the 10 minutes (TOKEN_LIFETIME - TOKEN_REFRESH_MARGIN) the same token comes back.
    advance(&now, Duration::from_secs(9 * 60 + 59));
    assert_eq!(source.token().await.unwrap(), first);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "credentials resolved again while the token was fresh");

    // At 10 minutes it is re-signed, at the new time, with newly resolved credentials.
    advance(&now, Duration::from_secs(1));
    let second = source.token().await.unwrap();
    assert_eq!(second, signed_with(1, reference_time() + Duration::from_secs(600)));
    assert_eq!(source.token().await.unwrap(), second);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn refresh_happens_well_before_eks_rejects_the_token() {
    assert_eq!(eks::TOKEN_LIFETIME - eks::TOKEN_REFRESH_MARGIN, Duration::from_secs(600));
}

#[tokio::test]
async fn token_source_refreshes_early_when_the_credentials_expire_first() {
    let expiry = reference_time() + Duration::from_secs(120);
    let (provider, calls) = rotating(Some(expiry));
    let (now, clock) = manual_clock();
    let source = TokenSource::new(provider, REGION, CLUSTER).with_clock(clock);

    let first = source.token().await.unwrap();
    advance(&now, Duration::from_secs(119));
    assert_eq!(source.token().await.unwrap(), first);
    advance(&now, Duration::from_secs(1));
    assert_ne!(source.token().await.unwrap(), first, "a token signed with expired credentials was reused");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_signing() {
    let (provider, calls) = rotating(None);
    let source = Arc::new(TokenSource::new(provider, REGION, CLUSTER));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let source = Arc::clone(&source);
            tokio::spawn(async move { source.token().await.unwrap() })
        })
        .collect();
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(task.await.unwrap());
    }
    tokens.dedup();
    assert_eq!(tokens.len(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn token_source_without_credentials_is_an_auth_error() {
    #[derive(Debug)]
    struct NoCredentials;
    impl ProvideCredentials for NoCredentials {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            future::ProvideCredentials::ready(Err(CredentialsError::not_loaded("no credentials here")))
        }
    }
    let provider = SharedCredentialsProvider::new(NoCredentials);
    let error = TokenSource::new(provider, REGION, CLUSTER).token().await.unwrap_err();
    assert!(matches!(error, Error::Auth { retryable: false, .. }), "{error:?}");
}

// ---------------------------------------------------------------------------------------
// ClusterAccess from the environment.

const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nAAECAw==\n-----END CERTIFICATE-----\n";

/// The cluster access the settings read from `vars` (with the settings every function
/// needs besides), or the error that names what is wrong.
fn from_vars(vars: &[(&str, &str)]) -> podbridge::Result<ClusterAccess> {
    let required = [
        ("PODBRIDGE_TABLE", "jobs"),
        ("PODBRIDGE_QUEUE_TABLE", "queues"),
        ("PODBRIDGE_NAMESPACES", "batch"),
        ("PODBRIDGE_IMAGE_PREFIXES", "*"),
    ];
    let settings = podbridge::settings::Settings::from_lookup(|name| {
        vars.iter().chain(&required).find(|(key, _)| *key == name).map(|(_, value)| value.to_string())
    })?;
    settings.cluster_access().cloned()
}

#[test]
fn cluster_access_from_env() {
    let ca = STANDARD.encode(CA_PEM);
    let eks = |endpoint: Option<&str>, ca_pem: Option<&str>| ClusterAccess::Eks {
        cluster_name: CLUSTER.into(),
        endpoint: endpoint.map(str::to_owned),
        ca_pem: ca_pem.map(|pem| pem.as_bytes().to_vec()),
    };
    let cases: Vec<(Vec<(&str, &str)>, ClusterAccess)> = vec![
        (vec![("PODBRIDGE_CLUSTER_NAME", CLUSTER)], eks(None, None)),
        (
            vec![
                ("PODBRIDGE_CLUSTER_NAME", CLUSTER),
                ("PODBRIDGE_CLUSTER_ENDPOINT", "https://example.eks.amazonaws.com"),
                ("PODBRIDGE_CLUSTER_CA", &ca),
                ("KUBECONFIG", "/ignored"),
            ],
            eks(Some("https://example.eks.amazonaws.com"), Some(CA_PEM)),
        ),
        // Empty values, as templates pass for "not configured", count as unset.
        (
            vec![
                ("PODBRIDGE_CLUSTER_NAME", CLUSTER),
                ("PODBRIDGE_CLUSTER_ENDPOINT", ""),
                ("PODBRIDGE_CLUSTER_CA", " "),
            ],
            eks(None, None),
        ),
        (
            vec![("PODBRIDGE_CLUSTER_NAME", ""), ("KUBECONFIG", "/k/config")],
            ClusterAccess::Kubeconfig { path: Some("/k/config".into()) },
        ),
        // A list of kubeconfigs is left to kube, which merges them from KUBECONFIG.
        (vec![("KUBECONFIG", "/a/config:/b/config")], ClusterAccess::Kubeconfig { path: None }),
    ];
    for (vars, expected) in cases {
        assert_eq!(from_vars(&vars).unwrap(), expected, "{vars:?}");
    }
}

#[test]
fn cluster_access_from_env_rejects_bad_configuration() {
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![], "PODBRIDGE_CLUSTER_NAME"),
        (vec![("PODBRIDGE_CLUSTER_ENDPOINT", "https://x")], "without PODBRIDGE_CLUSTER_NAME"),
        (vec![("PODBRIDGE_CLUSTER_NAME", CLUSTER), ("PODBRIDGE_CLUSTER_CA", "not base64!")], "not base64"),
        (vec![("PODBRIDGE_CLUSTER_NAME", CLUSTER), ("PODBRIDGE_CLUSTER_CA", "aGVsbG8=")], "no PEM CERTIFICATE"),
    ];
    for (vars, expected) in cases {
        match from_vars(&vars) {
            Err(Error::Config(message)) => assert!(message.contains(expected), "{vars:?}: {message}"),
            other => panic!("{vars:?}: expected a configuration error, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Clients.

/// `kube::Client` is not `Debug`, so `unwrap_err` cannot be used on its results.
fn client_error(result: podbridge::Result<kube::Client>) -> Error {
    match result {
        Ok(_) => panic!("expected an error, got a client"),
        Err(error) => error,
    }
}

#[test]
fn bearer_client_refuses_plain_http_and_bad_cas() {
    let tokens = || async { Ok("t".to_string()) };
    let options = ClientOptions::default();
    let http = client_error(eks::bearer_client("http://127.0.0.1:1", CA_PEM.as_bytes(), tokens, &options));
    assert!(matches!(&http, Error::Config(message) if message.contains("must be https")), "{http:?}");
    let ca = client_error(eks::bearer_client("https://127.0.0.1:1", b"not pem", tokens, &options));
    assert!(matches!(&ca, Error::Config(message) if message.contains("cluster CA")), "{ca:?}");
}

#[tokio::test]
async fn eks_access_without_region_is_a_configuration_error() {
    let access = ClusterAccess::Eks { cluster_name: CLUSTER.into(), endpoint: None, ca_pem: None };
    let sdk_config = aws_config::SdkConfig::builder().build();
    let error = client_error(eks::client(&access, &sdk_config, &ClientOptions::default()).await);
    assert!(matches!(&error, Error::Config(message) if message.contains("region")), "{error:?}");
}

#[tokio::test]
async fn missing_kubeconfig_is_a_configuration_error() {
    let access = ClusterAccess::Kubeconfig { path: Some("/nonexistent/podbridge/kubeconfig".into()) };
    let sdk_config = aws_config::SdkConfig::builder().build();
    let error = client_error(eks::client(&access, &sdk_config, &ClientOptions::default()).await);
    assert!(
        matches!(&error, Error::Config(message) if message.contains("/nonexistent/podbridge/kubeconfig")),
        "{error:?}"
    );
}

/// An HTTP server that answers every request with 503 and keeps each request's head.
async fn unavailable_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&requests);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buffer = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buffer[..n]),
                }
            }
            seen.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
            let body =
                r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"ServiceUnavailable","code":503}"#;
            let response = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    (url, requests)
}

#[tokio::test]
async fn kubeconfig_client_uses_the_kubeconfig_and_never_retries() {
    let (server, requests) = unavailable_server().await;
    let dir = std::env::temp_dir().join(format!("podbridge-eks-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: sim\n\
             clusters: [{{name: sim, cluster: {{server: '{server}'}}}}]\n\
             users: [{{name: sim, user: {{token: kubeconfig-token}}}}]\n\
             contexts: [{{name: sim, context: {{cluster: sim, user: sim, namespace: jobs}}}}]\n"
        ),
    )
    .unwrap();

    let access = ClusterAccess::Kubeconfig { path: Some(path) };
    let client =
        eks::client(&access, &aws_config::SdkConfig::builder().build(), &ClientOptions::default()).await.unwrap();
    assert_eq!(client.default_namespace(), "jobs");

    // kube's default policy would retry this 503 up to 15 times with growing back-off.
    let answer = tokio::time::timeout(Duration::from_secs(30), client.apiserver_version()).await.unwrap();
    assert!(answer.is_err(), "a 503 must be an error: {answer:?}");
    let requests = requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "the client retried: {requests:#?}");
    assert!(requests[0].to_ascii_lowercase().contains("authorization: bearer kubeconfig-token"), "{}", requests[0]);
    std::fs::remove_dir_all(&dir).unwrap();
}
