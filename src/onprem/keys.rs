//! The instance's RSA-2048 key pair (protocol §5.4): private key as PKCS#1 DER, public key as
//! PKIX (SubjectPublicKeyInfo) DER, both base64 on the wire and on disk; RSA-PSS signing (§5.5).
//! STUB: interface fixed; implementation in progress.

/// An RSA key pair. `Debug` never prints the private key.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    pub private_pkcs1_der: Vec<u8>,
    pub public_pkix_der: Vec<u8>,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair").field("public_pkix_der_len", &self.public_pkix_der.len()).finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A new RSA-2048 key pair.
    pub fn generate() -> Result<KeyPair, String> {
        todo!()
    }

    /// From a stored base64 PKCS#1 private key; the public key is derived from it.
    pub fn from_private_b64(private_b64: &str) -> Result<KeyPair, String> {
        let _ = private_b64;
        todo!()
    }

    pub fn private_b64(&self) -> String {
        crate::base64::encode(&self.private_pkcs1_der)
    }

    pub fn public_b64(&self) -> String {
        crate::base64::encode(&self.public_pkix_der)
    }

    /// RSASSA-PSS with SHA-256 and a 32-byte salt over `message` (ring).
    pub fn sign_pss_sha256(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let _ = message;
        todo!()
    }
}
