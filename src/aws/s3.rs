//! The one S3 client (docs/protocol.md §3.10): command output uploads (`OutputS3BucketName`) and
//! object downloads (`aws:downloadContent`), as upstream's `agent/s3util` does them with the Go SDK.
//!
//! * Addressing: virtual-hosted (`<bucket>.<endpoint host>`, path `/<key>`) as the SDK does;
//!   path-style (`/<bucket>/<key>` on the endpoint host) when the bucket name is not a DNS label
//!   the TLS certificate can cover (uppercase, `_`, dots over https, …) or the endpoint is an IP
//!   address (a test server, a VPC endpoint's address).
//! * Region: a signed `HEAD /` on the bucket, read for `X-Amz-Bucket-Region` whatever the status
//!   (S3 sends it with 301, 400 and 403 too), cached per bucket; a refusal naming another region
//!   moves the cache and the call is sent again there.
//! * Uploads stream the file: it is read once to hash (SHA-256 for `X-Amz-Content-Sha256`, MD5
//!   for `Content-MD5`), then sent from disk. Above [`MULTIPART_THRESHOLD`] it goes in
//!   [`PART_SIZE`] parts (CreateMultipartUpload, UploadPart, CompleteMultipartUpload; an
//!   AbortMultipartUpload when a part or the completion fails for good).
//! * Retries with back-off on transport failures, 5xx, throttling and S3's `SlowDown`,
//!   `InternalError`, `RequestTimeout`; the signature layer fixes a skewed clock or refused
//!   credentials once (`super::retry`).

use super::clock::{self, Clock};
use super::credentials::{CredentialsError, CredentialsProvider};
use super::endpoint::{self, Endpoint, EndpointError};
use super::http::{HttpClient, HttpError, HttpRequest, HttpResponse};
use super::md5::Md5;
use super::retry::{self, Fix};
use super::sigv4;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Files larger than this go up in parts. 16 MiB: one PutObject carries any output under the
/// default 4 MiB `Ssm.RunCommandLogsMaxStepOutputMiB` and well above it (one request, one
/// signature); beyond, 16 MiB parts keep the resend of a failed part short, and even a 160 GB
/// file stays inside S3's 10,000 parts.
pub const MULTIPART_THRESHOLD: u64 = 16 << 20;
/// See [`MULTIPART_THRESHOLD`] (S3's minimum part is 5 MiB).
pub const PART_SIZE: u64 = 16 << 20;
/// Attempts after the first for one request.
const RETRIES: u32 = 4;
const BACKOFF_FIRST_MS: u64 = 200;
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// Buckets whose region is remembered; more, and the cache starts again.
const REGION_CACHE: usize = 64;
/// The SHA-256 of no bytes.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// Error bodies and XML answers are read at most this far.
const MAX_XML: usize = 64 * 1024;
/// The most keys S3 returns in one ListObjectsV2 page.
const LIST_PAGE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("no usable S3 endpoint for region {region}: {source}; fix S3.Endpoint")]
    Endpoint {
        region: String,
        source: EndpointError,
    },
    #[error("cannot read {path}: {source}")]
    File { path: String, source: io::Error },
    #[error("cannot sign the request to {url}: {source}")]
    Credentials {
        url: String,
        source: CredentialsError,
    },
    #[error("no answer from {url}: {source}; check the network, proxy and S3.Endpoint")]
    Transport { url: String, source: HttpError },
    /// S3 refused the request; `code` and `message` are from its XML error, when it sent one.
    #[error("{url} refused the request with HTTP {status}: {code}: {message}")]
    Service {
        url: String,
        status: u16,
        code: String,
        message: String,
        /// `X-Amz-Bucket-Region` of the refusal: where the bucket really is.
        bucket_region: Option<String>,
    },
    #[error("{url} answered without {what}; is S3.Endpoint an S3 service?")]
    Decode { url: String, what: &'static str },
    #[error("the download of {url} broke off after {written} bytes: {source}")]
    BrokeOff {
        url: String,
        written: u64,
        source: Box<S3Error>,
    },
    #[error("s3://{bucket}/{key} is larger than the {limit} bytes allowed")]
    TooLarge {
        bucket: String,
        key: String,
        limit: u64,
    },
    #[error(
        "s3://{bucket}/{prefix} holds more than the {limit} objects allowed; name a narrower folder"
    )]
    TooManyKeys {
        bucket: String,
        prefix: String,
        limit: usize,
    },
}

impl S3Error {
    /// Worth sending again after a pause.
    fn is_retried(&self) -> bool {
        match self {
            S3Error::Transport { source, .. } => !matches!(source, HttpError::TooLarge(_)),
            S3Error::Service { status, code, .. } => {
                *status >= 500
                    || matches!(*status, 408 | 429)
                    || matches!(
                        code.as_str(),
                        "SlowDown" | "InternalError" | "RequestTimeout" | "Throttling"
                    )
            }
            _ => false,
        }
    }
}

/// What the agent knows of where S3 is.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// `S3.Endpoint`: a host or a URL; empty for `s3.<region>.<domain>`.
    pub endpoint: String,
    /// `Agent.ServiceDomain`.
    pub service_domain: String,
    /// The agent's region: where a bucket's region is asked, and the answer when S3 gives none.
    pub region: String,
}

