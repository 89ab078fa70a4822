//! Helpers for tests that run `privxray` party processes: the binary in a temporary folder,
//! keys, a parties.toml on free loopback ports, party processes killed on drop, and bounded
//! waits on their logs.
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

/// Kills every child on drop, so a failing test leaves no party running.
#[derive(Default)]
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
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

pub fn parties_toml(owner: &str, keys: &[String; 3], ports: [u16; 3]) -> String {
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

pub fn start_party(dir: &Path, id: usize, log: &str) -> Child {
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
pub fn wait_for_log(dir: &Path, log: &str, needle: &str, count: usize) {
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
