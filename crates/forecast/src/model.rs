//! The fitted model of a backend's daily peak utilisation:
//!
//! ```text
//! multiplicative: peak(d) = (a + b·t) · (1 + S(d)) · (1 + W(d))
//! additive:       peak(d) = (a + b·t) + S(d) + W(d)
//! ```
//!
//! `t` is in years from the forecast origin; `S` is the yearly profile, 52 weekly knots around
//! the year joined by straight lines (so a one-quarter peak with steep edges is followed to
//! within a week); `W` is the weekday effect (7 values). Both forms are fitted and the one with
//! the smaller absolute residuals is kept: traffic seasonality is usually proportional to the
//! traffic (multiplicative), but not always.
//!
//! Fit: weighted least squares on all 61 parameters at once (Gauss-Newton steps for the
//! multiplicative form, one exact step for the additive one), with Huber weights recomputed
//! from the residuals (robust to outlier days: an attack, an outage). A light smoothness
//! penalty on the yearly knots fills weeks without data from their neighbours; the
//! prediction's standard deviation comes from the inverse of the same normal matrix (delta
//! method). A 61x61 system solved by Gaussian elimination: no dependency beyond std.
//!
//! Owns the fit and the prediction with its standard deviation; pure (no clock, no IO).
//! Must not decide thresholds or wording: see [`crate::forecast`].

use crate::day::Day;

/// Knots of the yearly profile (weekly).
pub const KNOTS: usize = 52;
/// Mean length of a year in days (Gregorian).
pub const YEAR_DAYS: f64 = 365.2425;
/// Huber constant, in robust standard deviations.
const HUBER_K: f64 = 1.345;
/// Alternating least squares rounds at most.
const ROUNDS: usize = 40;

/// The reduction every forecast starts from: the maximum of each UTC day (capacity is about
/// peaks), as `(day, peak)` in day order. Non-finite values are dropped.
pub fn daily_peaks(samples: &[(i64, f64)]) -> Vec<(Day, f64)> {
    let mut by_day = std::collections::BTreeMap::<Day, f64>::new();
    for &(ts, v) in samples {
        if v.is_finite() {
            let e = by_day.entry(Day::of(ts)).or_insert(v);
            *e = e.max(v);
        }
    }
    by_day.into_iter().collect()
}

/// How the seasonality combines with the trend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    /// Seasonal swings proportional to the level.
    Multiplicative,
    /// Seasonal swings of a fixed size.
    Additive,
}

/// A fitted model.
#[derive(Debug, Clone)]
pub struct Fit {
    /// The form.
    pub form: Form,
    origin: Day,
    /// Parameters: `a`, `b`, then the yearly knots (if seasonal), then the 7 weekday values
    /// (if at least four weeks of data).
    theta: Vec<f64>,
    seasonal: bool,
    weekly: bool,
    /// Inverse of the penalised normal matrix: times σ² the covariance of the parameters.
    inverse: Vec<Vec<f64>>,
    /// Robust standard deviation of the residuals (daily peak noise).
    pub sigma: f64,
    /// Sum of absolute residuals (to choose between forms).
    pub abs_residuals: f64,
}

fn years(d: Day, origin: Day) -> f64 {
    d.since(origin) as f64 / YEAR_DAYS
}

/// The two knots around day `d` and the weight of the second.
fn knots(d: Day) -> (usize, usize, f64) {
    let x = (d.0 as f64 / YEAR_DAYS).rem_euclid(1.0) * KNOTS as f64 - 0.5;
    let f = x.floor();
    let i = (f as i64).rem_euclid(KNOTS as i64) as usize;
    (i, (i + 1) % KNOTS, x - f)
}

/// Which knots hold data: the fraction of the year covered.
pub fn coverage(days: &[Day]) -> f64 {
    let mut seen = [false; KNOTS];
    for &d in days {
        let (i, j, f) = knots(d);
        seen[if f < 0.5 { i } else { j }] = true;
    }
    seen.iter().filter(|&&s| s).count() as f64 / KNOTS as f64
}

impl Fit {
    fn season_index(&self) -> usize {
        2
    }

    fn week_index(&self) -> usize {
        2 + if self.seasonal { KNOTS } else { 0 }
    }

    /// The trend level on day `d`.
    pub fn level(&self, d: Day) -> f64 {
        self.theta[0] + self.theta[1] * years(d, self.origin)
    }

    /// The trend, in utilisation per year.
    pub fn slope_per_year(&self) -> f64 {
        self.theta[1]
    }

