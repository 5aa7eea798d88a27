//! End-to-end tests over real TCP on 127.0.0.1: a raw HTTP client and a test signer built from
//! the vector-checked SigV4 primitives.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::http::{Request, read_headers, read_line};
use crate::sigv4::sign_for_tests;
use crate::targets::*;
use crate::util::sha256_hex;
use crate::*;

pub(crate) struct Resp {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.text()))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn error_type(&self) -> String {
        self.json()["__type"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

fn get(path: &str) -> Request {
    Request {
        method: "GET".into(),
        path: path.into(),
        query: String::new(),
        headers: Vec::new(),
        body: Vec::new(),
    }
}

/// Writes `req` on `stream` and reads one response; `None` if the server closed instead.
fn exchange(stream: &mut BufReader<TcpStream>, req: &Request) -> Option<Resp> {
    let target = if req.query.is_empty() {
        req.path.clone()
    } else {
        format!("{}?{}", req.path, req.query)
    };
    let mut head = format!("{} {target} HTTP/1.1\r\n", req.method);
    for (n, v) in &req.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", req.body.len()));
    let w = stream.get_mut();
    w.write_all(head.as_bytes()).unwrap();
    w.write_all(&req.body).unwrap();
    let status_line = read_line(stream).ok()??;
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = read_headers(stream).unwrap();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    stream.read_exact(&mut body).unwrap();
    Some(Resp {
        status,
        headers,
        body,
    })
}

fn connect(emu: &Emulator) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(emu.url().trim_start_matches("http://")).unwrap())
}

pub(crate) fn send(emu: &Emulator, req: &Request) -> Option<Resp> {
    exchange(&mut connect(emu), req)
}

#[derive(Clone)]
pub(crate) struct Creds {
    pub(crate) key: String,
    pub(crate) secret: String,
    pub(crate) token: Option<String>,
}

fn imds_token(emu: &Emulator) -> String {
    let mut put = get("/latest/api/token");
    put.method = "PUT".into();
    put.headers.push((
        "X-aws-ec2-metadata-token-ttl-seconds".into(),
        "21600".into(),
    ));
    let resp = send(emu, &put).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("x-aws-ec2-metadata-token-ttl-seconds"),
        Some("21600")
    );
    resp.text()
}

fn imds_get(emu: &Emulator, token: &str, path: &str) -> Resp {
    let mut req = get(path);
    req.headers
        .push(("X-aws-ec2-metadata-token".into(), token.into()));
    send(emu, &req).unwrap()
}

pub(crate) fn role_credentials(emu: &Emulator) -> Creds {
    let token = imds_token(emu);
    let role = imds_get(emu, &token, "/latest/meta-data/iam/security-credentials/").text();
    let doc = imds_get(
        emu,
        &token,
        &format!("/latest/meta-data/iam/security-credentials/{role}"),
    )
    .json();
    assert_eq!(doc["Code"], "Success");
    Creds {
        key: doc["AccessKeyId"].as_str().unwrap().into(),
        secret: doc["SecretAccessKey"].as_str().unwrap().into(),
        token: doc["Token"].as_str().map(str::to_string),
    }
}

/// An unsigned JSON 1.1 request for `target`.
pub(crate) fn json_request(emu: &Emulator, target: &str, body: &Value) -> Request {
    Request {
        method: "POST".into(),
        path: "/".into(),
        query: String::new(),
        headers: vec![
            (
                "Host".into(),
                emu.url().trim_start_matches("http://").into(),
            ),
            ("Content-Type".into(), "application/x-amz-json-1.1".into()),
            ("X-Amz-Target".into(), target.into()),
            ("User-Agent".into(), "emulator-tests".into()),
        ],
        body: body.to_string().into_bytes(),
    }
}

fn service_of(target: &str) -> &'static str {
    if target.starts_with("AmazonSSM.") {
        "ssm"
    } else {
        "ec2messages"
    }
}

