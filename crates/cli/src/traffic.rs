//! `tandemctl show traffic [NAME] [--last 1h|7d|1y] [--csv]`: the recorded traffic history
//! as sparkline rows that fit an 80-column serial console, or as CSV (`--json` prints the
//! supervisor's reply, [`tandem_control::supervisor::Traffic`]).
//!
//! Owns the arguments, the chart and the CSV. Must not compute the history (the supervisor's
//! `recorder.rs` does), speak the socket itself (`client`) nor name `commands` (which calls
//! it: no import cycle).

use std::io::Write;
use std::path::Path;

use clap::Args;
use serde_json::Value;
use tandem_control::supervisor::{Request, Traffic, TrafficSeries};

use crate::client::Client;
use crate::render;

/// The widest line the chart prints.
pub const WIDTH: usize = 80;
/// Columns of the series label.
const LABEL: usize = 20;
/// Columns of each of min, max, last.
const NUMBER: usize = 7;
/// Columns of the sparkline: what is left of [`WIDTH`].
pub const SPARK: usize = WIDTH - LABEL - 1 - 3 * (NUMBER + 1);

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// `show traffic` arguments.
#[derive(Debug, Clone, Default, Args)]
pub struct TrafficArgs {
    /// For `traffic`: a frontend, backend or server (`NAME` or `BACKEND/NAME`); default every
    /// frontend and the node.
    pub name: Option<String>,
    /// For `traffic`: how far back (1h, 7d, 1y, 30m, 2w).
    #[arg(long, default_value = "1h")]
    pub last: String,
    /// For `traffic`: print `time,metric,value` CSV rows instead of the chart.
    #[arg(long)]
    pub csv: bool,
}

/// Asks the supervisor and prints the chart, the CSV or (`--json`) the reply; the exit code.
pub fn run(
    socket: &Path,
    json: bool,
    args: &TrafficArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let mut client = Client::connect(socket)?;
    let request = Request::ShowTraffic {
        target: args.name.clone(),
        last: Some(args.last.clone()),
    };
    let reply = client.call(&request)?;
    let ok = reply.get("ok") == Some(&Value::Bool(true));
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&reply)?)?;
    } else if !ok {
        write!(out, "{}", render::error(&reply))?;
    } else {
        let traffic: Traffic = serde_json::from_value(reply)?;
        if args.csv {
            write!(out, "{}", csv(&traffic))?;
        } else {
            write!(out, "{}", chart(&traffic, &args.last))?;
        }
    }
    Ok(if ok { 0 } else { 1 })
}

/// `1.2k`, `35`, `0.25`, `4.1M`: at most [`NUMBER`] columns.
fn number(v: f64) -> String {
    let a = v.abs();
    let (x, unit) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    if unit.is_empty() && x.fract() != 0.0 && a < 100.0 {
        format!("{x:.2}")
    } else if unit.is_empty() {
        format!("{x:.0}")
    } else {
        format!("{x:.1}{unit}")
    }
}

/// The series' `avg` values resampled to at most `width` columns (mean per column); `None`
/// where a column has no point. Columns span the range evenly, so gaps show.
fn columns(s: &TrafficSeries, from: i64, to: i64, width: usize) -> Vec<Option<f64>> {
    let span = (to - from).max(1) as f64;
    let mut sums = vec![(0.0, 0u32); width];
    for p in &s.points {
        let i = (((p.ts - from) as f64 / span) * width as f64).floor();
        let i = (i.max(0.0) as usize).min(width - 1);
        sums[i].0 += p.avg;
        sums[i].1 += 1;
    }
    sums.into_iter()
        .map(|(sum, n)| (n > 0).then(|| sum / f64::from(n)))
        .collect()
}

/// One sparkline: each value scaled between `lo` and `hi` onto the eight bars; a gap is a
/// space; a flat non-zero series sits in the middle, a flat zero on the floor.
pub fn sparkline(values: &[Option<f64>]) -> String {
    let known: Vec<f64> = values.iter().flatten().copied().collect();
    let lo = known.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = known.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    values
        .iter()
        .map(|v| match v {
            None => ' ',
            Some(v) if hi > lo => {
                let i = ((v - lo) / (hi - lo) * 7.0).round() as usize;
                BARS[i.min(7)]
            }
            Some(v) if *v != 0.0 => BARS[3],
            Some(_) => BARS[0],
        })
        .collect()
}

/// The entity part of a series name (`frontend/web`, `server/app/web1`).
fn entity(name: &str) -> &str {
    name.rsplit_once('/').map_or(name, |(e, _)| e)
}

