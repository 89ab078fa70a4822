//! Small text formats shared by the tabs' views.
//! A leaf: imports nothing of the interface.

/// "1:05" style durations.
pub fn clock(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "--:--".into();
    }
    let s = seconds.round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// Epsilon as the tabs show it: ∞, whole above 100, else two decimals.
pub fn fmt_eps(v: f64) -> String {
    if v.is_infinite() {
        "∞".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// A gradient norm: two decimals, or three significant digits in exponent form below 0.01,
/// where two decimals would show a fitted model's small norms as "0.00".
pub fn norm(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.01 {
        format!("{v:.2e}")
    } else {
        format!("{v:.2}")
    }
}

/// Byte counts in B, kB, MB or GB.
pub fn bytes(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.2} GB", n as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_norms_keep_their_digits() {
        assert_eq!(norm(0.0), "0.00");
        assert_eq!(norm(1.234), "1.23");
        assert_eq!(norm(0.01), "0.01");
        assert_eq!(norm(0.00347), "3.47e-3");
        assert_eq!(norm(0.0000512), "5.12e-5");
    }
}
