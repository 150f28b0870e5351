//! Differences between two configurations, and per-section fingerprints.
//!
//! Owns: [`diff`] (section/item granularity: frontends, backends, servers and VRRP instances
//! are matched by name, other values are compared as a whole), the text rendering used by
//! `tandemctl config diff`, and [`fingerprints`]/[`fingerprint`], stable hashes of the
//! canonical YAML that config sync exchanges before shipping a generation.
//! Must not touch parsing or validation: it only reads two valid [`Config`] values.
//!
//! Both sides are compared through their serialized shape (the same shape as
//! [`Config::to_yaml`]), so every field the file can hold is covered without a hand-written
//! comparison per type, and a new field is diffed the day it is added.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_norway::Value;

use crate::Config;

/// What happened to one item or value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Present only in the new configuration.
    Added,
    /// Present only in the old configuration.
    Removed,
    /// Present in both, with another value.
    Changed,
}

/// One difference, located by a key path such as `backends[shop].servers[web1].weight`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Added, removed or changed.
    pub kind: ChangeKind,
    /// Key path; list items with a `name` are written `list[name]`, others `list[index]`.
    pub path: String,
    /// The old value as compact text (for `Removed` and `Changed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    /// The new value as compact text (for `Added` and `Changed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
}

impl fmt::Display for Change {
    /// `+ backends[api]`, `- frontends[old]`, `~ backends[shop].servers[web1].weight: 100 -> 50`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ChangeKind::Added => write!(f, "+ {}", self.path)?,
            ChangeKind::Removed => write!(f, "- {}", self.path)?,
            ChangeKind::Changed => write!(
                f,
                "~ {}: {} -> {}",
                self.path,
                self.old.as_deref().unwrap_or(""),
                self.new.as_deref().unwrap_or("")
            )?,
        }
        // Added and removed scalar values (not whole items) show the value.
        match (self.kind, &self.old, &self.new) {
            (ChangeKind::Added, _, Some(v)) if !v.starts_with('{') => write!(f, ": {v}"),
            (ChangeKind::Removed, Some(v), _) if !v.starts_with('{') => write!(f, ": {v}"),
            _ => Ok(()),
        }
    }
}

/// Lists of items matched by their `name` rather than by position.
const NAMED_LISTS: [&str; 5] = ["frontends", "backends", "servers", "vrrp", "classes"];

/// The differences from `old` to `new`, in the order of the file's sections; empty when the
/// configurations are equal.
pub fn diff(old: &Config, new: &Config) -> Vec<Change> {
    let mut changes = Vec::new();
    walk("", &shape(old), &shape(new), &mut changes);
    changes
}

/// `changes` as text, one per line (see [`Change`]'s `Display`); "no changes" when empty.
pub fn render(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no changes\n".to_owned();
    }
    let mut out = String::new();
    for c in changes {
        out.push_str(&c.to_string());
        out.push('\n');
    }
    out
}

/// A stable 128-bit hash, shown as 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(pub u128);

impl Fingerprint {
    /// FNV-1a (128-bit) of `bytes`: stable across builds, platforms and Rust versions, which
    /// `std`'s hashers do not promise. Detects changes; it is not a cryptographic hash (the sync
    /// channel is authenticated by TLS, not by this).
    pub fn of(bytes: &[u8]) -> Fingerprint {
        const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
        const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
        let mut h = OFFSET;
        for b in bytes {
            h ^= u128::from(*b);
            h = h.wrapping_mul(PRIME);
        }
        Fingerprint(h)
    }