fn signed(
    emu: &Emulator,
    c: &Creds,
    target: &str,
    body: &Value,
    region: &str,
    at: SystemTime,
) -> Request {
    let mut req = json_request(emu, target, body);
    let service = service_of(target);
    sign_for_tests(
        &mut req,
        &c.key,
        &c.secret,
        c.token.as_deref(),
        region,
        service,
        at,
    );
    req
}

/// A correctly signed call.
pub(crate) fn call(emu: &Emulator, c: &Creds, target: &str, body: &Value) -> Resp {
    send(
        emu,
        &signed(emu, c, target, body, "us-east-1", SystemTime::now()),
    )
    .expect("an answer")
}

fn quick(hold_ms: u64) -> Emulator {
    Emulator::start(Options {
        poll_hold: Duration::from_millis(hold_ms),
        ..Options::default()
    })
}

fn poll_body() -> Value {
    json!({"Destination": "i-0123456789abcdef0", "MessagesRequestId": uuid_v4(),
           "VisibilityTimeoutInSeconds": 10})
}

pub(crate) fn health_body() -> Value {
    json!({"AgentName": "amazon-ssm-agent", "AgentVersion": "3.3.0.0",
           "InstanceId": "i-0123456789abcdef0", "PlatformType": "Linux"})
}

#[test]
fn imds_v2_tokens_identity_and_fresh_credentials() {
    let emu = quick(1000);
    let unauth = send(&emu, &get("/latest/meta-data/instance-id")).unwrap();
    assert_eq!(unauth.status, 401, "IMDSv1 is off by default");
    let token = imds_token(&emu);
    assert_eq!(
        imds_get(&emu, "bogus", "/latest/meta-data/instance-id").status,
        401
    );
    assert_eq!(
        imds_get(&emu, &token, "/latest/meta-data/instance-id").text(),
        "i-0123456789abcdef0"
    );
    assert_eq!(
        imds_get(
            &emu,
            &token,
            "/latest/meta-data/placement/availability-zone"
        )
        .text(),
        "us-east-1a"
    );
    assert_eq!(
        imds_get(
            &emu,
            &token,
            "/latest/meta-data/placement/availability-zone-id"
        )
        .text(),
        "use1-az1"
    );
    let doc = imds_get(&emu, &token, "/latest/dynamic/instance-identity/document").json();
    assert_eq!(
        (doc["region"].as_str(), doc["instanceId"].as_str()),
        (Some("us-east-1"), Some("i-0123456789abcdef0"))
    );
    assert_eq!(
        imds_get(&emu, &token, "/latest/meta-data/nothing").status,
        404
    );

    let (a, b) = (role_credentials(&emu), role_credentials(&emu));
    assert_ne!(a.key, b.key, "each issue yields new keys");
    assert!(a.key.starts_with("ASIA") && a.token.is_some());
    assert_eq!(emu.read(|st| st.credentials_issued()), 2);
    for c in [&a, &b] {
        assert_eq!(
            call(&emu, c, UPDATE_INSTANCE_INFORMATION, &health_body()).status,
            200
        );
    }

    let v1 = Emulator::start(Options {
        imds_v1_allowed: true,
        role_name: None,
        ..Options::default()
    });
    assert_eq!(
        send(&v1, &get("/latest/meta-data/instance-type"))
            .unwrap()
            .text(),
        "t3.micro"
    );
    let no_role = send(&v1, &get("/latest/meta-data/iam/security-credentials/")).unwrap();
    assert_eq!(no_role.status, 404);
}

