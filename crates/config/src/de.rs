//! A serde `Deserializer` over the spanned YAML tree, and the prune-and-retry loop that turns
//! serde's stop-at-first-error behaviour into "report every structural error in one pass".
//!
//! Owns: YAML 1.2 core-schema scalar resolution, the operator-facing wording of serde errors
//! ("expected an integer from 0 to 256, found 300", "unknown key `x`, did you mean `y`?"),
//! annotating each error with the innermost node's key path and position, and pruning.
//! Does not own any schema knowledge (that is the raw structs' `Deserialize` impls) nor
//! semantic checks (`validate`).
//!
//! How one pass finds every error: deserialization stops at the first error, which carries the
//! id of the innermost failing node.
//! That node is removed from the tree (an unknown key with its value, a bad value with its key,
//! a bad list element) and deserialization runs again, so the field falls back to its default
//! and the next error surfaces.
//! Every removal shrinks the tree, so the loop ends; it is also bounded by [`MAX_PASSES`].
//! The paths of removed values are returned so that `validate` can stay silent about the
//! "missing" values they leave behind.

use std::collections::HashMap;
use std::fmt::{self, Display};

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Unexpected, Visitor};

use crate::yaml::{Node, NodeKind, Pos, join_key};

/// Most deserialization passes for one file; each pass removes one faulty node.
pub const MAX_PASSES: usize = 2_000;

/// A structural error: the file does not have the shape of the schema at `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Structural {
    /// Key path as written, e.g. `backends[0].servers[1].weight`.
    pub path: String,
    /// Position of the offending key or value.
    pub pos: Pos,
    /// Operator-facing message.
    pub message: String,
}

/// Deserializes `T` from `root`, pruning faulty nodes until it succeeds.
///
/// Returns the value (None only when the root itself is unusable) and every error met.
pub fn deserialize_pruning<T: DeserializeOwned>(root: &mut Node) -> (Option<T>, Vec<Structural>) {
    let mut errors = Vec::new();
    for _ in 0..MAX_PASSES {
        let de = NodeDe {
            node: root,
            path: String::new(),
            key: false,
        };
        match T::deserialize(de) {
            Ok(value) => return (Some(value), errors),
            Err(e) => {
                let at = e.at.unwrap_or(At {
                    path: String::new(),
                    pos: root.pos,
                    node: root.id,
                });
                errors.push(Structural {
                    path: at.path,
                    pos: at.pos,
                    message: e.message,
                });
                if at.node == root.id || !prune(root, at.node) {
                    return (None, errors);
                }
            }
        }
    }
    (None, errors)
}

/// Removes the node with `id` (and its key or value partner); false when not found.
fn prune(node: &mut Node, id: u32) -> bool {
    match &mut node.kind {
        NodeKind::Scalar { .. } => false,
        NodeKind::Seq(items) => {
            if let Some(i) = items.iter().position(|n| n.id == id) {
                items.remove(i);
                return true;
            }
            items.iter_mut().any(|n| prune(n, id))
        }
        NodeKind::Map(pairs) => {
            if let Some(i) = pairs.iter().position(|(k, v)| k.id == id || v.id == id) {
                pairs.remove(i);
                return true;
            }
            pairs.iter_mut().any(|(_, v)| prune(v, id))
        }
    }
}

/// Where a value of the final tree is: its path as written and the positions of its key and value.
#[derive(Debug, Clone)]
pub struct Located {
    /// Key path as written (list indices as in the file, even after pruning).
    pub display: String,
    /// Position of the value.
    pub pos: Pos,
    /// Position of the key, for mapping entries; the value position otherwise.
    pub key_pos: Pos,
}

