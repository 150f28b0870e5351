//! Request classification: which SLA class a request of a frontend belongs to.
//!
//! Owns [`Classifier`] (one per frontend, built once per config load) and [`SourceRule`].
//! Pure: the caller extracts the route's class, the classifying header's value and the client
//! address; nothing here parses HTTP or reads sockets.
//!
//! Precedence, first match wins:
//! 1. the class of the route that matched (`frontends[].routes[].class`);
//! 2. the value of the classifying header (`class_by.header`), when it names a class exactly
//!    (case-sensitive, surrounding spaces and tabs ignored); an unknown or empty value is
//!    ignored, as if the header were absent;
//! 3. the longest-prefix match of the client address in `class_by.sources`; IPv4-mapped IPv6
//!    clients (`::ffff:198.18.0.1`, from a dual-stack listener) match as IPv4;
//! 4. the frontend's default class.
//!
//! The header comes from the client unless a proxy in front sets or strips it, so it can raise
//! a request's class: the operator documentation says so. Source rules are scanned linearly
//! from the longest prefix (a frontend has a handful); no allocation per request.

use std::net::IpAddr;

use crate::class::{ClassId, ClassSet};
use crate::error::BalanceError;
use crate::persist::canonical_ip;

/// "Clients in `network/prefix` belong to `class`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceRule {
    /// Network address; host bits beyond `prefix` are ignored.
    pub network: IpAddr,
    /// Prefix length: 0 to 32 for IPv4, 0 to 128 for IPv6.
    pub prefix: u8,
    /// Class of matching clients.
    pub class: ClassId,
}

/// Classifies the requests of one frontend; see the module doc for the precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classifier {
    set: ClassSet,
    default: ClassId,
    header: Option<String>,
    /// (masked network, prefix, class), longest prefix first.
    v4: Vec<(u32, u8, ClassId)>,
    v6: Vec<(u128, u8, ClassId)>,
}

