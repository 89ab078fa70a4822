//! Three `privxray party` processes on loopback serve private predictions over Noise: the
//! predictions equal plaintext `predict --model`; a request before the model is shared gets a
//! clear error; a party killed mid-request gives the client a clear error, and after its
//! restart (it reloads its stored model share) the parties serve again; a model owner with an
//! unknown key is refused and the refusal is in the party's log.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_privxray"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run_in(dir: &Path, args: &[&str]) -> Output {
    bin()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run privxray")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run_in(dir, args);
    assert!(
        out.status.success(),
        "privxray {args:?} failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Kills every child on drop, so a failing test leaves no party running.
#[derive(Default)]
struct Children(Vec<(usize, Child)>);

impl Children {
    fn kill(&mut self, id: usize) {
        if let Some(pos) = self.0.iter().position(|(i, _)| *i == id) {
            let (_, mut c) = self.0.remove(pos);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_ports() -> [u16; 3] {
    // Bound together so they differ; released just before the parties bind them.
    let ls: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| ls[i].local_addr().unwrap().port())
}

fn keygen(dir: &Path, name: &str) -> String {
    ok(dir, &["keygen", "--out", name]).trim().to_owned()
}

fn parties_toml(owner: &str, keys: &[String; 3], ports: [u16; 3]) -> String {
    let mut s = format!(
        "owner_public_key = \"{owner}\"\n\n[timeouts]\nconnect_ms = 1000\nhandshake_ms = 5000\n\
         io_ms = 60000\nstartup_ms = 5000\n"
    );
    for i in 0..3 {
        s.push_str(&format!(
            "\n[[party]]\nid = {i}\naddress = \"127.0.0.1:{}\"\npublic_key = \"{}\"\n",
            ports[i], keys[i]
        ));
    }
    s
}

fn start_party(dir: &Path, id: usize, log: &str) -> Child {
    let err = fs::File::create(dir.join(log)).unwrap();
    bin()
        .current_dir(dir)
        .args([
            "party",
            "--id",
            &id.to_string(),
            "--config",
            "parties.toml",
            "--key",
            &format!("p{id}.key"),
        ])
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("start party")
}

/// Waits until `log` holds at least `count` lines containing `needle` (bounded, not timed:
/// the bound only turns a hang into a failure).
fn wait_for_log(dir: &Path, log: &str, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let content = fs::read_to_string(dir.join(log)).unwrap_or_default();
        if content.matches(needle).count() >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{log} never showed {needle:?} {count} times:\n{content}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(serde::Deserialize, Debug)]
struct Pred {
    image: String,
    class: String,
    probability: f64,
    seconds: f64,
    bytes: Option<u64>,
    rounds: Option<u64>,
}

fn preds(json: &str) -> Vec<Pred> {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{json}"))
}

fn images(dir: &Path) -> Vec<String> {
    let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/kermany-val-sample");
    let root = if real.is_dir() {
        real
    } else {
        eprintln!(
            "NOTICE: ../shared is absent; using synthetic images instead of the real samples"
        );
        dir.join("synth/test")
    };
    let mut out: Vec<String> = ["NORMAL", "PNEUMONIA"]
        .iter()
        .flat_map(|c| fs::read_dir(root.join(c)).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .map(|p: PathBuf| p.display().to_string())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no images under {}", root.display());
    out
}

#[test]
fn three_party_processes_serve_private_predictions_and_survive_faults() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(
        dir,
        &["synth", "--out", "synth", "--count", "40", "--seed", "1"],
    );
    ok(
        dir,
        &[
            "train",
            "--data",
            "synth",
            "--model",
            "dnn-max",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--seed",
            "1",
            "--out",
            "model.safetensors",
            "--checkpoint-dir",
            "ckpt",
        ],
    );
    let keys: [String; 3] = std::array::from_fn(|i| keygen(dir, &format!("p{i}.key")));
    let owner = keygen(dir, "owner.key");
    let ports = free_ports();
    fs::write(dir.join("parties.toml"), parties_toml(&owner, &keys, ports)).unwrap();

    let mut children = Children::default();
    for id in 0..3 {
        children
            .0
            .push((id, start_party(dir, id, &format!("p{id}.log"))));
    }
    for id in 0..3 {
        wait_for_log(dir, &format!("p{id}.log"), "mesh ready", 1);
    }
    let imgs = images(dir);
    let first = imgs[0].as_str();

    // Before the model is shared: a clear refusal, not a hang.
    let out = run_in(dir, &["predict", "--config", "parties.toml", first]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("no model has been shared"), "{err}");

    let shared = ok(
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
    assert!(shared.contains("dnn-max"), "{shared}");
    for id in 0..3 {
        assert!(dir.join(format!("p{id}.key.model-share")).is_file());
    }

    // Private predictions equal the plaintext ones.
    let mut args = vec!["predict", "--config", "parties.toml", "--json"];
    args.extend(imgs.iter().map(String::as_str));
    let private = preds(&ok(dir, &args));
    let mut args = vec!["predict", "--model", "model.safetensors", "--json"];
    args.extend(imgs.iter().map(String::as_str));
    let plain = preds(&ok(dir, &args));
    assert_eq!(private.len(), imgs.len());
    for (p, q) in private.iter().zip(&plain) {
        assert_eq!(p.image, q.image);
        assert_eq!(p.class, q.class, "{}", p.image);
        assert!(
            (p.probability - q.probability).abs() < 1e-2,
            "{}: private {} vs plaintext {}",
            p.image,
            p.probability,
            q.probability
        );
        assert!(p.seconds > 0.0);
        assert!(
            p.bytes.unwrap_or(0) > 0 && p.rounds.unwrap_or(0) > 0,
            "{p:?}"
        );
    }
    eprintln!(
        "{} private predictions agree with plaintext; {} MB and {} rounds per image",
        private.len(),
        private[0].bytes.unwrap_or(0) as f64 / 1e6,
        private[0].rounds.unwrap_or(0)
    );

    // Kill party 1 while it computes: the client's error names the failure and arrives
    // within its timeout (a hang would exceed it; the client enforces the bound itself).
    let served_before = fs::read_to_string(dir.join("p1.log"))
        .unwrap()
        .matches("served a request")
        .count();
    let many: Vec<&str> = std::iter::repeat_n(first, 50).collect();
    let mut args = vec![
        "predict",
        "--config",
        "parties.toml",
        "--timeout-ms",
        "15000",
    ];
    args.extend(&many);
    let client = bin()
        .current_dir(dir)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until party 1 has served at least one of them, then kill it mid-stream.
    wait_for_log(dir, "p1.log", "served a request", served_before + 1);
    children.kill(1);
    let out = client.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "the client succeeded without party 1"
    );
    let err = text(&out.stderr);
    assert!(err.contains("party 1"), "{err}");
    assert!(
        err.contains("closed the connection") || err.contains("failed"),
        "{err}"
    );
    assert!(
        !err.contains("did not answer within"),
        "timed out instead: {err}"
    );

    // Restart party 1: it reloads its share, the mesh re-forms and the parties serve again.
    children
        .0
        .push((1, start_party(dir, 1, "p1-restarted.log")));
    wait_for_log(
        dir,
        "p1-restarted.log",
        "resuming with the stored model share",
        1,
    );
    wait_for_log(dir, "p1-restarted.log", "mesh ready", 1);
    let mut again = None;
    for _ in 0..20 {
        let out = run_in(
            dir,
            &["predict", "--config", "parties.toml", "--json", first],
        );
        if out.status.success() {
            again = Some(preds(&text(&out.stdout)));
            break;
        }
        // The mesh may still be settling after the restart.
        std::thread::sleep(Duration::from_millis(500));
    }
    let again = again.expect("no prediction after restarting party 1");
    assert_eq!(again[0].class, plain[0].class);
    assert!((again[0].probability - plain[0].probability).abs() < 1e-2);

    // A model owner whose key is not pinned: it must use a file naming its key, which the
    // parties refuse (their file names the real owner), and they say so in their log.
    let impostor = keygen(dir, "impostor.key");
    fs::write(
        dir.join("forged.toml"),
        parties_toml(&impostor, &keys, ports),
    )
    .unwrap();
    let out = run_in(
        dir,
        &[
            "share-model",
            "--model",
            "model.safetensors",
            "--config",
            "forged.toml",
            "--key",
            "impostor.key",
        ],
    );
    assert!(!out.status.success(), "the impostor shared a model");
    assert!(
        text(&out.stderr).contains("refused"),
        "{}",
        text(&out.stderr)
    );
    wait_for_log(dir, "p0.log", "refused model owner", 1);
    // And the real owner's key with a forged file is refused locally, before connecting.
    let out = run_in(
        dir,
        &[
            "share-model",
            "--model",
            "model.safetensors",
            "--config",
            "forged.toml",
            "--key",
            "owner.key",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("owner_public_key"),
        "{}",
        text(&out.stderr)
    );

    // The parties still serve after all of this, and their logs hold no file names.
    let after = preds(&ok(
        dir,
        &["predict", "--config", "parties.toml", "--json", first],
    ));
    assert_eq!(after[0].class, plain[0].class);
    for log in ["p0.log", "p1.log", "p1-restarted.log", "p2.log"] {
        let content = fs::read_to_string(dir.join(log)).unwrap();
        for name in [".jpeg", ".key", "model-share", "safetensors"] {
            assert!(!content.contains(name), "{log} mentions {name}:\n{content}");
        }
    }
}
