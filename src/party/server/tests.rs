//! The party server end to end in one process: three servers on loopback, bad requests and
//! concurrent clients.

use std::time::Duration;

use super::{PartyServer, ServerTimings, StopHandle};
use crate::model::arch::random_spec;
use crate::model::ModelKind;
use crate::mpc::FixedPoint;
use crate::net::config::Timeouts;
use crate::net::handshake::connect_client;
use crate::net::handshake::tests::fixture_with;
use crate::net::message::Shape;
use crate::net::{Message, PartyId, SecureChannel};
use crate::party::ShareFile;
use crate::party::{share_model_remote, RemoteClient};

fn expect_error(ch: &mut SecureChannel, needle: &str) {
    match ch.recv_message().unwrap() {
        Message::Error { text } => assert!(text.contains(needle), "{text}"),
        other => panic!("expected an error containing {needle:?}, got {other:?}"),
    }
}

#[test]
fn bad_requests_get_clear_errors_and_the_parties_keep_serving() {
    let f = fixture_with(|c| {
        let t = Timeouts {
            io: Duration::from_secs(20),
            startup: Duration::from_secs(10),
            ..*c.timeouts()
        };
        c.with_timeouts(t)
    });
    let dir = tempfile::tempdir().unwrap();
    let config = f.parties[0].config().clone();
    let timings = ServerTimings::from_timeouts(config.timeouts());
    let servers: Vec<PartyServer> = f
        .parties
        .into_iter()
        .zip(f.listeners)
        .enumerate()
        .map(|(i, (local, listener))| {
            let store = ShareFile::at(dir.path().join(format!("p{i}.model-share")));
            PartyServer::new(local, listener, store, timings).unwrap()
        })
        .collect();
    let stops: Vec<StopHandle> = servers.iter().map(PartyServer::stop_handle).collect();
    let running: Vec<_> = servers
        .into_iter()
        .map(|s| std::thread::spawn(move || s.run()))
        .collect();

    // Before a model is shared.
    let mut raw = connect_client(&config, PartyId::ALL[0]).unwrap();
    raw.send_message(&Message::ModelInfoRequest).unwrap();
    expect_error(&mut raw, "no model has been shared");

    let spec = random_spec(ModelKind::Vgg16_1, 1.0 / 32.0, 21);
    let shared = share_model_remote(&config, &f.owner, &spec, &[], FixedPoint::default()).unwrap();
    assert_eq!(shared.input_shape, spec.input);

    // A frame that is no message, then a wrong shape: errors, and the same connection
    // still gets answers.
    raw.send(&[0xEE, 1, 2, 3]).unwrap();
    expect_error(&mut raw, "malformed frame");
    raw.send_message(&Message::PredictRequest {
        request_id: 1,
        shape: Shape::new(vec![3, 224, 224]).unwrap(),
        input_share: vec![0; 16],
    })
    .unwrap();
    expect_error(&mut raw, "wrong tensor shape");
    raw.send_message(&Message::PredictRequest {
        request_id: 2,
        shape: Shape::new(spec.input.iter().map(|&d| d as u32).collect()).unwrap(),
        input_share: vec![1, 2, 3],
    })
    .unwrap();
    expect_error(&mut raw, "malformed input share");
    raw.send_message(&Message::ModelInfoRequest).unwrap();
    assert!(matches!(
        raw.recv_message().unwrap(),
        Message::ModelInfo { .. }
    ));
    // A client may not share a model.
    raw.send_message(&Message::ShareModel { share: vec![] })
        .unwrap();
    expect_error(&mut raw, "not ShareModel");

    // Two clients at once are both served, correctly, through the queue.
    let image: Vec<f32> = (0..spec.input_len())
        .map(|i| ((i * 31) % 97) as f32 / 97.0)
        .collect();
    let want = spec.forward(&image).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut c = RemoteClient::connect(&config, Duration::from_secs(20)).unwrap();
                    c.predict(&image).unwrap()
                })
            })
            .collect();
        for h in handles {
            let got = h.join().unwrap();
            assert!(got.bytes_between_parties > 0 && got.rounds > 0);
            for (g, w) in got.logits.iter().zip(&want) {
                assert!((g - w).abs() < 5e-2, "private {g} vs plaintext {w}");
            }
        }
    });
    // The shares were persisted, one per party, each its own.
    for i in 0..3u8 {
        let store = ShareFile::at(dir.path().join(format!("p{i}.model-share")));
        let m = store.load(PartyId::new(i).unwrap()).unwrap().unwrap();
        assert_eq!(m.input_shape(), spec.input);
    }

    for s in &stops {
        s.stop();
    }
    for r in running {
        r.join().unwrap().unwrap();
    }
}