    /// Parses the 32-hex-digit form written by `Display`.
    pub fn parse(text: &str) -> Option<Fingerprint> {
        if text.len() != 32 {
            return None;
        }
        u128::from_str_radix(text, 16).ok().map(Fingerprint)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The fingerprint of the whole configuration: of its canonical YAML ([`Config::to_yaml`]),
/// so equal configurations have equal fingerprints whatever their comments and layout.
pub fn fingerprint(config: &Config) -> Fingerprint {
    Fingerprint::of(config.to_yaml().as_bytes())
}

/// One fingerprint per top-level section (`cluster`, `vrrp`, `frontends`, `backends`, ...),
/// each of the section's canonical YAML; absent sections are left out.
pub fn fingerprints(config: &Config) -> BTreeMap<String, Fingerprint> {
    let mut out = BTreeMap::new();
    if let Value::Mapping(map) = shape(config) {
        for (key, value) in map {
            // Serializing a YAML value back to YAML cannot fail.
            let yaml = serde_norway::to_string(&value).unwrap_or_default();
            out.insert(text(&key), Fingerprint::of(yaml.as_bytes()));
        }
    }
    out
}

/// The serialized shape of `config`, keys in file order (a YAML value keeps insertion order,
/// a `serde_json` map without `preserve_order` would sort them).
fn shape(config: &Config) -> Value {
    // The model serializes plain structs, strings and numbers: this cannot fail.
    serde_norway::to_value(config).unwrap_or(Value::Null)
}

/// Compact text of a value: scalars bare, lists and maps as one-line JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_owned(),
        // String-keyed maps and lists of scalars: JSON can always write them.
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

fn walk(path: &str, old: &Value, new: &Value, out: &mut Vec<Change>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Mapping(a), Value::Mapping(b)) => {
            // Keys in the old order, then keys only in the new one.
            for (k, va) in a {
                let p = join(path, &text(k));
                match b.get(k) {
                    Some(vb) => walk(&p, va, vb, out),
                    None => out.push(removed(p, va)),
                }
            }
            for (k, vb) in b {
                if !a.contains_key(k) {
                    out.push(added(join(path, &text(k)), vb));
                }
            }
        }
        (Value::Sequence(a), Value::Sequence(b)) if is_named_list(path) => {
            let name = |v: &Value| v.get("name").map(text).unwrap_or_default();
            for va in a {
                let p = format!("{path}[{}]", name(va));
                match b.iter().find(|vb| name(vb) == name(va)) {
                    Some(vb) => walk(&p, va, vb, out),
                    None => out.push(removed(p, va)),
                }
            }
            for vb in b {
                if !a.iter().any(|va| name(va) == name(vb)) {
                    out.push(added(format!("{path}[{}]", name(vb)), vb));
                }
            }
        }
        _ => out.push(Change {
            kind: ChangeKind::Changed,
            path: path.to_owned(),
            old: Some(text(old)),
            new: Some(text(new)),
        }),
    }
}

