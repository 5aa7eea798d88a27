//! The payload cipher of KMS-encrypted sessions (docs/protocol.md §4.6.4), written apart from the
//! agent's: AES-256-GCM, no AAD, wire format `nonce(12) || ciphertext || tag(16)`, nonces from a
//! 96-bit little-endian counter (three u32 words, word 0 lowest) with a random start.
//!
//! The 64-byte data key holds one key per direction: bytes 0..32 for agent → client, bytes
//! 32..64 for client → agent.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::util::fill_random;

/// Size of a Session Manager data key.
pub const DATA_KEY_LEN: usize = 64;
const HALF: usize = DATA_KEY_LEN / 2;
const TAG_LEN: usize = 16;

pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub fn unb64(text: &str) -> Result<Vec<u8>, String> {
    STANDARD
        .decode(text)
        .map_err(|e| format!("{text:?} is not base64: {e}"))
}

/// One side's pair of keys and its nonce counter.
pub struct Cipher {
    seal: LessSafeKey,
    open: LessSafeKey,
    counter: [u32; 3],
}

fn aes_key(bytes: &[u8]) -> LessSafeKey {
    let key = UnboundKey::new(&AES_256_GCM, bytes).expect("an AES-256 key is 32 bytes");
    LessSafeKey::new(key)
}

impl Cipher {
    /// Seals with `seal`, opens with `open`; the nonce counter starts at a random value.
    pub fn new(seal: &[u8; HALF], open: &[u8; HALF]) -> Cipher {
        let mut start = [0u8; NONCE_LEN];
        fill_random(&mut start);
        let word =
            |i: usize| u32::from_le_bytes([start[i], start[i + 1], start[i + 2], start[i + 3]]);
        Cipher {
            seal: aes_key(seal),
            open: aes_key(open),
            counter: [word(0), word(4), word(8)],
        }
    }

    /// The client's view of `data_key`: seals with bytes 32..64, opens with bytes 0..32.
    pub fn client(data_key: &[u8; DATA_KEY_LEN]) -> Cipher {
        let (agent, client) = data_key.split_at(HALF);
        Cipher::new(half(client), half(agent))
    }

    /// The current counter value as a nonce; then the counter moves on by one (with carry).
    fn next_nonce(&mut self) -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        for (chunk, word) in nonce.chunks_exact_mut(4).zip(self.counter) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        for word in &mut self.counter {
            *word = word.wrapping_add(1);
            if *word != 0 {
                break;
            }
        }
        nonce
    }

    pub fn encrypt(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let nonce = self.next_nonce();
        let mut sealed = plaintext.to_vec();
        self.seal
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut sealed,
            )
            .expect("session payloads are far below AES-GCM's length limit");
        [&nonce[..], &sealed].concat()
    }

    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        let Some((nonce, sealed)) = data.split_first_chunk::<NONCE_LEN>() else {
            return Err(format!(
                "{} bytes are too short for nonce and tag",
                data.len()
            ));
        };
        if sealed.len() < TAG_LEN {
            return Err(format!(
                "{} bytes are too short for nonce and tag",
                data.len()
            ));
        }
        let mut buf = sealed.to_vec();
        let n = self
            .open
            .open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::empty(), &mut buf)
            .map_err(|_| format!("{} bytes fail AES-GCM authentication", data.len()))?
            .len();
        buf.truncate(n);
        Ok(buf)
    }
}

fn half(bytes: &[u8]) -> &[u8; HALF] {
    bytes.try_into().expect("a data key half is 32 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> [u8; DATA_KEY_LEN] {
        std::array::from_fn(|i| (i * 7) as u8)
    }

    /// The agent's view, built from the same primitives with the halves the other way round.
    fn agent(data_key: &[u8; DATA_KEY_LEN]) -> Cipher {
        let (agent, client) = data_key.split_at(HALF);
        Cipher::new(half(agent), half(client))
    }

    #[test]
    fn client_and_agent_keys_and_wire_format() {
        let mut client = Cipher::client(&key());
        let mut agent = agent(&key());
        let up = client.encrypt(b"ls\r");
        assert_eq!(up.len(), NONCE_LEN + 3 + TAG_LEN);
        assert_eq!(agent.decrypt(&up).unwrap(), b"ls\r");
        let down = agent.encrypt(b"file\r\n");
        assert_eq!(client.decrypt(&down).unwrap(), b"file\r\n");
        // Each direction has its own key: nobody opens what they sealed.
        assert!(client.decrypt(&up).is_err());
        // The client seals with bytes 32..64, checked with a key built by hand.
        let (nonce, rest) = up.split_first_chunk::<NONCE_LEN>().unwrap();
        let mut buf = rest.to_vec();
        let plain = aes_key(&key()[32..])
            .open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::empty(), &mut buf)
            .unwrap();
        assert_eq!(plain, b"ls\r");
        let mut bad = down.clone();
        bad[NONCE_LEN] ^= 1;
        assert!(client.decrypt(&bad).unwrap_err().contains("authentication"));
        assert!(client.decrypt(&down[..NONCE_LEN + TAG_LEN - 1]).is_err());
    }

    #[test]
    fn nonces_count_with_carry_from_a_random_start() {
        let mut c = Cipher::client(&key());
        let first = c.encrypt(b"");
        let second = c.encrypt(b"");
        let word0 = |m: &[u8]| u32::from_le_bytes(m[..4].try_into().unwrap());
        assert_eq!(word0(&second), word0(&first).wrapping_add(1));
        assert_ne!(
            Cipher::client(&key()).encrypt(b"")[..NONCE_LEN],
            first[..NONCE_LEN]
        );
        c.counter = [u32::MAX, u32::MAX, 5];
        assert_eq!(
            c.next_nonce(),
            [255, 255, 255, 255, 255, 255, 255, 255, 5, 0, 0, 0]
        );
        assert_eq!(c.next_nonce(), [0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0]);
    }

    #[test]
    fn base64_round_trip() {
        assert_eq!(b64(b"\x00\xffab"), "AP9hYg==");
        assert_eq!(unb64("AP9hYg==").unwrap(), b"\x00\xffab");
        assert!(unb64("not base64!").is_err());
    }
}
