//! Loopback benchmark of the network layer: KK handshake time and the throughput of the
//! three-party mesh with every party sending to both peers at once (six directions).
//!
//! Keys and listeners are made fresh for the run (listeners on 127.0.0.1, port 0); nothing is
//! read from or written to disk. The mesh is formed by [`Mesh::establish`], the same builder
//! the party server uses.
//!
//! Imports `super::{config, error, handshake, keys, local, mesh}` only; never `party` or
//! `pipeline`.

use std::fmt;
use std::net::TcpListener;
use std::sync::Barrier;
use std::time::Instant;

use super::config::{PartiesConfig, PartyAddress, PartyEntry, PartyId};
use super::error::NetError;
use super::handshake::{accept, connect_to_party};
use super::keys::StaticKeypair;
use super::local::LocalParty;
use super::mesh::Mesh;

/// What to measure.
#[derive(Clone, Copy, Debug)]
pub struct BenchSettings {
    /// Size of each message.
    pub message_bytes: usize,
    /// Messages each party sends to each peer.
    pub rounds: usize,
    /// Sequential KK handshakes to time.
    pub handshakes: usize,
}

impl Default for BenchSettings {
    fn default() -> Self {
        Self {
            message_bytes: 4 << 20,
            rounds: 32,
            handshakes: 20,
        }
    }
}

/// Measured figures.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub settings: BenchSettings,
    /// Time for all three parties to form the mesh (three KK handshakes, run concurrently).
    pub mesh_setup_ms: f64,
    /// One party-to-party connection (TCP connect and KK handshake), mean and fastest.
    pub handshake_ms_mean: f64,
    pub handshake_ms_min: f64,
    /// Application bytes delivered, summed over the six directions.
    pub bytes: u64,
    pub seconds: f64,
    /// `bytes / seconds` in MB/s (10^6 bytes).
    pub megabytes_per_second: f64,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "handshake (TCP connect + Noise KK, loopback): mean {:.3} ms, min {:.3} ms over {} runs",
            self.handshake_ms_mean, self.handshake_ms_min, self.settings.handshakes
        )?;
        writeln!(f, "three-party mesh setup: {:.2} ms", self.mesh_setup_ms)?;
        write!(
            f,
            "mesh throughput: {:.0} MB/s summed over 6 directions ({} messages of {} bytes per direction, {:.1} MB in {:.3} s)",
            self.megabytes_per_second,
            self.settings.rounds,
            self.settings.message_bytes,
            self.bytes as f64 / 1e6,
            self.seconds
        )
    }
}

/// Three parties on loopback with fresh keys: their identities and bound listeners (the party
/// layer's benchmark meshes them too).
pub(crate) fn loopback_parties() -> Result<(Vec<LocalParty>, Vec<TcpListener>), NetError> {
    let mut listeners = Vec::new();
    for _ in PartyId::ALL {
        listeners.push(
            TcpListener::bind("127.0.0.1:0").map_err(|source| NetError::Bind {
                address: "127.0.0.1:0".into(),
                source,
            })?,
        );
    }
    let keys = PartyId::ALL
        .iter()
        .map(|_| StaticKeypair::generate().map_err(|e| NetError::Mesh(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut entries = Vec::new();
    for ((id, listener), key) in PartyId::ALL.into_iter().zip(&listeners).zip(&keys) {
        let local = listener.local_addr().map_err(|source| NetError::Bind {
            address: "127.0.0.1:0".into(),
            source,
        })?;
        let address = PartyAddress::parse(&local.to_string()).map_err(NetError::Mesh)?;
        entries.push(PartyEntry {
            id,
            address,
            public_key: key.public_key(),
        });
    }
    let config = PartiesConfig::new(entries, None).map_err(|e| NetError::Mesh(e.to_string()))?;
    let parties = keys
        .into_iter()
        .zip(PartyId::ALL)
        .map(|(key, id)| LocalParty::new(config.clone(), id, key))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((parties, listeners))
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, Result<T, NetError>>) -> Result<T, NetError> {
    h.join()
        .unwrap_or_else(|_| Err(NetError::Mesh("a benchmark thread panicked".into())))
}

/// Runs the benchmark and returns the figures (the caller prints them).
pub fn run(settings: BenchSettings) -> Result<BenchReport, NetError> {
    let (parties, listeners) = loopback_parties()?;

    // Sequential KK handshakes between parties 1 (initiator) and 0 (responder).
    let mut times = Vec::with_capacity(settings.handshakes);
    std::thread::scope(|s| -> Result<(), NetError> {
        let server = s.spawn(|| {
            for _ in 0..settings.handshakes {
                drop(accept(&listeners[0], &parties[0])?);
            }
            Ok(())
        });
        for _ in 0..settings.handshakes {
            let t = Instant::now();
            let channel = connect_to_party(&parties[1], PartyId::ALL[0])?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            drop(channel);
        }
        join(server)
    })?;
    let handshake_ms_mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    let handshake_ms_min = times.iter().copied().fold(f64::INFINITY, f64::min);

    let barrier = Barrier::new(PartyId::ALL.len());
    let setup_start = Instant::now();
    let per_party = std::thread::scope(|s| {
        let handles: Vec<_> = parties
            .iter()
            .zip(&listeners)
            .map(|(local, listener)| {
                let barrier = &barrier;
                s.spawn(move || -> Result<(f64, f64, u64), NetError> {
                    let mut mesh = Mesh::establish(local, listener)?;
                    let setup = setup_start.elapsed().as_secs_f64() * 1e3;
                    let payload = vec![0x5Au8; settings.message_bytes];
                    barrier.wait();
                    let start = Instant::now();
                    let mut received = 0u64;
                    for _ in 0..settings.rounds {
                        for ch in mesh.channels_mut() {
                            ch.send(&payload)?;
                        }
                        for ch in mesh.channels_mut() {
                            received += ch.recv()?.len() as u64;
                        }
                    }
                    for ch in mesh.channels_mut() {
                        ch.flush()?;
                    }
                    Ok((setup, start.elapsed().as_secs_f64(), received))
                })
            })
            .collect();
        handles.into_iter().map(join).collect::<Result<Vec<_>, _>>()
    })?;
    let mesh_setup_ms = per_party.iter().map(|p| p.0).fold(0.0, f64::max);
    let seconds = per_party.iter().map(|p| p.1).fold(0.0, f64::max);
    let bytes: u64 = per_party.iter().map(|p| p.2).sum();
    Ok(BenchReport {
        settings,
        mesh_setup_ms,
        handshake_ms_mean,
        handshake_ms_min,
        bytes,
        seconds,
        megabytes_per_second: bytes as f64 / 1e6 / seconds.max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_run_delivers_every_byte_on_six_directions() {
        let settings = BenchSettings {
            message_bytes: 100_000,
            rounds: 3,
            handshakes: 2,
        };
        let r = run(settings).unwrap();
        assert_eq!(r.bytes, 6 * 3 * 100_000);
        assert!(r.handshake_ms_min <= r.handshake_ms_mean);
    }
}
