//! Noise static keys (X25519): generation from the OS CSPRNG, the key file format, and the hex
//! text form of public keys that `keygen` prints and `parties.toml` holds.
//!
//! Key file format (text, mode 0600):
//!
//! ```text
//! # privxray Noise static private key (X25519). Keep this file secret.
//! # public key: <64 hex digits>
//! <64 hex digits: the private key>
//! ```
//!
//! The `# public key:` line is informative but checked on load, so a corrupted private key is
//! reported as such instead of surfacing later as a refused handshake.
//!
//! Imports `crate::atomic` and the curve and RNG crates only; no sibling, never `party` or
//! `pipeline`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use curve25519_dalek::montgomery::MontgomeryPoint;
use rand::TryRngCore;

/// Length in bytes of an X25519 key, public or private.
pub const KEY_LEN: usize = 32;

const PUBLIC_KEY_COMMENT: &str = "# public key:";

/// Problems with the text form of a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyTextError {
    #[error("expected {expected} hex digits ({KEY_LEN} bytes), found {found} characters")]
    WrongLength { expected: usize, found: usize },
    #[error("not hexadecimal: character {character:?} at position {position}")]
    NotHex { character: char, position: usize },
    #[error("not a valid X25519 public key: {0}")]
    InvalidPoint(&'static str),
}

/// Problems reading, writing or generating key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "key file {path} already exists; refusing to overwrite it (use --force to replace it)"
    )]
    AlreadyExists { path: PathBuf },
    #[error("cannot read key file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write key file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("key file {path} is not valid UTF-8 text")]
    NotText { path: PathBuf },
    #[error("key file {path}: expected exactly one line holding the private key, found {found}")]
    LineCount { path: PathBuf, found: usize },
    #[error("key file {path}: bad private key: {source}")]
    BadPrivateKey { path: PathBuf, source: KeyTextError },
    #[error("key file {path}: the recorded public key {recorded} does not match the private key (which gives {derived}); the file is corrupted")]
    Inconsistent {
        path: PathBuf,
        recorded: String,
        derived: PublicKey,
    },
    #[error(
        "key file {path} is accessible by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("the operating system's random number generator failed: {0}")]
    Rng(String),
}

/// An X25519 public key. Its text form is 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// Wraps raw bytes, rejecting encodings that cannot come from a real key pair: points not
    /// on Curve25519 and low-order points (which would make the Diffie-Hellman output
    /// predictable).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Result<Self, KeyTextError> {
        let edwards = MontgomeryPoint(bytes)
            .to_edwards(0)
            .ok_or(KeyTextError::InvalidPoint("not a point on Curve25519"))?;
        if edwards.is_small_order() {
            return Err(KeyTextError::InvalidPoint("low-order point"));
        }
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl FromStr for PublicKey {
    type Err = KeyTextError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_bytes(parse_key_hex(s.trim())?)
    }
}

/// Parses exactly 64 hex digits into 32 bytes, naming the first offending character.
fn parse_key_hex(s: &str) -> Result<[u8; KEY_LEN], KeyTextError> {
    if let Some((position, character)) = s.chars().enumerate().find(|(_, c)| !c.is_ascii_hexdigit())
    {
        return Err(KeyTextError::NotHex {
            character,
            position,
        });
    }
    if s.len() != 2 * KEY_LEN {
        return Err(KeyTextError::WrongLength {
            expected: 2 * KEY_LEN,
            found: s.chars().count(),
        });
    }
    let mut out = [0u8; KEY_LEN];
    hex::decode_to_slice(s, &mut out).map_err(|_| KeyTextError::WrongLength {
        expected: 2 * KEY_LEN,
        found: s.len(),
    })?;
    Ok(out)
}

/// A Noise static key pair. The private half never appears in `Debug` output and is wiped on
/// drop.
pub struct StaticKeypair {
    private: [u8; KEY_LEN],
    public: PublicKey,
}

