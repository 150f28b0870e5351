//! Module import cycles inside each crate: `cargo xtask modgraph` prints them, and a tidy
//! test keeps them from coming back.
//!
//! Owns: reading `crate::NAME` references out of a crate's source files, folding them into a
//! graph of the crate's top-level modules (a child module's references count for its
//! top-level parent), and finding the strongly connected components of that graph.
//! Must not parse Rust properly: a textual scan of `crate::` paths outside comments is what
//! the check needs, and keeps xtask free of a parser dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::project_root;

/// Crates whose top-level modules still form an import circle, and the circles allowed.
/// Each entry is a crate directory under `crates/` and the sorted member list of one cycle.
/// Shrink this list; never add to it.
#[cfg(test)]
const KNOWN_CYCLES: &[(&str, &[&str])] = &[("cli", &["commands", "console", "interactive"])];

/// The top-level module graph of one crate: module -> modules it names through `crate::`.
pub fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    collect(src, &mut files);
    let mut modules = BTreeSet::new();
    for f in &files {
        if let Some(m) = top_module(src, f) {
            modules.insert(m);
        }
    }
    let mut g: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for f in &files {
        let Some(from) = top_module(src, f) else {
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for to in references(&text) {
            if to != from && modules.contains(&to) {
                g.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    g
}

/// The cycles (strongly connected components of more than one module), each sorted.
pub fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Tarjan's algorithm; the graphs are a few dozen nodes, recursion depth is fine.
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    impl<'a> T<'a> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    comp.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out.sort();
    t.out
}

/// Every crate's cycles: (crate directory name, cycle).
pub fn all_cycles() -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let crates = project_root().join("crates");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&crates)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("src").is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for c in cycles(&graph(&dir.join("src"))) {
            out.push((name.clone(), c));
        }
    }
    out
}

/// `cargo xtask modgraph`: prints each crate's import cycles.
pub fn run() -> anyhow::Result<()> {
    let found = all_cycles();
    if found.is_empty() {
        println!("no module import cycles in crates/*");
    }
    for (krate, c) in &found {
        println!("crates/{krate}: {} modules: {}", c.len(), c.join(" "));
    }
    Ok(())
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`None` for the crate root and `src/bin`).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    if first == "bin" {
        return None;
    }
    let name = first.strip_suffix(".rs").unwrap_or(&first);
    if rel.components().count() == 1 && matches!(name, "lib" | "main") {
        return None;
    }
    Some(name.to_owned())
}

/// The top-level module names after each `crate::` outside `//` comments, including those
/// inside `use crate::{a, b::c}` groups.
fn references(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let head = item.trim().split("::").next().unwrap_or("").trim();
                    if is_ident(head) {
                        out.insert(head.to_owned());
                    }
                }
            } else {
                let head: String = after
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if is_ident(&head) {
                    out.insert(head);
                }
            }
            rest = after;
        }
    }
    out
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(edges: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry((*a).into()).or_default().insert((*b).into());
            g.entry((*b).into()).or_default();
        }
        g
    }

    #[test]
    fn references_see_paths_and_use_groups_but_not_comments() {
        let text = "use crate::live::Snapshot;\nuse crate::{queue::Slot, error};\n// crate::nope\nlet x = crate::plan::X; // crate::also_nope\n";
        let r: Vec<String> = references(text).into_iter().collect();
        assert_eq!(r, ["error", "live", "plan", "queue"]);
    }

    #[test]
    fn cycles_are_the_components_of_more_than_one_module() {
        let c = cycles(&g(&[
            ("a", "b"),
            ("b", "c"),
            ("c", "a"),
            ("c", "d"),
            ("d", "e"),
        ]));
        assert_eq!(c, vec![vec!["a".to_owned(), "b".into(), "c".into()]]);
        assert!(cycles(&g(&[("a", "b"), ("b", "c")])).is_empty());
    }

    /// The crates' module graphs have no import cycle beyond [`KNOWN_CYCLES`]
    /// (`cargo xtask modgraph` prints them).
    #[test]
    fn no_new_module_import_cycles() {
        let known: BTreeSet<(String, Vec<String>)> = KNOWN_CYCLES
            .iter()
            .map(|(k, c)| ((*k).to_owned(), c.iter().map(|s| (*s).to_owned()).collect()))
            .collect();
        let new: Vec<String> = all_cycles()
            .into_iter()
            .filter(|c| !known.contains(c))
            .map(|(k, c)| format!("crates/{k}: {}", c.join(" ")))
            .collect();
        assert!(
            new.is_empty(),
            "module import cycles (a module that imports one that imports it back, through \
             `crate::`): {new:#?}; open them by moving the shared piece into a leaf module"
        );
    }
}
