use super::*;
use crate::data::{ClassNames, Item, Label, Split};
use crate::model::spec::pneumonia_probability;
use crate::model::{ModelKind, Technique};
use crate::preprocess::{self, Preprocessed};
use crate::train::{self, Model, TrainControl, TrainingEvent};
use std::path::PathBuf;

/// A preprocessed technique-1 dataset held in memory: `train` images per class in train/,
/// `eval` per class in test/, each image one grey level (its index) so subsets can be traced.
fn dataset(train: usize, eval: usize) -> Preprocessed {
    let n = preprocess::image_len(Technique::T1);
    let mut items = Vec::new();
    let mut pixels = Vec::new();
    for (split, count) in [(Split::Train, train), (Split::Test, eval)] {
        for (class, name) in ClassNames::binary().names().iter().enumerate() {
            for _ in 0..count {
                let level = (items.len() % 256) as u8;
                items.push(Item {
                    path: PathBuf::from(format!("{}/{name}/{}.png", split.folder(), items.len())),
                    split,
                    label: Label(class as u8),
                });
                pixels.extend(std::iter::repeat_n(level, n));
            }
        }
    }
    Preprocessed {
        root: PathBuf::from("/data/set"),
        technique: Technique::T1,
        classes: ClassNames::binary(),
        items,
        pixels,
        skipped: Vec::new(),
    }
}

fn model() -> Model {
    let (model, _) = Model::init(ModelKind::DnnMax, 1.0, 3, &candle_core::Device::Cpu).unwrap();
    model
}

#[test]
fn split_holds_out_a_tenth_of_each_class_and_keeps_the_evaluation_set_apart() {
    let s = split(&dataset(20, 3)).unwrap();
    assert_eq!(s.validation.len(), 4);
    assert_eq!(s.train.len(), 36);
    assert_eq!(s.evaluation.len(), 6);
    assert_eq!(s.validation.class_counts(), [2, 2]);
    assert_eq!(s.train.class_counts(), [18, 18]);
    assert_eq!(s.evaluation.class_counts(), [3, 3]);
}

#[test]
fn split_is_the_same_every_time_and_follows_the_fixed_seed() {
    let set = dataset(20, 3);
    let (a, b) = (split(&set).unwrap(), split(&set).unwrap());
    assert_eq!(a.train.images(), b.train.images());
    assert_eq!(a.validation.images(), b.validation.images());
    let (tr, va) = set.train_validation_split(VAL_FRACTION, SPLIT_SEED);
    assert_eq!(a.train.images(), subset(&set, &tr).unwrap().images());
    assert_eq!(a.validation.labels(), subset(&set, &va).unwrap().labels());
    assert_eq!((SPLIT_SEED, VAL_FRACTION), (17, 0.1));
}

#[test]
fn split_refuses_a_dataset_without_training_images_naming_its_root() {
    let e = split(&dataset(0, 2)).unwrap_err();
    assert!(matches!(e, PipelineError::NoTrainingImages { .. }));
    assert_eq!(
        e.to_string(),
        "/data/set has no training images (train/ is empty or missing)"
    );
}

#[test]
fn subset_scales_pixels_to_unit_and_keeps_labels_in_the_order_asked() {
    let set = dataset(2, 0);
    let d = subset(&set, &[3, 0]).unwrap();
    assert_eq!(d.labels(), &[1, 0]);
    assert_eq!(d.image(0).unwrap()[0], 3.0 / 255.0);
    assert_eq!(d.image(1).unwrap()[0], 0.0);
    assert_eq!(
        d.image(0).unwrap(),
        preprocess::to_unit(set.image(3)).as_slice()
    );
}

#[test]
fn per_example_losses_average_to_the_models_loss() {
    let data = subset(&dataset(40, 0), &(0..80).collect::<Vec<_>>()).unwrap();
    let m = model();
    let losses = per_example_losses(&m, &data).unwrap();
    assert_eq!(losses.len(), 80);
    assert!(losses.iter().all(|l| l.is_finite() && *l >= 0.0));
    let mean = losses.iter().sum::<f64>() / losses.len() as f64;
    let expected = train::evaluate(&m, &data, 64).unwrap().loss;
    assert!((mean - expected).abs() < 1e-4, "{mean} vs {expected}");
}

