//! STS `GetCallerIdentity` (Query protocol: `POST /` with the form body
//! `Action=GetCallerIdentity&Version=2011-06-15`, SigV4 for `sts`, an XML answer), so that tests
//! can ask who signed a request: a Run Command script signing with the credentials the agent
//! shared (docs/protocol.md §5.7) must be the node's role. The caller is found among the
//! credentials the emulator issued: hybrid and Default Host Management role tokens, IMDS role
//! credentials, configured static keys.

use std::time::Instant;

use crate::http::{Request, Response, percent_decode};
use crate::sigv4::{self, SigError};
use crate::state::{SigCheck, State};
use crate::util::{sha256_hex, uuid_v4};

/// The request log's target for these calls.
pub const TARGET: &str = "STS.GetCallerIdentity";
const SERVICE: &str = "sts";
const VERSION: &str = "2011-06-15";
const XMLNS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
/// The role of a hybrid activation registered without `IamRole` (the name AWS's hybrid set-up
/// guide gives it).
pub const ACTIVATION_ROLE: &str = "SSMServiceRole";
/// Default Host Management's default role.
pub const DHMC_ROLE: &str = "AWSSystemsManagerDefaultEC2InstanceManagementRole";

/// One `GetCallerIdentity` that reached the emulator.
#[derive(Debug, Clone)]
pub struct CallerIdentityCall {
    pub at: Instant,
    /// The access key of the request's Credential (empty when there was none).
    pub access_key_id: String,
    /// The ARN answered, when the signature verified.
    pub arn: Option<String>,
    /// The error code and message answered otherwise.
    pub error: Option<(String, String)>,
}

/// Whether `req` is a Query-protocol call (STS): `POST /`, form-encoded, no `X-Amz-Target`.
pub(crate) fn is_query(req: &Request) -> bool {
    let form = req
        .header("Content-Type")
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    req.method == "POST" && req.path == "/" && form && req.header("X-Amz-Target").is_none()
}

/// Verifies and answers a Query call, and records it.
pub(crate) fn handle(st: &mut State, req: &Request) -> (Response, SigCheck) {
    let access_key_id = req
        .header("Authorization")
        .and_then(|h| sigv4::parse_authorization(h).ok())
        .map(|a| a.access_key)
        .unwrap_or_default();
    let answer = answer(st, req);
    let (response, check, arn, error) = match answer {
        Ok((arn, user_id)) => {
            let body = format!(
                "<GetCallerIdentityResponse xmlns=\"{XMLNS}\">\n  <GetCallerIdentityResult>\n    <Arn>{arn}</Arn>\n    <UserId>{user_id}</UserId>\n    <Account>{}</Account>\n  </GetCallerIdentityResult>\n  <ResponseMetadata>\n    <RequestId>{}</RequestId>\n  </ResponseMetadata>\n</GetCallerIdentityResponse>\n",
                st.options.account_id,
                uuid_v4()
            );
            (xml(200, body), SigCheck::Ok, Some(arn), None)
        }
        Err((status, code, message, check)) => {
            let body = format!(
                "<ErrorResponse xmlns=\"{XMLNS}\">\n  <Error>\n    <Type>Sender</Type>\n    <Code>{code}</Code>\n    <Message>{}</Message>\n  </Error>\n  <RequestId>{}</RequestId>\n</ErrorResponse>\n",
                escape(&message),
                uuid_v4()
            );
            (xml(status, body), check, None, Some((code, message)))
        }
    };
    st.sts.push(CallerIdentityCall {
        at: Instant::now(),
        access_key_id,
        arn,
        error,
    });
    (response, check)
}

type Failure = (u16, String, String, SigCheck);

/// The caller's ARN and UserId, or the error to answer.
fn answer(st: &State, req: &Request) -> Result<(String, String), Failure> {
    let now = st.now();
    let caller = sigv4::verify(req, &st.options.region, SERVICE, now, |ak| st.key_info(ak))
        .map_err(sig_failure)?;
    let form = std::str::from_utf8(&req.body).unwrap_or_default();
    let field = |name: &str| {
        form.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    };
    let bad = |code: &str, message: String| (400, code.to_owned(), message, SigCheck::Ok);
    match (field("Action").as_deref(), field("Version").as_deref()) {
        (Some("GetCallerIdentity"), Some(VERSION)) => Ok(identify(st, &caller)),
        (Some("GetCallerIdentity"), version) => Err(bad(
            "InvalidAction",
            format!("Version {version:?} is not {VERSION}"),
        )),
        (action, _) => Err(bad(
            "InvalidAction",
            format!("Could not find operation {action:?} for version {VERSION}"),
        )),
    }
}

