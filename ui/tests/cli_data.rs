//! The binary's data commands: help, synth, preprocess, errors, and a cache that survives kill -9.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_privxray"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run privxray")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn every_subcommand_has_help() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for sub in ["synth", "preprocess", "bench"] {
        assert!(help.contains(sub), "{sub} missing from --help");
        let o = run(&[sub, "--help"]);
        assert!(o.status.success(), "{sub} --help failed");
        assert!(text(&o.stdout).contains("Usage"), "{sub} --help");
    }
}

#[test]
fn bad_arguments_fail_cleanly() {
    let o = run(&[
        "preprocess",
        "--input",
        "/no/such/dir",
        "--technique",
        "1",
        "--no-cache",
    ]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("/no/such/dir") && err.contains("expected layout"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let o = run(&["preprocess", "--input", ".", "--technique", "3"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("technique must be 1 or 2"));
    let o = run(&["synth", "--out", "/tmp/x", "--count", "0"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("--count must be at least 1"));
    let o = run(&["train", "--data", ".", "--model", "dnn-max", "--ema", "1.5"]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("--ema") && err.contains("(0, 1)") && err.contains("1.5"),
        "{err}"
    );
}

#[test]
fn synth_then_preprocess_reports_counts_and_uses_cache() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("synth");
    let cache = dir.path().join("cache");
    let d = data.to_str().unwrap();
    let o = run(&["synth", "--out", d, "--count", "60", "--seed", "3"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("SYNTHETIC"));
    let args = [
        "preprocess",
        "--input",
        d,
        "--technique",
        "1",
        "--cache",
        cache.to_str().unwrap(),
        "--json",
    ];
    let first: serde_json::Value = serde_json::from_slice(&run(&args).stdout).unwrap();
    assert_eq!(first["images"], 60);
    assert_eq!(first["decoded"], 60);
    let total: u64 = first["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["normal"].as_u64().unwrap() + c["pneumonia"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 60);
    let splits: Vec<&str> = first["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["split"].as_str().unwrap())
        .collect();
    assert_eq!(splits, ["train", "test", "val"]);
    let second: serde_json::Value = serde_json::from_slice(&run(&args).stdout).unwrap();
    assert_eq!(second["from_cache"], 60);
    // The plain summary names splits, classes and the skipped list.
    let plain = text(&run(&args[..args.len() - 1]).stdout);
    assert!(
        plain.contains("NORMAL") && plain.contains("skipped: none"),
        "{plain}"
    );
}

/// kill -9 at many points of a run that writes a large cache: afterwards the cache is either
/// absent or whole, never corrupt.
#[test]
fn killed_preprocessing_never_leaves_a_corrupt_cache() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("synth");
    let cache = dir.path().join("cache");
    let d = data.to_str().unwrap();
    assert!(run(&["synth", "--out", d, "--count", "120", "--seed", "9"])
        .status
        .success());
    let c = cache.to_str().unwrap();
    let args = [
        "preprocess",
        "--input",
        d,
        "--technique",
        "2",
        "--cache",
        c,
        "--json",
    ];
    for (i, delay_ms) in [5u64, 40, 80, 120, 160, 200, 260, 330]
        .into_iter()
        .enumerate()
    {
        // Every other round, touch a file so the next run rewrites the cache.
        if i % 2 == 1 {
            let f = first_image(&data);
            let bytes = std::fs::read(&f).unwrap();
            std::fs::write(&f, bytes).unwrap();
        }
        let mut child = bin()
            .args(args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let out = run(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            v["cache_note"].is_null(),
            "after kill at {delay_ms} ms: {}",
            v["cache_note"]
        );
    }
}

fn first_image(root: &Path) -> std::path::PathBuf {
    let dir = root.join("train/PNEUMONIA");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.remove(0)
}
