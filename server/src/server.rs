//! [`Server`] and its builder: how the binary — or a user's own binary that
//! embeds Roost like an axum app — registers classes and runs.
//!
//! Start-up order: replay the commit log into object files, start the log
//! writer and the catalog, then accept connections. Shutdown order: stop
//! accepting, let in-flight requests finish, let every actor finish and commit
//! its queued events, then stop the log writer.

use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::catalog::Catalog;
use crate::commitlog::{recovery, CommitLog};
use crate::config::Config;
use crate::data_dir::{check_format, forget_local_state, DataLock};
use crate::id::validate_class;
use crate::metrics::Metrics;
use crate::object::DurableObject;
use crate::runtime::registry::Settings;
use crate::runtime::{Registry, Runtime};

/// The entry point of an embedding program: [`Server::builder`].
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A builder with no classes and the default [`Config`].
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            registry: Registry::default(),
            config: Config::default(),
            settings_from_config: Vec::new(),
            bad_class: None,
        }
    }
}

/// Makes a class's settings out of the server's configuration, at start.
type SettingsFromConfig = Box<dyn FnOnce(&Config) -> Settings + Send + Sync>;

/// Collects classes and the configuration, then starts the server
/// ([`ServerBuilder::start`]).
pub struct ServerBuilder {
    registry: Registry,
    config: Config,
    /// Classes whose settings come from `config` (`class_with_config`).
    settings_from_config: Vec<(String, SettingsFromConfig)>,
    bad_class: Option<String>,
}

impl ServerBuilder {
    /// Registers a class under `name` (`[a-z][a-z0-9_-]{0,63}`).
    pub fn class<T: DurableObject>(self, name: &str) -> Self {
        self.register::<T>(name, None)
    }

    /// Registers a class with its settings: any value, which its objects
    /// read with `ctx.settings::<S>()`.
    pub fn class_with<T: DurableObject, S: Any + Send + Sync>(
        self,
        name: &str,
        settings: S,
    ) -> Self {
        self.register::<T>(name, Some(Arc::new(settings)))
    }

    /// Registers a class whose settings are made from the server's
    /// [`Config`] when it starts (so `config` may be set after this).
    pub fn class_with_config<T: DurableObject, S: Any + Send + Sync>(
        self,
        name: &str,
        settings: impl FnOnce(&Config) -> S + Send + Sync + 'static,
    ) -> Self {
        let mut builder = self.register::<T>(name, None);
        let make: SettingsFromConfig = Box::new(move |config| Arc::new(settings(config)));
        builder.settings_from_config.push((name.to_owned(), make));
        builder
    }

    fn register<T: DurableObject>(mut self, name: &str, settings: Option<Settings>) -> Self {
        if validate_class(name).is_err() {
            self.bad_class = Some(name.to_owned());
        }
        self.settings_from_config.retain(|(class, _)| class != name);
        self.registry.add::<T>(name, settings);
        self
    }

    /// Registers the built-in classes (`counter`, `room`, and `ydoc` with
    /// `Config::ydoc` as its settings).
    pub fn with_builtins(self) -> Self {
        self.class::<crate::classes::counter::Counter>("counter")
            .class::<crate::classes::room::Room>("room")
            .class_with_config::<crate::classes::ydoc::Ydoc, _>("ydoc", |config| {
                config.ydoc.clone()
            })
    }

