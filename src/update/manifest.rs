//! A release channel's `manifest.json`, as `ssm-lite-release sign` (tools/sign) writes it:
//!
//! ```json
//! {"releases": [{"version": "0.1.1", "files": {"x86_64": {"name": "ssm-lite-0.1.1-x86_64",
//!   "size": 2650000, "sha256": "<hex>", "signature": "<base64 Ed25519>"}}}]}
//! ```
//!
//! Each signature is over the exact bytes of [`signed_line`]: version, architecture, size and
//! digest together, so no field can be swapped for another release's.

use ring::signature::{ED25519, UnparsedPublicKey};
use serde::Deserialize;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// Most bytes of a manifest: thousands of releases, far below anything that strains a device.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Most bytes of a release binary: release builds are under 3 MB, but a debug build (the
/// tests') is about 80 MB; the bound is aws:downloadContent's.
pub const MAX_BINARY_BYTES: u64 = 256 << 20;
/// Most releases one manifest may list.
const MAX_RELEASES: usize = 1000;

#[derive(Debug, Deserialize)]
pub struct Manifest {
    pub releases: Vec<Release>,
}

#[derive(Debug, Deserialize)]
pub struct Release {
    pub version: String,
    /// By architecture: x86_64, aarch64, armhf, i686 (the names of `dist/` binaries).
    pub files: BTreeMap<String, Artifact>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Artifact {
    /// The file's name in the channel, beside the manifest.
    pub name: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
    /// Standard base64 of the Ed25519 signature of [`signed_line`].
    pub signature: String,
}

/// The bytes each artifact's signature covers: `ssm-lite <version> <arch> <size> <sha256hex>`.
pub fn signed_line(version: &str, arch: &str, size: u64, sha256: &str) -> String {
    format!("ssm-lite {version} {arch} {size} {sha256}")
}

/// This binary's architecture as release file names spell it.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "arm" => "armhf",
        "x86" => "i686",
        other => other,
    }
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if m.releases.len() > MAX_RELEASES {
            return Err(format!(
                "it lists {} releases, more than {MAX_RELEASES}",
                m.releases.len()
            ));
        }
        Ok(m)
    }

    /// The release `target` names; empty, `latest` or `None` (upstream's placeholder) is the
    /// highest version listed.
    pub fn release(&self, target: &str) -> Option<&Release> {
        match target {
            "" | "latest" | "None" => self
                .releases
                .iter()
                .max_by(|a, b| compare(&a.version, &b.version)),
            v => self.releases.iter().find(|r| r.version == v),
        }
    }
}

impl Artifact {
    /// Checks the signature against `public_key` (32 raw bytes) and that the name is a plain file
    /// name of a plausible size; `Err` says which check failed.
    pub fn verify(&self, public_key: &[u8], version: &str, arch: &str) -> Result<(), String> {
        let plain = !self.name.is_empty()
            && !self.name.contains('/')
            && self.name != ".."
            && self.name != ".";
        if !plain || self.name.len() > 255 {
            return Err(format!(
                "file name {:?} is not a plain file name",
                self.name
            ));
        }
        if self.size > MAX_BINARY_BYTES {
            return Err(format!(
                "size {} is over the {MAX_BINARY_BYTES}-byte limit",
                self.size
            ));
        }
        let signature = crate::base64::decode(&self.signature)
            .map_err(|e| format!("signature is not base64: {e}"))?;
        let line = signed_line(version, arch, self.size, &self.sha256);
        UnparsedPublicKey::new(&ED25519, public_key)
            .verify(line.as_bytes(), &signature)
            .map_err(|_| {
                format!("signature does not verify with Update.PublicKey (signed text {line:?})")
            })
    }
}

/// Dotted versions compared part by part, numerically where both parts are numbers
/// (0.1.10 > 0.1.9); a missing part is lower (0.1 < 0.1.0).
pub fn compare(a: &str, b: &str) -> Ordering {
    let mut left = a.split(['.', '-']);
    let mut right = b.split(['.', '-']);
    loop {
        let order = match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(x), Some(y)) => match (x.parse::<u64>(), y.parse::<u64>()) {
                (Ok(x), Ok(y)) => x.cmp(&y),
                _ => x.cmp(y),
            },
        };
        if order != Ordering::Equal {
            return order;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn key() -> Ed25519KeyPair {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn artifact(key: &Ed25519KeyPair, version: &str, size: u64) -> Artifact {
        let sha = "ab".repeat(32);
        let sig = key.sign(signed_line(version, "x86_64", size, &sha).as_bytes());
        Artifact {
            name: format!("ssm-lite-{version}-x86_64"),
            size,
            sha256: sha,
            signature: crate::base64::encode(sig.as_ref()),
        }
    }

    #[test]
    fn a_signature_covers_version_arch_size_and_digest() {
        let k = key();
        let public = k.public_key().as_ref();
        let a = artifact(&k, "0.1.1", 100);
        a.verify(public, "0.1.1", "x86_64").unwrap();
        let e = a.verify(public, "0.1.2", "x86_64").unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        assert!(a.verify(public, "0.1.1", "aarch64").is_err());
        let bigger = Artifact {
            size: 101,
            ..a.clone()
        };
        assert!(bigger.verify(public, "0.1.1", "x86_64").is_err());
        let other = key();
        assert!(
            a.verify(other.public_key().as_ref(), "0.1.1", "x86_64")
                .is_err()
        );
        let sneaky = Artifact {
            name: "../../bin/sh".into(),
            ..a
        };
        let e = sneaky.verify(public, "0.1.1", "x86_64").unwrap_err();
        assert!(e.contains("plain file name"), "{e}");
    }

    #[test]
    fn latest_is_the_highest_version_and_a_named_one_must_be_listed() {
        let m = Manifest::parse(
            br#"{"releases": [{"version": "0.1.9", "files": {}},
                              {"version": "0.1.10", "files": {}},
                              {"version": "0.1.2", "files": {}}]}"#,
        )
        .unwrap();
        for target in ["", "latest", "None"] {
            assert_eq!(m.release(target).unwrap().version, "0.1.10");
        }
        assert_eq!(m.release("0.1.2").unwrap().version, "0.1.2");
        assert!(m.release("0.2.0").is_none());
        assert!(Manifest::parse(b"{\"releases\": 3}").is_err());
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare("0.1.10", "0.1.9"), Ordering::Greater);
        assert_eq!(compare("0.1.0", "0.1.0"), Ordering::Equal);
        assert_eq!(compare("0.1", "0.1.0"), Ordering::Less);
        assert_eq!(compare("1.0.0", "0.9.99"), Ordering::Greater);
    }
}
