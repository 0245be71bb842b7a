//! Any bytes as a job message: parsing and validation must never panic, and a message
//! they accept must become a pod with a valid name, a restricted security context and
//! nothing of the host.

#![no_main]

use libfuzzer_sys::fuzz_target;
use podbridge_core::pod::{PodSettings, build_pod};
use podbridge_core::validate::{Guardrails, Parsed, parse_message};

fuzz_target!(|data: &[u8]| {
    let guardrails = Guardrails {
        image_prefixes: vec!["registry.example.com/".into()],
        service_accounts: vec!["reader".into()],
        allow_secret_refs: true,
        ..Guardrails::default()
    };
    match parse_message(data, "sqs-fuzz", &guardrails) {
        Ok(Parsed::Job(job)) => {
            for attempt in [1, u32::MAX] {
                let pod = build_pod(&job, attempt, &PodSettings::default());
                let name = pod.metadata.name.unwrap_or_default();
                assert!(!name.is_empty() && name.len() <= 63, "pod name {name:?}");
                assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'), "{name:?}");
                let spec = pod.spec.expect("a pod spec");
                let security = spec.containers[0].security_context.clone().expect("a security context");
                assert_eq!(security.allow_privilege_escalation, Some(false));
                assert!(security.privileged.is_none());
                assert!(spec.host_network.is_none() && spec.host_pid.is_none() && spec.host_ipc.is_none());
                assert!(spec.volumes.is_none_or(|volumes| volumes.iter().all(|v| v.host_path.is_none())));
            }
        }
        Ok(Parsed::Cancel(_)) => {}
        Err(rejection) => assert!(!rejection.problems.is_empty(), "a rejection with no reason"),
    }
});
