//! Standard base64 (RFC 4648 §4) with `=` padding: AWS blobs, Go `[]byte` JSON fields, proxy
//! credentials. A thin wrapper over the `base64` crate (ureq links it already), so call sites stay
//! `encode`/`decode` and decode errors never echo their input.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Standard base64 (RFC 4648 §4) with `=` padding, as Go's `[]byte` JSON fields and AWS blobs use.
pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes standard padded base64; errors say where the input is wrong without echoing it (it
/// may be key material).
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    STANDARD.decode(text).map_err(|e| match e {
        base64::DecodeError::InvalidByte(offset, _) => {
            format!("invalid base64 character at offset {offset}")
        }
        base64::DecodeError::InvalidLength(len) => {
            format!("{len} characters is not valid padded base64 (a multiple of 4 expected)")
        }
        base64::DecodeError::InvalidLastSymbol { offset, .. } => {
            format!("invalid last base64 character at offset {offset}")
        }
        base64::DecodeError::InvalidPadding => "misplaced '=' padding".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_4648: [(&str, &str); 7] = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];

    #[test]
    fn matches_rfc_4648() {
        for (plain, encoded) in RFC_4648 {
            assert_eq!(encode(plain.as_bytes()), encoded);
            assert_eq!(decode(encoded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)).unwrap(), all);
        assert_eq!(encode(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn rejects_malformed_input() {
        for bad in ["Zg=", "Zg", "Z===", "Zg==Zg==", "Zm9v!A==", "Zm=v", "Zm 9v"] {
            assert!(decode(bad).is_err(), "{bad:?} decoded");
        }
        let err = decode("Zm9v!A==").unwrap_err();
        assert!(err.contains("offset 4"), "{err}");
    }
}