fn is_named_list(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    NAMED_LISTS.contains(&last)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn added(path: String, v: &Value) -> Change {
    Change {
        kind: ChangeKind::Added,
        path,
        old: None,
        new: Some(text(v)),
    }
}

fn removed(path: String, v: &Value) -> Change {
    Change {
        kind: ChangeKind::Removed,
        path,
        old: Some(text(v)),
        new: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryCertFiles;
    use proptest::prelude::*;

    /// A small valid configuration: `backends` backends of `servers` servers, one frontend
    /// each, with the knobs the property test turns.
    #[derive(Debug, Clone)]
    struct Spec {
        backends: Vec<Vec<u16>>,
        port: u16,
        idle_s: u32,
    }

    impl Spec {
        fn yaml(&self) -> String {
            let mut out = String::from("version: 1\nfrontends:\n");
            for (i, _) in self.backends.iter().enumerate() {
                out.push_str(&format!(
                    "  - name: f{i}\n    bind: [\"127.0.0.1:{}\"]\n    timeouts: {{ client_idle: {}s }}\n    default_backend: b{i}\n",
                    u32::from(self.port) + i as u32,
                    self.idle_s
                ));
            }
            out.push_str("backends:\n");
            for (i, servers) in self.backends.iter().enumerate() {
                out.push_str(&format!("  - name: b{i}\n    servers:\n"));
                for (j, w) in servers.iter().enumerate() {
                    out.push_str(&format!(
                        "      - {{ name: s{j}, address: 127.0.0.1:{}, weight: {w} }}\n",
                        9000 + j
                    ));
                }
            }
            out
        }

        fn config(&self) -> Config {
            let text = self.yaml();
            match crate::parse(&text, "spec.yaml", &MemoryCertFiles::default()) {
                Ok(l) => l.config,
                Err(r) => panic!("generated config is invalid:\n{r}\n{text}"),
            }
        }
    }

    fn spec() -> impl Strategy<Value = Spec> {
        (
            prop::collection::vec(prop::collection::vec(1u16..=256, 1..4), 1..4),
            10000u16..20000,
            1u32..300,
        )
            .prop_map(|(backends, port, idle_s)| Spec {
                backends,
                port,
                idle_s,
            })
    }

    /// One mutation and the path prefix the diff must report.
    fn mutate(spec: &Spec, pick: usize, value: u16) -> (Spec, String) {
        let mut s = spec.clone();
        let b = pick % s.backends.len();
        let n = s.backends[b].len();
        match pick % 5 {
            0 => {
                let old = s.backends[b][pick % n];
                s.backends[b][pick % n] = if old == value { old % 256 + 1 } else { value };
                (s, format!("backends[b{b}].servers[s{}].weight", pick % n))
            }
            1 => {
                s.backends[b].push(value.max(1));
                (s, format!("backends[b{b}].servers[s{n}]"))
            }
            2 if n > 1 => {
                s.backends[b].pop();
                (s, format!("backends[b{b}].servers[s{}]", n - 1))
            }
            3 => {
                s.idle_s =
                    s.idle_s % 299 + 1 + u32::from(value.is_multiple_of(2) && s.idle_s < 150);
                if s.idle_s == spec.idle_s {
                    s.idle_s += 1;
                }
                (s, "frontends[f0].timeouts.client_idle".to_owned())
            }
            _ => {
                s.port = if s.port == 19999 { 10000 } else { s.port + 1 };
                (s, "frontends[f0].bind".to_owned())
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn unchanged_config_has_empty_diff(s in spec()) {
            let c = s.config();
            prop_assert!(diff(&c, &c.clone()).is_empty());
            prop_assert_eq!(fingerprint(&c), fingerprint(&s.config()));
        }

        #[test]
        fn any_single_change_is_reported(s in spec(), pick in 0usize..1000, value in 1u16..=256) {
            let (m, path) = mutate(&s, pick, value);
            let (a, b) = (s.config(), m.config());
            let changes = diff(&a, &b);
            prop_assert!(!changes.is_empty(), "no change reported for {path}");
            prop_assert!(
                changes.iter().any(|c| c.path.starts_with(&path)),
                "{path} not in {changes:?}"
            );
            prop_assert_ne!(fingerprint(&a), fingerprint(&b));
            // The reverse diff reports as many changes, with added and removed swapped.
            prop_assert_eq!(diff(&b, &a).len(), changes.len());
        }
    }

    #[test]
    fn renders_like_the_operator_reads_it() {
        let base = Spec {
            backends: vec![vec![100, 100]],
            port: 8080,
            idle_s: 60,
        };
        let mut next = base.clone();
        next.backends[0][0] = 50;
        next.backends.push(vec![10]);
        next.idle_s = 30;
        let text = render(&diff(&base.config(), &next.config()));
        let expected = "\
~ frontends[f0].timeouts.client_idle: 1m -> 30s
+ frontends[f1]
~ backends[b0].servers[s0].weight: 100 -> 50
+ backends[b1]
";
        assert_eq!(text, expected);
        assert_eq!(render(&[]), "no changes\n");
    }

    #[test]
    fn section_fingerprints_change_only_for_the_changed_section() {
        let base = Spec {
            backends: vec![vec![100]],
            port: 8080,
            idle_s: 60,
        };
        let mut next = base.clone();
        next.backends[0][0] = 7;
        let (a, b) = (fingerprints(&base.config()), fingerprints(&next.config()));
        assert_ne!(a["backends"], b["backends"]);
        assert_eq!(a["frontends"], b["frontends"]);
        let f = a["backends"];
        assert_eq!(Fingerprint::parse(&f.to_string()), Some(f));
    }
}
