//! Field encryption envelope.
//!
//! Every protected field is sealed with XChaCha20-Poly1305 under a per-subject
//! data key (one per client). Data keys are wrapped (encrypted) under the
//! master key, which comes from a secret variable and never touches storage.
//! The associated data binds a ciphertext to its place: subject, table, row,
//! column and row version, so a ciphertext copied to another cell fails to
//! open.
//!
//! Sealed layout: `FORMAT (1 byte) || nonce (24 bytes) || ciphertext+tag`.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
pub const KEY_LEN: usize = 32;

/// Why a seal or open failed. Carries no data, so it can be logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoError {
    /// Master key is not 32 bytes in hex or base64.
    BadMasterKey,
    /// Ciphertext is malformed, tampered with, in the wrong cell, or the key is wrong.
    OpenFailed,
    /// The operating system's random source failed.
    Random,
}

impl std::fmt::Display for CryptoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CryptoError::BadMasterKey => "master key must be 32 bytes, hex or base64 encoded",
            CryptoError::OpenFailed => "ciphertext failed authentication",
            CryptoError::Random => "random source failed",
        })
    }
}

impl std::error::Error for CryptoError {}

/// A 256-bit secret key, wiped from memory on drop.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; KEY_LEN]>);

impl SecretKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        SecretKey(Zeroizing::new(bytes))
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(k.as_mut()).map_err(|_| CryptoError::Random)?;
        Ok(SecretKey(k))
    }

    /// Parses a master key given as 64 hex digits or base64 (standard or URL-safe) of 32 bytes.
    pub fn parse_master(text: &str) -> Result<Self, CryptoError> {
        use base64::Engine;
        let text = text.trim();
        let bytes: Zeroizing<Vec<u8>> = Zeroizing::new(if text.len() == 64 {
            hex::decode(text).map_err(|_| CryptoError::BadMasterKey)?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
                .map_err(|_| CryptoError::BadMasterKey)?
        });
        let arr: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| CryptoError::BadMasterKey)?;
        Ok(Self::from_bytes(arr))
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Derives an independent sub-key for one purpose (HMAC-SHA256 as a PRF),
    /// so the master key itself is only ever used to wrap data keys.
    pub fn derive(&self, purpose: &str) -> SecretKey {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_ref()).expect("any key length");
        mac.update(b"edge-common/derive/v1/");
        mac.update(purpose.as_bytes());
        let out: [u8; 32] = mac.finalize().into_bytes().into();
        SecretKey::from_bytes(out)
    }

    /// HMAC-SHA256 of `data` under this key.
    pub fn mac(&self, data: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_ref()).expect("any key length");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// Where a sealed field lives. Its encoding is the AEAD associated data.
#[derive(Debug, Clone, Copy)]
pub struct FieldPlace<'a> {
    pub subject: &'a str,
    pub table: &'a str,
    pub row: &'a str,
    pub column: &'a str,
    pub version: i64,
}

impl FieldPlace<'_> {
    /// Unambiguous encoding: each part length-prefixed.
    pub fn associated_data(&self) -> Vec<u8> {
        let mut ad = Vec::with_capacity(64);
        ad.extend_from_slice(b"field/v1");
        for part in [self.subject, self.table, self.row, self.column] {
            ad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            ad.extend_from_slice(part.as_bytes());
        }
        ad.extend_from_slice(&self.version.to_be_bytes());
        ad
    }
}

/// Encrypts `plaintext` under `key`, bound to `associated_data`.
pub fn seal(key: &SecretKey, associated_data: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|_| CryptoError::Random)?;
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key.as_bytes()));
    let ct = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: associated_data })
        .map_err(|_| CryptoError::OpenFailed)?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Decrypts a value produced by [`seal`] with the same key and associated data.
pub fn open(key: &SecretKey, associated_data: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed[0] != FORMAT_V1 {
        return Err(CryptoError::OpenFailed);
    }
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key.as_bytes()));
    let nonce = XNonce::from_slice(&sealed[1..1 + NONCE_LEN]);
    cipher
        .decrypt(nonce, Payload { msg: &sealed[1 + NONCE_LEN..], aad: associated_data })
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::OpenFailed)
}

/// Seals one field at its place.
pub fn seal_field(key: &SecretKey, place: FieldPlace<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    seal(key, &place.associated_data(), plaintext)
}

