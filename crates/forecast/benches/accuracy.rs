//! Accuracy of the forecast over many synthetic series (a benchmark, not a test: it prints
//! figures and asserts nothing). Each series has a trend, a yearly peak (a smooth bump or a
//! one-quarter plateau, multiplicative or additive), a weekend dip and Gaussian noise; its
//! next peak tops out between 72 % and 82 % while every earlier one stayed under 70 %, so the
//! true crossing of 70 % is known. Flat series whose peaks stay under 60 % measure false
//! crossings. Run with `cargo bench -p tandem-forecast --bench accuracy`
//! (`FORECAST_BENCH_SEEDS=<n>` series per cell, default 8).
//!
//! Owns nothing but this measurement; the figures are quoted in docs/monitoring.md.

use std::time::Instant;

use tandem_forecast::synthetic::{Rng, Shape, Synthetic};
use tandem_forecast::{Crossing, Day, Form, Params, forecast};

#[derive(Default)]
struct Tally {
    series: usize,
    found: usize,
    errors: Vec<i64>,
    in_band: usize,
}

impl Tally {
    fn add(&mut self, truth: Day, got: &Crossing, origin: Day) {
        self.series += 1;
        if let Crossing::At {
            day,
            earliest,
            latest,
            ..
        } = got
        {
            self.found += 1;
            self.errors.push(day.since(truth));
            let hi = latest.unwrap_or(origin.plus(365));
            if *earliest <= truth && truth <= hi {
                self.in_band += 1;
            }
        }
    }