impl S3Settings {
    /// `S3.Endpoint` and `Agent.ServiceDomain` of `config`, and the agent's `region`.
    pub fn from_config(config: &crate::config::Config, region: &str) -> S3Settings {
        S3Settings {
            endpoint: config.s3.endpoint.clone(),
            service_domain: config.agent.service_domain.clone(),
            region: region.to_owned(),
        }
    }
}

pub struct S3Client {
    http: Arc<HttpClient>,
    credentials: Arc<dyn CredentialsProvider>,
    settings: S3Settings,
    clock: &'static Clock,
    regions: Mutex<HashMap<String, String>>,
}

/// One request to one bucket.
struct Call<'a> {
    method: &'a str,
    bucket: &'a str,
    /// The object key, raw (empty for the bucket itself).
    key: &'a str,
    /// Already encoded (`uploadId=…&partNumber=1`, `encryption=`), or empty.
    query: &'a str,
    headers: Vec<(String, String)>,
    payload_sha256: &'a str,
    timeout: Duration,
}

/// Where a request goes: the URL, its `Host` and the path and query as sent (and signed).
#[derive(Debug, PartialEq)]
struct Target {
    url: String,
    host: String,
    path_and_query: String,
}

type Sender<'s> = dyn FnMut(HttpRequest<'_>) -> Result<HttpResponse, HttpError> + 's;

impl S3Client {
    pub fn new(
        http: Arc<HttpClient>,
        credentials: Arc<dyn CredentialsProvider>,
        settings: S3Settings,
    ) -> S3Client {
        S3Client {
            http,
            credentials,
            settings,
            clock: &clock::PROCESS,
            regions: Mutex::new(HashMap::new()),
        }
    }

    /// Uploads the file at `path` to `s3://bucket/key` as upstream's `S3Upload` does:
    /// `text/plain`, `bucket-owner-full-control`, the bucket's default encryption named.
    pub fn put_file(&self, bucket: &str, key: &str, path: &Path) -> Result<(), S3Error> {
        let file_error = |source| S3Error::File {
            path: path.display().to_string(),
            source,
        };
        let len = std::fs::metadata(path).map_err(file_error)?.len();
        let mut headers = vec![
            ("Content-Type".to_string(), "text/plain".to_string()),
            (
                "x-amz-acl".to_string(),
                "bucket-owner-full-control".to_string(),
            ),
        ];
        headers.extend(self.encryption_headers(bucket));
        if len > MULTIPART_THRESHOLD {
            return self.put_multipart(bucket, key, path, len, headers);
        }
        self.put_range(bucket, key, "", path, (0, len), headers)
            .map(drop)
    }

    /// Streams `s3://bucket/key` into `out`, refusing more than `limit` bytes; the bytes written.
    pub fn get_object(
        &self,
        bucket: &str,
        key: &str,
        out: &mut dyn Write,
        limit: u64,
    ) -> Result<u64, S3Error> {
        let mut counted = Counted { out, written: 0 };
        let mut written = 0;
        let call = self.call("GET", bucket, key, "", Vec::new(), EMPTY_SHA256);
        self.retrying(bucket, || {
            let http = &self.http;
            let result = self.send(&call, &mut |request| {
                let (answer, n) = http.download(request, &mut counted, limit)?;
                written = n;
                Ok(answer)
            });
            // Bytes already handed on cannot be taken back: only a failure before the first
            // is sent again.
            match result {
                Err(e) if counted.written > 0 && e.is_retried() => Err(S3Error::BrokeOff {
                    url: format!("s3://{bucket}/{key}"),
                    written: counted.written,
                    source: Box::new(e),
                }),
                other => other,
            }
        })
        .map_err(|e| match e {
            S3Error::Transport {
                source: HttpError::TooLarge(_),
                ..
            } => S3Error::TooLarge {
                bucket: bucket.into(),
                key: key.into(),
                limit,
            },
            other => other,
        })?;
        Ok(written)
    }

