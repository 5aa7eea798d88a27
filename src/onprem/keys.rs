//! The instance's RSA-2048 key pair (docs/protocol.md §5.4): private key as PKCS#1 DER, public key as
//! PKIX (SubjectPublicKeyInfo) DER, both base64 on the wire and on disk; RSA-PSS signing (§5.5).
//!
//! ring signs but cannot generate RSA keys, so generation and the DER encodings come from the
//! `rsa` crate (see Cargo.toml); its randomness is ring's system source, and signing is ring's.
//! Generation takes ~0.1 s (release build): only `register` and key rotation call it.

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{RSA_PSS_SHA256, RsaKeyPair};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::EncodePublicKey;
use rsa::rand_core::{TryCryptoRng, TryRng};
use std::convert::Infallible;

/// The size upstream generates; the service has registered keys of this size for years.
const KEY_BITS: usize = 2048;

/// Why a key pair cannot be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot generate an RSA-{KEY_BITS} key pair: {0}")]
    Generate(String),
    #[error(
        "cannot generate an RSA key pair: the system random source (getrandom, /dev/urandom) \
         failed; check that the kernel provides it"
    )]
    NoRandom,
    #[error("the private key is not valid base64: {0}")]
    Base64(String),
    #[error("the private key is not a PKCS#1 RSA private key: {0}")]
    NotPkcs1(String),
    #[error("the private key cannot be used for RSA signing: {0}")]
    Unusable(String),
    #[error("cannot encode the {0}")]
    Encode(String),
    #[error("RSA-PSS signing failed (system random source unavailable?)")]
    Sign,
}

/// An RSA key pair. `Debug` never prints the private key.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    pub private_pkcs1_der: Vec<u8>,
    pub public_pkix_der: Vec<u8>,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public_pkix_der_len", &self.public_pkix_der.len())
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A new RSA-2048 key pair.
    pub fn generate() -> Result<KeyPair, KeyError> {
        let mut rng = RingRng {
            source: SystemRandom::new(),
            failed: false,
        };
        let key = rsa::RsaPrivateKey::new(&mut rng, KEY_BITS)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        if rng.failed {
            return Err(KeyError::NoRandom);
        }
        KeyPair::from_rsa(&key)
    }

    /// From a stored base64 PKCS#1 private key; the public key is derived from it.
    pub fn from_private_b64(private_b64: &str) -> Result<KeyPair, KeyError> {
        let der = crate::base64::decode(private_b64.trim()).map_err(KeyError::Base64)?;
        let key = rsa::RsaPrivateKey::from_pkcs1_der(&der)
            .map_err(|e| KeyError::NotPkcs1(e.to_string()))?;
        // Checked now so that a key ring cannot sign with fails at load, not at the first call.
        RsaKeyPair::from_der(&der).map_err(|e| KeyError::Unusable(e.to_string()))?;
        KeyPair::from_rsa(&key)
    }

    fn from_rsa(key: &rsa::RsaPrivateKey) -> Result<KeyPair, KeyError> {
        let private = key
            .to_pkcs1_der()
            .map_err(|e| KeyError::Encode(format!("private key as PKCS#1: {e}")))?;
        let public = key
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| KeyError::Encode(format!("public key as PKIX: {e}")))?;
        Ok(KeyPair {
            private_pkcs1_der: private.as_bytes().to_vec(),
            public_pkix_der: public.as_bytes().to_vec(),
        })
    }

    pub fn private_b64(&self) -> String {
        crate::base64::encode(&self.private_pkcs1_der)
    }

    pub fn public_b64(&self) -> String {
        crate::base64::encode(&self.public_pkix_der)
    }

    /// RSASSA-PSS with SHA-256 and a 32-byte salt over `message` (ring).
    pub fn sign_pss_sha256(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let key = RsaKeyPair::from_der(&self.private_pkcs1_der)
            .map_err(|e| KeyError::Unusable(e.to_string()))?;
        let mut signature = vec![0; key.public().modulus_len()];
        key.sign(
            &RSA_PSS_SHA256,
            &SystemRandom::new(),
            message,
            &mut signature,
        )
        .map_err(|_| KeyError::Sign)?;
        Ok(signature)
    }
}

/// ring's system random source behind rand_core's traits, which the `rsa` crate draws from.
/// rand_core wants an infallible source: a failure is remembered (the bytes are then zeros) and
/// [`KeyPair::generate`] discards the key.
struct RingRng {
    source: SystemRandom,
    failed: bool,
}

