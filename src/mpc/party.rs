//! Party identities, the one [`PartyId`] of the whole crate (the network configuration and the
//! terminal interface use this type too). Parties sit on a ring 0 -> 1 -> 2 -> 0: party `i`
//! holds share components `i` and `i + 1`, so its "next" neighbour shares one component (and
//! one PRG key) with it.
//!
//! The lowest layer of the engine: imports nothing from the crate, so every other module may
//! import it.

use std::fmt;

/// Number of computing parties.
pub const PARTY_COUNT: usize = 3;

/// One of the three computing parties: 0, 1 or 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartyId(u8);

impl PartyId {
    pub const ALL: [PartyId; PARTY_COUNT] = [PartyId(0), PartyId(1), PartyId(2)];

    /// Accepts 0, 1 or 2; each caller turns `None` into its own error.
    pub fn new(id: u8) -> Option<Self> {
        (usize::from(id) < PARTY_COUNT).then_some(PartyId(id))
    }

    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    pub fn get(self) -> u8 {
        self.0
    }

    /// Party `i + 1 mod 3`.
    pub fn next(self) -> PartyId {
        PartyId((self.0 + 1) % 3)
    }

    /// Party `i - 1 mod 3`.
    pub fn prev(self) -> PartyId {
        PartyId((self.0 + 2) % 3)
    }

    /// The two other parties, in increasing id order.
    pub fn others(self) -> [PartyId; 2] {
        let mut out = [self; 2];
        let mut n = 0;
        for p in Self::ALL {
            if p != self {
                out[n] = p;
                n += 1;
            }
        }
        out
    }
}

impl fmt::Display for PartyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_neighbours() {
        for p in PartyId::ALL {
            assert_eq!(p.next().prev(), p);
            assert_ne!(p.next(), p);
            assert_ne!(p.prev(), p.next());
        }
        assert!(PartyId::new(3).is_none());
    }
}
