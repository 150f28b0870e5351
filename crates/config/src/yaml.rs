//! A small spanned YAML node tree built from `saphyr-parser` events.
//!
//! Owns YAML syntax: one document, scalars / lists / mappings, anchors and aliases (expanded,
//! bounded), duplicate-key detection, and the line/column of every node and key.
//! It does not know the configuration schema (see `de`) and does not resolve scalar types
//! beyond remembering whether a scalar was quoted.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// A position in the source: 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// Line, starting at 1.
    pub line: u32,
    /// Column, starting at 1.
    pub column: u32,
}

impl Pos {
    fn from_span(span: &Span) -> Pos {
        Pos {
            line: u32::try_from(span.start.line()).unwrap_or(u32::MAX),
            column: u32::try_from(span.start.col() + 1).unwrap_or(u32::MAX),
        }
    }
}

/// One node of the tree.
#[derive(Debug, Clone)]
pub struct Node {
    /// Unique within a tree; the deserializer names failing nodes by id so they can be pruned.
    pub id: u32,
    /// Where the node starts.
    pub pos: Pos,
    /// For list elements: the index in the list as written, kept when siblings are pruned.
    pub index: usize,
    /// The content.
    pub kind: NodeKind,
}

/// The content of a node.
#[derive(Debug, Clone)]
pub enum NodeKind {
    /// A scalar; `plain` is false for quoted and block scalars (always strings).
    Scalar { value: String, plain: bool },
    /// A list.
    Seq(Vec<Node>),
    /// A mapping, in file order; keys are unique.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// Whether this is a plain `null`, `~` or empty scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { value, plain: true }
            if matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// Text used for this node as a mapping key (block and flow collections have none).
    pub fn key_text(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }
}

/// A problem found while reading YAML syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxProblem {
    /// Where it is.
    pub pos: Pos,
    /// Key path of the mapping concerned, empty when unknown.
    pub path: String,
    /// What is wrong, lowercase.
    pub message: String,
    /// False when the tree could still be built (for example a dropped duplicate key).
    pub fatal: bool,
    /// Id of the mapping whose path prefixes `path`, resolved once the tree is complete.
    parent: Option<u32>,
}

/// Most nodes alias expansion may create, so that a "billion laughs" file cannot exhaust memory.
const MAX_NODES: u32 = 200_000;

/// Where `text` ends: its last line and the column after its last character. saphyr moves
/// the end of a file without a final newline to the start of a line that does not exist;
/// positions are clamped to this, so every diagnostic points into the file.
fn end_of(text: &str) -> Pos {
    let bytes = text.as_bytes();
    // YAML line breaks: LF, CR, or CRLF as one.
    let is_break = |i: usize| match bytes[i] {
        b'\n' => true,
        b'\r' => bytes.get(i + 1) != Some(&b'\n'),
        _ => false,
    };
    let breaks = (0..bytes.len()).filter(|&i| is_break(i)).count();
    let last = text.rfind(['\n', '\r']).map_or(text, |i| &text[i + 1..]);
    Pos {
        line: u32::try_from(breaks + 1).unwrap_or(u32::MAX),
        column: u32::try_from(last.chars().count() + 1).unwrap_or(u32::MAX),
    }
}

/// Parses `text` into a tree; `Ok` may still carry non-fatal problems.
pub fn parse(text: &str) -> Result<(Node, Vec<SyntaxProblem>), Vec<SyntaxProblem>> {
    let end = end_of(text);
    let mut b = Builder {
        end,
        next_id: 0,
        anchors: HashMap::new(),
        stack: Vec::new(),
        root: None,
        documents: 0,
        problems: Vec::new(),
    };
    for item in Parser::new_from_str(text) {
        let (event, span) = match item {
            Ok(ev) => ev,
            Err(e) => {
                let m = e.marker();
                let pos = Pos {
                    line: u32::try_from(m.line()).unwrap_or(u32::MAX),
                    column: u32::try_from(m.col() + 1).unwrap_or(u32::MAX),
                }
                .min(end);
                b.problems
                    .push(fatal(pos, format!("invalid YAML: {}", e.info())));
                return Err(b.problems);
            }
        };
        if let Err(mut p) = b.event(event, &span) {
            // A limit hit while building (`Builder::id`) is reported at the node being built.
            if p.pos == Pos::default() {
                p.pos = Pos::from_span(&span).min(end);
            }
            b.problems.push(p);
            return Err(b.problems);
        }
    }
    match b.root {
        Some(root) => {
            let mut problems = b.problems;
            for p in &mut problems {
                if let Some(parent) = p.parent.take() {
                    let prefix = path_of(&root, parent).unwrap_or_default();
                    p.path = join_key(&prefix, &p.path);
                }
            }
            Ok((root, problems))
        }
        None => Err(vec![fatal(
            Pos { line: 1, column: 1 },
            "the file is empty, expected a mapping starting with `version: 1`".to_owned(),
        )]),
    }
}

fn fatal(pos: Pos, message: String) -> SyntaxProblem {
    SyntaxProblem {
        pos,
        path: String::new(),
        message,
        fatal: true,
        parent: None,
    }
}

