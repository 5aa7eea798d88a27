//! KMS-encrypted sessions (docs/protocol.md §4.6.3, §4.6.4): the `kms:Decrypt` of the client's data key,
//! the AES-256-GCM payload cipher built from it, and the handshake pieces around them (the
//! `KMSEncryption` action, its result, and the encryption challenge exchange).
//!
//! Key halves, as the agent sees them: bytes 0..32 seal what the agent sends, bytes 32..64 open
//! what the client sends. The client holds the same 64 bytes and uses them the other way round.

use crate::aws::credentials::CredentialsProvider;
use crate::aws::endpoint::{self, EndpointError};
use crate::aws::http::HttpClient;
use crate::aws::jsonrpc::JsonClient;
use crate::config::Config;
use crate::document::{field, kind, string_field};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Size of the KMS data key: two AES-256 keys, one per direction.
pub const DATA_KEY_LEN: usize = 64;
/// Random bytes behind the handshake's `Challenge` (bound into the KMS encryption context).
const HANDSHAKE_CHALLENGE_LEN: usize = 16;
/// Random bytes the agent encrypts for the EncChallengeRequest (type 8).
pub const CHALLENGE_LEN: usize = 64;
const TAG_LEN: usize = 16;
/// The handshake itself waits at most 15 s per step; KMS gets the same budget.
const KMS_TIMEOUT: Duration = Duration::from_secs(15);

/// The JSON 1.1 client for KMS (`TrentService.*`, signed for `kms`) at `Kms.Endpoint` or the
/// region's endpoint. `region` is the agent's region (identity or `Agent.Region`), not `Mgs.Region`.
pub fn kms_client(
    http: Arc<HttpClient>,
    region: &str,
    config: &Config,
    credentials: Arc<dyn CredentialsProvider>,
) -> Result<JsonClient, EndpointError> {
    let endpoint = config.endpoint(&endpoint::KMS, region)?;
    Ok(JsonClient::new(http, endpoint, endpoint::KMS, credentials))
}

/// Asks KMS for the plaintext of the client's data key (`KMSCipherTextKey`, base64). The
/// encryption context binds it to this session and instance, and to the handshake challenge when
/// the client acknowledged it — KMS refuses the key if any of them differs from what the client
/// used.
pub fn decrypt_data_key(
    kms: &JsonClient,
    ciphertext_b64: &str,
    key_id: &str,
    session_id: &str,
    instance_id: &str,
    challenge_b64: Option<&str>,
) -> Result<[u8; DATA_KEY_LEN], String> {
    let blob = crate::base64::decode(ciphertext_b64)
        .map_err(|e| format!("the client's KMSCipherTextKey is not base64: {e}"))?;
    if blob.is_empty() {
        return Err("the client sent an empty KMSCipherTextKey".into());
    }
    let mut context = Map::new();
    context.insert("aws:ssm:SessionId".into(), session_id.into());
    context.insert("aws:ssm:TargetId".into(), instance_id.into());
    if let Some(challenge) = challenge_b64 {
        context.insert("aws:ssm:RandomChallenge".into(), challenge.into());
    }
    let input = json!({
        "CiphertextBlob": crate::base64::encode(&blob),
        "KeyId": key_id,
        "EncryptionContext": context,
    });
    let output = kms.call("Decrypt", &input, KMS_TIMEOUT).map_err(|e| {
        format!(
            "kms:Decrypt of the session data key with key {key_id:?} failed: {e}; check that the \
             instance's credentials allow kms:Decrypt on this key and that KMS (Kms.Endpoint) is \
             reachable"
        )
    })?;
    let plaintext = output
        .get("Plaintext")
        .and_then(Value::as_str)
        .ok_or("kms:Decrypt answered without a Plaintext string")?;
    let key = crate::base64::decode(plaintext)
        .map_err(|e| format!("kms:Decrypt returned a Plaintext that is not base64: {e}"))?;
    <[u8; DATA_KEY_LEN]>::try_from(key.as_slice()).map_err(|_| {
        format!(
            "kms:Decrypt returned a {}-byte data key where Session Manager uses {DATA_KEY_LEN} \
             bytes; the client did not generate it for a session",
            key.len()
        )
    })
}

