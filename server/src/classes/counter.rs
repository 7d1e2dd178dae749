//! `counter`: the smallest real object, and the one the benchmarks use.
//! `increment({"by": n})` (default 1) → the new value; `get()` → the value;
//! `increment_later({"by": n, "delay_ms": ms})` → `{"scheduled_ms": t}`: the
//! object's alarm applies the increment at `t` (several may be pending).

use serde_json::{json, Value};

use crate::{AlarmInfo, Ctx, DurableObject, ObjectError};

/// Longest `delay_ms` accepted (a year).
const MAX_DELAY_MS: u64 = 365 * 24 * 3600 * 1000;

pub(crate) struct Counter {
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
            "increment_later" => {
                let by = by_arg(&args)?;
                let delay = args
                    .get("delay_ms")
                    .and_then(Value::as_u64)
                    .filter(|d| *d <= MAX_DELAY_MS)
                    .ok_or_else(|| {
                        ObjectError::bad_args("`delay_ms` must be an integer in 0..=31536000000")
                    })?;
                let due = ctx.now_ms() + delay as i64;
                let mut pending: Vec<(i64, i64)> =
                    ctx.storage().get("pending")?.unwrap_or_default();
                pending.push((due, by));
                ctx.storage().put("pending", &pending)?;
                let earliest = pending.iter().map(|(t, _)| *t).min().unwrap_or(due);
                if ctx.get_alarm()? != Some(earliest) {
                    ctx.set_alarm(earliest)?;
                }
                Ok(json!({ "scheduled_ms": due }))
            }
            other => Err(ObjectError::UnknownMethod(other.to_owned())),
        }
    }

    async fn alarm(&mut self, ctx: &mut Ctx, _info: AlarmInfo) -> Result<(), ObjectError> {
        let now = ctx.now_ms();
        let pending: Vec<(i64, i64)> = ctx.storage().get("pending")?.unwrap_or_default();
        let (due, later): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(t, _)| *t <= now);
        let add: i64 = due.iter().map(|(_, by)| *by).sum();
        let next = self
            .value
            .checked_add(add)
            .ok_or_else(|| ObjectError::app("counter would overflow"))?;
        ctx.storage().put("value", &next)?;
        ctx.storage().put("pending", &later)?;
        if let Some(earliest) = later.iter().map(|(t, _)| *t).min() {
            ctx.set_alarm(earliest)?;
        }
        self.value = next;
        Ok(())
    }
}
