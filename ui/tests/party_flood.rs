//! 300 idle or trickling connections at party 0 do not keep the mesh from re-forming: while
//! they are held open (and reopened whenever party 0 cuts them), party 1 is killed and
//! restarted, and a client's private prediction is served, equal to plaintext, within the
//! handshake deadline plus a margin.

mod party_common;

use party_common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Connections the flood keeps open (sockets in this process: well under a 1024-fd limit).
const FLOOD: usize = 300;
/// Time allowed beyond the handshake deadline for party 1 to start, the mesh to re-form and a
/// prediction to be served on a busy 2-core machine.
const MARGIN: Duration = Duration::from_secs(45);

/// Keeps `FLOOD` connections to one address: even slots idle after connecting, odd slots
/// send a byte of a hello every second. A connection the party closes is reopened half a
/// second later, as an attacker would.
struct Flood {
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Counts {
    /// Connections opened.
    opened: AtomicUsize,
    /// Connections party 0 closed.
    cut: AtomicUsize,
    /// Bytes trickled.
    trickled: AtomicUsize,
}

impl Flood {
    fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let (s, c) = (Arc::clone(&stop), Arc::clone(&counts));
        let thread = std::thread::spawn(move || flood(addr, &s, &c));
        Self {
            stop,
            counts,
            thread: Some(thread),
        }
    }

    /// Connections opened, cut by party 0, and bytes trickled so far.
    fn counts(&self) -> (usize, usize, usize) {
        let c = &self.counts;
        (
            c.opened.load(Ordering::Relaxed),
            c.cut.load(Ordering::Relaxed),
            c.trickled.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Conn {
    stream: TcpStream,
    next_byte: Instant,
    sent: usize,
}

fn flood(addr: SocketAddr, stop: &AtomicBool, counts: &Counts) {
    // The start of a client hello, so the bytes look plausible; it never completes in time.
    let mut hello = b"PXN4\x02\xff\x00".to_vec();
    hello.resize(39, 0);
    let mut slots: Vec<Option<Conn>> = (0..FLOOD).map(|_| None).collect();
    let mut retry_at = vec![Instant::now(); FLOOD];
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        for (i, slot) in slots.iter_mut().enumerate() {
            let Some(conn) = slot else {
                if now >= retry_at[i] {
                    match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                        Ok(stream) if stream.set_nonblocking(true).is_ok() => {
                            counts.opened.fetch_add(1, Ordering::Relaxed);
                            *slot = Some(Conn {
                                stream,
                                // Spread the trickling sends over the second.
                                next_byte: now + Duration::from_millis(3 * i as u64 % 1000),
                                sent: 0,
                            });
                        }
                        _ => retry_at[i] = now + Duration::from_millis(200),
                    }
                }
                continue;
            };
            let mut alive = match conn.stream.read(&mut buf) {
                Ok(0) => false,
                Ok(_) => true,
                Err(e) => e.kind() == ErrorKind::WouldBlock,
            };
            if alive && i % 2 == 1 && now >= conn.next_byte {
                let b = hello[conn.sent % hello.len()];
                alive = conn.stream.write(&[b]).is_ok();
                conn.sent += 1;
                counts.trickled.fetch_add(1, Ordering::Relaxed);
                conn.next_byte = now + Duration::from_secs(1);
            }
            if !alive {
                *slot = None;
                counts.cut.fetch_add(1, Ordering::Relaxed);
                retry_at[i] = now + Duration::from_millis(500);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_hundred_idle_or_trickling_connections_do_not_keep_the_mesh_from_re_forming() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let setup = Setup::new(dir);
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
    setup.share_model(dir);
    let image = first_image(dir);
    let plain = plaintext(dir, &image);
    assert_agrees(&private(dir, &image, 20_000).unwrap(), &plain);

    // Party 0 keeps cutting the flood (it has 64 handshake slots and a deadline) and the
    // flood keeps reopening: wait for that steady state, with trickling under way.
    let flood = Flood::start(SocketAddr::from(([127, 0, 0, 1], setup.ports[0])));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (opened, cut, trickled) = flood.counts();
        if opened >= 2 * FLOOD && cut >= FLOOD && trickled >= FLOOD {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the flood never got going: {opened} opened, {cut} cut, {trickled} bytes trickled"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    children.kill(1);
    let restarted = Instant::now();
    children.push(1, start_party(dir, 1, "parties.toml", "p1-restarted.log"));
    let limit = Duration::from_millis(HANDSHAKE_MS) + MARGIN;
    let served = loop {
        match private(dir, &image, 10_000) {
            Ok(p) => break p,
            Err(e) => assert!(
                restarted.elapsed() < limit,
                "no prediction within {limit:?} of restarting party 1; last error: {e}\n\
                 party 1 log:\n{}",
                std::fs::read_to_string(dir.join("p1-restarted.log")).unwrap_or_default()
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = restarted.elapsed();
    assert!(took < limit, "served after {took:?}, limit {limit:?}");
    assert_agrees(&served, &plain);
    let (opened, cut, trickled) = flood.counts();
    drop(flood);
    wait_for_log(dir, "p1-restarted.log", "mesh ready", 1);
    let p0_lines = std::fs::read_to_string(dir.join("p0.log"))
        .unwrap_or_default()
        .lines()
        .count();
    eprintln!(
        "flood of {FLOOD}: {opened} connections opened, {cut} cut by party 0, {trickled} bytes \
         trickled; prediction served {:.1} s after restarting party 1 (limit {limit:?}); party \
         0 logged {p0_lines} lines",
        took.as_secs_f64()
    );
}