#[test]
fn plaintext_probability_is_the_models_probability_of_pneumonia() {
    let m = model();
    let set = dataset(1, 0);
    let x = preprocess::to_unit(set.image(1));
    let p = plaintext_probability(&m, m.input_shape(), x.clone()).unwrap();
    assert!((0.0..=1.0).contains(&p));
    let data = subset(&set, &[1]).unwrap();
    let (xb, _) = data.batch(&[0], &candle_core::Device::Cpu).unwrap();
    let logits = m.forward_with(&xb, None).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(p, f64::from(pneumonia_probability(&logits[0])));
    assert!(plaintext_probability(&m, m.input_shape(), x[1..].to_vec()).is_err());
}

#[test]
fn predict_images_gives_every_image_its_own_result() {
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("not-an-image.png");
    std::fs::write(&bad, b"no pixels here").unwrap();
    let missing = dir.path().join("missing.png");
    let results = predict_images(&m, &[bad, missing]);
    assert_eq!(results.len(), 2);
    assert!(results
        .iter()
        .all(|r| matches!(r, Err(PipelineError::Image(_)))));
}

#[test]
fn settings_become_the_engine_config_with_the_optimizers_default_rates() {
    let mut s = RunSettings::new(ModelKind::DnnAv, PathBuf::from("ck"));
    let c = s.config().unwrap();
    assert_eq!((c.epochs, c.batch_size, c.patience), (10, 32, None));
    assert_eq!(c.checkpoint_dir, Some(PathBuf::from("ck")));
    assert!(matches!(c.seed, train::Seed::Os));
    assert!(c.dp.is_none());
    assert_eq!(
        format!("{:?}", c.optimizer),
        format!("{:?}", train::optim::OptimizerConfig::adam(1e-3))
    );
    s.optimizer = OptimizerChoice::Sgd { momentum: 0.5 };
    s.seed = Some(9);
    s.patience = Some(2);
    s.frozen = vec!["fc1".into()];
    let mut dp = DpSettings::new(1.3, 0.7, 1e-6);
    dp.clipping = train::dpsgd::Clipping::PerLayer;
    s.dp = Some(dp.clone());
    let c = s.config().unwrap();
    assert_eq!(
        format!("{:?}", c.optimizer),
        format!("{:?}", train::optim::OptimizerConfig::sgd(1e-2, 0.5))
    );
    assert!(matches!(c.seed, train::Seed::Fixed(9)));
    assert_eq!(
        (c.patience, c.frozen.as_slice()),
        (Some(2), &["fc1".to_string()][..])
    );
    let d = c.dp.unwrap();
    assert_eq!(
        (d.noise_multiplier.get(), d.clip_norm.get(), d.delta),
        (1.3, 0.7, 1e-6)
    );
    assert_eq!(d.clipping, train::dpsgd::Clipping::PerLayer);
    assert_eq!(d.microbatch_size, 1);
    d.validate_for_training().unwrap();
    // What the engine would refuse is refused before anything runs.
    dp.delta = 2.0;
    s.dp = Some(dp.clone());
    assert!(s.config().is_err());
    dp.delta = 1e-6;
    dp.augmentations = 0;
    s.dp = Some(dp);
    assert!(s.config().is_err());
}

#[test]
fn train_then_evaluate_measures_the_best_checkpoint_on_the_evaluation_split() {
    let dir = tempfile::tempdir().unwrap();
    let s = split(&dataset(8, 3)).unwrap();
    let mut settings = RunSettings::new(ModelKind::DnnAv, dir.path().to_path_buf());
    settings.epochs = 1;
    settings.batch_size = 8;
    settings.seed = Some(3);
    let mut seen = 0;
    let report = train_then_evaluate(
        settings.config().unwrap(),
        s.train.clone(),
        s.validation.clone(),
        &s.evaluation,
        TrainControl::new(),
        "pipeline-test",
        |event| {
            if matches!(event, TrainingEvent::Epoch { .. }) {
                seen += 1;
            }
            Ok::<(), PipelineError>(())
        },
    )
    .unwrap();
    assert_eq!((seen, report.outcome.epochs_run), (1, 1));
    let best = report.best.expect("one epoch writes a best checkpoint");
    assert_eq!(Some(&best.path), report.outcome.best_checkpoint.as_ref());
    let again = evaluate_checkpoint(&best.path, &s.evaluation).unwrap();
    let test = best.test.expect("a non-empty evaluation split is measured");
    assert_eq!(test.images, 6);
    assert_eq!(Some(test), again.test);
    assert_eq!(best.meta.model, ModelKind::DnnAv);
    // An empty evaluation split measures nothing; a missing checkpoint names its path.
    let empty = subset(&dataset(1, 0), &[]).unwrap();
    assert!(evaluate_checkpoint(&best.path, &empty)
        .unwrap()
        .test
        .is_none());
    let e = evaluate_checkpoint(&dir.path().join("none.safetensors"), &empty).unwrap_err();
    assert!(e.to_string().starts_with("loading "), "{e}");
}

