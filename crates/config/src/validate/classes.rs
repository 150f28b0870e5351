//! Validation of the SLA class keys: the `classes` section, the frontends' `class` and
//! `class_by`, and the routes' `class`.
//!
//! Owns: required keys and uniqueness of classes, distinct priorities, the 100% bound on the
//! sum of shares, every class reference (with "did you mean"), source networks (valid, no host
//! bits, no duplicates), the header needing http mode, the frontend default class, and two
//! warnings (a class that can starve, a class nothing assigns).
//! A child of `validate` so it reports through the same [`Ctx`]; it does not touch the
//! other sections.

use std::collections::{BTreeMap, BTreeSet};

use super::Ctx;
use crate::classes::{Class, ClassBy, RawClassBy, Share};
use crate::de::suggest;
use crate::raw::{Mode, RawConfig};
use crate::values::{Cidr, Name};

/// The checked classes, and what the frontends assign, for the warnings.
pub(super) struct Classes {
    /// Valid classes, in file order.
    pub list: Vec<Class>,
    /// Names of every class entry with a name (also invalid ones: a reference to them is not
    /// "undefined", the class itself is reported).
    names: BTreeSet<Name>,
    /// The lowest-priority class: the default of frontends without `class`.
    default: Option<Name>,
    /// Classes some frontend, route or source rule names.
    assigned: BTreeSet<Name>,
    /// Whether some frontend classifies by header (which can assign every class).
    by_header: bool,
    /// Whether some reference named an undefined class (then "not assigned" is noise).
    undefined: bool,
}

/// Checks `raw.classes`.
pub(super) fn classes(raw: &RawConfig, ctx: &mut Ctx<'_>) -> Classes {
    let mut names = super::Names::new("class");
    let mut priorities: BTreeMap<i16, Name> = BTreeMap::new();
    let mut list = Vec::new();
    let mut all = BTreeSet::new();
    let mut total: u32 = 0;
    let mut over = false;
    for (i, c) in raw.classes.iter().enumerate() {
        let p = format!("classes[{i}]");
        let name = ctx.require(&c.name, &format!("{p}.name"));
        if let Some(n) = &name {
            names.add(ctx, n, &format!("{p}.name"));
            all.insert(n.clone());
        }
        let priority = ctx.require(&c.priority, &format!("{p}.priority"));
        if let (Some(pr), Some(n)) = (priority, &name) {
            match priorities.get(&pr.get()) {
                Some(other) if other != n => ctx.error(
                    &format!("{p}.priority"),
                    format!(
                        "priority {pr} is also the priority of class `{other}`, class priorities must differ"
                    ),
                ),
                Some(_) => {}
                None => {
                    priorities.insert(pr.get(), n.clone());
                }
            }
        }
        let max_queue_time = c
            .max_queue_time
            .map(|d| ctx.nonzero(d, &format!("{p}.max_queue_time")));
        let share = c.share.unwrap_or(Share::ZERO);
        total += u32::from(share.percent());
        if total > 100 && !over {
            over = true;
            ctx.error(
                &format!("{p}.share"),
                format!(
                    "the shares of the classes add up to {total}% with this one, more than the 100% of a backend's capacity"
                ),
            );
        }
        if let (Some(name), Some(priority)) = (name, priority) {
            list.push(Class {
                name,
                priority,
                max_queue_time,
                share,
            });
        }
    }
    if list.len() > 1 && total == 100 {
        for (i, c) in raw.classes.iter().enumerate() {
            if let (Some(n), None | Some(Share::ZERO)) = (&c.name, c.share) {
                ctx.warn(
                    &format!("classes[{i}].name"),
                    format!(
                        "class `{n}` has no share and the other classes' shares add up to 100%: while they all have waiting requests, `{n}` gets no server slot"
                    ),
                );
            }
        }
    }
    let default = list
        .iter()
        .max_by_key(|c| c.priority)
        .map(|c| c.name.clone());
    Classes {
        list,
        names: all,
        default,
        assigned: BTreeSet::new(),
        by_header: false,
        undefined: false,
    }
}

