//! `parties.toml`: the three parties (id, address, pinned public key), the optional model
//! owner's public key, timeouts and limits.
//!
//! Every participant (parties, client, owner) uses the same file. Its identity part (party ids,
//! their public keys and the owner key) is hashed into every Noise prologue, so two
//! participants holding different files cannot complete a handshake. Addresses, timeouts and
//! limits are deliberately left out of that hash: each host may reach its peers by its own
//! route (internal DNS, NAT) and tune its own timeouts without breaking the binding.
//!
//! Imports `crate::mpc` (party ids) and `super::keys` only; never `party`, `pipeline` or
//! terminal code.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use blake2::{Blake2s256, Digest};
use serde::Deserialize;

use super::keys::{KeyTextError, PublicKey};

pub use crate::mpc::party::{PartyId, PARTY_COUNT};

/// Default cap on one message (1 GiB): model shares of the larger networks are hundreds of MB.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 1 << 30;

/// A validated `host:port` (host: a DNS name, an IPv4 address or a bracketed IPv6 address).
/// Resolution happens at connect time, so nothing here assumes loopback or a fixed IP.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PartyAddress(String);

impl PartyAddress {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| "expected host:port, found no ':'".to_owned())?;
        if host.is_empty() {
            return Err("the host part is empty".into());
        }
        if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the host contains whitespace or control characters".into());
        }
        if let Some(inner) = host.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| "an IPv6 host must be written [addr]".to_owned())?;
            inner
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("{inner:?} is not an IPv6 address"))?;
        } else if host.contains(':') {
            return Err("an IPv6 host must be written in brackets, e.g. [::1]:7100".into());
        }
        let port: u16 = port
            .parse()
            .map_err(|_| format!("port {port:?} is not a number between 1 and 65535"))?;
        if port == 0 {
            return Err("port 0 is not a fixed port".into());
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PartyAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One computing party as the configuration describes it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PartyEntry {
    pub id: PartyId,
    pub address: PartyAddress,
    pub public_key: PublicKey,
}

/// Network timeouts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Timeouts {
    /// One TCP connect attempt.
    pub connect: Duration,
    /// The whole handshake of one connection, from the first byte of the hello to the
    /// initiator's confirmation: a connection that has not proven itself by then is closed,
    /// however slowly its bytes keep coming.
    pub handshake: Duration,
    /// One whole message once connected, from the start of the wait to its last byte (not one
    /// read: a message that trickles in is cut here). Parties compute between rounds and model
    /// shares are large, so this is generous by default.
    pub io: Duration,
    /// How long a party keeps retrying or waiting for its peers while the mesh starts.
    pub startup: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            handshake: Duration::from_secs(10),
            io: Duration::from_secs(300),
            startup: Duration::from_secs(60),
        }
    }
}

/// BLAKE2s-256 of the canonical identity part of the configuration.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConfigHash(pub [u8; 32]);

impl fmt::Display for ConfigHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The first 8 bytes identify a file well enough in messages.
        f.write_str(&hex::encode(&self.0[..8]))
    }
}

impl fmt::Debug for ConfigHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConfigHash({})", hex::encode(self.0))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read parties file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parties file{}: {message}", path_suffix(.path))]
    Syntax {
        path: Option<PathBuf>,
        message: String,
    },
    #[error("party id {value} is not 0, 1 or 2")]
    BadId { value: i64 },
    #[error("party id {id} is listed twice")]
    DuplicateId { id: PartyId },
    #[error("party {id} is missing (the file must list parties 0, 1 and 2)")]
    MissingParty { id: PartyId },
    #[error("party {id}: bad address {value:?}: {reason}")]
    BadAddress {
        id: u8,
        value: String,
        reason: String,
    },
    #[error("parties {first} and {second} share the address {address}")]
    DuplicateAddress {
        first: PartyId,
        second: PartyId,
        address: String,
    },
    #[error("{field}: bad public key {value:?}: {source}")]
    BadKey {
        field: String,
        value: String,
        source: KeyTextError,
    },
    #[error("{first} and {second} have the same public key; every participant needs its own key")]
    DuplicateKey { first: String, second: String },
    #[error("timeouts.{field} must be at least 1 ms")]
    ZeroTimeout { field: &'static str },
    #[error("limits.max_message_bytes must be at least {min}, found {value}")]
    TinyLimit { value: u64, min: u64 },
}

fn path_suffix(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" {}", p.display()))
        .unwrap_or_default()
}

/// The parsed, validated `parties.toml`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PartiesConfig {
    parties: [PartyEntry; PARTY_COUNT],
    owner_public_key: Option<PublicKey>,
    timeouts: Timeouts,
    max_message_bytes: u64,
}

