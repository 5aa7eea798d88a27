//! A Distributor package manifest (upstream `birdwatcher/types.go`) and the choice of this
//! host's file in it (`birdwatcherservice.extractPackageInfo`), with the platform, version and
//! architecture names upstream's `envdetect` gives this host.

use serde_json::{Map, Value};

/// The fields ssm-lite reads; `packages` (platform → platform version → architecture →
/// `{"file": name}`) and `files` (name → `{"checksums": {"sha256": …}, "downloadLocation": …}`)
/// stay JSON and are looked into when a file is chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub package_arn: String,
    pub version: String,
    packages: Value,
    files: Value,
}

/// One entry of `files`.
#[derive(Debug, Clone, PartialEq)]
pub struct FileInfo {
    pub sha256: Option<String>,
    pub download_location: String,
}

/// What upstream's `envdetect` reports of this host, for the manifest and the scripts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Host {
    pub platform: String,
    pub platform_version: String,
    pub platform_family: String,
    pub architecture: String,
}

/// Upstream `archive.ParseManifest`.
pub fn parse(text: &str) -> Result<Manifest, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("failed to decode manifest: {e}"))?;
    let Value::Object(mut map) = value else {
        return Err(format!(
            "failed to decode manifest: json: cannot unmarshal {} into Go value of type birdwatcher.Manifest",
            crate::document::go_kind(&value)
        ));
    };
    let text = |v: Option<Value>| match v {
        Some(Value::String(s)) => s,
        _ => String::new(),
    };
    Ok(Manifest {
        package_arn: text(map.remove("packageArn")),
        version: text(map.remove("version")),
        packages: map.remove("packages").unwrap_or_default(),
        files: map.remove("files").unwrap_or_default(),
    })
}

impl Manifest {
    /// The file for `host` and its entry in `files` (upstream `findFileFromManifest`).
    pub fn file_for(&self, host: &Host) -> Result<(String, FileInfo), String> {
        let name = self.package_for(host).ok_or_else(|| {
            format!(
                "failed to find platform: no manifest found for platform: {}, version {}, architecture {}",
                host.platform, host.platform_version, host.architecture
            )
        })?;
        let Some(file) = self.files.get(name).filter(|f| f.is_object()) else {
            return Err(format!("failed to find file for &{{FileName:{name}}}"));
        };
        let info = FileInfo {
            sha256: file["checksums"]["sha256"].as_str().map(str::to_owned),
            download_location: file["downloadLocation"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        };
        Ok((name.to_owned(), info))
    }

    fn package_for(&self, host: &Host) -> Option<&str> {
        let versions = by_key_or_any(self.packages.as_object()?, &host.platform)?.as_object()?;
        let arches = versions
            .get(&match_version(&host.platform_version, versions)?)?
            .as_object()?;
        by_key_or_any(arches, &host.architecture)?["file"].as_str()
    }
}

/// Upstream `matchPackageSelectorPlatform` / `…Arch`: the key itself, else `_any`.
fn by_key_or_any<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| map.get("_any"))
}

/// Upstream `matchPackageSelectorVersion`: the version itself, else the longest `a.b.*` prefix
/// match (Windows' `nano` suffix handled as upstream does), else `_any`, else `*`.
fn match_version(key: &str, map: &Map<String, Value>) -> Option<String> {
    if map.contains_key(key) {
        return Some(key.to_owned());
    }
    let key_parts: Vec<&str> = key.split('.').collect();
    let mut best: Option<(usize, &str)> = None;
    for k in map.keys() {
        let mut temp = k.as_str();
        match (key.ends_with("nano"), temp.ends_with("nano")) {
            (true, true) => temp = temp.trim_end_matches("nano"),
            (false, false) => {}
            _ => continue,
        }
        let Some(prefix) = temp.strip_suffix(".*") else {
            continue;
        };
        let parts: Vec<&str> = prefix.split('.').collect();
        let same = parts
            .iter()
            .zip(&key_parts)
            .take_while(|(a, b)| a == b)
            .count();
        let whole = same == parts.len() && parts.len() <= key_parts.len();
        if whole && best.is_none_or(|(n, _)| same > n) {
            best = Some((same, k));
        }
    }
    best.map(|(_, k)| k)
        .or_else(|| ["_any", "*"].into_iter().find(|k| map.contains_key(*k)))
        .map(str::to_owned)
}

/// Upstream `osdetect.CollectOSData`: Go's `runtime.GOARCH` with `amd64` renamed `x86_64`, which
/// is the architecture the agent was built for. `arch` is Rust's name for it
/// (`std::env::consts::ARCH`).
pub fn architecture(arch: &str) -> &str {
    match arch {
        "x86_64" => "x86_64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        other => other,
    }
}