    /// The keys under `prefix`, in S3's order (ListObjectsV2, page by page: upstream's
    /// `ListS3Directory` lists the same keys with ListObjects), refusing more than `limit`.
    pub fn list_keys(
        &self,
        bucket: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, S3Error> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // One more than the limit is asked for: it tells "exactly `limit`" from "more".
            let page = LIST_PAGE.min(limit.saturating_add(1) - keys.len());
            let mut query = format!(
                "list-type=2&max-keys={page}&prefix={}",
                encode_query_value(prefix)
            );
            if let Some(token) = &token {
                query.push_str("&continuation-token=");
                query.push_str(&encode_query_value(token));
            }
            let call = self.call("GET", bucket, "", &query, Vec::new(), EMPTY_SHA256);
            let answer = self.retrying(bucket, || self.send_bytes(&call, &[]))?;
            let listing = Listing::parse(&String::from_utf8_lossy(&answer.body));
            let listed = listing.keys.len();
            keys.extend(listing.keys);
            if keys.len() > limit {
                return Err(S3Error::TooManyKeys {
                    bucket: bucket.into(),
                    prefix: prefix.into(),
                    limit,
                });
            }
            if !listing.truncated {
                return Ok(keys);
            }
            // A truncated page that lists nothing or names no next page would loop forever.
            token =
                Some(
                    listing
                        .next_token
                        .filter(|_| listed > 0)
                        .ok_or_else(|| S3Error::Decode {
                            url: format!("s3://{bucket}/{prefix}"),
                            what: "keys and a NextContinuationToken on a truncated page",
                        })?,
                );
        }
    }

    /// The bucket's default encryption rule: its `SSEAlgorithm` (`aws:kms`, `AES256`, or empty
    /// when the rule names none) and KMS key, from `GET /?encryption=`. A bucket without one
    /// is an error (404 `ServerSideEncryptionConfigurationNotFoundError`), as upstream's
    /// `IsBucketEncrypted` sees it.
    pub fn default_encryption(&self, bucket: &str) -> Result<(String, Option<String>), S3Error> {
        let call = self.call("GET", bucket, "", "encryption=", Vec::new(), EMPTY_SHA256);
        let answer = self.retrying(bucket, || self.send_bytes(&call, &[]))?;
        let body = String::from_utf8_lossy(&answer.body);
        let key = xml_field(&body, "KMSMasterKeyID").filter(|k| !k.is_empty());
        Ok((xml_field(&body, "SSEAlgorithm").unwrap_or_default(), key))
    }

    /// The bucket's default encryption as upstream's `getSSEAlgorithm` names it on uploads:
    /// `aws:kms` (with its key, when the rule names one) or `AES256`; nothing when
    /// `GET /?encryption=` fails for any reason.
    fn encryption_headers(&self, bucket: &str) -> Vec<(String, String)> {
        let (algorithm, key) = match self.default_encryption(bucket) {
            Ok(rule) => rule,
            Err(e) => {
                log::info!("s3://{bucket}: no default encryption ({e})");
                return Vec::new();
            }
        };
        let header = |name: &str, value: &str| (name.to_string(), value.to_string());
        match algorithm.as_str() {
            "aws:kms" => {
                let mut headers = vec![header("x-amz-server-side-encryption", "aws:kms")];
                if let Some(key) = key {
                    headers.push(header("x-amz-server-side-encryption-aws-kms-key-id", &key));
                }
                headers
            }
            "AES256" => vec![header("x-amz-server-side-encryption", "AES256")],
            _ => Vec::new(),
        }
    }

    fn put_multipart(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        len: u64,
        headers: Vec<(String, String)>,
    ) -> Result<(), S3Error> {
        let create = self.call("POST", bucket, key, "uploads=", headers, EMPTY_SHA256);
        let answer = self.retrying(bucket, || self.send_bytes(&create, &[]))?;
        let upload_id = xml_field(&String::from_utf8_lossy(&answer.body), "UploadId")
            .filter(|id| !id.is_empty())
            .ok_or_else(|| S3Error::Decode {
                url: format!("s3://{bucket}/{key}"),
                what: "an UploadId",
            })?;
        let id = encode_query_value(&upload_id);
        let result = self.put_parts(bucket, key, &id, path, len);
        if result.is_err() {
            let abort = self.call("DELETE", bucket, key, "", Vec::new(), EMPTY_SHA256);
            let abort = Call {
                query: &format!("uploadId={id}"),
                ..abort
            };
            if let Err(e) = self.retrying(bucket, || self.send_bytes(&abort, &[])) {
                log::warn!("s3://{bucket}/{key}: AbortMultipartUpload {upload_id}: {e}");
            }
        }
        result
    }

    fn put_parts(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
        path: &Path,
        len: u64,
    ) -> Result<(), S3Error> {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (i, offset) in (0..len).step_by(PART_SIZE as usize).enumerate() {
            let number = i + 1;
            let query = format!("partNumber={number}&uploadId={id}");
            let range = (offset, PART_SIZE.min(len - offset));
            let answer = self.put_range(bucket, key, &query, path, range, Vec::new())?;
            let etag = header(&answer, "ETag").ok_or_else(|| S3Error::Decode {
                url: format!("s3://{bucket}/{key}"),
                what: "an ETag for a part",
            })?;
            xml.push_str(&format!(
                "<Part><PartNumber>{number}</PartNumber><ETag>{}</ETag></Part>",
                xml_escape(etag)
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let sha = sigv4::sha256_hex(xml.as_bytes());
        let complete = self.call("POST", bucket, key, "", Vec::new(), &sha);
        let complete = Call {
            query: &format!("uploadId={id}"),
            ..complete
        };
        let answer = self.retrying(bucket, || self.send_bytes(&complete, xml.as_bytes()))?;
        // CompleteMultipartUpload may fail after its 200 has started: the error is the body.
        let body = String::from_utf8_lossy(&answer.body);
        match xml_field(&body, "Code") {
            Some(code) => Err(S3Error::Service {
                url: format!("s3://{bucket}/{key}"),
                status: answer.status,
                message: xml_field(&body, "Message").unwrap_or_default(),
                code,
                bucket_region: None,
            }),
            None => Ok(()),
        }
    }

    /// PutObject or UploadPart (by `query`) of `len` bytes of `path` from `offset`.
    fn put_range(
        &self,
        bucket: &str,
        key: &str,
        query: &str,
        path: &Path,
        (offset, len): (u64, u64),
        mut headers: Vec<(String, String)>,
    ) -> Result<HttpResponse, S3Error> {
        let file_error = |source| S3Error::File {
            path: path.display().to_string(),
            source,
        };
        let (sha256, md5) = digests(path, offset, len).map_err(file_error)?;
        headers.push(("Content-MD5".to_string(), crate::base64::encode(&md5)));
        let call = Call {
            query,
            // A slow uplink still gets its bytes through: 64 KiB/s assumed at worst.
            timeout: Duration::from_secs(60 + len / (64 * 1024)),
            ..self.call("PUT", bucket, key, "", headers, &sha256)
        };
        let http = &self.http;
        let file = File::open(path).map_err(file_error)?;
        self.retrying(bucket, || {
            // Every attempt, signed again or not, sends the range from its start.
            self.send(&call, &mut |request| {
                let unreadable =
                    |e: io::Error| HttpError::Io(format!("cannot read {}: {e}", path.display()));
                (&file).seek(SeekFrom::Start(offset)).map_err(unreadable)?;
                http.send_reader(request, &mut (&file).take(len), len)
            })
        })
    }

    fn call<'a>(
        &self,
        method: &'a str,
        bucket: &'a str,
        key: &'a str,
        query: &'a str,
        headers: Vec<(String, String)>,
        payload_sha256: &'a str,
    ) -> Call<'a> {
        Call {
            method,
            bucket,
            key,
            query,
            headers,
            payload_sha256,
            timeout: Duration::from_secs(60),
        }
    }

    fn send_bytes(&self, call: &Call<'_>, body: &[u8]) -> Result<HttpResponse, S3Error> {
        let http = &self.http;
        self.send(call, &mut |request| {
            http.send(HttpRequest { body, ..request })
        })
    }

    /// Runs `attempt` until it succeeds, fails for good or has been retried [`RETRIES`] times;
    /// a refusal naming the bucket's real region moves it there at once.
    fn retrying<T>(
        &self,
        bucket: &str,
        mut attempt: impl FnMut() -> Result<T, S3Error>,
    ) -> Result<T, S3Error> {
        let mut retries = 0;
        let mut moved = false;
        loop {
            let error = match attempt() {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            if let S3Error::Service {
                status: 301 | 400 | 403,
                bucket_region: Some(region),
                ..
            } = &error
                && !moved
                && self.region_of(bucket) != *region
            {
                log::info!("s3://{bucket} is in {region}");
                self.remember(bucket, region);
                moved = true;
                continue;
            }
            if retries >= RETRIES || !error.is_retried() {
                return Err(error);
            }
            retries += 1;
            log::warn!("s3://{bucket}: {error}; retry {retries} of {RETRIES}");
            std::thread::sleep(crate::random::backoff(
                BACKOFF_FIRST_MS,
                retries,
                BACKOFF_CAP,
            ));
        }
    }

    /// One attempt of `call` in the bucket's region, signed (again once after a clock or
    /// credentials fix) and handed to `send`; a 2xx answer or the refusal.
    fn send(&self, call: &Call<'_>, send: &mut Sender<'_>) -> Result<HttpResponse, S3Error> {
        let region = self.region_of(call.bucket);
        self.send_in(&region, call, send)
    }

    fn send_in(
        &self,
        region: &str,
        call: &Call<'_>,
        send: &mut Sender<'_>,
    ) -> Result<HttpResponse, S3Error> {
        let endpoint = self.endpoint(region)?;
        let target = target(&endpoint, call.bucket, call.key, call.query);
        let url = target.url.clone();
        let no_credentials = |source| S3Error::Credentials {
            url: url.clone(),
            source,
        };
        retry::signed_call(self.credentials.as_ref(), no_credentials, |credentials| {
            let mut headers = vec![("Host".to_string(), target.host.clone())];
            headers.extend(call.headers.iter().cloned());
            sigv4::sign_s3(
                call.method,
                &target.path_and_query,
                &mut headers,
                call.payload_sha256,
                credentials,
                region,
                self.clock.now(),
            );
            let request = HttpRequest {
                method: call.method,
                url: &target.url,
                headers,
                body: &[],
                timeout: call.timeout,
            };
            let response = send(request).map_err(|source| {
                let url = target.url.clone();
                (S3Error::Transport { url, source }, Fix::None)
            })?;
            if (200..300).contains(&response.status) {
                return Ok(response);
            }
            let fix = retry::fix_for(self.clock, &response);
            Err((refusal(&target.url, &response), fix))
        })
    }

    fn endpoint(&self, region: &str) -> Result<Endpoint, S3Error> {
        let s = &self.settings;
        let prefix = endpoint::S3.endpoint_prefix;
        endpoint::resolve(prefix, region, &s.endpoint, &s.service_domain).map_err(|source| {
            S3Error::Endpoint {
                region: region.to_string(),
                source,
            }
        })
    }

    /// The bucket's region: cached, else asked with a signed `HEAD /` in the agent's region
    /// (its `X-Amz-Bucket-Region`, on any answer), else the agent's region.
    fn region_of(&self, bucket: &str) -> String {
        if let Some(region) = crate::sync::lock(&self.regions).get(bucket) {
            return region.clone();
        }
        let home = self.settings.region.clone();
        let call = self.call("HEAD", bucket, "", "", Vec::new(), EMPTY_SHA256);
        let http = &self.http;
        let answer = self.send_in(&home, &call, &mut |request| http.send(request));
        let found = match &answer {
            Ok(response) => header(response, "X-Amz-Bucket-Region").map(str::to_owned),
            Err(S3Error::Service { bucket_region, .. }) => bucket_region.clone(),
            Err(_) => None,
        };
        match found.filter(|r| !r.is_empty()) {
            Some(region) => {
                self.remember(bucket, &region);
                region
            }
            None => {
                if let Err(e) = answer {
                    log::info!("s3://{bucket}: region not found ({e}); using {home}");
                }
                home
            }
        }
    }

    fn remember(&self, bucket: &str, region: &str) {
        let mut regions = crate::sync::lock(&self.regions);
        if regions.len() >= REGION_CACHE && !regions.contains_key(bucket) {
            regions.clear();
        }
        regions.insert(bucket.to_string(), region.to_string());
    }
}

impl crate::runcommand::sources::ObjectSource for S3Client {
    fn get_object(
        &self,
        bucket: &str,
        key: &str,
        out: &mut dyn Write,
        limit: u64,
    ) -> Result<u64, String> {
        S3Client::get_object(self, bucket, key, out, limit)
            .map_err(|e| format!("cannot download s3://{bucket}/{key}: {e}"))
    }

    fn list_keys(&self, bucket: &str, prefix: &str, limit: usize) -> Result<Vec<String>, String> {
        S3Client::list_keys(self, bucket, prefix, limit)
            .map_err(|e| format!("cannot list s3://{bucket}/{prefix}: {e}"))
    }
}

/// One ListObjectsV2 page (`ListBucketResult`).
#[derive(Debug, PartialEq)]
struct Listing {
    keys: Vec<String>,
    truncated: bool,
    next_token: Option<String>,
}

impl Listing {
    /// The whole body is scanned (the HTTP layer bounds it): a page of 1000 long keys is far
    /// beyond [`MAX_XML`], and S3 does not promise where `NextContinuationToken` stands.
    fn parse(xml: &str) -> Listing {
        let keys = xml
            .split("<Contents>")
            .skip(1)
            .filter_map(|contents| {
                let contents = contents.split("</Contents>").next()?;
                xml_texts(contents, "Key").next()
            })
            .collect();
        Listing {
            keys,
            truncated: xml_texts(xml, "IsTruncated").next().as_deref() == Some("true"),
            next_token: xml_texts(xml, "NextContinuationToken").next(),
        }
    }
}

/// A `Write` that counts what went through.
struct Counted<'a> {
    out: &'a mut dyn Write,
    written: u64,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The hex SHA-256 and the MD5 of `len` bytes of `path` from `offset`, read once in 64 KiB
/// pieces.
fn digests(path: &Path, offset: u64, len: u64) -> io::Result<(String, [u8; 16])> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = file.take(len);
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    let mut md5 = Md5::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = 0;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        md5.update(&buf[..n]);
        read += n as u64;
    }
    if read != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the file ended after {read} of {len} bytes"),
        ));
    }
    Ok((sigv4::hex(sha.finish().as_ref()), md5.finish()))
}

