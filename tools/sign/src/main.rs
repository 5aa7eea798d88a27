//! `ssm-lite-release`: the release channel's signing tool (never linked into the agent).
//!
//! ```text
//! ssm-lite-release genkey KEY.pk8                   new Ed25519 key (PKCS#8, mode 0600); prints
//!                                                   the public key for Update.PublicKey
//! ssm-lite-release public-key KEY.pk8               prints the public key again
//! ssm-lite-release sign KEY.pk8 VERSION DIR         signs DIR/ssm-lite-VERSION-<arch> and writes
//!                                                   DIR/manifest.json (other versions kept)
//! ```
//!
//! Each signature is over `ssm-lite <version> <arch> <size> <sha256hex>`, the line the agent
//! checks (src/update/manifest.rs).

use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;

/// The architectures of `make release`'s binaries.
const ARCHES: [&str; 4] = ["x86_64", "aarch64", "armhf", "i686"];

const USAGE: &str =
    "usage: ssm-lite-release genkey KEY.pk8 | public-key KEY.pk8 | sign KEY.pk8 VERSION DIR";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let done = match args.as_slice() {
        ["genkey", key] => genkey(Path::new(key)),
        ["public-key", key] => load_key(Path::new(key)).map(|k| println!("{}", public_key(&k))),
        ["sign", key, version, dir] => sign(Path::new(key), version, Path::new(dir)),
        _ => Err(USAGE.to_owned()),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ssm-lite-release: {e}");
            ExitCode::from(1)
        }
    }
}

fn genkey(path: &Path) -> Result<(), String> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .map_err(|_| "cannot generate a key: the system's random source failed".to_owned())?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            format!(
                "cannot create {} (an existing key is never overwritten): {e}",
                path.display()
            )
        })?;
    file.write_all(pkcs8.as_ref())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let key = load_key(path)?;
    eprintln!(
        "wrote {}; keep it secret. Set this in the devices' amazon-ssm-agent.json:",
        path.display()
    );
    println!("{}", json!({"Update": {"PublicKey": public_key(&key)}}));
    Ok(())
}

fn load_key(path: &Path) -> Result<Ed25519KeyPair, String> {
    let bytes = fs::read(path).map_err(|e| format!("cannot read key {}: {e}", path.display()))?;
    Ed25519KeyPair::from_pkcs8(&bytes).map_err(|e| {
        format!(
            "{} is not an Ed25519 PKCS#8 key ({e}); make one with `ssm-lite-release genkey`",
            path.display()
        )
    })
}

fn public_key(key: &Ed25519KeyPair) -> String {
    base64(key.public_key().as_ref())
}

/// Signs every `ssm-lite-<version>-<arch>` in `dir` and writes `dir/manifest.json`.
fn sign(key: &Path, version: &str, dir: &Path) -> Result<(), String> {
    let key = load_key(key)?;
    let mut files = serde_json::Map::new();
    for arch in ARCHES {
        let name = format!("ssm-lite-{version}-{arch}");
        let Ok(bytes) = fs::read(dir.join(&name)) else {
            continue;
        };
        files.insert(
            arch.to_owned(),
            artifact(&key, version, arch, &name, &bytes),
        );
    }
    if files.is_empty() {
        return Err(format!(
            "no ssm-lite-{version}-<arch> binary in {}",
            dir.display()
        ));
    }
    let path = dir.join("manifest.json");
    let mut releases = existing_releases(&path)?;
    releases.retain(|r| r["version"] != version);
    releases.push(json!({"version": version, "files": files}));
    let text = serde_json::to_string_pretty(&json!({"releases": releases}))
        .expect("JSON values serialise");
    fs::write(&path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!(
        "wrote {} ({} architecture(s) of {version})",
        path.display(),
        files.len()
    );
    Ok(())
}

/// The manifest entry of one binary.
fn artifact(key: &Ed25519KeyPair, version: &str, arch: &str, name: &str, bytes: &[u8]) -> Value {
    let sha256: String = ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let line = format!("ssm-lite {version} {arch} {} {sha256}", bytes.len());
    json!({"name": name, "size": bytes.len(), "sha256": sha256,
           "signature": base64(key.sign(line.as_bytes()).as_ref())})
}

/// The releases an earlier `sign` listed, so a channel keeps offering them.
fn existing_releases(path: &Path) -> Result<Vec<Value>, String> {
    let Ok(text) = fs::read(path) else {
        return Ok(Vec::new());
    };
    let manifest: Value = serde_json::from_slice(&text).map_err(|e| {
        format!(
            "{} is not JSON ({e}); move it away to start a new one",
            path.display()
        )
    })?;
    Ok(manifest["releases"].as_array().cloned().unwrap_or_default())
}

/// Standard padded base64 (RFC 4648 §4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            match i <= chunk.len() {
                true => out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char),
                false => out.push('='),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ED25519, UnparsedPublicKey};

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
    }

    #[test]
    fn sign_writes_a_manifest_the_agent_can_check_and_keeps_other_releases() {
        let dir = std::env::temp_dir().join(format!("ssm-lite-release-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key.pk8");
        genkey(&key).unwrap();
        assert!(
            genkey(&key).is_err(),
            "an existing key is never overwritten"
        );
        fs::write(dir.join("ssm-lite-0.1.0-x86_64"), b"old").unwrap();
        fs::write(dir.join("ssm-lite-0.1.1-x86_64"), b"abc").unwrap();
        fs::write(dir.join("ssm-lite-0.1.1-armhf"), b"abcd").unwrap();
        sign(&key, "0.1.0", &dir).unwrap();
        sign(&key, "0.1.1", &dir).unwrap();
        let manifest: Value =
            serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        let releases = manifest["releases"].as_array().unwrap();
        assert_eq!(releases.len(), 2, "{manifest}");
        let entry = &releases[1]["files"]["x86_64"];
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(entry["sha256"], sha);
        assert_eq!(entry["size"], 3);
        assert_eq!(releases[1]["files"]["armhf"]["size"], 4);
        let public = load_key(&key).unwrap();
        let signature = entry["signature"].as_str().unwrap();
        let line = format!("ssm-lite 0.1.1 x86_64 3 {sha}");
        let sig = public.sign(line.as_bytes());
        assert_eq!(
            signature,
            base64(sig.as_ref()),
            "Ed25519 signatures are deterministic"
        );
        UnparsedPublicKey::new(&ED25519, public.public_key().as_ref())
            .verify(line.as_bytes(), sig.as_ref())
            .unwrap();
        assert!(
            sign(&key, "9.9.9", &dir)
                .unwrap_err()
                .contains("no ssm-lite-9.9.9")
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
