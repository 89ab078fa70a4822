//! The Noise cipher: AES-256-GCM, from `graviola` (AES-NI/VAES and carry-less multiply
//! assembly, several GB/s) where the CPU has what it needs, and from `snow`'s own resolver
//! (the RustCrypto `aes-gcm` crate) everywhere else.
//!
//! Why AES-GCM: a batch-1 private prediction moves about 57 MB per party, every byte encrypted
//! once and decrypted once; snow's ChaChaPoly ran at about 1.3 GB/s here, which made the cipher
//! a large part of the loopback overhead. Both implementations are the Noise `AESGCM` cipher
//! (key of 32 bytes, nonce = 4 zero bytes then the 64-bit counter big-endian, 16-byte tag), so
//! they interoperate byte for byte; which one a party uses is a local choice, never negotiated.
//!
//! Imports only `snow` and `graviola`; the handshake builds every Noise state through
//! [`resolver`].

use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};

/// Authentication tag length of AES-GCM.
pub const TAG_LEN: usize = 16;

/// The resolver every Noise state of this crate is built with.
pub(crate) fn resolver() -> Box<dyn CryptoResolver + Send> {
    Box::new(Resolver)
}

/// Whether this CPU runs the fast AES-GCM (checked once per cipher, cheaply).
pub fn fast_aes_gcm_available() -> bool {
    fast::available()
}

/// snow's default resolver with the cipher swapped for the fast one where it runs.
struct Resolver;

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        DefaultResolver.resolve_rng()
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        match choice {
            CipherChoice::AESGCM if fast::available() => fast::cipher(),
            _ => DefaultResolver.resolve_cipher(choice),
        }
    }
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod fast {
    use super::TAG_LEN;
    use graviola::aead::AesGcm;
    use snow::types::Cipher;

    pub(super) fn available() -> bool {
        // graviola asserts its CPU features on every call; asking first keeps an older CPU on
        // the portable cipher instead of a panic.
        graviola::util::is_cpu_supported()
    }

    pub(super) fn cipher() -> Option<Box<dyn Cipher>> {
        Some(Box::new(FastAesGcm {
            // Replaced by `set` before any use (snow never encrypts without a key).
            key: AesGcm::new(&[0; 32]),
        }))
    }

    struct FastAesGcm {
        key: AesGcm,
    }

    /// The Noise AESGCM nonce: 32 zero bits, then the counter big-endian.
    fn nonce_bytes(nonce: u64) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&nonce.to_be_bytes());
        n
    }

    impl Cipher for FastAesGcm {
        fn name(&self) -> &'static str {
            "AESGCM"
        }

        fn set(&mut self, key: &[u8; 32]) {
            self.key = AesGcm::new(key);
        }

        fn encrypt(&self, nonce: u64, authtext: &[u8], plaintext: &[u8], out: &mut [u8]) -> usize {
            let n = plaintext.len();
            let (body, rest) = out.split_at_mut(n);
            body.copy_from_slice(plaintext);
            let mut tag = [0u8; TAG_LEN];
            self.key
                .encrypt(&nonce_bytes(nonce), authtext, body, &mut tag);
            rest[..TAG_LEN].copy_from_slice(&tag);
            n + TAG_LEN
        }

        fn decrypt(
            &self,
            nonce: u64,
            authtext: &[u8],
            ciphertext: &[u8],
            out: &mut [u8],
        ) -> Result<usize, snow::Error> {
            let n = ciphertext
                .len()
                .checked_sub(TAG_LEN)
                .ok_or(snow::Error::Decrypt)?;
            let (body, tag) = ciphertext.split_at(n);
            let out = out.get_mut(..n).ok_or(snow::Error::Decrypt)?;
            out.copy_from_slice(body);
            self.key
                .decrypt(&nonce_bytes(nonce), authtext, out, tag)
                .map(|()| n)
                .map_err(|_| snow::Error::Decrypt)
        }
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod fast {
    pub(super) fn available() -> bool {
        false
    }

    pub(super) fn cipher() -> Option<Box<dyn snow::types::Cipher>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn portable() -> Box<dyn Cipher> {
        DefaultResolver
            .resolve_cipher(&CipherChoice::AESGCM)
            .unwrap()
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + 7) as u8).collect()
    }

    /// Both directions between the fast cipher and snow's: same ciphertext and tag for the same
    /// key, nonce and associated data, each decrypting the other's.
    #[test]
    fn fast_and_portable_ciphers_agree_byte_for_byte() {
        if !fast_aes_gcm_available() {
            eprintln!("this CPU runs the portable cipher only; nothing to compare");
            return;
        }
        let mut fast = fast::cipher().unwrap();
        let mut slow = portable();
        assert_eq!(fast.name(), slow.name());
        let key: [u8; 32] = std::array::from_fn(|i| i as u8 ^ 0x5a);
        fast.set(&key);
        slow.set(&key);
        for (len, nonce, ad) in [
            (0, 0, &b""[..]),
            (1, 1, b"ad"),
            (15, 2, b""),
            (16, 7, b"x"),
            (1000, 1 << 40, b""),
            (65_519, u64::MAX - 1, b"prologue"),
        ] {
            let plain = sample(len);
            let (mut a, mut b) = (vec![0u8; len + TAG_LEN], vec![0u8; len + TAG_LEN]);
            assert_eq!(fast.encrypt(nonce, ad, &plain, &mut a), len + TAG_LEN);
            assert_eq!(slow.encrypt(nonce, ad, &plain, &mut b), len + TAG_LEN);
            assert_eq!(a, b, "ciphertexts differ at length {len}");
            let mut back = vec![0u8; len];
            assert_eq!(slow.decrypt(nonce, ad, &a, &mut back).unwrap(), len);
            assert_eq!(back, plain);
            back.fill(0);
            assert_eq!(fast.decrypt(nonce, ad, &b, &mut back).unwrap(), len);
            assert_eq!(back, plain);
        }
    }

    #[test]
    fn tampering_nonce_or_associated_data_fails_to_decrypt() {
        let mut ciphers = vec![portable()];
        if fast_aes_gcm_available() {
            ciphers.push(fast::cipher().unwrap());
        }
        for mut c in ciphers {
            c.set(&[9; 32]);
            let plain = sample(300);
            let mut sealed = vec![0u8; 300 + TAG_LEN];
            c.encrypt(5, b"ad", &plain, &mut sealed);
            let mut out = vec![0u8; 300];
            assert!(c.decrypt(5, b"ad", &sealed, &mut out).is_ok());
            for k in [0, 150, 299, 300, 315] {
                let mut bad = sealed.clone();
                bad[k] ^= 1;
                assert!(c.decrypt(5, b"ad", &bad, &mut out).is_err(), "byte {k}");
            }
            assert!(c.decrypt(6, b"ad", &sealed, &mut out).is_err());
            assert!(c.decrypt(5, b"ae", &sealed, &mut out).is_err());
        }
        // A record shorter than a tag is an error, not a panic (snow's own cipher relies on
        // its caller to check the length; the channel does).
        if fast_aes_gcm_available() {
            let c = fast::cipher().unwrap();
            assert!(c.decrypt(0, b"", &[0; TAG_LEN - 1], &mut [0; 32]).is_err());
        }
    }
}