/// Where a request on `bucket`/`key` goes at `endpoint` (see the module's addressing rule).
fn target(endpoint: &Endpoint, bucket: &str, key: &str, query: &str) -> Target {
    let tls = endpoint.url.starts_with("https://");
    let scheme = if tls { "https" } else { "http" };
    let (host, raw_path) = if virtual_hosted(bucket, &endpoint.host, tls) {
        (format!("{bucket}.{}", endpoint.host), format!("/{key}"))
    } else if key.is_empty() {
        (endpoint.host.clone(), format!("/{bucket}"))
    } else {
        (endpoint.host.clone(), format!("/{bucket}/{key}"))
    };
    let mut path_and_query = sigv4::encode_path(&raw_path);
    if !query.is_empty() {
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
    Target {
        url: format!("{scheme}://{host}{path_and_query}"),
        host,
        path_and_query,
    }
}

/// True when `bucket` can lead the host name: a DNS label set S3 allows (3-63 characters of
/// lower-case letters, digits, `-` and `.`, starting and ending with a letter or digit, no `..`,
/// not an IPv4 address), without dots over TLS (the certificate's `*.s3…` covers one label),
/// and the endpoint is a name, not an IP address.
fn virtual_hosted(bucket: &str, endpoint_host: &str, tls: bool) -> bool {
    let host = match endpoint_host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => endpoint_host
            .rsplit_once(':')
            .map_or(endpoint_host, |(h, _)| h),
    };
    let edge_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && edge_ok(bucket.bytes().next())
        && edge_ok(bucket.bytes().last())
        && !bucket.contains("..")
        && bucket.parse::<IpAddr>().is_err()
        && !(tls && bucket.contains('.'))
        && host.parse::<IpAddr>().is_err()
}

