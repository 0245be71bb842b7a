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
}

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
                _ => {
                    return Err(bad("known terms are run, exit, oom, pull, config-error, evict, ignore-term, lines"));
                }
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
