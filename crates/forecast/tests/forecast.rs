//! The forecast on synthetic series with a known truth (seeded noise): a clear seasonal peak
//! crossing 70 % is found within two weeks of the true date, a flat series below the
//! threshold never crosses, outlier days do not invent a crossing, and too little history is
//! said plainly. Accuracy over many series is a benchmark (`benches/accuracy.rs`), not a test.

use tandem_forecast::synthetic::{Shape, Synthetic};
use tandem_forecast::{
    Crossing, DEFAULT_WARN_AHEAD_DAYS, Day, Form, Model, Outcome, Params, forecast,
};

/// A 3-year history ending at a random point of the year, whose next yearly peak tops out at
/// `top` while every earlier peak stayed under 70 %.
fn scenario(seed: u64, shape: Shape, form: Form, top: f64) -> Synthetic {
    let mut rng = tandem_forecast::synthetic::Rng(seed);
    let mut s = Synthetic {
        start: Day::from_ymd(2022, 1, 1)
            .unwrap()
            .plus((rng.uniform() * 365.0) as i64),
        days: 3 * 365,
        base: 0.3,
        trend: 0.1,
        amplitude: match form {
            Form::Multiplicative => 0.4,
            Form::Additive => 0.18,
        },
        peak_day: rng.uniform() * 365.0,
        shape,
        form,
        weekend: 0.15,
        noise: 0.02,
        seed,
    };
    // The truth is linear in the base: solve for the next peak's top by bisection.
    let (mut lo, mut hi) = (0.0, 1.0);
    for _ in 0..60 {
        s.base = (lo + hi) / 2.0;
        let next = (0..365)
            .map(|i| s.truth(s.origin().plus(i)))
            .fold(0.0, f64::max);
        if next < top { lo = s.base } else { hi = s.base }
    }
    s
}

fn crossing_day(o: &Outcome) -> Option<Day> {
    match &o.forecast()?.crossing {
        Crossing::At { day, .. } => Some(*day),
        Crossing::None { .. } => None,
    }
}

