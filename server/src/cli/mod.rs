//! The command line: `roost serve` and its flags (each also a `ROOST_*`
//! variable), logging set-up and signal handling. Binaries call [`main`] with
//! a builder holding their classes; everything else lives in the library.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::parse_duration;
use crate::ServerBuilder;

#[derive(Parser, Debug)]
#[command(
    name = "roost",
    version,
    about = "Roost: durable objects with per-object SQLite, hibernatable WebSockets and alarms"
)]
/// The `roost` command line.
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `roost`.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Mint an access token (HS256 JWT) for objects.
    Token(TokenArgs),
    /// Restore a backup (from `POST /v1/admin/backup`) into a new data directory.
    Restore(RestoreArgs),
}

/// The flags of `roost restore`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The backup archive (a `.tar` from `POST /v1/admin/backup`).
    #[arg(long)]
    pub from: PathBuf,
    /// The data directory to create; it must not exist or be empty. Start
    /// `roost serve --data` on it afterwards.
    #[arg(long)]
    pub data: PathBuf,
}

/// The flags of `roost token`.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// An object the token opens, `class/name` or `class/*` (repeatable; Yjs documents are `ydoc/<doc>`).
    #[arg(long = "obj", required = true)]
    pub obj: Vec<String>,
    /// `read` (connect, call, receive; every write fails) or `write`.
    #[arg(long, default_value = "write")]
    pub perm: String,
    /// How long the token is valid (e.g. 15m, 1h, 7d).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// The server's auth secret.
    #[arg(long, env = "ROOST_AUTH_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Who holds the token (JWT `sub`): objects see it as the caller.
    #[arg(long)]
    pub sub: Option<String>,
    /// A display name for the holder (e.g. the `room` class shows it).
    #[arg(long)]
    pub name: Option<String>,
    /// A free-form claim `key=value` (repeatable; a value that is valid JSON
    /// is kept as JSON, e.g. `role="admin"` or `level=3`).
    #[arg(long = "claim", value_parser = parse_claim)]
    pub claims: Vec<(String, serde_json::Value)>,
    /// The token's id (JWT `jti`), to revoke this one token later.
    #[arg(long)]
    pub jti: Option<String>,
}