    fn season_at(&self, d: Day) -> f64 {
        if !self.seasonal {
            return 0.0;
        }
        let (i, j, f) = knots(d);
        let s = &self.theta[self.season_index()..];
        s[i] * (1.0 - f) + s[j] * f
    }

    fn week_at(&self, d: Day) -> f64 {
        if self.weekly {
            self.theta[self.week_index() + d.weekday()]
        } else {
            0.0
        }
    }

    /// The expected daily peak on day `d`.
    pub fn predict(&self, d: Day) -> f64 {
        let (l, s, w) = (self.level(d), self.season_at(d), self.week_at(d));
        match self.form {
            Form::Multiplicative => l * (1.0 + s) * (1.0 + w),
            Form::Additive => l + s + w,
        }
    }

    /// The derivative of [`Fit::predict`] at `d` with respect to each parameter, as
    /// `(index, value)` pairs.
    fn gradient(&self, d: Day) -> Vec<(usize, f64)> {
        let t = years(d, self.origin);
        let (l, s, w) = (self.level(d), self.season_at(d), self.week_at(d));
        let (gl, gs, gw) = match self.form {
            Form::Multiplicative => ((1.0 + s) * (1.0 + w), l * (1.0 + w), l * (1.0 + s)),
            Form::Additive => (1.0, 1.0, 1.0),
        };
        let mut g = vec![(0, gl), (1, gl * t)];
        if self.seasonal {
            let (i, j, f) = knots(d);
            g.push((self.season_index() + i, gs * (1.0 - f)));
            g.push((self.season_index() + j, gs * f));
        }
        if self.weekly {
            g.push((self.week_index() + d.weekday(), gw));
        }
        g
    }

    /// Standard deviation of a daily peak on day `d` around [`Fit::predict`]: the residual
    /// noise and the uncertainty of the fitted parameters (trend extrapolated to `d`,
    /// profile, weekday), by the delta method.
    pub fn sd(&self, d: Day) -> f64 {
        let g = self.gradient(d);
        let mut q = 0.0;
        for &(i, gi) in &g {
            for &(j, gj) in &g {
                q += gi * self.inverse[i][j] * gj;
            }
        }
        self.sigma * (1.0 + q.max(0.0)).sqrt()
    }
}

/// Fits `form` to daily peaks `data` (day order), with the yearly profile if `seasonal`:
/// iteratively reweighted (Huber) Gauss-Newton on all parameters at once, each step one
/// penalised weighted least-squares system (exact in one step for the additive form).
pub fn fit(data: &[(Day, f64)], origin: Day, form: Form, seasonal: bool) -> Fit {
    let n = data.len();
    let weekly = n >= 28;
    let p = 2 + if seasonal { KNOTS } else { 0 } + if weekly { 7 } else { 0 };
    let mean = data.iter().map(|d| d.1).sum::<f64>() / n.max(1) as f64;
    let mut fit = Fit {
        form,
        origin,
        theta: {
            let mut t = vec![0.0; p];
            t[0] = mean;
            t
        },
        seasonal,
        weekly,
        inverse: vec![vec![0.0; p]; p],
        sigma: 0.0,
        abs_residuals: 0.0,
    };
    let mut w = vec![1.0; n];
    for round in 0..ROUNDS {
        let (mut ata, mut atr) = normal_equations(&fit, data, &w);
        penalise(&fit, &mut ata, &mut atr);
        let Some(step) = solve(ata, atr) else {
            break;
        };
        // Gauss-Newton step, halved while it makes the weighted fit worse (the
        // multiplicative form is not linear in its parameters).
        let before = weighted_sse(&fit, data, &w);
        if step.iter().all(|s| s.abs() < 1e-12) && round > 2 {
            break;
        }
        let mut scale = 1.0;
        let mut next = fit.clone();
        for _ in 0..20 {
            for (k, s) in step.iter().enumerate() {
                next.theta[k] = fit.theta[k] + scale * s;
            }
            let after = weighted_sse(&next, data, &w);
            if after <= before * (1.0 + 1e-9) + 1e-15 {
                break;
            }
            scale /= 2.0;
        }
        let moved = step.iter().map(|s| (s * scale).abs()).fold(0.0, f64::max);
        fit = next;
        let res: Vec<f64> = data.iter().map(|&(d, y)| y - fit.predict(d)).collect();
        fit.sigma = robust_sigma(&res).max(1e-4);
        fit.abs_residuals = res.iter().map(|r| r.abs()).sum();
        let lim = HUBER_K * fit.sigma;
        for (wi, r) in w.iter_mut().zip(&res) {
            *wi = if r.abs() <= lim { 1.0 } else { lim / r.abs() };
        }
        if round > 2 && moved < 1e-9 {
            break;
        }
    }
    let (mut ata, mut atr) = normal_equations(&fit, data, &w);
    penalise(&fit, &mut ata, &mut atr);
    fit.inverse = invert(ata).unwrap_or_else(|| vec![vec![0.0; p]; p]);
    fit
}