/// RFC 3986 encoding of a query value (an upload id may hold `+`, `/`, `=`).
fn encode_query_value(value: &str) -> String {
    sigv4::encode_path(value).replace('/', "%2F")
}

fn header<'a>(response: &'a HttpResponse, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A non-2xx answer as an error: S3's XML `Code` and `Message` (a HEAD has no body: its status
/// text stands in), and the bucket's region when the answer names it.
fn refusal(url: &str, response: &HttpResponse) -> S3Error {
    let body = String::from_utf8_lossy(&response.body[..response.body.len().min(MAX_XML)]);
    let code = xml_field(&body, "Code").unwrap_or_else(|| match response.status {
        301 => "PermanentRedirect".into(),
        403 => "Forbidden".into(),
        404 => "NotFound".into(),
        status => format!("HTTP{status}"),
    });
    S3Error::Service {
        url: url.to_string(),
        status: response.status,
        code,
        message: xml_field(&body, "Message").unwrap_or_default(),
        bucket_region: header(response, "X-Amz-Bucket-Region").map(str::to_owned),
    }
}

/// The text of the first `<tag>…</tag>` in `xml` (bounded to [`MAX_XML`]), entities decoded;
/// S3's answers need no more than that (`UploadId`, `Code`, `Message`, `SSEAlgorithm`).
fn xml_field(xml: &str, tag: &str) -> Option<String> {
    let xml = xml.get(..xml.len().min(MAX_XML)).unwrap_or(xml);
    xml_texts(xml, tag).next()
}

