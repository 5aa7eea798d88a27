//! One entry point per fuzz target (`fuzz/fuzz_targets/`), shared with `tests/fuzz_corpus.rs`,
//! which replays every committed seed through the same function in the ordinary test suite.
//! Each feeds arbitrary bytes to the parsers of one kind of untrusted input, the way the agent
//! does. Bad input must be refused with an error, never a panic; where a parser promises more
//! (a round trip), the entry point asserts it, so a broken promise is a crash too.
//! Nothing here runs a command, opens a connection or sleeps.

use crate::aws::http::HttpResponse;
use crate::mgs::message::{AgentMessage, CHANNEL_CLOSED, INTERACTIVE_SHELL};
use crate::session::datachannel::Ack;
use crate::session::smux::{Cmd, Decoder, encode_control, encode_psh};
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant, UNIX_EPOCH};

/// The first byte picks which parser of a target gets the rest, so one target covers all the
/// payloads of one channel and the fuzzer can reach each of them.
fn split_selector(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(s, rest)| (*s, rest))
}

/// Input up to the first newline, and the rest (the rest is empty without a newline).
fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// MGS frames (control and data channels): whatever decodes survives an encode/decode round trip.
pub fn agent_message(data: &[u8]) {
    if let Ok(message) = AgentMessage::decode(data) {
        let again = AgentMessage::decode(&message.encode()).expect("re-encoded frame decodes");
        assert_eq!(again, message);
    }
}

/// smux v1 frames of a multiplexed port session. The input is cut into messages at the places
/// its first byte chooses: the frames decoded must not depend on where the stream was cut, and
/// each re-encodes to the bytes it came from.
pub fn smux_frames(data: &[u8]) {
    let Some((cut, stream)) = split_selector(data) else {
        return;
    };
    let whole = smux_decode(stream, stream.len().max(1));
    let pieces = smux_decode(stream, usize::from(cut) + 1);
    assert_eq!(whole, pieces, "frames depend on how the input was cut");
    let frames = whole.0;
    let encoded: Vec<u8> = frames
        .iter()
        .flat_map(|f| match f.cmd {
            Cmd::Psh => encode_psh(f.stream, &f.data),
            cmd => encode_control(cmd, f.stream),
        })
        .collect();
    let used = stream.get(..encoded.len());
    // An empty PSH re-encodes to nothing (encode_psh sends no frame for no data).
    if frames
        .iter()
        .all(|f| f.cmd != Cmd::Psh || !f.data.is_empty())
    {
        assert_eq!(used, Some(&encoded[..]), "frames re-encode to their input");
    }
}

