//! Hostile checkpoints, images and arguments from the command line (issue 20, items 7-12): a
//! bad file is refused with its name and reason, and never costs the good ones.

use candle_core::{Device, Tensor};
use privxray::train::checkpoint::{self, CheckpointMeta};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary, run from the system's temporary folder: the commands keep their preprocessing
/// cache in `data/cache` under the working directory, which must not be the source tree.
fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_privxray"));
    c.current_dir(std::env::temp_dir());
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn shipped_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/models/dnn-max-synthetic.safetensors")
}

/// 48 synthetic images under `dir/synth`.
fn synth(dir: &Path) -> PathBuf {
    let data = dir.join("synth");
    let o = run(&[
        "synth",
        "--out",
        data.to_str().unwrap(),
        "--count",
        "48",
        "--seed",
        "4",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    data
}

/// The first image of `data/test/<class>`.
fn image(data: &Path, class: &str) -> PathBuf {
    let dir = data.join("test").join(class);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names.remove(0)
}

/// The shipped model with its metadata and tensors changed by `f`, written to `out`.
fn corrupted(
    out: &Path,
    f: impl FnOnce(&mut CheckpointMeta, &mut Vec<(String, Tensor)>),
) -> PathBuf {
    let good = checkpoint::load(&shipped_model(), &Device::Cpu).unwrap();
    let mut meta = good.meta.clone();
    let mut tensors: Vec<(String, Tensor)> = good.tensors.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    f(&mut meta, &mut tensors);
    checkpoint::save(out, &meta, &tensors).unwrap();
    out.to_path_buf()
}

#[test]
fn nan_weights_are_refused_by_evaluate_and_predict_naming_the_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path());
    let bad = corrupted(&dir.path().join("nan.safetensors"), |_, tensors| {
        let (name, t) = tensors
            .iter_mut()
            .find(|(n, _)| n == "conv2.weight")
            .unwrap();
        let mut v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v[7] = f32::NAN;
        *t = Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap();
        assert_eq!(name, "conv2.weight");
    });
    let model = bad.to_str().unwrap();
    let img = image(&data, "NORMAL");
    for args in [
        vec![
            "evaluate",
            "--model",
            model,
            "--data",
            data.to_str().unwrap(),
        ],
        vec!["predict", "--model", model, img.to_str().unwrap()],
        vec!["predict", "--json", "--model", model, img.to_str().unwrap()],
    ] {
        let o = run(&args);
        let e = stderr(&o);
        assert!(!o.status.success(), "{args:?} succeeded: {}", stdout(&o));
        assert!(e.contains("nan.safetensors"), "{args:?}: {e}");
        assert!(
            e.contains("conv2.weight") && e.contains("NaN"),
            "{args:?}: {e}"
        );
        assert!(!stdout(&o).contains("NaN"), "{args:?}: {}", stdout(&o));
    }
    // The engine's one loader is where it is refused, so every command gets it.
    let e = checkpoint::load(&bad, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tensor conv2.weight holds NaN at index 7"),
        "{e}"
    );
}

#[test]
fn checkpoint_metadata_the_model_cannot_have_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path());
    let img = image(&data, "NORMAL");
    type Edit = fn(&mut CheckpointMeta);
    let cases: [(&str, Edit, &str); 4] = [
        ("technique", |m| m.technique = 9, "technique 9"),
        ("width", |m| m.width = 1e9, "width 1000000000"),
        ("epoch", |m| m.epoch = usize::MAX / 2, "epoch"),
        (
            "optimizer_step",
            |m| m.optimizer_step = u64::MAX,
            "optimizer_step",
        ),
    ];
    for (field, edit, said) in cases {
        let path = dir.path().join(format!("{field}.safetensors"));
        corrupted(&path, |m, _| edit(m));
        let o = run(&[
            "predict",
            "--model",
            path.to_str().unwrap(),
            img.to_str().unwrap(),
        ]);
        let e = stderr(&o);
        assert!(!o.status.success(), "{field}: {}", stdout(&o));
        assert!(e.contains(path.to_str().unwrap()), "{field}: {e}");
        assert!(e.contains(said), "{field}: {e}");
        assert!(checkpoint::read_meta(&path).is_err(), "{field}");
    }
    // A tensor of a shape the model does not have is refused by the loader too.
    let path = dir.path().join("shape.safetensors");
    corrupted(&path, |_, tensors| {
        let t = tensors.iter_mut().find(|(n, _)| n == "fc2.bias").unwrap();
        t.1 = Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap();
    });
    let e = checkpoint::load(&path, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("tensor fc2.bias has shape [3]"), "{e}");
}

fn train(data: &Path, ck: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--model",
        "dnn-max",
        "--batch-size",
        "8",
        "--seed",
        "1",
        "--patience",
        "0",
        "--checkpoint-dir",
        ck.to_str().unwrap(),
    ];
    args.extend(extra);
    run(&args)
}

fn snapshot(paths: &[&Path]) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    paths
        .iter()
        .map(|p| (p.to_path_buf(), std::fs::read(p).ok()))
        .collect()
}

