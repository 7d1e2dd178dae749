//! Built-in classes, registered by `ServerBuilder::with_builtins`.

pub mod counter;
pub mod room;
pub mod ydoc;