/// `key=value` for `roost token --claim`.
fn parse_claim(text: &str) -> Result<(String, serde_json::Value), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not key=value"))?;
    if key.is_empty() {
        return Err(format!("`{text}` has no key"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::from(value));
    Ok((key.to_owned(), value))
}

mod args;
mod cluster;
mod feed_args;
mod log_writer;

pub use args::{LogFormat, ServeArgs};
pub use cluster::ClusterArgs;
pub use feed_args::FeedArgs;

/// Logs to stderr, in batches (`log_writer`); the guard writes out what is
/// pending when dropped, and a panic writes it out before its message.
fn init_logging(format: LogFormat) -> log_writer::LogGuard {
    use tracing_subscriber::EnvFilter;
    // A `ROOST_LOG` that does not parse is said once logging is up, not
    // silently replaced.
    let mut refused = None;
    let filter = match std::env::var("ROOST_LOG") {
        Ok(text) if !text.trim().is_empty() => EnvFilter::try_new(&text).unwrap_or_else(|e| {
            refused = Some((text, e.to_string()));
            EnvFilter::new("info")
        }),
        _ => EnvFilter::new("info"),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = log_writer::batched_stderr();
    guard.flush_before_panics();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    if let Some((value, error)) = refused {
        tracing::warn!(
            value,
            error,
            "ROOST_LOG is not a valid filter: logging at info"
        );
    }
    guard
}

/// The secret in `file` (surrounding whitespace trimmed), never empty.
fn read_secret(file: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the auth secret from {}", file.display()))?;
    let secret = text.trim().to_owned();
    if secret.is_empty() {
        anyhow::bail!("{} holds no auth secret", file.display());
    }
    Ok(secret)
}

/// On each SIGHUP, reads the secret file again and rotates to it.
/// On SIGHUP: reads the secret again; once the grace period of the secret
/// it replaced ends, sockets whose token that secret signed are closed
/// (as are, at once, any a secret before it signed).
async fn rotate_on_sighup(
    file: PathBuf,
    auth: crate::auth::Auth,
    grace: Duration,
    runtime: crate::Runtime,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: the auth secret cannot be rotated");
        return;
    };
    while hup.recv().await.is_some() {
        match read_secret(&file).map(|secret| auth.rotate(secret.into_bytes(), grace)) {
            Ok(true) => {
                let generation = auth.generation();
                let closed = runtime.close_sockets_signed_before(generation - 1);
                tracing::info!(
                    grace_s = grace.as_secs(),
                    closed_sockets = closed,
                    "auth secret rotated; tokens signed with the previous one stay valid for the grace period"
                );
                let runtime = runtime.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    let closed = runtime.close_sockets_signed_before(generation);
                    tracing::info!(
                        closed_sockets = closed,
                        "grace period of the previous auth secret over: its tokens' sockets closed"
                    );
                });
            }
            Ok(false) => tracing::info!("SIGHUP: the auth secret is unchanged"),
            Err(e) => tracing::error!(error = %e, "SIGHUP: keeping the current auth secret"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Parses the command line and runs it with the classes in `builder`.
///
/// A failure is one line on stderr, `error: ` and its chain of causes (no
/// backtrace, whatever `RUST_BACKTRACE` says), and exit status 1 — as clap
/// does for a bad flag (status 2). So this returns only `Ok`; the `Result`
/// lets an embedder's `fn main() -> anyhow::Result<()>` end with it.
pub fn main(builder: ServerBuilder) -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Err(e) = run(cli.command, builder) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

/// Runs one subcommand.
fn run(command: Command, builder: ServerBuilder) -> anyhow::Result<()> {
    match command {
        Command::Token(args) => {
            println!("{}", mint_token(args)?);
            Ok(())
        }
        Command::Restore(args) => {
            let summary = crate::backup::restore(&args.from, &args.data)?;
            println!("{summary}");
            Ok(())
        }
        Command::Serve(args) => serve(*args, builder),
    }
}

/// `roost token`: checks the objects named, then mints.
fn mint_token(args: TokenArgs) -> anyhow::Result<String> {
    let perm = match args.perm.as_str() {
        "read" => crate::auth::Perm::Read,
        "write" => crate::auth::Perm::Write,
        other => anyhow::bail!("--perm must be `read` or `write`, not `{other}`"),
    };
    for o in &args.obj {
        let Some((class, name)) = o.split_once('/') else {
            anyhow::bail!("--obj `{o}` must be `class/name` or `class/*`");
        };
        crate::id::validate_class(class).map_err(|e| anyhow::anyhow!("--obj `{o}`: {e}"))?;
        if name != "*" {
            crate::id::validate_name(name).map_err(|e| anyhow::anyhow!("--obj `{o}`: {e}"))?;
        }
    }
    let identity = crate::auth::Identity {
        sub: args.sub,
        name: args.name,
        claims: args.claims.into_iter().collect(),
        jti: args.jti,
    };
    crate::auth::mint_for(args.secret.as_bytes(), args.obj, perm, args.ttl, identity)
        .map_err(anyhow::Error::msg)
}

/// `roost serve`: checks the flags, then runs the server on a new async
/// runtime until SIGTERM or Ctrl-C.
fn serve(mut args: ServeArgs, builder: ServerBuilder) -> anyhow::Result<()> {
    let _log = init_logging(args.log_format);
    if let Some(file) = &args.auth_secret_file {
        args.auth_secret = Some(read_secret(file)?);
    }
    if !args.listen.ip().is_loopback() && args.auth_secret.is_none() && !args.allow_anonymous {
        anyhow::bail!(
            "refusing to listen on {} without an auth secret: anyone could read and write every object. \
             Set --auth-secret (or ROOST_AUTH_SECRET), listen on 127.0.0.1, or pass --allow-anonymous if that is really what you want",
            args.listen
        );
    }
    // One malloc arena per core (glibc's default is 8): see
    // `sys::limit_malloc_arenas`.
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    crate::sys::limit_malloc_arenas(cores.max(2));
    // SQLite's memory apart from the sockets' (`sys::sqlite_heap_apart`),
    // while this is the only thread.
    if !crate::sys::sqlite_heap_apart() {
        tracing::warn!("SQLite was initialized already: its memory stays in the main heap");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve_until_signal(args, builder))
}

async fn serve_until_signal(args: ServeArgs, builder: ServerBuilder) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let mut config = args.config();
    config.cluster = args.cluster.config(addr).map_err(anyhow::Error::msg)?;
    if config.cluster.is_some() && !config.feed.classes.is_empty() {
        anyhow::bail!(
            "--feed is not available with --cluster yet: each node would index only the objects it owns"
        );
    }
    let auth = if args.auth_secret.is_some() {
        "tokens"
    } else {
        "anonymous (development)"
    };
    let (data, idle_timeout_ms) = (
        config.data_dir.clone(),
        config.idle_timeout.as_millis() as u64,
    );
    if config.ydoc.compact_after >= config.idle_timeout {
        tracing::warn!(
            ydoc_compact_after_ms = config.ydoc.compact_after.as_millis() as u64,
            idle_timeout_ms,
            "--ydoc-compact-after is not below --idle-timeout: quiet Yjs documents will be loaded again just to compact them"
        );
    }
    // Recovery runs before the first request is answered; say
    // "listening" only once the server can serve.
    let auth_handle = config.auth.clone();
    let server = builder.config(config).start(listener).await?;
    if let Some(file) = args.auth_secret_file.clone() {
        tokio::spawn(rotate_on_sighup(
            file,
            auth_handle,
            args.auth_secret_grace,
            server.runtime().clone(),
        ));
    }
    tracing::info!(
        auth,
        admin_api = args.admin_token.is_some(),
        listen = %addr,
        data = %data.display(),
        idle_timeout_ms,
        cluster = args.cluster.cluster.join(","),
        "roost listening on http://{addr}"
    );
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight events");
    server.shutdown().await?;
    tracing::info!("shut down cleanly");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    #[test]
    fn counts_of_zero_are_refused_not_raised() {
        for flag in ["--max-batch", "--mailbox-depth"] {
            let parsed = Cli::try_parse_from(["roost", "serve", flag, "0"]);
            let e = parsed.expect_err(flag).to_string();
            assert!(e.contains(flag) && e.contains('0'), "{flag}: {e}");
            assert!(Cli::try_parse_from(["roost", "serve", flag, "1"]).is_ok());
        }
    }
}
