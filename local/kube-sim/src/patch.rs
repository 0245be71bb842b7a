//! The three patch formats the apiserver accepts for built-in kinds, applied to an
//! object's JSON: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic
//! merge patch (k8s.io/apimachinery/pkg/util/strategicpatch), the last with the
//! patch strategies the Pod type declares in k8s.io/api/core/v1/types.go.

use serde_json::{Map, Value};

/// A patch's media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    StrategicMerge,
}

impl PatchType {
    /// The media types, in the order the apiserver lists them in its 415 answer.
    pub const ACCEPTED: [&'static str; 3] =
        ["application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json"];

    /// The patch type of a `Content-Type` header (parameters such as `charset` ignored).
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        match content_type.split(';').next().unwrap_or_default().trim() {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::StrategicMerge),
            _ => None,
        }
    }
}

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq)]
pub enum PatchError {
    /// The patch itself is malformed (the apiserver answers 400).
    Malformed(String),
    /// A well-formed JSON patch failed against the object: a `test` that does not
    /// hold, a path that does not exist (the apiserver answers 422).
    NotApplicable(String),
}

/// Applies `patch` (the request body) of `kind` to `target`.
pub fn apply(kind: PatchType, target: &mut Value, patch: &[u8]) -> Result<(), PatchError> {
    let patch: Value = serde_json::from_slice(patch).map_err(|e| PatchError::Malformed(e.to_string()))?;
    match kind {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(PatchError::Malformed("Invalid JSON Patch".into()));
            }
            merge(target, &patch);
            Ok(())
        }
        PatchType::StrategicMerge => {
            let Value::Object(patch) = &patch else {
                return Err(PatchError::Malformed("Invalid JSON Patch".into()));
            };
            strategic_merge_map(target, patch, "").map_err(PatchError::Malformed)
        }
        PatchType::Json => json_patch(target, &patch),
    }
}

// ---- RFC 7386 -----------------------------------------------------------------

