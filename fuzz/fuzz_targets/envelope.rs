#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = roost_protocol::ClientFrame::decode(text);
        let _ = roost_protocol::ServerFrame::decode(text);
    }
});