/// STS's codes for what the JSON services call `UnrecognizedClientException` and
/// `InvalidSignatureException`.
fn sig_failure(e: SigError) -> Failure {
    let code = match e.code {
        "InvalidSignatureException" => "SignatureDoesNotMatch",
        _ if e.message.contains("expired") => "ExpiredToken",
        _ => "InvalidClientTokenId",
    };
    (
        e.status,
        code.to_owned(),
        e.message.clone(),
        SigCheck::Failed(e.message),
    )
}

/// Who holds `access_key` (it verified, so the emulator issued or knows it).
fn identify(st: &State, access_key: &str) -> (String, String) {
    let account = &st.options.account_id;
    let token = st
        .role_token_requests()
        .iter()
        .find(|r| r.access_key_id() == Some(access_key));
    let assumed = match token {
        Some(r) if r.instance_id.starts_with("mi-") => {
            let role = st
                .registrations()
                .iter()
                .find(|g| g.instance_id.as_deref() == Some(&r.instance_id))
                .and_then(|g| g.iam_role.clone())
                .unwrap_or_else(|| ACTIVATION_ROLE.to_owned());
            Some((role, r.instance_id.clone()))
        }
        Some(r) => Some((DHMC_ROLE.to_owned(), r.instance_id.clone())),
        None if st.imds.key_info(access_key).is_some() => st
            .options
            .role_name
            .clone()
            .map(|role| (role, st.options.instance_id.clone())),
        None => None,
    };
    match assumed {
        Some((role, session)) => (
            format!("arn:aws:sts::{account}:assumed-role/{role}/{session}"),
            format!("{}:{session}", role_id(&role)),
        ),
        None => (
            format!("arn:aws:iam::{account}:user/{access_key}"),
            access_key.to_owned(),
        ),
    }
}

/// A stable `AROA…` role id (21 characters, as IAM's).
fn role_id(role: &str) -> String {
    format!("AROA{}", sha256_hex(role.as_bytes())[..17].to_uppercase())
}

fn xml(status: u16, body: String) -> Response {
    Response::new(status, "text/xml", body)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use crate::http::Request;
    use crate::sigv4::sign_for_tests;
    use crate::tests::send;
    use crate::{Emulator, Options, StaticKey};
    use std::time::SystemTime;

    fn request(emu: &Emulator, body: &str, secret: &str) -> Request {
        let mut req = Request {
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: vec![
                (
                    "Host".into(),
                    emu.url().trim_start_matches("http://").into(),
                ),
                (
                    "Content-Type".into(),
                    "application/x-www-form-urlencoded; charset=utf-8".into(),
                ),
            ],
            body: body.as_bytes().to_vec(),
        };
        let now = SystemTime::now();
        sign_for_tests(
            &mut req,
            "AKIDSTATIC",
            secret,
            None,
            "us-east-1",
            "sts",
            now,
        );
        req
    }

    #[test]
    fn answers_who_signed_and_refuses_bad_signatures_and_actions() {
        let emu = Emulator::start(Options {
            static_credentials: vec![StaticKey {
                access_key_id: "AKIDSTATIC".into(),
                secret_access_key: "s3cr3t".into(),
                session_token: None,
            }],
            ..Options::default()
        });
        let ok = "Action=GetCallerIdentity&Version=2011-06-15";
        assert_eq!(
            send(&emu, &request(&emu, ok, "s3cr3t")).unwrap().status,
            200
        );
        assert_eq!(send(&emu, &request(&emu, ok, "wrong")).unwrap().status, 403);
        let other = "Action=AssumeRole&Version=2011-06-15";
        assert_eq!(
            send(&emu, &request(&emu, other, "s3cr3t")).unwrap().status,
            400
        );
        let calls = emu.caller_identity_calls();
        assert_eq!(
            calls[0].arn.as_deref(),
            Some("arn:aws:iam::123456789012:user/AKIDSTATIC")
        );
        assert_eq!(calls[1].error.as_ref().unwrap().0, "SignatureDoesNotMatch");
        assert_eq!(calls[2].error.as_ref().unwrap().0, "InvalidAction");
        assert!(calls.iter().all(|c| c.access_key_id == "AKIDSTATIC"));
        assert_eq!(emu.count(super::TARGET), 3);
    }
}
