//! ssmmessages over real TCP on 127.0.0.1: a fake agent signs its REST calls and WebSocket
//! upgrades with the test signer and speaks AgentMessages through the tungstenite client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::agentmessage::{FLAG_FIN, FLAG_SYN, payload_types as pt, types};
use crate::http::{Request, read_headers};
use crate::sigv4::sign_for_tests;
use crate::*;

const KEY: &str = "AKIDEMULATORTEST";
const SECRET: &str = "emulator-test-secret";
const WAIT: Duration = Duration::from_secs(5);

fn emulator() -> Emulator {
    Emulator::start(Options {
        static_credentials: vec![StaticKey {
            access_key_id: KEY.into(),
            secret_access_key: SECRET.into(),
            session_token: Some("tok".into()),
        }],
        ..Options::default()
    })
}

fn host(emu: &Emulator) -> String {
    emu.url().trim_start_matches("http://").to_string()
}

/// A request with Host (and `body`), signed for ssmmessages with `secret`.
fn signed(
    emu: &Emulator,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    secret: &str,
) -> Request {
    let mut req = Request {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        headers: vec![("Host".into(), host(emu))],
        body: body.to_vec(),
    };
    if !body.is_empty() {
        req.headers
            .push(("Content-Type".into(), "application/json".into()));
    }
    let now = SystemTime::now();
    sign_for_tests(
        &mut req,
        KEY,
        secret,
        Some("tok"),
        "us-east-1",
        "ssmmessages",
        now,
    );
    req
}

/// POSTs `req` on a fresh connection; (status, body).
fn post(emu: &Emulator, req: &Request) -> (u16, String) {
    let mut s = TcpStream::connect(host(emu)).unwrap();
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
    for (n, v) in &req.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", req.body.len()));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&req.body).unwrap();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let headers = read_headers(&mut r).unwrap();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    let code = status.split(' ').nth(1).unwrap().parse().unwrap();
    (code, String::from_utf8(body).unwrap())
}

fn create_body(data: bool) -> Vec<u8> {
    let mut b = json!({"MessageSchemaVersion": "1.0", "RequestId": uuid_v4()});
    if data {
        b["ClientId"] = json!("");
    }
    b.to_string().into_bytes()
}

fn token_of(xml: &str) -> String {
    let start = xml.find("<TokenValue>").unwrap() + "<TokenValue>".len();
    let end = xml.find("</TokenValue>").unwrap();
    xml[start..end].to_string()
}

/// Opens the WebSocket at `path?query`, signed with `secret`.
fn upgrade(emu: &Emulator, path: &str, query: &str, secret: &str) -> Result<WsConn, String> {
    let req = signed(emu, "GET", path, query, b"", secret);
    let headers: Vec<(String, String)> = req
        .headers
        .into_iter()
        .filter(|(n, _)| n != "Host")
        .collect();
    let url = format!("ws://{}{path}?{query}", host(emu));
    WsConn::client(&url, &headers)
}

/// The agent's side, reduced to what the tests drive by hand.
struct FakeAgent {
    conn: WsConn,
}

impl FakeAgent {
    fn control(emu: &Emulator) -> FakeAgent {
        let path = format!(
            "/v1/control-channel/{}",
            emu.read(|st| st.options.instance_id.clone())
        );
        let (status, xml) = post(
            emu,
            &signed(emu, "POST", &path, "", &create_body(false), SECRET),
        );
        assert_eq!(status, 201, "{xml}");
        let mut conn = upgrade(emu, &path, "role=subscribe&stream=input", SECRET).unwrap();
        let open = json!({"Cookie": null, "MessageSchemaVersion": "1.0", "RequestId": uuid_v4(),
            "TokenValue": token_of(&xml), "AgentVersion": "0.1.0", "PlatformType": "linux"});
        conn.send_text(&open.to_string()).unwrap();
        assert!(emu.wait_mgs_connected(WAIT));
        FakeAgent { conn }
    }

    fn data(emu: &Emulator, sid: &str) -> FakeAgent {
        let path = format!("/v1/data-channel/{sid}");
        let (status, xml) = post(
            emu,
            &signed(emu, "POST", &path, "", &create_body(true), SECRET),
        );
        assert_eq!(status, 201, "{xml}");
        let mut conn = upgrade(emu, &path, "role=publish_subscribe", SECRET).unwrap();
        let open = json!({"MessageSchemaVersion": "1.0", "RequestId": uuid_v4(),
            "TokenValue": token_of(&xml), "ClientInstanceId": "i-0123456789abcdef0", "ClientId": ""});
        conn.send_text(&open.to_string()).unwrap();
        FakeAgent { conn }
    }

