//! Keeps `docs/config.md` complete: every key path of the JSON Schema must appear in it,
//! written in backticks (`backends[].servers[].weight`; list items are `[]`, map entries
//! `<name>`), and every documented path must exist in the schema.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

/// Collects the key paths under `node` into `out`.
fn walk(root: &Value, node: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Some(r) = node.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/$defs/");
        walk(root, &root["$defs"][name], prefix, out);
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for sub in node
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            walk(root, sub, prefix, out);
        }
    }
    if let Some(items) = node.get("items") {
        walk(root, items, &format!("{prefix}[]"), out);
    }
    // Mappings keyed by name: schemars writes the key pattern as `patternProperties`.
    let keyed = node
        .get("patternProperties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten();
    let extra = node.get("additionalProperties").filter(|v| v.is_object());
    for sub in keyed.map(|(_, v)| v).chain(extra) {
        let path = format!("{prefix}.<name>");
        out.insert(path.clone());
        walk(root, sub, &path, out);
    }
    for (key, sub) in node
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        out.insert(path.clone());
        walk(root, sub, &path, out);
    }
}

fn schema_paths() -> BTreeSet<String> {
    let schema = tandem_config::json_schema();
    let mut out = BTreeSet::new();
    walk(&schema, &schema, "", &mut out);
    out
}

fn doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn every_schema_key_is_documented() {
    let paths = schema_paths();
    assert!(
        paths.contains("backends[].servers[].weight"),
        "schema walk is broken: {paths:?}"
    );
    assert!(
        paths.contains("cluster.nodes.<name>.priority"),
        "schema walk is broken: {paths:?}"
    );
    let doc = doc();
    let missing: Vec<&String> = paths
        .iter()
        .filter(|p| !doc.contains(&format!("`{p}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/config.md lacks these keys (write them in backticks):\n{missing:#?}"
    );
}

#[test]
fn every_documented_key_exists() {
    let paths = schema_paths();
    let doc = doc();
    // Table rows start with the key path: | `path` | ...
    let documented: Vec<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    assert!(
        !documented.is_empty(),
        "no key rows found in docs/config.md"
    );
    let unknown: Vec<&&str> = documented.iter().filter(|p| !paths.contains(**p)).collect();
    assert!(
        unknown.is_empty(),
        "docs/config.md documents keys the schema does not have:\n{unknown:#?}"
    );
}
