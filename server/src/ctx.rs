//! [`Ctx`]: what a handler can reach — its identity, its storage, and other
//! objects. One `Ctx` belongs to one live object and lives in its actor.

use serde_json::Value;

use roost_protocol::ErrorDetail;

use crate::id::{ObjectId, ObjectKey};
use crate::runtime::Runtime;
use crate::storage::Storage;

pub struct Ctx {
    pub(crate) key: ObjectKey,
    pub(crate) storage: Storage,
    pub(crate) runtime: Runtime,
}

impl Ctx {
    pub fn id(&self) -> ObjectId {
        self.key.id
    }

    pub fn name(&self) -> &str {
        &self.key.name
    }

    pub fn class(&self) -> &str {
        &self.key.class
    }

    /// The object's own storage: the KV API and direct SQL.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Calls a method on another object and waits for its (durable) reply.
    /// Calling back into the calling object from there would wait forever;
    /// such cycles end with the callee's error after the mailbox timeout.
    pub async fn call_object(
        &self,
        class: &str,
        name: &str,
        method: &str,
        args: Value,
    ) -> Result<Value, ErrorDetail> {
        let key = ObjectKey::new(class, name).map_err(|e| ErrorDetail {
            code: roost_protocol::ErrorCode::BadName,
            message: e.to_string(),
        })?;
        self.runtime.call(&key, method, args, false).await
    }
}
