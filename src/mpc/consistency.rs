//! Checks that the three parties hold pieces of one input and one model before they compute.
//!
//! Input copies: with replicated sharing, component `k` of a client's input goes to two parties
//! (party `k` as its `own`, party `k - 1` as its `next`). A client that sends the two holders
//! different copies would make the computation silently wrong, so before computing each party
//! sends the other holder of each of its two components a 32-byte BLAKE2b digest of its copy
//! (one round: one 32-byte message to each neighbour) and compares the digest it receives with
//! its own. A digest goes only to a party that holds the same component, so it tells that party
//! nothing it does not already know (a digest of a component a party lacks would let it test
//! guesses of the image).
//!
//! Model dealings: every model share carries the [`DealingId`] of the `share-model` run that
//! made it. The parties send each other their ids (16 bytes, or nothing without a model) and
//! every party sees all three, so all three reach the same verdict without another round.
//!
//! Imports `super::{client, error, model, party, transport}` only; never `net` or the party
//! layer.

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};

use super::client::InputShare;
use super::error::{MpcError, Result};
use super::model::DealingId;
use super::party::PartyId;
use super::transport::Transport;

/// Length of a component digest.
pub const DIGEST_LEN: usize = 32;

const DOMAIN: &[u8] = b"privxray input component copy v1";

/// BLAKE2b-256 of component `component` of a batch of input shares, as one party holds it
/// (`copies[i]` is that party's copy of the component for image `i`). The component index and
/// every length are hashed too, so copies of different components or batches never collide.
pub fn component_digest(component: usize, copies: &[&[u64]]) -> [u8; DIGEST_LEN] {
    let mut h = Blake2b::<U32>::new();
    h.update(DOMAIN);
    h.update((component as u64).to_le_bytes());
    h.update((copies.len() as u64).to_le_bytes());
    for words in copies {
        h.update((words.len() as u64).to_le_bytes());
        hash_words(&mut h, words);
    }
    h.finalize().into()
}

#[cfg(target_endian = "little")]
fn hash_words(h: &mut Blake2b<U32>, words: &[u64]) {
    h.update(bytemuck::cast_slice::<u64, u8>(words));
}

#[cfg(target_endian = "big")]
fn hash_words(h: &mut Blake2b<U32>, words: &[u64]) {
    for w in words {
        h.update(w.to_le_bytes());
    }
}

/// A component of the input whose two copies differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disagreement {
    pub component: usize,
    /// The two parties that hold it, in increasing order.
    pub holders: [PartyId; 2],
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "component {} of the input share differs between party {} and party {}",
            self.component, self.holders[0], self.holders[1]
        )
    }
}

/// The component party `me` holds as `own` is `me`; as `next`, `me + 1`.
fn holders(component: PartyId) -> [PartyId; 2] {
    let (a, b) = (component.prev(), component);
    if a < b {
        [a, b]
    } else {
        [b, a]
    }
}

/// One round with both neighbours: sends the digest of this party's `own` copy to the previous
/// party (which holds that component as its `next`) and of its `next` copy to the next party,
/// and compares what they sent. `inputs` is `None` when this party holds no share of the
/// request: it then sends empty messages, and a peer's empty message is not compared (such a
/// party refuses the request anyway). Returns the components whose copies differ, as this party
/// sees them: only the two holders of a component can see it, so the caller must share the
/// verdict with the third party (the party server does so in its ready exchange).
pub fn compare_input_copies<T: Transport>(
    t: &mut T,
    me: PartyId,
    inputs: Option<&[InputShare]>,
) -> Result<Vec<Disagreement>> {
    let mine = inputs.map(|inputs| {
        let own: Vec<&[u64]> = inputs.iter().map(|i| i.share().own()).collect();
        let next: Vec<&[u64]> = inputs.iter().map(|i| i.share().next()).collect();
        (
            component_digest(me.index(), &own),
            component_digest(me.next().index(), &next),
        )
    });
    let (to_prev, to_next) = match mine {
        Some((own, next)) => (own.to_vec(), next.to_vec()),
        None => (Vec::new(), Vec::new()),
    };
    t.send(me.prev(), to_prev)?;
    t.send(me.next(), to_next)?;
    let from_prev = recv_digest(t, me.prev())?;
    let from_next = recv_digest(t, me.next())?;
    let mut found = Vec::new();
    if let Some((own, next)) = mine {
        if from_prev.is_some_and(|d| d != own) {
            found.push(Disagreement {
                component: me.index(),
                holders: holders(me),
            });
        }
        if from_next.is_some_and(|d| d != next) {
            found.push(Disagreement {
                component: me.next().index(),
                holders: holders(me.next()),
            });
        }
    }
    Ok(found)
}

