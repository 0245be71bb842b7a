//! The EKS-style client (endpoint + CA + a bearer token fetched per request) against
//! the stack's kube-sim over HTTPS: the token source is asked for every request, so a
//! long-lived Lambda container never sends an expired token.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use podbridge::eks::{ClientOptions, bearer_client};
use podbridge_tests::Stack;

/// The server, CA (PEM) and token of the stack's kubeconfig.
fn kubeconfig_parts(stack: &Stack) -> (String, Vec<u8>, String) {
    let kubeconfig = kube::config::Kubeconfig::read_from(&stack.kubeconfig).expect("kubeconfig");
    let cluster = kubeconfig.clusters[0].cluster.clone().expect("cluster");
    let ca = base64::engine::general_purpose::STANDARD
        .decode(cluster.certificate_authority_data.expect("CA data"))
        .expect("base64 CA");
    // The token is kept secret by kube's types; kube-sim writes it on its own line.
    let text = std::fs::read_to_string(&stack.kubeconfig).expect("kubeconfig");
    let token = text.lines().find_map(|l| l.trim().strip_prefix("token: ")).expect("a token in the kubeconfig");
    (cluster.server.expect("server"), ca, token.to_owned())
}

#[tokio::test]
async fn given_an_eks_style_client_when_it_calls_the_api_then_every_request_carries_a_fresh_token() {
    let stack = Stack::from_env().await;
    let (server, ca, token) = kubeconfig_parts(&stack);
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let tokens = move || {
        counter.fetch_add(1, Ordering::SeqCst);
        let token = token.clone();
        async move { Ok(token) }
    };
    let client = bearer_client(&server, &ca, tokens, &ClientOptions::default()).expect("client");
    let pods: Api<Pod> = Api::namespaced(client, "default");

    for _ in 0..3 {
        pods.list(&ListParams::default()).await.expect("the API accepts the token");
    }

    assert_eq!(calls.load(Ordering::SeqCst), 3, "one token fetch per request");
}

#[tokio::test]
async fn given_a_wrong_token_when_the_client_calls_then_the_api_answers_401() {
    let stack = Stack::from_env().await;
    let (server, ca, _) = kubeconfig_parts(&stack);
    let tokens = || async { Ok("k8s-aws-v1.not-a-valid-token".to_owned()) };
    let client = bearer_client(&server, &ca, tokens, &ClientOptions::default()).expect("client");
    let pods: Api<Pod> = Api::namespaced(client, "default");

    match pods.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!((status.code, status.reason.as_str()), (401, "Unauthorized")),
        other => panic!("expected 401 Unauthorized, got {other:?}"),
    }
}