/// Upstream `linux.parseOSreleaseFile` and `platformFamilyForPlatform`: `ID` (renamed as upstream
/// does) and `VERSION_ID` of os-release(5), and the family.
pub fn platform(os_release: &str) -> (String, String, String) {
    let fields = crate::health::parse_os_release(os_release);
    let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let name = get("NAME").to_lowercase();
    let platform = match get("ID").as_str() {
        "rhel" => "redhat".to_owned(),
        "ol" => "oracle".to_owned(),
        "amzn" => "amazon".to_owned(),
        "sles" | "suse" => "suse".to_owned(),
        id @ ("opensuse" | "opensuse-leap") if !name.contains("leap") => id.to_owned(),
        "opensuse" | "opensuse-leap" => "opensuseleap".to_owned(),
        id => id.to_owned(),
    };
    let family = match platform.as_str() {
        "ubuntu" | "debian" | "raspbian" => "debian",
        "redhat" | "centos" | "amazon" | "oracle" | "rocky" | "almalinux" => "rhel",
        "fedora" => "fedora",
        "alpine" => "alpine",
        "suse" | "opensuse" | "opensuseleap" => "suse",
        "gentoo" => "gentoo",
        "arch" => "arch",
        _ => "",
    };
    (platform, get("VERSION_ID"), family.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest(packages: serde_json::Value) -> Manifest {
        let files: serde_json::Map<String, serde_json::Value> =
            ["a.zip", "b.zip", "c.zip", "d.zip"]
                .iter()
                .map(|f| (f.to_string(), json!({"checksums": {"sha256": "00"}})))
                .collect();
        parse(&json!({"schemaVersion": "2.0", "version": "1.0", "packages": packages, "files": files}).to_string())
            .unwrap()
    }

    fn host(platform: &str, version: &str, arch: &str) -> Host {
        Host {
            platform: platform.into(),
            platform_version: version.into(),
            architecture: arch.into(),
            ..Host::default()
        }
    }

    #[test]
    fn rust_architectures_get_upstreams_names() {
        let names: Vec<&str> = ["x86_64", "aarch64", "arm", "x86"]
            .into_iter()
            .map(architecture)
            .collect();
        assert_eq!(names, ["x86_64", "arm64", "arm", "386"]);
    }

    #[test]
    fn the_file_is_chosen_by_platform_version_and_architecture() {
        let m = manifest(json!({
            "ubuntu": {"22.04": {"x86_64": {"file": "a.zip"}, "arm64": {"file": "b.zip"}},
                       "20.*": {"_any": {"file": "c.zip"}}},
            "_any": {"_any": {"arm": {"file": "d.zip"}, "386": {"file": "d.zip"}}}
        }));
        let pick = |p, v, a| m.file_for(&host(p, v, a)).map(|(name, _)| name);
        assert_eq!(pick("ubuntu", "22.04", "x86_64").unwrap(), "a.zip");
        assert_eq!(pick("ubuntu", "22.04", "arm64").unwrap(), "b.zip");
        assert_eq!(pick("ubuntu", "20.04", "arm").unwrap(), "c.zip");
        assert_eq!(pick("debian", "12", "arm").unwrap(), "d.zip");
        assert_eq!(pick("debian", "12", "386").unwrap(), "d.zip");
        assert_eq!(
            pick("ubuntu", "24.04", "x86_64").unwrap_err(),
            "failed to find platform: no manifest found for platform: ubuntu, version 24.04, architecture x86_64"
        );
    }

    #[test]
    fn the_longest_wildcard_version_wins_and_any_comes_last() {
        let m = manifest(json!({"amazon": {
            "2.*": {"x86_64": {"file": "a.zip"}},
            "2.0.*": {"x86_64": {"file": "b.zip"}},
            "_any": {"x86_64": {"file": "c.zip"}}
        }}));
        let pick = |v| {
            m.file_for(&host("amazon", v, "x86_64"))
                .unwrap()
                .0
                .to_owned()
        };
        assert_eq!(pick("2.0.2023"), "b.zip");
        assert_eq!(pick("2.1"), "a.zip");
        assert_eq!(pick("2023"), "c.zip");
    }

    #[test]
    fn os_release_ids_are_renamed_as_upstream_does() {
        let p = |text: &str| platform(text);
        assert_eq!(
            p("ID=amzn\nVERSION_ID=\"2023\"\n"),
            ("amazon".into(), "2023".into(), "rhel".into())
        );
        assert_eq!(
            p("NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"12\"\n"),
            ("debian".into(), "12".into(), "debian".into())
        );
        assert_eq!(p("ID=rhel\nVERSION_ID=9.3").0, "redhat");
        assert_eq!(
            p("NAME=\"openSUSE Leap\"\nID=opensuse-leap").0,
            "opensuseleap"
        );
    }
}
