//! S3 (REST, SigV4 for `s3`), path-style only: the emulator listens on an IP address, where the
//! agent addresses buckets in the path (docs/protocol.md §3.10). Buckets live in a region of their
//! own ([`crate::Emulator::create_bucket`]); a request signed for another region is refused with
//! `X-Amz-Bucket-Region`, as S3 does, which is how the agent finds a bucket's region.
//!
//! Checked on every call: the signature (over the path as sent and the declared payload hash),
//! `X-Amz-Content-Sha256` against the body, and `Content-MD5` against it where sent (PutObject
//! and UploadPart require it, as the agent always sends it). Operations: HeadBucket,
//! GetBucketEncryption (404 `ServerSideEncryptionConfigurationNotFoundError` unless set),
//! PutObject, GetObject, ListObjectsV2 (`max-keys` honoured up to S3's 1000, opaque continuation
//! tokens), CreateMultipartUpload, UploadPart, CompleteMultipartUpload,
//! AbortMultipartUpload.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};

use base64::Engine as _;
use md5::{Digest, Md5};

use crate::http::{Request, Response, percent_decode};
use crate::state::{SigCheck, State};
use crate::util::{hex, sha256_hex, uuid_v4};

/// An object as stored, with the headers it was uploaded with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Object {
    pub body: Vec<u8>,
    /// `Content-Type`, `x-amz-acl`, `x-amz-server-side-encryption…` as sent (names lower case).
    pub headers: BTreeMap<String, String>,
}

/// One S3 request that passed its signature check, for tests to inspect.
#[derive(Debug, Clone)]
pub struct S3Call {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub status: u16,
}

impl S3Call {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Bucket {
    region: String,
    /// `SSEAlgorithm` of the default encryption rule, if any.
    encryption: Option<String>,
    objects: BTreeMap<String, S3Object>,
}

struct Multipart {
    bucket: String,
    key: String,
    headers: BTreeMap<String, String>,
    /// Part number → (ETag, bytes).
    parts: BTreeMap<u32, (String, Vec<u8>)>,
}

#[derive(Default)]
pub(crate) struct S3State {
    buckets: BTreeMap<String, Bucket>,
    uploads: BTreeMap<String, Multipart>,
    pub(crate) calls: Vec<S3Call>,
}

impl S3State {
    pub(crate) fn create_bucket(&mut self, name: &str, region: &str) {
        self.buckets.insert(
            name.to_owned(),
            Bucket {
                region: region.to_owned(),
                encryption: None,
                objects: BTreeMap::new(),
            },
        );
    }

    /// Gives `bucket` a default encryption rule (`AES256` or `aws:kms`).
    pub(crate) fn set_encryption(&mut self, bucket: &str, algorithm: &str) {
        if let Some(b) = self.buckets.get_mut(bucket) {
            b.encryption = Some(algorithm.to_owned());
        }
    }

    /// Stores `body` at `s3://bucket/key`, as a PutObject without headers would.
    pub(crate) fn put_object(&mut self, bucket: &str, key: &str, body: &[u8]) {
        if let Some(b) = self.buckets.get_mut(bucket) {
            let headers = BTreeMap::new();
            let object = S3Object {
                body: body.to_vec(),
                headers,
            };
            b.objects.insert(key.to_owned(), object);
        }
    }

    pub(crate) fn object(&self, bucket: &str, key: &str) -> Option<&S3Object> {
        self.buckets.get(bucket)?.objects.get(key)
    }

