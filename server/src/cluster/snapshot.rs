//! Snapshots: an object's SQLite file as of a `seq`, in the JetStream
//! Object Store `roost-snapshots`, named `{class}/{id}/{seq}`.
//!
//! Cluster mode carries most batches as row changes, but some changes the
//! log cannot replay — what a constructor writes in a new object, a schema
//! change, changes the capture could not attribute — and for those the
//! object's whole file goes to the store, and a `snapshot` record naming it
//! is appended to the object's subject (fenced like any record). A
//! rebuild starts from the newest snapshot and replays the batches after
//! it.

use std::path::Path;

use anyhow::Context as _;
use async_nats::jetstream::{self, object_store};
use tokio::io::AsyncReadExt as _;

use super::log::Entry;
use super::{Cluster, ClusterConfig};
use crate::commitlog::LogError;
use crate::id::ObjectKey;

const BUCKET: &str = "roost-snapshots";

pub(super) async fn ensure_store(
    js: &jetstream::Context,
    config: &ClusterConfig,
) -> anyhow::Result<object_store::ObjectStore> {
    if let Ok(store) = js.get_object_store(BUCKET).await {
        return Ok(store);
    }
    js.create_object_store(object_store::Config {
        bucket: BUCKET.into(),
        num_replicas: config.replicas,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .context("creating the roost-snapshots object store")
}

impl Cluster {
    /// Stores the object's committed file as of `seq` and appends its
    /// `snapshot` record; resolves once both are durable. Blocking: for the
    /// actor's thread (`sys::blocking`), after the file was committed.
    pub(crate) fn snapshot_blocking(
        &self,
        key: &ObjectKey,
        seq: u64,
        path: &Path,
    ) -> Result<(), LogError> {
        let handle = tokio::runtime::Handle::current();
        handle.block_on(self.snapshot(key, seq, path))
    }

    async fn snapshot(&self, key: &ObjectKey, seq: u64, path: &Path) -> Result<(), LogError> {
        let fail =
            |e: &dyn std::fmt::Display| LogError::Moved(format!("snapshot failed: {e}; retry"));
        let tmp = path.with_extension(format!("snap-{seq}"));
        let _ = std::fs::remove_file(&tmp);
        let bytes = {
            let conn = rusqlite::Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .map_err(|e| fail(&e))?;
            conn.execute("VACUUM INTO ?1", [tmp.to_string_lossy()])
                .map_err(|e| fail(&e))?;
            let bytes = std::fs::read(&tmp).map_err(|e| fail(&e))?;
            let _ = std::fs::remove_file(&tmp);
            bytes
        };
        let name = format!("{}/{}/{seq}", key.class, key.id);
        self.0
            .snapshots
            .put(name.as_str(), &mut bytes.as_slice())
            .await
            .map_err(|e| fail(&e))?;
        let wait = self.queue(key.id, Entry::Snapshot { seq, name }, None)?;
        wait.await.unwrap_or(Err(LogError::Closed))
    }

    /// Writes the snapshot `name` to `path`.
    pub(super) async fn download(&self, name: &str, path: &Path) -> anyhow::Result<()> {
        let mut object = self
            .0
            .snapshots
            .get(name)
            .await
            .with_context(|| format!("reading snapshot {name}"))?;
        let mut bytes = Vec::new();
        object.read_to_end(&mut bytes).await?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, bytes)?;
        Ok(())
    }
}
