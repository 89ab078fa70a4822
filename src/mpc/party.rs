//! Party identities. Parties sit on a ring 0 -> 1 -> 2 -> 0: party `i` holds share components
//! `i` and `i + 1`, so its "next" neighbour shares one component (and one PRG key) with it.

use super::error::{MpcError, Result};
use std::fmt;

/// One of the three computing parties: 0, 1 or 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartyId(u8);

impl PartyId {
    pub const ALL: [PartyId; 3] = [PartyId(0), PartyId(1), PartyId(2)];

    pub fn new(id: u8) -> Result<Self> {
        if id < 3 {
            Ok(PartyId(id))
        } else {
            Err(MpcError::PartyId(u64::from(id)))
        }
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
        assert!(PartyId::new(3).is_err());
    }
}