impl Classes {
    /// Checks a reference to a class at `at` (the value's key path).
    pub(super) fn reference(&mut self, ctx: &mut Ctx<'_>, name: &Name, at: &str) {
        self.assigned.insert(name.clone());
        if self.names.contains(name) {
            return;
        }
        self.undefined = true;
        let message = if self.names.is_empty() {
            format!("class `{name}` is not defined: the file has no `classes` section")
        } else {
            let hint = suggest(name.as_str(), self.names.iter().map(Name::as_str))
                .map(|s| format!(", did you mean `{s}`?"))
                .unwrap_or_default();
            format!("class `{name}` is not defined in `classes`{hint}")
        };
        ctx.error(at, message);
    }

    /// The route's class at `at`, checked.
    pub(super) fn route(
        &mut self,
        ctx: &mut Ctx<'_>,
        class: Option<&Name>,
        at: &str,
    ) -> Option<Name> {
        let class = class?;
        self.reference(ctx, class, at);
        Some(class.clone())
    }

    /// The default class of frontend `p`: its own `class`, checked, or the lowest-priority
    /// class when classes exist.
    pub(super) fn frontend(
        &mut self,
        ctx: &mut Ctx<'_>,
        class: Option<&Name>,
        p: &str,
    ) -> Option<Name> {
        match class {
            Some(c) => {
                self.reference(ctx, c, &format!("{p}.class"));
                Some(c.clone())
            }
            None => {
                if let Some(d) = &self.default {
                    self.assigned.insert(d.clone());
                }
                self.default.clone()
            }
        }
    }

    /// The `class_by` of frontend `p`, checked.
    pub(super) fn class_by(
        &mut self,
        ctx: &mut Ctx<'_>,
        raw: Option<&RawClassBy>,
        mode: Mode,
        p: &str,
    ) -> Option<ClassBy> {
        let raw = raw?;
        let at = format!("{p}.class_by");
        if raw.sources.is_empty() && raw.header.is_none() {
            // Unless the keys given were removed for structural errors (a typo such as
            // `source`), which are reported already.
            let (display, _) = ctx.locate(&at, false);
            let pruned = ctx
                .suppressed
                .iter()
                .any(|s| s.starts_with(&format!("{display}.")));
            if !pruned {
                ctx.error(&at, "expected `sources` or `header`");
            }
            return None;
        }
        if let Some(h) = &raw.header {
            self.by_header = true;
            if mode == Mode::Tcp {
                ctx.error(
                    &format!("{at}.header"),
                    format!(
                        "classifying by header `{h}` needs mode http, this frontend has mode tcp"
                    ),
                );
            }
        }
        let mut sources = BTreeMap::new();
        let mut written: BTreeMap<Cidr, &str> = BTreeMap::new();
        // In file order, so a duplicate is reported where it is written the second time.
        let mut entries: Vec<(&String, &Name)> = raw.sources.iter().collect();
        entries.sort_by_key(|(key, _)| {
            let pos = ctx.locate(&format!("{at}.sources.{key}"), true).1;
            (pos.line, pos.column)
        });
        for (key, class) in entries {
            let path = format!("{at}.sources.{key}");
            self.reference(ctx, class, &path);
            let cidr = match key.parse::<Cidr>() {
                Ok(c) => c,
                Err(e) => {
                    ctx.error_at_key(&path, e.to_string());
                    continue;
                }
            };
            let network = network(cidr);
            if network != cidr {
                ctx.error_at_key(
                    &path,
                    format!("`{key}` has host bits set: write the network, `{network}`"),
                );
                continue;
            }
            if let Some(first) = written.get(&network) {
                ctx.error_at_key(
                    &path,
                    format!("network `{key}` is listed twice, also as `{first}`"),
                );
                continue;
            }
            written.insert(network, key);
            sources.insert(network, class.clone());
        }
        Some(ClassBy {
            sources,
            header: raw.header.clone(),
        })
    }

    /// Warns about classes no frontend can assign (done after all frontends); silent when a
    /// reference is undefined (most likely a typo of the "unassigned" class) or the file has
    /// errors (a removed bad value may be what assigned it).
    pub(super) fn warn_unassigned(&self, raw: &RawConfig, ctx: &mut Ctx<'_>) {
        let structural = !ctx.suppressed.is_empty();
        if self.by_header || self.undefined || structural || ctx.has_errors() {
            return;
        }
        for (i, c) in raw.classes.iter().enumerate() {
            if let Some(n) = &c.name
                && !self.assigned.contains(n)
            {
                ctx.warn(
                    &format!("classes[{i}].name"),
                    format!(
                        "class `{n}` is not assigned to any request: no frontend `class`, route `class`, `class_by.sources` or `class_by.header` gives it"
                    ),
                );
            }
        }
    }
}

