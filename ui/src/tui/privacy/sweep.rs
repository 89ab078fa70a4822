//! The Privacy tab's noise sweep: the list of noise multipliers (editable as text), and the
//! sweep in progress, one training run per sigma, one after another, each with the Train tab's
//! other settings. Sigma 0 is the non-DP baseline. Plain state: the app starts each run and
//! reports its end here. Imports `tui::backend`'s config types and the pipeline's optimizer
//! rule only; never the app, the views or the other tabs (the allowed sigma range comes in as
//! an argument).

use crate::tui::backend::{DpSettings, NoiseMultiplier, TrainConfig};
use privxray::pipeline::optimizer_following_dp;

/// The sweep a first press runs: the baseline, then from weak to strong noise.
pub const DEFAULT_SIGMAS: [f64; 5] = [0.0, 0.5, 1.0, 2.0, 4.0];
/// More runs than this is a typo more often than a plan.
pub const MAX_SIGMAS: usize = 12;

/// A sigma as the list and the chart write it: "0", "0.5", "1", "2.25".
pub fn fmt_sigma(s: f64) -> String {
    let r = format!("{s:.2}");
    r.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Parses "0, 0.5, 1": comma-separated noise multipliers, each 0 (no DP) or within `range`.
/// The error names the first bad entry and what is allowed.
pub fn parse_sigmas(text: &str, range: [f64; 2]) -> Result<Vec<f64>, String> {
    let allowed = format!(
        "use 0 (no DP) or {} to {}",
        fmt_sigma(range[0]),
        fmt_sigma(range[1])
    );
    let mut out = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let v: f64 = entry
            .parse()
            .map_err(|_| format!("\"{entry}\" is not a number: {allowed}"))?;
        // -0 is 0; NaN and infinities fail the range test.
        let v = if v == 0.0 { 0.0 } else { v };
        if v != 0.0 && !(range[0]..=range[1]).contains(&v) {
            return Err(format!("σ {entry} is out of range: {allowed}"));
        }
        out.push(v);
    }
    if out.is_empty() {
        return Err(format!("no noise multipliers given: {allowed}"));
    }
    if out.len() > MAX_SIGMAS {
        return Err(format!(
            "{} noise multipliers given, at most {MAX_SIGMAS}",
            out.len()
        ));
    }
    Ok(out)
}

/// A sweep under way: the settings shared by its runs and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRun {
    base: TrainConfig,
    /// Clip norm and delta of the DP runs (the Train tab's, even when its DP switch is off).
    dp: DpSettings,
    pub sigmas: Vec<f64>,
    /// Index of the run now training.
    pub current: usize,
    /// (epoch now training, 1-based; epochs of the run), as the Train tab last reported.
    pub epoch: Option<(usize, usize)>,
}

impl SweepRun {
    /// The config of run `i`: the base with DP off for sigma 0, else DP at that sigma.
    fn config(&self, i: usize) -> TrainConfig {
        let sigma = self.sigmas[i];
        let mut c = self.base.clone();
        c.dp = (sigma != 0.0).then_some(DpSettings {
            // The list was checked against the slider range, narrower than the type's.
            noise: NoiseMultiplier::clamped(sigma),
            ..self.dp
        });
        // The baseline trains as DP off on the Train tab would: its optimizer follows.
        (c.optimizer, c.learning_rate) =
            optimizer_following_dp(c.dp.is_some(), (c.optimizer, c.learning_rate));
        c
    }

    pub fn sigma(&self) -> f64 {
        self.sigmas[self.current]
    }
}

/// The sweep's state on the Privacy tab.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    pub sigmas: Vec<f64>,
    /// The list being typed, while the editor is open.
    pub editor: Option<String>,
    pub running: Option<SweepRun>,
    /// The last thing to tell the user, and whether it is an error.
    pub status: Option<(String, bool)>,
}

impl Default for Sweep {
    fn default() -> Self {
        Sweep {
            sigmas: DEFAULT_SIGMAS.to_vec(),
            editor: None,
            running: None,
            status: None,
        }
    }
}

