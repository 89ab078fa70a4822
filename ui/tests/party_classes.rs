//! A three-class model (BACTERIA, NORMAL, VIRUS) predicts privately on the real samples: in
//! process (`predict --simulate-mpc`) and over three `privxray party` processes, the class is
//! the plaintext one and every class probability is within 1e-2 of it; the class names travel
//! with the shared model, so the client names the classes as the checkpoint does.

mod party_common;

use std::path::{Path, PathBuf};

use party_common::{keygen, ok, parties_toml, start_party, wait_for_log, Children};
use serde_json::Value;

const CLASSES: [&str; 3] = ["BACTERIA", "NORMAL", "VIRUS"];

/// The real radiographs: the bundled samples and, when ../shared is present, the Kermany
/// validation samples beside the checkout.
fn real_images() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut dirs = vec![root.join("assets/samples")];
    let shared = root.join("../shared/data/kermany-val-sample");
    if shared.is_dir() {
        dirs.push(shared);
    } else {
        eprintln!("NOTICE: ../shared is absent; only the bundled real samples are predicted");
    }
    let mut out: Vec<String> = dirs
        .iter()
        .flat_map(|d| ["NORMAL", "PNEUMONIA"].map(|c| d.join(c)))
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p: &PathBuf| p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    out.sort();
    assert!(out.len() >= 2, "no real samples found: {out:?}");
    out
}

fn predictions(dir: &Path, head: &[&str], images: &[String]) -> Vec<Value> {
    let mut args = head.to_vec();
    args.push("--json");
    args.extend(images.iter().map(String::as_str));
    let v: Value = serde_json::from_str(&ok(dir, &args)).unwrap();
    v.as_array().unwrap().clone()
}

/// Same image, same class, every class probability within 1e-2.
fn assert_agree(how: &str, private: &[Value], plain: &[Value]) {
    assert_eq!(private.len(), plain.len(), "{how}");
    for (q, p) in private.iter().zip(plain) {
        assert_eq!(q["image"], p["image"], "{how}");
        assert_eq!(q["class"], p["class"], "{how}: {q} vs {p}");
        let (qp, pp) = (
            q["probabilities"].as_object().unwrap(),
            p["probabilities"].as_object().unwrap(),
        );
        let names: Vec<&str> = pp.keys().map(String::as_str).collect();
        assert_eq!(names, CLASSES, "{how}: {p}");
        for name in CLASSES {
            let (a, b) = (qp[name].as_f64().unwrap(), pp[name].as_f64().unwrap());
            assert!((a - b).abs() < 1e-2, "{how}: {name} {a} vs {b}\n{q}\n{p}");
        }
    }
}

#[test]
fn three_class_private_prediction_equals_plaintext_in_process_and_over_parties() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(
        dir,
        &["synth", "--out", "synth", "--count", "60", "--seed", "5"],
    );
    ok(
        dir,
        &[
            "train",
            "--data",
            "synth",
            "--labels",
            "subtype",
            "--model",
            "dnn-max",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--seed",
            "2",
            "--out",
            "model.safetensors",
            "--checkpoint-dir",
            "ckpt",
        ],
    );
    let images = real_images();
    let plain = predictions(dir, &["predict", "--model", "model.safetensors"], &images);
    // A model that puts (almost) all probability on one class would make the comparison weak.
    let spread = plain
        .iter()
        .flat_map(|p| CLASSES.map(|c| p["probabilities"][c].as_f64().unwrap()))
        .filter(|&v| (0.02..0.98).contains(&v))
        .count();
    assert!(
        spread >= images.len(),
        "probabilities too extreme: {plain:?}"
    );

    let simulated = predictions(
        dir,
        &["predict", "--model", "model.safetensors", "--simulate-mpc"],
        &images,
    );
    assert_agree("in process", &simulated, &plain);

    // Three party processes on loopback.
    let keys: [String; 3] = std::array::from_fn(|i| keygen(dir, &format!("p{i}.key")));
    let owner = keygen(dir, "owner.key");
    std::fs::write(
        dir.join("parties.toml"),
        parties_toml(&owner, &keys, party_common::free_ports()),
    )
    .unwrap();
    let mut children = Children::default();
    for id in 0..3 {
        children.push(
            id,
            start_party(dir, id, "parties.toml", &format!("p{id}.log")),
        );
    }
    for id in 0..3 {
        wait_for_log(dir, &format!("p{id}.log"), "mesh ready", 1);
    }
    ok(
        dir,
        &[
            "share-model",
            "--model",
            "model.safetensors",
            "--config",
            "parties.toml",
            "--key",
            "owner.key",
        ],
    );
    let remote = predictions(dir, &["predict", "--config", "parties.toml"], &images);
    assert_agree("over party processes", &remote, &plain);
    eprintln!(
        "{} real images: three-class private prediction agrees with plaintext, in process and \
         over three party processes",
        images.len()
    );
}