mod first_run {
    use crate::pipeline::{
        default_synthetic_options, optimizer_following_dp, InteractiveSettings, OptimizerChoice,
        DEFAULT_DP, DP_OPTIMIZER, PLAIN_OPTIMIZER,
    };
    use crate::synth::Difficulty;
    use std::path::PathBuf;

    #[test]
    fn the_optimizer_follows_dp_only_while_at_a_modes_default() {
        assert_eq!(optimizer_following_dp(false, DP_OPTIMIZER), PLAIN_OPTIMIZER);
        assert_eq!(optimizer_following_dp(true, PLAIN_OPTIMIZER), DP_OPTIMIZER);
        // Turning DP on when it is on (or off when off) changes nothing.
        assert_eq!(optimizer_following_dp(true, DP_OPTIMIZER), DP_OPTIMIZER);
        assert_eq!(
            optimizer_following_dp(false, PLAIN_OPTIMIZER),
            PLAIN_OPTIMIZER
        );
        // A choice of the user's stays either way.
        let mine = (OptimizerChoice::Adam, 1e-4);
        assert_eq!(optimizer_following_dp(true, mine), mine);
        assert_eq!(optimizer_following_dp(false, mine), mine);
        assert_ne!(DP_OPTIMIZER, PLAIN_OPTIMIZER);
    }

    #[test]
    fn first_run_settings_reach_the_engine_with_dp_and_without() {
        let first = InteractiveSettings::default();
        assert_eq!(first.dp, Some(DEFAULT_DP));
        assert_eq!((first.optimizer, first.learning_rate), DP_OPTIMIZER);
        let dp = first
            .run_settings(1.0, PathBuf::from("ck"))
            .unwrap()
            .config()
            .unwrap();
        let d = dp.dp.expect("DP-SGD on");
        assert_eq!(d.noise_multiplier.get(), DEFAULT_DP.noise_multiplier);
        assert_eq!(d.clip_norm.get(), DEFAULT_DP.clip_norm);
        assert_eq!(dp.frozen, first.frozen);
        assert_eq!(
            dp.optimizer,
            crate::train::optim::OptimizerConfig::sgd(DP_OPTIMIZER.1, 0.9)
        );
        let plain = first.clone().with_dp(None);
        assert_eq!((plain.optimizer, plain.learning_rate), PLAIN_OPTIMIZER);
        let c = plain
            .run_settings(1.0, PathBuf::from("ck"))
            .unwrap()
            .config()
            .unwrap();
        assert!(c.dp.is_none());
        assert_eq!(
            c.optimizer,
            crate::train::optim::OptimizerConfig::adam(PLAIN_OPTIMIZER.1)
        );
        // Back on: the same as the first run.
        assert_eq!(plain.with_dp(Some(DEFAULT_DP)), first);
    }

    #[test]
    fn the_default_synthetic_set_is_easy_balanced_and_labelled_synthetic() {
        let o = default_synthetic_options();
        assert_eq!(o.difficulty, Difficulty::Easy);
        assert_eq!(o.normal_fraction, 0.5);
        let dir = tempfile::tempdir().unwrap();
        let mut small = o.clone();
        small.count = 40;
        let written = crate::synth::generate(dir.path(), &small).unwrap();
        assert!(written.iter().all(|w| w
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("SYNTH")));
        let normal = written
            .iter()
            .filter(|w| w.class == crate::data::Class::Normal)
            .count();
        assert!((12..=28).contains(&normal), "{normal} NORMAL of 40");
    }
}
