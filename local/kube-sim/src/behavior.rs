//! What a simulated container does, chosen by the pod itself.
//!
//! A pod says how it behaves with the annotation `kube-sim/behavior` or, when a
//! client cannot set annotations, with the environment variable `KUBE_SIM_BEHAVIOR`
//! of its first container (the annotation wins). Both hold the same comma-separated
//! list of terms:
//!
//! | term | effect |
//! |---|---|
//! | `run=DURATION` | the container runs this long (`500ms`, `2s`, `forever`); default `--default-run` |
//! | `exit=N` | exit code when the run ends (default 0); non-zero makes the pod `Failed` |
//! | `oom` | the container is OOMKilled (exit 137) when the run ends |
//! | `pull=fail` | the image cannot be pulled: `ErrImagePull`, then `ImagePullBackOff`, forever |
//! | `pull=DURATION` | the image pull takes this long (default `--pull-delay`) |
//! | `config-error` | the container cannot be created: `CreateContainerConfigError` |
//! | `evict=DURATION` | the kubelet evicts the pod this long after it started running |
//! | `ignore-term` | the container ignores SIGTERM: a delete waits the full grace period |
//! | `lines=N` | the container writes N numbered log lines when it starts |
//! | `refuse=REASON` | once bound, the kubelet's admission rejects the pod: `Failed`, reason REASON, `Pod was rejected: ...` |
//! | `start-error` | the runtime cannot start the container: containerd's `StartError`, exit 128 |
//! | `start-error=docker` | the same through dockershim: `ContainerCannotRun`, exit 127 |
//! | `init-fail=N` | an injected init container `istio-init` exits N (non-zero): `Init:Error`, the pod `Failed` |
//! | `sidecar` | an injected `istio-proxy` container runs until the pod is deleted |
//! | `sidecar=oom` | the injected `istio-proxy` is OOMKilled right after the first container ends |
//! | `mount-fail` | a secret volume cannot be mounted: `ContainerCreating` and `FailedMount` events, forever |
//! | `delete=DURATION` | someone outside deletes the pod (gracefully) this long after it started running |
//! | `evict-storage=DURATION` | the kubelet evicts the pod this long after it started: its container exceeded its ephemeral-storage limit |
//!
//! "The container" is the pod's own first container; containers kube-sim injects as a
//! mutating webhook would (Istio's, for `init-fail` and `sidecar`) are appended after
//! the pod's own, so they never take that place. Other containers of the pod do what
//! the first one does. kube-sim never restarts a container: every pod ends as a
//! `restartPolicy: Never` pod would.
//!
//! An image reference that does not parse gives `InvalidImageName`, as with a real
//! kubelet. A behaviour that does not parse fails the container with
//! `CreateContainerConfigError` naming the bad term, so a typo never passes silently.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use crate::units::parse_duration;

pub const ANNOTATION: &str = "kube-sim/behavior";
pub const ENV: &str = "KUBE_SIM_BEHAVIOR";

/// How an image pull goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pull {
    Succeeds(Duration),
    Fails,
}

/// Which container runtime's wording a start failure uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Containerd,
    Docker,
}

/// What the injected `istio-proxy` sidecar does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sidecar {
    /// It runs until the pod is deleted.
    Runs,
    /// It is OOMKilled right after the pod's own first container ends.
    OomKilled,
}

/// The parsed behaviour of a pod's containers.
#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    /// `None`: the container runs until it is killed.
    pub run: Option<Duration>,
    pub exit_code: i32,
    pub oom: bool,
    pub pull: Pull,
    pub config_error: bool,
    pub evict_after: Option<Duration>,
    pub ignore_term: bool,
    pub lines: u32,
    /// The kubelet's admission rejects the pod with this reason.
    pub refuse: Option<String>,
    /// The runtime cannot start the container.
    pub start_error: Option<Runtime>,
    /// An injected init container exits with this (non-zero) code.
    pub init_fail: Option<i32>,
    /// An injected sidecar runs beside the pod's containers.
    pub sidecar: Option<Sidecar>,
    /// A volume cannot be mounted: the pod never leaves `ContainerCreating`.
    pub mount_fail: bool,
    /// Someone outside kube-sim deletes the pod this long after it started running.
    pub delete_after: Option<Duration>,
    /// The kubelet evicts the pod for its ephemeral storage this long after it started.
    pub evict_storage_after: Option<Duration>,
}