/// Per-message nonces: a 96-bit little-endian counter (three u32 words, word 0 lowest) that
/// starts at a random value. Counting never repeats a nonce under one key within 2^96 messages,
/// which random nonces could not promise; the random start guards against an accidental key reuse.
struct NonceCounter {
    words: [u32; 3],
}

impl NonceCounter {
    fn random() -> Result<NonceCounter, String> {
        let bytes: [u8; NONCE_LEN] = random_bytes()?;
        let mut words = [0u32; 3];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(4)) {
            *word = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        Ok(NonceCounter { words })
    }

    /// The current value; then the counter moves on by one.
    fn next(&mut self) -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        for (chunk, word) in nonce.chunks_exact_mut(4).zip(self.words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        for word in &mut self.words {
            *word = word.wrapping_add(1);
            if *word != 0 {
                break;
            }
        }
        nonce
    }
}

/// AES-256-GCM over session payloads; wire format `nonce(12) || ciphertext || tag(16)`, no AAD.
pub struct SessionCipher {
    /// Agent → client (data key bytes 0..32).
    seal: LessSafeKey,
    /// Client → agent (data key bytes 32..64).
    open: LessSafeKey,
    nonces: NonceCounter,
}

impl SessionCipher {
    pub fn new(data_key: &[u8; DATA_KEY_LEN]) -> Result<SessionCipher, String> {
        let (seal, open) = data_key.split_at(DATA_KEY_LEN / 2);
        let key = |bytes: &[u8]| {
            UnboundKey::new(&AES_256_GCM, bytes)
                .map(LessSafeKey::new)
                .map_err(|_| {
                    "cannot build an AES-256-GCM key from the session data key".to_string()
                })
        };
        Ok(SessionCipher {
            seal: key(seal)?,
            open: key(open)?,
            nonces: NonceCounter::random()?,
        })
    }

    /// Encrypts an outgoing payload with the agent's key.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let nonce = self.nonces.next();
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let (_, sealed) = out.split_at_mut(NONCE_LEN);
        let tag = self
            .seal
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), sealed)
            .map_err(|_| {
                format!(
                    "cannot encrypt a {}-byte payload: too long for AES-GCM",
                    plaintext.len()
                )
            })?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts an incoming payload with the client's key.
    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        let short = || {
            format!(
                "cannot decrypt a {}-byte payload: an encrypted payload has at least {} bytes \
                 (nonce and tag)",
                data.len(),
                NONCE_LEN + TAG_LEN
            )
        };
        let (nonce, sealed) = data.split_first_chunk::<NONCE_LEN>().ok_or_else(short)?;
        if sealed.len() < TAG_LEN {
            return Err(short());
        }
        let mut buf = sealed.to_vec();
        let len = self
            .open
            .open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::empty(), &mut buf)
            .map_err(|_| {
                format!(
                    "cannot decrypt a {}-byte payload: authentication failed (tampered, or not \
                     encrypted with the client's half of the session data key)",
                    data.len()
                )
            })?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// A fresh handshake challenge: 16 random bytes, base64. It goes into the `KMSEncryption` action
/// and, when the client acknowledges it, into the KMS encryption context.
pub fn random_challenge() -> Result<String, String> {
    random_bytes::<HANDSHAKE_CHALLENGE_LEN>().map(|b| crate::base64::encode(&b))
}

/// The HandshakeRequest's `RequestedClientActions` entry asking the client to encrypt.
pub fn kms_action(key_id: &str, challenge_b64: &str) -> Value {
    json!({
        "ActionType": "KMSEncryption",
        "ActionParameters": { "KMSKeyId": key_id, "Challenge": challenge_b64 },
    })
}

/// The `ActionResult` of the client's processed `KMSEncryption` action: the encrypted data key
/// (base64, as sent) and whether the client bound the challenge into its encryption context.
/// Keys match in any case, as Go's JSON decoding does.
pub fn parse_kms_result(action_result: &Value) -> Result<(String, bool), String> {
    let obj = action_result.as_object().ok_or_else(|| {
        format!(
            "the client's KMSEncryption result must be an object, found {}",
            kind(action_result)
        )
    })?;
    let key = string_field(obj, "KMSCipherTextKey")
        .map_err(|e| format!("the client's KMSEncryption result: {e}"))?
        .filter(|k| !k.is_empty())
        .ok_or("the client's KMSEncryption result has no KMSCipherTextKey")?;
    let acknowledged = match field(obj, "ChallengeAcknowledgement") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(format!(
                "the client's KMSEncryption result: ChallengeAcknowledgement must be a boolean, \
                 found {}",
                kind(other)
            ));
        }
    };
    Ok((key.to_owned(), acknowledged))
}