#[test]
fn verifier_accepts_good_and_rejects_bad_signatures() {
    let emu = quick(1000);
    let c = role_credentials(&emu);
    let ok = call(&emu, &c, UPDATE_INSTANCE_INFORMATION, &health_body());
    assert_eq!((ok.status, ok.json()), (200, json!({})));
    assert_eq!(emu.health_pings().len(), 1);
    assert!(emu.signature_failures().is_empty());

    let now = SystemTime::now();
    let mut tampered = signed(
        &emu,
        &c,
        UPDATE_INSTANCE_INFORMATION,
        &health_body(),
        "us-east-1",
        now,
    );
    tampered.body = json!({"InstanceId": "i-0fffffffffffffff0"})
        .to_string()
        .into_bytes();
    let wrong_region = signed(
        &emu,
        &c,
        UPDATE_INSTANCE_INFORMATION,
        &health_body(),
        "eu-west-1",
        now,
    );
    let stale = signed(
        &emu,
        &c,
        UPDATE_INSTANCE_INFORMATION,
        &health_body(),
        "us-east-1",
        now - Duration::from_secs(600),
    );
    let unknown = Creds {
        key: "ASIAUNKNOWNKEY000000".into(),
        ..c.clone()
    };
    let unknown = signed(
        &emu,
        &unknown,
        UPDATE_INSTANCE_INFORMATION,
        &health_body(),
        "us-east-1",
        now,
    );
    let no_token = Creds {
        token: None,
        ..c.clone()
    };
    let no_token = signed(
        &emu,
        &no_token,
        UPDATE_INSTANCE_INFORMATION,
        &health_body(),
        "us-east-1",
        now,
    );
    // An ec2messages target signed for service "ssm".
    let mut wrong_service = json_request(&emu, GET_MESSAGES, &poll_body());
    sign_for_tests(
        &mut wrong_service,
        &c.key,
        &c.secret,
        c.token.as_deref(),
        "us-east-1",
        "ssm",
        now,
    );
    // A refused request time is a 400, as the JSON 1.1 services answer it; the rest 403.
    let cases = [
        (tampered, 403, "InvalidSignatureException"),
        (wrong_region, 403, "InvalidSignatureException"),
        (stale, 400, "InvalidSignatureException"),
        (wrong_service, 403, "InvalidSignatureException"),
        (unknown, 403, "UnrecognizedClientException"),
        (no_token, 403, "UnrecognizedClientException"),
    ];
    let n = cases.len();
    for (req, status, expected) in cases {
        let resp = send(&emu, &req).unwrap();
        assert_eq!(
            (resp.status, resp.error_type()),
            (status, expected.to_string()),
            "{}",
            resp.text()
        );
    }
    assert_eq!(emu.signature_failures().len(), n);
    assert_eq!(
        emu.health_pings().len(),
        1,
        "refused calls are not processed"
    );
    assert_eq!(emu.count(UPDATE_INSTANCE_INFORMATION), n);
}

