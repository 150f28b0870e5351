//! Fuzzing entry point of the configuration loader (`cargo xtask fuzz`, see docs/testing.md):
//! arbitrary bytes as a config file, through [`crate::parse`], with the invariants that must
//! hold for any input.
//!
//! Owns: [`config`] and the test replaying the checked-in corpus (`fuzz/corpus/config/`) on
//! every `cargo test`.
//! Must not change behaviour: nothing here is called by `tandem check` or the daemons.

use crate::{Diagnostic, MemoryCertFiles, diff, fingerprint, parse};

/// The certificate files that exist for the fuzzed configs (those of `examples/`).
const CERTS: [&str; 2] = ["certs/shop.pem", "certs/ok.pem"];

/// Runs `data`, a config file as read from disk, through the loader.
///
/// Invariants: nothing panics; a rejected file has at least one error; every diagnostic
/// (errors and warnings) points inside the file, at a line that exists and a column at most
/// one past that line's last character, and they come sorted; an accepted config, written
/// back with `Config::to_yaml`, loads again to an equal config with the same fingerprint and
/// no difference.
pub fn config(data: &[u8]) {
    // A file that is not UTF-8 is refused before parsing (`load`'s read_to_string).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let certs = MemoryCertFiles::new(CERTS);
    match parse(text, "fuzz.yaml", &certs) {
        Ok(loaded) => {
            assert!(loaded.warnings.iter().all(|w| !w.is_error()));
            check_positions(text, &loaded.warnings);
            let yaml = loaded.config.to_yaml();
            let again = parse(&yaml, "again.yaml", &certs).unwrap_or_else(|report| {
                panic!("a valid config written back does not load:\n{report}\n---\n{yaml}")
            });
            assert_eq!(
                again.config, loaded.config,
                "a valid config written back loads differently:\n{yaml}"
            );
            assert!(diff(&loaded.config, &again.config).is_empty());
            assert_eq!(fingerprint(&loaded.config), fingerprint(&again.config));
        }
        Err(report) => {
            assert!(report.error_count() >= 1, "rejected without an error");
            check_positions(text, &report.diagnostics);
            assert!(!report.to_string().is_empty());
        }
    }
}

/// Every diagnostic names a line of `text` and a column on it (YAML line breaks: CRLF, CR,
/// LF), and they are in file order.
fn check_positions(text: &str, diagnostics: &[Diagnostic]) {
    let lines: Vec<usize> = text
        .replace("\r\n", "\n")
        .split(['\n', '\r'])
        .map(|l| l.chars().count())
        .collect();
    for d in diagnostics {
        assert!(!d.message.is_empty(), "empty message: {d:?}");
        let line = usize::try_from(d.line).unwrap_or(usize::MAX);
        assert!(
            (1..=lines.len()).contains(&line),
            "{d}: line {} of a {}-line file",
            d.line,
            lines.len()
        );
        let width = lines[line - 1];
        assert!(
            (1..=width + 1).contains(&(d.column as usize)),
            "{d}: column {} on a line of {width} characters",
            d.column
        );
    }
    assert!(
        diagnostics
            .windows(2)
            .all(|w| (w[0].line, w[0].column) <= (w[1].line, w[1].column)),
        "diagnostics out of order"
    );
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Runs `check` on every file of `fuzz/corpus/<target>/` (at least 10) and of
    /// `fuzz/regressions/<target>/` (the inputs of fixed crashes), naming the file that fails.
    fn replay(target: &str, check: fn(&[u8])) {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
        let files = |dir: &str| -> Vec<_> {
            let dir = fuzz.join(dir).join(target);
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .map(|rd| rd.map(|e| e.expect("corpus entry").path()).collect())
                .unwrap_or_default();
            files.sort();
            files
        };
        let corpus = files("corpus");
        assert!(
            corpus.len() >= 10,
            "fuzz/corpus/{target}: {} files",
            corpus.len()
        );
        for file in corpus.iter().chain(&files("regressions")) {
            let data = std::fs::read(file).expect("corpus file");
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                panic!("{} breaks an invariant (message above)", file.display());
            }
        }
    }

    #[test]
    fn config_corpus_replays() {
        replay("config", super::config);
    }
}
