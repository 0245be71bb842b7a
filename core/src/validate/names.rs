//! The syntax Kubernetes requires of names, label keys and label values (as in
//! apimachinery's `validation` package), so what the API server would refuse is refused
//! at validation, with the field named, instead of failing the pod's creation.

use crate::job::{MAX_LABEL_KEY_BYTES, MAX_LABEL_VALUE_BYTES, MAX_OBJECT_NAME_BYTES};

/// What a qualified name (a label, node selector or taint key) may be, for messages.
pub const QUALIFIED_NAME_RULE: &str = "[prefix/]name: an optional DNS subdomain prefix (lowercase letters, digits, \
     '-', '.', at most 253) and a name of at most 63 letters, digits, '-', '_', '.', starting and ending with a \
     letter or digit";

/// What a label value may be, for messages.
pub const LABEL_VALUE_RULE: &str =
    "empty, or at most 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit";

/// An RFC 1123 label: at most 63 lowercase letters, digits and `-`, starting and ending
/// with a letter or digit.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// An RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= MAX_OBJECT_NAME_BYTES && s.split('.').all(is_dns_label)
}

/// The name part of a qualified name, which is also what a non-empty label value is:
/// at most 63 letters, digits, `-`, `_`, `.`, starting and ending with a letter or digit.
pub fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LABEL_VALUE_BYTES
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// A label value: empty, or as a label name.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_label_name(s)
}

/// A label key, node selector key or taint key: `[prefix/]name`.
pub fn is_qualified_name(s: &str) -> bool {
    s.len() <= MAX_LABEL_KEY_BYTES
        && match s.split_once('/') {
            Some((prefix, name)) => !prefix.is_empty() && is_dns_subdomain(prefix) && is_label_name(name),
            None => is_label_name(s),
        }
}

/// The prefix part of a qualified name (`team.example.com` of `team.example.com/x`).
pub fn key_prefix(key: &str) -> Option<&str> {
    key.split_once('/').map(|(prefix, _)| prefix)
}

/// A Secret key (apimachinery's `IsConfigMapKey`): at most 253 letters, digits, `-`,
/// `_`, `.`, and not `.` or `..`.
pub fn is_secret_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_OBJECT_NAME_BYTES
        && s != "."
        && s != ".."
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_follow_apimachinery() {
        for good in ["team", "team.example.com/report", "a/b", "x.y_z-1", "example.com/A_b.C", "k8s.io/x"] {
            assert!(is_qualified_name(good), "{good}");
        }
        let long_name = "a".repeat(64);
        let long_prefix = format!("{}/x", "a".repeat(254));
        for bad in
            ["", "/x", "a/", "a/b/c", "-a", "a-", "Team.example.com/x", "a b", "a..b/x", &long_name, &long_prefix]
        {
            assert!(!is_qualified_name(bad), "{bad}");
        }
        assert!(is_label_value("") && is_label_value("data") && !is_label_value("a;b") && !is_label_value("-a"));
        assert!(!is_label_value(&"v".repeat(64)));
        assert!(is_secret_key("tls.crt") && !is_secret_key("..") && !is_secret_key("a/b"));
    }
}
