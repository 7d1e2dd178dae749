//! `roost serve`'s flags (each also a `ROOST_*` variable) and how they
//! become a [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

use crate::config::{parse_duration, Config};

/// The log format of `roost serve` (`--log-format`).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The flags of `roost serve`, each also a `ROOST_*` variable.
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
    /// On SIGTERM: how long to wait for objects to finish queued events and
    /// for sockets to close (1012) before exiting anyway (e.g. 10s).
    #[arg(long, env = "ROOST_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Also serve `GET /metrics` on this address, without a token (for a
    /// Prometheus scraper on a private network; with --auth-secret the main
    /// address's /metrics needs the admin token).
    #[arg(long, env = "ROOST_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// How batches are made durable: `log` (the shared commit log, group
    /// commit across objects) or `file` (each batch fsynced in its object's
    /// own file: slow, simple, the reference the log mode is tested against).
    #[arg(long, env = "ROOST_DURABILITY", value_enum, default_value = "log")]
    pub durability: crate::config::Durability,
    /// Let pages on this origin call the HTTP API (CORS, preflights included)
    /// and open WebSockets: `https://app.example.com`, or `*` for any
    /// (repeatable or comma-separated). Without it only the server's own
    /// origin may; clients that send no Origin are not affected.
    #[arg(long = "cors-origin", env = "ROOST_CORS_ORIGIN", value_delimiter = ',', value_parser = crate::http::cors::parse_origin)]
    pub cors_origin: Vec<String>,
    /// Log format (lines go to stderr). Which lines: the `ROOST_LOG`
    /// variable, `info` unless set, e.g. `debug`, or
    /// `info,roost::access=warn` to drop the access lines.
    #[arg(long, env = "ROOST_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Events an object may have queued before callers get 503 overloaded.
    #[arg(long, env = "ROOST_MAILBOX_DEPTH", default_value_t = 1024, value_parser = at_least_one())]
    pub mailbox_depth: usize,
    /// Most events committed together in one batch.
    #[arg(long, env = "ROOST_MAX_BATCH", default_value_t = 256, value_parser = at_least_one())]
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
    /// How long an object must stay evicted before its WAL is folded into its
    /// database and removed, in the background (smaller files for idle
    /// objects); 0 never does.
    #[arg(long, env = "ROOST_TIDY_IDLE_AFTER", default_value = "60s", value_parser = parse_duration)]
    pub tidy_idle_after: Duration,
    /// Most objects the server holds (object files in the data directory);
    /// creating one more is refused with 507 `insufficient_storage`.
    #[arg(long, env = "ROOST_MAX_OBJECTS", default_value_t = 1_000_000)]
    pub max_objects: u64,
    /// Largest database file per object, in bytes.
    #[arg(long, env = "ROOST_MAX_DB_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub max_db_bytes: u64,
    /// Most memory each loaded object's SQLite page cache may hold, in bytes
    /// (the OS page cache holds the rest of its file).
    #[arg(long, env = "ROOST_OBJECT_CACHE_BYTES", default_value_t = 256 * 1024)]
    pub object_cache_bytes: u64,
    /// WAL size, in bytes, beyond which an object's WAL is folded into its
    /// database file by a background checkpoint (each object adds up to as
    /// much again, so objects do not all checkpoint at once).
    #[arg(long, env = "ROOST_WAL_CHECKPOINT_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(4096..))]
    pub wal_checkpoint_bytes: u64,
    /// Largest WebSocket frame/message accepted, in bytes (close 1009 beyond).
    #[arg(long, env = "ROOST_MAX_FRAME_BYTES", default_value_t = 1024 * 1024)]
    pub max_frame_bytes: usize,
    /// Most bytes queued for one socket before that (slow) client is disconnected.
    #[arg(long, env = "ROOST_MAX_SOCKET_QUEUE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_socket_queue_bytes: usize,
    /// Most Yjs awareness client ids one socket may announce (a browser tab
    /// announces one); beyond, the socket is closed with 1008.
    #[arg(long, env = "ROOST_MAX_AWARENESS_PER_SOCKET", default_value_t = 16)]
    pub max_awareness_per_socket: usize,
    /// Most awareness entries one document holds (1008 beyond).
    #[arg(long, env = "ROOST_MAX_AWARENESS_PER_DOC", default_value_t = 10_000)]
    pub max_awareness_per_doc: usize,
    /// Most bytes of awareness states one document holds (1008 beyond; keep
    /// it below --max-socket-queue-bytes, so a newcomer can receive them all).
    #[arg(long, env = "ROOST_MAX_AWARENESS_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_awareness_bytes: usize,
    /// A WebSocket silent this long is sent a ping; one that then stays
    /// silent three times as long (frozen or gone) is closed with 1001.
    /// 0 turns pings off.
    #[arg(long, env = "ROOST_SOCKET_PING_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub socket_ping_interval: Duration,
    /// Most WebSockets one object may hold.
    #[arg(long, env = "ROOST_MAX_SOCKETS_PER_OBJECT", default_value_t = 10_000)]
    pub max_sockets_per_object: usize,
    /// Secret for HS256 access tokens; with it, every object route needs a token.
    #[arg(
        long,
        env = "ROOST_AUTH_SECRET",
        hide_env_values = true,
        conflicts_with = "auth_secret_file"
    )]
    pub auth_secret: Option<String>,
    /// A file holding the auth secret instead. On SIGHUP it is read again:
    /// a new secret signs from then on, and tokens signed with the old one
    /// stay valid for --auth-secret-grace (rotation without a restart).
    #[arg(long, env = "ROOST_AUTH_SECRET_FILE")]
    pub auth_secret_file: Option<PathBuf>,
    /// How long tokens signed with the previous secret stay valid after a
    /// rotation (SIGHUP with --auth-secret-file).
    #[arg(long, env = "ROOST_AUTH_SECRET_GRACE", default_value = "1h", value_parser = parse_duration)]
    pub auth_secret_grace: Duration,
    /// Bearer token for the admin API (`/v1/admin/...`); the admin API is off without it.
    #[arg(long, env = "ROOST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Allow listening on a non-loopback address without an auth secret (anyone may read and write).
    #[arg(long, env = "ROOST_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,
    /// Most open TCP connections in all, sockets included (0: the open-file
    /// limit minus 1,024). Beyond it a new connection gets 503 and is closed.
    #[arg(long, env = "ROOST_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,
    /// Time a client has to send a request's headers; also how long an idle
    /// HTTP keep-alive connection stays open (e.g. 30s).
    #[arg(long, env = "ROOST_HEADER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Most open TCP connections (sockets included) from one client IP
    /// address; beyond it a new connection gets 429 and is closed.
    #[arg(long, env = "ROOST_MAX_CONNECTIONS_PER_IP", default_value_t = 10_000)]
    pub max_connections_per_ip: usize,
    /// Most frames per second one socket may send (closed with 1008 beyond).
    #[arg(
        long,
        env = "ROOST_MAX_SOCKET_MESSAGES_PER_SEC",
        default_value_t = 10_000
    )]
    pub max_socket_messages_per_sec: u32,
    /// Largest Yjs document (snapshot plus log), in bytes.
    #[arg(long, env = "ROOST_MAX_DOC_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_doc_bytes: u64,
    /// Deepest nesting of Yjs shared types (a map in a map in …; 1 is a
    /// root type's own content): an update that would nest deeper is
    /// refused (close 1008 / 400). At most 1000: yrs deletes nested types
    /// by recursion, and a far deeper document overflows the stack.
    #[arg(long, env = "ROOST_YJS_MAX_TYPE_NESTING", default_value_t = roost_protocol::yjs::DEFAULT_MAX_TYPE_NESTING, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub yjs_max_type_nesting: u32,
    /// Largest single Yjs update, in bytes.
    #[arg(long, env = "ROOST_MAX_UPDATE_BYTES", default_value_t = 1024 * 1024)]
    pub max_update_bytes: usize,
    /// How far back Yjs documents can be read with `state?at=` (e.g. 7d).
    #[arg(long, env = "ROOST_HISTORY_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub history_retention: Duration,
    /// How finely a Yjs document's history is kept inside that window:
    /// once the document is quiet, the updates of each such interval are
    /// merged into one stored row (`state?at=` is exact at its ends). 0
    /// keeps every update as its own row.
    #[arg(long, env = "ROOST_HISTORY_GRANULARITY", default_value = "1s", value_parser = parse_duration)]
    pub history_granularity: Duration,
    /// A Yjs document writes a snapshot once this many updates follow its
    /// newest one (bounds the log replayed when a document loads).
    #[arg(long, env = "ROOST_YDOC_SNAPSHOT_ROWS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub ydoc_snapshot_rows: u64,
    /// A Yjs document that has been quiet this long writes a snapshot, if
    /// its log since the newest one is long enough to be worth it, and drops
    /// what the history window no longer needs. Keep it below
    /// --idle-timeout: an evicted document is loaded again to do it.
    #[arg(long, env = "ROOST_YDOC_COMPACT_AFTER", default_value = "5s", value_parser = parse_duration)]
    pub ydoc_compact_after: Duration,
    /// Most named versions one Yjs document keeps (`POST
    /// /v1/yjs/{doc}/versions` answers 507 beyond; delete one first).
    #[arg(long, env = "ROOST_YJS_MAX_VERSIONS", default_value_t = 100)]
    pub yjs_max_versions: u64,
    /// How often the shared commit log is checkpointed into object files.
    #[arg(long, env = "ROOST_CHECKPOINT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub checkpoint_interval: Duration,
    /// Under load (records arriving faster than one per fsync), how long
    /// the commit log sleeps after taking a group's records to gather more
    /// before it writes and fsyncs them together (e.g. 200us): fewer
    /// fsyncs leave more CPU to the objects, at the price of that much
    /// latency, and more when the CPU is contended. A lone write is never
    /// delayed. 0 (the default) turns it off.
    #[arg(long, env = "ROOST_LOG_GROUP_DELAY", default_value = "0", value_parser = parse_duration)]
    pub log_group_delay: Duration,
    /// How long an object's batches, already durable in the commit log, may
    /// wait in one open transaction before it is committed to the object's
    /// file (fewer, larger SQLite commits; 0 commits every batch on its own).
    #[arg(long, env = "ROOST_FILE_COMMIT_INTERVAL", default_value = "50ms", value_parser = parse_duration)]
    pub file_commit_interval: Duration,
    /// Longest an admin SQL console query may run before it is stopped (504 timed_out).
    #[arg(long, env = "ROOST_ADMIN_SQL_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub admin_sql_timeout: Duration,
    /// Most bytes of an admin SQL console result, counted as JSON (413 too_large beyond).
    #[arg(long, env = "ROOST_ADMIN_SQL_MAX_BYTES", default_value_t = 16 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(65536..))]
    pub admin_sql_max_bytes: u32,
    /// Cluster mode.
    #[command(flatten)]
    pub cluster: super::cluster::ClusterArgs,
    /// The change feed and its webhook.
    #[command(flatten)]
    pub feed: super::feed_args::FeedArgs,
}