#[test]
fn expired_and_static_credentials() {
    let key = StaticKey {
        access_key_id: "AKIDSTATICEXAMPLE".into(),
        secret_access_key: "static-secret".into(),
        session_token: None,
    };
    let options = Options {
        credential_lifetime: Duration::ZERO,
        static_credentials: vec![key],
        ..Options::default()
    };
    let emu = Emulator::start(options);
    let expired = call(
        &emu,
        &role_credentials(&emu),
        UPDATE_INSTANCE_INFORMATION,
        &health_body(),
    );
    assert_eq!(expired.status, 403);
    assert!(
        expired.json()["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    let fixed = Creds {
        key: "AKIDSTATICEXAMPLE".into(),
        secret: "static-secret".into(),
        token: None,
    };
    assert_eq!(
        call(&emu, &fixed, UPDATE_INSTANCE_INFORMATION, &health_body()).status,
        200
    );
}

#[test]
fn unknown_target_and_validation_errors() {
    let emu = quick(1000);
    let c = role_credentials(&emu);
    let unknown = call(&emu, &c, "AmazonSSM.DescribeEverything", &json!({}));
    assert_eq!(
        (unknown.status, unknown.error_type().as_str()),
        (400, "UnknownOperationException")
    );
    let short = call(
        &emu,
        &c,
        GET_MESSAGES,
        &json!({"Destination": "i-1", "MessagesRequestId": uuid_v4()}),
    );
    assert_eq!(
        (short.status, short.error_type().as_str()),
        (400, "ValidationException")
    );
    let bad_fail = call(
        &emu,
        &c,
        FAIL_MESSAGE,
        &json!({"MessageId": "aws.ssm.x.i-0123456789abcdef0", "FailureType": "Oops"}),
    );
    assert_eq!(bad_fail.status, 400);
    let not_json = call(
        &emu,
        &c,
        SEND_REPLY,
        &json!({"MessageId": "aws.ssm.x.i-0123456789abcdef0", "ReplyId": uuid_v4(), "Payload": "{"}),
    );
    assert_eq!(not_json.status, 400);
    assert!(emu.signature_failures().is_empty());
}

/// Starts a GetMessages in a thread once the test is ready; returns (elapsed, response).
fn poll_in_thread(emu: &Emulator, c: &Creds) -> thread::JoinHandle<(Duration, Resp)> {
    let req = signed(
        emu,
        c,
        GET_MESSAGES,
        &poll_body(),
        "us-east-1",
        SystemTime::now(),
    );
    let mut stream = connect(emu);
    thread::spawn(move || {
        let start = Instant::now();
        let resp = exchange(&mut stream, &req).expect("poll answered");
        (start.elapsed(), resp)
    })
}

#[test]
fn long_poll_wakes_on_enqueue_and_times_out_empty() {
    let emu = quick(5000);
    let c = role_credentials(&emu);
    let poll = poll_in_thread(&emu, &c);
    assert!(emu.wait_until(Duration::from_secs(5), |st| st.held_polls() == 1));
    let payload =
        aws_run_shell_script_payload("11111111-2222-4333-8444-555555555555", &["true"], 60);
    let id = emu.send_command(&payload);
    assert_eq!(
        id,
        "aws.ssm.11111111-2222-4333-8444-555555555555.i-0123456789abcdef0"
    );
    let (elapsed, resp) = poll.join().unwrap();
    assert!(
        elapsed < Duration::from_secs(2),
        "woken at once, took {elapsed:?}"
    );
    let body = resp.json();
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["Destination", "Messages", "MessagesRequestId"]);
    let m = &body["Messages"][0];
    assert_eq!(m["MessageId"], id.as_str());
    assert!(
        m["Topic"]
            .as_str()
            .unwrap()
            .starts_with("aws.ssm.sendCommand.")
    );
    assert_eq!(
        m["PayloadDigest"].as_str().unwrap(),
        sha256_hex(m["Payload"].as_str().unwrap().as_bytes())
    );
    assert_eq!(m["CreatedDate"].as_str().unwrap().len(), 24);
    let carried: Value = serde_json::from_str(m["Payload"].as_str().unwrap()).unwrap();
    assert_eq!(carried, payload);

    let quick_emu = quick(1000);
    let c = role_credentials(&quick_emu);
    let start = Instant::now();
    let empty = call(&quick_emu, &c, GET_MESSAGES, &poll_body());
    let held = start.elapsed();
    assert!(
        held >= Duration::from_millis(1000) && held < Duration::from_millis(1800),
        "{held:?}"
    );
    assert_eq!(empty.json()["Messages"], json!([]));
    assert_eq!(quick_emu.read(|st| st.held_polls()), 0);
}

#[test]
fn unacked_messages_are_redelivered_after_visibility_timeout() {
    let emu = Emulator::start(Options {
        poll_hold: Duration::from_millis(1500),
        visibility_timeout: Some(Duration::from_millis(300)),
        ..Options::default()
    });
    let c = role_credentials(&emu);
    let id = emu.send_command(&aws_run_shell_script_payload(&uuid_v4(), &["true"], 60));
    let first = call(&emu, &c, GET_MESSAGES, &poll_body()).json();
    assert_eq!(first["Messages"][0]["MessageId"], id.as_str());
    // Hidden now; this poll is held until the message becomes visible again.
    let start = Instant::now();
    let second = call(&emu, &c, GET_MESSAGES, &poll_body()).json();
    assert_eq!(second["Messages"][0]["MessageId"], id.as_str());
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(emu.deliveries(&id).len(), 2);

    assert_eq!(
        call(&emu, &c, ACKNOWLEDGE_MESSAGE, &json!({"MessageId": id})).json(),
        json!({})
    );
    assert_eq!(emu.acks(), std::slice::from_ref(&id));
    assert_eq!(
        call(&emu, &c, GET_MESSAGES, &poll_body()).json()["Messages"],
        json!([])
    );
    assert_eq!(emu.deliveries(&id).len(), 2, "acked messages are gone");
}