#[test]
fn a_clear_seasonal_peak_crossing_70_percent_is_found_within_two_weeks() {
    let params = Params::default();
    let mut checked = 0;
    for seed in 1..=6 {
        for shape in [Shape::Bump(45.0), Shape::Quarter(10.0)] {
            for form in [Form::Multiplicative, Form::Additive] {
                let s = scenario(seed, shape, form, 0.76);
                if s.crossed_in_history(0.7) {
                    continue; // not a "new" crossing; the benchmark covers those too
                }
                let truth = s.true_crossing(0.7, 365).expect("the scenario crosses");
                let samples = s.daily();
                let now = s.origin().start();
                let out = forecast(&samples, &params, now);
                let f = out.forecast().expect("three years is enough");
                assert!(matches!(f.model, Model::Seasonal { .. }), "{:?}", f.model);
                let got = crossing_day(&out).unwrap_or_else(|| {
                    panic!(
                        "seed {seed} {shape:?} {form:?}: no crossing found, truth {truth}\n{}",
                        out.render()
                    )
                });
                let err = got.since(truth).abs();
                assert!(
                    err <= 14,
                    "seed {seed} {shape:?} {form:?}: crossing {got}, truth {truth} ({err} days off)\n{}",
                    out.render()
                );
                // The expected peak is the season's, near the true top.
                assert!((f.peak.value - 0.76).abs() < 0.05, "peak {:?}", f.peak);
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "{checked} scenarios checked");
}

#[test]
fn the_band_brackets_the_crossing_and_the_output_has_the_documented_lines() {
    let s = scenario(7, Shape::Bump(45.0), Form::Multiplicative, 0.78);
    let out = forecast(&s.hourly(), &Params::default(), s.origin().start());
    let f = out.forecast().unwrap();
    let Crossing::At {
        day,
        earliest,
        latest,
        already,
    } = f.crossing.clone()
    else {
        panic!("no crossing:\n{}", out.render());
    };
    assert!(!already);
    assert!(earliest <= day && latest.is_none_or(|l| l >= day));
    let text = out.render();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("history: "), "{text}");
    assert_eq!(lines[1], format!("crossing: {day}"));
    assert!(
        lines[2].starts_with(&format!("band: {earliest} to ")),
        "{text}"
    );
    assert!(lines[2].ends_with("(80% band)"), "{text}");
    let peak = format!("peak: {} {:.3} (", f.peak.day, f.peak.value);
    assert!(lines[3].starts_with(&peak), "{text}");
}

#[test]
fn a_flat_series_below_the_threshold_never_crosses() {
    let s = Synthetic {
        start: Day::from_ymd(2023, 3, 1).unwrap(),
        days: 2 * 365,
        base: 0.45,
        trend: 0.0,
        amplitude: 0.0,
        peak_day: 0.0,
        shape: Shape::Bump(45.0),
        form: Form::Additive,
        weekend: 0.1,
        noise: 0.03,
        seed: 11,
    };
    let out = forecast(&s.daily(), &Params::default(), s.origin().start());
    let f = out.forecast().unwrap();
    assert_eq!(
        f.crossing,
        Crossing::None { earliest: None },
        "{}",
        out.render()
    );
    assert!(out.render().contains("crossing: none within 1 year"));
    assert_eq!(f.alarm(DEFAULT_WARN_AHEAD_DAYS), None);
    assert!(f.peak.value < 0.55, "{:?}", f.peak);
}

#[test]
fn outlier_days_do_not_invent_a_crossing() {
    let s = Synthetic {
        start: Day::from_ymd(2023, 3, 1).unwrap(),
        days: 2 * 365,
        base: 0.5,
        trend: 0.0,
        amplitude: 0.0,
        peak_day: 0.0,
        shape: Shape::Bump(45.0),
        form: Form::Additive,
        weekend: 0.0,
        noise: 0.02,
        seed: 5,
    };
    let mut samples = s.daily();
    // Ten days of an attack near 100 %, scattered over the last months.
    let n = samples.len();
    for k in 0..10 {
        samples[n - 1 - k * 9].1 = 0.99;
    }
    let out = forecast(&samples, &Params::default(), s.origin().start());
    assert_eq!(crossing_day(&out), None, "{}", out.render());
}

#[test]
fn too_little_history_is_said_plainly() {
    let s = Synthetic {
        start: Day::from_ymd(2025, 1, 1).unwrap(),
        days: 20,
        base: 0.5,
        trend: 0.0,
        amplitude: 0.0,
        peak_day: 0.0,
        shape: Shape::Bump(45.0),
        form: Form::Additive,
        weekend: 0.0,
        noise: 0.01,
        seed: 1,
    };
    let out = forecast(&s.daily(), &Params::default(), s.origin().start());
    assert!(out.forecast().is_none());
    assert_eq!(
        out.render(),
        "too little history: 20 days of data (2025-01-01 to 2025-01-20); a forecast needs at least 30\n"
    );
    // Data that stopped two months ago is no basis either.
    let long = Synthetic { days: 100, ..s };
    let out = forecast(
        &long.daily(),
        &Params::default(),
        long.origin().plus(60).start(),
    );
    assert!(
        out.render()
            .starts_with("too little recent history: the newest data is from 2025-04-10"),
        "{}",
        out.render()
    );
    assert!(matches!(
        forecast(&[], &Params::default(), 0),
        Outcome::TooLittle(_)
    ));
}

#[test]
fn less_than_a_year_follows_the_trend_and_says_so() {
    let s = Synthetic {
        start: Day::from_ymd(2025, 1, 1).unwrap(),
        days: 200,
        base: 0.4,
        trend: 0.4, // +0.4 per year: 0.62 after 200 days, 0.7 about 80 days later
        amplitude: 0.0,
        peak_day: 0.0,
        shape: Shape::Bump(45.0),
        form: Form::Additive,
        weekend: 0.0,
        noise: 0.01,
        seed: 3,
    };
    let out = forecast(&s.daily(), &Params::default(), s.origin().start());
    let f = out.forecast().unwrap();
    assert!(matches!(f.model, Model::TrendOnly { .. }));
    let text = out.render();
    assert!(
        text.contains(
            "note: no yearly seasonality: 200 days of history, a seasonal forecast needs 365"
        ),
        "{text}"
    );
    assert!(
        text.contains("peak: unknown (no seasonal forecast"),
        "{text}"
    );
    let truth = s.true_crossing(0.7, 365).unwrap();
    let got = crossing_day(&out).unwrap();
    assert!(got.since(truth).abs() <= 7, "{got} vs {truth}");
}

#[test]
fn an_alarm_is_raised_only_when_the_crossing_is_near() {
    let s = scenario(3, Shape::Bump(45.0), Form::Multiplicative, 0.78);
    let truth = s.true_crossing(0.7, 365).unwrap();
    // Histories ending 30 days before the true crossing, and 200 days before.
    let ending = |before: i64| {
        let h = Synthetic {
            days: truth.plus(-before).since(s.start),
            ..s
        };
        forecast(&h.daily(), &Params::default(), h.origin().start())
    };
    let (near, far) = (ending(30), ending(200));
    let near = near.forecast().unwrap();
    let far = far.forecast().unwrap();
    let alarm = near.alarm(DEFAULT_WARN_AHEAD_DAYS).expect("30 days away");
    assert!(
        alarm.starts_with("peak utilisation expected to reach 70% on "),
        "{alarm}"
    );
    let days = far.days_to_crossing().expect("a crossing 200 days ahead");
    assert!((186..=214).contains(&days), "{days} days");
    assert_eq!(far.alarm(DEFAULT_WARN_AHEAD_DAYS), None);
    let (expected, upper) = near.servers_needed(10);
    assert!(expected >= 11 && upper >= expected, "{expected} {upper}");
}