fn mask4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl Classifier {
    /// A classifier over `set` with the frontend's `default` class, the classifying `header`
    /// name (if any; the caller matches names case-insensitively) and its source rules.
    /// Class ids from another set resolve to `set`'s default class; a prefix longer than the
    /// address is an error.
    pub fn new(
        set: &ClassSet,
        default: ClassId,
        header: Option<String>,
        sources: &[SourceRule],
    ) -> Result<Self, BalanceError> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for rule in sources {
            let class = set.resolve(rule.class);
            match rule.network {
                IpAddr::V4(a) if rule.prefix <= 32 => {
                    v4.push((u32::from(a) & mask4(rule.prefix), rule.prefix, class));
                }
                IpAddr::V6(a) if rule.prefix <= 128 => {
                    v6.push((u128::from(a) & mask6(rule.prefix), rule.prefix, class));
                }
                _ => {
                    return Err(BalanceError::InvalidSourcePrefix {
                        network: rule.network.to_string(),
                        prefix: rule.prefix,
                    });
                }
            }
        }
        // Stable: among equal networks the first rule given wins.
        v4.sort_by_key(|&(_, p, _)| std::cmp::Reverse(p));
        v6.sort_by_key(|&(_, p, _)| std::cmp::Reverse(p));
        Ok(Self {
            set: set.clone(),
            default: set.resolve(default),
            header,
            v4,
            v6,
        })
    }

    /// Name of the classifying header, if any: the caller passes its value to `classify`.
    pub fn header_name(&self) -> Option<&str> {
        self.header.as_deref()
    }

    /// The frontend's default class.
    pub fn default_class(&self) -> ClassId {
        self.default
    }

    /// The class of a request: `route` is the matched route's class, `header` the value of
    /// [`Classifier::header_name`] (first occurrence), `source` the client address.
    pub fn classify(
        &self,
        route: Option<ClassId>,
        header: Option<&[u8]>,
        source: IpAddr,
    ) -> ClassId {
        if let Some(class) = route {
            return self.set.resolve(class);
        }
        if self.header.is_some()
            && let Some(class) = header.and_then(|v| self.set.id_bytes(v.trim_ascii()))
        {
            return class;
        }
        self.by_source(source).unwrap_or(self.default)
    }

    /// The class of the longest source rule matching `source`, if any.
    pub fn by_source(&self, source: IpAddr) -> Option<ClassId> {
        match canonical_ip(source) {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4
                    .iter()
                    .find(|&&(net, p, _)| a & mask4(p) == net)
                    .map(|&(_, _, c)| c)
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6
                    .iter()
                    .find(|&&(net, p, _)| a & mask6(p) == net)
                    .map(|&(_, _, c)| c)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class::ClassSpec;

    fn set() -> ClassSet {
        ClassSet::new(vec![
            ClassSpec::new("gold", 0),
            ClassSpec::new("silver", 1),
            ClassSpec::new("bronze", 2),
            ClassSpec::new("internal", -1),
        ])
        .unwrap()
    }

    fn rule(set: &ClassSet, cidr: &str, class: &str) -> SourceRule {
        let (net, prefix) = cidr.split_once('/').unwrap();
        SourceRule {
            network: net.parse().unwrap(),
            prefix: prefix.parse().unwrap(),
            class: set.id(class).unwrap(),
        }
    }

    fn classifier(set: &ClassSet) -> Classifier {
        let rules = [
            rule(set, "198.18.0.0/15", "silver"),
            rule(set, "198.18.7.0/24", "gold"),
            rule(set, "198.18.7.9/32", "internal"),
            rule(set, "2001:2::/48", "silver"),
            rule(set, "2001:2:0:42::/64", "gold"),
            rule(set, "0.0.0.0/0", "bronze"),
        ];
        Classifier::new(
            set,
            set.id("bronze").unwrap(),
            Some("X-Class".into()),
            &rules,
        )
        .unwrap()
    }

    /// (route class, header value, source address, expected class).
    const CASES: &[(Option<&str>, Option<&str>, &str, &str)] = &[
        // Longest prefix, IPv4.
        (None, None, "198.18.0.1", "silver"),
        (None, None, "198.19.255.255", "silver"),
        (None, None, "198.18.7.1", "gold"),
        (None, None, "198.18.7.9", "internal"),
        (None, None, "198.18.8.0", "silver"),
        (None, None, "203.0.113.5", "bronze"),
        // IPv4-mapped IPv6 matches as IPv4.
        (None, None, "::ffff:198.18.7.1", "gold"),
        // Longest prefix, IPv6; no IPv6 default rule, so the frontend default.
        (None, None, "2001:2::1", "silver"),
        (None, None, "2001:2:0:42::1", "gold"),
        (None, None, "2001:2:0:43::1", "silver"),
        (None, None, "2001:db8::1", "bronze"),
        // Header beats source; unknown, wrongly cased or empty values fall through.
        (None, Some("gold"), "203.0.113.5", "gold"),
        (None, Some(" silver\t"), "198.18.7.1", "silver"),
        (None, Some("platinum"), "198.18.7.1", "gold"),
        (None, Some("Gold"), "203.0.113.5", "bronze"),
        (None, Some(""), "198.18.0.1", "silver"),
        // Route beats everything.
        (Some("bronze"), Some("gold"), "198.18.7.9", "bronze"),
        (Some("gold"), None, "203.0.113.5", "gold"),
    ];

    #[test]
    fn precedence_and_longest_prefix() {
        let set = set();
        let c = classifier(&set);
        for &(route, header, source, expected) in CASES {
            let got = c.classify(
                route.map(|r| set.id(r).unwrap()),
                header.map(str::as_bytes),
                source.parse().unwrap(),
            );
            assert_eq!(
                set.spec(got).name,
                expected,
                "route {route:?} header {header:?} source {source}"
            );
        }
    }

    #[test]
    fn header_is_ignored_when_not_configured() {
        let set = set();
        let c = Classifier::new(&set, set.id("silver").unwrap(), None, &[]).unwrap();
        assert_eq!(c.header_name(), None);
        let got = c.classify(None, Some(b"gold"), "198.18.0.1".parse().unwrap());
        assert_eq!(set.spec(got).name, "silver");
    }

    #[test]
    fn host_bits_are_masked_and_the_first_of_equal_rules_wins() {
        let set = set();
        let rules = [
            rule(&set, "198.18.7.77/24", "gold"),
            rule(&set, "198.18.7.0/24", "silver"),
        ];
        let c = Classifier::new(&set, set.id("bronze").unwrap(), None, &rules).unwrap();
        assert_eq!(c.by_source("198.18.7.200".parse().unwrap()), set.id("gold"));
        assert_eq!(c.by_source("198.18.8.1".parse().unwrap()), None);
    }

    #[test]
    fn zero_prefixes_match_everything_of_their_family() {
        let set = set();
        let rules = [rule(&set, "::/0", "silver")];
        let c = Classifier::new(&set, set.id("bronze").unwrap(), None, &rules).unwrap();
        assert_eq!(
            c.by_source("2001:db8::1".parse().unwrap()),
            set.id("silver")
        );
        assert_eq!(c.by_source("198.18.0.1".parse().unwrap()), None);
    }

    #[test]
    fn bad_prefixes_are_refused_and_foreign_ids_resolve_to_the_default() {
        let set = set();
        let bad = SourceRule {
            network: "198.18.0.0".parse().unwrap(),
            prefix: 33,
            class: set.id("gold").unwrap(),
        };
        assert_eq!(
            Classifier::new(&set, set.default_class(), None, &[bad]),
            Err(BalanceError::InvalidSourcePrefix {
                network: "198.18.0.0".into(),
                prefix: 33
            })
        );
        let small = ClassSet::new(vec![ClassSpec::new("only", 0)]).unwrap();
        let foreign = set.id("internal").unwrap(); // index 3, out of range for `small`
        let c = Classifier::new(&small, foreign, None, &[]).unwrap();
        assert_eq!(c.default_class(), small.default_class());
        assert_eq!(
            c.classify(Some(foreign), None, "198.18.0.1".parse().unwrap()),
            small.default_class()
        );
    }
}