    fn send(&mut self, m: AgentMessage) {
        self.conn.send_binary(m.encode()).unwrap();
    }

    fn recv(&mut self, timeout: Duration) -> Option<AgentMessage> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.conn.poll() {
                Ok(Incoming::Binary(b)) => return Some(AgentMessage::decode(&b).unwrap()),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    fn expect(&mut self, message_type: &str) -> AgentMessage {
        let m = self
            .recv(WAIT)
            .unwrap_or_else(|| panic!("no {message_type} arrived"));
        assert_eq!(m.message_type, message_type, "{}", m.payload_text());
        m
    }

    fn json(&mut self, message_type: &str) -> (AgentMessage, Value) {
        let m = self.expect(message_type);
        let v = serde_json::from_slice(&m.payload).unwrap();
        (m, v)
    }

    /// Sends `agent_job_reply` for `job_id` with `status`; returns its MessageId.
    fn reply(&mut self, job_id: &str, status: &str) -> AgentMessage {
        let content = json!({"documentStatus": status, "runtimeStatus": null}).to_string();
        let payload = json!({"schemaVersion": 1, "jobId": job_id, "content": content,
            "topic": "aws.ssm.sendCommand"});
        let m = AgentMessage::new(types::AGENT_JOB_REPLY, payload.to_string().into_bytes());
        self.send(m.clone());
        m
    }

    fn output(&mut self, seq: i64, ptype: u32, data: &[u8]) -> AgentMessage {
        let flags = if seq == 0 { FLAG_SYN } else { 0 };
        let m = AgentMessage::new(types::OUTPUT_STREAM_DATA, data.to_vec())
            .with_sequence(seq, flags)
            .with_payload_type(ptype);
        self.send(m.clone());
        m
    }

    fn ack_input(&mut self, m: &AgentMessage) {
        let ack = json!({"AcknowledgedMessageType": "input_stream_data",
            "AcknowledgedMessageId": m.message_id,
            "AcknowledgedMessageSequenceNumber": m.sequence_number, "IsSequentialMessage": true});
        self.send(
            AgentMessage::new(types::ACKNOWLEDGE, ack.to_string().into_bytes())
                .with_sequence(0, FLAG_SYN | FLAG_FIN),
        );
    }

    fn state(&mut self, sid: &str, state: &str) {
        let v = json!({"SchemaVersion": 1, "SessionState": state, "SessionId": sid});
        self.send(
            AgentMessage::new(types::AGENT_SESSION_STATE, v.to_string().into_bytes())
                .with_sequence(0, FLAG_SYN | FLAG_FIN),
        );
    }

    /// Next input message, skipping acknowledgements the client sends for output.
    fn input(&mut self) -> AgentMessage {
        loop {
            let m = self.recv(WAIT).expect("no input_stream_data arrived");
            if m.message_type == types::INPUT_STREAM_DATA {
                return m;
            }
            assert_eq!(m.message_type, types::ACKNOWLEDGE);
        }
    }

    /// The next `n` acknowledgements' sequence numbers, skipping input.
    fn acked_output(&mut self, n: usize) -> Vec<i64> {
        let mut seqs = Vec::new();
        while seqs.len() < n {
            let m = self.recv(WAIT).expect("no acknowledge arrived");
            if m.message_type == types::ACKNOWLEDGE {
                let v: Value = serde_json::from_slice(&m.payload).unwrap();
                assert_eq!(v["AcknowledgedMessageType"], "output_stream_data");
                assert_eq!((m.sequence_number, m.flags), (0, 3));
                seqs.push(v["AcknowledgedMessageSequenceNumber"].as_i64().unwrap());
            }
        }
        seqs
    }
}

#[test]
fn rest_tokens_signatures_and_refusal() {
    let emu = emulator();
    let path = "/v1/control-channel/i-0123456789abcdef0";
    let (status, xml) = post(
        &emu,
        &signed(&emu, "POST", path, "", &create_body(false), SECRET),
    );
    assert_eq!(status, 201);
    assert!(xml.starts_with("<CreateControlChannelResponse><MessageSchemaVersion>1.0</MessageSchemaVersion><TokenValue>"), "{xml}");
    assert_eq!(token_of(&xml).len(), 64);
    let (status, xml) = post(
        &emu,
        &signed(&emu, "POST", path, "", &create_body(false), "wrong"),
    );
    assert_eq!(status, 403);
    assert!(xml.contains("<InvalidSignatureException>"), "{xml}");
    emu.refuse_control_channel(Some(400));
    let (status, xml) = post(
        &emu,
        &signed(&emu, "POST", path, "", &create_body(false), SECRET),
    );
    assert_eq!(status, 400);
    assert!(xml.contains("<AccessDeniedException>"), "{xml}");
    emu.refuse_control_channel(None);
    // A data channel only for a session that was started, and its body needs ClientId.
    let (status, _) = post(
        &emu,
        &signed(
            &emu,
            "POST",
            "/v1/data-channel/nope",
            "",
            &create_body(true),
            SECRET,
        ),
    );
    assert_eq!(status, 400);
    let s = emu.open_session(SessionSpec::standard_stream());
    let data = format!("/v1/data-channel/{}", s.id());
    let (status, _) = post(
        &emu,
        &signed(&emu, "POST", &data, "", &create_body(false), SECRET),
    );
    assert_eq!(status, 400, "no ClientId");
    let (status, xml) = post(
        &emu,
        &signed(&emu, "POST", &data, "", &create_body(true), SECRET),
    );
    assert_eq!(status, 201);
    assert!(xml.starts_with("<CreateDataChannelResponse>"), "{xml}");
    assert_eq!(emu.signature_failures().len(), 1);
}

#[test]
fn websocket_upgrade_checks_signature_query_and_token() {
    let emu = emulator();
    let path = "/v1/control-channel/i-0123456789abcdef0";
    let q = "role=subscribe&stream=input";
    let err = upgrade(&emu, path, q, "wrong")
        .err()
        .expect("bad signature refused");
    assert!(err.contains("403"), "{err}");
    let err = upgrade(&emu, path, "role=publish_subscribe", SECRET)
        .err()
        .unwrap();
    assert!(err.contains("400"), "{err}");
    // The signature covers the query: the verifier sees what the client signed.
    let mut conn = upgrade(&emu, path, q, SECRET).unwrap();
    conn.send_text(r#"{"TokenValue":"never-issued"}"#).unwrap();
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline && conn.poll().is_ok() {}
    assert!(!emu.mgs_connected());
    assert!(
        emu.mgs_errors().iter().any(|e| e.contains("never-issued")),
        "{:?}",
        emu.mgs_errors()
    );
    // A good channel answers pings (the agent's keep-alive).
    let mut agent = FakeAgent::control(&emu);
    agent.conn.send_ping(b"keepalive").unwrap();
    assert!(agent.conn.wait_pong(WAIT));
    assert_eq!(emu.control_open_message().unwrap()["PlatformType"], "linux");
    assert_eq!(emu.mgs_connects(), 1);
}

#[test]
fn control_channel_job_round_trip_and_acks() {
    let emu = emulator();
    // Queued while the channel is down, delivered once it is up.
    let job = emu.send_agent_job(&aws_run_shell_script_payload("cmd-1", &["echo hi"], 60));
    assert_eq!(job, "aws.ssm.cmd-1.i-0123456789abcdef0");
    let mut agent = FakeAgent::control(&emu);
    let (m, v) = agent.json(types::AGENT_JOB);
    assert_eq!(
        (v["JobId"].as_str(), v["Topic"].as_str()),
        (Some(job.as_str()), Some("aws.ssm.sendCommand"))
    );
    assert_eq!(v["SchemaVersion"], 1);
    let content: Value = serde_json::from_str(v["Content"].as_str().unwrap()).unwrap();
    assert_eq!(content["CommandId"], "cmd-1");
    assert_eq!((m.sequence_number, m.flags, m.payload_type), (0, 0, 0));

    let ack = json!({"jobId": job, "acknowledgedMessageId": m.message_id,
        "createdDate": "2024-01-01T00:00:00.000Z", "statusCode": "200", "errorMessage": "Successful"});
    agent.send(AgentMessage::new(
        types::AGENT_JOB_ACK,
        ack.to_string().into_bytes(),
    ));
    let got = emu.wait_job_ack(&job, WAIT).unwrap();
    assert_eq!(
        (got.status_code.as_str(), got.error_message.as_str()),
        ("200", "Successful")
    );

    let r1 = agent.reply(&job, "InProgress");
    let (_, a1) = agent.json(types::AGENT_JOB_REPLY_ACK);
    assert_eq!(
        a1,
        json!({"jobId": job, "acknowledgedMessageId": r1.message_id})
    );
    // Withheld acks: the reply is recorded, nothing comes back; a re-send is a duplicate.
    emu.set_reply_acks(AckPolicy::Withhold);
    let r2 = agent.reply(&job, "Success");
    assert!(
        agent.recv(Duration::from_millis(300)).is_none(),
        "no ack while withheld"
    );
    emu.set_reply_acks(AckPolicy::Ack);
    agent.send(r2.clone());
    let (_, a2) = agent.json(types::AGENT_JOB_REPLY_ACK);
    assert_eq!(a2["acknowledgedMessageId"], r2.message_id.as_str());
    let fin = emu.wait_job_final(&job, WAIT).unwrap();
    assert_eq!(
        (fin.document_status(), fin.reply_id.as_str()),
        ("Success", r2.message_id.as_str())
    );
    let statuses: Vec<String> = emu
        .job_replies(&job)
        .iter()
        .map(|r| r.document_status().to_string())
        .collect();
    assert_eq!(statuses, ["InProgress", "Success"]);
    assert_eq!(emu.duplicate_job_replies(), vec![r2.message_id.clone()]);

    let cancel = emu.send_agent_cancel(&job);
    let (_, c) = agent.json(types::AGENT_JOB);
    assert_eq!(c["JobId"], cancel.as_str());
    assert_eq!(c["Topic"], "aws.ssm.cancelCommand");
    assert_eq!(c["Content"], json!({"CancelMessageId": job}).to_string());

    // Session completion is acknowledged; channel_closed and a drop reach the agent.
    let done = json!({"SchemaVersion": 1, "TaskId": "sess-1", "Topic": "agent_task_complete",
        "FinalTaskStatus": "Success", "RetryNumber": 1});
    let tc = AgentMessage::new(types::AGENT_TASK_COMPLETE, done.to_string().into_bytes());
    agent.send(tc.clone());
    let (_, ta) = agent.json(types::AGENT_TASK_ACKNOWLEDGE);
    assert_eq!(
        ta,
        json!({"SchemaVersion": 1, "MessageId": tc.message_id, "TaskId": "sess-1",
        "Topic": "agent_task_complete"})
    );
    assert_eq!(
        emu.wait_task_complete("sess-1", WAIT).unwrap().final_status,
        "Success"
    );
    emu.send_channel_closed("sess-1");
    let (_, cc) = agent.json(types::CHANNEL_CLOSED);
    assert_eq!(
        (cc["SessionId"].as_str(), cc["MessageType"].as_str()),
        (Some("sess-1"), Some("channel_closed"))
    );
    assert!(emu.mgs_errors().is_empty(), "{:?}", emu.mgs_errors());
    emu.drop_control_channel();
    assert!(agent.recv(WAIT).is_none(), "the connection ends");
    assert!(!emu.mgs_connected());
    // Reconnecting works and counts.
    let _again = FakeAgent::control(&emu);
    assert_eq!(emu.mgs_connects(), 2);
}

/// Starts `spec` and plays the agent up to an open data channel.
fn session_with_agent(emu: &Emulator, spec: SessionSpec) -> (Session, FakeAgent, FakeAgent, Value) {
    let mut control = FakeAgent::control(emu);
    let session = emu.open_session(spec);
    let (_, v) = control.json(types::INTERACTIVE_SHELL);
    let task: Value = serde_json::from_str(v["Content"].as_str().unwrap()).unwrap();
    assert_eq!(task["SessionId"], session.id());
    let data = FakeAgent::data(emu, session.id());
    assert!(session.wait_connected(WAIT));
    (session, control, data, task)
}

#[test]
fn session_client_acks_orders_and_retransmits() {
    let emu = emulator();
    let (session, _control, mut agent, task) =
        session_with_agent(&emu, SessionSpec::standard_stream());
    assert_eq!(task["DocumentContent"]["sessionType"], "Standard_Stream");
    assert_eq!(task["DocumentContent"]["schemaVersion"], "1.0");
    assert_eq!(session.open_message().unwrap()["ClientId"], "");
    agent.state(session.id(), "Connected");

    // Input 0 is the terminal size; unacked (no PTY yet) it comes again, same id, ≥ 200 ms later.
    let size = agent.input();
    assert_eq!(
        (size.sequence_number, size.flags, size.payload_type),
        (0, FLAG_SYN, pt::SIZE)
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&size.payload).unwrap(),
        json!({"cols": 80, "rows": 24})
    );
    let t0 = Instant::now();
    let again = agent.input();
    assert!(
        t0.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(
        (again.sequence_number, &again.message_id),
        (0, &size.message_id)
    );
    agent.ack_input(&again);
    session.send_input(b"echo hi\r");
    let mut input = agent.input();
    while input.sequence_number == 0 {
        input = agent.input(); // a retransmission racing the ack
    }
    assert_eq!(
        (
            input.sequence_number,
            input.payload_type,
            &input.payload[..]
        ),
        (1, pt::OUTPUT, &b"echo hi\r"[..])
    );
    agent.ack_input(&input);
    assert!(session.wait_input_acked(WAIT));

    // Output out of order and duplicated: every frame acked, delivered once, in order.
    agent.output(1, pt::OUTPUT, b" world");
    agent.output(0, pt::OUTPUT, b"hello");
    agent.output(1, pt::OUTPUT, b" world");
    let mut acked = agent.acked_output(3);
    acked.sort();
    assert_eq!(acked, [0, 1, 1]);
    assert_eq!(
        session.read_output_until("hello world", WAIT).unwrap(),
        "hello world"
    );
    let stats = session.stats();
    assert_eq!(
        (
            stats.output_duplicates,
            stats.output_out_of_order,
            stats.output_expected
        ),
        (1, 1, 2)
    );
    assert!(stats.input_retransmissions >= 1);

    // Injected loss: every 2nd frame is dropped once, the agent's re-send is taken.
    session.drop_every_nth_output(2);
    agent.output(2, pt::OUTPUT, b"A");
    let dropped = agent.output(3, pt::OUTPUT, b"B");
    assert_eq!(agent.acked_output(1), [2]);
    assert!(
        agent.recv(Duration::from_millis(200)).is_none(),
        "3 was not acked"
    );
    agent.send(dropped);
    assert_eq!(agent.acked_output(1), [3]);
    assert_eq!(session.dropped_output(), [3]);
    assert!(session.read_output_until("worldAB", WAIT).is_ok());

    session.resize(120, 40);
    let r = agent.input();
    assert_eq!((r.sequence_number, r.payload_type), (2, pt::SIZE));
    session.pause_publication();
    assert_eq!(agent.expect(types::PAUSE_PUBLICATION).payload, b"{}");
    session.send_channel_closed();
    assert_eq!(
        agent.json(types::CHANNEL_CLOSED).1["SessionId"],
        session.id()
    );
    agent.state(session.id(), "Terminating");
    agent.conn.abort();
    assert!(session.wait_closed(WAIT));
    assert_eq!(session.session_state(), ["Connected", "Terminating"]);
    assert!(emu.mgs_errors().is_empty(), "{:?}", emu.mgs_errors());
}

#[test]
fn handshake_holds_input_and_separate_streams_arrive() {
    let emu = emulator();
    let spec = SessionSpec::non_interactive_commands("ls /nope", true);
    let (session, _control, mut agent, task) = session_with_agent(&emu, spec);
    assert_eq!(
        task["DocumentContent"]["properties"]["linux"]["separateOutputStream"],
        true
    );
    session.send_input(&[3]);
    assert!(
        agent.recv(Duration::from_millis(300)).is_none(),
        "input waits for the handshake"
    );
    let req = json!({"AgentVersion": "0.1.0", "RequestedClientActions": [
        {"ActionType": "SessionType", "ActionParameters": {"SessionType": "NonInteractiveCommands", "Properties": null}}]});
    agent.output(0, pt::HANDSHAKE_REQUEST, req.to_string().as_bytes());
    let resp = agent.input();
    assert_eq!(
        (resp.sequence_number, resp.payload_type),
        (0, pt::HANDSHAKE_RESPONSE)
    );
    let v: Value = serde_json::from_slice(&resp.payload).unwrap();
    assert_eq!(v["ClientVersion"], session::DEFAULT_CLIENT_VERSION);
    assert_eq!(v["ProcessedClientActions"][0]["ActionStatus"], 1);
    agent.ack_input(&resp);
    agent.output(
        1,
        pt::HANDSHAKE_COMPLETE,
        br#"{"HandshakeTimeToComplete":1000,"CustomerMessage":""}"#,
    );
    let held = agent.input();
    assert_eq!(
        (held.sequence_number, held.payload_type, &held.payload[..]),
        (1, pt::OUTPUT, &[3u8][..])
    );
    agent.ack_input(&held);
    agent.output(2, pt::STDERR, b"ls: /nope: No such file\n");
    agent.output(3, pt::EXIT_CODE, b"EXIT_CODE: 2");
    assert_eq!(session.wait_exit_code(WAIT), Some(2));
    assert_eq!(session.stderr(), b"ls: /nope: No such file\n");
    assert!(session.handshake_complete().is_some());
    assert!(emu.mgs_errors().is_empty(), "{:?}", emu.mgs_errors());
}

#[test]
fn port_stream_reads_and_writes_bytes() {
    let emu = emulator();
    let spec = SessionSpec::port(22, None, false);
    let (session, _control, mut agent, task) = session_with_agent(&emu, spec);
    assert_eq!(
        task["DocumentContent"]["properties"],
        json!({"portNumber": "22"})
    );
    let req = json!({"RequestedClientActions": [{"ActionType": "SessionType",
        "ActionParameters": {"SessionType": "Port", "Properties": {"portNumber": "22"}}}]});
    agent.output(0, pt::HANDSHAKE_REQUEST, req.to_string().as_bytes());
    let resp = agent.input();
    agent.ack_input(&resp);
    agent.output(1, pt::HANDSHAKE_COMPLETE, b"{}");
    let mut stream = session.port_stream();
    stream.write_all(b"SSH-2.0-test\r\n").unwrap();
    let m = agent.input();
    assert_eq!(&m.payload[..], b"SSH-2.0-test\r\n");
    agent.ack_input(&m);
    agent.output(2, pt::OUTPUT, b"SSH-2.0-server\r\n");
    stream.set_read_timeout(Some(WAIT));
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"SSH-2.0-server\r\n");
    stream.set_read_timeout(Some(Duration::from_millis(100)));
    assert!(stream.read(&mut buf).is_err(), "nothing more yet");
    stream.terminate();
    let flag = agent.input();
    assert_eq!(
        (flag.payload_type, &flag.payload[..]),
        (pt::FLAG, &[0, 0, 0, 2][..])
    );
}

/// `TrentService.Decrypt` with `body`, signed for `service`; (status, JSON answer).
fn kms_decrypt(emu: &Emulator, body: &Value, service: &str) -> (u16, Value) {
    let mut req = Request {
        method: "POST".into(),
        path: "/".into(),
        query: String::new(),
        headers: vec![
            ("Host".into(), host(emu)),
            ("Content-Type".into(), "application/x-amz-json-1.1".into()),
            ("X-Amz-Target".into(), targets::KMS_DECRYPT.into()),
        ],
        body: body.to_string().into_bytes(),
    };
    let now = SystemTime::now();
    sign_for_tests(
        &mut req,
        KEY,
        SECRET,
        Some("tok"),
        "us-east-1",
        service,
        now,
    );
    let (status, text) = post(emu, &req);
    (status, serde_json::from_str(&text).unwrap())
}

/// The next input message numbered above `seq` (retransmissions of earlier ones are skipped).
fn input_after(agent: &mut FakeAgent, seq: i64) -> AgentMessage {
    loop {
        let m = agent.input();
        if m.sequence_number > seq {
            return m;
        }
    }
}

/// The agent's side of a KMS-encrypted shell, built from the emulator's cipher primitives with
/// the key halves the agent's way round: the client's data key reaches the agent only through
/// the emulator's KMS, and the challenge, input and output all cross the wire encrypted.
#[test]
fn kms_encrypted_session_round_trip() {
    let emu = emulator();
    let spec = SessionSpec::standard_stream().kms_key_id("alias/ssm-test");
    let (session, _control, mut agent, task) = session_with_agent(&emu, spec);
    assert_eq!(
        task["DocumentContent"]["inputs"]["kmsKeyId"],
        "alias/ssm-test"
    );
    session.send_input(b"echo hi\r");
    let challenge = cipher::b64(b"0123456789abcdef");
    let req = json!({"AgentVersion": "0.1.0", "RequestedClientActions": [
        {"ActionType": "SessionType", "ActionParameters": {"SessionType": "Standard_Stream", "Properties": null}},
        {"ActionType": "KMSEncryption", "ActionParameters": {"KMSKeyId": "alias/ssm-test", "Challenge": challenge}}]});
    agent.output(0, pt::HANDSHAKE_REQUEST, req.to_string().as_bytes());
    let resp = agent.input();
    assert_eq!(
        (resp.sequence_number, resp.payload_type),
        (0, pt::HANDSHAKE_RESPONSE)
    );
    agent.ack_input(&resp);
    let v: Value = serde_json::from_slice(&resp.payload).unwrap();
    let actions = v["ProcessedClientActions"].as_array().unwrap();
    assert_eq!(actions.len(), 2, "{v}");
    assert_eq!(actions[0]["ActionStatus"], 1);
    let kms_action = &actions[1];
    assert_eq!(
        (
            &kms_action["ActionType"],
            &kms_action["ActionStatus"],
            &kms_action["Error"]
        ),
        (&json!("KMSEncryption"), &json!(1), &json!(""))
    );
    let result = &kms_action["ActionResult"];
    let blob = result["KMSCipherTextKey"].as_str().unwrap();
    let blob_bytes = cipher::unb64(blob).unwrap();
    assert_eq!(
        result["KMSCipherTextHash"],
        cipher::b64(&Sha256::digest(&blob_bytes))
    );
    assert_eq!(result["ChallengeAcknowledgement"], true);
    assert!(!session.encrypted(), "not before HandshakeComplete");

    // KMS: signed for kms only; the key comes back only for the session's exact context.
    let context = json!({"aws:ssm:SessionId": session.id(),
        "aws:ssm:TargetId": "i-0123456789abcdef0", "aws:ssm:RandomChallenge": challenge});
    let good =
        json!({"CiphertextBlob": blob, "KeyId": "alias/ssm-test", "EncryptionContext": context});
    let (status, _) = kms_decrypt(&emu, &good, "ssmmessages");
    assert_eq!(status, 403);
    let mut no_challenge = good.clone();
    no_challenge["EncryptionContext"]
        .as_object_mut()
        .unwrap()
        .remove("aws:ssm:RandomChallenge");
    let (status, err) = kms_decrypt(&emu, &no_challenge, "kms");
    assert_eq!(
        (status, &err["__type"]),
        (400, &json!("InvalidCiphertextException"))
    );
    assert!(
        err["message"].as_str().unwrap().contains("RandomChallenge"),
        "{err}"
    );
    let mut other_key = good.clone();
    other_key["KeyId"] = json!("alias/other");
    let (status, err) = kms_decrypt(&emu, &other_key, "kms");
    assert_eq!(
        (status, &err["__type"]),
        (400, &json!("IncorrectKeyException"))
    );
    let (status, ok) = kms_decrypt(&emu, &good, "kms");
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["KeyId"], "alias/ssm-test");
    let data_key = cipher::unb64(ok["Plaintext"].as_str().unwrap()).unwrap();
    assert_eq!(data_key.len(), 64);
    let decrypts = emu.kms_decrypts();
    let outcomes: Vec<bool> = decrypts.iter().map(KmsDecrypt::succeeded).collect();
    assert_eq!(outcomes, [false, false, true], "the 403 never reached KMS");
    assert_eq!(decrypts[2].encryption_context(), &context);
    assert_eq!(emu.count(targets::KMS_DECRYPT), 4);

