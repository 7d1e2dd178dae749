//! The user-facing object API: the [`DurableObject`] trait a class implements
//! and the [`ObjectError`] its handlers return.
//!
//! API Boundary: this trait and [`crate::Ctx`] are what a user's own class is
//! written against (the `lobby` demo uses nothing else). Everything a handler
//! returns stays inside the server until the batch it ran in is durable.

use std::future::Future;

use roost_protocol::{ErrorBody, ErrorCode, ErrorDetail};
use serde_json::Value;

use crate::ctx::Ctx;
use crate::runtime::{Admission, AlarmInfo, ConnectRequest};
use crate::sockets::{SocketId, SocketMessage};
use crate::storage::StorageError;

/// A class of durable objects. One value of the type is one live object; the
/// runtime calls its methods one event at a time, never concurrently.
pub trait DurableObject: Sized + Send + 'static {
    /// The constructor: runs when the object is (re)created in memory, inside
    /// a transaction of its own. Run migrations and load state here.
    ///
    /// What it writes does not keep the object on its own: an object that
    /// no event ever wrote to (no row, alarm or feed event of a batch) is
    /// removed once evicted, and its next start runs the constructor on an
    /// empty file again. State that must outlive that (an id drawn once) is
    /// written by an event; an alarm set or an event emitted here keeps the
    /// object as a batch's would.
    fn new(ctx: &mut Ctx) -> Result<Self, ObjectError>;

    /// An RPC call (`POST .../call/{method}` or a `call` envelope on a socket).
    /// Storage writes made here commit with the event; if it returns `Err`,
    /// they are rolled back and the caller gets the error.
    fn call(
        &mut self,
        ctx: &mut Ctx,
        method: &str,
        args: Value,
    ) -> impl Future<Output = Result<Value, ObjectError>> + Send;

    /// An HTTP request routed to the object (e.g. `GET /v1/yjs/{doc}/state`).
    /// The default answers 404.
    fn fetch(
        &mut self,
        _ctx: &mut Ctx,
        _request: FetchRequest,
    ) -> impl Future<Output = Result<FetchResponse, ObjectError>> + Send {
        async {
            Ok(FetchResponse::status(
                404,
                "this object does not serve HTTP requests",
            ))
        }
    }

    /// A WebSocket asks to join (`GET /v1/objects/{class}/{name}/ws`). Accept
    /// it with tags, or reject it with a close code. The default accepts.
    fn on_connect(
        &mut self,
        _ctx: &mut Ctx,
        _socket: SocketId,
        _request: &ConnectRequest,
    ) -> impl Future<Output = Result<Admission, ObjectError>> + Send {
        async { Ok(Admission::accept()) }
    }

    /// A frame that is not a `call` envelope. The default ignores it.
    fn on_message(
        &mut self,
        _ctx: &mut Ctx,
        _socket: SocketId,
        _msg: SocketMessage,
    ) -> impl Future<Output = Result<(), ObjectError>> + Send {
        async { Ok(()) }
    }

    /// The object's alarm fired. Return Ok to consume it (a new alarm set
    /// here is kept); an error retries it with backoff.
    fn alarm(
        &mut self,
        _ctx: &mut Ctx,
        _info: AlarmInfo,
    ) -> impl Future<Output = Result<(), ObjectError>> + Send {
        async { Ok(()) }
    }

    /// A socket closed (the client left, was too slow, or the object closed it).
    fn on_close(
        &mut self,
        _ctx: &mut Ctx,
        _socket: SocketId,
        _code: u16,
        _reason: &str,
    ) -> impl Future<Output = Result<(), ObjectError>> + Send {
        async { Ok(()) }
    }

    /// Runs once at the end of every batch, after its last event and before
    /// the batch commits: where an object writes, with one statement, what
    /// the batch's events gathered in memory (a Yjs document stores a
    /// batch's updates as one row). It runs outside the events' savepoints,
    /// so an error — or a panic — fails the whole batch: every output of the
    /// batch becomes an error and the object restarts from storage. The
    /// default does nothing.
    fn before_commit(&mut self, _ctx: &mut Ctx) -> Result<(), ObjectError> {
        Ok(())
    }
}

