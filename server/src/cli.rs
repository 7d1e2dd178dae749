//! The command line: `roost serve` and its flags (each also a `ROOST_*`
//! variable), logging set-up and signal handling. Binaries call [`main`] with
//! a builder holding their classes; everything else lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{parse_duration, Config};
use crate::ServerBuilder;

#[derive(Parser, Debug)]
#[command(
    name = "roost",
    version,
    about = "Roost: durable objects with per-object SQLite, hibernatable WebSockets and alarms"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ROOST_LISTEN", default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// Data directory: object databases, the catalog and the commit log.
    #[arg(long, env = "ROOST_DATA", default_value = "./roost-data")]
    pub data: PathBuf,
    /// Evict an object from memory after this long without events (e.g. 10s, 500ms, 5m).
    #[arg(long, env = "ROOST_IDLE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Log format.
    #[arg(long, env = "ROOST_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Events an object may have queued before callers get 503 overloaded.
    #[arg(long, env = "ROOST_MAILBOX_DEPTH", default_value_t = 1024)]
    pub mailbox_depth: usize,
    /// Most events committed together in one batch.
    #[arg(long, env = "ROOST_MAX_BATCH", default_value_t = 256)]
    pub max_batch: usize,
    /// Largest HTTP request body, in bytes (413 beyond).
    #[arg(long, env = "ROOST_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Longest storage key, in bytes.
    #[arg(long, env = "ROOST_MAX_KEY_BYTES", default_value_t = 2048)]
    pub max_key_bytes: usize,
    /// Largest stored value (JSON-encoded), in bytes.
    #[arg(long, env = "ROOST_MAX_VALUE_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_value_bytes: usize,
    /// Largest database file per object, in bytes.
    #[arg(long, env = "ROOST_MAX_DB_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub max_db_bytes: u64,
    /// Largest WebSocket frame/message accepted, in bytes (close 1009 beyond).
    #[arg(long, env = "ROOST_MAX_FRAME_BYTES", default_value_t = 1024 * 1024)]
    pub max_frame_bytes: usize,
    /// Most bytes queued for one socket before that (slow) client is disconnected.
    #[arg(long, env = "ROOST_MAX_SOCKET_QUEUE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_socket_queue_bytes: usize,
    /// Most WebSockets one object may hold.
    #[arg(long, env = "ROOST_MAX_SOCKETS_PER_OBJECT", default_value_t = 10_000)]
    pub max_sockets_per_object: usize,
    /// How often the shared commit log is checkpointed into object files.
    #[arg(long, env = "ROOST_CHECKPOINT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub checkpoint_interval: Duration,
}

impl ServeArgs {
    pub fn config(&self) -> Config {
        let mut config = Config {
            data_dir: self.data.clone(),
            idle_timeout: self.idle_timeout,
            mailbox_depth: self.mailbox_depth,
            max_batch: self.max_batch,
            max_body_bytes: self.max_body_bytes,
            ..Config::default()
        };
        config.storage.max_key_bytes = self.max_key_bytes;
        config.storage.max_value_bytes = self.max_value_bytes;
        config.storage.max_db_bytes = self.max_db_bytes;
        config.log.checkpoint_interval = self.checkpoint_interval;
        config.sockets.max_frame_bytes = self.max_frame_bytes;
        config.sockets.max_outbox_bytes = self.max_socket_queue_bytes;
        config.sockets.max_sockets_per_object = self.max_sockets_per_object;
        config
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
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
pub fn main(builder: ServerBuilder) -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            init_logging(args.log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(args.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", args.listen))?;
                let addr = listener.local_addr()?;
                let config = args.config();
                tracing::info!(
                    listen = %addr,
                    data = %config.data_dir.display(),
                    idle_timeout_ms = config.idle_timeout.as_millis() as u64,
                    "roost listening on http://{addr}"
                );
                builder
                    .config(config)
                    .serve(listener, shutdown_signal())
                    .await?;
                tracing::info!("shut down cleanly");
                Ok(())
            })
        }
    }
}