/// Every term, for the error that names an unknown one.
const TERMS: &str = "run, exit, oom, pull, config-error, evict, ignore-term, lines, refuse, start-error, init-fail, sidecar, mount-fail, delete, evict-storage";

/// Defaults for terms a pod leaves out.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub run: Option<Duration>,
    pub pull: Duration,
}

impl Behavior {
    /// Reads the behaviour of `pod`, or says which term is wrong.
    pub fn of(pod: &Pod, defaults: Defaults) -> Result<Self, String> {
        let from_annotation = pod.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION)).cloned();
        let from_env = || {
            let container = pod.spec.as_ref()?.containers.first()?;
            let env = container.env.as_ref()?.iter().find(|e| e.name == ENV)?;
            env.value.clone()
        };
        let text = from_annotation.or_else(from_env).unwrap_or_default();
        Self::parse(&text, defaults)
    }

    pub fn parse(text: &str, defaults: Defaults) -> Result<Self, String> {
        let mut behavior = Behavior {
            run: defaults.run,
            exit_code: 0,
            oom: false,
            pull: Pull::Succeeds(defaults.pull),
            config_error: false,
            evict_after: None,
            ignore_term: false,
            lines: 0,
            refuse: None,
            start_error: None,
            init_fail: None,
            sidecar: None,
            mount_fail: false,
            delete_after: None,
            evict_storage_after: None,
        };
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (key, value) = term.split_once('=').map_or((term, None), |(k, v)| (k.trim(), Some(v.trim())));
            let bad = |why: &str| format!("invalid {ANNOTATION} term {term:?}: {why}");
            let duration = |v: Option<&str>| parse_duration(v.unwrap_or_default()).map_err(|e| bad(&e));
            match (key, value) {
                ("run", Some("forever")) => behavior.run = None,
                ("run", v) => behavior.run = Some(duration(v)?),
                ("exit", Some(v)) => {
                    behavior.exit_code = v.parse().map_err(|_| bad("expected an integer exit code"))?
                }
                ("oom", None) => behavior.oom = true,
                ("pull", Some("fail")) => behavior.pull = Pull::Fails,
                ("pull", v) => behavior.pull = Pull::Succeeds(duration(v)?),
                ("config-error", None) => behavior.config_error = true,
                ("evict", v) => behavior.evict_after = Some(duration(v)?),
                ("ignore-term", None) => behavior.ignore_term = true,
                ("lines", Some(v)) => behavior.lines = v.parse().map_err(|_| bad("expected a count"))?,
                ("refuse", Some(v)) if !v.is_empty() && !v.contains(char::is_whitespace) => {
                    behavior.refuse = Some(v.to_owned())
                }
                ("refuse", _) => return Err(bad("expected a reason without spaces, e.g. refuse=OutOfcpu")),
                ("start-error", None | Some("containerd")) => behavior.start_error = Some(Runtime::Containerd),
                ("start-error", Some("docker")) => behavior.start_error = Some(Runtime::Docker),
                ("start-error", _) => return Err(bad("the runtime is containerd (the default) or docker")),
                ("init-fail", Some(v)) => match v.parse() {
                    Ok(0) | Err(_) => return Err(bad("expected a non-zero exit code")),
                    Ok(code) => behavior.init_fail = Some(code),
                },
                ("sidecar", None) => behavior.sidecar = Some(Sidecar::Runs),
                ("sidecar", Some("oom")) => behavior.sidecar = Some(Sidecar::OomKilled),
                ("sidecar", _) => return Err(bad("expected sidecar or sidecar=oom")),
                ("mount-fail", None) => behavior.mount_fail = true,
                ("delete", v) => behavior.delete_after = Some(duration(v)?),
                ("evict-storage", v) => behavior.evict_storage_after = Some(duration(v)?),
                _ => return Err(bad(&format!("known terms are {TERMS}"))),
            }
        }
        Ok(behavior)
    }
}

/// Whether `image` parses as a container image reference (what the kubelet checks
/// before it reports `InvalidImageName`).
pub fn is_valid_image_reference(image: &str) -> bool {
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    if let Some(digest) = digest {
        let Some((algorithm, hex)) = digest.split_once(':') else {
            return false;
        };
        if algorithm.is_empty() || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
    }
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let ok_start = tag.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok_start
            || tag.len() > 128
            || !tag.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return false;
        }
    }
    let mut components: Vec<&str> = name.split('/').collect();
    if components.len() > 1 {
        let first = components[0];
        if first.contains(['.', ':']) || first == "localhost" {
            components.remove(0);
        }
    }
    !components.is_empty() && components.iter().all(|c| is_path_component(c))
}

fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Defaults = Defaults { run: Some(Duration::from_secs(1)), pull: Duration::from_millis(50) };

    #[test]
    fn terms() {
        let b = Behavior::parse("run=2s, exit=3, lines=5", DEFAULTS).unwrap();
        assert_eq!((b.run, b.exit_code, b.lines), (Some(Duration::from_secs(2)), 3, 5));
        let b = Behavior::parse("run=forever,pull=fail,ignore-term", DEFAULTS).unwrap();
        assert_eq!((b.run, b.pull, b.ignore_term), (None, Pull::Fails, true));
        let b = Behavior::parse("", DEFAULTS).unwrap();
        assert_eq!((b.run, b.exit_code, b.oom), (Some(Duration::from_secs(1)), 0, false));
        assert!(Behavior::parse("oom,evict=3s,config-error", DEFAULTS).unwrap().oom);
    }

    #[test]
    fn failure_terms() {
        let check =
            |text: &str, expected: Behavior| assert_eq!(Behavior::parse(text, DEFAULTS).unwrap(), expected, "{text}");
        let base = Behavior::parse("", DEFAULTS).unwrap();
        check("refuse=OutOfcpu", Behavior { refuse: Some("OutOfcpu".into()), ..base.clone() });
        check("start-error", Behavior { start_error: Some(Runtime::Containerd), ..base.clone() });
        check("start-error=containerd", Behavior { start_error: Some(Runtime::Containerd), ..base.clone() });
        check("start-error=docker", Behavior { start_error: Some(Runtime::Docker), ..base.clone() });
        check("init-fail=3", Behavior { init_fail: Some(3), ..base.clone() });
        check("sidecar", Behavior { sidecar: Some(Sidecar::Runs), ..base.clone() });
        check("sidecar=oom", Behavior { sidecar: Some(Sidecar::OomKilled), ..base.clone() });
        check("mount-fail", Behavior { mount_fail: true, ..base.clone() });
        check("delete=2s", Behavior { delete_after: Some(Duration::from_secs(2)), ..base.clone() });
        check(
            "evict-storage=250ms",
            Behavior { evict_storage_after: Some(Duration::from_millis(250)), ..base.clone() },
        );
        check(
            "run=forever, sidecar=oom, delete=1s",
            Behavior {
                run: None,
                sidecar: Some(Sidecar::OomKilled),
                delete_after: Some(Duration::from_secs(1)),
                ..base
            },
        );
        for bad in [
            "refuse",
            "refuse=",
            "refuse=Out Of",
            "start-error=podman",
            "init-fail",
            "init-fail=0",
            "init-fail=x",
            "sidecar=yes",
            "mount-fail=1",
            "delete=soon",
            "evict-storage",
        ] {
            let error = Behavior::parse(bad, DEFAULTS).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{error}");
        }
    }

    #[test]
    fn unknown_terms_list_every_known_one() {
        let error = Behavior::parse("explode", DEFAULTS).unwrap_err();
        for term in ["refuse", "start-error", "init-fail", "sidecar", "mount-fail", "delete", "evict-storage", "lines"]
        {
            assert!(error.contains(term), "{error}");
        }
    }

    #[test]
    fn bad_terms_name_themselves() {
        let error = Behavior::parse("run=2s,exits=3", DEFAULTS).unwrap_err();
        assert!(error.contains("\"exits=3\""), "{error}");
        assert!(Behavior::parse("run=soon", DEFAULTS).is_err());
        assert!(Behavior::parse("exit=x", DEFAULTS).is_err());
    }

    #[test]
    fn image_references() {
        for good in [
            "busybox",
            "busybox:1.36",
            "ghcr.io/org/app:v1.2.3",
            "localhost:5000/app",
            "registry.example.com:443/a/b_c:tag",
            "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(is_valid_image_reference(good), "{good}");
        }
        for bad in ["Busybox", "busybox:", "app:bad tag", "a//b", "", "app@sha256:xyz", "UPPER/case:1"] {
            assert!(!is_valid_image_reference(bad), "{bad}");
        }
    }
}
