//! Data-driven diagnostics tests over `tests/data/invalid/*.yaml` and
//! `tests/data/warnings/*.yaml`.
//!
//! Each fixture starts with `# what: ...` (what is special about it) and one
//! `# expect: SEVERITY LINE:COLUMN PATH: MESSAGE` line per diagnostic it must produce.
//! The set of diagnostics must match exactly: a missing or an extra one fails.
//! Invalid fixtures must be rejected; warning fixtures must be accepted with exactly their
//! warnings.
//! `TANDEM_BLESS=1 cargo test -p tandem-config --test fixtures` rewrites the expect lines from
//! the current output (run it twice, since the header length moves line numbers); review the diff.

use std::path::{Path, PathBuf};

use tandem_config::{Diagnostic, MemoryCertFiles};

/// Fewest invalid fixtures the suite must have.
const MIN_INVALID_FIXTURES: usize = 40;

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// The certificate files that "exist" for fixtures.
fn certs() -> MemoryCertFiles {
    MemoryCertFiles::new(["certs/ok.pem"])
}

fn render(d: &Diagnostic) -> String {
    if d.path.is_empty() {
        format!("{} {}:{} {}", d.severity, d.line, d.column, d.message)
    } else {
        format!(
            "{} {}:{} {}: {}",
            d.severity, d.line, d.column, d.path, d.message
        )
    }
}

/// Runs one fixture; returns a failure description, or None when it passes.
fn check(path: &Path, must_fail: bool) -> Option<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    if !text.starts_with("# what: ") {
        return Some(format!("{name}: first line must be `# what: ...`"));
    }
    let mut expected: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(str::to_owned)
        .collect();
    let result = tandem_config::parse(&text, &name, &certs());
    let (failed, diagnostics) = match result {
        Ok(loaded) => (false, loaded.warnings),
        Err(report) => (true, report.diagnostics),
    };
    let mut actual: Vec<String> = diagnostics.iter().map(render).collect();
    if std::env::var_os("TANDEM_BLESS").is_some() {
        bless(path, &text, &actual);
    }
    expected.sort();
    actual.sort();
    let mut problems = Vec::new();
    if failed != must_fail {
        problems.push(format!(
            "expected the config to be {}, it was {}",
            if must_fail { "rejected" } else { "accepted" },
            if failed { "rejected" } else { "accepted" }
        ));
    }
    for e in &expected {
        if !actual.contains(e) {
            problems.push(format!("missing:    {e}"));
        }
    }
    for a in &actual {
        if !expected.contains(a) {
            problems.push(format!("unexpected: {a}"));
        }
    }
    (!problems.is_empty()).then(|| format!("{name}:\n  {}", problems.join("\n  ")))
}

fn bless(path: &Path, text: &str, actual: &[String]) {
    let mut lines = text.lines();
    let what = lines.next().unwrap_or_default();
    let body: Vec<&str> = lines.filter(|l| !l.starts_with("# expect: ")).collect();
    let mut out = format!("{what}\n");
    for a in actual {
        out.push_str(&format!("# expect: {a}\n"));
    }
    for l in body {
        out.push_str(l);
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

fn run(dir: &str, must_fail: bool) -> usize {
    let files = fixtures(dir);
    let failures: Vec<String> = files.iter().filter_map(|f| check(f, must_fail)).collect();
    assert!(
        failures.is_empty(),
        "{} fixture(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    files.len()
}

#[test]
fn invalid_fixtures_report_exactly_their_diagnostics() {
    let n = run("invalid", true);
    assert!(
        n >= MIN_INVALID_FIXTURES,
        "only {n} invalid fixtures, want at least {MIN_INVALID_FIXTURES}"
    );
}

#[test]
fn warning_fixtures_are_accepted_with_exactly_their_warnings() {
    let n = run("warnings", false);
    assert!(n > 0, "no warning fixtures");
}

#[test]
fn every_invalid_fixture_expects_an_error() {
    for f in fixtures("invalid") {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.lines().any(|l| l.starts_with("# expect: error ")),
            "{} has no `# expect: error` line",
            f.display()
        );
    }
}

#[test]
fn five_errors_are_all_reported_in_one_run() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/invalid/five-errors.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let report = tandem_config::parse(&text, "five-errors.yaml", &certs()).unwrap_err();
    assert_eq!(report.error_count(), 5, "{report}");
    assert!(
        report.to_string().ends_with("5 errors, 0 warnings"),
        "{report}"
    );
}