fn recv_digest<T: Transport>(t: &mut T, from: PartyId) -> Result<Option<[u8; DIGEST_LEN]>> {
    let got = t.recv(from)?;
    if got.is_empty() {
        return Ok(None);
    }
    got.as_slice()
        .try_into()
        .map(Some)
        .map_err(|_| MpcError::MessageLen {
            peer: from,
            expected: DIGEST_LEN,
            got: got.len(),
        })
}

/// The error for copies that differ: what the client did and that the request is refused.
pub fn inconsistent_input(found: &[Disagreement]) -> MpcError {
    let list: Vec<String> = found.iter().map(ToString::to_string).collect();
    MpcError::Mismatch {
        what: "input share copies",
        expected: "the same copy of each component at both parties that hold it".into(),
        got: format!(
            "{}: the client sent inconsistent shares, so the request is refused",
            list.join("; ")
        ),
    }
}

/// The first half of the dealing exchange: sends this party's dealing id (nothing when it has
/// no model) to both other parties. Sends do not wait, so a party sends everything of its
/// round before receiving.
pub fn send_dealing<T: Transport>(
    t: &mut T,
    me: PartyId,
    dealing: Option<DealingId>,
) -> Result<()> {
    let bytes = dealing.map_or_else(Vec::new, |d| d.as_bytes().to_vec());
    for peer in [me.next(), me.prev()] {
        t.send(peer, bytes.clone())?;
    }
    Ok(())
}

/// The second half: `from`'s dealing id, or `None` when it has no model.
pub fn recv_dealing<T: Transport>(t: &mut T, from: PartyId) -> Result<Option<DealingId>> {
    let got = t.recv(from)?;
    if got.is_empty() {
        return Ok(None);
    }
    let bytes: [u8; DealingId::LEN] =
        got.as_slice()
            .try_into()
            .map_err(|_| MpcError::MessageLen {
                peer: from,
                expected: DealingId::LEN,
                got: got.len(),
            })?;
    Ok(Some(DealingId::from_bytes(bytes)))
}