/// Opens one field at its place.
pub fn open_field(key: &SecretKey, place: FieldPlace<'_>, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    open(key, &place.associated_data(), sealed)
}

fn wrap_ad(subject: &str, key_version: i64) -> Vec<u8> {
    let mut ad = b"data-key/v1".to_vec();
    ad.extend_from_slice(&(subject.len() as u32).to_be_bytes());
    ad.extend_from_slice(subject.as_bytes());
    ad.extend_from_slice(&key_version.to_be_bytes());
    ad
}

/// Wraps a subject's data key under the master key.
pub fn wrap_data_key(master: &SecretKey, subject: &str, key_version: i64, data_key: &SecretKey) -> Result<Vec<u8>, CryptoError> {
    seal(master, &wrap_ad(subject, key_version), data_key.as_bytes())
}

/// Unwraps a subject's data key.
pub fn unwrap_data_key(master: &SecretKey, subject: &str, key_version: i64, wrapped: &[u8]) -> Result<SecretKey, CryptoError> {
    let raw = open(master, &wrap_ad(subject, key_version), wrapped)?;
    let arr: [u8; KEY_LEN] = raw.as_slice().try_into().map_err(|_| CryptoError::OpenFailed)?;
    Ok(SecretKey::from_bytes(arr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(column: &str, version: i64) -> FieldPlace<'_> {
        FieldPlace { subject: "c1", table: "sessions", row: "r1", column, version }
    }

    #[test]
    fn seal_open_round_trip() {
        let k = SecretKey::generate().unwrap();
        let s = seal_field(&k, place("summary", 1), b"hello").unwrap();
        assert_eq!(open_field(&k, place("summary", 1), &s).unwrap().as_slice(), b"hello");
        assert!(!s.windows(5).any(|w| w == b"hello"));
    }

    #[test]
    fn ciphertext_is_bound_to_its_place() {
        let k = SecretKey::generate().unwrap();
        let s = seal_field(&k, place("summary", 1), b"secret").unwrap();
        assert_eq!(open_field(&k, place("homework", 1), &s).unwrap_err(), CryptoError::OpenFailed);
        assert_eq!(open_field(&k, place("summary", 2), &s).unwrap_err(), CryptoError::OpenFailed);
        let other = FieldPlace { subject: "c2", ..place("summary", 1) };
        assert_eq!(open_field(&k, other, &s).unwrap_err(), CryptoError::OpenFailed);
    }

    #[test]
    fn tampering_and_wrong_key_fail() {
        let k = SecretKey::generate().unwrap();
        let mut s = seal_field(&k, place("x", 1), b"abc").unwrap();
        let k2 = SecretKey::generate().unwrap();
        assert!(open_field(&k2, place("x", 1), &s).is_err());
        let last = s.len() - 1;
        s[last] ^= 1;
        assert!(open_field(&k, place("x", 1), &s).is_err());
        assert!(open_field(&k, place("x", 1), &s[..10]).is_err());
    }

    #[test]
    fn data_key_wrapping() {
        let master = SecretKey::generate().unwrap();
        let dk = SecretKey::generate().unwrap();
        let w = wrap_data_key(&master, "c1", 1, &dk).unwrap();
        assert_eq!(unwrap_data_key(&master, "c1", 1, &w).unwrap().as_bytes(), dk.as_bytes());
        assert!(unwrap_data_key(&master, "c2", 1, &w).is_err());
        assert!(unwrap_data_key(&master, "c1", 2, &w).is_err());
    }

    #[test]
    fn master_key_parsing() {
        let hex_key = "00".repeat(31) + "ff";
        assert_eq!(SecretKey::parse_master(&hex_key).unwrap().as_bytes()[31], 0xff);
        let b64 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        assert!(SecretKey::parse_master(b64).is_ok());
        assert_eq!(SecretKey::parse_master("short").unwrap_err(), CryptoError::BadMasterKey);
        assert_eq!(SecretKey::parse_master("").unwrap_err(), CryptoError::BadMasterKey);
    }

    #[test]
    fn derived_keys_differ_by_purpose() {
        let m = SecretKey::generate().unwrap();
        assert_ne!(m.derive("a").as_bytes(), m.derive("b").as_bytes());
        assert_eq!(m.derive("a").as_bytes(), m.derive("a").as_bytes());
        assert_ne!(m.derive("a").as_bytes(), m.as_bytes());
    }
}
