//! `privxray preprocess` on a dataset prepared by a hostile user: a name that is not UTF-8, a
//! FIFO, a symlink to /dev/zero, a PNG whose header claims 20000x20000, a sparse 20 GiB file.
//! The import must finish within a minute under 1 GB of memory, every good image processed and
//! every hostile file reported with its reason; then a damaged cache must be noticed and rebuilt.
#![cfg(target_os = "linux")]

use serde_json::Value;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TIME_LIMIT: Duration = Duration::from_secs(60);
const MEMORY_LIMIT_BYTES: u64 = 1 << 30;

fn good_jpeg(path: &Path, seed: u32) {
    let (w, h) = (900u32, 700u32);
    let px: Vec<u8> = (0..w * h)
        .map(|i| ((i % w) / 4 + (i / w) / 5 + seed * 13) as u8)
        .collect();
    privxray::synth::write_jpeg(path, &px, w, h, 90).unwrap();
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A PNG whose header says `w` x `h` 8-bit greyscale, with a tiny (short) zlib body: only the
/// header matters to an import that checks it before decoding.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    // zlib header, one empty final stored block, Adler-32 of nothing.
    png_chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x01, 0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 1],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

/// Peak resident memory of the waited-for children of this process, in bytes.
fn children_peak_rss() -> u64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    usage.ru_maxrss as u64 * 1024 // kilobytes on Linux
}

/// Runs `privxray ARGS`, killing it past the time limit; (stdout, elapsed).
fn run_bounded(args: &[&OsStr]) -> (String, Duration) {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_privxray"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run privxray");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        stdout.read_to_end(&mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        stderr.read_to_end(&mut s).map(|_| s)
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > TIME_LIMIT {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the import ran past {TIME_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = start.elapsed();
    let out = String::from_utf8_lossy(&out.join().unwrap().unwrap()).into_owned();
    let err = String::from_utf8_lossy(&err.join().unwrap().unwrap()).into_owned();
    assert!(status.success(), "{status}\nstdout:\n{out}\nstderr:\n{err}");
    (out, elapsed)
}

#[test]
fn hostile_files_are_refused_quickly_and_the_good_ones_all_imported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("set");
    let cache = dir.path().join("cache");
    let normal = root.join("train/NORMAL");
    let pneumonia = root.join("train/PNEUMONIA");
    fs::create_dir_all(&normal).unwrap();
    fs::create_dir_all(&pneumonia).unwrap();

    // Good images, one with a name that is not UTF-8.
    let odd_name = OsString::from_vec(b"person9_virus_\xff\xfe.jpeg".to_vec());
    let mut good: Vec<PathBuf> = vec![pneumonia.join(&odd_name)];
    for i in 0..3 {
        good.push(normal.join(format!("normal{i}.jpeg")));
        good.push(pneumonia.join(format!("person{i}_bacteria_1.jpeg")));
    }
    for (i, p) in good.iter().enumerate() {
        good_jpeg(p, i as u32);
    }

    // Hostile files, each with the reason it must be reported with.
    mkfifo(&normal.join("fifo.jpeg"));
    std::os::unix::fs::symlink("/dev/zero", normal.join("zero.jpeg")).unwrap();
    fs::write(normal.join("huge.png"), png_claiming(20000, 20000)).unwrap();
    let sparse = fs::File::create(pneumonia.join("sparse.jpeg")).unwrap();
    sparse.set_len(20 << 30).unwrap();
    drop(sparse);
    let bad_odd = OsString::from_vec(b"bad\xff.jpeg".to_vec());
    fs::write(normal.join(&bad_odd), b"\xff\xd8 not a jpeg").unwrap();
    let hostile = [
        ("fifo.jpeg", "not a regular file (a FIFO)"),
        (
            "zero.jpeg",
            "not a regular file (a character device, through a symlink)",
        ),
        (
            "huge.png",
            "20000x20000 is 400 megapixels, over the 100 megapixel cap",
        ),
        (
            "sparse.jpeg",
            "file is 20480 MiB, over the 256 MiB file-size cap",
        ),
        // Reported lossily, the rest of the report intact.
        ("bad\u{FFFD}.jpeg", "corrupt"),
    ];

    let args = [
        OsStr::new("preprocess"),
        OsStr::new("--input"),
        root.as_os_str(),
        OsStr::new("--technique"),
        OsStr::new("1"),
        OsStr::new("--cache"),
        cache.as_os_str(),
        OsStr::new("--json"),
    ];
    let (out, elapsed) = run_bounded(&args);
    let peak = children_peak_rss();
    eprintln!(
        "hostile import: {:.2} s, peak RSS {:.1} MiB",
        elapsed.as_secs_f64(),
        peak as f64 / (1 << 20) as f64
    );
    assert!(peak < MEMORY_LIMIT_BYTES, "peak RSS {peak} bytes");

    let summary: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}:\n{out}"));
    assert_eq!(summary["images"], good.len(), "{summary:#}");
    assert_eq!(summary["decoded"], good.len() + hostile.len());
    let skipped = summary["skipped"].as_array().unwrap();
    let lines: Vec<String> = skipped
        .iter()
        .map(|s| format!("{}: {}", s["path"].as_str().unwrap(), s["reason"]))
        .collect();
    // The other lines are test/ and val/ missing, as the layout allows.
    let file_lines = lines
        .iter()
        .filter(|l| l.contains("/train/NORMAL/") || l.contains("/train/PNEUMONIA/"))
        .count();
    assert_eq!(file_lines, hostile.len(), "{lines:#?}");
    for (name, reason) in hostile {
        let hits: Vec<_> = lines
            .iter()
            .filter(|l| l.contains(&format!("/{name}: ")))
            .collect();
        assert_eq!(hits.len(), 1, "{name}: {lines:#?}");
        assert!(hits[0].contains(reason), "{name}: {}", hits[0]);
    }
    assert_eq!(summary["limits"]["max_file_bytes"], 256u64 << 20);
    assert_eq!(summary["limits"]["max_pixels"], 100_000_000u64);

    // The second run takes everything from the cache, the odd name included.
    let (out, _) = run_bounded(&args);
    let again: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again["from_cache"], good.len() + hostile.len(), "{again:#}");
    assert_eq!(again["images"], good.len());

    // Damaged pixels in the cache: noted, rebuilt, and the same images come out.
    let file = fs::read_dir(&cache)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = fs::read(&file).unwrap();
    let data_start = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for b in &mut bytes[data_start + 100..data_start + 5100] {
        *b = b.wrapping_add(1);
    }
    fs::write(&file, &bytes).unwrap();
    let (out, _) = run_bounded(&args);
    let rebuilt: Value = serde_json::from_str(&out).unwrap();
    let note = rebuilt["cache_note"].as_str().unwrap_or_default();
    assert!(
        note.contains("checksum") && note.contains("rebuilding"),
        "{rebuilt:#}"
    );
    assert_eq!(rebuilt["decoded"], good.len() + hostile.len());
    assert_eq!(rebuilt["images"], good.len());
}