impl StaticKeypair {
    /// Generates a fresh key pair from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, KeyError> {
        let mut private = [0u8; KEY_LEN];
        rand::rngs::OsRng
            .try_fill_bytes(&mut private)
            .map_err(|e| KeyError::Rng(e.to_string()))?;
        Ok(Self::from_private_bytes(private))
    }

    /// Builds the key pair of a given private key (clamped as X25519 prescribes).
    pub fn from_private_bytes(private: [u8; KEY_LEN]) -> Self {
        let public = MontgomeryPoint::mul_base_clamped(private).to_bytes();
        Self {
            private,
            public: PublicKey(public),
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The private key, for handing to the Noise handshake only.
    pub(crate) fn private_bytes(&self) -> &[u8; KEY_LEN] {
        &self.private
    }

    /// The key file contents (see the module documentation).
    fn file_text(&self) -> String {
        format!(
            "# privxray Noise static private key (X25519). Keep this file secret.\n\
             {PUBLIC_KEY_COMMENT} {}\n{}\n",
            self.public,
            hex::encode(self.private)
        )
    }

    /// Writes the key file with mode 0600. With `force`, atomically replaces whatever is there;
    /// without it, never replaces an existing file, even one another process creates at the
    /// same moment (see [`write_new_file`]).
    pub fn save(&self, path: &Path, force: bool) -> Result<(), KeyError> {
        let exists = || KeyError::AlreadyExists {
            path: path.to_path_buf(),
        };
        if force {
            return crate::atomic::write_atomic_with_mode(
                path,
                self.file_text().as_bytes(),
                Some(0o600),
            )
            .map_err(|source| KeyError::Write {
                path: path.to_path_buf(),
                source,
            });
        }
        // Cheap early answer; write_new_file is what makes the refusal race-free.
        if path.symlink_metadata().is_ok() {
            return Err(exists());
        }
        match write_new_file(path, self.file_text().as_bytes()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(exists()),
            Err(source) => Err(KeyError::Write {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Reads a key file written by [`StaticKeypair::save`]. On Unix, a file that group or
    /// others may access is refused, as ssh does, because the key is the party's identity.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let err_path = || path.to_path_buf();
        let bytes = read_secret_file(path).map_err(|e| match e {
            SecretReadError::Io(source) => KeyError::Read {
                path: err_path(),
                source,
            },
            SecretReadError::Insecure { mode } => KeyError::InsecurePermissions {
                path: err_path(),
                mode,
            },
        })?;
        let text = String::from_utf8(bytes).map_err(|_| KeyError::NotText { path: err_path() })?;
        let mut recorded = None;
        let mut data_lines = Vec::new();
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix(PUBLIC_KEY_COMMENT) {
                recorded = Some(rest.trim().to_owned());
            } else if !line.is_empty() && !line.starts_with('#') {
                data_lines.push(line);
            }
        }
        let [line] = data_lines.as_slice() else {
            return Err(KeyError::LineCount {
                path: err_path(),
                found: data_lines.len(),
            });
        };
        let private = parse_key_hex(line).map_err(|source| KeyError::BadPrivateKey {
            path: err_path(),
            source,
        })?;
        let pair = Self::from_private_bytes(private);
        if let Some(recorded) = recorded {
            if !recorded.eq_ignore_ascii_case(&pair.public.to_hex()) {
                return Err(KeyError::Inconsistent {
                    path: err_path(),
                    recorded,
                    derived: pair.public,
                });
            }
        }
        Ok(pair)
    }
}

/// Why [`read_secret_file`] refused.
#[derive(Debug)]
pub(crate) enum SecretReadError {
    Io(io::Error),
    /// Group or others may access the file; `mode` is its permission bits.
    Insecure {
        mode: u32,
    },
}

/// Reads a secret file (a private key, a model share). On Unix a file that group or others may
/// access is refused, as ssh does: whoever else could read it holds the secret too. The mode is
/// taken from the opened file, so it is the mode of the bytes returned.
pub(crate) fn read_secret_file(path: &Path) -> Result<Vec<u8>, SecretReadError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(SecretReadError::Io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file
            .metadata()
            .map_err(SecretReadError::Io)?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(SecretReadError::Insecure {
                mode: mode & 0o7777,
            });
        }
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(SecretReadError::Io)?;
    Ok(bytes)
}

/// Creates `path` holding `bytes` (mode 0600) unless it exists, without a window in which two
/// writers both succeed or a reader sees half a file: the bytes go to a fresh temporary file
/// beside it, which is hard-linked to `path` (`link` fails with `AlreadyExists` when `path`
/// exists, atomically) and then removed. Where the file system has no hard links, falls back to
/// an exclusive create, which still never replaces a file.
fn write_new_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "key".into());
    let tmp = path.with_file_name(format!(
        ".{name}.new.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    crate::atomic::write_atomic_with_mode(&tmp, bytes, Some(0o600))?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
        Err(_) => write_exclusive(path, bytes)?,
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// `O_EXCL` create with mode 0600, for file systems without hard links.
fn write_exclusive(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    if written.is_err() {
        // Our own half-written file: remove it rather than leave a key that does not load.
        let _ = std::fs::remove_file(path);
    }
    written
}

impl fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKeypair")
            .field("public", &self.public)
            .field("private", &"<redacted>")
            .finish()
    }
}

impl Drop for StaticKeypair {
    fn drop(&mut self) {
        // Best-effort wipe; black_box keeps the compiler from treating the store as dead.
        self.private = [0u8; KEY_LEN];
        std::hint::black_box(&self.private);
    }
}

/// `privxray keygen --out FILE [--force]`: generates a key pair, stores the private key in
/// `out` (mode 0600, atomically) and returns the public key for the caller to print.
pub fn keygen(out: &Path, force: bool) -> Result<PublicKey, KeyError> {
    let pair = StaticKeypair::generate()?;
    pair.save(out, force)?;
    Ok(pair.public_key())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_matches_independent_diffie_hellman() {
        // X25519 is commutative: a's private with b's public equals b's private with a's
        // public. This checks the public-key derivation against the DH definition.
        let a = StaticKeypair::generate().unwrap();
        let b = StaticKeypair::generate().unwrap();
        let ab = MontgomeryPoint(b.public.0).mul_clamped(a.private);
        let ba = MontgomeryPoint(a.public.0).mul_clamped(b.private);
        assert_eq!(ab, ba);
        assert_ne!(a.public, b.public);
    }

    #[test]
    fn rfc7748_test_vector() {
        // RFC 7748 section 6.1, Alice's key pair.
        let private: [u8; 32] =
            parse_key_hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .unwrap();
        let pair = StaticKeypair::from_private_bytes(private);
        assert_eq!(
            pair.public_key().to_hex(),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }

    #[test]
    fn keygen_save_load_round_trip_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("party0.key");
        let public = keygen(&path, false).unwrap();
        let loaded = StaticKeypair::load(&path).unwrap();
        assert_eq!(loaded.public_key(), public);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&public.to_hex()));
    }

    #[test]
    fn keygen_never_overwrites_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let first = keygen(&path, false).unwrap();
        let err = keygen(&path, false).unwrap_err();
        assert!(matches!(err, KeyError::AlreadyExists { .. }), "{err}");
        assert!(err.to_string().contains("--force"));
        assert_eq!(StaticKeypair::load(&path).unwrap().public_key(), first);
        let second = keygen(&path, true).unwrap();
        assert_ne!(first, second);
        assert_eq!(StaticKeypair::load(&path).unwrap().public_key(), second);
    }

    #[test]
    fn racing_keygens_leave_exactly_one_winner_and_a_valid_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("race.key");
        let n = 16;
        let barrier = std::sync::Barrier::new(n);
        let results: Vec<Result<PublicKey, KeyError>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..n)
                .map(|_| {
                    s.spawn(|| {
                        let pair = StaticKeypair::generate().unwrap();
                        barrier.wait();
                        // Past the early existence check at once, as racing processes are.
                        write_new_file(&path, pair.file_text().as_bytes())
                            .map(|()| pair.public_key())
                            .map_err(|source| KeyError::Write {
                                path: path.clone(),
                                source,
                            })
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<PublicKey> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .copied()
            .collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        for r in &results {
            if let Err(KeyError::Write { source, .. }) = r {
                assert_eq!(source.kind(), io::ErrorKind::AlreadyExists, "{source}");
            }
        }
        assert_eq!(StaticKeypair::load(&path).unwrap().public_key(), winners[0]);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["race.key".to_owned()],
            "temporary files left behind"
        );
    }

    #[test]
    fn keygen_without_force_leaves_an_existing_file_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, b"not a key, but someone's file").unwrap();
        let err = keygen(&path, false).unwrap_err();
        assert!(matches!(err, KeyError::AlreadyExists { .. }), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"not a key, but someone's file"
        );
        // A dangling symlink is an existing name too: no key is written through it.
        #[cfg(unix)]
        {
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(dir.path().join("target"), &link).unwrap();
            assert!(matches!(
                keygen(&link, false),
                Err(KeyError::AlreadyExists { .. })
            ));
            assert!(!dir.path().join("target").exists());
        }
    }

    fn write_key_file(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("key");
        crate::atomic::write_atomic_with_mode(&p, text.as_bytes(), Some(0o600)).unwrap();
        p
    }

    #[test]
    fn load_errors_name_the_file_and_problem() {
        let dir = tempfile::tempdir().unwrap();
        let short = write_key_file(dir.path(), "abcd\n");
        let err = StaticKeypair::load(&short).unwrap_err();
        assert!(matches!(
            err,
            KeyError::BadPrivateKey {
                source: KeyTextError::WrongLength { found: 4, .. },
                ..
            }
        ));
        assert!(err.to_string().contains(&short.display().to_string()));

        let bad = write_key_file(dir.path(), &format!("{}zz\n", "00".repeat(31)));
        let err = StaticKeypair::load(&bad).unwrap_err();
        assert!(matches!(
            err,
            KeyError::BadPrivateKey {
                source: KeyTextError::NotHex {
                    character: 'z',
                    position: 62
                },
                ..
            }
        ));

        let empty = write_key_file(dir.path(), "# nothing\n\n");
        assert!(matches!(
            StaticKeypair::load(&empty).unwrap_err(),
            KeyError::LineCount { found: 0, .. }
        ));

        let missing = dir.path().join("absent.key");
        let err = StaticKeypair::load(&missing).unwrap_err();
        assert!(matches!(err, KeyError::Read { .. }));
        assert!(err.to_string().contains("absent.key"));
    }

    #[test]
    fn corrupted_private_key_is_detected_by_recorded_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        keygen(&path, false).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let last = text.trim_end().lines().last().unwrap().to_owned();
        // Change the first hex digit (the high nibble of byte 0, which clamping keeps).
        let (head, tail) = last.split_at(1);
        let flipped = format!("{}{tail}", if head == "0" { "1" } else { "0" });
        write_key_file(dir.path(), &text.replace(&last, &flipped));
        let err = StaticKeypair::load(&dir.path().join("key")).unwrap_err();
        assert!(matches!(err, KeyError::Inconsistent { .. }), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn group_readable_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        keygen(&path, false).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = StaticKeypair::load(&path).unwrap_err();
        assert!(
            matches!(err, KeyError::InsecurePermissions { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn public_key_text_parsing() {
        let pair = StaticKeypair::generate().unwrap();
        let text = pair.public_key().to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<PublicKey>().unwrap(), pair.public_key());
        assert_eq!(
            text.to_uppercase().parse::<PublicKey>().unwrap(),
            pair.public_key()
        );
        assert!(matches!(
            text[..60].parse::<PublicKey>(),
            Err(KeyTextError::WrongLength { found: 60, .. })
        ));
        // All-zero is a low-order point: DH with it yields zero.
        assert!(matches!(
            "00".repeat(32).parse::<PublicKey>(),
            Err(KeyTextError::InvalidPoint(_))
        ));
        assert!(matches!(
            format!("g{}", &text[1..]).parse::<PublicKey>(),
            Err(KeyTextError::NotHex { position: 0, .. })
        ));
    }

    #[test]
    fn debug_hides_private_key() {
        let pair = StaticKeypair::generate().unwrap();
        let shown = format!("{pair:?}");
        assert!(!shown.contains(&hex::encode(pair.private)));
        assert!(shown.contains("redacted"));
    }
}
