//! Built-in classes, registered by `ServerBuilder::with_builtins`.

pub(crate) mod counter;
pub(crate) mod room;
pub(crate) mod ydoc;