/// Maps the key path of each value in the deserialized model (list indices counted in the
/// pruned tree, as the raw structs see them) to where it is in the file.
pub fn span_index(root: &Node) -> HashMap<String, Located> {
    fn walk(
        node: &Node,
        raw: String,
        display: String,
        key_pos: Pos,
        out: &mut HashMap<String, Located>,
    ) {
        match &node.kind {
            NodeKind::Scalar { .. } => {}
            NodeKind::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(
                        item,
                        format!("{raw}[{i}]"),
                        format!("{display}[{}]", item.index),
                        item.pos,
                        out,
                    );
                }
            }
            NodeKind::Map(pairs) => {
                for (k, v) in pairs {
                    let text = k.key_text().unwrap_or("?");
                    walk(
                        v,
                        join_key(&raw, text),
                        join_key(&display, text),
                        k.pos,
                        out,
                    );
                }
            }
        }
        out.insert(
            raw,
            Located {
                display,
                pos: node.pos,
                key_pos,
            },
        );
    }
    let mut out = HashMap::new();
    walk(root, String::new(), String::new(), root.pos, &mut out);
    out
}

#[derive(Debug, Clone)]
struct At {
    path: String,
    pos: Pos,
    node: u32,
}

/// A deserialization error, annotated with the innermost node it concerns.
#[derive(Debug, Clone)]
pub struct DeError {
    message: String,
    at: Option<At>,
}

impl Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl DeError {
    fn new(message: String) -> DeError {
        DeError { message, at: None }
    }
}

/// Rewrites serde's built-in expectations ("u16", "a boolean") in operator words.
fn expected_text(exp: &dyn de::Expected) -> String {
    let raw = exp.to_string();
    let range = |min: i128, max: i128| format!("an integer from {min} to {max}");
    match raw.as_str() {
        "u8" => range(0, u8::MAX.into()),
        "u16" => range(0, u16::MAX.into()),
        "u32" => range(0, u32::MAX.into()),
        "u64" => range(0, u64::MAX.into()),
        "i8" => range(i8::MIN.into(), i8::MAX.into()),
        "i16" => range(i16::MIN.into(), i16::MAX.into()),
        "i32" => range(i32::MIN.into(), i32::MAX.into()),
        "i64" => range(i64::MIN.into(), i64::MAX.into()),
        "f32" | "f64" => "a number".into(),
        "a boolean" => "`true` or `false`".into(),
        "a sequence" => "a list".into(),
        "a map" => "a mapping".into(),
        "path string" => "a file path".into(),
        "a character" | "a string" => "a string".into(),
        s if s.starts_with("struct ") => "a mapping".into(),
        s => s.into(),
    }
}

/// Describes what was found, for "expected X, found Y".
fn found_text(unexp: &Unexpected<'_>) -> String {
    match unexp {
        Unexpected::Bool(b) => format!("`{b}`"),
        Unexpected::Unsigned(v) => v.to_string(),
        Unexpected::Signed(v) => v.to_string(),
        Unexpected::Float(v) => v.to_string(),
        Unexpected::Char(c) => format!("`{c}`"),
        Unexpected::Str(s) => format!("`{s}`"),
        Unexpected::Unit => "nothing".into(),
        Unexpected::Seq => "a list".into(),
        Unexpected::Map => "a mapping".into(),
        other => other.to_string(),
    }
}

/// The closest candidate to `word`, when it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn one_of(options: &[&str]) -> String {
    let list: Vec<String> = options.iter().map(|o| format!("`{o}`")).collect();
    list.join(", ")
}

impl de::Error for DeError {
    fn custom<T: Display>(msg: T) -> Self {
        DeError::new(msg.to_string())
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::new(format!(
            "expected {}, found {}",
            expected_text(exp),
            found_text(&unexp)
        ))
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::new(format!(
            "expected {}, found {}",
            expected_text(exp),
            found_text(&unexp)
        ))
    }