/// Frames from `stream` pushed `piece` bytes at a time, and whether decoding failed.
fn smux_decode(stream: &[u8], piece: usize) -> (Vec<crate::session::smux::Frame>, bool) {
    let mut decoder = Decoder::default();
    let mut frames = Vec::new();
    for chunk in stream.chunks(piece) {
        decoder.push(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

/// A fixed session data key: the fuzzer cannot find a valid AES-GCM tag by chance anyway, so
/// what this exercises is the framing around decryption.
const FUZZ_DATA_KEY: [u8; crate::session::crypto::DATA_KEY_LEN] =
    [7; crate::session::crypto::DATA_KEY_LEN];

/// Data-channel payloads a client sends (`input_stream_data` and `acknowledge`): the handshake
/// response (and its KMS result), terminal size, acknowledgements, the encryption challenge
/// response and encrypted input.
pub fn data_channel(data: &[u8]) {
    use crate::session::crypto::{SessionCipher, check_challenge_response, parse_kms_result};
    let Some((selector, payload)) = split_selector(data) else {
        return;
    };
    match selector % 5 {
        0 => {
            if let Ok(response) = crate::session::run::handshake_response(payload)
                && let Some(result) = &response.kms_result
            {
                let _ = parse_kms_result(result);
            }
        }
        1 => {
            let _ = crate::session::datachannel::parse_size(payload);
        }
        2 => {
            if let Some(ack) = Ack::parse(payload) {
                let again = serde_json::to_vec(&ack).expect("acks serialise");
                assert_eq!(Ack::parse(&again), Some(ack), "acks round-trip");
            }
        }
        3 => {
            let cipher = SessionCipher::new(&FUZZ_DATA_KEY).expect("a fixed key is a key");
            let _ = check_challenge_response(
                &cipher,
                payload,
                &[0; crate::session::crypto::CHALLENGE_LEN],
            );
        }
        _ => {
            let cipher = SessionCipher::new(&FUZZ_DATA_KEY).expect("a fixed key is a key");
            let _ = cipher.decrypt(payload);
        }
    }
}

/// Session start (`interactive_shell`) and `channel_closed` payloads from the control channel.
pub fn session_task(data: &[u8]) {
    let _ = crate::session::task::parse(data);
    let _ = crate::session::task::closed_session_id(data);
}

/// A send-command payload with its document and parameters, decoded as the engine does before
/// it accepts a command, then every step's shell inputs; and a cancel payload.
pub fn send_command(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::runcommand::payload::parse_cancel(text);
    let Ok((_, document)) = crate::runcommand::engine::parse(text, "fuzz-command") else {
        return;
    };
    for step in document
        .steps
        .iter()
        .filter(|s| s.plugin == "aws:runShellScript")
    {
        for inputs in &step.inputs {
            let _ = crate::document::shell_script_input(inputs);
        }
    }
}

/// A parameter's `allowedPattern` (first line) checked against a supplied value (the rest),
/// through the document parser that compiles and applies it.
pub fn pattern(data: &[u8]) {
    let (pattern, value) = split_line(data);
    let (Ok(pattern), Ok(value)) = (std::str::from_utf8(pattern), std::str::from_utf8(value))
    else {
        return;
    };
    let content = json!({
        "schemaVersion": "2.2",
        "parameters": { "p": { "type": "String", "allowedPattern": pattern } },
        "mainSteps": [{
            "action": "aws:runShellScript",
            "name": "s",
            "inputs": { "runCommand": ["{{ p }}"] },
        }],
    });
    let mut supplied = Map::new();
    supplied.insert("p".into(), Value::String(value.into()));
    let _ = crate::document::parse(&content, &supplied, crate::document::References::Keep);
}

/// Control-channel frames as the agent's Run Command handler receives them, with no engine
/// attached (so a job is answered ClosedProcessor and nothing runs), and the session messages
/// through the parsers the session handler uses.
pub fn mgs_control(data: &[u8]) {
    use crate::mgs::control::{ControlHandler, ControlSender};
    let Ok(message) = AgentMessage::decode(data) else {
        return;
    };
    match message.message_type.as_str() {
        INTERACTIVE_SHELL => return session_task(&message.payload),
        CHANNEL_CLOSED => {
            let _ = crate::session::task::closed_session_id(&message.payload);
            return;
        }
        _ => {}
    }
    let sender = ControlSender::new().expect("a control sender needs only a waker");
    let jobs = crate::mgs::jobs::MgsJobs::new(
        sender.clone(),
        fuzz_spool(),
        Vec::new(),
        crate::runcommand::reply::ReplyBuilder {
            agent: crate::runcommand::reply::AgentInfo::from_config(&Default::default()),
            able_to_open_mgs_connection: Some(true),
            max_encoded_len: None,
        },
    );
    let dispatcher = crate::mgs::Dispatcher {
        jobs,
        sessions: None,
    };
    dispatcher.message(message, &sender);
}

/// An empty reply spool whose directory is gone again: without an engine nothing is spooled,
/// so it never needs one, and no run leaves a directory behind.
fn fuzz_spool() -> crate::state::spool::ReplySpool {
    let dir = std::env::temp_dir().join(format!("ssm-lite-fuzz-spool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("the temporary directory is writable");
    let spool = crate::state::spool::ReplySpool::open(&dir).expect("an empty spool opens");
    let _ = std::fs::remove_dir(&dir);
    spool.0
}

/// The configuration file (JSON over the defaults).
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::Config::from_json(text);
    }
}

/// Timestamps: ISO-8601 from IMDS and the on-prem role-token answer; what parses formats back
/// to the same instant (to the millisecond). The first 8 bytes as milliseconds since the epoch
/// go through every formatter.
pub fn timestamp(data: &[u8]) {
    use crate::timefmt::{amz_date, iso8601_ms, log_stamp, parse_iso8601};
    if let Some(millis) = data.first_chunk::<8>().map(|b| u64::from_le_bytes(*b)) {
        let t = UNIX_EPOCH + Duration::from_millis(millis);
        let _ = (iso8601_ms(t), amz_date(t), log_stamp(t));
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(t) = parse_iso8601(text) {
        let formatted = iso8601_ms(t);
        let since = t
            .duration_since(UNIX_EPOCH)
            .expect("parsed times are after 1970");
        let truncated = UNIX_EPOCH + Duration::from_millis(since.as_millis() as u64);
        // Only 4-digit years parse; an offset can carry a time past year 9999.
        if formatted.len() == "2024-05-01T12:00:00.000Z".len() {
            assert_eq!(parse_iso8601(&formatted), Some(truncated), "{formatted}");
        }
    }
    let _ = crate::onprem::credentials::parse_role_token(
        &serde_json::from_slice(data).unwrap_or(Value::Null),
    );
}

/// IMDS answers: the token (TTL header on the first line, body after), the role listing, the
/// identity document and the role's credential document.
pub fn imds(data: &[u8]) {
    use crate::aws::imds::{first_role, parse_identity_document, parse_role_credentials};
    let Some((selector, answer)) = split_selector(data) else {
        return;
    };
    if selector % 2 == 0 {
        let (ttl, body) = split_line(answer);
        let response = HttpResponse {
            status: 200,
            headers: vec![(
                "X-aws-ec2-metadata-token-ttl-seconds".into(),
                String::from_utf8_lossy(ttl).into_owned(),
            )],
            body: body.to_vec(),
        };
        let _ = crate::aws::imds::parse_token(&response, Instant::now());
        return;
    }
    let Ok(text) = std::str::from_utf8(answer) else {
        return;
    };
    let _ = first_role(text);
    let _ = parse_identity_document(text);
    let _ = parse_role_credentials(text);
}

/// An AWS JSON 1.1 error answer: the first line is the `X-Amzn-ErrorType` header (none when
/// empty), the rest the body; the status comes from the first two bytes.
pub fn aws_error(data: &[u8]) {
    let Some((status, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let (header, body) = split_line(rest);
    let headers = match header {
        [] => Vec::new(),
        h => vec![(
            "X-Amzn-ErrorType".to_string(),
            String::from_utf8_lossy(h).into_owned(),
        )],
    };
    let response = HttpResponse {
        status: u16::from_le_bytes(*status),
        headers,
        body: body.to_vec(),
    };
    let _ = crate::aws::jsonrpc::service_error(&response).to_string();
}