    /// Sets the server's configuration (default: `Config::default()`).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Recovers storage and starts serving on `listener`.
    pub async fn start(self, listener: TcpListener) -> anyhow::Result<RunningServer> {
        if let Some(bad) = self.bad_class {
            anyhow::bail!("class name `{bad}` is invalid: it must match [a-z][a-z0-9_-]{{0,63}}");
        }
        let open_files = raise_open_file_limit();
        let (config, data_lock) = prepare(self.config)?;
        let config = Arc::new(config);
        let mut registry = self.registry;
        for (class, make) in self.settings_from_config {
            registry.set_settings(&class, make(&config));
        }
        if config.cluster.is_some() {
            forget_local_state(&config.data_dir)?;
        }
        replay_commit_log(&config.data_dir).await?;
        let metrics = Arc::new(Metrics::default());
        let feed = crate::feed::open_if_enabled(&config, &metrics).await?;
        let runtime = open_runtime(config.clone(), registry, metrics).await?;
        if let Some(cluster) = &config.cluster {
            let c = crate::cluster::Cluster::connect(cluster.clone(), runtime.metrics().clone())
                .await
                .context("cannot join the cluster")?;
            tracing::info!(
                node = c.node_id(),
                nats = cluster.urls.join(","),
                "joined the cluster"
            );
            c.spawn_heartbeat(runtime.downgrade());
            runtime.set_cluster(c);
        }
        crate::feed::attach(&runtime, feed)?;
        crate::runtime::alarms::Alarms::start(&runtime).await;
        let heartbeat = tokio::spawn(crate::sockets::heartbeat(
            runtime.sockets().clone(),
            config.sockets.ping_interval,
        ));
        let router = crate::http::router(runtime.clone(), config.max_body_bytes);
        let metrics_server = serve_metrics(config.metrics_listen, &runtime).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let background = Background {
            heartbeat,
            metrics_server,
            trimmer: tokio::spawn(trim_heap_after_evictions(runtime.metrics().clone())),
        };
        let task = tokio::spawn(run(
            Http {
                listener,
                router,
                open_files,
            },
            runtime.clone(),
            stopped,
            background,
            data_lock,
        ));
        Ok(RunningServer {
            addr,
            runtime,
            stop: Some(stop),
            task,
        })
    }

    /// Runs until `shutdown` resolves, then shuts down gracefully.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let server = self.start(listener).await?;
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight events");
        server.shutdown().await
    }
}

/// Raises the open-file limit as far as allowed; returns it (1024 if unknown).
fn raise_open_file_limit() -> u64 {
    match crate::sys::raise_nofile_limit() {
        Ok(n) => {
            tracing::debug!(limit = n, "open-file limit");
            n
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            1024
        }
    }
}

/// The configuration as the server runs with it: the data directory made
/// absolute, created, locked against a second server and its format
/// checked; at least one mailbox slot and one event per batch.
fn prepare(mut config: Config) -> anyhow::Result<(Config, DataLock)> {
    // Every path is built from this one: make it absolute once, so a
    // relative `--data` (the default `./roost-data` included) never leaves
    // an empty parent to fsync, and a later change of directory is harmless.
    config.data_dir = std::path::absolute(&config.data_dir).with_context(|| {
        format!(
            "cannot resolve data directory {}",
            config.data_dir.display()
        )
    })?;
    config.mailbox_depth = config.mailbox_depth.max(1);
    config.max_batch = config.max_batch.max(1);
    let data_dir = &config.data_dir;
    crate::storage::create_dir_all_durable(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    if !data_dir.is_dir() {
        anyhow::bail!("data directory {} is not a directory", data_dir.display());
    }
    let lock = DataLock::acquire(data_dir)?;
    check_format(data_dir)?;
    Ok((config, lock))
}

/// Applies what the commit log holds to the object files.
async fn replay_commit_log(data_dir: &Path) -> anyhow::Result<()> {
    let report = tokio::task::spawn_blocking({
        let dir = data_dir.to_owned();
        move || recovery::recover(&dir)
    })
    .await
    .context("recovery task failed")?
    .context("commit log recovery failed")?;
    if report.records > 0 {
        tracing::info!(
            segments = report.segments,
            records = report.records,
            applied = report.applied,
            objects = report.objects,
            "replayed commit log"
        );
    }
    if report.quarantined > 0 {
        tracing::error!(
            objects = report.quarantined,
            "started without objects whose files could not take their logged writes (see above): they answer object_broken until their files are replaced and Roost restarts"
        );
    }
    Ok(())
}

/// Starts the commit log writer and the catalog (loading its revocations
/// into `config.auth`) and the runtime over them.
async fn open_runtime(
    config: Arc<Config>,
    registry: Registry,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Runtime> {
    let log = CommitLog::start(&config.data_dir, config.log.clone(), metrics.clone())
        .context("cannot start the commit log")?;
    let catalog = Catalog::open(&config.data_dir).context("cannot open the catalog")?;
    for (kind, value, until) in catalog.revocations().await {
        match kind.as_str() {
            "jti" => config.auth.revoke(Some(value), None),
            _ => config.auth.revoke(None, Some((value, until))),
        }
    }
    Ok(Runtime::new(config, registry, metrics, log, catalog))
}

/// Serves `/metrics` without a token on `at` (`--metrics-listen`), if set.
async fn serve_metrics(
    at: Option<SocketAddr>,
    runtime: &Runtime,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let Some(at) = at else {
        return Ok(None);
    };
    let listener = TcpListener::bind(at)
        .await
        .with_context(|| format!("cannot listen on {at} (--metrics-listen)"))?;
    tracing::info!(listen = %at, "serving /metrics without a token");
    let router = crate::http::metrics_router(runtime.clone());
    Ok(Some(tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    })))
}

