//! `tandem forecast` on generated CSV files: the crossing it prints for a three-year hourly
//! series with a seasonal peak is within two weeks of the truth, bad lines give their line
//! number and exit 1, too little history is said plainly.

use std::path::PathBuf;
use std::process::Command;

use tandem_forecast::Day;
use tandem_forecast::synthetic::{Shape, Synthetic};

fn csv(name: &str, samples: &[(i64, f64)]) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("tandem-forecast-{}-{name}.csv", std::process::id()));
    let mut text = String::from("timestamp,utilisation\n");
    for &(ts, v) in samples {
        let t = time_of(ts);
        text.push_str(&format!("{t},{v:.4}\n"));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// `YYYY-MM-DDTHH:MM:SSZ` for unix seconds.
fn time_of(ts: i64) -> String {
    let day = Day::of(ts);
    let s = ts - day.start();
    format!("{day}T{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(tandem_e2e::tandem_bin())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn field<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no `{key}` line in:\n{stdout}"))
}

#[test]
fn a_seasonal_peak_is_forecast_within_two_weeks() {
    let s = Synthetic {
        start: Day::from_ymd(2023, 1, 1).unwrap(),
        days: 3 * 365,
        // Peaks (a plateau from late September to late December): 0.63 last year, 0.75 next.
        base: 0.21,
        trend: 0.08,
        amplitude: 0.45,
        peak_day: 320.0, // mid-November
        shape: Shape::Quarter(10.0),
        form: tandem_forecast::Form::Multiplicative,
        weekend: 0.15,
        noise: 0.02,
        seed: 42,
    };
    assert!(!s.crossed_in_history(0.7));
    let truth = s
        .true_crossing(0.7, 365)
        .expect("the series crosses 70% next season");
    let path = csv("seasonal", &s.hourly());
    let p = path.to_str().unwrap();
    let (code, stdout, stderr) = run(&["forecast", "--input", p, "--servers", "10"]);
    assert_eq!(code, 0, "{stderr}");
    let crossing = field(&stdout, "crossing: ");
    let got = crossing.get(..10).unwrap();
    let (y, m, d) = (&got[..4], &got[5..7], &got[8..10]);
    let got = Day::from_ymd(y.parse().unwrap(), m.parse().unwrap(), d.parse().unwrap()).unwrap();
    assert!(
        got.since(truth).abs() <= 14,
        "printed {got}, truth {truth}:\n{stdout}"
    );
    assert!(field(&stdout, "band: ").contains(" to "), "{stdout}");
    let peak: Vec<&str> = field(&stdout, "peak: ").split_whitespace().collect();
    let value: f64 = peak[1].parse().unwrap();
    assert!(value > 0.7 && value < 0.9, "{stdout}");
    assert!(field(&stdout, "servers: ").starts_with("1"), "{stdout}");

    // A higher threshold is not reached this year.
    let (code, stdout, _) = run(&["forecast", "--input", p, "--threshold", "0.95"]);
    assert_eq!(code, 0);
    assert_eq!(field(&stdout, "crossing: "), "none within 1 year");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn bad_lines_are_listed_with_their_numbers_and_exit_1() {
    let path = std::env::temp_dir().join(format!("tandem-forecast-{}-bad.csv", std::process::id()));
    std::fs::write(
        &path,
        "2025-01-01T00:00:00Z,0.5\n2025-01-02T00:00:00Z;0.5\n2025-01-03T00:00:00Z,55\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let (code, stdout, stderr) = run(&["forecast", "--input", p]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "{p}:2: expected `TIMESTAMP,UTILISATION`, found 1 field"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{p}:3: utilisation `55` is above 1: give a fraction (0.7 for 70 %)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{p}: 2 bad lines, nothing forecast")),
        "{stderr}"
    );
    std::fs::remove_file(path).unwrap();
}

#[test]
fn too_little_history_is_said_plainly() {
    let samples: Vec<(i64, f64)> = (0..10)
        .map(|d| (Day(20_000 + d).start() + 3_600, 0.4))
        .collect();
    let path = csv("short", &samples);
    let (code, stdout, _) = run(&["forecast", "--input", path.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout,
        "too little history: 10 days of data (2024-10-04 to 2024-10-13); a forecast needs at least 30\n"
    );
    std::fs::remove_file(path).unwrap();
}
