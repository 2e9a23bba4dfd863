//! ed25519 keys for signing bundles: generation, files, signing and checking.
//!
//! Key files are one line of text: `quarry-ed25519-secret-key <64 hex>` (the 32-byte seed,
//! written with mode 0600) and `quarry-ed25519-public-key <64 hex>`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::{EvidenceError, Result};

const SECRET_TAG: &str = "quarry-ed25519-secret-key";
const PUBLIC_TAG: &str = "quarry-ed25519-public-key";

/// A signing key.
pub struct SecretKey(SigningKey);

/// A key that checks signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

/// A new key pair from the operating system's random source.
pub fn generate_keypair() -> Result<(SecretKey, PublicKey)> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed)
        .map_err(|e| EvidenceError::io("getrandom", std::io::Error::other(e.to_string())))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    let public = PublicKey(key.verifying_key());
    Ok((SecretKey(key), public))
}

fn read_tagged(path: &Path, tag: &str, what: &'static str) -> Result<[u8; 32]> {
    let bad = |reason: String| EvidenceError::BadKey {
        path: path.to_path_buf(),
        what,
        reason,
    };
    let text = fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let hex_part = text
        .trim()
        .strip_prefix(tag)
        .ok_or_else(|| bad(format!("it does not start with '{tag}'")))?
        .trim();
    let bytes = hex::decode(hex_part).map_err(|e| bad(format!("bad hex: {e}")))?;
    bytes
        .try_into()
        .map_err(|_| bad("the key is not 32 bytes".into()))
}

impl SecretKey {
    pub fn load(path: &Path) -> Result<SecretKey> {
        let seed = read_tagged(path, SECRET_TAG, "secret")?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// Writes the key to a new file readable only by its owner.
    pub fn save(&self, path: &Path) -> Result<()> {
        let line = format!("{SECRET_TAG} {}\n", hex::encode(self.0.to_bytes()));
        write_new(path, line.as_bytes(), 0o600)
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> String {
        hex::encode(self.0.sign(message).to_bytes())
    }
}

impl PublicKey {
    pub fn load(path: &Path) -> Result<PublicKey> {
        let bytes = read_tagged(path, PUBLIC_TAG, "public")?;
        PublicKey::from_bytes(&bytes).map_err(|reason| EvidenceError::BadKey {
            path: path.to_path_buf(),
            what: "public",
            reason,
        })
    }

    pub fn from_bytes(bytes: &[u8; 32]) -> std::result::Result<PublicKey, String> {
        VerifyingKey::from_bytes(bytes)
            .map(PublicKey)
            .map_err(|e| format!("not a valid ed25519 point: {e}"))
    }

    pub fn from_hex(s: &str) -> std::result::Result<PublicKey, String> {
        let bytes: [u8; 32] = hex::decode(s)
            .map_err(|e| e.to_string())?
            .try_into()
            .map_err(|_| "a public key is 32 bytes".to_string())?;
        PublicKey::from_bytes(&bytes)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_new(
            path,
            format!("{PUBLIC_TAG} {}\n", self.to_hex()).as_bytes(),
            0o644,
        )
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    /// Short name of the key for people: `ed25519:` and the first 16 hex digits of the SHA-256
    /// of the public key.
    pub fn fingerprint(&self) -> String {
        format!(
            "ed25519:{}",
            &hex::encode(Sha256::digest(self.0.to_bytes()))[..16]
        )
    }

    /// Whether `signature` (hex) is this key's signature of `message`.
    pub(crate) fn verifies(&self, message: &[u8], signature: &str) -> bool {
        let Ok(bytes) = hex::decode(signature) else {
            return false;
        };
        let Ok(bytes) = <[u8; 64]>::try_from(bytes.as_slice()) else {
            return false;
        };
        self.0
            .verify_strict(message, &Signature::from_bytes(&bytes))
            .is_ok()
    }
}

/// The public key file beside a secret key file: `KEY.pub`.
pub fn public_path_for(secret: &Path) -> PathBuf {
    let mut s = secret.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| EvidenceError::io(path, e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| EvidenceError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sign() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public) = generate_keypair().unwrap();
        let sp = dir.path().join("k");
        secret.save(&sp).unwrap();
        public.save(&public_path_for(&sp)).unwrap();
        let secret = SecretKey::load(&sp).unwrap();
        let loaded = PublicKey::load(&public_path_for(&sp)).unwrap();
        assert_eq!(loaded, public);
        let sig = secret.sign(b"evidence");
        assert!(loaded.verifies(b"evidence", &sig));
        assert!(!loaded.verifies(b"evidencE", &sig));
        let (_, other) = generate_keypair().unwrap();
        assert!(!other.verifies(b"evidence", &sig));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&sp).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(secret.save(&sp).is_err(), "never overwrites a key");
        assert!(SecretKey::load(&public_path_for(&sp)).is_err());
    }
}
