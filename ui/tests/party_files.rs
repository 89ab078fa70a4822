//! Secret files of the party processes: `keygen` without `--force` never replaces a file, even
//! when many processes race for the same path (exactly one wins and its key is the one on
//! disk); `--force` replaces it; and a party refuses to start with a model share that group or
//! others may read, saying what to do.

mod party_common;

use std::fs;
use std::process::Stdio;

use party_common::{bin, ok, run_in, setup_keys, text};
use privxray::net::StaticKeypair;

#[test]
fn racing_keygen_processes_leave_one_valid_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let n = 12;
    let children: Vec<_> = (0..n)
        .map(|_| {
            bin()
                .current_dir(dir)
                .args(["keygen", "--out", "race.key"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let winners: Vec<String> = outs
        .iter()
        .filter(|o| o.status.success())
        .map(|o| text(&o.stdout).trim().to_owned())
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "{} processes wrote the key",
        winners.len()
    );
    for o in outs.iter().filter(|o| !o.status.success()) {
        let err = text(&o.stderr);
        assert!(err.contains("already exists"), "{err}");
        assert!(err.contains("--force"), "{err}");
    }
    let key = StaticKeypair::load(&dir.join("race.key")).unwrap();
    assert_eq!(key.public_key().to_hex(), winners[0]);
    let names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["race.key"], "temporary files left behind");
}

#[test]
fn keygen_replaces_a_file_only_with_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("k"), "someone's notes\n").unwrap();
    let out = run_in(dir, &["keygen", "--out", "k"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("refusing to overwrite"));
    assert_eq!(
        fs::read_to_string(dir.join("k")).unwrap(),
        "someone's notes\n"
    );

    let first = ok(dir, &["keygen", "--out", "k", "--force"]);
    assert_eq!(
        StaticKeypair::load(&dir.join("k"))
            .unwrap()
            .public_key()
            .to_hex(),
        first.trim()
    );
    let second = ok(dir, &["keygen", "--out", "k", "--force"]);
    assert_ne!(first, second);
    assert_eq!(
        StaticKeypair::load(&dir.join("k"))
            .unwrap()
            .public_key()
            .to_hex(),
        second.trim()
    );
}

#[cfg(unix)]
#[test]
fn a_party_refuses_a_model_share_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup_keys(dir);
    let share = dir.join("p1.key.model-share");
    // The mode is checked before the contents: this is not a share at all.
    fs::write(&share, b"not a share").unwrap();
    let party = [
        "party",
        "--id",
        "1",
        "--config",
        "parties.toml",
        "--key",
        "p1.key",
    ];
    for mode in [0o644, 0o640] {
        fs::set_permissions(&share, fs::Permissions::from_mode(mode)).unwrap();
        let out = run_in(dir, &party);
        assert!(!out.status.success(), "the party started");
        let err = text(&out.stderr);
        assert!(err.contains(&format!("mode {mode:o}")), "{err}");
        assert!(err.contains("chmod 600"), "{err}");
        assert!(err.contains("p1.key.model-share"), "{err}");
        assert_eq!(
            fs::read(&share).unwrap(),
            b"not a share",
            "the file was touched"
        );
    }
    // With mode 0600 the same file gets past the mode check and fails on its contents.
    fs::set_permissions(&share, fs::Permissions::from_mode(0o600)).unwrap();
    let out = run_in(dir, &party);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot decode") && !err.contains("chmod"),
        "{err}"
    );
}