enum Frame {
    Seq {
        node: Node,
        anchor: usize,
    },
    Map {
        node: Node,
        anchor: usize,
        pending_key: Option<Node>,
    },
}

struct Builder {
    /// The end of the text (see [`end_of`]).
    end: Pos,
    next_id: u32,
    anchors: HashMap<usize, Node>,
    stack: Vec<Frame>,
    root: Option<Node>,
    documents: u32,
    problems: Vec<SyntaxProblem>,
}

impl Builder {
    fn id(&mut self) -> Result<u32, SyntaxProblem> {
        self.next_id += 1;
        if self.next_id > MAX_NODES {
            return Err(fatal(
                Pos::default(),
                format!("the file expands to more than {MAX_NODES} YAML nodes"),
            ));
        }
        Ok(self.next_id)
    }

    fn event(&mut self, event: Event<'_>, span: &Span) -> Result<(), SyntaxProblem> {
        let pos = Pos::from_span(span).min(self.end);
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(fatal(
                        pos,
                        "expected a single YAML document, found another `---`".into(),
                    ));
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                let quoted_tag = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let plain = style == ScalarStyle::Plain && !quoted_tag;
                let node = Node {
                    id: self.id()?,
                    pos,
                    index: 0,
                    kind: NodeKind::Scalar {
                        value: value.into_owned(),
                        plain,
                    },
                };
                self.finish(node, anchor)?;
            }
            Event::Alias(anchor) => {
                let Some(target) = self.anchors.get(&anchor).cloned() else {
                    return Err(fatal(pos, "alias refers to an unknown anchor".into()));
                };
                let mut copy = target;
                self.renumber(&mut copy)?;
                copy.pos = pos;
                self.finish(copy, 0)?;
            }
            Event::SequenceStart(anchor, _) => {
                let node = Node {
                    id: self.id()?,
                    pos,
                    index: 0,
                    kind: NodeKind::Seq(Vec::new()),
                };
                self.stack.push(Frame::Seq { node, anchor });
            }
            Event::MappingStart(anchor, _) => {
                let node = Node {
                    id: self.id()?,
                    pos,
                    index: 0,
                    kind: NodeKind::Map(Vec::new()),
                };
                self.stack.push(Frame::Map {
                    node,
                    anchor,
                    pending_key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq { node, anchor }) | Some(Frame::Map { node, anchor, .. }) => {
                        (node, anchor)
                    }
                    None => return Ok(()),
                };
                self.finish(node, anchor)?;
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
        Ok(())
    }

    /// Gives copies made by alias expansion fresh ids so that pruning one copy spares the others.
    fn renumber(&mut self, node: &mut Node) -> Result<(), SyntaxProblem> {
        node.id = self.id()?;
        match &mut node.kind {
            NodeKind::Scalar { .. } => {}
            NodeKind::Seq(items) => {
                for item in items {
                    self.renumber(item)?;
                }
            }
            NodeKind::Map(pairs) => {
                for (k, v) in pairs {
                    self.renumber(k)?;
                    self.renumber(v)?;
                }
            }
        }
        Ok(())
    }

    /// Attaches a completed node to its parent (or makes it the root).
    fn finish(&mut self, mut node: Node, anchor: usize) -> Result<(), SyntaxProblem> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { node: parent, .. }) => {
                if let NodeKind::Seq(items) = &mut parent.kind {
                    node.index = items.len();
                    items.push(node);
                }
            }
            Some(Frame::Map {
                node: parent,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => {
                    if let NodeKind::Map(pairs) = &mut parent.kind {
                        let text = key.key_text();
                        let duplicate =
                            text.is_some() && pairs.iter().any(|(k, _)| k.key_text() == text);
                        if duplicate {
                            self.problems.push(SyntaxProblem {
                                pos: key.pos,
                                path: text.unwrap_or_default().to_owned(),
                                message: format!(
                                    "duplicate key `{}`, the second one is ignored",
                                    text.unwrap_or_default()
                                ),
                                fatal: false,
                                parent: Some(parent.id),
                            });
                        } else {
                            pairs.push((key, node));
                        }
                    }
                }
            },
        }
        Ok(())
    }
}

/// `prefix.key`, or `key` at the top level.
pub fn join_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The key path (`backends[0].servers[1]`) of the node with `id`, using indices as written.
pub fn path_of(root: &Node, id: u32) -> Option<String> {
    fn walk(node: &Node, id: u32, path: &str) -> Option<String> {
        if node.id == id {
            return Some(path.to_owned());
        }
        match &node.kind {
            NodeKind::Scalar { .. } => None,
            NodeKind::Seq(items) => items
                .iter()
                .find_map(|n| walk(n, id, &format!("{path}[{}]", n.index))),
            NodeKind::Map(pairs) => pairs.iter().find_map(|(k, v)| {
                let p = join_key(path, k.key_text().unwrap_or("?"));
                if k.id == id { Some(p) } else { walk(v, id, &p) }
            }),
        }
    }
    walk(root, id, "")
}
