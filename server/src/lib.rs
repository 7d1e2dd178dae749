//! Roost: a self-hostable real-time sync server built on the durable-object
//! model. See ARCHITECTURE.md for the map of this crate.
//!
//! The public API is what a user's class and an embedding binary need: the
//! [`DurableObject`] trait and its [`Ctx`], [`Server::builder`], [`Config`]
//! and its parts, and [`cli::main`]. Everything else is internal;
//! [`testing`] exposes the few internals the test suites check directly.

#![warn(missing_docs)]

pub mod auth;
mod backup;
mod catalog;
mod classes;
pub mod cli;
mod cluster;
mod commitlog;
pub mod config;
mod ctx;
mod data_dir;
mod feed;
mod http;
mod id;
mod metrics;
mod object;
mod runtime;
mod server;
mod sockets;
mod storage;
mod sys;

pub use auth::Identity;
pub use classes::ydoc::YdocConfig;
pub use commitlog::LogConfig;
pub use config::{Config, Durability};
pub use ctx::Ctx;
pub use feed::webhook::WebhookConfig;
pub use feed::FeedConfig;
pub use http::serve::ConnLimits;
pub use id::{ObjectId, ObjectKey};
pub use metrics::Metrics;
pub use object::{DurableObject, FetchRequest, FetchResponse, ObjectError};
pub use runtime::{Admission, AlarmConfig, AlarmInfo, ConnectRequest, Runtime};
pub use server::{RunningServer, Server, ServerBuilder};
pub use sockets::{SocketId, SocketLimits, SocketMessage};
pub use storage::inspect::ConsoleLimits;
pub use storage::{FaultHook, ListOptions, Storage, StorageError, StorageLimits};

/// Internals the test suites check directly (the commit log's record and
/// changeset formats, object paths). Not part of the API: it may change
/// with any release.
#[doc(hidden)]
pub mod testing {
    pub use crate::commitlog::changeset::apply_changeset;
    pub use crate::commitlog::record::{decode_segment, Record, Tail, SEGMENT_MAGIC};
    pub use crate::id::object_path;
}