fn reply_body(id: &str, reply_id: &str, status: &str) -> Value {
    let payload = json!({"documentStatus": status, "runtimeStatus": null,
                         "additionalInfo": {"runId": ""}, "documentTraceOutput": ""});
    json!({"MessageId": id, "ReplyId": reply_id, "Payload": payload.to_string()})
}

#[test]
fn replies_are_deduplicated_and_final_is_found() {
    let emu = quick(1000);
    let c = role_credentials(&emu);
    let id = emu.send_command(&aws_run_shell_script_payload(&uuid_v4(), &["true"], 60));
    let (r1, r2) = (uuid_v4(), uuid_v4());
    let waiter = thread::scope(|s| {
        let h = s.spawn(|| emu.wait_final(&id, Duration::from_secs(5)));
        for (reply_id, status) in [(&r1, "InProgress"), (&r1, "InProgress"), (&r2, "Success")] {
            let resp = call(&emu, &c, SEND_REPLY, &reply_body(&id, reply_id, status));
            assert_eq!(resp.json()["ReplyStatus"], "Queued");
        }
        h.join().unwrap()
    });
    assert_eq!(waiter.map(|r| r.reply_id), Some(r2.clone()));
    let replies = emu.replies(&id);
    assert_eq!(
        replies
            .iter()
            .map(|r| r.reply_id.clone())
            .collect::<Vec<_>>(),
        [r1.clone(), r2]
    );
    assert_eq!(replies[0].document_status(), "InProgress");
    assert_eq!(emu.duplicate_replies(), [r1]);
    assert_eq!(
        emu.wait_replies(&id, 2, Duration::ZERO).map(|r| r.len()),
        Some(2)
    );
    assert!(
        emu.wait_replies(&id, 3, Duration::from_millis(50))
            .is_none()
    );
    assert!(
        emu.wait_final(
            "aws.ssm.none.i-0123456789abcdef0",
            Duration::from_millis(50)
        )
        .is_none()
    );

    let fail = call(
        &emu,
        &c,
        FAIL_MESSAGE,
        &json!({"MessageId": id, "FailureType": "InternalHandlerException"}),
    );
    assert_eq!(fail.status, 200);
    assert_eq!(emu.fails()[0].failure_type, "InternalHandlerException");
}

#[test]
fn injected_failures_windows_and_scope() {
    let emu = quick(200);
    let c = role_credentials(&emu);
    emu.fail_next(1, 400, "ThrottlingException");
    let throttled = call(&emu, &c, UPDATE_INSTANCE_INFORMATION, &health_body());
    assert_eq!(
        (throttled.status, throttled.error_type().as_str()),
        (400, "ThrottlingException")
    );
    assert_eq!(
        call(&emu, &c, UPDATE_INSTANCE_INFORMATION, &health_body()).status,
        200
    );

    emu.fail_for(Duration::from_millis(300), 503, "ServiceUnavailable");
    let start = Instant::now();
    for _ in 0..2 {
        assert_eq!(call(&emu, &c, GET_MESSAGES, &poll_body()).status, 503);
    }
    // The window is a span of time: nothing to wait on but the clock.
    thread::sleep(Duration::from_millis(300).saturating_sub(start.elapsed()));
    assert_eq!(call(&emu, &c, GET_MESSAGES, &poll_body()).status, 200);

    emu.set_fault_target(FaultTarget::Mds);
    emu.fail_next(1, 500, "InternalServerException");
    assert_eq!(
        call(&emu, &c, UPDATE_INSTANCE_INFORMATION, &health_body()).status,
        200
    );
    assert_eq!(call(&emu, &c, GET_MESSAGES, &poll_body()).status, 500);

    let log = emu.request_log();
    let faulted: Vec<_> = log.iter().filter_map(|r| r.fault.as_deref()).collect();
    assert_eq!(faulted.len(), 4, "{faulted:?}");
    assert!(faulted[0].contains("ThrottlingException"));
    assert!(emu.signature_failures().is_empty());
}