    fn invalid_length(len: usize, exp: &dyn de::Expected) -> Self {
        DeError::new(format!(
            "expected {}, found a list of {len}",
            expected_text(exp)
        ))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let hint = suggest(variant, expected.iter().copied())
            .map(|s| format!(", did you mean `{s}`?"))
            .unwrap_or_default();
        DeError::new(format!(
            "expected one of {}, found `{variant}`{hint}",
            one_of(expected)
        ))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let message = match suggest(field, expected.iter().copied()) {
            Some(s) => format!("unknown key `{field}`, did you mean `{s}`?"),
            None => format!(
                "unknown key `{field}`, expected one of {}",
                one_of(expected)
            ),
        };
        DeError::new(message)
    }

    fn missing_field(field: &'static str) -> Self {
        DeError::new(format!("missing key `{field}`"))
    }

    fn duplicate_field(field: &'static str) -> Self {
        DeError::new(format!("duplicate key `{field}`"))
    }
}

/// Deserializes one node; `path` is its key path as written.
struct NodeDe<'a> {
    node: &'a Node,
    path: String,
    /// True when the node is a mapping key (an unknown key prunes the whole entry either way).
    key: bool,
}

impl NodeDe<'_> {
    fn annotate<T>(&self, r: Result<T, DeError>) -> Result<T, DeError> {
        r.map_err(|mut e| {
            if e.at.is_none() {
                e.at = Some(At {
                    path: self.path.clone(),
                    pos: self.node.pos,
                    node: self.node.id,
                });
            }
            e
        })
    }

    fn any<'de, V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            NodeKind::Scalar { value, plain } => {
                if !plain || self.key {
                    return visitor.visit_str(value);
                }
                if self.node.is_null() {
                    return visitor.visit_unit();
                }
                match value.as_str() {
                    "true" | "True" | "TRUE" => return visitor.visit_bool(true),
                    "false" | "False" | "FALSE" => return visitor.visit_bool(false),
                    _ => {}
                }
                if let Some(v) = parse_int(value) {
                    return match u64::try_from(v) {
                        Ok(u) => visitor.visit_u64(u),
                        Err(_) => match i64::try_from(v) {
                            Ok(i) => visitor.visit_i64(i),
                            Err(_) => visitor.visit_str(value),
                        },
                    };
                }
                if looks_like_float(value)
                    && let Ok(f) = value.parse::<f64>()
                {
                    return visitor.visit_f64(f);
                }
                visitor.visit_str(value)
            }
            NodeKind::Seq(items) => visitor.visit_seq(SeqAccess {
                items,
                next: 0,
                path: &self.path,
            }),
            NodeKind::Map(pairs) => visitor.visit_map(MapAccess {
                pairs,
                next: 0,
                path: &self.path,
                value: None,
            }),
        }
    }
}

/// YAML 1.2 core-schema integers: decimal, `0o` octal, `0x` hexadecimal.
fn parse_int(s: &str) -> Option<i128> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let v = if let Some(h) = body.strip_prefix("0x") {
        i128::from_str_radix(h, 16).ok()?
    } else if let Some(o) = body.strip_prefix("0o") {
        i128::from_str_radix(o, 8).ok()?
    } else if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()) {
        body.parse().ok()?
    } else {
        return None;
    };
    Some(if neg { -v } else { v })
}

fn looks_like_float(s: &str) -> bool {
    let body = s.trim_start_matches(['-', '+']);
    body.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
}

