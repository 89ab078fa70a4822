//! The built models: the candle forward pass equals the framework-free `NetworkSpec` forward,
//! input shapes are checked, and layer names and freezing.

use crate::model::ModelKind;
use crate::train::model::Model;
use crate::train::test_support::{random_input, width_for};
use candle_core::{Device, Tensor};

#[test]
fn candle_forward_equals_network_spec_forward_for_every_model() {
    for kind in ModelKind::ALL {
        let (model, _vm) = Model::init(kind, width_for(kind), 5, &Device::Cpu).unwrap();
        let spec = model.to_spec().unwrap();
        assert_eq!(spec.input, kind.technique().input_shape());
        let x = random_input(kind, 2, 6);
        let ours = model
            .forward_with(&x, None)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (i, row) in ours.iter().enumerate() {
            let img = x
                .get(i)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let reference = spec.forward(&img).unwrap();
            for (a, b) in row.iter().zip(&reference) {
                assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{kind}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn wrong_input_shape_is_an_error() {
    let (model, _vm) = Model::init(ModelKind::DnnMax, 1.0, 1, &Device::Cpu).unwrap();
    let x = Tensor::zeros((1, 3, 224, 224), candle_core::DType::F32, &Device::Cpu).unwrap();
    let e = model.forward_with(&x, None).unwrap_err();
    assert!(e.to_string().contains("[1, 150, 125]"), "{e}");
}

#[test]
fn freezing_names_real_layers_and_leaves_something_to_train() {
    let (mut model, _vm) = Model::init(ModelKind::DnnMax, 1.0, 1, &Device::Cpu).unwrap();
    let e = model.freeze(&["fc9".into()]).unwrap_err().to_string();
    assert!(
        e.contains("fc9") && e.contains("conv1, conv2, conv3, fc1, fc2"),
        "{e}"
    );
    let all: Vec<String> = ["conv1", "conv2", "conv3", "fc1", "fc2"]
        .map(String::from)
        .to_vec();
    assert!(model.freeze(&all).is_err());
    model.freeze(&["fc1".into(), "conv1".into()]).unwrap();
    assert_eq!(model.frozen(), ["conv1", "fc1"]);
}

#[test]
fn the_kinds_layer_names_are_the_models() {
    for kind in ModelKind::ALL {
        let (m, _) = Model::init(kind, width_for(kind), 1, &Device::Cpu).unwrap();
        assert_eq!(kind.layer_names(), m.layer_names(), "{kind}");
    }
}

/// The one-image inference path (`infer_one`, what plaintext prediction runs) gives the
/// training forward's logits for every model, on random weights and inputs.
#[test]
fn one_image_inference_equals_the_tensor_forward_for_every_model() {
    for kind in ModelKind::ALL {
        for seed in [3, 9] {
            let (model, _vm) = Model::init(kind, width_for(kind), seed, &Device::Cpu).unwrap();
            let x = random_input(kind, 1, seed + 100);
            let want = model
                .forward_with(&x, None)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let px = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let got = model.infer_one(&px).unwrap();
            let via_tensor = model.infer(&x).unwrap().to_vec2::<f32>().unwrap();
            assert_eq!(got.len(), want[0].len(), "{kind}");
            assert_eq!(via_tensor[0], got, "{kind}");
            for (a, b) in got.iter().zip(&want[0]) {
                assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{kind}: {a} vs {b}");
            }
        }
    }
}

/// Each call sees the weights as they are now (no stale copy), and a second call on the
/// reused buffers gives the same answer as the first.
#[test]
fn one_image_inference_follows_weight_updates_and_repeats() {
    let (model, vm) = Model::init(ModelKind::DnnAv, 1.0, 4, &Device::Cpu).unwrap();
    let x = random_input(ModelKind::DnnAv, 1, 8);
    let px = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let before = model.infer_one(&px).unwrap();
    assert_eq!(before, model.infer_one(&px).unwrap());
    let data = vm.data().lock().unwrap();
    let w = data.get("conv1.weight").unwrap();
    w.set(&(w.as_tensor() * 2.0).unwrap()).unwrap();
    drop(data);
    let after = model.infer_one(&px).unwrap();
    let want = model
        .forward_with(&x, None)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_ne!(before, after);
    for (a, b) in after.iter().zip(&want[0]) {
        assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
    }
}

#[test]
fn one_image_inference_names_a_wrong_length() {
    let (model, _vm) = Model::init(ModelKind::DnnMax, 1.0, 1, &Device::Cpu).unwrap();
    let e = model.infer_one(&[0.5; 100]).unwrap_err().to_string();
    assert!(e.contains("100") && e.contains("1x150x125"), "{e}");
}