/// The EncChallengeRequest payload (type 8): 64 random bytes encrypted with the agent's key, as
/// `{"Challenge":"<base64>"}`; also returns those bytes for [`check_challenge_response`].
pub fn challenge_request(
    cipher: &mut SessionCipher,
) -> Result<(Vec<u8>, [u8; CHALLENGE_LEN]), String> {
    let challenge: [u8; CHALLENGE_LEN] = random_bytes()?;
    let sealed = cipher.encrypt(&challenge)?;
    let payload = json!({ "Challenge": crate::base64::encode(&sealed) });
    Ok((payload.to_string().into_bytes(), challenge))
}

/// Checks the EncChallengeResponse payload (type 9): the client decrypted the challenge with the
/// agent's key and re-encrypted it with its own, so it must open with the client's key and equal
/// what was sent. Proves both sides hold the same data key before any output is encrypted.
pub fn check_challenge_response(
    cipher: &SessionCipher,
    payload: &[u8],
    expected: &[u8; CHALLENGE_LEN],
) -> Result<(), String> {
    let what = "the client's EncChallengeResponse";
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| format!("{what} is not JSON: {e}"))?;
    let obj = value
        .as_object()
        .ok_or_else(|| format!("{what} must be an object, found {}", kind(&value)))?;
    let challenge = string_field(obj, "Challenge")
        .map_err(|e| format!("{what}: {e}"))?
        .ok_or_else(|| format!("{what} has no Challenge"))?;
    let sealed = crate::base64::decode(challenge).map_err(|e| format!("{what}: Challenge: {e}"))?;
    let plain = cipher
        .decrypt(&sealed)
        .map_err(|e| format!("{what}: {e}"))?;
    if plain != expected {
        return Err(format!(
            "{what} does not match the challenge sent: the client holds a different session key"
        ));
    }
    Ok(())
}

fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let mut bytes = [0u8; N];
    SystemRandom::new().fill(&mut bytes).map_err(|_| {
        "the system random source failed; session encryption cannot start".to_string()
    })?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::credentials::{Credentials, StaticCredentials};
    use crate::aws::http::HttpConfig;
    use crate::aws::http::test_server::{Received, Server, response, serve};

    #[test]
    fn nonces_count_up_with_carry() {
        let mut n = NonceCounter {
            words: [u32::MAX - 1, u32::MAX, 7],
        };
        let mut expect = [0xffu8; 12];
        expect[0] = 0xfe;
        expect[8..].copy_from_slice(&[7, 0, 0, 0]);
        assert_eq!(n.next(), expect);
        expect[0] = 0xff;
        assert_eq!(n.next(), expect);
        // Word 0 and word 1 overflow into word 2.
        assert_eq!(n.next(), [0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0]);
        assert_eq!(n.next(), [1, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0]);
        let mut top = NonceCounter {
            words: [u32::MAX; 3],
        };
        assert_eq!(top.next(), [0xff; 12]);
        assert_eq!(top.next(), [0; 12]);
    }

    fn data_key() -> [u8; DATA_KEY_LEN] {
        std::array::from_fn(|i| i as u8)
    }

    /// The client's cipher: the same data key with the halves swapped.
    fn client_cipher(key: &[u8; DATA_KEY_LEN]) -> SessionCipher {
        let mut swapped = *key;
        swapped.rotate_left(DATA_KEY_LEN / 2);
        SessionCipher::new(&swapped).unwrap()
    }

    #[test]
    fn round_trip_between_agent_and_client() {
        let mut agent = SessionCipher::new(&data_key()).unwrap();
        let mut client = client_cipher(&data_key());
        let first = agent.encrypt(b"hello from the shell").unwrap();
        assert_eq!(first.len(), NONCE_LEN + 20 + TAG_LEN);
        assert_eq!(client.decrypt(&first).unwrap(), b"hello from the shell");
        // Consecutive nonces: the counter, not a fresh random value, and never repeated.
        let second = agent.encrypt(b"").unwrap();
        let mut next = agent.nonces.words;
        next[0] = next[0].wrapping_sub(1);
        let expected_nonce = NonceCounter { words: next }.next();
        assert_eq!(second[..NONCE_LEN], expected_nonce);
        assert_ne!(first[..NONCE_LEN], second[..NONCE_LEN]);
        assert_eq!(client.decrypt(&second).unwrap(), b"");
        let keys = client.encrypt(b"ls -l\n").unwrap();
        assert_eq!(agent.decrypt(&keys).unwrap(), b"ls -l\n");
        // A cipher never opens its own output: each direction has its own key.
        assert!(agent.decrypt(&first).is_err());
    }

    #[test]
    fn agent_seals_with_the_first_half() {
        let mut agent = SessionCipher::new(&data_key()).unwrap();
        let sealed = agent.encrypt(b"output").unwrap();
        let first_half = UnboundKey::new(&AES_256_GCM, &data_key()[..32]).unwrap();
        let (nonce, rest) = sealed.split_first_chunk::<NONCE_LEN>().unwrap();
        let mut buf = rest.to_vec();
        let plain = LessSafeKey::new(first_half)
            .open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::empty(), &mut buf)
            .unwrap();
        assert_eq!(plain, b"output");
    }

    #[test]
    fn tampered_or_short_payloads_are_errors() {
        let mut client = client_cipher(&data_key());
        let agent = SessionCipher::new(&data_key()).unwrap();
        let sealed = client.encrypt(b"secret keystrokes").unwrap();
        for i in [0, NONCE_LEN, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            let err = agent.decrypt(&bad).unwrap_err();
            assert!(err.contains("authentication failed"), "{err}");
        }
        for len in [0, 5, NONCE_LEN, NONCE_LEN + TAG_LEN - 1] {
            let err = agent.decrypt(&sealed[..len]).unwrap_err();
            assert!(err.contains("at least 28 bytes"), "{len}: {err}");
        }
        let mut other = data_key();
        other[40] ^= 1;
        assert!(
            SessionCipher::new(&other)
                .unwrap()
                .decrypt(&sealed)
                .is_err()
        );
    }

    /// What the Session Manager client does with an EncChallengeRequest.
    fn client_answer(client: &mut SessionCipher, request: &[u8]) -> Vec<u8> {
        let v: Value = serde_json::from_slice(request).unwrap();
        let sealed = crate::base64::decode(v["Challenge"].as_str().unwrap()).unwrap();
        let plain = client.decrypt(&sealed).unwrap();
        let resealed = client.encrypt(&plain).unwrap();
        json!({ "Challenge": crate::base64::encode(&resealed) })
            .to_string()
            .into_bytes()
    }

    #[test]
    fn challenge_exchange() {
        let mut agent = SessionCipher::new(&data_key()).unwrap();
        let mut client = client_cipher(&data_key());
        let (request, challenge) = challenge_request(&mut agent).unwrap();
        assert_ne!(challenge, [0; CHALLENGE_LEN]);
        let answer = client_answer(&mut client, &request);
        check_challenge_response(&agent, &answer, &challenge).unwrap();

        // Echoing the request back proves nothing: it does not open with the client's key.
        let err = check_challenge_response(&agent, &request, &challenge).unwrap_err();
        assert!(err.contains("authentication failed"), "{err}");
        // A correctly encrypted but different challenge.
        let mut other = challenge;
        other[0] ^= 1;
        let err = check_challenge_response(&agent, &answer, &other).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
        for bad in [&b"nope"[..], b"[]", b"{}", br#"{"Challenge":"%%%%"}"#] {
            assert!(check_challenge_response(&agent, bad, &challenge).is_err());
        }
    }

    #[test]
    fn handshake_action_and_result() {
        let challenge = random_challenge().unwrap();
        assert_eq!(crate::base64::decode(&challenge).unwrap().len(), 16);
        assert_ne!(challenge, random_challenge().unwrap());
        assert_eq!(
            kms_action("alias/ssm", &challenge),
            json!({"ActionType": "KMSEncryption",
                   "ActionParameters": {"KMSKeyId": "alias/ssm", "Challenge": challenge}})
        );
        let result = json!({"KMSCipherTextKey": "AQID", "KMSCipherTextHash": "x",
                            "ChallengeAcknowledgement": true});
        assert_eq!(parse_kms_result(&result).unwrap(), ("AQID".into(), true));
        let old_client = json!({"kmsciphertextkey": "AQID"});
        assert_eq!(
            parse_kms_result(&old_client).unwrap(),
            ("AQID".into(), false)
        );
        for bad in [
            Value::Null,
            json!({"KMSCipherTextKey": ""}),
            json!({"KMSCipherTextKey": 5}),
            json!({"KMSCipherTextKey": "AQID", "ChallengeAcknowledgement": "yes"}),
        ] {
            assert!(parse_kms_result(&bad).is_err(), "{bad}");
        }
    }

    /// A client for `server` built the way the agent builds it, through `Kms.Endpoint`.
    fn kms_for(server: &Server) -> JsonClient {
        let http = HttpClient::with_proxies(
            &HttpConfig {
                user_agent: "ssm-lite-test".into(),
                extra_ca_files: vec![],
            },
            &Default::default(),
        )
        .unwrap();
        let mut config = Config::default();
        config.kms.endpoint = server.url();
        let credentials = Credentials {
            access_key_id: "AKIDTEST".into(),
            secret_access_key: "secret".into(),
            session_token: None,
            expires_at: None,
        };
        kms_client(
            Arc::new(http),
            "eu-west-1",
            &config,
            Arc::new(StaticCredentials(credentials)),
        )
        .unwrap()
    }

    /// A fake KMS answering every Decrypt with `plaintext`.
    fn fake_kms(plaintext: Vec<u8>) -> Server {
        serve(move |_| {
            let body = json!({
                "KeyId": "arn:aws:kms:eu-west-1:111122223333:key/test",
                "Plaintext": crate::base64::encode(&plaintext),
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            });
            Some(response(200, &[], body.to_string().as_bytes()))
        })
    }

    fn body(r: &Received) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn decrypt_data_key_calls_kms_with_the_session_context() {
        let server = fake_kms(data_key().to_vec());
        let kms = kms_for(&server);
        let key = decrypt_data_key(
            &kms,
            "AQIDBA==",
            "alias/ssm",
            "user-0123456789abcdef0",
            "i-0123456789abcdef0",
            Some("MDEyMzQ1Njc4OWFiY2RlZg=="),
        )
        .unwrap();
        assert_eq!(key, data_key());
        let r = server.requests.recv().unwrap();
        assert_eq!(r.header("x-amz-target"), Some("TrentService.Decrypt"));
        let auth = r.header("authorization").unwrap_or_default();
        assert!(auth.contains("/eu-west-1/kms/aws4_request"), "{auth}");
        assert_eq!(
            body(&r),
            json!({
                "CiphertextBlob": "AQIDBA==",
                "KeyId": "alias/ssm",
                "EncryptionContext": {
                    "aws:ssm:SessionId": "user-0123456789abcdef0",
                    "aws:ssm:TargetId": "i-0123456789abcdef0",
                    "aws:ssm:RandomChallenge": "MDEyMzQ1Njc4OWFiY2RlZg==",
                },
            })
        );

        // A client that did not acknowledge the challenge: no challenge in the context.
        decrypt_data_key(&kms, "AQIDBA==", "k", "s", "i", None).unwrap();
        let context = body(&server.requests.recv().unwrap())["EncryptionContext"].clone();
        assert_eq!(
            context,
            json!({"aws:ssm:SessionId": "s", "aws:ssm:TargetId": "i"})
        );
    }

    #[test]
    fn decrypt_data_key_errors() {
        let short = fake_kms(vec![7; 32]);
        let err = decrypt_data_key(&kms_for(&short), "AQID", "k", "s", "i", None).unwrap_err();
        assert!(err.contains("32-byte data key"), "{err}");

        let refused = serve(|_| {
            Some(response(
                400,
                &[],
                br#"{"__type":"InvalidCiphertextException","message":"context mismatch"}"#,
            ))
        });
        let err =
            decrypt_data_key(&kms_for(&refused), "AQID", "alias/x", "s", "i", None).unwrap_err();
        assert!(
            err.contains("InvalidCiphertextException") && err.contains("alias/x"),
            "{err}"
        );

        // Garbage from the client is refused before anything is sent.
        let untouched = fake_kms(data_key().to_vec());
        for bad in ["not base64!", ""] {
            assert!(decrypt_data_key(&kms_for(&untouched), bad, "k", "s", "i", None).is_err());
        }
        assert_eq!(untouched.connections(), 0);
    }
}
