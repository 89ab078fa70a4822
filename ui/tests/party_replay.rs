//! A recorded party-to-party handshake, replayed at a live mesh, does not disturb it: party 2
//! reaches party 0 through a recording proxy; its hello and first Noise message (which still
//! authenticate when replayed) are sent to party 0 again, once alone and once with the
//! recorded confirmation, and held open. The next private prediction is served and equals the
//! plaintext one, and party 0 refuses both replays for want of a confirmation.

mod party_common;

use party_common::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A proxy to `backend` that records what the initiator sent on the first connection that
/// reached the backend (party 2 may call before party 0 listens).
fn recording_proxy(backend: u16) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let front = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = front.local_addr().unwrap().port();
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&recorded);
    std::thread::spawn(move || {
        let mut n = 0;
        for conn in front.incoming() {
            let Ok(mut client) = conn else { continue };
            let Ok(mut server) = TcpStream::connect(("127.0.0.1", backend)) else {
                continue;
            };
            let first = n == 0;
            n += 1;
            let (mut back_client, mut back_server) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut back_server, &mut back_client);
                let _ = back_client.shutdown(Shutdown::Both);
            });
            let sink = Arc::clone(&sink);
            std::thread::spawn(move || {
                let mut buf = [0u8; 1 << 16];
                while let Ok(k @ 1..) = client.read(&mut buf) {
                    if first {
                        sink.lock().unwrap().extend_from_slice(&buf[..k]);
                    }
                    if server.write_all(&buf[..k]).is_err() {
                        break;
                    }
                }
                let _ = server.shutdown(Shutdown::Both);
            });
        }
    });
    (port, recorded)
}

/// Splits a recorded stream into the 39-byte hello and the records after it (2-byte
/// big-endian length, then the body), as many whole ones as there are.
fn records(wire: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let hello = wire[..39].to_vec();
    let mut rest = &wire[39..];
    let mut out = Vec::new();
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        if rest.len() < 2 + len {
            break;
        }
        out.push(rest[..2 + len].to_vec());
        rest = &rest[2 + len..];
    }
    (hello, out)
}

#[test]
fn a_replayed_party_handshake_does_not_disturb_a_live_mesh() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let setup = Setup::new(dir);
    // Party 2 reaches party 0 through the proxy: addresses are not part of the configuration
    // hash, so each host may use its own route.
    let (proxy_port, recorded) = recording_proxy(setup.ports[0]);
    let mut via = setup.ports;
    via[0] = proxy_port;
    std::fs::write(dir.join("p2.toml"), setup.toml(via)).unwrap();

    let mut children = Children::default();
    children.push(0, start_party(dir, 0, "parties.toml", "p0.log"));
    children.push(1, start_party(dir, 1, "parties.toml", "p1.log"));
    children.push(2, start_party(dir, 2, "p2.toml", "p2.log"));
    for id in 0..3 {
        wait_for_log(dir, &format!("p{id}.log"), "mesh ready", 1);
    }
    setup.share_model(dir);
    let image = first_image(dir);
    let plain = plaintext(dir, &image);
    assert_agrees(&private(dir, &image, 20_000).unwrap(), &plain);

    // Party 2's hello, first message and confirmation, as the proxy saw them.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (hello, recs) = loop {
        let wire = recorded.lock().unwrap().clone();
        if wire.len() > 39 {
            let (hello, recs) = records(&wire);
            if recs.len() >= 2 {
                break (hello, recs);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the proxy recorded no handshake: {} bytes: {:?}",
            wire.len(),
            &wire[..wire.len().min(200)]
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(&hello[..4], b"PXN4");
    assert_eq!(
        (hello[4], hello[5], hello[6]),
        (1, 2, 0),
        "party 2 -> party 0"
    );
    let opening = [hello.clone(), recs[0].clone()].concat();
    let with_confirmation = [opening.clone(), recs[1].clone()].concat();

    // Replayed straight at party 0, and held open.
    let reconnects = log_count(dir, "p0.log", "a peer reconnected");
    let mut held = Vec::new();
    for replay in [&opening, &with_confirmation] {
        let mut s = TcpStream::connect(("127.0.0.1", setup.ports[0])).unwrap();
        s.write_all(replay).unwrap();
        // Party 0 answers: a replayed first message still authenticates.
        let mut len = [0u8; 2];
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.read_exact(&mut len).unwrap();
        held.push(s);
    }

    // The mesh keeps serving while the replays are pending, and after they were refused.
    assert_agrees(&private(dir, &image, 20_000).unwrap(), &plain);
    wait_for_log(dir, "p0.log", "no confirmation from the initiator", 2);
    assert_agrees(&private(dir, &image, 20_000).unwrap(), &plain);
    assert_eq!(
        log_count(dir, "p0.log", "a peer reconnected"),
        reconnects,
        "a replay made party 0 re-form its mesh"
    );
    drop(held);
}