/// The HTTP side of a running server.
struct Http {
    listener: TcpListener,
    router: Router,
    open_files: u64,
}

/// Tasks that run beside the HTTP server until it stops.
struct Background {
    heartbeat: JoinHandle<()>,
    metrics_server: Option<JoinHandle<()>>,
    trimmer: JoinHandle<()>,
}

/// Serves until `stop` (or until the HTTP server ends by itself), then
/// drains. `_data_lock` is released when this returns, after storage closed.
async fn run(
    http: Http,
    runtime: Runtime,
    stop: oneshot::Receiver<()>,
    background: Background,
    _data_lock: DataLock,
) -> anyhow::Result<()> {
    let config = runtime.config();
    let drain_timeout = config.drain_timeout;
    let (http_stop_tx, http_stop_rx) = oneshot::channel::<()>();
    let mut served = tokio::spawn(crate::http::serve::serve(
        http.listener,
        http.router,
        config.connections.clone(),
        config.max_connections_per_ip,
        http.open_files,
        async move {
            let _ = http_stop_rx.await;
        },
    ));
    // The drain, in order (ARCHITECTURE.md, "Shutdown answers"): objects
    // first, while HTTP still answers — each finishes what is queued
    // and its callers get their replies; new calls get 503
    // `shutting_down` and new sockets 1012 —, then sockets close with
    // 1012 (their close handshake completed), then HTTP stops.
    tokio::select! {
        _ = stop => {}
        result = &mut served => {
            background.trimmer.abort();
            runtime.shutdown(drain_timeout).await;
            runtime.close_storage().await;
            return result.context("HTTP server task failed");
        }
    }
    if let Some(m) = &background.metrics_server {
        m.abort();
    }
    let started = tokio::time::Instant::now();
    runtime.shutdown(drain_timeout).await;
    if let Some(cluster) = runtime.cluster() {
        // Every batch is appended; hand the objects over at once.
        cluster.release_all().await;
    }
    let _ = http_stop_tx.send(());
    let left = drain_timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_secs(1));
    let result = match tokio::time::timeout(left, &mut served).await {
        Ok(result) => result.context("HTTP server task failed"),
        Err(_) => {
            tracing::warn!("HTTP connections still open after the drain timeout; closing them");
            served.abort();
            Ok(())
        }
    };
    background.trimmer.abort();
    background.heartbeat.abort();
    runtime.close_storage().await;
    result
}

/// Objects that wake up and are evicted again (every connect wakes its
/// object) free their memory into glibc's heap, where it stays — pinned by the
/// long-lived socket allocations made around it — unless trimmed. Once a
/// burst of evictions is over (a second without evictions or actors ending),
/// or every 10 s while they go on, free pages are handed back to the OS.
async fn trim_heap_after_evictions(metrics: Arc<Metrics>) {
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Instant;
    // An eviction is counted when it starts; the actor's memory is freed
    // when it ends, which `live_objects` shows.
    let look = || {
        (
            metrics.evictions.load(Relaxed),
            metrics.live_objects.load(Relaxed),
        )
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trimmed = look();
    let mut last_tick = trimmed;
    let mut last_trim = Instant::now();
    loop {
        tick.tick().await;
        let now = look();
        let quiet = now == last_tick;
        last_tick = now;
        if now.0 == trimmed.0 || !(quiet || last_trim.elapsed() >= Duration::from_secs(10)) {
            continue;
        }
        trimmed = now;
        last_trim = Instant::now();
        let released = tokio::task::spawn_blocking(crate::sys::trim_heap)
            .await
            .unwrap_or(false);
        tracing::debug!(
            released,
            ms = last_trim.elapsed().as_secs_f64() * 1000.0,
            "trimmed the heap after evictions"
        );
    }
}

/// A started server. Dropping it without `shutdown` leaves it running.
pub struct RunningServer {
    addr: SocketAddr,
    runtime: Runtime,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's runtime (its classes and metrics).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Stops accepting, finishes in-flight events and waits for their commits.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.context("server task panicked")?
    }
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}
