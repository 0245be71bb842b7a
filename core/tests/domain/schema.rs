//! The committed JSON Schema of job messages (`docs/job-message.schema.json`) is the
//! one the message types generate, so users and their tools never validate against a
//! stale format. Regenerate it with
//! `UPDATE_SCHEMA=1 cargo test -p podbridge-core --test domain schema`.

use podbridge_core::job::message_schema;

const REGENERATE: &str = "UPDATE_SCHEMA=1 cargo test -p podbridge-core --test domain schema";

#[test]
fn the_committed_schema_is_the_generated_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/job-message.schema.json");
    let generated = message_schema();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(path, &generated).unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
    }
    let committed = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {path} ({e}); create it with `{REGENERATE}`"));
    if committed != generated {
        // The first differing line is enough to see what moved; the whole schema
        // printed twice would bury it.
        let (line, (old, new)) = committed
            .lines()
            .chain(std::iter::repeat("<end of file>"))
            .zip(generated.lines().chain(std::iter::repeat("<end of file>")))
            .enumerate()
            .find(|(_, (old, new))| old != new)
            .unwrap_or((0, ("<line endings differ>", "")));
        panic!(
            "docs/job-message.schema.json is not the schema of the message types in core/src/job.rs.\n\
             first difference, line {}:\n  committed: {old}\n  generated: {new}\n\
             If the format change is intended, regenerate it with `{REGENERATE}` and commit the file \
             (and update docs/JOBS.md).",
            line + 1
        );
    }
}

#[test]
fn the_schema_describes_both_messages_and_rejects_unknown_fields() {
    let schema: serde_json::Value = serde_json::from_str(&message_schema()).unwrap();
    assert_eq!(schema["title"], "podbridge message, version 1");
    let definitions = schema["$defs"].as_object().expect("the schema has definitions");
    for name in ["JobMessage", "CancelMessage", "JobSpec", "Resources", "RetrySpec", "FailureClass"] {
        assert!(definitions.contains_key(name), "no definition of {name}");
    }
    assert_eq!(definitions["JobSpec"]["additionalProperties"], false, "unknown job fields must be rejected");
    assert_eq!(definitions["JobSpec"]["required"], serde_json::json!(["image"]));
}