/// The verdict on the parties' dealing ids (`ids[i]` is party `i`'s; `None` for a party
/// without a model, which is left out): `None` when they agree, else a message naming them
/// and saying what to do. Every party sees the same three ids, so every party reaches the same
/// verdict.
pub fn mixed_dealings(ids: [Option<DealingId>; 3]) -> Option<String> {
    let present: Vec<(PartyId, DealingId)> = PartyId::ALL
        .into_iter()
        .zip(ids)
        .filter_map(|(p, d)| d.map(|d| (p, d)))
        .collect();
    let first = present.first()?.1;
    if present.iter().all(|(_, d)| *d == first) {
        return None;
    }
    let list: Vec<String> = present
        .iter()
        .map(|(p, d)| format!("party {p} holds dealing {d}"))
        .collect();
    Some(format!(
        "the parties hold model shares from different runs of share-model ({}), which are not \
         shares of one model; they refuse to compute until the model owner runs `privxray \
         share-model` again",
        list.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mpc::client::share_input;
    use crate::mpc::share::ArithShare;
    use crate::mpc::transport::InMemoryTransport;
    use crate::mpc::FixedPoint;
    use rand::SeedableRng;

    fn inputs(seed: u64) -> [InputShare; 3] {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let image: Vec<f32> = (0..2 * 3 * 3).map(|i| i as f32 / 18.0).collect();
        share_input(&image, [2, 3, 3], FixedPoint::default(), &mut rng).unwrap()
    }

    /// Runs the check at all three parties on threads; `held[i]` is party i's batch.
    fn run(held: [Option<Vec<InputShare>>; 3]) -> [Vec<Disagreement>; 3] {
        let ts = InMemoryTransport::triple();
        let out: Vec<Vec<Disagreement>> = std::thread::scope(|s| {
            let hs: Vec<_> = ts
                .into_iter()
                .zip(&held)
                .enumerate()
                .map(|(i, (mut t, h))| {
                    s.spawn(move || {
                        compare_input_copies(&mut t, PartyId::ALL[i], h.as_deref()).unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        out.try_into().unwrap()
    }

    /// Party `party`'s share with word 0 of its `own` (or `next`) copy changed.
    fn tampered(s: &InputShare, own: bool) -> InputShare {
        let (mut o, mut n) = s.share().clone().into_parts();
        let v = if own { &mut o } else { &mut n };
        v[0] = v[0].wrapping_add(1);
        InputShare::new(
            s.party(),
            s.fixed(),
            s.shape(),
            ArithShare::new(o, n).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn consistent_copies_pass_at_every_party() {
        let [a, b, c] = inputs(1);
        let found = run([Some(vec![a]), Some(vec![b]), Some(vec![c])]);
        assert_eq!(found, [vec![], vec![], vec![]]);
    }

    #[test]
    fn one_inconsistent_component_is_seen_by_both_of_its_holders() {
        for party in 0..3 {
            for own in [true, false] {
                let mut shares: Vec<InputShare> = inputs(2).into();
                shares[party] = tampered(&shares[party], own);
                let [a, b, c]: [InputShare; 3] = shares.try_into().unwrap();
                let found = run([Some(vec![a]), Some(vec![b]), Some(vec![c])]);
                let me = PartyId::ALL[party];
                let component = if own { me } else { me.next() };
                let bad = Disagreement {
                    component: component.index(),
                    holders: holders(component),
                };
                for (i, f) in found.iter().enumerate() {
                    if bad.holders.contains(&PartyId::ALL[i]) {
                        assert_eq!(f, &vec![bad], "party {i} ({party}, own {own})");
                    } else {
                        assert!(f.is_empty(), "party {i} cannot see component {component}");
                    }
                }
                let text = inconsistent_input(&[bad]).to_string();
                assert!(text.contains("inconsistent shares"), "{text}");
                assert!(text.contains(&format!("component {component}")), "{text}");
            }
        }
    }

    #[test]
    fn a_later_image_of_a_batch_is_checked_too() {
        let [a0, b0, c0] = inputs(3);
        let [a1, b1, c1] = inputs(4);
        let b1 = tampered(&b1, false);
        let found = run([Some(vec![a0, a1]), Some(vec![b0, b1]), Some(vec![c0, c1])]);
        assert_eq!(found[0], vec![]);
        assert_eq!(found[1].len(), 1);
        assert_eq!(found[2].len(), 1);
    }

    #[test]
    fn a_party_without_the_share_compares_nothing_and_blocks_nobody() {
        let [a, _, c] = inputs(5);
        let found = run([Some(vec![a]), None, Some(vec![c])]);
        assert_eq!(found, [vec![], vec![], vec![]]);
    }

    #[test]
    fn digests_bind_the_component_index_and_the_words() {
        let w = [1u64, 2, 3];
        assert_ne!(component_digest(0, &[&w]), component_digest(1, &[&w]));
        assert_ne!(
            component_digest(0, &[&w]),
            component_digest(0, &[&[1, 2, 4]])
        );
        // Splitting one copy into two images is another batch.
        assert_ne!(
            component_digest(0, &[&w]),
            component_digest(0, &[&w[..1], &w[1..]])
        );
        assert_eq!(component_digest(2, &[&w]), component_digest(2, &[&w]));
    }

    #[test]
    fn dealing_verdicts_name_the_ids_and_ignore_parties_without_a_model() {
        let a = DealingId::from_bytes([0xaa; 16]);
        let b = DealingId::from_bytes([0xbb; 16]);
        assert_eq!(mixed_dealings([Some(a), Some(a), Some(a)]), None);
        assert_eq!(mixed_dealings([Some(a), None, Some(a)]), None);
        assert_eq!(mixed_dealings([None, None, None]), None);
        let text = mixed_dealings([Some(a), Some(b), Some(b)]).unwrap();
        assert!(
            text.contains(&a.to_string()) && text.contains(&b.to_string()),
            "{text}"
        );
        assert!(text.contains("share-model"), "{text}");
        assert!(mixed_dealings([Some(b), None, Some(a)]).is_some());
    }

    #[test]
    fn dealing_ids_travel_between_all_three_parties() {
        let ids = [
            Some(DealingId::from_bytes([1; 16])),
            None,
            Some(DealingId::from_bytes([3; 16])),
        ];
        let ts = InMemoryTransport::triple();
        let seen: Vec<[Option<DealingId>; 3]> = std::thread::scope(|s| {
            let hs: Vec<_> = ts
                .into_iter()
                .enumerate()
                .map(|(i, mut t)| {
                    s.spawn(move || {
                        let me = PartyId::ALL[i];
                        send_dealing(&mut t, me, ids[i]).unwrap();
                        let mut all = [None; 3];
                        all[i] = ids[i];
                        for peer in [me.next(), me.prev()] {
                            all[peer.index()] = recv_dealing(&mut t, peer).unwrap();
                        }
                        all
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for s in seen {
            assert_eq!(s, ids);
        }
    }
}