impl ServeArgs {
    /// The server configuration these flags set; what they do not set keeps
    /// its default.
    pub fn config(&self) -> Config {
        let mut config = Config {
            data_dir: self.data.clone(),
            idle_timeout: self.idle_timeout,
            drain_timeout: self.drain_timeout,
            metrics_listen: self.metrics_listen,
            durability: self.durability,
            mailbox_depth: self.mailbox_depth,
            max_batch: self.max_batch,
            max_body_bytes: self.max_body_bytes,
            cors_origins: self.cors_origin.clone(),
            ..Config::default()
        };
        config.storage.max_key_bytes = self.max_key_bytes;
        config.storage.max_value_bytes = self.max_value_bytes;
        config.storage.max_db_bytes = self.max_db_bytes;
        config.max_objects = self.max_objects;
        config.tidy_after = self.tidy_idle_after;
        config.storage.cache_bytes = self.object_cache_bytes;
        config.storage.wal_checkpoint_bytes = self.wal_checkpoint_bytes;
        config.log.checkpoint_interval = self.checkpoint_interval;
        config.log.group_delay = self.log_group_delay;
        config.file_commit_interval = self.file_commit_interval;
        config.admin_sql.timeout = self.admin_sql_timeout;
        config.admin_sql.max_bytes = self.admin_sql_max_bytes as usize;
        config.sockets.max_frame_bytes = self.max_frame_bytes;
        config.sockets.max_outbox_bytes = self.max_socket_queue_bytes;
        config.sockets.max_sockets_per_object = self.max_sockets_per_object;
        config.sockets.max_awareness_per_socket = self.max_awareness_per_socket;
        config.sockets.max_awareness_per_doc = self.max_awareness_per_doc;
        config.sockets.max_awareness_bytes = self.max_awareness_bytes;
        config.sockets.ping_interval = self.socket_ping_interval;
        config.sockets.max_messages_per_sec = self.max_socket_messages_per_sec;
        config.max_connections_per_ip = self.max_connections_per_ip;
        config.connections = crate::http::serve::ConnLimits {
            max_connections: self.max_connections,
            header_timeout: self.header_timeout,
        };
        config.ydoc.max_doc_bytes = self.max_doc_bytes;
        config.ydoc.max_update_bytes = self.max_update_bytes;
        config.ydoc.max_type_nesting = self.yjs_max_type_nesting;
        config.ydoc.retention = self.history_retention;
        config.ydoc.granularity = self.history_granularity;
        config.ydoc.checkpoint_rows = self.ydoc_snapshot_rows;
        config.ydoc.compact_after = self.ydoc_compact_after;
        config.ydoc.max_versions = self.yjs_max_versions;
        config.feed = self.feed.config();
        config.auth = crate::auth::Auth::new(
            self.auth_secret.clone().map(String::into_bytes),
            self.admin_token.clone(),
        );
        config
    }
}

/// A count that must be 1 or more (0 would make the server useless, not
/// smaller).
fn at_least_one() -> clap::builder::RangedI64ValueParser<usize> {
    clap::builder::RangedI64ValueParser::<usize>::new().range(1..)
}
