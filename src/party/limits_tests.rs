//! The party server against outsiders, in process: a client's message cap follows the shared
//! model, and a request that reached party 0 alone does not hold up the queue.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use super::admission::{client_message_cap, CLIENT_SLACK};
use super::server::{PartyServer, ServerTimings, StopHandle};
use super::{share_model_remote, PartyError, RemoteClient, ShareFile};
use crate::model::arch::random_spec;
use crate::model::{ModelKind, NetworkSpec};
use crate::mpc::{
    reconstruct, share_input_os, share_model_os, FixedPoint, OutputShare, PartyModel,
};
use crate::net::config::Timeouts;
use crate::net::handshake::tests::{fixture_with, Fixture};
use crate::net::handshake::{connect_client, connect_owner};
use crate::net::message::Shape;
use crate::net::{LocalParty, Message, PartyId, SecureChannel};

fn fixture() -> Fixture {
    fixture_with(|c| {
        let t = Timeouts {
            io: Duration::from_secs(60),
            startup: Duration::from_secs(10),
            ..*c.timeouts()
        };
        c.with_timeouts(t)
    })
}

type Running = Vec<std::thread::JoinHandle<Result<(), PartyError>>>;

/// Starts the given parties (by index) on threads; returns their stop handles and the
/// threads.
fn start(
    parties: Vec<LocalParty>,
    listeners: Vec<TcpListener>,
    which: &[usize],
    dir: &std::path::Path,
) -> (Vec<StopHandle>, Running) {
    let timings = ServerTimings::from_timeouts(parties[0].config().timeouts());
    let servers: Vec<PartyServer> = parties
        .into_iter()
        .zip(listeners)
        .enumerate()
        .filter(|(i, _)| which.contains(i))
        .map(|(i, (local, listener))| {
            let store = ShareFile::at(dir.join(format!("p{i}.model-share")));
            PartyServer::new(local, listener, store, timings).unwrap()
        })
        .collect();
    let stops = servers.iter().map(PartyServer::stop_handle).collect();
    let threads = servers
        .into_iter()
        .map(|s| std::thread::spawn(move || s.run()))
        .collect();
    (stops, threads)
}

fn stop(stops: &[StopHandle], threads: Running) {
    for s in stops {
        s.stop();
    }
    for t in threads {
        t.join().unwrap().unwrap();
    }
}

fn spec() -> NetworkSpec {
    random_spec(ModelKind::Vgg16_1, 1.0 / 32.0, 21)
}

fn shape_of(spec: &NetworkSpec) -> Shape {
    Shape::new(spec.input.iter().map(|&d| d as u32).collect()).unwrap()
}

fn image(spec: &NetworkSpec, seed: usize) -> Vec<f32> {
    (0..spec.input_len())
        .map(|i| ((i * 31 + seed * 17) % 97) as f32 / 97.0)
        .collect()
}

fn expect_error(ch: &mut SecureChannel, needle: &str) {
    match ch.recv_message() {
        Ok(Message::Error { text }) => assert!(text.contains(needle), "{text}"),
        other => panic!("expected an error containing {needle:?}, got {other:?}"),
    }
}

