//! The offline input format of `tandem forecast`: one sample per line,
//! `RFC3339 timestamp,utilisation` (a fraction, 0 to 1). Empty lines and `#` comments are
//! skipped, and so is a first line `timestamp,utilisation` (a spreadsheet's header).
//!
//! Owns parsing and its diagnostics (every bad line, with its number and what is wrong);
//! pure, the caller reads the file. Must not forecast.

use crate::day::parse_rfc3339;

/// A bad line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, lowercase.
    pub message: String,
}

/// The samples of `text` as `(unix seconds, utilisation)`, or every bad line.
pub fn parse(text: &str) -> Result<Vec<(i64, f64)>, Vec<LineError>> {
    let mut samples = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if i == 0 {
            let l = line.to_ascii_lowercase().replace(' ', "");
            if l == "timestamp,utilisation" || l == "timestamp,utilization" {
                continue;
            }
        }
        match parse_line(line) {
            Ok(s) => samples.push(s),
            Err(message) => errors.push(LineError {
                line: i + 1,
                message,
            }),
        }
    }
    if errors.is_empty() && samples.is_empty() {
        errors.push(LineError {
            line: 0,
            message: "no samples: expected lines like `2025-11-28T18:30:00Z,0.42`".into(),
        });
    }
    if errors.is_empty() {
        Ok(samples)
    } else {
        Err(errors)
    }
}

fn parse_line(line: &str) -> Result<(i64, f64), String> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let [ts, value] = fields.as_slice() else {
        return Err(format!(
            "expected `TIMESTAMP,UTILISATION`, found {} field{}: `{line}`",
            fields.len(),
            if fields.len() == 1 { "" } else { "s" }
        ));
    };
    let ts = parse_rfc3339(ts).map_err(|e| {
        format!("bad timestamp `{ts}` ({e}): expected RFC 3339 like 2025-11-28T18:30:00Z")
    })?;
    let v: f64 = value
        .parse()
        .map_err(|_| format!("bad utilisation `{value}`: expected a number from 0 to 1"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("utilisation `{value}` is not a number from 0 to 1"));
    }
    if v > 1.0 {
        return Err(format!(
            "utilisation `{value}` is above 1: give a fraction (0.7 for 70 %)"
        ));
    }
    Ok((ts, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_lines_comments_and_header() {
        let text = "timestamp,utilisation\n# a comment\n\n2025-01-01T00:00:00Z, 0.5\n2025-01-01T01:00:00+01:00,0\n";
        assert_eq!(
            parse(text),
            Ok(vec![(1_735_689_600, 0.5), (1_735_689_600, 0.0)])
        );
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let text = "2025-01-01T00:00:00Z,0.5\n2025-01-01,0.5\n2025-01-01T00:00:00Z,70\n2025-01-01T00:00:00Z\n2025-01-01T00:00:00Z,abc\n";
        let e = parse(text).unwrap_err();
        let lines: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[0].starts_with("line 2: bad timestamp `2025-01-01`"),
            "{}",
            lines[0]
        );
        assert_eq!(
            lines[1],
            "line 3: utilisation `70` is above 1: give a fraction (0.7 for 70 %)"
        );
        assert_eq!(
            lines[2],
            "line 4: expected `TIMESTAMP,UTILISATION`, found 1 field: `2025-01-01T00:00:00Z`"
        );
        assert_eq!(
            lines[3],
            "line 5: bad utilisation `abc`: expected a number from 0 to 1"
        );
        assert!(
            parse("\n# nothing\n").unwrap_err()[0]
                .message
                .starts_with("no samples")
        );
    }
}
