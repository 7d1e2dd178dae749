//! Property tests for the envelope codec: round trips, and no input panics.

use proptest::prelude::*;
use roost_protocol::{ClientFrame, ErrorCode, ErrorDetail, ServerFrame};
use serde_json::{json, Value};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn call_envelopes_round_trip(id in any::<u64>(), method in "[a-zA-Z_]{1,20}", args in arb_json()) {
        let text = ClientFrame::call(id, &method, args.clone());
        let decoded = ClientFrame::decode(&text);
        prop_assert_eq!(decoded, Ok(ClientFrame::Call { id, method, args }));
    }

    #[test]
    fn server_frames_round_trip(id in any::<u64>(), ok in arb_json(), msg in ".{0,40}", event in "[a-z]{1,10}") {
        let frames = [
            ServerFrame::ok(id, ok.clone()),
            ServerFrame::err(id, ErrorDetail { code: ErrorCode::Application, message: msg }),
            ServerFrame::event(event, ok),
        ];
        for f in frames {
            let decoded = ServerFrame::decode(&f.encode());
            prop_assert_eq!(decoded, Ok(f));
        }
    }

    #[test]
    fn decoding_never_panics(text in ".{0,200}") {
        let _ = ClientFrame::decode(&text);
        let _ = ServerFrame::decode(&text);
    }

    #[test]
    fn json_shaped_garbage_never_panics(v in arb_json(), t in prop_oneof![Just("call"), Just("auth"), Just("x")]) {
        let mut obj = serde_json::Map::new();
        obj.insert("type".into(), json!(t));
        obj.insert("id".into(), v.clone());
        obj.insert("method".into(), v.clone());
        obj.insert("token".into(), v);
        let _ = ClientFrame::decode(&Value::Object(obj).to_string());
    }
}