/// The chart: a title, then per entity a heading and one row per metric (label, sparkline,
/// min, max, last); every line at most [`WIDTH`] columns.
pub fn chart(t: &Traffic, last: &str) -> String {
    let mut out = String::new();
    let what = t.target.as_deref().unwrap_or("all frontends and the node");
    out.push_str(&format!(
        "traffic of {what}, last {last}, {}s per point ({} archive)\n",
        t.step_s.unwrap_or(0),
        t.resolution.as_deref().unwrap_or("-"),
    ));
    let (from, to) = (t.from.unwrap_or(0), t.to.unwrap_or(0));
    if from > 0 {
        out.push_str(&format!(
            "from {} to {}\n",
            render::utc(from as u64 * 1000),
            render::utc(to as u64 * 1000)
        ));
    }
    if t.series.iter().all(|s| s.points.is_empty()) {
        out.push_str(
            "no traffic recorded in this range yet (the history is sampled every 10 s while the proxy runs)\n",
        );
        return out;
    }
    let mut current = "";
    for s in &t.series {
        if s.points.is_empty() {
            continue;
        }
        let e = entity(&s.name);
        if e != current {
            current = e;
            let heading: String = e.chars().take(LABEL + 1 + SPARK).collect();
            out.push_str(&format!(
                "{heading:<w$} {:>n$} {:>n$} {:>n$}\n",
                "min",
                "max",
                "last",
                w = LABEL + 1 + SPARK,
                n = NUMBER
            ));
        }
        let values: Vec<f64> = s.points.iter().map(|p| p.avg).collect();
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = s
            .points
            .iter()
            .map(|p| p.max)
            .fold(f64::NEG_INFINITY, f64::max);
        let latest = s.points.last().map_or(0.0, |p| p.last);
        let mut label: String = format!(" {}", s.metric).chars().take(LABEL).collect();
        if s.metric.len() + 1 > LABEL {
            label.pop();
            label.push('…');
        }
        out.push_str(&format!(
            "{label:<w$} {} {:>n$} {:>n$} {:>n$}\n",
            sparkline(&columns(s, from, to, SPARK)),
            number(min),
            number(max),
            number(latest),
            w = LABEL,
            n = NUMBER
        ));
    }
    out
}

/// `time,metric,value` rows (RFC 3339 UTC time, the full series name, the mean).
pub fn csv(t: &Traffic) -> String {
    let mut out = String::from("time,metric,value\n");
    for s in &t.series {
        for p in &s.points {
            let time = render::utc(p.ts.max(0) as u64 * 1000).replace(' ', "T");
            out.push_str(&format!("{time},{},{}\n", s.name, p.avg));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_control::supervisor::TrafficPoint;

    fn series(name: &str, values: &[f64], from: i64, step: i64) -> TrafficSeries {
        TrafficSeries {
            name: name.into(),
            metric: name.rsplit('/').next().unwrap().into(),
            points: values
                .iter()
                .enumerate()
                .map(|(i, &v)| TrafficPoint {
                    ts: from + i as i64 * step,
                    avg: v,
                    max: v * 2.0,
                    last: v,
                })
                .collect(),
        }
    }

    fn traffic(series: Vec<TrafficSeries>) -> Traffic {
        Traffic {
            target: Some("web".into()),
            from: Some(1_767_225_600),
            to: Some(1_767_225_600 + 3600),
            resolution: Some("10s".into()),
            step_s: Some(50),
            series,
        }
    }

    #[test]
    fn the_chart_fits_80_columns_and_scales_each_series() {
        let ramp: Vec<f64> = (0..72).map(f64::from).collect();
        let t = traffic(vec![
            series("frontend/web/requests_per_s", &ramp, 1_767_225_600, 50),
            series(
                "frontend/web/responses_5xx_per_s",
                &[0.0; 72],
                1_767_225_600,
                50,
            ),
            series(
                "server/a-very-long-backend-name/web1/bytes_out_per_s",
                &[123_456_789.0; 72],
                1_767_225_600,
                50,
            ),
        ]);
        let text = chart(&t, "1h");
        for line in text.lines() {
            assert!(
                line.chars().count() <= WIDTH,
                "{} > 80: {line}",
                line.chars().count()
            );
        }
        let row = text.lines().find(|l| l.contains("requests_per_s")).unwrap();
        assert!(row.contains('▁') && row.contains('█'), "{row}");
        let spark: String = row.chars().skip(LABEL + 1).take(SPARK).collect();
        assert!(spark.starts_with('▁') && spark.ends_with('█'), "{spark}");
        assert!(row.ends_with("      0     142      71"), "{row}");
        let flat = text.lines().find(|l| l.contains("5xx")).unwrap();
        assert!(!flat.contains('█'));
        assert!(text.contains("123.5M"), "{text}");
        assert!(text.contains("server/a-very-long-backend-name/web1"));
    }

    #[test]
    fn an_empty_history_says_so_and_gaps_are_blank() {
        let t = traffic(vec![series("frontend/web/requests_per_s", &[], 0, 10)]);
        assert!(chart(&t, "1h").contains("no traffic recorded"));
        assert!(chart(&traffic(vec![]), "7d").contains("no traffic recorded"));
        assert_eq!(sparkline(&[Some(1.0), None, Some(3.0)]), "▁ █");
        assert_eq!(sparkline(&[Some(5.0), Some(5.0)]), "▄▄");
    }

    #[test]
    fn csv_has_one_row_per_point() {
        let t = traffic(vec![series(
            "frontend/web/requests_per_s",
            &[1.5, 2.0],
            1_767_225_600,
            50,
        )]);
        assert_eq!(
            csv(&t),
            "time,metric,value\n2026-01-01T00:00:00Z,frontend/web/requests_per_s,1.5\n2026-01-01T00:00:50Z,frontend/web/requests_per_s,2\n"
        );
    }
}
