//! Alarms across nodes: the KV bucket `roost-alarms` holds every object's
//! next alarm (`{class}.{id}` → its name and time), written next to the
//! owner's local alarm index (and like it, never later than the object's
//! own `_roost_alarm` row). Every node sweeps the bucket each TTL: an alarm
//! that is due on an object no live node owns makes this node take the
//! object over, and the rebuilt object's alarm row is scheduled here — so
//! an alarm outlives the node that set it.

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::{Cluster, ClusterConfig};
use crate::id::ObjectKey;
use crate::runtime::Runtime;

const BUCKET: &str = "roost-alarms";

#[derive(Serialize, Deserialize)]
struct Due {
    name: String,
    at_ms: i64,
}

fn kv_key(key: &ObjectKey) -> String {
    format!("{}.{}", key.class, key.id)
}

pub(super) async fn ensure_bucket(
    js: &jetstream::Context,
    config: &ClusterConfig,
) -> anyhow::Result<kv::Store> {
    super::ensure_kv(js, BUCKET, std::time::Duration::ZERO, config.replicas).await
}

impl Cluster {
    /// Records (or with `None` forgets) the object's next alarm in the
    /// cluster-wide index.
    pub(crate) async fn index_alarm(
        &self,
        key: &ObjectKey,
        at_ms: Option<i64>,
    ) -> Result<(), String> {
        let result = match at_ms {
            Some(at_ms) => {
                let value = serde_json::to_vec(&Due {
                    name: key.name.clone(),
                    at_ms,
                })
                .map_err(|e| e.to_string())?;
                self.0
                    .alarms
                    .put(kv_key(key), value.into())
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            None => self
                .0
                .alarms
                .delete(kv_key(key))
                .await
                .map_err(|e| e.to_string()),
        };
        result.map_err(|e| format!("cannot index the alarm in the cluster: {e}"))
    }

    /// Takes over every object whose alarm is due and whose owner is gone.
    pub(super) async fn sweep_alarms(&self, runtime: &Runtime) {
        let Ok(keys) = self.0.alarms.keys().await else {
            return;
        };
        let keys: Vec<String> = keys.filter_map(|k| async { k.ok() }).collect().await;
        let now = runtime.clock().now_ms();
        for k in keys {
            let Some((class, _)) = k.split_once('.') else {
                continue;
            };
            let Ok(Some(bytes)) = self.0.alarms.get(&k).await else {
                continue;
            };
            let Ok(due) = serde_json::from_slice::<Due>(&bytes) else {
                continue;
            };
            if due.at_ms > now {
                continue;
            }
            let Ok(key) = ObjectKey::new(class, &due.name) else {
                continue;
            };
            if runtime.registry().get(class).is_none() || self.owns(&key.id) {
                continue;
            }
            if let Ok(super::owner::Route::Local) = self.route(&key, runtime).await {
                tracing::info!(class, id = %key.id, "cluster: took an object over for its due alarm");
            }
        }
    }
}

/// The alarm row of an object's file, if it has one.
pub(super) fn alarm_of_file(path: &std::path::Path) -> Option<i64> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    conn.query_row("SELECT at_ms FROM _roost_alarm WHERE k = 1", [], |r| {
        r.get(0)
    })
    .ok()
}
