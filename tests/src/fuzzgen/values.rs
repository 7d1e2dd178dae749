//! Leaf generators shared by the others: `Any` values (shallow, or nested
//! thousands deep as raw bytes), JSON text, clocks and client ids biased
//! towards edge values.

use std::sync::Arc;

use proptest::prelude::*;
use yrs::{Any, Number};

use super::string;

/// A shallow `Any` value (at most `depth` levels).
pub fn any_value(depth: u32) -> BoxedStrategy<Any> {
    let leaf = prop_oneof![
        Just(Any::Null),
        Just(Any::Undefined),
        any::<bool>().prop_map(Any::Bool),
        any::<i64>().prop_map(|i| Any::Number(Number::Int(i))),
        (-1000i64..1000).prop_map(|i| Any::Number(Number::Int(i))),
        any::<f64>().prop_map(|f| Any::Number(Number::Float(f))),
        ".{0,12}".prop_map(|s| Any::String(Arc::from(s.as_str()))),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(|b| Any::Buffer(Arc::from(b))),
    ];
    leaf.prop_recursive(depth, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| Any::Array(Arc::from(v))),
            prop::collection::hash_map("[a-z]{0,4}", inner, 0..4)
                .prop_map(|m| Any::Map(Arc::new(m))),
        ]
    })
    .boxed()
}

/// A chain of `depth` nested arrays or maps around a leaf, as lib0 `Any`
/// bytes, encoded with a loop.
#[derive(Debug, Clone)]
pub struct DeepAny {
    /// Container kinds from the outside in (true = map).
    pub maps: Vec<bool>,
}

impl DeepAny {
    pub fn encode(&self, out: &mut Vec<u8>) {
        for &map in &self.maps {
            if map {
                out.extend_from_slice(&[118, 1]);
                string(out, "k");
            } else {
                out.extend_from_slice(&[117, 1]);
            }
        }
        out.extend_from_slice(&[119, 1, b'x']);
    }
}

pub fn deep_any() -> impl Strategy<Value = DeepAny> {
    prop_oneof![
        prop::collection::vec(any::<bool>(), 0..70),
        prop::collection::vec(any::<bool>(), 60..400),
        (2000usize..6000).prop_map(|n| vec![false; n]),
    ]
    .prop_map(|maps| DeepAny { maps })
}

/// JSON text for embeds and formats: shallow values, or brackets nested deep.
pub fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any_value(3).prop_map(|a| {
            let mut s = String::new();
            a.to_json(&mut s);
            s
        }),
        (0usize..300, any::<bool>()).prop_map(|(n, obj)| {
            if obj {
                format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n))
            } else {
                format!("{}1{}", "[".repeat(n), "]".repeat(n))
            }
        }),
        ".{0,16}",
    ]
}

/// A clock: usually small, sometimes at the edges of `u32` and `i32`.
pub fn clock() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => 0u32..20,
        1 => Just(i32::MAX as u32),
        1 => Just(u32::MAX),
        1 => (i32::MAX as u32 - 8)..=(i32::MAX as u32 + 8),
        1 => any::<u32>(),
    ]
}

/// A client id for raw bytes: usually small, sometimes past 53 bits.
pub fn client() -> impl Strategy<Value = u64> {
    prop_oneof![8 => 0u64..4, 1 => 0u64..(1 << 53), 1 => any::<u64>()]
}

/// A client id yrs itself can hold (53 bits; yrs asserts it).
pub fn yrs_client() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..4, 1 => 0u64..(1 << 53)]
}