    /// Multipart uploads begun and neither completed nor aborted.
    pub(crate) fn open_uploads(&self) -> usize {
        self.uploads.len()
    }
}

/// True for a request signed for S3 (the emulator's other REST APIs sign for `ssmmessages`).
pub(crate) fn is_s3(req: &Request) -> bool {
    req.header("Authorization")
        .is_some_and(|a| a.contains("/s3/aws4_request"))
}

/// Verifies and runs one S3 request.
pub(crate) fn handle(st: &mut State, req: &Request) -> (Response, SigCheck) {
    let (mut response, check) = verified(st, req);
    // A HEAD answer has no body (the server announces the length it sends).
    if req.method == "HEAD" {
        response.body.clear();
    }
    (response, check)
}

fn verified(st: &mut State, req: &Request) -> (Response, SigCheck) {
    let (bucket, key) = split_path(&req.path);
    let region = st
        .s3
        .buckets
        .get(&bucket)
        .map_or_else(|| st.options.region.clone(), |b| b.region.clone());
    let now = st.now();
    let verified = crate::sigv4::verify(req, &region, "s3", now, |ak| st.key_info(ak));
    if let Err(e) = verified {
        let claimed = crate::sigv4::parse_authorization(req.header("Authorization").unwrap_or(""));
        let response = match claimed {
            // S3's answer to a request signed for the wrong region names the right one.
            Ok(auth) if auth.region != region && st.s3.buckets.contains_key(&bucket) => {
                let message = format!(
                    "the region '{}' is wrong; expecting '{region}'",
                    auth.region
                );
                error(400, "AuthorizationHeaderMalformed", &message)
                    .with_header("x-amz-bucket-region", region.clone())
            }
            _ => error(e.status, "SignatureDoesNotMatch", &e.message),
        };
        return (response, SigCheck::Failed(e.message));
    }
    let response = check_payload(req).unwrap_or_else(|| operation(&mut st.s3, req, &bucket, &key));
    st.s3.calls.push(S3Call {
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        headers: req.headers.clone(),
        status: response.status,
    });
    (response, SigCheck::Ok)
}

/// `/bucket/key…` → (bucket, key), both decoded.
pub(crate) fn split_path(path: &str) -> (String, String) {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    (percent_decode_path(bucket), percent_decode_path(key))
}

/// `%XX` only: a `+` in a path is a plus.
fn percent_decode_path(s: &str) -> String {
    percent_decode(&s.replace('+', "%2B"))
}

/// The payload hash must be signed and the body's; a `Content-MD5`, the body's MD5.
fn check_payload(req: &Request) -> Option<Response> {
    let declared = req.header("X-Amz-Content-Sha256").unwrap_or_default();
    if declared != sha256_hex(&req.body) {
        let message = format!("X-Amz-Content-Sha256 {declared:?} is not the body's SHA-256");
        return Some(error(400, "XAmzContentSHA256Mismatch", &message));
    }
    let md5 = req.header("Content-MD5")?;
    let actual = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&req.body));
    (md5 != actual).then(|| {
        let message = format!("Content-MD5 {md5:?} is not the body's ({actual})");
        error(400, "BadDigest", &message)
    })
}

fn operation(s3: &mut S3State, req: &Request, bucket: &str, key: &str) -> Response {
    if !s3.buckets.contains_key(bucket) {
        let message = "The specified bucket does not exist";
        return error(404, "NoSuchBucket", message);
    }
    let upload_id = req.query_param("uploadId");
    match (req.method.as_str(), key.is_empty(), upload_id) {
        ("HEAD", true, _) => {
            let region = s3.buckets[bucket].region.clone();
            Response::new(200, "application/xml", "").with_header("x-amz-bucket-region", region)
        }
        ("GET", true, _) if req.query_param("encryption").is_some() => encryption(s3, bucket),
        ("GET", true, _) if req.query_param("list-type").as_deref() == Some("2") => {
            list_objects_v2(s3, req, bucket)
        }
        ("PUT", false, None) => {
            if req.header("Content-MD5").is_none() {
                return error(400, "InvalidRequest", "the agent always sends Content-MD5");
            }
            let object = S3Object {
                body: req.body.clone(),
                headers: kept_headers(req),
            };
            let etag = etag(&object.body);
            let objects = &mut s3.buckets.get_mut(bucket).expect("checked").objects;
            objects.insert(key.to_owned(), object);
            Response::new(200, "application/xml", "").with_header("ETag", etag)
        }
        ("GET", false, None) => match s3.object(bucket, key) {
            Some(object) => Response::new(200, "application/octet-stream", object.body.clone()),
            None => error(404, "NoSuchKey", "The specified key does not exist."),
        },
        ("POST", false, None) if req.query_param("uploads").is_some() => {
            let id = uuid_v4();
            let upload = Multipart {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                headers: kept_headers(req),
                parts: BTreeMap::new(),
            };
            s3.uploads.insert(id.clone(), upload);
            xml(&format!(
                "<InitiateMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{key}</Key>\
                 <UploadId>{id}</UploadId></InitiateMultipartUploadResult>"
            ))
        }
        (method, false, Some(id)) => multipart(s3, req, method, bucket, key, &id),
        _ => error(
            400,
            "NotImplemented",
            "this emulator does not know this S3 call",
        ),
    }
}

