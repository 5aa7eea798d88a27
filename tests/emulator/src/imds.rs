//! EC2 instance metadata (IMDSv2 tokens, identity, role credentials) under `/latest/`.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::http::{Request, Response};
use crate::sigv4::KeyInfo;
use crate::state::{Shared, State};
use crate::util::{iso8601, random_string};

const TOKEN_TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// IMDS refuses token lifetimes above six hours.
const MAX_TOKEN_TTL: u64 = 21_600;
/// The MAC address of the instance's one network interface.
const MAC: &str = "0e:12:34:56:78:9a";
const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const SECRET_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Credentials handed out through the role path (and as hybrid-activation role tokens).
pub(crate) struct IssuedKey {
    pub access_key: String,
    pub secret: String,
    pub token: String,
    pub expires: SystemTime,
}

impl IssuedKey {
    /// Fresh temporary credentials valid for `lifetime` from `now`.
    pub fn new(lifetime: Duration, now: SystemTime) -> IssuedKey {
        IssuedKey {
            access_key: format!("ASIA{}", random_string(16, UPPER_ALNUM)),
            secret: random_string(40, SECRET_CHARS),
            token: random_string(120, SECRET_CHARS),
            expires: now + lifetime,
        }
    }

    pub fn key_info(&self) -> KeyInfo {
        KeyInfo {
            secret: self.secret.clone(),
            session_token: Some(self.token.clone()),
            expires: Some(self.expires),
        }
    }
}

#[derive(Default)]
pub(crate) struct ImdsState {
    /// Session token → when it stops being valid.
    tokens: HashMap<String, Instant>,
    pub keys: Vec<IssuedKey>,
}

impl ImdsState {
    pub fn key_info(&self, access_key: &str) -> Option<KeyInfo> {
        self.keys
            .iter()
            .find(|k| k.access_key == access_key)
            .map(IssuedKey::key_info)
    }
}

/// Answers one IMDS request (`path` starts with `/latest/`).
pub(crate) fn handle(shared: &Shared, req: &Request) -> Response {
    let path = req.path.trim_start_matches("/latest/");
    if path == "api/token" {
        return if req.method == "PUT" {
            issue_token(shared, req)
        } else {
            Response::text(405, "use PUT for api/token\n")
        };
    }
    if req.method != "GET" {
        return Response::text(
            405,
            format!("{} is not allowed on IMDS paths\n", req.method),
        );
    }
    let mut st = shared.lock();
    if !authorised(&st, req) {
        return Response::text(401, "a valid x-aws-ec2-metadata-token is required\n");
    }
    let resp = metadata(&mut st, path);
    shared.touch(&mut st);
    resp
}

fn issue_token(shared: &Shared, req: &Request) -> Response {
    let ttl = req
        .header(TOKEN_TTL_HEADER)
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(ttl) = ttl.filter(|t| (1..=MAX_TOKEN_TTL).contains(t)) else {
        return Response::text(
            400,
            format!("{TOKEN_TTL_HEADER} must be 1..={MAX_TOKEN_TTL}\n"),
        );
    };
    let token = random_string(56, SECRET_CHARS);
    let until = Instant::now() + Duration::from_secs(ttl);
    shared.update(|st| st.imds.tokens.insert(token.clone(), until));
    Response::text(200, token).with_header(TOKEN_TTL_HEADER, ttl.to_string())
}

fn authorised(st: &State, req: &Request) -> bool {
    match req.header(TOKEN_HEADER) {
        Some(t) => st
            .imds
            .tokens
            .get(t)
            .is_some_and(|until| Instant::now() < *until),
        None => st.options.imds_v1_allowed,
    }
}

fn metadata(st: &mut State, path: &str) -> Response {
    let o = &st.options;
    let role = o.role_name.clone();
    let creds_prefix = "meta-data/iam/security-credentials/";
    let found = match path {
        "meta-data/instance-id" => o.instance_id.clone(),
        "meta-data/instance-type" => o.instance_type.clone(),
        "meta-data/placement/availability-zone" => o.availability_zone(),
        "meta-data/placement/availability-zone-id" => o.availability_zone_id.clone(),
        "meta-data/placement/region" => o.region.clone(),
        "meta-data/services/domain" => "amazonaws.com".into(),
        "dynamic/instance-identity/document" => identity_document(st),
        "meta-data/identity-credentials/ec2/security-credentials/ec2-instance" => issue(st),
        "meta-data/iam/info" if role.is_some() => iam_info(st),
        "meta-data/iam/security-credentials" | "meta-data/iam/security-credentials/" => {
            match role {
                Some(r) => r,
                None => return Response::text(404, "no role is attached to this instance\n"),
            }
        }
        "meta-data/network/interfaces/macs" | "meta-data/network/interfaces/macs/" => {
            format!("{MAC}/")
        }
        p if p.starts_with(&format!("meta-data/network/interfaces/macs/{MAC}/vpc-ipv")) => {
            let v6 = p.ends_with("/vpc-ipv6-cidr-blocks");
            let blocks: Vec<&str> = o
                .vpc_cidr_blocks
                .iter()
                .map(String::as_str)
                .filter(|b| b.contains(':') == v6)
                .collect();
            if blocks.is_empty() || !p.ends_with("-cidr-blocks") {
                return Response::text(404, format!("no metadata at /latest/{path}\n"));
            }
            blocks.join("\n")
        }
        p if p
            .strip_prefix(creds_prefix)
            .is_some_and(|r| Some(r) == role.as_deref()) =>
        {
            issue(st)
        }
        _ => return Response::text(404, format!("no metadata at /latest/{path}\n")),
    };
    Response::text(200, found)
}

fn identity_document(st: &State) -> String {
    let o = &st.options;
    json!({
        "accountId": o.account_id,
        "architecture": std::env::consts::ARCH,
        "availabilityZone": o.availability_zone(),
        "imageId": "ami-0123456789abcdef0",
        "instanceId": o.instance_id,
        "instanceType": o.instance_type,
        "pendingTime": "2024-01-01T00:00:00Z",
        "privateIp": "127.0.0.1",
        "region": o.region,
        "version": "2017-09-30",
    })
    .to_string()
}

fn iam_info(st: &State) -> String {
    let o = &st.options;
    json!({
        "Code": "Success",
        "LastUpdated": iso8601(SystemTime::now()),
        "InstanceProfileArn": format!(
            "arn:aws:iam::{}:instance-profile/{}",
            o.account_id,
            o.role_name.as_deref().unwrap_or_default()
        ),
        "InstanceProfileId": "AIPAEMULATOREXAMPLE01",
    })
    .to_string()
}

/// Issues fresh credentials (every call gets new keys) and returns the credential document.
fn issue(st: &mut State) -> String {
    let key = IssuedKey::new(st.options.credential_lifetime, st.now());
    let doc = json!({
        "Code": "Success",
        "LastUpdated": iso8601(SystemTime::now()),
        "Type": "AWS-HMAC",
        "AccessKeyId": key.access_key,
        "SecretAccessKey": key.secret,
        "Token": key.token,
        "Expiration": iso8601(key.expires),
    });
    st.imds.keys.push(key);
    doc.to_string()
}
