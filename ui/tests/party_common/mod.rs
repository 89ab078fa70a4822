//! Helpers for the tests that run `privxray` party processes: the binary in a temporary folder,
//! keys and a parties.toml on free loopback ports, a trained dnn-max model ([`Setup`]), party
//! processes killed on drop, bounded waits on their logs, and the JSON predictions.
//!
//! The one helper module of the party tests: each test file includes it with `mod
//! party_common;` and uses what it needs.
#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_privxray"))
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    bin()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run privxray")
}

pub fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run_in(dir, args);
    assert!(
        out.status.success(),
        "privxray {args:?} failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Party processes, killed on drop so a failing test leaves none running.
#[derive(Default)]
pub struct Children(pub Vec<(usize, Child)>);

impl Children {
    pub fn push(&mut self, id: usize, child: Child) {
        self.0.push((id, child));
    }

    pub fn kill(&mut self, id: usize) {
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

pub fn free_ports() -> [u16; 3] {
    // Bound together so they differ; released just before the parties bind them.
    let ls: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| ls[i].local_addr().unwrap().port())
}

pub fn keygen(dir: &Path, name: &str) -> String {
    ok(dir, &["keygen", "--out", name]).trim().to_owned()
}

/// Timeouts of the test mesh: a short handshake deadline (what the flood test measures
/// against), generous I/O.
pub const HANDSHAKE_MS: u64 = 5000;

/// A trained model, four keys and a parties.toml on free loopback ports, in `dir`.
pub struct Setup {
    pub keys: [String; 3],
    pub owner: String,
    pub ports: [u16; 3],
}

impl Setup {
    pub fn new(dir: &Path) -> Self {
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
        let setup = Self { keys, owner, ports };
        fs::write(dir.join("parties.toml"), setup.toml(ports)).unwrap();
        setup
    }

    /// parties.toml with the given addresses (the identity part stays the same).
    pub fn toml(&self, ports: [u16; 3]) -> String {
        parties_toml(&self.owner, &self.keys, ports)
    }

    pub fn share_model(&self, dir: &Path) {
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
    }
}

/// parties.toml naming `owner`, the three party keys and loopback `ports`, with the test
/// mesh's timeouts.
pub fn parties_toml(owner: &str, keys: &[String; 3], ports: [u16; 3]) -> String {
    parties_toml_with_io(owner, keys, ports, 60_000)
}

/// [`parties_toml`] with another I/O timeout (requests of full-width models take minutes).
pub fn parties_toml_with_io(
    owner: &str,
    keys: &[String; 3],
    ports: [u16; 3],
    io_ms: u64,
) -> String {
    let mut s = format!(
        "owner_public_key = \"{owner}\"\n\n[timeouts]\nconnect_ms = 1000\nhandshake_ms = \
         {HANDSHAKE_MS}\nio_ms = {io_ms}\nstartup_ms = 5000\n"
    );
    for (i, (port, key)) in ports.iter().zip(keys).enumerate() {
        s.push_str(&format!(
            "\n[[party]]\nid = {i}\naddress = \"127.0.0.1:{port}\"\npublic_key = \"{key}\"\n"
        ));
    }
    s
}

/// Keys `p0.key`..`p2.key` and `owner.key`, and `parties.toml` naming them.
pub fn setup_keys(dir: &Path) {
    let keys: [String; 3] = std::array::from_fn(|i| keygen(dir, &format!("p{i}.key")));
    let owner = keygen(dir, "owner.key");
    fs::write(
        dir.join("parties.toml"),
        parties_toml(&owner, &keys, free_ports()),
    )
    .unwrap();
}

/// Starts party `id` with `config`, its stderr to `log`.
pub fn start_party(dir: &Path, id: usize, config: &str, log: &str) -> Child {
    let err = fs::File::create(dir.join(log)).unwrap();
    bin()
        .current_dir(dir)
        .args([
            "party",
            "--id",
            &id.to_string(),
            "--config",
            config,
            "--key",
            &format!("p{id}.key"),
        ])
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("start party")
}

/// How often `needle` appears in `log`.
pub fn log_count(dir: &Path, log: &str, needle: &str) -> usize {
    fs::read_to_string(dir.join(log))
        .unwrap_or_default()
        .matches(needle)
        .count()
}

/// Waits until `log` holds at least `count` lines containing `needle` (bounded, not timed:
/// the bound only turns a hang into a failure).
pub fn wait_for_log(dir: &Path, log: &str, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if log_count(dir, log, needle) >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{log} never showed {needle:?} {count} times:\n{}",
            fs::read_to_string(dir.join(log)).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The shipped synthetic DNN-AV checkpoint (no training needed).
pub fn shipped_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/models/dnn-av-synthetic.safetensors")
}

/// One bundled real sample.
pub fn sample_image() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/samples/NORMAL");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files.into_iter().next().expect("a bundled sample")
}

#[derive(serde::Deserialize, Debug)]
pub struct Pred {
    pub image: String,
    pub class: String,
    pub probability: f64,
    pub seconds: f64,
    pub bytes: Option<u64>,
    pub rounds: Option<u64>,
}

pub fn preds(json: &str) -> Vec<Pred> {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{json}"))
}

/// The test images, sorted: the real samples when ../shared is present, else synthetic ones
/// from `dir/synth/test`.
pub fn images(dir: &Path) -> Vec<String> {
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

/// The first of [`images`].
pub fn first_image(dir: &Path) -> String {
    images(dir).remove(0)
}

/// The plaintext prediction of `image`.
pub fn plaintext(dir: &Path, image: &str) -> Pred {
    let mut p = preds(&ok(
        dir,
        &["predict", "--model", "model.safetensors", "--json", image],
    ));
    p.remove(0)
}

/// One private prediction through the parties with a client timeout, or its error text.
pub fn private(dir: &Path, image: &str, timeout_ms: u64) -> Result<Pred, String> {
    let t = timeout_ms.to_string();
    let out = run_in(
        dir,
        &[
            "predict",
            "--config",
            "parties.toml",
            "--json",
            "--timeout-ms",
            &t,
            image,
        ],
    );
    if out.status.success() {
        Ok(preds(&text(&out.stdout)).remove(0))
    } else {
        Err(text(&out.stderr))
    }
}

/// Private equals plaintext: same class, probability within 1e-2.
pub fn assert_agrees(private: &Pred, plain: &Pred) {
    assert_eq!(private.class, plain.class, "{}", private.image);
    assert!(
        (private.probability - plain.probability).abs() < 1e-2,
        "{}: private {} vs plaintext {}",
        private.image,
        private.probability,
        plain.probability
    );
}
