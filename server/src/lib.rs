//! Roost: a self-hostable real-time sync server built on the durable-object
//! model. See ARCHITECTURE.md for the map of this crate.

pub mod auth;
pub mod backup;
pub mod catalog;
pub mod classes;
pub mod cli;
pub mod commitlog;
pub mod config;
mod ctx;
pub mod http;
pub mod id;
pub mod metrics;
mod object;
pub mod runtime;
mod server;
pub mod sockets;
pub mod storage;
mod sys;

pub use config::Config;
pub use ctx::Ctx;
pub use id::{ObjectId, ObjectKey};
pub use object::{DurableObject, FetchRequest, FetchResponse, ObjectError};
pub use runtime::{Admission, AlarmConfig, AlarmInfo, ConnectRequest};
pub use server::{RunningServer, Server, ServerBuilder};
pub use sockets::{SocketId, SocketLimits, SocketMessage};
pub use storage::{ListOptions, Storage, StorageError, StorageLimits};