fn encryption(s3: &S3State, bucket: &str) -> Response {
    match &s3.buckets[bucket].encryption {
        None => error(
            404,
            "ServerSideEncryptionConfigurationNotFoundError",
            "The server side encryption configuration was not found",
        ),
        Some(algorithm) => xml(&format!(
            "<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault>\
             <SSEAlgorithm>{algorithm}</SSEAlgorithm></ApplyServerSideEncryptionByDefault>\
             </Rule></ServerSideEncryptionConfiguration>"
        )),
    }
}

/// ListObjectsV2: the keys under `prefix` in key order, `max-keys` (at most 1000) a page; the
/// continuation token is the hex of the last key returned, opaque to the agent as S3's is.
fn list_objects_v2(s3: &S3State, req: &Request, bucket: &str) -> Response {
    let prefix = req.query_param("prefix").unwrap_or_default();
    let max_keys = match req.query_param("max-keys").map(|n| n.parse::<usize>()) {
        None => 1000,
        Some(Ok(n)) => n.min(1000),
        Some(Err(_)) => return error(400, "InvalidArgument", "max-keys is not a number"),
    };
    let after = match req.query_param("continuation-token") {
        None => None,
        Some(token) => match unhex(&token) {
            Some(key) => Some(key),
            None => {
                return error(
                    400,
                    "InvalidArgument",
                    "The continuation token provided is incorrect",
                );
            }
        },
    };
    let mut keys = s3.buckets[bucket]
        .objects
        .range::<String, _>((after.as_ref().map_or(Unbounded, Excluded), Unbounded))
        .map(|(key, object)| (key, object.body.len()))
        .filter(|(key, _)| key.starts_with(&prefix));
    let page: Vec<(&String, usize)> = keys.by_ref().take(max_keys).collect();
    let truncated = keys.next().is_some();
    let contents: String = page
        .iter()
        .map(|(key, size)| {
            format!(
                "<Contents><Key>{}</Key><Size>{size}</Size></Contents>",
                escape(key)
            )
        })
        .collect();
    let next = match (truncated, page.last()) {
        (true, Some((key, _))) => format!(
            "<NextContinuationToken>{}</NextContinuationToken>",
            hex(key.as_bytes())
        ),
        _ => String::new(),
    };
    xml(&format!(
        "<ListBucketResult><Name>{bucket}</Name><Prefix>{}</Prefix><KeyCount>{}</KeyCount>\
         <MaxKeys>{max_keys}</MaxKeys><IsTruncated>{truncated}</IsTruncated>{contents}{next}\
         </ListBucketResult>",
        escape(&prefix),
        page.len()
    ))
}