/// `cidr` with its host bits cleared.
fn network(cidr: Cidr) -> Cidr {
    cidr.network()
}

#[cfg(test)]
mod tests {
    use crate::{Config, MemoryCertFiles};

    fn parse(yaml: &str) -> Config {
        match crate::parse(yaml, "t.yaml", &MemoryCertFiles::default()) {
            Ok(l) => {
                assert!(l.warnings.is_empty(), "{:?}", l.warnings);
                l.config
            }
            Err(r) => panic!("{r}"),
        }
    }

    const BASE: &str = "version: 1
classes:
  - { name: gold, priority: 0, share: 20%, max_queue_time: 10s }
  - { name: silver, priority: 5 }
  - { name: bronze, priority: 10, share: 10%, max_queue_time: 1s }
backends:
  - name: shop
    servers: [{ name: web1, address: 198.18.0.21:8080, max_connections: 100 }]
frontends:
  - name: www
    bind: [\"127.0.0.1:8080\"]
    class_by:
      header: X-Class
      sources:
        198.18.0.0/24: gold
        \"2001:2::/48\": silver
    routes:
      - { path_prefix: /batch/, backend: shop, class: bronze }
    default_backend: shop
  - name: api
    bind: [\"127.0.0.1:8081\"]
    class: silver
    default_backend: shop
";

    #[test]
    fn classes_and_defaults_land_in_the_model() {
        let c = parse(BASE);
        assert_eq!(c.classes.len(), 3);
        let gold = &c.classes[0];
        assert_eq!((gold.priority.get(), gold.share.percent()), (0, 20));
        assert_eq!(gold.max_queue_time.map(|d| d.as_millis()), Some(10_000));
        assert_eq!(
            c.classes[1].max_queue_time, None,
            "the backend's queue_timeout"
        );
        let www = &c.frontends[0];
        assert_eq!(
            www.class.as_ref().map(|n| n.as_str()),
            Some("bronze"),
            "the lowest-priority class is the default"
        );
        let by = www.class_by.as_ref().unwrap();
        assert_eq!(by.header.as_ref().map(|h| h.as_str()), Some("X-Class"));
        let sources: Vec<(String, &str)> = by
            .sources
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_str()))
            .collect();
        assert_eq!(
            sources,
            [
                ("198.18.0.0/24".to_owned(), "gold"),
                ("2001:2::/48".to_owned(), "silver")
            ]
        );
        assert_eq!(
            www.routes[0].class.as_ref().map(|n| n.as_str()),
            Some("bronze")
        );
        assert_eq!(
            c.frontends[1].class.as_ref().map(|n| n.as_str()),
            Some("silver")
        );
        // The canonical YAML carries the classes and reads back equal.
        let again = crate::parse(&c.to_yaml(), "again.yaml", &MemoryCertFiles::default())
            .unwrap()
            .config;
        assert_eq!(again, c);
    }

    #[test]
    fn without_classes_frontends_have_no_class() {
        let c = parse(
            "version: 1
backends: [{ name: b, servers: [{ name: s, address: 198.18.0.21:80 }] }]
frontends: [{ name: f, bind: [\"127.0.0.1:80\"], default_backend: b }]
",
        );
        assert!(c.classes.is_empty());
        assert_eq!(c.frontends[0].class, None);
        assert!(!c.to_yaml().contains("class"));
    }

    #[test]
    fn a_class_change_is_a_named_diff() {
        let a = parse(BASE);
        let b = parse(&BASE.replace("share: 20%", "share: 30%"));
        let changes: Vec<String> = crate::diff(&a, &b).iter().map(|c| c.to_string()).collect();
        assert_eq!(changes, ["~ classes[gold].share: 20% -> 30%"]);
        assert_ne!(
            crate::fingerprints(&a)["classes"],
            crate::fingerprints(&b)["classes"]
        );
        assert_eq!(
            crate::fingerprints(&a)["frontends"],
            crate::fingerprints(&b)["frontends"]
        );
    }
}
