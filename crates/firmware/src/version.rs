//! Firmware versions and their order: what counts as a downgrade.
//!
//! A version is the `version:` line of an image manifest (`manifest.txt` in a bundle, and
//! `/usr/share/tandem/manifest.txt` of the running image), as `cargo xtask image` writes it:
//! the release number `MAJOR.MINOR.PATCH` of the workspace, optionally followed by a build
//! label after `-` or `+` (`0.2.0-v2` is a second build of release 0.2.0).
//!
//! The order, "semver-like":
//! - release numbers compare numerically, component by component from the left (`0.10.0` is
//!   newer than `0.9.3`); a missing component counts as 0 (`1.2` equals `1.2.0`);
//! - the build label does not order: two builds of one release are neither older nor newer
//!   than each other (as semver treats `+build` metadata). Unlike semver, a `-label` is not a
//!   pre-release that sorts before the plain release: the image build uses it for rebuilds of
//!   a released version, so `0.2.0` → `0.2.0-v2` → `0.2.0` are all allowed;
//! - a version that does not start with a number (`unknown`, an empty manifest) cannot be
//!   ordered: installing is refused unless a downgrade is allowed.
//!
//! Owns parsing and comparing; must not read files ([`crate::Layout::running_version`] does).

use std::cmp::Ordering;
use std::fmt;

/// A parsed firmware version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The release numbers (`[0, 2, 0]`), trailing zeros removed so `1.2` = `1.2.0`.
    release: Vec<u64>,
    /// The text as written.
    text: String,
}

impl Version {
    /// Parses `text`; `None` when it does not start with a dotted release number.
    pub fn parse(text: &str) -> Option<Version> {
        let text = text.trim();
        let release_text = text.split(['-', '+']).next().unwrap_or("");
        let mut release = Vec::new();
        for part in release_text.split('.') {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            release.push(part.parse().ok()?);
        }
        while release.last() == Some(&0) {
            release.pop();
        }
        Some(Version {
            release,
            text: text.to_owned(),
        })
    }

    /// Compares the release numbers only (the build label does not order).
    pub fn cmp_release(&self, other: &Version) -> Ordering {
        self.release.cmp(&other.release)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// How a bundle's version relates to the running one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// A newer release.
    Upgrade,
    /// The same release (a reinstall or another build of it).
    SameRelease,
    /// An older release.
    Downgrade,
    /// One of the two versions cannot be ordered.
    Unordered,
}

/// How `bundle` relates to `running` (both as written in their manifests).
pub fn relation(running: &str, bundle: &str) -> Relation {
    match (Version::parse(running), Version::parse(bundle)) {
        (Some(r), Some(b)) => match b.cmp_release(&r) {
            Ordering::Greater => Relation::Upgrade,
            Ordering::Equal => Relation::SameRelease,
            Ordering::Less => Relation::Downgrade,
        },
        _ => Relation::Unordered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_of_releases_and_builds() {
        use Relation::*;
        for (running, bundle, want) in [
            ("0.1.0", "0.2.0", Upgrade),
            ("0.9.3", "0.10.0", Upgrade),
            ("1.2", "1.2.0", SameRelease),
            ("1.2.0", "1.2.1", Upgrade),
            ("2.0.0", "1.99.99", Downgrade),
            ("0.2.0", "0.1.0", Downgrade),
            ("0.10.0", "0.9.0", Downgrade),
            // Build labels (the system tier's `-v2` and `-broken` rebuilds) do not order.
            ("0.1.0", "0.1.0-v2", SameRelease),
            ("0.1.0-v2", "0.1.0-broken", SameRelease),
            ("0.1.0-v2", "0.1.0", SameRelease),
            ("0.1.0+20240101", "0.1.1", Upgrade),
            ("0.2.0-v2", "0.1.0-v9", Downgrade),
            ("unknown", "0.1.0", Unordered),
            ("0.1.0", "", Unordered),
            ("0.1.0", "v0.2.0", Unordered),
            ("0.1.0", "0..2", Unordered),
        ] {
            assert_eq!(relation(running, bundle), want, "{running} -> {bundle}");
        }
    }
}
