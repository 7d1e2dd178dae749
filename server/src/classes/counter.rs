//! `counter`: the smallest real object, and the one the benchmarks use.
//! `increment({"by": n})` (default 1) → the new value; `get()` → the value.

use serde_json::{json, Value};

use crate::{Ctx, DurableObject, ObjectError};

pub struct Counter {
    value: i64,
}

fn by_arg(args: &Value) -> Result<i64, ObjectError> {
    match args {
        Value::Null => Ok(1),
        Value::Object(map) => match map.get("by") {
            None | Some(Value::Null) => Ok(1),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| ObjectError::bad_args("`by` must be an integer")),
        },
        _ => Err(ObjectError::bad_args(
            "args must be an object like {\"by\": 1}",
        )),
    }
}

impl DurableObject for Counter {
    fn new(ctx: &mut Ctx) -> Result<Self, ObjectError> {
        let value = ctx.storage().get::<i64>("value")?.unwrap_or(0);
        Ok(Counter { value })
    }

    async fn call(
        &mut self,
        ctx: &mut Ctx,
        method: &str,
        args: Value,
    ) -> Result<Value, ObjectError> {
        match method {
            "increment" => {
                let by = by_arg(&args)?;
                let next = self
                    .value
                    .checked_add(by)
                    .ok_or_else(|| ObjectError::bad_args("counter would overflow"))?;
                ctx.storage().put("value", &next)?;
                self.value = next;
                Ok(json!(next))
            }
            "get" => Ok(json!(self.value)),
            other => Err(ObjectError::UnknownMethod(other.to_owned())),
        }
    }
}
