//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!key`) and field selectors
//! (`=`, `==`, `!=`) with the apiserver's grammar and error messages.

use std::collections::BTreeMap;

use crate::status::ApiError;
use crate::validation::{is_label_value, is_qualified_name};

#[derive(Debug, Clone, PartialEq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed `labelSelector`; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<LabelRequirement>);

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(
                parse_requirement(part)
                    .map_err(|why| ApiError::bad_request(format!("unable to parse requirement: {why}")))?,
            );
        }
        Ok(Self(requirements))
    }

    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let get = |key: &str| labels.and_then(|l| l.get(key));
        self.0.iter().all(|requirement| match requirement {
            LabelRequirement::Equals(k, v) => get(k) == Some(v),
            LabelRequirement::NotEquals(k, v) => get(k) != Some(v),
            LabelRequirement::In(k, vs) => get(k).is_some_and(|v| vs.contains(v)),
            LabelRequirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.contains(v)),
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::DoesNotExist(k) => get(k).is_none(),
        })
    }
}

/// Splits on commas that are not inside a `( ... )` value set.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn check_key(key: &str) -> Result<String, String> {
    if is_qualified_name(key) {
        Ok(key.to_owned())
    } else {
        Err(format!(
            "invalid label key {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

fn check_value(value: &str) -> Result<String, String> {
    if is_label_value(value) {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "invalid label value: {value:?}: at key: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("found '{rest}', expected: '('"))?;
    inner.split(',').map(|v| check_value(v.trim())).collect()
}

fn parse_requirement(part: &str) -> Result<LabelRequirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(LabelRequirement::DoesNotExist(check_key(key.trim())?));
    }
    if let Some((key, value)) = part.split_once("!=") {
        return Ok(LabelRequirement::NotEquals(check_key(key.trim())?, check_value(value.trim())?));
    }
    if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(LabelRequirement::Equals(check_key(key.trim())?, check_value(value.trim())?));
    }
    let mut words = part.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default();
    let rest = words.next().unwrap_or_default().trim_start();
    if let Some(set) = rest.strip_prefix("notin") {
        return Ok(LabelRequirement::NotIn(check_key(key)?, parse_set(set)?));
    }
    if let Some(set) = rest.strip_prefix("in") {
        return Ok(LabelRequirement::In(check_key(key)?, parse_set(set)?));
    }
    if rest.is_empty() {
        return Ok(LabelRequirement::Exists(check_key(key)?));
    }
    Err(format!("found '{rest}', expected: in, notin, =, ==, !=, gt, lt"))
}

#[derive(Debug, Clone, PartialEq)]
struct FieldRequirement {
    field: String,
    value: String,
    equal: bool,
}

/// A parsed `fieldSelector`, checked against the fields a resource supports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<FieldRequirement>);

impl FieldSelector {
    pub fn parse(text: &str, supported: &[&str]) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for part in split_unescaped(text, ',') {
            if part.is_empty() {
                continue;
            }
            let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, v, true)
            } else {
                return Err(ApiError::bad_request(format!("invalid selector: '{text}'; can't understand '{part}'")));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                return Err(ApiError::bad_request(format!("field label not supported: {field}")));
            }
            requirements.push(FieldRequirement { field: field.to_owned(), value: unescape(value), equal });
        }
        Ok(Self(requirements))
    }

    /// Whether the object's fields match; `lookup` returns a field's value as a string.
    pub fn matches(&self, lookup: impl Fn(&str) -> String) -> bool {
        self.0.iter().all(|r| (lookup(&r.field) == r.value) == r.equal)
    }
}

fn split_unescaped(text: &str, separator: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                parts.last_mut().unwrap().push(c);
                if let Some(next) = chars.next() {
                    parts.last_mut().unwrap().push(next);
                }
            }
            c if c == separator => parts.push(String::new()),
            c => parts.last_mut().unwrap().push(c),
        }
    }
    parts
}

fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn label_selectors_match_like_the_apiserver() {
        let pod = labels(&[("app", "web"), ("tier", "batch"), ("podbridge.dev/job-id", "j-1")]);
        let check = |selector: &str, expected: bool| {
            let parsed = LabelSelector::parse(selector).unwrap();
            assert_eq!(parsed.matches(Some(&pod)), expected, "{selector}");
        };
        check("", true);
        check("app=web", true);
        check("app==web", true);
        check("app!=web", false);
        check("app!=db", true);
        check("missing!=x", true);
        check("app in (web, db)", true);
        check("app notin (web,db)", false);
        check("missing notin (a)", true);
        check("tier", true);
        check("!tier", false);
        check("!missing", true);
        check("app=web,tier in (batch),podbridge.dev/job-id=j-1", true);
        check("app=web,tier=online", false);
    }

    #[test]
    fn bad_label_selectors_are_400() {
        for bad in ["app=we b!", "app in web", "app ~ x", "-bad-=x"] {
            let error = LabelSelector::parse(bad).unwrap_err();
            assert_eq!(error.code, 400, "{bad}");
            assert!(error.message.starts_with("unable to parse requirement"), "{}", error.message);
        }
    }

    #[test]
    fn field_selectors() {
        let supported = ["metadata.name", "status.phase"];
        let selector = FieldSelector::parse("metadata.name=a,status.phase!=Running", &supported).unwrap();
        assert!(selector.matches(|f| if f == "metadata.name" { "a".into() } else { "Pending".into() }));
        assert!(!selector.matches(|f| if f == "metadata.name" { "a".into() } else { "Running".into() }));
        let error = FieldSelector::parse("spec.foo=x", &supported).unwrap_err();
        assert_eq!(error.message, "field label not supported: spec.foo");
        let escaped = FieldSelector::parse(r"metadata.name=a\,b", &supported).unwrap();
        assert!(escaped.matches(|_| "a,b".into()));
    }
}