/// JSON merge patch: objects merge key by key, `null` removes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(object) = target else { return };
    for (key, value) in patch {
        if value.is_null() {
            object.remove(key);
        } else {
            merge(object.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

// ---- strategic merge patch ----------------------------------------------------

/// The lists of a Pod that merge by a key (`patchStrategy:"merge"` and
/// `patchMergeKey` in k8s.io/api/core/v1/types.go); every other list is replaced.
fn merge_key(path: &str) -> Option<&'static str> {
    Some(match path {
        "status.conditions" => "type",
        "status.podIPs" | "status.hostIPs" => "ip",
        "status.resourceClaimStatuses" => "name",
        "metadata.ownerReferences" => "uid",
        "spec.containers" | "spec.initContainers" | "spec.ephemeralContainers" | "spec.volumes" => "name",
        "spec.imagePullSecrets" | "spec.resourceClaims" => "name",
        _ => return None,
    })
}

/// Lists of scalars merged as sets (`patchStrategy:"merge"` on a `[]string`).
fn merges_scalars(path: &str) -> bool {
    path == "metadata.finalizers"
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

fn strategic_merge_map(target: &mut Value, patch: &Map<String, Value>, path: &str) -> Result<(), String> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replacement = patch.clone();
            replacement.remove("$patch");
            *target = Value::Object(replacement);
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some(other) => return Err(format!("Unknown patch type: {other} in map: {}", Value::Object(patch.clone()))),
        None => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(object) = target else { return Ok(()) };
    let mut orders = Vec::new();
    let mut retain: Option<Vec<String>> = None;
    for (key, value) in patch {
        if let Some(list) = key.strip_prefix("$setElementOrder/") {
            orders.push((list.to_owned(), value.clone()));
            continue;
        }
        if let Some(list) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = value.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(items)) = object.get_mut(list) {
                items.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if key == "$retainKeys" {
            retain =
                Some(value.as_array().into_iter().flatten().filter_map(|k| k.as_str().map(str::to_owned)).collect());
            continue;
        }
        let path = child(path, key);
        match value {
            Value::Null => {
                object.remove(key);
            }
            Value::Object(inner) => {
                let entry = object.entry(key.clone()).or_insert(Value::Null);
                strategic_merge_map(entry, inner, &path)?;
                if entry.is_null() {
                    object.remove(key);
                }
            }
            Value::Array(items) => {
                let merged = match (merge_key(&path), object.get(key)) {
                    (Some(merge_key), Some(Value::Array(existing))) => merge_list(existing, items, merge_key, &path)?,
                    (None, Some(Value::Array(existing))) if merges_scalars(&path) => {
                        let mut merged = existing.clone();
                        merged.extend(items.iter().filter(|i| !existing.contains(i)).cloned());
                        merged
                    }
                    _ => strip_list(items, merge_key(&path), &path)?,
                };
                object.insert(key.clone(), Value::Array(merged));
            }
            scalar => {
                object.insert(key.clone(), scalar.clone());
            }
        }
    }
    for (list, order) in orders {
        let (Some(Value::Array(items)), Some(merge_key)) = (object.get_mut(&list), merge_key(&child(path, &list)))
        else {
            continue;
        };
        let position =
            |item: &Value| order.as_array().into_iter().flatten().position(|o| o.get(merge_key) == item.get(merge_key));
        items.sort_by_key(|item| position(item).unwrap_or(usize::MAX));
    }
    if let Some(keep) = retain {
        object.retain(|k, _| keep.contains(k));
    }
    Ok(())
}

/// A patch list applied where there is nothing to merge with: directives dropped.
fn strip_list(items: &[Value], merge_key: Option<&str>, path: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for item in items {
        match item {
            Value::Object(map) if merge_key.is_some() && map.contains_key("$patch") => continue,
            Value::Object(map) => {
                let mut value = Value::Null;
                strategic_merge_map(&mut value, map, path)?;
                out.push(value);
            }
            other => out.push(other.clone()),
        }
    }
    Ok(out)
}

/// Merges a list of objects by `merge_key`: items with a known key merge into the
/// existing one, `$patch: delete` removes it, `$patch: replace` replaces the list.
fn merge_list(existing: &[Value], patch: &[Value], merge_key: &str, path: &str) -> Result<Vec<Value>, String> {
    if patch.iter().any(|item| item.get("$patch").and_then(Value::as_str) == Some("replace")) {
        return strip_list(patch, Some(merge_key), path);
    }
    let mut merged = existing.to_vec();
    for item in patch {
        let Value::Object(map) = item else {
            return Err(format!("map: {item} does not contain declared merge key: {merge_key}"));
        };
        let Some(key) = map.get(merge_key) else {
            return Err(format!("map: {item} does not contain declared merge key: {merge_key}"));
        };
        let position = merged.iter().position(|m| m.get(merge_key) == Some(key));
        match (map.get("$patch").and_then(Value::as_str), position) {
            (Some("delete"), Some(i)) => {
                merged.remove(i);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => strategic_merge_map(&mut merged[i], map, path)?,
            (_, None) => {
                let mut value = Value::Null;
                strategic_merge_map(&mut value, map, path)?;
                merged.push(value);
            }
        }
    }
    Ok(merged)
}

// ---- RFC 6902 -----------------------------------------------------------------

fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Array(operations) = patch else {
        return Err(PatchError::Malformed(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch".into(),
        ));
    };
    // Operations apply to a copy: a failing one leaves the object untouched.
    let mut work = target.clone();
    for operation in operations {
        let op = operation.get("op").and_then(Value::as_str).unwrap_or_default();
        let path = || {
            operation
                .get("path")
                .and_then(Value::as_str)
                .ok_or_else(|| PatchError::Malformed(format!("missing path in operation {operation}")))
        };
        let value = || {
            operation
                .get("value")
                .cloned()
                .ok_or_else(|| PatchError::Malformed(format!("missing value in operation {operation}")))
        };
        let from = || {
            operation
                .get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| PatchError::Malformed(format!("missing from in operation {operation}")))
        };
        let failed = |why: String| PatchError::NotApplicable(why);
        match op {
            "add" => add(&mut work, path()?, value()?).map_err(failed)?,
            "remove" => {
                remove(&mut work, path()?).map_err(failed)?;
            }
            "replace" => {
                let path = path()?;
                let slot = pointer_mut(&mut work, path)
                    .ok_or_else(|| failed(format!("replace operation does not apply: doc is missing key: {path}")))?;
                *slot = value()?;
            }
            "move" => {
                let moved = remove(&mut work, from()?).map_err(failed)?;
                add(&mut work, path()?, moved).map_err(failed)?;
            }
            "copy" => {
                let from = from()?;
                let copied = work.pointer(from).cloned().ok_or_else(|| {
                    failed(format!("copy operation does not apply: doc is missing from path: {from}"))
                })?;
                add(&mut work, path()?, copied).map_err(failed)?;
            }
            "test" => {
                let path = path()?;
                if work.pointer(path) != Some(&value()?) {
                    return Err(failed(format!("testing value {path} failed: test failed")));
                }
            }
            other => return Err(PatchError::Malformed(format!("Unexpected kind: {other}"))),
        }
    }
    *target = work;
    Ok(())
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn pointer_mut<'a>(value: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    if path.is_empty() { Some(value) } else { value.pointer_mut(path) }
}

/// Splits `/a/b/c` into the parent pointer `/a/b` and the last token `c`.
fn split_last(path: &str) -> Result<(&str, String), String> {
    let index = path.rfind('/').ok_or_else(|| format!("invalid JSON pointer: {path:?}"))?;
    Ok((&path[..index], unescape(&path[index + 1..])))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split_last(path)?;
    let missing = || format!("add operation does not apply: doc is missing path: {path:?}");
    match pointer_mut(doc, parent).ok_or_else(missing)? {
        Value::Object(map) => {
            map.insert(last, value);
        }
        Value::Array(items) if last == "-" => items.push(value),
        Value::Array(items) => {
            let index: usize = last.parse().map_err(|_| missing())?;
            if index > items.len() {
                return Err(format!("add operation does not apply: index out of bounds: {index}"));
            }
            items.insert(index, value);
        }
        _ => return Err(missing()),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_last(path)?;
    let missing = || format!("remove operation does not apply: doc is missing path: {path:?}");
    match pointer_mut(doc, parent).ok_or_else(missing)? {
        Value::Object(map) => map.remove(&last).ok_or_else(missing),
        Value::Array(items) => {
            let index: usize = last.parse().map_err(|_| missing())?;
            if index >= items.len() {
                return Err(missing());
            }
            Ok(items.remove(index))
        }
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "metadata": { "name": "p", "labels": { "a": "1" } },
            "status": {
                "phase": "Running",
                "conditions": [
                    { "type": "Ready", "status": "True" },
                    { "type": "PodScheduled", "status": "True" }
                ],
                "containerStatuses": [{ "name": "main", "ready": true }, { "name": "side", "ready": true }]
            }
        })
    }

    fn patched(kind: PatchType, patch: Value) -> Result<Value, PatchError> {
        let mut doc = pod();
        apply(kind, &mut doc, &serde_json::to_vec(&patch).unwrap()).map(|()| doc)
    }

    #[test]
    fn content_types() {
        assert_eq!(PatchType::from_content_type("application/merge-patch+json"), Some(PatchType::Merge));
        assert_eq!(
            PatchType::from_content_type("application/strategic-merge-patch+json; charset=utf-8"),
            Some(PatchType::StrategicMerge)
        );
        assert_eq!(PatchType::from_content_type("application/json-patch+json"), Some(PatchType::Json));
        assert_eq!(PatchType::from_content_type("application/json"), None);
        assert_eq!(PatchType::from_content_type("application/apply-patch+yaml"), None);
    }

    #[test]
    fn merge_patch_replaces_lists_and_removes_nulls() {
        let doc = patched(
            PatchType::Merge,
            json!({ "metadata": { "labels": { "a": null, "b": "2" } },
                    "status": { "phase": "Failed", "conditions": [{ "type": "Ready", "status": "False" }] } }),
        )
        .unwrap();
        assert_eq!(doc["metadata"]["labels"], json!({ "b": "2" }));
        assert_eq!(doc["status"]["phase"], "Failed");
        assert_eq!(doc["status"]["conditions"], json!([{ "type": "Ready", "status": "False" }]));
        assert_eq!(doc["status"]["containerStatuses"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn strategic_merge_merges_conditions_by_type_and_replaces_other_lists() {
        let doc = patched(
            PatchType::StrategicMerge,
            json!({ "status": {
                "conditions": [
                    { "type": "Ready", "status": "False", "reason": "Paused" },
                    { "type": "example.com/Gate", "status": "True" }
                ],
                "containerStatuses": [{ "name": "main", "ready": false }]
            } }),
        )
        .unwrap();
        assert_eq!(
            doc["status"]["conditions"],
            json!([
                { "type": "Ready", "status": "False", "reason": "Paused" },
                { "type": "PodScheduled", "status": "True" },
                { "type": "example.com/Gate", "status": "True" }
            ])
        );
        assert_eq!(doc["status"]["containerStatuses"], json!([{ "name": "main", "ready": false }]));
    }

    #[test]
    fn strategic_merge_directives() {
        let doc = patched(
            PatchType::StrategicMerge,
            json!({ "status": {
                "$setElementOrder/conditions": [{ "type": "PodScheduled" }, { "type": "Ready" }],
                "conditions": [{ "type": "Ready", "$patch": "delete" }, { "type": "PodScheduled", "reason": "Done" }]
            } }),
        )
        .unwrap();
        assert_eq!(
            doc["status"]["conditions"],
            json!([{ "type": "PodScheduled", "status": "True", "reason": "Done" }])
        );

        let doc = patched(
            PatchType::StrategicMerge,
            json!({ "status": { "conditions": [{ "$patch": "replace" }, { "type": "Initialized", "status": "True" }] } }),
        )
        .unwrap();
        assert_eq!(doc["status"]["conditions"], json!([{ "type": "Initialized", "status": "True" }]));

        let doc = patched(PatchType::StrategicMerge, json!({ "status": { "$patch": "replace", "phase": "Pending" } }))
            .unwrap();
        assert_eq!(doc["status"], json!({ "phase": "Pending" }));

        let error = patched(PatchType::StrategicMerge, json!({ "status": { "conditions": [{ "status": "True" }] } }));
        assert!(matches!(error, Err(PatchError::Malformed(m)) if m.contains("merge key: type")));
    }

    #[test]
    fn json_patch_operations() {
        let doc = patched(
            PatchType::Json,
            json!([
                { "op": "test", "path": "/status/phase", "value": "Running" },
                { "op": "replace", "path": "/status/phase", "value": "Failed" },
                { "op": "add", "path": "/status/reason", "value": "Evicted" },
                { "op": "add", "path": "/status/conditions/-", "value": { "type": "DisruptionTarget", "status": "True" } },
                { "op": "remove", "path": "/status/conditions/0" },
                { "op": "copy", "from": "/status/reason", "path": "/status/message" },
                { "op": "move", "from": "/metadata/labels/a", "path": "/metadata/labels/x~1y" }
            ]),
        )
        .unwrap();
        assert_eq!(doc["status"]["phase"], "Failed");
        assert_eq!(doc["status"]["reason"], "Evicted");
        assert_eq!(doc["status"]["message"], "Evicted");
        assert_eq!(doc["status"]["conditions"][0]["type"], "PodScheduled");
        assert_eq!(doc["status"]["conditions"][1]["type"], "DisruptionTarget");
        assert_eq!(doc["metadata"]["labels"], json!({ "x/y": "1" }));
    }

    #[test]
    fn json_patch_failures_leave_the_object_alone() {
        let failed = patched(
            PatchType::Json,
            json!([
                { "op": "replace", "path": "/status/phase", "value": "Failed" },
                { "op": "test", "path": "/status/phase", "value": "Running" }
            ]),
        );
        assert!(matches!(failed, Err(PatchError::NotApplicable(_))), "{failed:?}");
        assert!(matches!(
            patched(PatchType::Json, json!([{ "op": "remove", "path": "/status/nothing" }])),
            Err(PatchError::NotApplicable(_))
        ));
        assert!(matches!(patched(PatchType::Json, json!({ "op": "add" })), Err(PatchError::Malformed(_))));
        assert!(matches!(
            patched(PatchType::Json, json!([{ "op": "frobnicate", "path": "/a" }])),
            Err(PatchError::Malformed(_))
        ));
        let mut doc = pod();
        assert!(matches!(apply(PatchType::Merge, &mut doc, b"{not json"), Err(PatchError::Malformed(_))));
    }
}
