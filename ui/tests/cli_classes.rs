//! Any labelled image folders, any number of classes: three arbitrarily named classes train,
//! evaluate and predict from the command line, and `evaluate --json` agrees with a confusion
//! matrix counted by hand from `predict --json`.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_privxray"))
}

const CLASSES: [&str; 3] = ["cat", "dog", "fox"];

/// A class's pattern: cat bright, dog dark, fox a left-to-right ramp; a little noise per image.
fn png(path: &Path, class: usize, seed: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::GrayImage::from_fn(48, 56, |x, y| {
        let base = match class {
            0 => 200,
            1 => 40,
            _ => (x * 5) as u8,
        };
        let noise = ((x * 31 + y * 17 + seed * 7) % 23) as u8;
        image::Luma([base.saturating_add(noise)])
    });
    img.save(path).unwrap();
}

fn run(dir: &Path, args: &[&str]) -> String {
    let out = bin().args(args).current_dir(dir).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn three_named_classes_train_evaluate_and_predict() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pets");
    let mut test_images = Vec::new();
    for (c, name) in CLASSES.iter().enumerate() {
        for i in 0..10 {
            png(&data.join(format!("train/{name}/{i}.png")), c, i);
        }
        for i in 0..4 {
            let p = data.join(format!("test/{name}/{i}.png"));
            png(&p, c, 100 + i);
            test_images.push((p, *name));
        }
    }
    let d = data.to_str().unwrap();
    let ck = dir.path().join("ck");
    let best = ck.join("dnn-max-best.safetensors");
    run(
        dir.path(),
        &[
            "train",
            "--data",
            d,
            "--model",
            "dnn-max",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--seed",
            "3",
            "--class-weights",
            "1:2:1",
            "--checkpoint-dir",
            ck.to_str().unwrap(),
        ],
    );
    let model = best.to_str().unwrap();
    let eval: Value = serde_json::from_str(&run(
        dir.path(),
        &["evaluate", "--model", model, "--data", d, "--json"],
    ))
    .unwrap();
    let mut args = vec!["predict", "--model", model, "--json"];
    let paths: Vec<String> = test_images
        .iter()
        .map(|(p, _)| p.to_str().unwrap().to_string())
        .collect();
    args.extend(paths.iter().map(String::as_str));
    let preds: Value = serde_json::from_str(&run(dir.path(), &args)).unwrap();

    assert_eq!(eval["classes"], serde_json::json!(CLASSES));
    let mut confusion = [[0u64; 3]; 3];
    for ((_, truth), p) in test_images.iter().zip(preds.as_array().unwrap()) {
        let probs = p["probabilities"].as_object().unwrap();
        assert_eq!(probs.len(), 3, "{p}");
        let sum: f64 = probs.values().map(|v| v.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-4, "{p}");
        let class = p["class"].as_str().unwrap();
        let top = probs
            .iter()
            .max_by(|a, b| a.1.as_f64().unwrap().total_cmp(&b.1.as_f64().unwrap()))
            .unwrap();
        assert_eq!(class, top.0, "the class is the most probable");
        assert_eq!(p["probability"].as_f64(), top.1.as_f64());
        let t = CLASSES.iter().position(|c| c == truth).unwrap();
        let q = CLASSES.iter().position(|c| *c == class).unwrap();
        confusion[t][q] += 1;
    }
    assert_eq!(eval["confusion"], serde_json::json!(confusion));
    assert_eq!(eval["images"], 12);
    let correct: u64 = (0..3).map(|k| confusion[k][k]).sum();
    let close = |v: &Value, want: f64| (v.as_f64().unwrap() - want).abs() < 1e-9;
    assert!(close(&eval["accuracy"], correct as f64 / 12.0), "{eval}");
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let mut f1_sum = 0.0;
    for (k, name) in CLASSES.iter().enumerate() {
        let tp = confusion[k][k];
        let fn_: u64 = confusion[k].iter().sum::<u64>() - tp;
        let fp: u64 = (0..3).map(|r| confusion[r][k]).sum::<u64>() - tp;
        let tn = 12 - tp - fn_ - fp;
        let (p, r) = (ratio(tp, tp + fp), ratio(tp, tp + fn_));
        let f1 = if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        };
        f1_sum += f1;
        let c = &eval["per_class"][k];
        assert_eq!(c["class"], *name);
        assert!(close(&c["precision"], p), "{c}");
        assert!(close(&c["recall"], r), "{c}");
        assert!(close(&c["specificity"], ratio(tn, tn + fp)), "{c}");
        assert!(close(&c["f1"], f1), "{c}");
        assert!(c["roc_auc"].is_number(), "{c}");
    }
    assert!(close(&eval["macro_f1"], f1_sum / 3.0), "{eval}");

    // Private prediction (the three parties in process) carries the three logits: the same
    // class, every probability within 1e-2 of the plaintext one.
    let mut args = vec!["predict", "--model", model, "--simulate-mpc", "--json"];
    args.extend(paths[..3].iter().map(String::as_str));
    let private: Value = serde_json::from_str(&run(dir.path(), &args)).unwrap();
    for (q, p) in private
        .as_array()
        .unwrap()
        .iter()
        .zip(preds.as_array().unwrap())
    {
        assert_eq!(q["class"], p["class"], "{q} vs {p}");
        for name in CLASSES {
            let (a, b) = (&q["probabilities"][name], &p["probabilities"][name]);
            assert!(
                (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-2,
                "{q} vs {p}"
            );
        }
    }

    // The wrong number of class weights is refused, naming the classes.
    let out = bin()
        .args(["train", "--data", d, "--model", "dnn-max", "--epochs", "1"])
        .args(["--class-weights", "1:3", "--checkpoint-dir"])
        .arg(dir.path().join("ck2"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2 class weights for 3 classes (cat, dog, fox)"),
        "{err}"
    );
}