    fn row(&self, label: &str) -> String {
        let mut abs: Vec<i64> = self.errors.iter().map(|e| e.abs()).collect();
        abs.sort_unstable();
        let pct = |n: usize| 100.0 * n as f64 / self.series.max(1) as f64;
        let within = |d: i64| pct(abs.iter().filter(|&&e| e <= d).count());
        let q = |p: f64| {
            abs.get(((abs.len() as f64 * p) as usize).min(abs.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        let bias = if self.errors.is_empty() {
            0.0
        } else {
            self.errors.iter().sum::<i64>() as f64 / self.errors.len() as f64
        };
        format!(
            "| {label} | {} | {:.0}% | {:.0}% | {:.0}% | {} | {} | {bias:+.1} | {:.0}% |",
            self.series,
            within(7),
            within(14),
            within(30),
            q(0.5),
            q(0.9),
            pct(self.in_band)
        )
    }
}

fn main() {
    let seeds: u64 = std::env::var("FORECAST_BENCH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let params = Params::default();
    let started = Instant::now();
    let mut by_noise: Vec<(f64, Tally)> = [0.01, 0.03, 0.05].map(|n| (n, Tally::default())).into();
    let mut by_shape: Vec<(&str, Tally)> = vec![
        ("smooth bump, proportional", Tally::default()),
        ("smooth bump, additive", Tally::default()),
        ("one-quarter plateau, proportional", Tally::default()),
        ("one-quarter plateau, additive", Tally::default()),
    ];
    let mut by_years: Vec<(i64, Tally)> = vec![(2, Tally::default()), (3, Tally::default())];
    let mut all = Tally::default();
    let mut skipped = 0;
    let mut forecasts = 0;
    let mut seed = 0u64;
    for (si, shape) in [Shape::Bump(45.0), Shape::Quarter(10.0)]
        .into_iter()
        .enumerate()
    {
        for (fi, form) in [Form::Multiplicative, Form::Additive]
            .into_iter()
            .enumerate()
        {
            for noise in [0.01, 0.03, 0.05] {
                for trend in [0.05, 0.10] {
                    for years in [2, 3] {
                        for _ in 0..seeds {
                            seed += 1;
                            let mut rng = Rng(seed * 7919);
                            let top = 0.72 + 0.10 * rng.uniform();
                            let mut s = Synthetic {
                                start: Day::from_ymd(2020, 1, 1)
                                    .unwrap()
                                    .plus((rng.uniform() * 365.0) as i64),
                                days: years * 365,
                                base: 0.3,
                                trend,
                                amplitude: match form {
                                    Form::Multiplicative => 0.3 + 0.2 * rng.uniform(),
                                    Form::Additive => 0.12 + 0.1 * rng.uniform(),
                                },
                                peak_day: rng.uniform() * 365.0,
                                shape,
                                form,
                                weekend: 0.15,
                                noise,
                                seed,
                            };
                            let (mut lo, mut hi) = (0.0, 1.0);
                            for _ in 0..50 {
                                s.base = (lo + hi) / 2.0;
                                let next = (0..365)
                                    .map(|i| s.truth(s.origin().plus(i)))
                                    .fold(0.0, f64::max);
                                if next < top { lo = s.base } else { hi = s.base }
                            }
                            if s.crossed_in_history(0.7) {
                                skipped += 1;
                                continue;
                            }
                            let Some(truth) = s.true_crossing(0.7, 365) else {
                                skipped += 1;
                                continue;
                            };
                            let out = forecast(&s.daily(), &params, s.origin().start());
                            forecasts += 1;
                            let Some(f) = out.forecast() else { continue };
                            let origin = f.origin;
                            all.add(truth, &f.crossing, origin);
                            by_noise
                                .iter_mut()
                                .find(|(n, _)| *n == noise)
                                .unwrap()
                                .1
                                .add(truth, &f.crossing, origin);
                            by_shape[si * 2 + fi].1.add(truth, &f.crossing, origin);
                            by_years
                                .iter_mut()
                                .find(|(y, _)| *y == years)
                                .unwrap()
                                .1
                                .add(truth, &f.crossing, origin);
                        }
                    }
                }
            }
        }
    }
    // Flat series: peaks under 60 %, no trend: any crossing is false.
    let mut flat = 0;
    let mut false_crossings = 0;
    for k in 0..(seeds * 12) {
        let mut rng = Rng(1_000_003 * (k + 1));
        let s = Synthetic {
            start: Day::from_ymd(2021, 1, 1)
                .unwrap()
                .plus((rng.uniform() * 365.0) as i64),
            days: 2 * 365 + (rng.uniform() * 365.0) as i64,
            base: 0.3 + 0.1 * rng.uniform(),
            trend: 0.0,
            amplitude: 0.3 * rng.uniform(),
            peak_day: rng.uniform() * 365.0,
            shape: Shape::Bump(45.0),
            form: Form::Multiplicative,
            weekend: 0.15,
            noise: 0.01 + 0.04 * rng.uniform(),
            seed: k,
        };
        if (0..365).any(|i| s.truth(s.origin().plus(i)) >= 0.6) {
            continue;
        }
        flat += 1;
        forecasts += 1;
        let out = forecast(&s.daily(), &params, s.origin().start());
        if matches!(
            out.forecast().map(|f| &f.crossing),
            Some(Crossing::At { .. })
        ) {
            false_crossings += 1;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "| series | n | within 7 d | within 14 d | within 30 d | median abs err (d) | p90 abs err (d) | mean err (d) | truth in 80% band |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!("{}", all.row("all"));
    for (n, t) in &by_noise {
        println!("{}", t.row(&format!("noise sd {n}")));
    }
    for (label, t) in &by_shape {
        println!("{}", t.row(label));
    }
    for (y, t) in &by_years {
        println!("{}", t.row(&format!("{y} years of history")));
    }
    println!();
    println!(
        "crossings missed (none predicted within a year): {} of {}",
        all.series - all.found,
        all.series
    );
    println!("flat series under 60%: {false_crossings} false crossings of {flat}");
    println!("scenarios skipped (already over 70% in history): {skipped}");
    println!(
        "{forecasts} forecasts in {:.1} s ({:.1} ms each)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3 / forecasts.max(1) as f64
    );
}
