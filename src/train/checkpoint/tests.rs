//! Checkpoints: a model and its metadata survive a save and load bit-for-bit, and a file that
//! is not a checkpoint is an error.

use crate::model::ModelKind;
use crate::train::accounting::DpSegment;
use crate::train::checkpoint;
use crate::train::dpsgd::{self, DpConfig};
use crate::train::engine::{self, model_vars};
use crate::train::model::Model;
use crate::train::optim::OptimizerConfig;
use candle_core::Device;

#[test]
fn checkpoint_round_trips_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (model, vm) = Model::init(ModelKind::DnnAv, 1.0, 9, &Device::Cpu).unwrap();
    let vars = model_vars(&model, &vm).unwrap();
    let meta = checkpoint::CheckpointMeta {
        format: checkpoint::FORMAT,
        model: ModelKind::DnnAv,
        technique: 1,
        width: 1.0,
        classes: crate::model::ClassNames::binary(),
        epoch: 3,
        optimizer: OptimizerConfig::adam(1e-3),
        optimizer_step: 42,
        best_val_acc: 0.75,
        epochs_without_improvement: 1,
        seed: 7,
        dp: Some(DpConfig::new(1.1, 1.0).unwrap()),
        epsilon: Some(2.5),
        neighbouring: Some(dpsgd::NEIGHBOURING.into()),
        privacy_ledger: vec![DpSegment {
            sample_rate: crate::privacy::SampleRate::new(0.01).unwrap(),
            noise_multiplier: dpsgd::NoiseMultiplier::new(1.1).unwrap(),
            steps: 30,
        }],
        history: vec![],
        frozen: vec!["fc1".into()],
        ema: None,
        dropout: None,
    };
    let tensors: Vec<_> = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    let path = dir.path().join("ck.safetensors");
    checkpoint::save(&path, &meta, &tensors).unwrap();
    assert_eq!(checkpoint::read_meta(&path).unwrap(), meta);
    let (loaded, _vm2, meta2) = engine::model_from_checkpoint(&path, &Device::Cpu).unwrap();
    assert_eq!(meta2, meta);
    for ((n1, a), (n2, b)) in model
        .named_parameters()
        .iter()
        .zip(loaded.named_parameters())
    {
        assert_eq!(n1, &n2);
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{n1}"
        );
    }
    // A file that is not a checkpoint is reported, not a panic.
    std::fs::write(dir.path().join("bad"), b"garbage").unwrap();
    assert!(checkpoint::read_meta(&dir.path().join("bad")).is_err());
    assert!(checkpoint::load(&dir.path().join("bad"), &Device::Cpu).is_err());
}
