//! Configuration model of the Tandem appliance: parse, validate, serialize.
//!
//! One YAML file, identical on both nodes, describes the cluster, the VRRP instances, the
//! frontends and the backends.
//! [`load`] and [`parse`] turn it into a [`Config`] whose types make invalid states
//! unrepresentable, or into a [`Report`] listing every problem with file, line, column and key
//! path.
//! The proxy, the VRRP daemon and config sync consume [`Config`]; they never see raw YAML.
//!
//! # Pipeline
//!
//! 1. `yaml`: `saphyr-parser` events become a small tree where every node has a position.
//! 2. `de`: a serde `Deserializer` over that tree fills the raw structs of `raw` (the file
//!    shape); on an error it records the innermost node's path and position, prunes that node
//!    and retries, so every structural error (unknown key, wrong type, bad duration) is found
//!    in one call.
//! 3. `validate`: required keys, defaults and cross-references, located through a key-path
//!    index of the tree; builds the typed `model`.
//!
//! # Why not read with `serde_norway` directly
//!
//! `serde_norway` (the maintained `serde_yaml` fork the project uses) stops at the first error
//! and gives values no positions, so it cannot report all errors, nor point a semantic error
//! such as "backend `api` is not defined" at its line.
//! Reading therefore goes through the spanned tree; `serde_norway` writes YAML
//! ([`Config::to_yaml`]), where its emitter and quoting rules are exactly what we want.
//! The raw structs are ordinary serde types, so `serde_norway::from_str::<RawConfig>` also
//! reads a file (without positions), which tests use to cross-check the two readers.
//!
//! # Paths
//!
//! Relative certificate and CA paths are relative to the directory of the config file
//! ([`resolve_relative`]); the model keeps them as written, so both nodes hold equal configs.
//!
//! This crate does no network IO and starts no tasks; its only IO is reading the config file in
//! [`load`] and checking certificate files through [`CertFiles`].

mod certs;
mod classes;
mod de;
mod diag;
pub mod diff;
#[doc(hidden)]
pub mod fuzz;
mod model;
mod network;
pub mod raw;
mod validate;
mod values;
mod yaml;

use std::path::{Path, PathBuf};

pub use certs::{CertFiles, FileError, FsCertFiles, MemoryCertFiles};
pub use classes::{ClassPriority, ClassValueError, Share};
pub use diag::{Diagnostic, Report, Severity};
pub use diff::{Change, ChangeKind, Fingerprint, diff, fingerprint, fingerprints};
pub use model::*;
pub use network::BondMode;
pub use raw::{
    APPLIANCE_NOFILE, FD_RESERVE, RUN_DIR, RawConfig, SUPPORTED_VERSION, file_descriptors_needed,
};
pub use validate::run_dir_socket;
pub use values::{
    Balance, CheckCount, Cidr, Count, Duration, Endpoint, HeaderName, Host, InterfaceName, Mtu,
    Name, Port, Priority, PriorityDelta, Rate, StatusRange, ValueError, VlanId, Vrid, Weight,
};

/// A valid configuration and the warnings found while checking it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Warnings (never errors), in file order.
    pub warnings: Vec<Diagnostic>,
}

/// Reads and checks the config file at `path`; certificate files are looked up on disk,
/// relative to the file's directory.
pub fn load(path: &Path) -> Result<Loaded, Report> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Report {
        diagnostics: vec![Diagnostic {
            severity: Severity::Error,
            origin: origin.clone(),
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("cannot read the configuration file: {e}"),
        }],
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&text, &origin, &FsCertFiles { base })
}

/// Checks the configuration `text`; `origin` names it in diagnostics (usually the file name)
/// and `certs` says which certificate files exist.
pub fn parse(text: &str, origin: &str, certs: &dyn CertFiles) -> Result<Loaded, Report> {
    let mut diagnostics = Vec::new();
    let mut push = |severity, path: String, pos: yaml::Pos, message: String| {
        diagnostics.push(Diagnostic {
            severity,
            origin: origin.to_owned(),
            line: pos.line,
            column: pos.column,
            path,
            message,
        });
    };
    let config = match yaml::parse(text) {
        Err(problems) => {
            for p in problems {
                push(Severity::Error, p.path, p.pos, p.message);
            }
            None
        }
        Ok((mut root, problems)) => {
            for p in problems {
                push(Severity::Error, p.path, p.pos, p.message);
            }
            let (raw, structural) = de::deserialize_pruning::<RawConfig>(&mut root);
            let suppressed: Vec<String> = structural.iter().map(|s| s.path.clone()).collect();
            for s in structural {
                push(Severity::Error, s.path, s.pos, s.message);
            }
            raw.and_then(|raw| {
                let index = de::span_index(&root);
                let mut ctx = validate::Ctx::new(&index, &suppressed, certs);
                let config = validate::validate(&raw, &mut ctx);
                for p in ctx.problems {
                    push(p.severity, p.path, p.pos, p.message);
                }
                config
            })
        }
    };
    diagnostics.sort_by_key(|d| (d.line, d.column));
    match config {
        Some(config) if !diagnostics.iter().any(Diagnostic::is_error) => Ok(Loaded {
            config,
            warnings: diagnostics,
        }),
        _ => Err(Report { diagnostics }),
    }
}

/// `path` as the proxy should open it: relative paths are taken from the directory of
/// `config_file`.
pub fn resolve_relative(config_file: &Path, path: &Path) -> PathBuf {
    match config_file.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

/// The JSON Schema of the file, for editors (`tandem schema`).
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(RawConfig);
    serde_json::to_value(schema).unwrap_or_default()
}
