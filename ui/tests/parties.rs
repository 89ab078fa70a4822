//! Three `privxray party` processes on loopback serve private predictions over Noise: the
//! predictions equal plaintext `predict --model`; a request before the model is shared gets a
//! clear error; a party killed mid-request gives the client a clear error, and after its
//! restart (it reloads its stored model share) the parties serve again; a model owner with an
//! unknown key is refused and the refusal is in the party's log.

mod party_common;

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use party_common::{
    bin, images, keygen, ok, parties_toml, preds, run_in, start_party, text, wait_for_log,
    Children, Setup,
};

#[test]
fn three_party_processes_serve_private_predictions_and_survive_faults() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let setup = Setup::new(dir);
    let (keys, ports) = (&setup.keys, setup.ports);

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
    let imgs = images(dir);
    let first = imgs[0].as_str();

    // Before the model is shared: a clear refusal, not a hang.
    let out = run_in(dir, &["predict", "--config", "parties.toml", first]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("no model has been shared"), "{err}");

    // Shares the model and checks the owner was told its name ("dnn-max").
    setup.share_model(dir);
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
    children.push(1, start_party(dir, 1, "parties.toml", "p1-restarted.log"));
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
        parties_toml(&impostor, keys, ports),
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