fn unhex(text: &str) -> Option<String> {
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

fn multipart(
    s3: &mut S3State,
    req: &Request,
    method: &str,
    bucket: &str,
    key: &str,
    id: &str,
) -> Response {
    let Some(upload) = s3
        .uploads
        .get_mut(id)
        .filter(|u| u.bucket == bucket && u.key == key)
    else {
        return error(404, "NoSuchUpload", "The specified upload does not exist.");
    };
    match method {
        "PUT" => {
            let number = req.query_param("partNumber").and_then(|n| n.parse().ok());
            let Some(number @ 1..=10_000) = number else {
                return error(400, "InvalidArgument", "partNumber must be 1-10000");
            };
            if req.header("Content-MD5").is_none() {
                return error(400, "InvalidRequest", "the agent always sends Content-MD5");
            }
            let tag = etag(&req.body);
            upload.parts.insert(number, (tag.clone(), req.body.clone()));
            Response::new(200, "application/xml", "").with_header("ETag", tag)
        }
        "DELETE" => {
            s3.uploads.remove(id);
            Response::new(204, "application/xml", "")
        }
        "POST" => complete(s3, req, id),
        _ => error(
            400,
            "NotImplemented",
            "this emulator does not know this S3 call",
        ),
    }
}

/// CompleteMultipartUpload: every listed part with its ETag, in order, all but the last at
/// least 5 MiB, as S3 requires.
fn complete(s3: &mut S3State, req: &Request, id: &str) -> Response {
    let body = String::from_utf8_lossy(&req.body);
    let listed: Vec<(u32, String)> = body
        .split("<Part>")
        .skip(1)
        .filter_map(|part| {
            let number = between(part, "<PartNumber>", "</PartNumber>")?
                .parse()
                .ok()?;
            let tag = between(part, "<ETag>", "</ETag>")?.replace("&quot;", "\"");
            Some((number, tag))
        })
        .collect();
    let upload = &s3.uploads[id];
    let stored: Vec<(u32, String)> = upload
        .parts
        .iter()
        .map(|(n, (tag, _))| (*n, tag.clone()))
        .collect();
    if listed.is_empty() || listed != stored {
        let message = format!("parts listed {listed:?}, parts uploaded {stored:?}");
        return error(400, "InvalidPart", &message);
    }
    let sizes: Vec<usize> = upload.parts.values().map(|(_, b)| b.len()).collect();
    if sizes[..sizes.len() - 1].iter().any(|&n| n < 5 << 20) {
        return error(400, "EntityTooSmall", &format!("part sizes {sizes:?}"));
    }
    let upload = s3.uploads.remove(id).expect("looked up");
    let body: Vec<u8> = upload.parts.into_values().flat_map(|(_, b)| b).collect();
    let object = S3Object {
        body,
        headers: upload.headers,
    };
    let bucket = s3.buckets.get_mut(&upload.bucket).expect("checked");
    bucket.objects.insert(upload.key.clone(), object);
    xml(&format!(
        "<CompleteMultipartUploadResult><Key>{}</Key></CompleteMultipartUploadResult>",
        upload.key
    ))
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = start + text[start..].find(close)?;
    Some(&text[start..end])
}

/// The headers an object keeps from its upload.
fn kept_headers(req: &Request) -> BTreeMap<String, String> {
    req.headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .filter(|(n, _)| {
            n == "content-type" || n == "x-amz-acl" || n.starts_with("x-amz-server-side")
        })
        .collect()
}

fn etag(body: &[u8]) -> String {
    format!("\"{}\"", hex(&Md5::digest(body)))
}

fn xml(body: &str) -> Response {
    let text = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{body}");
    Response::new(200, "application/xml", text)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// S3's XML error body.
fn error(status: u16, code: &str, message: &str) -> Response {
    let message = escape(message);
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>{}</RequestId></Error>",
        uuid_v4()
    );
    Response::new(status, "application/xml", body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigv4::sign_for_tests;
    use crate::tests::{role_credentials, send};
    use crate::{Emulator, Options};
    use std::time::SystemTime;

    /// A PUT of `body` to `/bkt/k`, declaring `sha256` and `md5`, signed for `region`.
    fn put(emu: &Emulator, body: &[u8], sha256: &str, md5: &str, region: &str) -> Request {
        let creds = role_credentials(emu);
        let mut req = Request {
            method: "PUT".into(),
            path: "/bkt/k".into(),
            query: String::new(),
            headers: vec![
                (
                    "Host".into(),
                    emu.url().trim_start_matches("http://").into(),
                ),
                ("Content-MD5".into(), md5.into()),
                ("X-Amz-Content-Sha256".into(), sha256.into()),
            ],
            body: body.to_vec(),
        };
        let (key, secret, token) = (&creds.key, &creds.secret, creds.token.as_deref());
        sign_for_tests(
            &mut req,
            key,
            secret,
            token,
            region,
            "s3",
            SystemTime::now(),
        );
        req
    }

    #[test]
    fn payload_hashes_digests_and_regions_are_checked() {
        let emu = Emulator::start(Options::default());
        emu.create_bucket("bkt", "eu-west-1");
        let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
        let (body, sha) = (b"hello", sha256_hex(b"hello"));
        let md5 = b64(&Md5::digest(body));
        let status = |req: &Request| send(&emu, req).expect("an answer").status;

        let wrong_region = send(&emu, &put(&emu, body, &sha, &md5, "us-east-1")).unwrap();
        assert_eq!(wrong_region.status, 400);
        assert_eq!(
            wrong_region.header("x-amz-bucket-region"),
            Some("eu-west-1")
        );
        // Signed over the hash of other bytes than those sent: the signature holds, the body
        // does not match it.
        let mut swapped = put(&emu, b"other", &sha256_hex(b"other"), &md5, "eu-west-1");
        swapped.body = body.to_vec();
        assert_eq!(status(&swapped), 400);
        let other_md5 = b64(&Md5::digest(b"other"));
        assert_eq!(status(&put(&emu, body, &sha, &other_md5, "eu-west-1")), 400);
        assert_eq!(emu.s3_object("bkt", "k"), None);
        assert_eq!(status(&put(&emu, body, &sha, &md5, "eu-west-1")), 200);
        assert_eq!(emu.s3_object("bkt", "k").as_deref(), Some(&body[..]));
    }
}
