//! Statistics over repeated runs (seeds): the mean and its 95% confidence interval, as every
//! comparison between methods in this project reports them.

/// Student's t quantile at 0.975 for `df` degrees of freedom (the interval's multiplier).
pub fn t975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => TABLE[df - 1],
        31..=40 => 2.021,
        41..=60 => 2.000,
        61..=120 => 1.980,
        _ => 1.960,
    }
}

/// Mean of `xs` and the half-width of its 95% confidence interval (`t975(n - 1) * s / sqrt(n)`,
/// with the sample standard deviation `s`; NaN for fewer than two values).
pub fn mean_ci(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, f64::NAN);
    }
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64;
    (mean, t975(n - 1) * (var / n as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_matches_a_hand_computation() {
        // 1, 2, 3, 4, 5: mean 3, s = sqrt(2.5), t(4) = 2.776.
        let (m, h) = mean_ci(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(m, 3.0);
        assert!((h - 2.776 * (2.5f64 / 5.0).sqrt()).abs() < 1e-12, "{h}");
        assert!(mean_ci(&[4.0]).1.is_nan());
        assert_eq!(mean_ci(&[2.0, 2.0, 2.0]).1, 0.0);
        assert_eq!(t975(1000), 1.96);
    }
}