    // The encryption challenge: sealed by the agent, returned sealed by the client.
    let (agent_half, client_half) = data_key.split_at(32);
    let mut agent_cipher = cipher::Cipher::new(
        agent_half.try_into().unwrap(),
        client_half.try_into().unwrap(),
    );
    let secret = [0x5au8; 64];
    let request = json!({"Challenge": cipher::b64(&agent_cipher.encrypt(&secret))});
    agent.output(1, pt::ENC_CHALLENGE_REQUEST, request.to_string().as_bytes());
    let answer = input_after(&mut agent, 0);
    assert_eq!(
        (answer.sequence_number, answer.payload_type),
        (1, pt::ENC_CHALLENGE_RESPONSE)
    );
    agent.ack_input(&answer);
    let answer: Value = serde_json::from_slice(&answer.payload).unwrap();
    let sealed = cipher::unb64(answer["Challenge"].as_str().unwrap()).unwrap();
    assert_eq!(agent_cipher.decrypt(&sealed).unwrap(), secret);
    assert!(
        agent.recv(Duration::from_millis(300)).is_none(),
        "input still waits for HandshakeComplete"
    );

    // After HandshakeComplete: the size stays plain, keystrokes and output are encrypted.
    let complete = json!({"HandshakeTimeToComplete": 1000,
        "CustomerMessage": "This session is encrypted using AWS KMS."});
    agent.output(2, pt::HANDSHAKE_COMPLETE, complete.to_string().as_bytes());
    let size = input_after(&mut agent, 1);
    assert_eq!((size.sequence_number, size.payload_type), (2, pt::SIZE));
    assert_eq!(&size.payload[..], br#"{"cols":80,"rows":24}"#);
    agent.ack_input(&size);
    let keys = input_after(&mut agent, 2);
    assert_eq!((keys.sequence_number, keys.payload_type), (3, pt::OUTPUT));
    agent.ack_input(&keys);
    assert_eq!(keys.payload.len(), 12 + 8 + 16);
    assert_eq!(agent_cipher.decrypt(&keys.payload).unwrap(), b"echo hi\r");
    agent.output(3, pt::OUTPUT, &agent_cipher.encrypt(b"hi\r\n"));
    assert_eq!(session.read_output_until("hi\r\n", WAIT).unwrap(), "hi\r\n");
    assert!(session.encrypted());
    assert!(emu.mgs_errors().is_empty(), "{:?}", emu.mgs_errors());

    // Plaintext output in an encrypted session is an agent bug: reported, not delivered.
    agent.output(4, pt::OUTPUT, b"leak");
    while agent.acked_output(1) != [4] {} // the ack of output 3 may still be unread
    let errors = emu.mgs_errors();
    assert!(
        errors.len() == 1 && errors[0].contains("output 4 (PayloadType 1)"),
        "{errors:?}"
    );
    assert_eq!(session.output(), b"hi\r\n");
}

#[test]
fn kms_action_without_challenge_or_key_is_checked() {
    let emu = emulator();
    // An older agent: no Challenge, so none in the context and no acknowledgement.
    let spec = SessionSpec::interactive_commands("top").kms_key_id("k-1");
    let (session, _control, mut agent, _) = session_with_agent(&emu, spec);
    let req = json!({"RequestedClientActions": [
        {"ActionType": "SessionType", "ActionParameters": {"SessionType": "InteractiveCommands"}},
        {"ActionType": "KMSEncryption", "ActionParameters": {"KMSKeyId": "k-1"}}]});
    agent.output(0, pt::HANDSHAKE_REQUEST, req.to_string().as_bytes());
    let resp: Value = serde_json::from_slice(&agent.input().payload).unwrap();
    let result = &resp["ProcessedClientActions"][1]["ActionResult"];
    assert_eq!(result["ChallengeAcknowledgement"], false);
    let body = json!({"CiphertextBlob": result["KMSCipherTextKey"], "KeyId": "k-1",
        "EncryptionContext": {"aws:ssm:SessionId": session.id(), "aws:ssm:TargetId": "i-0123456789abcdef0"}});
    assert_eq!(kms_decrypt(&emu, &body, "kms").0, 200);
    // HandshakeComplete without the challenge exchange is flagged.
    agent.output(1, pt::HANDSHAKE_COMPLETE, b"{}");
    assert!(emu.wait_until(WAIT, |st| !st.mgs().errors.is_empty()));
    assert!(
        emu.mgs_errors()[0].contains("without an EncChallengeRequest"),
        "{:?}",
        emu.mgs_errors()
    );

    // A session without a key: the agent must not ask; when it does, the action is still
    // answered (a client cannot tell), but the mismatch is reported.
    let (_, _control2, mut agent2, _) = session_with_agent(&emu, SessionSpec::standard_stream());
    let req = json!({"RequestedClientActions": [
        {"ActionType": "KMSEncryption", "ActionParameters": {"KMSKeyId": ""}}]});
    agent2.output(0, pt::HANDSHAKE_REQUEST, req.to_string().as_bytes());
    let mut resp = agent2.input();
    while resp.payload_type != pt::HANDSHAKE_RESPONSE {
        resp = agent2.input(); // the terminal size goes out at once without a key
    }
    let resp: Value = serde_json::from_slice(&resp.payload).unwrap();
    let action = &resp["ProcessedClientActions"][0];
    assert_eq!(action["ActionStatus"], 2);
    assert!(
        action["Error"]
            .as_str()
            .unwrap()
            .contains("without a KMSKeyId"),
        "{action}"
    );
    let errors = emu.mgs_errors();
    assert!(
        errors.iter().any(|e| e.contains("asks for KMSEncryption")),
        "{errors:?}"
    );
}