#[test]
fn dropped_and_delayed_answers() {
    let emu = quick(200);
    let c = role_credentials(&emu);
    emu.drop_next(1);
    assert!(
        send(
            &emu,
            &signed(
                &emu,
                &c,
                UPDATE_INSTANCE_INFORMATION,
                &health_body(),
                "us-east-1",
                SystemTime::now()
            )
        )
        .is_none()
    );
    let last = emu.request_log().pop().unwrap();
    assert_eq!(
        (last.status, last.fault.as_deref()),
        (0, Some("injected connection drop"))
    );

    emu.delay_next(1, Duration::from_millis(400));
    let start = Instant::now();
    assert_eq!(
        call(&emu, &c, UPDATE_INSTANCE_INFORMATION, &health_body()).status,
        200
    );
    assert!(start.elapsed() >= Duration::from_millis(400));
    assert_eq!(
        emu.health_pings().len(),
        1,
        "only the delayed call was processed"
    );
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let emu = quick(200);
    let token = imds_token(&emu);
    let mut stream = connect(&emu);
    let mut req = get("/latest/meta-data/instance-id");
    req.headers.push(("x-aws-ec2-metadata-token".into(), token));
    for _ in 0..3 {
        assert_eq!(exchange(&mut stream, &req).unwrap().status, 200);
    }
}

#[test]
fn stop_answers_held_polls_and_closes() {
    let emu = quick(10_000);
    let c = role_credentials(&emu);
    let poll = poll_in_thread(&emu, &c);
    assert!(emu.wait_until(Duration::from_secs(5), |st| st.held_polls() == 1));
    let start = Instant::now();
    emu.stop();
    let (elapsed, resp) = poll.join().unwrap();
    assert!(elapsed < Duration::from_secs(3) && start.elapsed() < Duration::from_secs(3));
    assert_eq!(resp.json()["Messages"], json!([]));
    assert!(TcpStream::connect(emu.url().trim_start_matches("http://")).is_err());
}