macro_rules! forward_to_any {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let r = self.any(visitor);
            self.annotate(r)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    forward_to_any! {
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
        deserialize_i64 deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32
        deserialize_u64 deserialize_u128 deserialize_f32 deserialize_f64 deserialize_bytes
        deserialize_byte_buf deserialize_seq deserialize_map
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.kind {
            NodeKind::Scalar { value, .. } if self.key || !self.node.is_null() => {
                visitor.visit_str(value)
            }
            _ => self.any(visitor),
        };
        self.annotate(r)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = if self.node.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(NodeDe {
                node: self.node,
                path: self.path.clone(),
                key: self.key,
            })
        };
        self.annotate(r)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = if self.node.is_null() {
            visitor.visit_unit()
        } else {
            self.any(visitor)
        };
        self.annotate(r)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let path = self.path.clone();
        let r = visitor.visit_newtype_struct(NodeDe {
            node: self.node,
            path,
            key: self.key,
        });
        self.annotate(r)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        // An empty value (`tcp:`) reads as an empty mapping, so every key takes its default.
        // Anything but a mapping is refused here: serde's derived visitors would otherwise
        // read a list as a tuple of fields, and report a confusing error about the first one.
        let r = match &self.node.kind {
            _ if self.node.is_null() => visitor.visit_map(MapAccess {
                pairs: &[],
                next: 0,
                path: &self.path,
                value: None,
            }),
            NodeKind::Map(_) => self.any(visitor),
            NodeKind::Seq(_) => Err(de::Error::invalid_type(Unexpected::Seq, &"a mapping")),
            NodeKind::Scalar { .. } => self
                .any(NotAMapping)
                .map(|_| unreachable!("NotAMapping accepts nothing")),
        };
        self.annotate(r)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let r = match &self.node.kind {
            NodeKind::Scalar { value, .. } if !self.node.is_null() => {
                visitor.visit_enum(UnitVariant { value })
            }
            NodeKind::Scalar { .. } => Err(DeError::new(format!(
                "expected one of {}, found nothing",
                one_of(variants)
            ))),
            NodeKind::Seq(_) => Err(DeError::new(format!(
                "expected one of {}, found a list",
                one_of(variants)
            ))),
            NodeKind::Map(_) => Err(DeError::new(format!(
                "expected one of {}, found a mapping",
                one_of(variants)
            ))),
        };
        self.annotate(r)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct SeqAccess<'a> {
    items: &'a [Node],
    next: usize,
    path: &'a str,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(item) = self.items.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        let path = format!("{}[{}]", self.path, item.index);
        seed.deserialize(NodeDe {
            node: item,
            path,
            key: false,
        })
        .map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len() - self.next)
    }
}

struct MapAccess<'a> {
    pairs: &'a [(Node, Node)],
    next: usize,
    path: &'a str,
    value: Option<(&'a Node, String)>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.pairs.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        let path = join_key(self.path, key.key_text().unwrap_or("?"));
        if key.key_text().is_none() {
            let e = DeError {
                message: "expected a plain key, found a list or mapping used as a key".into(),
                at: Some(At {
                    path,
                    pos: key.pos,
                    node: key.id,
                }),
            };
            return Err(e);
        }
        self.value = Some((value, path.clone()));
        seed.deserialize(NodeDe {
            node: key,
            path,
            key: true,
        })
        .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (node, path) = self
            .value
            .take()
            .ok_or_else(|| DeError::new("internal error: value requested before key".into()))?;
        seed.deserialize(NodeDe {
            node,
            path,
            key: false,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.pairs.len() - self.next)
    }
}

/// A unit enum variant written as a scalar (`mode: http`).
struct UnitVariant<'a> {
    value: &'a str,
}

impl<'de, 'a> de::EnumAccess<'de> for UnitVariant<'a> {
    type Error = DeError;
    type Variant = UnitVariant<'a>;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), DeError> {
        let de: de::value::StrDeserializer<'_, DeError> = self.value.into_deserializer();
        Ok((seed.deserialize(de)?, self))
    }
}

impl<'de> de::VariantAccess<'de> for UnitVariant<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, _seed: S) -> Result<S::Value, DeError> {
        Err(DeError::new(format!(
            "expected a mapping under `{}`, found nothing",
            self.value
        )))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, DeError> {
        Err(DeError::new(format!(
            "expected a list under `{}`, found nothing",
            self.value
        )))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, DeError> {
        Err(DeError::new(format!(
            "expected a mapping under `{}`, found nothing",
            self.value
        )))
    }
}

/// Produces "expected a mapping, found X" for a scalar where a struct is expected.
struct NotAMapping;

impl<'de> Visitor<'de> for NotAMapping {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }
}