impl TryRng for RingRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        if self.source.fill(dst).is_err() {
            self.failed = true;
            dst.fill(0);
        }
        Ok(())
    }
}

impl TryCryptoRng for RingRng {}

/// One key pair per test process: generation is slow in debug builds (~1.5 s).
#[cfg(test)]
pub(crate) fn test_key() -> &'static KeyPair {
    static KEY: std::sync::OnceLock<KeyPair> = std::sync::OnceLock::new();
    KEY.get_or_init(|| KeyPair::generate().expect("generate a test key"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{RSA_PSS_2048_8192_SHA256, UnparsedPublicKey};

    /// PKIX header of an RSA-2048 public key: SEQUENCE { SEQUENCE { rsaEncryption, NULL },
    /// BIT STRING (no unused bits) { RSAPublicKey } }.
    const PKIX_RSA_2048_HEADER: [u8; 24] = [
        0x30, 0x82, 0x01, 0x22, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01,
        0x01, 0x01, 0x05, 0x00, 0x03, 0x82, 0x01, 0x0f, 0x00,
    ];

    /// ring's verifier over the RSAPublicKey inside our PKIX encoding, so the test checks the
    /// private key, the public encoding and the signature together.
    fn verifies(public_pkix_der: &[u8], message: &[u8], signature: &[u8]) -> bool {
        let Some(rsa_public_key) = public_pkix_der.strip_prefix(&PKIX_RSA_2048_HEADER[..]) else {
            return false;
        };
        UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, rsa_public_key)
            .verify(message, signature)
            .is_ok()
    }

    #[test]
    fn generated_keys_have_the_formats_the_api_requires() {
        let key = test_key();
        assert_eq!(key.public_pkix_der.len(), 294);
        assert!(key.public_pkix_der.starts_with(&PKIX_RSA_2048_HEADER));
        assert!(key.public_b64().len() >= 392, "{}", key.public_b64().len());
        // PKCS#1 RSAPrivateKey: SEQUENCE (long form length), INTEGER version 0, INTEGER modulus.
        assert_eq!(&key.private_pkcs1_der[..2], &[0x30, 0x82]);
        assert_eq!(&key.private_pkcs1_der[4..7], &[0x02, 0x01, 0x00]);
        let ring_key = RsaKeyPair::from_der(&key.private_pkcs1_der).unwrap();
        assert_eq!(ring_key.public().modulus_len(), 256);
        assert_ne!(KeyPair::generate().unwrap(), *key);
    }

    #[test]
    fn signatures_verify_with_ring_against_the_public_key() {
        let key = test_key();
        let message =
            b"AWS4-HMAC-SHA256\n20240101T000000Z\n20240101/us-east-1/ssm/aws4_request\nabc";
        let signature = key.sign_pss_sha256(message).unwrap();
        assert_eq!(signature.len(), 256);
        assert!(verifies(&key.public_pkix_der, message, &signature));
        assert!(!verifies(
            &key.public_pkix_der,
            b"another message",
            &signature
        ));
        // PSS is randomised: two signatures differ and both verify.
        let again = key.sign_pss_sha256(message).unwrap();
        assert_ne!(signature, again);
        assert!(verifies(&key.public_pkix_der, message, &again));
    }

    #[test]
    fn a_stored_private_key_round_trips_and_derives_the_public_key() {
        let key = test_key();
        let loaded = KeyPair::from_private_b64(&key.private_b64()).unwrap();
        assert_eq!(&loaded, key);
        let signature = loaded.sign_pss_sha256(b"m").unwrap();
        assert!(verifies(&key.public_pkix_der, b"m", &signature));
    }

    #[test]
    fn bad_stored_keys_are_errors_not_panics() {
        let err = KeyPair::from_private_b64("not base64!").unwrap_err();
        assert!(err.to_string().contains("base64"), "{err}");
        let garbage = crate::base64::encode(b"\x30\x03\x02\x01\x00");
        let err = KeyPair::from_private_b64(&garbage).unwrap_err();
        assert!(err.to_string().contains("PKCS#1"), "{err}");
        // A public key is not a private key.
        assert!(KeyPair::from_private_b64(&test_key().public_b64()).is_err());
        let broken = KeyPair {
            private_pkcs1_der: vec![1, 2, 3],
            public_pkix_der: vec![],
        };
        let err = broken.sign_pss_sha256(b"m").unwrap_err();
        assert!(err.to_string().contains("signing"), "{err}");
    }

    #[test]
    fn debug_output_holds_no_key_material() {
        let key = test_key();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.private_b64()[..20]));
        assert!(!shown.contains("private_pkcs1_der"));
    }
}
