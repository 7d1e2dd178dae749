//! The `roost` binary: the built-in classes and the CLI. Everything else is in
//! the library, so tests and embedders run the same server.

fn main() -> anyhow::Result<()> {
    roost::cli::main(roost::Server::builder().with_builtins())
}
