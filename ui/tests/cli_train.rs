//! Training from the command line: a training killed with SIGKILL at any moment leaves the last
//! good checkpoints loadable, and a resumed run continues from them.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_privxray"))
}

#[test]
fn killed_training_leaves_the_last_good_checkpoint_intact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("synth");
    let ck = dir.path().join("ck");
    let d = data.to_str().unwrap();
    assert!(bin()
        .args(["synth", "--out", d, "--count", "48", "--seed", "4"])
        .output()
        .unwrap()
        .status
        .success());
    let last = ck.join("dnn-max-last.safetensors");
    let best = ck.join("dnn-max-best.safetensors");
    let mut checked = 0;
    // Kill at growing delays until checkpoints exist (a loaded machine is slow to write the
    // first), then at four more points spread over the epochs.
    let mut delay_ms = 800u64;
    let mut kills_after_first = 0;
    let started = Instant::now();
    while kills_after_first < 4 && started.elapsed() < Duration::from_secs(240) {
        delay_ms += 700;
        let mut args = vec![
            "train",
            "--data",
            d,
            "--model",
            "dnn-max",
            "--epochs",
            "40",
            "--batch-size",
            "8",
            "--seed",
            "1",
            "--patience",
            "0",
            "--checkpoint-dir",
            ck.to_str().unwrap(),
        ];
        let resume = last.to_str().unwrap().to_string();
        if last.exists() {
            args.extend(["--resume", &resume]);
        }
        let mut child = bin()
            .args(&args)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        for file in [&last, &best] {
            if !file.exists() {
                continue;
            }
            let t0 = Instant::now();
            let out = bin()
                .args([
                    "evaluate",
                    "--model",
                    file.to_str().unwrap(),
                    "--data",
                    d,
                    "--json",
                ])
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{} unusable after kill at {delay_ms} ms: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(v["accuracy"].as_f64().is_some());
            assert!(t0.elapsed() < Duration::from_secs(120));
            checked += 1;
        }
        if last.exists() {
            kills_after_first += 1;
        }
    }
    assert!(
        checked > 0,
        "no checkpoint was ever written; the kills came too early"
    );
}