/// The list as the editor starts it and the tab shows it.
pub fn list_text(sigmas: &[f64]) -> String {
    sigmas
        .iter()
        .map(|&s| fmt_sigma(s))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Sweep {
    pub fn editing(&self) -> bool {
        self.editor.is_some()
    }

    /// Opens the editor on the current list (not while a sweep runs: its list is fixed).
    pub fn open_editor(&mut self) {
        if self.running.is_some() {
            self.status = Some(("the list can change once the sweep ends".into(), true));
            return;
        }
        self.editor = Some(list_text(&self.sigmas));
    }

    /// Enter: takes the typed list if every entry is valid; otherwise keeps the old list and
    /// the editor open, with the reason.
    pub fn accept(&mut self, range: [f64; 2]) {
        let Some(text) = &self.editor else { return };
        match parse_sigmas(text, range) {
            Ok(s) => {
                self.sigmas = s;
                self.editor = None;
                self.status = Some((format!("σ list: {}", list_text(&self.sigmas)), false));
            }
            Err(e) => self.status = Some((e, true)),
        }
    }

    /// Esc: the old list stays.
    pub fn cancel_edit(&mut self) {
        self.editor = None;
        self.status = None;
    }

    /// Starts a sweep over the list with `base`'s settings and `dp`'s clip norm and delta;
    /// returns the first run's config.
    pub fn start(&mut self, base: TrainConfig, dp: DpSettings) -> Option<TrainConfig> {
        if self.running.is_some() || self.sigmas.is_empty() {
            return None;
        }
        let run = SweepRun {
            base,
            dp,
            sigmas: self.sigmas.clone(),
            current: 0,
            epoch: None,
        };
        let first = run.config(0);
        self.running = Some(run);
        self.status = None;
        Some(first)
    }

    /// The sigma of the run now training, if a sweep runs.
    pub fn current_sigma(&self) -> Option<f64> {
        self.running.as_ref().map(SweepRun::sigma)
    }

    /// The current run finished (`stopped`: by the user): returns the next run's config, or
    /// `None` when the sweep is over.
    pub fn finished(&mut self, stopped: bool) -> Option<TrainConfig> {
        let run = self.running.as_mut()?;
        let n = run.sigmas.len();
        if stopped {
            let done = run.current;
            self.running = None;
            self.status = Some((
                format!("sweep stopped with its run: {done} of {n} runs finished"),
                true,
            ));
            return None;
        }
        run.current += 1;
        run.epoch = None;
        if run.current < n {
            return Some(run.config(run.current));
        }
        self.running = None;
        self.status = Some((format!("sweep done: {n} runs"), false));
        None
    }

    /// The current run failed or could not start: the rest are not run (a failure would
    /// most likely repeat).
    pub fn failed(&mut self, reason: &str) {
        if let Some(run) = self.running.take() {
            self.status = Some((
                format!(
                    "sweep ended: run {} of {} (σ {}) failed: {reason}",
                    run.current + 1,
                    run.sigmas.len(),
                    fmt_sigma(run.sigma())
                ),
                true,
            ));
        }
    }

    /// The user stopped the sweep: the rest are cancelled at once; the current run is
    /// stopped by the caller and, being stopped, is not a sweep point.
    pub fn stop(&mut self) -> bool {
        let Some(run) = self.running.take() else {
            return false;
        };
        self.status = Some((
            format!(
                "sweep stopped: {} of {} runs finished",
                run.current,
                run.sigmas.len()
            ),
            false,
        ));
        true
    }

    /// The Train tab's progress of the current run: (epoch now training, 1-based; epochs).
    pub fn set_epoch(&mut self, epoch: Option<(usize, usize)>) {
        if let Some(run) = self.running.as_mut() {
            run.epoch = epoch;
        }
    }

    /// "sweep 2/5: σ 1, epoch 3/10" while a sweep runs.
    pub fn progress(&self) -> Option<String> {
        let run = self.running.as_ref()?;
        let mut s = format!(
            "sweep {}/{}: σ {}",
            run.current + 1,
            run.sigmas.len(),
            fmt_sigma(run.sigma())
        );
        if run.sigma() == 0.0 {
            s.push_str(" (no DP)");
        }
        if let Some((e, of)) = run.epoch {
            s.push_str(&format!(", epoch {e}/{of}"));
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::backend::ClipNorm;
    use privxray::model::ModelKind;
    use std::path::PathBuf;

    const RANGE: [f64; 2] = [0.1, 5.0];

    fn base() -> TrainConfig {
        TrainConfig {
            model: ModelKind::DnnMax,
            epochs: 3,
            batch_size: 32,
            optimizer: crate::tui::backend::OptimizerChoice::Adam,
            learning_rate: 0.01,
            dp: None,
            frozen: vec!["fc1".into()],
            ema: Some(0.9),
            dropout: Some(0.0),
            data_root: PathBuf::from("cache/x"),
            data: None,
        }
    }

    fn dp() -> DpSettings {
        DpSettings {
            noise: NoiseMultiplier::clamped(1.1),
            clip: ClipNorm::clamped(0.7),
            delta: 1e-6,
        }
    }

    #[test]
    fn parses_good_lists() {
        assert_eq!(
            parse_sigmas("0, 0.5,1 ,2,4", RANGE),
            Ok(vec![0.0, 0.5, 1.0, 2.0, 4.0])
        );
        // Empty entries (a trailing comma) are skipped; -0 is the baseline.
        assert_eq!(parse_sigmas(" 2, ,-0,", RANGE), Ok(vec![2.0, 0.0]));
        assert_eq!(parse_sigmas("0.1,5", RANGE), Ok(vec![0.1, 5.0]));
    }

    #[test]
    fn bad_lists_name_the_value_and_the_range() {
        let e = parse_sigmas("0, abc, 1", RANGE).unwrap_err();
        assert!(e.contains("\"abc\" is not a number"), "{e}");
        assert!(e.contains("use 0 (no DP) or 0.1 to 5"), "{e}");
        for bad in ["7", "0.05", "-1", "nan", "inf"] {
            let e = parse_sigmas(&format!("1, {bad}"), RANGE).unwrap_err();
            assert!(
                e.contains(&format!("σ {bad} is out of range")) || e.contains(bad),
                "{bad}: {e}"
            );
            assert!(e.contains("use 0 (no DP) or 0.1 to 5"), "{e}");
        }
        assert!(parse_sigmas(" , ", RANGE).unwrap_err().contains("no noise"));
        let many = vec!["1"; MAX_SIGMAS + 1].join(",");
        assert!(parse_sigmas(&many, RANGE).unwrap_err().contains("at most"));
    }

    #[test]
    fn a_bad_edit_keeps_the_old_list_and_esc_too() {
        let mut s = Sweep::default();
        s.open_editor();
        assert_eq!(s.editor.as_deref(), Some("0, 0.5, 1, 2, 4"));
        s.editor = Some("0, 9".into());
        s.accept(RANGE);
        assert_eq!(s.sigmas, DEFAULT_SIGMAS);
        assert!(s.editing(), "the editor stays open to fix the entry");
        let (msg, error) = s.status.clone().unwrap();
        assert!(error && msg.contains("σ 9 is out of range"), "{msg}");
        s.cancel_edit();
        assert!(!s.editing());
        assert_eq!(s.sigmas, DEFAULT_SIGMAS);
        s.open_editor();
        s.editor = Some("0,2".into());
        s.accept(RANGE);
        assert_eq!(s.sigmas, [0.0, 2.0]);
        assert!(!s.editing());
    }

    #[test]
    fn runs_follow_one_another_on_finished_events() {
        let mut s = Sweep {
            sigmas: vec![0.0, 0.5, 2.0],
            ..Sweep::default()
        };
        let first = s.start(base(), dp()).unwrap();
        // Sigma 0 is the baseline: DP off, everything else from the Train tab.
        assert_eq!(first.dp, None);
        assert_eq!(first, base());
        assert_eq!(s.current_sigma(), Some(0.0));
        assert!(s.start(base(), dp()).is_none(), "one sweep at a time");
        s.set_epoch(Some((2, 3)));
        assert_eq!(
            s.progress().as_deref(),
            Some("sweep 1/3: σ 0 (no DP), epoch 2/3")
        );

        let second = s.finished(false).unwrap();
        let d = second.dp.unwrap();
        assert_eq!(d.noise.get(), 0.5);
        assert_eq!((d.clip.get(), d.delta), (0.7, 1e-6));
        assert_eq!(
            (second.epochs, second.batch_size, second.model),
            (3, 32, ModelKind::DnnMax)
        );
        assert_eq!(s.current_sigma(), Some(0.5));
        assert_eq!(s.progress().as_deref(), Some("sweep 2/3: σ 0.5"));

        let third = s.finished(false).unwrap();
        assert_eq!(third.dp.unwrap().noise.get(), 2.0);
        assert_eq!(s.current_sigma(), Some(2.0));
        assert!(s.finished(false).is_none());
        assert_eq!(s.current_sigma(), None);
        assert_eq!(s.status, Some(("sweep done: 3 runs".into(), false)));
    }

    #[test]
    fn stopping_cancels_the_rest() {
        let mut s = Sweep::default();
        s.start(base(), dp()).unwrap();
        s.finished(false).unwrap();
        assert!(s.stop());
        assert_eq!(s.current_sigma(), None);
        // The stopped run's end starts nothing.
        assert!(s.finished(true).is_none());
        assert!(s.status.unwrap().0.contains("1 of 5 runs finished"));

        // A run stopped elsewhere (the Train tab's x) ends the sweep too.
        let mut s = Sweep::default();
        s.start(base(), dp()).unwrap();
        assert!(s.finished(true).is_none());
        assert!(s.running.is_none());

        // A failed run ends it, naming the run.
        let mut s = Sweep::default();
        s.start(base(), dp()).unwrap();
        s.finished(false).unwrap();
        s.failed("out of memory");
        assert!(s.running.is_none());
        let msg = s.status.unwrap().0;
        assert!(
            msg.contains("run 2 of 5 (σ 0.5) failed: out of memory"),
            "{msg}"
        );
    }
}
