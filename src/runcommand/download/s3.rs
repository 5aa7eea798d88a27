//! `sourceType` `S3` (upstream `s3resource/`, `s3util/s3uri.go`): `{"path": "https://…"}` in
//! the URL forms upstream parses (virtual-hosted, path-style, dual-stack, accelerate, website,
//! VPC endpoints; no `s3://`), one object or every object under a "folder" prefix.

use super::{MAX_FILE_BYTES, Staged, base_name, expected_sha256, info_text, source_info};
use crate::runcommand::sources::Sources;
use regex_lite::Regex;
use std::path::{Path, PathBuf};

/// Most objects of one folder download (upstream lists without a bound).
const MAX_OBJECTS: usize = 1000;

/// Upstream's partitions' domains, as its patterns list them.
const DOMAINS: &str = r"(amazonaws\.com|amazonaws\.com\.cn|c2s\.ic\.gov|sc2s\.sgov\.gov|cloud\.adc-e\.uk|csp\.hci\.ic\.gov)";

/// An object or folder named by an S3 URL (upstream `AmazonS3URL`).
#[derive(Debug, PartialEq)]
pub(super) struct S3Url {
    pub bucket: String,
    pub key: String,
    pub region: String,
}

/// Upstream `ParseAmazonS3URL` (with its `+` → space rewrite first): the host against the VPC
/// endpoint pattern, then the public one; a bucket absent from the host is the path's first
/// element. `None` is upstream's "invalid S3 path parameter".
pub(super) fn parse_url(url: &str) -> Option<S3Url> {
    let url = url.replace('+', "%20");
    let rest = url.strip_prefix("https://").or_else(|| {
        let (scheme, rest) = url.split_once("://")?;
        scheme.eq_ignore_ascii_case("http").then_some(rest)
    })?;
    let (host, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let path = &path[..path.find(['?', '#']).unwrap_or(path.len())];
    let path = String::from_utf8_lossy(&crate::aws::sigv4::percent_decode(path)).into_owned();
    let host = host.split(':').next().unwrap_or(host);
    let (bucket, region) = bucket_and_region(host)?;
    let path = path.strip_prefix('/').unwrap_or(&path);
    let (bucket, key) = match bucket.is_empty() {
        false => (bucket, path.to_owned()),
        true => match path.split_once('/') {
            Some((bucket, key)) => (bucket.to_owned(), key.to_owned()),
            None => (path.to_owned(), String::new()),
        },
    };
    let region = match region.as_str() {
        "" => "us-east-1".to_owned(),
        r if r.eq_ignore_ascii_case("external-1") => "us-east-1".to_owned(),
        _ => region,
    };
    Some(S3Url {
        bucket,
        key,
        region,
    })
}

/// The bucket (empty for path-style) and region named by an S3 host.
fn bucket_and_region(host: &str) -> Option<(String, String)> {
    let vpce = format!(
        r"^((.+)\.)?(bucket|accesspoint|control)\.vpce-[-a-z0-9]+\.s3[.-](([-a-z0-9]+)\.)?vpce\.{DOMAINS}"
    );
    let public = format!(
        r"^((.+)\.)?s3[.-](website[-.])?(accelerate\.)?(dualstack[-.])?(([-a-z0-9]+)\.)?{DOMAINS}"
    );
    [(vpce, 5), (public, 7)]
        .iter()
        .find_map(|(pattern, region)| {
            let re = Regex::new(pattern).expect("a constant pattern");
            let c = re.captures(host)?;
            let group = |i: usize| c.get(i).map_or("", |m| m.as_str()).to_owned();
            Some((group(2), group(*region)))
        })
}

pub(super) fn download(info: &str, dest: &str, sources: &Sources) -> Result<(), String> {
    let (path, sha256) = source_info(info)
        .and_then(|map| Ok((info_text(&map, "path")?, expected_sha256(&map)?)))
        .map_err(|e| {
            format!(
                "s3 url parsing failed. Source Info could not be unmarshalled for source type S3. \
                 Please check JSON format of SourceInfo - {e}"
            )
        })?;
    if path.is_empty() {
        return Err("S3 source path in SourceInfo must be specified".into());
    }
    let url = parse_url(&path).ok_or("invalid S3 path parameter")?;
    for (key, target) in plan(&url, dest, sources)? {
        let mut staged = Staged::create(&target, MAX_FILE_BYTES)?;
        sources
            .objects
            .get_object(&url.bucket, &key, &mut staged, MAX_FILE_BYTES)
            .map_err(|e| staged.failure.clone().unwrap_or(e))?;
        staged.commit(sha256.as_deref())?;
    }
    Ok(())
}

/// Which keys go to which files (upstream `DownloadRemoteResource`): the listing of
/// `<key>/`, each object under `dest` at its path below the prefix; with nothing listed (or no
/// listing, for a key without a trailing `/`), the key itself, into `dest`.
fn plan(url: &S3Url, dest: &str, sources: &Sources) -> Result<Vec<(String, PathBuf)>, String> {
    let prefix = match url.key.is_empty() || url.key.ends_with('/') {
        true => url.key.clone(),
        false => format!("{}/", url.key),
    };
    let listed = match sources.objects.list_keys(&url.bucket, &prefix, MAX_OBJECTS) {
        Ok(keys) => keys,
        Err(e) if url.key.is_empty() || url.key.ends_with('/') => return Err(e),
        Err(e) => {
            log::info!(
                "{e}; downloading s3://{}/{} as one object",
                url.bucket,
                url.key
            );
            Vec::new()
        }
    };
    if listed.is_empty() {
        let target = match super::is_directory_target(dest) {
            true => Path::new(dest).join(base_name(&url.key)),
            false => PathBuf::from(dest),
        };
        return Ok(vec![(url.key.clone(), target)]);
    }
    listed
        .into_iter()
        .filter(|key| !key.ends_with('/'))
        .map(|key| {
            let relative = key.strip_prefix(&url.key).unwrap_or(&key);
            let target = super::below(dest, relative.trim_start_matches('/'))?;
            Ok((key, target))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(bucket: &str, key: &str, region: &str) -> Option<S3Url> {
        Some(S3Url {
            bucket: bucket.into(),
            key: key.into(),
            region: region.into(),
        })
    }

    #[test]
    fn the_url_forms_upstream_parses() {
        let cases = [
            (
                "https://my-bucket.s3.eu-west-1.amazonaws.com/scripts/a.sh",
                url("my-bucket", "scripts/a.sh", "eu-west-1"),
            ),
            (
                "https://s3.eu-west-1.amazonaws.com/my-bucket/scripts/a.sh",
                url("my-bucket", "scripts/a.sh", "eu-west-1"),
            ),
            (
                "https://s3.amazonaws.com/my-bucket/a.sh",
                url("my-bucket", "a.sh", "us-east-1"),
            ),
            (
                "https://s3-external-1.amazonaws.com/b/a.sh",
                url("b", "a.sh", "us-east-1"),
            ),
            (
                "https://my.dotted.bucket.s3.dualstack.us-west-2.amazonaws.com/k",
                url("my.dotted.bucket", "k", "us-west-2"),
            ),
            (
                "https://b.s3.cn-north-1.amazonaws.com.cn/k",
                url("b", "k", "cn-north-1"),
            ),
            (
                "https://b.bucket.vpce-0a1b2c-xyz.s3.us-east-2.vpce.amazonaws.com/k/",
                url("b", "k/", "us-east-2"),
            ),
            ("https://s3.amazonaws.com/b/", url("b", "", "us-east-1")),
            (
                "https://b.s3.amazonaws.com/hello%2Bworld/spaces+file.sh",
                url("b", "hello+world/spaces file.sh", "us-east-1"),
            ),
            ("https://example.com/b/k", None),
            ("s3://b/k", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_url(input), want, "{input}");
        }
    }
}
