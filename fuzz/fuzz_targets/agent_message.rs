//! MGS frames come from the network: decoding arbitrary bytes must fail cleanly, never panic,
//! and whatever decodes must survive an encode/decode round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssm_lite::mgs::message::AgentMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = AgentMessage::decode(data) {
        let again = AgentMessage::decode(&message.encode()).expect("re-encoded frame decodes");
        assert_eq!(again, message);
    }
});
