#![no_main]
use libfuzzer_sys::fuzz_target;
use yrs::sync::protocol::MessageReader;
use yrs::updates::decoder::{Decode, DecoderV1};

// The server decodes every y-protocols frame (and each update inside) before
// anything changes; neither step may panic.
fuzz_target!(|data: &[u8]| {
    let mut decoder = DecoderV1::from(data);
    for msg in MessageReader::new(&mut decoder).take(64) {
        if let Ok(yrs::sync::protocol::Message::Sync(
            yrs::sync::protocol::SyncMessage::Update(u) | yrs::sync::protocol::SyncMessage::SyncStep2(u),
        )) = msg
        {
            let _ = yrs::Update::decode_v1(&u);
        }
    }
});