/// The text of every `<tag>…</tag>` in `xml`, in order, trimmed and decoded.
fn xml_texts<'a>(xml: &'a str, tag: &str) -> impl Iterator<Item = String> + 'a {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut rest = xml;
    std::iter::from_fn(move || {
        let start = rest.find(&open)? + open.len();
        let end = start + rest[start..].find(&close)?;
        let text = xml_unescape(rest[start..end].trim());
        rest = &rest[end + close.len()..];
        Some(text)
    })
}

/// XML's five named entities and numeric references (S3 writes a key's control characters as
/// `&#13;`); anything else stays as written.
fn xml_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        // The longest entity is `&#x10FFFF;`: a `;` further on ends something else.
        let end = rest.bytes().take(10).position(|b| b == b';');
        let entity = end.map(|end| (&rest[1..end], end));
        let decoded = entity.and_then(|(name, end)| Some((entity_char(name)?, end)));
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity_char(name: &str) -> Option<char> {
    let number = |digits: &str, radix| {
        u32::from_str_radix(digits, radix)
            .ok()
            .and_then(char::from_u32)
    };
    match name {
        "quot" => Some('"'),
        "apos" => Some('\''),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        _ => match name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
            Some(hex) => number(hex, 16),
            None => number(name.strip_prefix('#')?, 10),
        },
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn endpoint(url: &str) -> Endpoint {
        endpoint::resolve("s3", "eu-west-1", url, "").unwrap()
    }

    #[test]
    fn dns_safe_buckets_lead_the_host_and_others_go_in_the_path() {
        let aws = endpoint("");
        let t = target(&aws, "my-bucket", "p/cmd/i-1/stdout", "");
        assert_eq!(t.host, "my-bucket.s3.eu-west-1.amazonaws.com");
        assert_eq!(
            t.url,
            "https://my-bucket.s3.eu-west-1.amazonaws.com/p/cmd/i-1/stdout"
        );
        assert_eq!(t.path_and_query, "/p/cmd/i-1/stdout");
        for bucket in ["My_Bucket", "a.b.c", "ab", "-ab", "a..b", "192.168.1.1"] {
            let t = target(&aws, bucket, "k", "");
            assert_eq!(t.host, "s3.eu-west-1.amazonaws.com", "{bucket}");
            assert_eq!(t.path_and_query, format!("/{bucket}/k"), "{bucket}");
        }
        // Dots are fine where no certificate has to cover them.
        let plain = endpoint("http://s3.example.test:9000");
        assert_eq!(
            target(&plain, "a.b.c", "k", "").host,
            "a.b.c.s3.example.test:9000"
        );
    }

    #[test]
    fn an_ip_endpoint_takes_path_style_and_the_bucket_itself_its_own_path() {
        for url in ["http://127.0.0.1:4566", "https://[::1]:8443", "10.0.0.5"] {
            let ep = endpoint(url);
            let t = target(&ep, "my-bucket", "a b/c+d", "");
            assert_eq!(t.host, ep.host, "{url}");
            assert_eq!(t.path_and_query, "/my-bucket/a%20b/c%2Bd", "{url}");
        }
        let ep = endpoint("http://127.0.0.1:4566");
        assert_eq!(
            target(&ep, "my-bucket", "", "encryption=").url,
            "http://127.0.0.1:4566/my-bucket?encryption="
        );
        let aws = endpoint("");
        assert_eq!(target(&aws, "bkt", "", "").path_and_query, "/");
    }

    #[test]
    fn a_bare_host_and_a_url_both_name_the_endpoint() {
        assert_eq!(endpoint("s3.vpce.example").url, "https://s3.vpce.example");
        assert_eq!(
            endpoint("https://s3.vpce.example:8443/ignored").url,
            "https://s3.vpce.example:8443"
        );
    }

    #[test]
    fn the_xml_scanner_reads_the_first_field_and_decodes_entities() {
        let body = "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code>\
                    <Message>The bucket &quot;b&quot; &amp; co</Message></Error>";
        assert_eq!(xml_field(body, "Code").as_deref(), Some("NoSuchBucket"));
        assert_eq!(
            xml_field(body, "Message").as_deref(),
            Some("The bucket \"b\" & co")
        );
        assert_eq!(xml_field(body, "UploadId"), None);
        assert_eq!(xml_field("<Code>unterminated", "Code"), None);
        let far = format!("{}<UploadId>x</UploadId>", " ".repeat(MAX_XML));
        assert_eq!(xml_field(&far, "UploadId"), None, "beyond the bound");
        assert_eq!(
            xml_unescape("a&amp;lt;b &#13;&#x41;&#X1F600; &bogus; & &#xZZ; &amp"),
            "a&lt;b \rA\u{1F600} &bogus; & &#xZZ; &amp"
        );
    }

    #[test]
    fn a_listing_page_gives_its_keys_and_where_the_next_page_starts() {
        let page = |truncated: &str, tail: &str| {
            format!(
                "<ListBucketResult><Name>b</Name><Prefix>d/</Prefix><KeyCount>2</KeyCount>\
                 <IsTruncated>{truncated}</IsTruncated><Contents><Key>d/a &amp; b.sh</Key>\
                 <Size>3</Size></Contents><Contents><Key>d/sub/</Key></Contents>{tail}\
                 </ListBucketResult>"
            )
        };
        let listing = Listing::parse(&page(
            "true",
            "<NextContinuationToken>1/x+=</NextContinuationToken>",
        ));
        assert_eq!(listing.keys, ["d/a & b.sh", "d/sub/"]);
        assert!(listing.truncated);
        assert_eq!(listing.next_token.as_deref(), Some("1/x+="));
        let last = Listing::parse(&page("false", ""));
        assert!(!last.truncated && last.next_token.is_none());
    }

    #[test]
    fn listings_follow_continuation_tokens_within_their_limit() {
        use crate::aws::http::test_server::{response, serve};
        // Five keys, two a page, whatever max-keys asks; the token is the next key's index.
        let server = serve(|r| {
            let line = &r.request_line;
            if line.starts_with("HEAD") {
                return Some(response(200, &[("x-amz-bucket-region", "us-east-1")], b""));
            }
            let from = line
                .split_once("continuation-token=t%2B")
                .map_or(0, |(_, rest)| rest.as_bytes()[0] - b'0');
            let keys: String = (from..5.min(from + 2))
                .map(|i| format!("<Contents><Key>dir/k{i}</Key></Contents>"))
                .collect();
            let more = from + 2 < 5;
            let next = format!(
                "<NextContinuationToken>t+{}</NextContinuationToken>",
                from + 2
            );
            let body = format!(
                "<ListBucketResult><IsTruncated>{more}</IsTruncated>{keys}{}</ListBucketResult>",
                if more { next.as_str() } else { "" }
            );
            Some(response(200, &[], body.as_bytes()))
        });
        let client = client_at(&server.url());
        let keys = client.list_keys("bkt", "dir/", 5).unwrap();
        assert_eq!(keys, ["dir/k0", "dir/k1", "dir/k2", "dir/k3", "dir/k4"]);
        let lines: Vec<String> = server.requests.try_iter().map(|r| r.request_line).collect();
        assert_eq!(
            lines[1..],
            [
                "GET /bkt?list-type=2&max-keys=6&prefix=dir%2F HTTP/1.1",
                "GET /bkt?list-type=2&max-keys=4&prefix=dir%2F&continuation-token=t%2B2 HTTP/1.1",
                "GET /bkt?list-type=2&max-keys=2&prefix=dir%2F&continuation-token=t%2B4 HTTP/1.1",
            ]
        );
        let err = client.list_keys("bkt", "dir/", 4).unwrap_err();
        assert!(
            matches!(err, S3Error::TooManyKeys { limit: 4, .. }),
            "{err}"
        );
    }

    #[test]
    fn refusals_name_their_code_and_the_region_they_point_to() {
        let response = HttpResponse {
            status: 301,
            headers: vec![("x-amz-bucket-region".into(), "ap-south-1".into())],
            body: Vec::new(),
        };
        match refusal("u", &response) {
            S3Error::Service {
                code,
                bucket_region,
                ..
            } => {
                assert_eq!(code, "PermanentRedirect");
                assert_eq!(bucket_region.as_deref(), Some("ap-south-1"));
            }
            other => panic!("{other:?}"),
        }
        let slow = HttpResponse {
            status: 503,
            headers: Vec::new(),
            body: b"<Error><Code>SlowDown</Code></Error>".to_vec(),
        };
        assert!(refusal("u", &slow).is_retried());
        let missing = HttpResponse {
            status: 404,
            headers: Vec::new(),
            body: b"<Error><Code>NoSuchBucket</Code></Error>".to_vec(),
        };
        assert!(!refusal("u", &missing).is_retried());
    }

    fn client_at(url: &str) -> S3Client {
        use crate::aws::credentials::{Credentials, StaticCredentials};
        let http = HttpClient::new(&crate::aws::http::HttpConfig {
            user_agent: "test".into(),
            extra_ca_files: Vec::new(),
        })
        .unwrap();
        let credentials = StaticCredentials(Credentials {
            access_key_id: "AK".into(),
            secret_access_key: "SK".into(),
            session_token: None,
            expires_at: None,
        });
        let settings = S3Settings {
            endpoint: url.into(),
            service_domain: String::new(),
            region: "us-east-1".into(),
        };
        S3Client::new(Arc::new(http), Arc::new(credentials), settings)
    }

    #[test]
    fn the_region_is_asked_once_per_bucket_and_objects_stream_within_their_limit() {
        use crate::aws::http::test_server::{response, serve};
        let server = serve(|r| {
            let line = &r.request_line;
            let in_region = r
                .header("Authorization")
                .is_some_and(|a| a.contains("/eu-west-2/s3/aws4_request"));
            Some(if line.starts_with("HEAD /bkt ") {
                // S3 refuses a request signed for another region, and names the right one.
                response(400, &[("x-amz-bucket-region", "eu-west-2")], b"")
            } else if !in_region {
                response(
                    400,
                    &[],
                    b"<Error><Code>AuthorizationHeaderMalformed</Code></Error>",
                )
            } else if line.starts_with("GET /bkt/dir/obj%201 ") {
                response(200, &[], b"0123456789")
            } else {
                response(
                    404,
                    &[],
                    b"<Error><Code>NoSuchKey</Code><Message>No</Message></Error>",
                )
            })
        });
        let client = client_at(&server.url());
        let mut out = Vec::new();
        assert_eq!(
            client.get_object("bkt", "dir/obj 1", &mut out, 10).unwrap(),
            10
        );
        assert_eq!(out, b"0123456789");
        let err = client
            .get_object("bkt", "dir/obj 1", &mut Vec::new(), 9)
            .unwrap_err();
        assert!(matches!(err, S3Error::TooLarge { limit: 9, .. }), "{err}");
        let err = client
            .get_object("bkt", "nope", &mut Vec::new(), 100)
            .unwrap_err();
        assert!(err.to_string().contains("HTTP 404: NoSuchKey: No"), "{err}");
        let lines: Vec<String> = server.requests.try_iter().map(|r| r.request_line).collect();
        let heads = lines.iter().filter(|l| l.starts_with("HEAD")).count();
        assert_eq!(heads, 1, "{lines:?}");
        assert_eq!(lines.len(), 4, "nothing retried: {lines:?}");
    }

    #[test]
    fn a_download_that_broke_off_is_not_sent_again() {
        use crate::aws::http::test_server::{read_request, serve_raw};
        use std::io::BufReader;
        let server = serve_raw(|stream| {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            while let Some(r) = read_request(&mut reader) {
                let answer: &[u8] = if r.request_line.starts_with("HEAD") {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"
                };
                if (&stream).write_all(answer).is_err() || !answer.ends_with(b"\n\r\n") {
                    return;
                }
            }
        });
        let client = client_at(&server.url());
        let mut out = Vec::new();
        let err = client.get_object("bkt", "k", &mut out, 1000).unwrap_err();
        assert!(
            matches!(err, S3Error::BrokeOff { written: 10, .. }),
            "{err}"
        );
        assert_eq!(
            out, b"0123456789",
            "sent once: a resend would have written it twice"
        );
    }

    #[test]
    fn an_upload_signed_again_for_a_skewed_clock_sends_its_whole_body_again() {
        use crate::aws::http::test_server::{response, serve};
        use std::sync::atomic::{AtomicUsize, Ordering};
        static CLOCK: Clock = Clock::new();
        let puts = Arc::new(AtomicUsize::new(0));
        let seen = puts.clone();
        let server = serve(move |r| {
            let line = &r.request_line;
            Some(if line.starts_with("HEAD") {
                response(200, &[("x-amz-bucket-region", "us-east-1")], b"")
            } else if line.starts_with("GET") {
                response(404, &[], b"<Error><Code>NoSuchBucket</Code></Error>")
            } else if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                let later =
                    crate::timefmt::http_date(SystemTime::now() + Duration::from_secs(3600));
                let body = b"<Error><Code>RequestTimeTooSkewed</Code></Error>";
                response(403, &[("Date", &later)], body)
            } else if r.body == b"hello world" {
                response(
                    200,
                    &[("ETag", "\"5eb63bbbe01eeed093cb22bb8f5acdc3\"")],
                    b"",
                )
            } else {
                response(400, &[], b"<Error><Code>IncompleteBody</Code></Error>")
            })
        });
        let client = S3Client {
            clock: &CLOCK,
            ..client_at(&server.url())
        };
        let dir = std::env::temp_dir().join(format!("ssm-lite-s3-skew-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stdout");
        std::fs::write(&path, b"hello world").unwrap();
        let result = client.put_file("bkt", "k", &path);
        std::fs::remove_dir_all(&dir).unwrap();
        result.unwrap();
        assert_eq!(puts.load(Ordering::SeqCst), 2);
        assert!(
            CLOCK.offset_ms() > 3_500_000,
            "the clock took the service's time"
        );
    }

    #[test]
    fn the_region_cache_is_bounded() {
        let client = client_at("http://127.0.0.1:9");
        for i in 0..REGION_CACHE {
            client.remember(&format!("b{i}"), "eu-west-1");
        }
        assert_eq!(client.region_of("b0"), "eu-west-1", "cached: no call made");
        client.remember("b0", "eu-west-3");
        assert_eq!(crate::sync::lock(&client.regions).len(), REGION_CACHE);
        client.remember("one-more", "eu-west-1");
        assert_eq!(crate::sync::lock(&client.regions).len(), 1);
    }

    #[test]
    fn digests_cover_exactly_the_range() {
        let dir = std::env::temp_dir().join(format!("ssm-lite-s3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        std::fs::write(&path, b"hello world").unwrap();
        let (sha, md5) = digests(&path, 6, 5).unwrap();
        assert_eq!(sha, sigv4::sha256_hex(b"world"));
        let mut want = Md5::default();
        want.update(b"world");
        assert_eq!(md5, want.finish());
        assert!(digests(&path, 6, 50).is_err(), "a file shorter than said");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
