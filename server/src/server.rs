//! [`Server`] and its builder: how the binary — or a user's own binary that
//! embeds Roost like an axum app — registers classes and runs.
//!
//! Start-up order: replay the commit log into object files, start the log
//! writer and the catalog, then accept connections. Shutdown order: stop
//! accepting, let in-flight requests finish, let every actor finish and commit
//! its queued events, then stop the log writer.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::catalog::Catalog;
use crate::commitlog::{recovery, CommitLog};
use crate::config::Config;
use crate::id::validate_class;
use crate::metrics::Metrics;
use crate::object::DurableObject;
use crate::runtime::{Registry, Runtime, RuntimeConfig};

pub struct Server;

impl Server {
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            registry: Registry::default(),
            config: Config::default(),
            bad_class: None,
        }
    }
}

pub struct ServerBuilder {
    registry: Registry,
    config: Config,
    bad_class: Option<String>,
}

impl ServerBuilder {
    /// Registers a class under `name` (`[a-z][a-z0-9_-]{0,63}`).
    pub fn class<T: DurableObject>(mut self, name: &str) -> Self {
        if validate_class(name).is_err() {
            self.bad_class = Some(name.to_owned());
        }
        self.registry.add::<T>(name);
        self
    }

    /// Registers the built-in classes (`counter`, ...).
    pub fn with_builtins(self) -> Self {
        self.class::<crate::classes::counter::Counter>("counter")
            .class::<crate::classes::room::Room>("room")
            .class::<crate::classes::ydoc::Ydoc>("ydoc")
    }

    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Recovers storage and starts serving on `listener`.
    pub async fn start(self, listener: TcpListener) -> anyhow::Result<RunningServer> {
        if let Some(bad) = self.bad_class {
            anyhow::bail!("class name `{bad}` is invalid: it must match [a-z][a-z0-9_-]{{0,63}}");
        }
        let config = self.config;
        let open_files = match crate::sys::raise_nofile_limit() {
            Ok(n) => {
                tracing::debug!(limit = n, "open-file limit");
                n
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot raise the open-file limit");
                1024
            }
        };
        // Every path below is built from this one: make it absolute once, so a
        // relative `--data` (the default `./roost-data` included) never leaves
        // an empty parent to fsync, and a later change of directory is harmless.
        let data_dir = std::path::absolute(&config.data_dir).with_context(|| {
            format!(
                "cannot resolve data directory {}",
                config.data_dir.display()
            )
        })?;
        let config = Config {
            data_dir: data_dir.clone(),
            ..config
        };
        crate::storage::create_dir_all_durable(&data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        check_format(&data_dir)?;
        let report = tokio::task::spawn_blocking({
            let dir = data_dir.clone();
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
        let metrics = Arc::new(Metrics::default());
        let log = CommitLog::start(&data_dir, config.log.clone(), metrics.clone())
            .context("cannot start the commit log")?;
        let catalog = Catalog::open(&data_dir).context("cannot open the catalog")?;
        for (kind, value, until) in catalog.revocations().await {
            match kind.as_str() {
                "jti" => config.auth.revoke(Some(value), None),
                _ => config.auth.revoke(None, Some((value, until))),
            }
        }
        let runtime = Runtime::new(
            RuntimeConfig {
                data_dir: data_dir.clone(),
                idle_timeout: config.idle_timeout,
                mailbox_depth: config.mailbox_depth.max(1),
                max_batch: config.max_batch.max(1),
                file_commit_interval: config.file_commit_interval,
                storage: config.storage.clone(),
                sockets: config.sockets.clone(),
                alarms: config.alarms.clone(),
                ydoc: config.ydoc.clone(),
                auth: config.auth.clone(),
                fault: config.fault.clone(),
                durability: config.durability,
                admin_sql: config.admin_sql.clone(),
                cors_origins: config.cors_origins.clone(),
                max_objects: config.max_objects,
                tidy_after: config.tidy_after,
            },
            self.registry,
            metrics,
            log,
            catalog,
        );
        crate::runtime::alarms::Alarms::start(&runtime).await;
        let heartbeat = tokio::spawn(crate::sockets::heartbeat(
            runtime.sockets().clone(),
            runtime.config().sockets.ping_interval,
        ));
        let router = crate::http::router(runtime.clone(), config.max_body_bytes);
        let metrics_server = match config.metrics_listen {
            None => None,
            Some(at) => {
                let listener = TcpListener::bind(at)
                    .await
                    .with_context(|| format!("cannot listen on {at} (--metrics-listen)"))?;
                tracing::info!(listen = %at, "serving /metrics without a token");
                let router = crate::http::metrics_router(runtime.clone());
                Some(tokio::spawn(async move {
                    let _ = axum::serve(listener, router).await;
                }))
            }
        };
        let addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let serve_runtime = runtime.clone();
        let drain_timeout = config.drain_timeout;
        let (connections, max_per_ip) = (config.connections.clone(), config.max_connections_per_ip);
        let trimmer = tokio::spawn(trim_heap_after_evictions(runtime.metrics().clone()));
        let task = tokio::spawn(async move {
            let (http_stop_tx, http_stop_rx) = oneshot::channel::<()>();
            let mut http = tokio::spawn(crate::http::serve::serve(
                listener,
                router,
                connections,
                max_per_ip,
                open_files,
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
                _ = stop_rx => {}
                served = &mut http => {
                    trimmer.abort();
                    serve_runtime.shutdown(drain_timeout).await;
                    serve_runtime.log().close().await;
                    return served.context("HTTP server task failed");
                }
            }
            if let Some(m) = &metrics_server {
                m.abort();
            }
            let started = tokio::time::Instant::now();
            serve_runtime.shutdown(drain_timeout).await;
            let _ = http_stop_tx.send(());
            let left = drain_timeout
                .saturating_sub(started.elapsed())
                .max(Duration::from_secs(1));
            let served = match tokio::time::timeout(left, &mut http).await {
                Ok(served) => served.context("HTTP server task failed"),
                Err(_) => {
                    tracing::warn!(
                        "HTTP connections still open after the drain timeout; closing them"
                    );
                    http.abort();
                    Ok(())
                }
            };
            trimmer.abort();
            heartbeat.abort();
            serve_runtime.log().close().await;
            served
        });
        Ok(RunningServer {
            addr,
            runtime,
            stop: Some(stop_tx),
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

/// The data directory's format: `<data>/FORMAT` holds `roost-data N`.
/// Written on first start; a directory of a newer format is refused (this
/// binary cannot read it); an older one would be upgraded here
/// (CHANGELOG.md lists each format).
pub const DATA_FORMAT: u32 = 1;

pub(crate) fn check_format(data_dir: &std::path::Path) -> anyhow::Result<()> {
    let path = data_dir.join("FORMAT");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let found: u32 = text
                .trim()
                .strip_prefix("roost-data ")
                .and_then(|n| n.parse().ok())
                .with_context(|| {
                    format!(
                        "{} is not a Roost format file (`roost-data N`)",
                        path.display()
                    )
                })?;
            if found > DATA_FORMAT {
                anyhow::bail!(
                    "{} holds data format {found}, newer than this Roost reads ({DATA_FORMAT}): run a newer Roost (see CHANGELOG.md)",
                    data_dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A new directory, or one from before the format was recorded
            // (the same format 1).
            let tmp = data_dir.join("FORMAT.tmp");
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, format!("roost-data {DATA_FORMAT}\n").as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(data_dir)?.sync_all()?;
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
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
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

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