// Raw TOML shapes; `deny_unknown_fields` turns typos into errors instead of silent defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(alias = "parties")]
    party: Vec<RawParty>,
    owner_public_key: Option<String>,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParty {
    id: i64,
    address: String,
    public_key: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    connect_ms: Option<u64>,
    handshake_ms: Option<u64>,
    io_ms: Option<u64>,
    startup_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_message_bytes: Option<u64>,
}

/// The smallest accepted message cap: anything below cannot carry a useful share.
const MIN_MAX_MESSAGE_BYTES: u64 = 1 << 16;

impl PartiesConfig {
    /// Builds a configuration from entries given in any order, with default timeouts.
    pub fn new(
        entries: Vec<PartyEntry>,
        owner_public_key: Option<PublicKey>,
    ) -> Result<Self, ConfigError> {
        let mut slots: [Option<PartyEntry>; PARTY_COUNT] = Default::default();
        for entry in entries {
            let slot = &mut slots[entry.id.index()];
            if slot.is_some() {
                return Err(ConfigError::DuplicateId { id: entry.id });
            }
            *slot = Some(entry);
        }
        let [a, b, c] = slots;
        let missing = |id: usize| ConfigError::MissingParty {
            id: PartyId::ALL[id],
        };
        let parties = [
            a.ok_or(missing(0))?,
            b.ok_or(missing(1))?,
            c.ok_or(missing(2))?,
        ];
        for (i, p) in parties.iter().enumerate() {
            for q in &parties[i + 1..] {
                if p.address == q.address {
                    return Err(ConfigError::DuplicateAddress {
                        first: p.id,
                        second: q.id,
                        address: p.address.to_string(),
                    });
                }
                if p.public_key == q.public_key {
                    return Err(ConfigError::DuplicateKey {
                        first: format!("party {}", p.id),
                        second: format!("party {}", q.id),
                    });
                }
            }
            if Some(p.public_key) == owner_public_key {
                return Err(ConfigError::DuplicateKey {
                    first: format!("party {}", p.id),
                    second: "the model owner".into(),
                });
            }
        }
        Ok(Self {
            parties,
            owner_public_key,
            timeouts: Timeouts::default(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        })
    }

    /// Reads and validates a `parties.toml` file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Syntax {
                path: None,
                message,
            } => ConfigError::Syntax {
                path: Some(path.to_path_buf()),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates `parties.toml` text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: None,
            message: e.to_string(),
        })?;
        let mut entries = Vec::with_capacity(raw.party.len());
        for p in raw.party {
            let id = u8::try_from(p.id)
                .ok()
                .and_then(PartyId::new)
                .ok_or(ConfigError::BadId { value: p.id })?;
            let address =
                PartyAddress::parse(&p.address).map_err(|reason| ConfigError::BadAddress {
                    id: id.get(),
                    value: p.address.clone(),
                    reason,
                })?;
            let public_key = p.public_key.parse().map_err(|source| ConfigError::BadKey {
                field: format!("party {id} public_key"),
                value: p.public_key.clone(),
                source,
            })?;
            entries.push(PartyEntry {
                id,
                address,
                public_key,
            });
        }
        let owner = raw
            .owner_public_key
            .map(|text| {
                text.parse().map_err(|source| ConfigError::BadKey {
                    field: "owner_public_key".into(),
                    value: text.clone(),
                    source,
                })
            })
            .transpose()?;
        let mut config = Self::new(entries, owner)?;
        let defaults = Timeouts::default();
        let ms = |value: Option<u64>, field, default: Duration| match value {
            None => Ok(default),
            Some(0) => Err(ConfigError::ZeroTimeout { field }),
            Some(v) => Ok(Duration::from_millis(v)),
        };
        config.timeouts = Timeouts {
            connect: ms(raw.timeouts.connect_ms, "connect_ms", defaults.connect)?,
            handshake: ms(
                raw.timeouts.handshake_ms,
                "handshake_ms",
                defaults.handshake,
            )?,
            io: ms(raw.timeouts.io_ms, "io_ms", defaults.io)?,
            startup: ms(raw.timeouts.startup_ms, "startup_ms", defaults.startup)?,
        };
        if let Some(max) = raw.limits.max_message_bytes {
            config = config.with_max_message_bytes(max)?;
        }
        Ok(config)
    }

    /// Renders the configuration as `parties.toml` text that [`PartiesConfig::parse`] reads
    /// back to an equal value.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        if let Some(owner) = &self.owner_public_key {
            out.push_str(&format!("owner_public_key = \"{owner}\"\n\n"));
        }
        let t = &self.timeouts;
        out.push_str(&format!(
            "[timeouts]\nconnect_ms = {}\nhandshake_ms = {}\nio_ms = {}\nstartup_ms = {}\n\n",
            t.connect.as_millis(),
            t.handshake.as_millis(),
            t.io.as_millis(),
            t.startup.as_millis()
        ));
        out.push_str(&format!(
            "[limits]\nmax_message_bytes = {}\n",
            self.max_message_bytes
        ));
        for p in &self.parties {
            out.push_str(&format!(
                "\n[[party]]\nid = {}\naddress = \"{}\"\npublic_key = \"{}\"\n",
                p.id, p.address, p.public_key
            ));
        }
        out
    }

    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    pub fn with_max_message_bytes(mut self, max: u64) -> Result<Self, ConfigError> {
        if max < MIN_MAX_MESSAGE_BYTES {
            return Err(ConfigError::TinyLimit {
                value: max,
                min: MIN_MAX_MESSAGE_BYTES,
            });
        }
        self.max_message_bytes = max;
        Ok(self)
    }

    pub fn party(&self, id: PartyId) -> &PartyEntry {
        &self.parties[id.index()]
    }

    pub fn parties(&self) -> &[PartyEntry; PARTY_COUNT] {
        &self.parties
    }

    pub fn owner_public_key(&self) -> Option<&PublicKey> {
        self.owner_public_key.as_ref()
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    pub fn max_message_bytes(&self) -> u64 {
        self.max_message_bytes
    }

    /// The party holding `key`, if any.
    pub fn party_with_key(&self, key: &PublicKey) -> Option<PartyId> {
        self.parties
            .iter()
            .find(|p| &p.public_key == key)
            .map(|p| p.id)
    }

    /// Hash of the canonical identity part (party ids and keys, owner key), bound into every
    /// handshake prologue.
    pub fn hash(&self) -> ConfigHash {
        let mut h = Blake2s256::new();
        h.update(b"privxray parties v1\n");
        for p in &self.parties {
            h.update(format!("party {} {}\n", p.id, p.public_key).as_bytes());
        }
        match &self.owner_public_key {
            Some(k) => h.update(format!("owner {k}\n").as_bytes()),
            None => h.update(b"owner none\n"),
        }
        ConfigHash(h.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::keys::StaticKeypair;

    fn keys(n: usize) -> Vec<PublicKey> {
        (0..n)
            .map(|_| StaticKeypair::generate().unwrap().public_key())
            .collect()
    }

    fn text(keys: &[PublicKey], extra: &str) -> String {
        let mut s = String::from(extra);
        for (i, k) in keys.iter().enumerate() {
            s.push_str(&format!(
                "\n[[party]]\nid = {i}\naddress = \"127.0.0.1:{}\"\npublic_key = \"{k}\"\n",
                7100 + i
            ));
        }
        s
    }

    #[test]
    fn parses_valid_file_in_any_order() {
        let k = keys(4);
        let owner = k[3];
        let mut body = text(
            &k[..3],
            &format!("owner_public_key = \"{owner}\"\n[timeouts]\nio_ms = 1500\n"),
        );
        // Reverse the party blocks by moving party 0 to the end.
        let first = body.find("[[party]]").unwrap();
        let second = body[first + 1..].find("[[party]]").unwrap() + first + 1;
        let block0 = body[first..second].to_owned();
        body.replace_range(first..second, "");
        body.push_str(&block0);
        let c = PartiesConfig::parse(&body).unwrap();
        for (i, id) in PartyId::ALL.iter().enumerate() {
            assert_eq!(c.party(*id).id, *id);
            assert_eq!(c.party(*id).public_key, k[i]);
            assert_eq!(
                c.party(*id).address.as_str(),
                format!("127.0.0.1:{}", 7100 + i)
            );
        }
        assert_eq!(c.owner_public_key(), Some(&owner));
        assert_eq!(c.timeouts().io, Duration::from_millis(1500));
        assert_eq!(c.timeouts().connect, Timeouts::default().connect);
        assert_eq!(c.party_with_key(&k[2]), Some(PartyId::ALL[2]));
        assert_eq!(c.party_with_key(&owner), None);
    }

    #[test]
    fn to_toml_round_trips() {
        let k = keys(4);
        let c = PartiesConfig::parse(&text(
            &k[..3],
            &format!("owner_public_key = \"{}\"\n", k[3]),
        ))
        .unwrap()
        .with_max_message_bytes(1 << 20)
        .unwrap();
        assert_eq!(PartiesConfig::parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn duplicate_and_missing_parties() {
        let k = keys(3);
        let dup = text(&k, "").replace("id = 2", "id = 1");
        assert!(matches!(
            PartiesConfig::parse(&dup),
            Err(ConfigError::DuplicateId { id }) if id == PartyId::ALL[1]
        ));
        let two = text(&k[..2], "");
        let err = PartiesConfig::parse(&two).unwrap_err();
        assert!(matches!(err, ConfigError::MissingParty { id } if id == PartyId::ALL[2]));
        assert!(err.to_string().contains("party 2 is missing"));
        let bad_id = text(&k, "").replace("id = 2", "id = 7");
        assert!(matches!(
            PartiesConfig::parse(&bad_id),
            Err(ConfigError::BadId { value: 7 })
        ));
    }

    #[test]
    fn bad_keys_and_addresses_are_named() {
        let k = keys(3);
        let good = text(&k, "");
        let bad_key = good.replace(&k[1].to_string(), "1234");
        let err = PartiesConfig::parse(&bad_key).unwrap_err();
        assert!(matches!(err, ConfigError::BadKey { .. }));
        assert!(err.to_string().contains("party 1 public_key"), "{err}");

        for (addr, why) in [
            ("127.0.0.1", "no ':'"),
            (":7100", "empty"),
            ("127.0.0.1:99999", "port"),
            ("127.0.0.1:0", "port 0"),
            ("::1:7100", "brackets"),
            ("[::g]:7100", "IPv6"),
        ] {
            let bad = good.replace("127.0.0.1:7101", addr);
            let err = PartiesConfig::parse(&bad).unwrap_err();
            assert!(
                matches!(&err, ConfigError::BadAddress { id: 1, .. })
                    && err.to_string().contains(why),
                "{addr}: {err}"
            );
        }
        // Names and IPv6 are fine: nothing assumes loopback.
        let named = good
            .replace("127.0.0.1:7101", "party1.example.org:7101")
            .replace("127.0.0.1:7102", "[2001:db8::2]:7102");
        assert!(PartiesConfig::parse(&named).is_ok());

        let same_addr = good.replace("127.0.0.1:7101", "127.0.0.1:7100");
        assert!(matches!(
            PartiesConfig::parse(&same_addr),
            Err(ConfigError::DuplicateAddress { .. })
        ));
        let same_key = good.replace(&k[2].to_string(), &k[0].to_string());
        assert!(matches!(
            PartiesConfig::parse(&same_key),
            Err(ConfigError::DuplicateKey { .. })
        ));
    }

    #[test]
    fn typos_and_zero_timeouts_are_rejected() {
        let k = keys(3);
        let typo = text(&k, "").replace("public_key", "publickey");
        assert!(matches!(
            PartiesConfig::parse(&typo),
            Err(ConfigError::Syntax { .. })
        ));
        let zero = text(&k, "[timeouts]\nconnect_ms = 0\n");
        assert!(matches!(
            PartiesConfig::parse(&zero),
            Err(ConfigError::ZeroTimeout {
                field: "connect_ms"
            })
        ));
        let tiny = text(&k, "[limits]\nmax_message_bytes = 10\n");
        assert!(matches!(
            PartiesConfig::parse(&tiny),
            Err(ConfigError::TinyLimit { .. })
        ));
    }

    #[test]
    fn hash_binds_keys_but_not_addresses_or_timeouts() {
        let k = keys(4);
        let base = PartiesConfig::parse(&text(&k[..3], "")).unwrap();
        let moved = PartiesConfig::parse(
            &text(&k[..3], "[timeouts]\nio_ms = 5\n").replace("127.0.0.1:7100", "10.0.0.5:7100"),
        )
        .unwrap();
        assert_eq!(base.hash(), moved.hash());
        let other_key = PartiesConfig::parse(&text(&[k[0], k[1], k[3]], "")).unwrap();
        assert_ne!(base.hash(), other_key.hash());
        let with_owner = PartiesConfig::parse(&text(
            &k[..3],
            &format!("owner_public_key = \"{}\"\n", k[3]),
        ))
        .unwrap();
        assert_ne!(base.hash(), with_owner.hash());
        // Swapping two parties' keys changes which id a key belongs to.
        let swapped = PartiesConfig::parse(&text(&[k[1], k[0], k[2]], "")).unwrap();
        assert_ne!(base.hash(), swapped.hash());
    }

    #[test]
    fn example_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/parties.example.toml");
        let c = PartiesConfig::load(&path).unwrap();
        assert_eq!(c.party(PartyId::ALL[2]).address.as_str(), "127.0.0.1:7102");
    }

    #[test]
    fn ring_neighbours() {
        for p in PartyId::ALL {
            assert_eq!(p.next().prev(), p);
            assert_ne!(p.next(), p);
            assert!(!p.others().contains(&p));
        }
    }
}
