//! Three `privxray party` processes refuse inconsistent data: a client whose two copies of one
//! input component differ is refused by all three parties with a clear error (and the next
//! honest prediction is served), and a model share from another dealing (a half-finished
//! `share-model`, here party 0 given an older dealing's share) makes every party refuse with
//! an error naming both dealing ids until the owner shares the model again.

mod party_common;

use std::fs;
use std::path::Path;

use party_common::{ok, run_in, sample_image, setup_keys, shipped_model, start_party, text};
use party_common::{wait_for_log, Children};
use privxray::mpc::share::ArithShare;
use privxray::mpc::{share_input_os, FixedPoint, InputShare};
use privxray::net::handshake::{connect_client_to_all, connect_owner};
use privxray::net::message::Shape;
use privxray::net::{Message, PartiesConfig, PartyId, StaticKeypair};

fn share_model(dir: &Path) {
    let model = shipped_model().display().to_string();
    let out = ok(
        dir,
        &[
            "share-model",
            "--model",
            &model,
            "--config",
            "parties.toml",
            "--key",
            "owner.key",
        ],
    );
    assert!(out.contains("dnn-av"), "{out}");
}

/// `predict --config` on the bundled sample: Ok(stdout) or Err(stderr).
fn predict(dir: &Path) -> Result<String, String> {
    let image = sample_image().display().to_string();
    let out = run_in(dir, &["predict", "--config", "parties.toml", &image]);
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

/// The dealing id in a stored model share (format versions 2 to 4: magic, version, party and
/// fractional bits, then the 16-byte id), as the parties print it.
fn dealing_of(share: &[u8]) -> String {
    assert!(
        matches!(share[4], 2..=4),
        "model share format version {}",
        share[4]
    );
    share[7..23].iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends a client's three input shares, with party 1's `own` copy (component 1, which party 0
/// also holds) changed in one word, and returns each party's reply.
fn predict_with_inconsistent_copies(config: &PartiesConfig) -> Vec<Message> {
    let shape = [1, 150, 125];
    let image = vec![0.5f32; 150 * 125];
    let mut shares = share_input_os(&image, shape, FixedPoint::default()).unwrap();
    let (mut own, next) = shares[1].share().clone().into_parts();
    own[1000] = own[1000].wrapping_add(1 << 20);
    shares[1] = InputShare::new(
        shares[1].party(),
        shares[1].fixed(),
        shape,
        ArithShare::new(own, next).unwrap(),
    )
    .unwrap();
    let mut channels = connect_client_to_all(config).unwrap();
    let dims = Shape::new(shape.iter().map(|&d| d as u32).collect()).unwrap();
    for (ch, s) in channels.iter_mut().zip(&shares) {
        ch.send_message(&Message::PredictRequest {
            request_id: 0x1c0_ffee,
            shape: dims.clone(),
            input_share: s.to_bytes(),
        })
        .unwrap();
    }
    channels
        .iter_mut()
        .map(|ch| ch.recv_message().unwrap())
        .collect()
}

fn error_text(m: &Message) -> &str {
    match m {
        Message::Error { text } => text,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn parties_refuse_inconsistent_input_copies_and_mixed_dealings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup_keys(dir);
    let config = PartiesConfig::load(&dir.join("parties.toml")).unwrap();
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
    share_model(dir);
    let served = predict(dir).expect("one dealing, consistent input: served");
    assert!(served.contains("probability of PNEUMONIA"), "{served}");

    // A client with one inconsistent component: its two holders (parties 0 and 1) say what
    // differs; party 2, which cannot see it, says they refused. Nothing is computed.
    let replies = predict_with_inconsistent_copies(&config);
    for (i, r) in replies.iter().enumerate().take(2) {
        let t = error_text(r);
        assert!(t.starts_with(&format!("party {i}:")), "{t}");
        assert!(
            t.contains("component 1 of the input share differs between party 0 and party 1"),
            "{t}"
        );
        assert!(t.contains("inconsistent shares"), "{t}");
    }
    let t = error_text(&replies[2]);
    assert!(
        t.contains("party 0 and party 1 did not hold a usable share"),
        "{t}"
    );
    for id in 0..2 {
        wait_for_log(dir, &format!("p{id}.log"), "inconsistent shares", 1);
    }
    for id in 0..3 {
        let log = fs::read_to_string(dir.join(format!("p{id}.log"))).unwrap();
        assert_eq!(log.matches("served a request").count(), 1, "p{id}:\n{log}");
    }
    // The mesh is unharmed: the next honest client is served.
    predict(dir).expect("served after the refusal");

    // A half-finished re-share: party 0 holds dealing A, parties 1 and 2 dealing B.
    let share_a = fs::read(dir.join("p0.key.model-share")).unwrap();
    let id_a = dealing_of(&share_a);
    share_model(dir);
    let id_b = dealing_of(&fs::read(dir.join("p1.key.model-share")).unwrap());
    assert_eq!(
        id_b,
        dealing_of(&fs::read(dir.join("p2.key.model-share")).unwrap())
    );
    assert_ne!(id_a, id_b, "two runs of share-model, one dealing id");
    let owner = StaticKeypair::load(&dir.join("owner.key")).unwrap();
    let mut ch = connect_owner(&config, &owner, PartyId::ALL[0]).unwrap();
    ch.send_message(&Message::ShareModel { share: share_a })
        .unwrap();
    assert!(matches!(
        ch.recv_message().unwrap(),
        Message::ModelInfo { .. }
    ));
    drop(ch);

    let err = predict(dir).expect_err("mixed dealings were served");
    assert!(err.contains("different runs of share-model"), "{err}");
    assert!(
        err.contains(&format!("party 0 holds dealing {id_a}"))
            && err.contains(&format!("party 1 holds dealing {id_b}")),
        "{err}"
    );
    assert!(err.contains("privxray share-model` again"), "{err}");
    assert!(
        !err.contains("did not answer within"),
        "timed out instead: {err}"
    );
    for id in 0..3 {
        wait_for_log(
            dir,
            &format!("p{id}.log"),
            "refused a request: the parties hold model shares from different runs",
            1,
        );
    }

    // The owner shares again: one dealing, served.
    share_model(dir);
    predict(dir).expect("served after sharing again");
}