/// An HTTP request for an object's `fetch`.
#[derive(Debug, Clone, Default)]
pub struct FetchRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// What follows the object in the route (e.g. `state`).
    pub path: String,
    /// The query string's parameters, the token's excepted.
    pub query: std::collections::HashMap<String, String>,
    /// The request body.
    pub body: Vec<u8>,
    /// The caller may only read.
    pub read_only: bool,
    /// The request's headers (names lower-case), the token's excepted.
    pub headers: Vec<(String, String)>,
    /// Who holds the request's token (also `Ctx::identity`).
    pub identity: Option<std::sync::Arc<crate::auth::Identity>>,
}

/// The response to a `FetchRequest`.
#[derive(Debug, Clone)]
pub struct FetchResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The `Content-Type` of the body.
    pub content_type: String,
    /// The response body.
    pub body: Vec<u8>,
}

impl FetchResponse {
    /// A 200 response with this content type and body.
    pub fn bytes(content_type: &str, body: Vec<u8>) -> FetchResponse {
        FetchResponse {
            status: 200,
            content_type: content_type.to_owned(),
            body,
        }
    }

    /// A 200 `application/json` response holding `value`.
    pub fn json(value: &serde_json::Value) -> FetchResponse {
        FetchResponse::bytes("application/json", value.to_string().into_bytes())
    }

    /// A JSON error body with this status.
    /// Its code is `ErrorCode::for_object_status(status)`.
    pub fn status(status: u16, message: &str) -> FetchResponse {
        let body = ErrorBody::new(ErrorCode::for_object_status(status), message);
        FetchResponse {
            status,
            content_type: "application/json".into(),
            body: body.encode().into_bytes(),
        }
    }
}

/// What a handler can fail with. Each variant maps to a stable error code.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The class has no method of this name; the caller gets `unknown_method`
    /// (404).
    #[error("unknown method `{0}`")]
    UnknownMethod(String),
    /// The arguments are not what the method takes; the caller gets
    /// `bad_request` (400).
    #[error("bad arguments: {0}")]
    BadArgs(String),
    /// A storage operation failed; the caller gets `too_large`, `forbidden` or
    /// `storage` depending on the [`StorageError`].
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An application error with the handler's own message; the caller gets
    /// `application` (422).
    #[error("{0}")]
    App(String),
    /// The object's memory can no longer be trusted (for example a document
    /// half-changed by a failed apply): the whole batch is undone and the
    /// object restarts from storage.
    #[error("object failed: {0}")]
    Fatal(String),
}

impl ObjectError {
    /// An [`ObjectError::BadArgs`] with this message.
    pub fn bad_args(message: impl Into<String>) -> Self {
        ObjectError::BadArgs(message.into())
    }

    /// An [`ObjectError::App`] with this message.
    pub fn app(message: impl Into<String>) -> Self {
        ObjectError::App(message.into())
    }

    /// Whether this is [`ObjectError::Fatal`], which undoes the batch and
    /// restarts the object from storage.
    pub fn is_fatal(&self) -> bool {
        matches!(self, ObjectError::Fatal(_))
    }

    /// The wire form of this error.
    pub fn detail(&self) -> ErrorDetail {
        let code = match self {
            ObjectError::UnknownMethod(_) => ErrorCode::UnknownMethod,
            ObjectError::BadArgs(_) => ErrorCode::BadRequest,
            ObjectError::App(_) => ErrorCode::Application,
            ObjectError::Fatal(_) => ErrorCode::ObjectBroken,
            ObjectError::Storage(s) => match s {
                StorageError::KeyTooLarge { .. }
                | StorageError::ValueTooLarge { .. }
                | StorageError::DatabaseFull { .. }
                | StorageError::Full => ErrorCode::TooLarge,
                StorageError::ReadOnly => ErrorCode::Forbidden,
                _ => ErrorCode::Storage,
            },
        };
        ErrorDetail {
            code,
            message: self.to_string(),
        }
    }
}

impl From<rusqlite::Error> for ObjectError {
    fn from(e: rusqlite::Error) -> Self {
        // A write refused by `query_only` (a read-only caller) is a permission
        // error, not a storage failure.
        if let rusqlite::Error::SqliteFailure(code, _) = &e {
            if code.code == rusqlite::ErrorCode::ReadOnly {
                return ObjectError::Storage(StorageError::ReadOnly);
            }
            if code.code == rusqlite::ErrorCode::DiskFull {
                return ObjectError::Storage(StorageError::Full);
            }
        }
        ObjectError::Storage(StorageError::Sqlite(e))
    }
}