#[test]
fn control_interface_for_scripts() {
    let emu = quick(200);
    let c = role_credentials(&emu);
    let mut post = get("/_emulator/send-command");
    post.method = "POST".into();
    post.body = aws_run_shell_script_payload("c0ffee00-0000-4000-8000-000000000000", &["true"], 60)
        .to_string()
        .into_bytes();
    let id = send(&emu, &post).unwrap().json()["MessageId"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(id.starts_with("aws.ssm.c0ffee00-0000-4000-8000-000000000000."));

    let mut fin = get("/_emulator/final");
    fin.query = format!("message_id={id}&timeout_ms=50");
    assert_eq!(send(&emu, &fin).unwrap().status, 404);
    call(&emu, &c, SEND_REPLY, &reply_body(&id, &uuid_v4(), "Failed"));
    let got = send(&emu, &fin).unwrap().json();
    assert_eq!(got["Payload"]["documentStatus"], "Failed");
    let mut replies = get("/_emulator/replies");
    replies.query = format!("message_id={id}");
    assert_eq!(
        send(&emu, &replies)
            .unwrap()
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(emu.snapshot()["replies"].as_array().unwrap().len(), 1);
}

#[test]
fn cancel_and_raw_messages() {
    let emu = quick(200);
    let c = role_credentials(&emu);
    let cancel = emu.send_cancel("aws.ssm.target.i-0123456789abcdef0");
    emu.enqueue_raw(
        "aws.ssm.sendCommand.us.east.1.1",
        "not json",
        "aws.ssm.raw-1.i-0123456789abcdef0",
    );
    let msgs = call(&emu, &c, GET_MESSAGES, &poll_body()).json()["Messages"].clone();
    assert_eq!(msgs[0]["MessageId"], cancel.as_str());
    assert!(
        msgs[0]["Topic"]
            .as_str()
            .unwrap()
            .starts_with("aws.ssm.cancelCommand.")
    );
    let payload: Value = serde_json::from_str(msgs[0]["Payload"].as_str().unwrap()).unwrap();
    assert_eq!(
        payload,
        json!({"CancelMessageId": "aws.ssm.target.i-0123456789abcdef0"})
    );
    assert_eq!(msgs[1]["Payload"], "not json");
}

#[test]
fn run_shell_script_payload_shape() {
    let p = aws_run_shell_script_payload("id-1", &["echo a", "echo b"], 42);
    assert_eq!(p["Parameters"]["commands"], json!(["echo a", "echo b"]));
    assert_eq!(p["Parameters"]["executionTimeout"], "42");
    let doc = &p["DocumentContent"];
    assert_eq!(doc["schemaVersion"], "1.2");
    assert_eq!(doc["parameters"]["executionTimeout"]["default"], "3600");
    assert_eq!(
        doc["parameters"]["executionTimeout"]["allowedPattern"],
        EXECUTION_TIMEOUT_PATTERN
    );
    let props = &doc["runtimeConfig"]["aws:runShellScript"]["properties"][0];
    assert_eq!(props["id"], "0.aws:runShellScript");
    assert_eq!(props["runCommand"], "{{ commands }}");
    assert_eq!(props["timeoutSeconds"], "{{ executionTimeout }}");
    assert_eq!(p["CloudWatchOutputEnabled"], "false");
}

#[test]
fn demo_wires_the_agent_and_reports_an_early_exit() {
    let dir = std::env::temp_dir().join(format!("emu-demo-test-{}", uuid_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let record = dir.join("record");
    let fake = dir.join("fake-agent");
    let script = format!(
        "#!/bin/sh\necho \"$@\" > {r}.args\necho \"$AWS_EC2_METADATA_SERVICE_ENDPOINT\" > {r}.env\n\
         cat \"$3\" > {r}.config\ntest -d \"$5\" || exit 9\nexit 3\n",
        r = record.display()
    );
    std::fs::write(&fake, script).unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let err = demo::run(&fake, "true").unwrap_err();
    assert!(err.contains("exited (exit status: 3)"), "{err}");
    let read = |ext: &str| std::fs::read_to_string(format!("{}.{ext}", record.display())).unwrap();
    let args = read("args");
    assert!(
        args.starts_with("run --config ") && args.contains("amazon-ssm-agent.json --state-dir "),
        "{args}"
    );
    let url = read("env").trim().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let config: Value = serde_json::from_str(&read("config")).unwrap();
    assert_eq!(
        (
            config["Mds"]["Endpoint"].as_str(),
            config["Ssm"]["Endpoint"].as_str()
        ),
        (Some(url.as_str()), Some(url.as_str()))
    );
    let demo_dir = args.split(' ').nth(2).unwrap();
    assert!(!std::path::Path::new(demo_dir).exists(), "temp dir removed");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn get_parameters_answers_as_the_service_does() {
    let emu = quick(1000);
    let c = role_credentials(&emu);
    assert_eq!(
        emu.put_parameter("/app/greeting", ParameterType::String, "hello"),
        1
    );
    assert_eq!(
        emu.put_parameter("/app/greeting", ParameterType::String, "hi"),
        2
    );
    emu.put_parameter("cmds", ParameterType::StringList, "ls,date");
    emu.put_parameter("db.password", ParameterType::SecureString, "s3cret");
    let names = [
        "/app/greeting",
        "/app/greeting:1",
        "cmds",
        "db.password",
        "nope",
        "cmds:7",
        "cmds:prod",
    ];
    let resp = call(
        &emu,
        &c,
        GET_PARAMETERS,
        &json!({"Names": names, "WithDecryption": false}),
    );
    assert_eq!(resp.status, 200);
    let body = resp.json();
    assert_eq!(
        body["InvalidParameters"],
        json!(["nope", "cmds:7", "cmds:prod"])
    );
    let found = body["Parameters"].as_array().unwrap();
    let brief: Vec<(&str, &str, i64)> = found
        .iter()
        .map(|p| {
            (
                p["Name"].as_str().unwrap(),
                p["Type"].as_str().unwrap(),
                p["Version"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        brief,
        [
            ("/app/greeting", "String", 2),
            ("/app/greeting", "String", 1),
            ("cmds", "StringList", 1),
            ("db.password", "SecureString", 1)
        ]
    );
    assert_eq!(found[0]["Value"], "hi");
    assert!(found[0].get("Selector").is_none());
    assert_eq!(
        (&found[1]["Value"], &found[1]["Selector"]),
        (&json!("hello"), &json!(":1"))
    );
    assert_eq!(found[2]["Value"], "ls,date");
    assert_eq!(
        found[0]["ARN"],
        "arn:aws:ssm:us-east-1:123456789012:parameter/app/greeting"
    );
    assert_eq!(
        found[2]["ARN"],
        "arn:aws:ssm:us-east-1:123456789012:parameter/cmds"
    );
    assert_eq!(found[0]["DataType"], "text");
    let modified = found[0]["LastModifiedDate"].as_f64().unwrap();
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - modified).abs() < 60.0, "{modified} vs {now}");
    // A SecureString read without decryption is ciphertext, the same on every read.
    let secret = found[3]["Value"].as_str().unwrap();
    assert!(
        secret.starts_with("AQICAH") && !secret.contains("s3cret"),
        "{secret}"
    );
    let again = call(&emu, &c, GET_PARAMETERS, &json!({"Names": ["db.password"]})).json();
    assert_eq!(again["Parameters"][0]["Value"], secret);
    let plain = call(
        &emu,
        &c,
        GET_PARAMETERS,
        &json!({"Names": ["db.password"], "WithDecryption": true}),
    )
    .json();
    assert_eq!(plain["Parameters"][0]["Value"], "s3cret");

    let eleven: Vec<String> = (0..11).map(|i| format!("p{i}")).collect();
    let too_many = call(&emu, &c, GET_PARAMETERS, &json!({"Names": eleven}));
    assert_eq!(
        (too_many.status, too_many.error_type().as_str()),
        (400, "ValidationException")
    );
    assert_eq!(
        too_many.json()["message"],
        "1 validation error detected: Value '[p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10]' at \
         'names' failed to satisfy constraint: Member must have length less than or equal to 10"
    );
    for body in [json!({}), json!({"Names": []})] {
        let r = call(&emu, &c, GET_PARAMETERS, &body);
        assert_eq!(
            (r.status, r.error_type().as_str()),
            (400, "ValidationException"),
            "{body}"
        );
    }
    // Unsigned: refused before the operation, so not among the calls.
    let unsigned = send(
        &emu,
        &json_request(&emu, GET_PARAMETERS, &json!({"Names": ["cmds"]})),
    )
    .unwrap();
    assert_eq!(unsigned.status, 403);
    let calls = emu.get_parameters_calls();
    assert_eq!(calls.len(), 6);
    assert_eq!(calls[0].names(), names);
    assert!(!calls[0].with_decryption() && calls[2].with_decryption());
    assert!(calls[0].error.is_none());
    assert_eq!(calls[3].error.as_ref().unwrap().0, "ValidationException");
    assert_eq!(emu.count(GET_PARAMETERS), 7);
    assert_eq!(emu.signature_failures().len(), 1);
}