#[test]
fn a_client_may_send_one_input_share_and_little_more() {
    let Fixture {
        parties,
        listeners,
        owner,
    } = fixture();
    let config = parties[0].config().clone();
    let dir = tempfile::tempdir().unwrap();
    // Party 0 alone: it serves clients and the owner while its mesh is down.
    let (stops, threads) = start(parties, listeners, &[0], dir.path());
    let p0 = PartyId::ALL[0];
    let spec = spec();

    // Before a model is shared a client has only small requests to make.
    let mut c = connect_client(&config, p0).unwrap();
    c.send_message(&Message::PredictRequest {
        request_id: 1,
        shape: shape_of(&spec),
        input_share: vec![0; 64 << 10],
    })
    .unwrap();
    assert!(c.recv_message().is_err(), "an oversized request was read");
    let mut c = connect_client(&config, p0).unwrap();
    c.send_message(&Message::ModelInfoRequest).unwrap();
    expect_error(&mut c, "no model has been shared");

    let shares = share_model_os(&spec, FixedPoint::default()).unwrap();
    let mut o = connect_owner(&config, &owner, p0).unwrap();
    o.send_message(&Message::ShareModel {
        share: shares[0].to_bytes(),
    })
    .unwrap();
    assert!(matches!(
        o.recv_message().unwrap(),
        Message::ModelInfo { .. }
    ));

    let model = PartyModel::from_bytes(&shares[0].to_bytes()).unwrap();
    let cap = client_message_cap(Some(&model));
    let [input, ..] = share_input_os(&image(&spec, 0), spec.input, FixedPoint::default()).unwrap();
    let share_len = input.to_bytes().len();
    let request = |len: usize| Message::PredictRequest {
        request_id: 2,
        shape: shape_of(&spec),
        input_share: vec![0; len],
    };
    let exact = request(share_len).encode().len() as u64;
    assert_eq!(cap, exact + CLIENT_SLACK);
    assert!(cap < config.max_message_bytes() / 1000, "cap {cap}");

    // A request of an input share's size gets read (and answered: these bytes are no share).
    c.send_message(&request(share_len)).unwrap();
    expect_error(&mut c, "malformed input share");
    // More than the slack beyond it is refused from its announced length: no answer, the
    // connection is closed.
    c.send_message(&request(share_len + CLIENT_SLACK as usize + 1))
        .unwrap();
    assert!(c.recv_message().is_err(), "an oversized request was read");
    // The owner, proven by its key, keeps the configured cap.
    o.send_message(&Message::ModelInfoRequest).unwrap();
    assert!(matches!(
        o.recv_message().unwrap(),
        Message::ModelInfo { .. }
    ));
    stop(&stops, threads);
}

/// Sends `share` to `party` as request `id` on a fresh connection.
fn send_share(
    config: &crate::net::PartiesConfig,
    party: PartyId,
    id: u64,
    shape: Shape,
    share: Vec<u8>,
) -> SecureChannel {
    let mut ch = connect_client(config, party).unwrap();
    ch.send_message(&Message::PredictRequest {
        request_id: id,
        shape,
        input_share: share,
    })
    .unwrap();
    ch
}

#[test]
fn a_request_held_by_party_0_alone_does_not_stall_a_later_complete_one() {
    let Fixture {
        parties,
        listeners,
        owner,
    } = fixture();
    let config = parties[0].config().clone();
    let dir = tempfile::tempdir().unwrap();
    let (stops, threads) = start(parties, listeners, &[0, 1, 2], dir.path());
    let spec = spec();
    let fixed = FixedPoint::default();
    share_model_remote(&config, &owner, &spec, &[], fixed).unwrap();

    // Request A reaches party 0 only, and is queued there first.
    let a_image = image(&spec, 1);
    let a_shares = share_input_os(&a_image, spec.input, fixed).unwrap();
    let id = 0x5eed;
    let mut at_0 = send_share(
        &config,
        PartyId::ALL[0],
        id,
        shape_of(&spec),
        a_shares[0].to_bytes(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while stops[0].held_requests() == 0 {
        assert!(Instant::now() < deadline, "party 0 never queued request A");
        std::thread::sleep(Duration::from_millis(5));
    }

    // Request B, complete, comes later and is served, right.
    let b_image = image(&spec, 2);
    let mut client = RemoteClient::connect(&config, Duration::from_secs(60)).unwrap();
    let b = client.predict(&b_image).unwrap();
    for (g, w) in b.logits.iter().zip(spec.forward(&b_image).unwrap()) {
        assert!((g - w).abs() < 5e-2, "private {g} vs plaintext {w}");
    }

    // A was neither dropped nor answered meanwhile: once parties 1 and 2 get their shares,
    // it is served too.
    let mut rest: Vec<SecureChannel> = [1, 2]
        .into_iter()
        .map(|i| {
            send_share(
                &config,
                PartyId::ALL[i],
                id,
                shape_of(&spec),
                a_shares[i].to_bytes(),
            )
        })
        .collect();
    let mut parts = Vec::new();
    for ch in std::iter::once(&mut at_0).chain(rest.iter_mut()) {
        match ch.recv_message().unwrap() {
            Message::PredictResponse {
                request_id,
                output_share,
            } if request_id == id => parts.push(OutputShare::from_bytes(&output_share).unwrap()),
            other => panic!("request A: expected its output share, got {other:?}"),
        }
    }
    let parts: [OutputShare; 3] = parts.try_into().unwrap();
    let got = reconstruct(&parts).unwrap();
    for (g, w) in got.iter().zip(spec.forward(&a_image).unwrap()) {
        assert!((g - w).abs() < 5e-2, "private {g} vs plaintext {w}");
    }
    stop(&stops, threads);
}
