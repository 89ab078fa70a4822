//! What a DP run's epsilon rests on, checked through the real binary: the Poisson batches are
//! secret (never reproducible from `--seed`, never written to a file), a reproducible sampling
//! seed marks the run as not private, and the released `-best` file carries the whole run's
//! epsilon and no un-noised statistics of the training data.

use candle_core::Device;
use privxray::train::checkpoint;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_privxray"))
}

fn run(dir: &Path, args: &[&str]) -> Output {
    let o = bin().args(args).current_dir(dir).output().unwrap();
    assert!(
        o.status.success(),
        "privxray {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn synth(dir: &Path, count: &str) -> PathBuf {
    let data = dir.join("synth");
    run(
        dir,
        &[
            "synth",
            "--out",
            data.to_str().unwrap(),
            "--count",
            count,
            "--seed",
            "4",
        ],
    );
    data
}

/// A short DP-SGD run of dnn-av; returns (its output, its checkpoint folder).
fn dp_train(
    dir: &Path,
    data: &Path,
    name: &str,
    epochs: &str,
    extra: &[&str],
) -> (Output, PathBuf) {
    let ck = dir.join(name);
    let metrics = dir.join(format!("{name}.jsonl"));
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--model",
        "dnn-av",
        "--epochs",
        epochs,
        "--batch-size",
        "8",
        "--patience",
        "0",
        "--dp",
        "--noise-multiplier",
        "1.0",
        "--seed",
        "5",
        "--insecure-noise-seed",
        "3",
        "--checkpoint-dir",
        ck.to_str().unwrap(),
        "--metrics",
        metrics.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    (run(dir, &args), ck)
}

/// Largest absolute difference between the weights of two checkpoints.
fn weight_distance(a: &Path, b: &Path) -> f32 {
    let a = checkpoint::load(a, &Device::Cpu).unwrap();
    let b = checkpoint::load(b, &Device::Cpu).unwrap();
    let mut worst = 0f32;
    for (name, ta) in &a.tensors {
        let tb = &b.tensors[name];
        let d = (ta - tb)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        worst = worst.max(d);
    }
    worst
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir` (recursively) with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

#[test]
fn poisson_sampling_is_secret_unless_a_run_asks_and_then_it_is_not_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), "48");
    // Same --seed (initialisation, split, dropout) and the same noise: only the secret batch
    // draws can tell the two runs apart.
    let (_, a) = dp_train(dir.path(), &data, "a", "1", &[]);
    let (_, b) = dp_train(dir.path(), &data, "b", "1", &[]);
    let last = "dnn-av-last.safetensors";
    let d = weight_distance(&a.join(last), &b.join(last));
    assert!(d > 1e-4, "two runs drew the same batches: distance {d}");

    const SEED: &str = "918273645011";
    let (out_c, c) = dp_train(
        dir.path(),
        &data,
        "c",
        "1",
        &["--insecure-sampling-seed", SEED],
    );
    let (_, e) = dp_train(
        dir.path(),
        &data,
        "e",
        "1",
        &["--insecure-sampling-seed", SEED],
    );
    let d = weight_distance(&c.join(last), &e.join(last));
    assert!(
        d <= 1e-5,
        "a fixed sampling seed did not reproduce the run: {d}"
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out_c.stdout),
        String::from_utf8_lossy(&out_c.stderr)
    );
    assert!(
        said.contains("epsilon not valid: reproducible sampling"),
        "{said}"
    );
    // The files say so too, and hold neither seed in any form.
    let meta = checkpoint::read_meta(&c.join("dnn-av-best.safetensors")).unwrap();
    assert_eq!(
        meta.epsilon_warning().as_deref(),
        Some("epsilon not valid: reproducible sampling and noise")
    );
    // So does the audit, beside the claim it prints.
    let o = run(
        dir.path(),
        &[
            "audit",
            "--model",
            c.join("dnn-av-best.safetensors").to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["epsilon_warning"], "epsilon not valid: reproducible sampling and noise",
        "{v}"
    );
    let seed: u64 = SEED.parse().unwrap();
    let mut written = files(&c);
    written.push((
        dir.path().join("c.jsonl"),
        std::fs::read(dir.path().join("c.jsonl")).unwrap(),
    ));
    assert!(written.len() >= 3, "{written:?}");
    for (path, bytes) in &written {
        for needle in [
            SEED.as_bytes(),
            &seed.to_le_bytes()[..],
            &seed.to_be_bytes()[..],
        ] {
            assert!(
                !contains(bytes, needle),
                "{} holds the sampling seed",
                path.display()
            );
        }
    }
    // The run with only a fixed noise seed is marked for that alone.
    let meta = checkpoint::read_meta(&a.join("dnn-av-best.safetensors")).unwrap();
    assert_eq!(
        meta.epsilon_warning().as_deref(),
        Some("epsilon not valid: reproducible noise")
    );
}

#[test]
fn the_release_holds_the_runs_epsilon_and_no_training_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), "48");
    let (_, ck) = dp_train(dir.path(), &data, "r", "3", &["--class-weights", "auto"]);
    let best = ck.join("dnn-av-best.safetensors");
    let last = ck.join("dnn-av-last.safetensors");
    let stream = std::fs::read_to_string(dir.path().join("r.jsonl")).unwrap();
    let event = |name: &str| -> serde_json::Value {
        stream
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["event"] == name)
            .unwrap_or_else(|| panic!("no {name} event"))
    };
    let finished = event("finished");
    let per_epoch = event("started")["steps_per_epoch"].as_u64().unwrap();
    let run_epsilon = finished["epsilon"].as_f64().unwrap();

    // The header of the release, as anyone holding the file reads it.
    let bytes = std::fs::read(&best).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8_lossy(&bytes[8..8 + n]).to_string();
    for private in [
        "train_loss",
        "train_acc",
        "clipped_fraction",
        "median_grad_norm",
        "class_counts",
    ] {
        assert!(!header.contains(private), "the release holds {private}");
    }
    let meta = checkpoint::read_meta(&best).unwrap();
    assert_eq!(meta.epsilon, Some(run_epsilon));
    assert_eq!(meta.neighbouring.as_deref(), Some("add-remove"));
    // Three epochs of steps plus the noisy class counts, whichever epoch was best.
    let steps: u64 = meta.privacy_ledger.iter().map(|s| s.steps).sum();
    assert_eq!(steps, 3 * per_epoch + 1, "{:?}", meta.privacy_ledger);

    // The data holder's files keep what the release does not.
    let last_meta = checkpoint::read_meta(&last).unwrap();
    assert!(last_meta.history.iter().all(|r| r.train_loss.is_some()));
    assert!(stream.contains("\"train_loss\""));
    assert_eq!(last_meta.epsilon, Some(run_epsilon));

    // `privxray epsilon` over the recorded ledger gives the same figure.
    let o = run(
        dir.path(),
        &["epsilon", "--checkpoint", best.to_str().unwrap(), "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        (v["epsilon"].as_f64().unwrap() - run_epsilon).abs() < 1e-9,
        "{v}"
    );
    assert_eq!(v["neighbouring"], "add-remove");

    // The resume file still resumes.
    let (out, ck2) = dp_train(
        dir.path(),
        &data,
        "r",
        "4",
        &["--resume", last.to_str().unwrap()],
    );
    let resumed = checkpoint::read_meta(&ck2.join("dnn-av-last.safetensors")).unwrap();
    assert_eq!(resumed.epoch, 4, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(resumed.epsilon.unwrap() > run_epsilon);
}

#[test]
fn epsilon_json_names_the_neighbouring_relation() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        dir.path(),
        &[
            "epsilon",
            "--dataset-size",
            "5216",
            "--batch-size",
            "64",
            "--noise-multiplier",
            "1.0",
            "--epochs",
            "15",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["neighbouring"], "add-remove");
    assert!(
        (v["epsilon"].as_f64().unwrap() - 2.8300678959).abs() < 1e-6,
        "{v}"
    );
}

/// Choosing the best of several runs looks at all of them: the sweep's epsilon of selection is
/// every run's ledger composed, above each run's own and below their sum (RDP composes more
/// tightly than adding epsilons).
#[test]
fn sweep_prices_the_choice_of_its_best_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), "48");
    let out = dir.path().join("sweep");
    run(
        dir.path(),
        &[
            "sweep",
            "--data",
            data.to_str().unwrap(),
            "--model",
            "dnn-av",
            "--noise-multipliers",
            "0.8,1.5",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("sweep.json")).unwrap()).unwrap();
    let runs: Vec<f64> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["epsilon"].as_f64().unwrap())
        .collect();
    let selection = v["epsilon_of_selection"].as_f64().unwrap();
    assert_eq!(runs.len(), 2);
    assert!(
        runs.iter().all(|&e| selection > e) && selection < runs.iter().sum::<f64>(),
        "{runs:?} {selection}"
    );
    let md = std::fs::read_to_string(out.join("sweep.md")).unwrap();
    assert!(
        md.contains("epsilon of releasing the best of these 2 runs"),
        "{md}"
    );
}