#[test]
fn resume_of_a_finished_run_says_so_and_changes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path());
    let ck = dir.path().join("ck");
    let out = dir.path().join("out.safetensors");
    let o = train(
        &data,
        &ck,
        &["--epochs", "1", "--out", out.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let last = ck.join("dnn-max-last.safetensors");
    let best = ck.join("dnn-max-best.safetensors");
    let metrics = dir.path().join("m.jsonl");
    let files = [
        last.as_path(),
        best.as_path(),
        out.as_path(),
        metrics.as_path(),
    ];
    let before = snapshot(&files);
    for epochs in ["1", "0"] {
        let o = train(
            &data,
            &ck,
            &[
                "--epochs",
                epochs,
                "--resume",
                last.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--metrics",
                metrics.to_str().unwrap(),
            ],
        );
        let e = stderr(&o);
        assert!(!o.status.success(), "--epochs {epochs}: {e}");
        assert!(
            e.contains("already trained 1 epochs; ask for more with --epochs 2"),
            "--epochs {epochs}: {e}"
        );
        assert!(e.contains("dnn-max-last.safetensors"), "{e}");
        assert_eq!(snapshot(&files), before, "--epochs {epochs} changed a file");
    }
}

#[test]
fn a_run_resumed_away_from_its_release_still_writes_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path());
    let ck = dir.path().join("ck");
    let o = train(&data, &ck, &["--epochs", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Resumed from a copy into a fresh checkpoint folder: the first run's -best is not there.
    let moved = dir.path().join("elsewhere.safetensors");
    std::fs::copy(ck.join("dnn-max-last.safetensors"), &moved).unwrap();
    let ck2 = dir.path().join("ck2");
    let out = dir.path().join("out.safetensors");
    let o = train(
        &data,
        &ck2,
        &[
            "--epochs",
            "2",
            "--resume",
            moved.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let meta = checkpoint::read_meta(&out).unwrap();
    assert_eq!(meta.epoch, 2);
    assert!(ck2.join("dnn-max-best.safetensors").exists());
}

fn predictions(model: &Path, extra: &[&str], images: &[&Path]) -> Output {
    let mut args = vec!["predict", "--model", model.to_str().unwrap()];
    args.extend(extra);
    args.extend(images.iter().map(|p| p.to_str().unwrap()));
    run(&args)
}

#[test]
fn one_bad_image_among_good_ones_costs_only_itself_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path());
    let normal = image(&data, "NORMAL");
    let pneumonia = image(&data, "PNEUMONIA");
    let bad = dir.path().join("bad.png");
    std::fs::write(&bad, b"not an image at all").unwrap();
    let images = [normal.as_path(), bad.as_path(), pneumonia.as_path()];
    let model = shipped_model();

    let o = predictions(&model, &[], &images);
    assert!(!o.status.success());
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with(normal.to_str().unwrap()), "{text}");
    assert!(lines[0].contains("probability of PNEUMONIA"), "{text}");
    assert!(
        lines[1].starts_with(&format!("{}: error: ", bad.display())),
        "{text}"
    );
    assert!(lines[2].starts_with(pneumonia.to_str().unwrap()), "{text}");
    assert!(lines[2].contains("probability of PNEUMONIA"), "{text}");
    assert!(stderr(&o).contains("1 of 3 images"), "{}", stderr(&o));

    for extra in [
        &["--json"][..],
        &["--json", "--simulate-mpc", "--batch", "2"][..],
    ] {
        let o = predictions(&model, extra, &images);
        assert!(!o.status.success(), "{extra:?}");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let a = v.as_array().unwrap();
        assert_eq!(a.len(), 3, "{extra:?}: {v}");
        for (i, path) in images.iter().enumerate() {
            assert_eq!(a[i]["image"], path.to_str().unwrap(), "{extra:?}: {v}");
        }
        for i in [0, 2] {
            let p = a[i]["probability"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&p), "{extra:?}: {v}");
            assert!(a[i].get("error").is_none(), "{extra:?}: {v}");
        }
        assert!(a[1]["error"].as_str().unwrap().contains("image"), "{v}");
        assert!(a[1].get("probability").is_none(), "{v}");
    }

    // All good: exit 0.
    let o = predictions(&model, &["--json"], &[normal.as_path()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn keygen_refuses_a_missing_directory_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir");
    let key = missing.join("k");
    let o = run(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("does not exist"), "{e}");
    assert!(e.contains(missing.to_str().unwrap()), "{e}");
    assert!(!dir.path().join("no").exists());
    // An existing directory still works.
    let o = run(&["keygen", "--out", dir.path().join("k").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_wrapped_privacy_error_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path());
    let o = train(
        &data,
        &dir.path().join("ck"),
        &["--epochs", "1", "--dp", "--noise-multiplier=-1"],
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    let line = e.lines().find(|l| l.starts_with("error:")).unwrap();
    assert_eq!(line.matches("must be finite").count(), 1, "{line}");
    assert_eq!(line.matches("got -1").count(), 1, "{line}");
}

#[test]
fn a_target_epsilon_no_noise_can_usefully_reach_is_refused_plainly() {
    let base = [
        "epsilon",
        "--dataset-size",
        "100",
        "--batch-size",
        "10",
        "--epochs",
        "1",
        "--target-epsilon",
    ];
    let o = bin().args(base).arg("1e300").output().unwrap();
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("at most 1000"), "{e}");
    assert!(e.len() < 400, "{e}");
    assert!(stdout(&o).is_empty());
    let o = bin().args(base).arg("8").output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("reaches epsilon"), "{}", stdout(&o));
}