/// `JᵀWJ` and `JᵀW r` at the current parameters.
fn normal_equations(fit: &Fit, data: &[(Day, f64)], w: &[f64]) -> (Vec<Vec<f64>>, Vec<f64>) {
    let p = fit.theta.len();
    let mut ata = vec![vec![0.0; p]; p];
    let mut atr = vec![0.0; p];
    for (&(d, y), &wi) in data.iter().zip(w) {
        let r = y - fit.predict(d);
        let g = fit.gradient(d);
        for &(i, gi) in &g {
            atr[i] += wi * gi * r;
            for &(j, gj) in &g {
                ata[i][j] += wi * gi * gj;
            }
        }
    }
    (ata, atr)
}

/// Adds the penalties on the parameters (not on the step): a light first-difference
/// smoothness around the yearly ring (fills weeks without data from their neighbours), and
/// zero means for the yearly and weekday profiles (the level belongs to the trend).
fn penalise(fit: &Fit, ata: &mut [Vec<f64>], atr: &mut [f64]) {
    let p = fit.theta.len();
    let scale = (0..p).map(|k| ata[k][k]).sum::<f64>() / p as f64;
    let smooth = 1e-3 * scale.max(1e-9);
    let pin = 1.0 * scale.max(1e-9);
    let mut add = |rows: &[(usize, f64)], weight: f64| {
        // Penalty weight·(Σ c_k θ_k)²: its gradient and curvature.
        let value: f64 = rows.iter().map(|&(k, c)| c * fit.theta[k]).sum();
        for &(i, ci) in rows {
            atr[i] -= weight * ci * value;
            for &(j, cj) in rows {
                ata[i][j] += weight * ci * cj;
            }
        }
    };
    if fit.seasonal {
        let s0 = fit.season_index();
        for k in 0..KNOTS {
            add(&[(s0 + k, 1.0), (s0 + (k + 1) % KNOTS, -1.0)], smooth);
        }
        let all: Vec<(usize, f64)> = (0..KNOTS).map(|k| (s0 + k, 1.0)).collect();
        add(&all, pin);
    }
    if fit.weekly {
        let w0 = fit.week_index();
        let all: Vec<(usize, f64)> = (0..7).map(|k| (w0 + k, 1.0)).collect();
        add(&all, pin);
    }
}

fn weighted_sse(fit: &Fit, data: &[(Day, f64)], w: &[f64]) -> f64 {
    data.iter()
        .zip(w)
        .map(|(&(d, y), &wi)| {
            let r = y - fit.predict(d);
            wi * r * r
        })
        .sum()
}

