//! The `roost` binary: the built-in classes, the demos' `lobby` class and the
//! CLI. Everything else is in the library, so tests and embedders run the
//! same server.

#[path = "../../demos/lobby/lobby.rs"]
mod lobby;

fn main() -> anyhow::Result<()> {
    roost::cli::main(
        roost::Server::builder()
            .with_builtins()
            .class::<lobby::Lobby>("lobby"),
    )
}