#[test]
fn the_caps_are_settings() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("set");
    fs::create_dir_all(root.join("NORMAL")).unwrap();
    fs::create_dir_all(root.join("PNEUMONIA")).unwrap();
    good_jpeg(&root.join("NORMAL/a.jpeg"), 1);
    good_jpeg(&root.join("PNEUMONIA/b.jpeg"), 2);
    let out = Command::new(env!("CARGO_BIN_EXE_privxray"))
        .args([
            "preprocess",
            "--technique",
            "1",
            "--no-cache",
            "--max-megapixels",
            "1",
        ])
        .args(["--max-file-mb", "1", "--input"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // 900x700 is 0.63 megapixels: under the cap of 1.
    assert!(
        text.contains("2 images") && text.contains("skipped: none"),
        "{text}"
    );
    fs::write(root.join("NORMAL/huge.png"), png_claiming(1000, 1001)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_privxray"))
        .args([
            "preprocess",
            "--technique",
            "1",
            "--no-cache",
            "--max-megapixels",
            "1",
        ])
        .arg("--input")
        .arg(&root)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("huge.png: 1000x1001 is 1.001 megapixels, over the 1 megapixel cap"),
        "{text}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_privxray"))
        .args([
            "preprocess",
            "--technique",
            "1",
            "--no-cache",
            "--max-file-mb",
            "0",
        ])
        .arg("--input")
        .arg(&root)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a zero cap is refused");
}