/// 1.4826 times the median absolute deviation: the standard deviation of normal noise,
/// unmoved by a few outlier days.
fn robust_sigma(res: &[f64]) -> f64 {
    if res.is_empty() {
        return 0.0;
    }
    let med = median(res.to_vec());
    1.4826 * median(res.iter().map(|r| (r - med).abs()).collect())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting; `None` if singular.
fn solve(a: Vec<Vec<f64>>, b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    let mut m = flatten(&a, n, 1);
    for (r, v) in b.iter().enumerate() {
        m[r * (n + 1) + n] = *v;
    }
    eliminate(&mut m, n, 1)?;
    Some((0..n).map(|r| m[r * (n + 1) + n]).collect())
}

/// The inverse of `a` (Gauss-Jordan on `[a | I]`).
fn invert(a: Vec<Vec<f64>>) -> Option<Vec<Vec<f64>>> {
    let n = a.len();
    let mut m = flatten(&a, n, n);
    for r in 0..n {
        m[r * 2 * n + n + r] = 1.0;
    }
    eliminate(&mut m, n, n)?;
    Some(
        (0..n)
            .map(|r| m[r * 2 * n + n..(r + 1) * 2 * n].to_vec())
            .collect(),
    )
}

/// `a` (n x n) as a row-major matrix with `extra` zero columns on the right.
fn flatten(a: &[Vec<f64>], n: usize, extra: usize) -> Vec<f64> {
    let w = n + extra;
    let mut m = vec![0.0; n * w];
    for (r, row) in a.iter().enumerate() {
        m[r * w..r * w + n].copy_from_slice(row);
    }
    m
}

/// Gauss-Jordan elimination with partial pivoting of the row-major `n x (n + extra)` matrix
/// `m`: the left block becomes the identity, the right one the solution.
fn eliminate(m: &mut [f64], n: usize, extra: usize) -> Option<()> {
    let w = n + extra;
    for col in 0..n {
        let pivot =
            (col..n).max_by(|&i, &j| m[i * w + col].abs().total_cmp(&m[j * w + col].abs()))?;
        let pv = m[pivot * w + col];
        if pv.abs() < 1e-300 {
            return None;
        }
        if pivot != col {
            for k in 0..w {
                m.swap(pivot * w + k, col * w + k);
            }
        }
        let inv = 1.0 / pv;
        for k in col..w {
            m[col * w + k] *= inv;
        }
        let (before, rest) = m.split_at_mut(col * w);
        let (pivot_row, after) = rest.split_at_mut(w);
        for row in before.chunks_exact_mut(w).chain(after.chunks_exact_mut(w)) {
            let f = row[col];
            if f != 0.0 {
                for (x, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                    *x -= f * p;
                }
            }
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_algebra_solves_and_inverts() {
        let a = vec![
            vec![4.0, 1.0, 0.0],
            vec![1.0, 3.0, 1.0],
            vec![0.0, 1.0, 2.0],
        ];
        let b = [1.0, 2.0, 3.0];
        let x = solve(a.clone(), b.to_vec()).unwrap();
        for (row, want) in a.iter().zip(b) {
            let ax: f64 = row.iter().zip(&x).map(|(p, q)| p * q).sum();
            assert!((ax - want).abs() < 1e-12);
        }
        let inv = invert(a.clone()).unwrap();
        for (r, row) in a.iter().enumerate() {
            for c in 0..3 {
                let v: f64 = row
                    .iter()
                    .zip(&inv)
                    .map(|(p, inv_row)| p * inv_row[c])
                    .sum();
                assert!((v - f64::from(u8::from(r == c))).abs() < 1e-12);
            }
        }
        assert_eq!(solve(vec![vec![0.0]], vec![1.0]), None);
    }

    #[test]
    fn daily_peaks_keep_the_maximum_of_each_utc_day() {
        let p = daily_peaks(&[(10, 0.2), (80_000, 0.5), (86_400, 0.1), (90_000, f64::NAN)]);
        assert_eq!(p, vec![(Day(0), 0.5), (Day(1), 0.1)]);
    }

    #[test]
    fn a_noise_free_series_is_recovered() {
        // Trend 0.1/year from 0.3, +50 % in a smooth autumn bump, weekends 20 % lower.
        let origin = Day(20_000);
        let truth = |d: Day| {
            let t = d.since(origin) as f64 / YEAR_DAYS;
            let ph = (d.0 as f64 / YEAR_DAYS).rem_euclid(1.0);
            let bump = 0.5 * (1.0 + (2.0 * std::f64::consts::PI * (ph - 0.8)).cos()) / 2.0;
            let wk = if d.weekday() >= 5 { 0.8 } else { 1.0 };
            (0.3 + 0.1 * t) * (1.0 + bump) * wk
        };
        let data: Vec<(Day, f64)> = (-900..0)
            .map(|i| (origin.plus(i), truth(origin.plus(i))))
            .collect();
        let f = fit(&data, origin, Form::Multiplicative, true);
        // The model's level is the mean over the year and the week: the truth's slope times
        // the mean seasonal factor (1.25) and the mean weekday factor (6.6 / 7).
        let slope = 0.1 * 1.25 * 6.6 / 7.0;
        assert!(
            (f.slope_per_year() - slope).abs() < 0.002,
            "slope {}",
            f.slope_per_year()
        );
        for ahead in [30, 120, 300] {
            let d = origin.plus(ahead);
            let err = (f.predict(d) - truth(d)).abs() / truth(d);
            assert!(
                err < 0.02,
                "{ahead} days ahead: {} vs {}",
                f.predict(d),
                truth(d)
            );
        }
        assert!(f.sigma < 0.01, "sigma {}", f.sigma);
    }
}
