//! The distribution files against the real binary: the `Dockerfile` (read,
//! then its command run as the container would run it), `.dockerignore`,
//! `deploy/compose.yaml` and the systemd unit `deploy/roost.service`.
//!
//! No container engine runs where this suite runs, so nothing here builds
//! the image. What is checked instead: the image's shape (the `dist` profile,
//! an unprivileged user owning the volume, the exposed port, the health
//! check), that its command starts this binary and serves with its data in
//! the volume, that its health check passes against a ready server and fails
//! otherwise, that the build context holds the sources and nothing built,
//! and that compose and the unit agree with the binary's flags. Everything
//! runs on loopback: the image's `0.0.0.0` becomes `127.0.0.1` (port 0), its
//! absolute paths a temp directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use roost::config::parse_duration;
use roost_tests::dist::{
    exec_form, flag_value, parse_dockerfile, parse_healthcheck, replace_flag, unit_bool, unquote,
    Healthcheck, Ignore, Instruction, Stage, Unit, Yaml,
};
use roost_tests::{call, http, roost_bin, walk, ServerProcess};
use serde_json::json;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> Result<String> {
    std::fs::read_to_string(repo().join(rel)).with_context(|| format!("cannot read {rel}"))
}

/// The runtime stage of the Dockerfile, as the tests need it.
struct Image {
    stages: Vec<Stage>,
    /// ENTRYPOINT followed by CMD.
    argv: Vec<String>,
    env: Vec<(String, String)>,
    healthcheck: Healthcheck,
    expose: Vec<u16>,
    volumes: Vec<String>,
    /// `--listen` of the command: host and port.
    host: String,
    port: u16,
    /// `--data` of the command.
    data: String,
}

impl Image {
    fn load() -> Result<Image> {
        let stages = parse_dockerfile(&read("Dockerfile")?)?;
        let last = stages.last().context("no stage")?;
        let exec = |keyword: &str| -> Result<Vec<String>> {
            match last.last(keyword) {
                Some(i) => {
                    exec_form(&i.args).with_context(|| format!("{keyword} (line {})", i.line))
                }
                None => Ok(Vec::new()),
            }
        };
        let mut argv = exec("ENTRYPOINT")?;
        argv.extend(exec("CMD")?);
        ensure!(
            !argv.is_empty(),
            "the runtime stage has no ENTRYPOINT or CMD"
        );
        let mut env = Vec::new();
        for i in last.all("ENV") {
            ensure!(
                !i.args.contains(['"', '\'']),
                "quoted ENV is not read here: {}",
                i.args
            );
            for pair in i.args.split_whitespace() {
                let (k, v) = pair
                    .split_once('=')
                    .with_context(|| format!("ENV {} is not KEY=value", i.args))?;
                env.push((k.to_owned(), v.to_owned()));
            }
        }
        let healthcheck = parse_healthcheck(
            &last
                .last("HEALTHCHECK")
                .context("the runtime stage has no HEALTHCHECK")?
                .args,
        )?;
        let mut expose = Vec::new();
        for i in last.all("EXPOSE") {
            for port in i.args.split_whitespace() {
                let port = port.strip_suffix("/tcp").unwrap_or(port);
                expose.push(port.parse().with_context(|| format!("EXPOSE {port}"))?);
            }
        }
        let mut volumes = Vec::new();
        for i in last.all("VOLUME") {
            if i.args.starts_with('[') {
                volumes.extend(exec_form(&i.args)?);
            } else {
                volumes.extend(i.args.split_whitespace().map(str::to_owned));
            }
        }
        let listen = flag_value(&argv, "--listen").context("the command has no --listen")?;
        let (host, port) = listen
            .rsplit_once(':')
            .context("--listen is not host:port")?;
        let port = port.parse().context("--listen port")?;
        let data = flag_value(&argv, "--data")
            .context("the command has no --data")?
            .to_owned();
        Ok(Image {
            host: host.to_owned(),
            port,
            data,
            stages,
            argv,
            env,
            healthcheck,
            expose,
            volumes,
        })
    }

    fn runtime(&self) -> &Stage {
        self.stages
            .last()
            .expect("invariant: load checked there is a stage")
    }
}

/// `roost serve --help`.
fn serve_help() -> Result<String> {
    let out = std::process::Command::new(roost_bin())
        .args(["serve", "--help"])
        .output()
        .context("cannot run roost serve --help (run `cargo build --bins` first)")?;
    ensure!(out.status.success(), "roost serve --help failed");
    Ok(String::from_utf8(out.stdout)?)
}

/// The `[default: ...]` of `flag` in `roost serve --help`.
fn help_default(help: &str, flag: &str) -> Result<String> {
    let at = help
        .find(&format!("{flag} <"))
        .with_context(|| format!("no {flag} in --help"))?;
    let block = &help[at..];
    let block = &block[..block[2..].find("\n      --").map_or(block.len(), |e| e + 2)];
    let default = block
        .split("[default: ")
        .nth(1)
        .and_then(|d| d.split(']').next())
        .with_context(|| format!("no default for {flag}"))?;
    Ok(default.to_owned())
}

/// Every `ROOST_*` variable `roost serve --help` names.
fn help_envs(help: &str) -> Vec<String> {
    help.split("[env: ")
        .skip(1)
        .filter_map(|s| s.split(['=', ']']).next())
        .map(str::to_owned)
        .collect()
}

/// A temp directory for one run: `cwd/` (empty, the working directory) and
/// `fs/` (the image's or the host's absolute paths).
struct Sandbox {
    _dir: tempfile::TempDir,
    cwd: PathBuf,
    fs: PathBuf,
}

impl Sandbox {
    fn new() -> Result<Sandbox> {
        let dir = tempfile::tempdir()?;
        let cwd = dir.path().join("cwd");
        let fs = dir.path().join("fs");
        std::fs::create_dir(&cwd)?;
        std::fs::create_dir(&fs)?;
        Ok(Sandbox { _dir: dir, cwd, fs })
    }

    fn map(&self, absolute: &str) -> Result<PathBuf> {
        let relative = absolute
            .strip_prefix('/')
            .with_context(|| format!("{absolute} is not an absolute path"))?;
        Ok(self.fs.join(relative))
    }

    /// `argv` with the binary replaced by this build's, `--listen` moved to
    /// 127.0.0.1:0 and `--data` into `fs/` (created, as the image or
    /// systemd creates it). Returns the arguments after the binary.
    fn adapt(&self, argv: &[String]) -> Result<Vec<String>> {
        let mut args = argv.get(1..).context("empty command")?.to_vec();
        replace_flag(&mut args, "--listen", "127.0.0.1:0")?;
        let data = self.map(flag_value(&args, "--data").context("no --data")?)?;
        std::fs::create_dir_all(&data)?;
        replace_flag(
            &mut args,
            "--data",
            data.to_str().context("path is not UTF-8")?,
        )?;
        Ok(args)
    }

    fn cwd_is_empty(&self) -> Result<bool> {
        Ok(std::fs::read_dir(&self.cwd)?.next().is_none())
    }
}

async fn start(
    sandbox: &Sandbox,
    args: &[String],
    env: &[(String, String)],
) -> Result<ServerProcess> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ServerProcess::start_exact(&roost_bin(), &sandbox.cwd, &args, &env).await
}

/// The health check command aimed at `port` instead of `from`.
fn retarget(command: &[String], from: u16, port: u16) -> Result<Vec<String>> {
    let mut hits = 0;
    let out = command
        .iter()
        .map(|arg| {
            let mut arg = arg.clone();
            for host in ["127.0.0.1", "localhost"] {
                for sep in ['/', ':'] {
                    let old = format!("{host}{sep}{from}");
                    hits += arg.matches(&old).count();
                    arg = arg.replace(&old, &format!("127.0.0.1{sep}{port}"));
                }
            }
            arg
        })
        .collect();
    ensure!(
        hits > 0,
        "the health check does not target port {from}: {command:?}"
    );
    Ok(out)
}

/// Runs a health check command; true when it exits 0.
async fn probe(command: &[String]) -> Result<bool> {
    let (program, args) = command.split_first().context("empty health check")?;
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status(),
    )
    .await
    .context("the health check hung")??;
    Ok(status.success())
}

/// Runs this build with `args`, which must make it exit before it listens;
/// returns its stderr.
async fn exits_early(
    sandbox: &Sandbox,
    args: &[String],
    env: &[(String, String)],
) -> Result<String> {
    let mut command = tokio::process::Command::new(roost_bin());
    command.args(args).current_dir(&sandbox.cwd);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ROOST_") {
            command.env_remove(name);
        }
    }
    let child = command
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    // Dropped on timeout: the child is killed.
    let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .context("roost did not exit within 15 s (is it listening?)")??;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(!out.status.success(), "roost exited 0: {stderr}");
    Ok(stderr)
}

/// The word after `option` in an instruction's arguments.
fn option_of<'a>(i: &'a Instruction, option: &str) -> Option<&'a str> {
    let prefix = format!("{option}=");
    let words: Vec<&str> = i.args.split_whitespace().collect();
    words.iter().enumerate().find_map(|(n, w)| {
        if *w == option {
            words.get(n + 1).copied()
        } else {
            w.strip_prefix(&prefix)
        }
    })
}

#[test]
fn the_image_is_built_with_the_dist_profile_and_runs_unprivileged() -> Result<()> {
    let image = Image::load()?;
    let runtime = image.runtime();

    // The binary the command runs is copied from a build stage...
    let binary = &image.argv[0];
    let copy = runtime
        .all("COPY")
        .find(|i| i.args.split_whitespace().last() == Some(binary.as_str()))
        .with_context(|| format!("no COPY puts {binary} in the runtime stage"))?;
    let from = option_of(copy, "--from").context("the binary is not copied from a build stage")?;
    let source = copy
        .args
        .split_whitespace()
        .find(|w| !w.starts_with("--"))
        .context("COPY without a source")?;
    let build = image
        .stages
        .iter()
        .find(|s| s.name.as_deref() == Some(from))
        .with_context(|| format!("no stage named {from}"))?;
    // ...where cargo builds it with the `dist` profile and the lockfile, and
    // the result is what gets copied.
    let cargo = build
        .all("RUN")
        .find(|i| i.args.contains("cargo build"))
        .context("the build stage runs no `cargo build`")?;
    let words: Vec<&str> = cargo.args.split_whitespace().collect();
    ensure!(
        words.windows(2).any(|w| w == ["--profile", "dist"]) || words.contains(&"--profile=dist"),
        "`cargo build` without --profile dist: {}",
        cargo.args
    );
    ensure!(
        words.contains(&"--locked"),
        "`cargo build` without --locked"
    );
    ensure!(
        cargo.args.contains("target/dist/roost") && cargo.args.contains(source),
        "the build does not put target/dist/roost at {source}: {}",
        cargo.args
    );
    // The profile exists and strips.
    let manifest = read("Cargo.toml")?;
    let profile = manifest
        .split("[profile.dist]")
        .nth(1)
        .context("no [profile.dist] in Cargo.toml")?;
    let profile = profile.split("\n[").next().unwrap_or(profile);
    ensure!(
        profile.contains("strip = true"),
        "[profile.dist] does not strip"
    );
    // A C compiler and libclang for the SQLite bindings.
    let apt = build
        .all("RUN")
        .find(|i| i.args.contains("apt-get install"))
        .context("the build stage installs no packages")?;
    ensure!(
        apt.args.contains("libclang-dev"),
        "no libclang-dev: {}",
        apt.args
    );
    ensure!(
        ["gcc", "clang", "build-essential"]
            .iter()
            .any(|c| apt.args.split_whitespace().any(|w| w == *c)),
        "no C compiler: {}",
        apt.args
    );

    // A slim Debian runtime, the same release as the builder (its glibc).
    let codename = runtime
        .base
        .strip_prefix("debian:")
        .and_then(|b| b.strip_suffix("-slim"))
        .with_context(|| format!("the runtime is not debian:<release>-slim: {}", runtime.base))?;
    ensure!(
        build.base.contains(codename),
        "builder {} is not Debian {codename} like the runtime",
        build.base
    );

    // An unprivileged user, created in the image, owning the data directory.
    let user = runtime
        .last("USER")
        .context("no USER in the runtime stage")?;
    let uid = user.args.split(':').next().unwrap_or_default();
    ensure!(
        !matches!(uid, "" | "root" | "0"),
        "the runtime user is root: USER {}",
        user.args
    );
    ensure!(
        runtime
            .all("RUN")
            .any(|i| i.args.contains("useradd") && i.args.contains(uid)),
        "no RUN creates user {uid}"
    );
    let owned = runtime.all("RUN").any(|i| {
        let w: Vec<&str> = i.args.split_whitespace().collect();
        w.contains(&image.data.as_str())
            && w.windows(2)
                .any(|p| (p[0] == "-o" || p[0] == "chown") && p[1].split(':').next() == Some(uid))
    });
    ensure!(owned, "no RUN makes {} belong to {uid}", image.data);

    // Listens on every interface of the container, on the exposed port, with
    // its data in the volume.
    ensure!(
        matches!(image.host.as_str(), "0.0.0.0" | "[::]"),
        "inside a container Roost must listen on all interfaces, not {}",
        image.host
    );
    ensure!(
        image.expose.contains(&image.port),
        "EXPOSE {:?} does not include the listen port {}",
        image.expose,
        image.port
    );
    ensure!(
        image.volumes.contains(&image.data),
        "VOLUME {:?} does not include --data {}",
        image.volumes,
        image.data
    );
    ensure!(image.argv.get(1).map(String::as_str) == Some("serve"));

    // The health check asks /readyz on that port, with a timeout, after a
    // start period (recovery happens before the listener opens).
    let health = image.healthcheck.command.join(" ");
    ensure!(
        health.contains("/readyz"),
        "the health check does not ask /readyz: {health}"
    );
    retarget(&image.healthcheck.command, image.port, image.port)?;
    for option in ["timeout", "start-period"] {
        ensure!(
            image.healthcheck.options.contains_key(option),
            "HEALTHCHECK without --{option}"
        );
    }
    if let Some(signal) = runtime.last("STOPSIGNAL") {
        ensure!(
            signal.args == "SIGTERM",
            "STOPSIGNAL {} does not drain",
            signal.args
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_images_command_serves_from_the_volume_and_its_health_check_follows() -> Result<()> {
    let image = Image::load()?;
    let sandbox = Sandbox::new()?;
    let args = sandbox.adapt(&image.argv)?;
    let data = sandbox.map(&image.data)?;

    let server = start(&sandbox, &args, &image.env).await?;
    assert_eq!(roost_tests::status_of(&server, "/readyz").await?, 200);
    let client = http();
    let (status, body) = call(
        &client,
        &server,
        "counter",
        "dist",
        "increment",
        json!({"by": 1}),
    )
    .await?;
    assert_eq!((status, body), (200, json!(1)));
    // Everything went to the volume, nothing to the working directory.
    assert!(
        sandbox.cwd_is_empty()?,
        "the command wrote to its working directory"
    );
    assert!(
        !walk(&data).is_empty(),
        "nothing in the volume {}",
        data.display()
    );

    // The image's own health check passes against it...
    let port: u16 = server
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .context("no port in the server's address")?;
    let health = retarget(&image.healthcheck.command, image.port, port)?;
    assert!(
        probe(&health).await?,
        "the health check fails on a ready server"
    );
    // ...fails against a 503 (a draining server)...
    let draining = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let draining_port = draining.local_addr()?.port();
    let answer = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = draining.accept().await?;
        let mut buf = [0u8; 1024];
        let _ = socket.read(&mut buf).await?;
        socket
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await?;
        anyhow::Ok(())
    });
    let against_503 = retarget(&image.healthcheck.command, image.port, draining_port)?;
    assert!(
        !probe(&against_503).await?,
        "the health check passes on a 503"
    );
    answer.await??;
    // ...and once the server is gone.
    assert_eq!(
        server.terminate().await?,
        Some(0),
        "SIGTERM should exit cleanly"
    );
    assert!(
        !probe(&health).await?,
        "the health check passes with no server"
    );

    // A new container on the same volume has the data.
    let server = start(&sandbox, &args, &image.env).await?;
    let (status, body) = call(&client, &server, "counter", "dist", "get", json!(null)).await?;
    assert_eq!((status, body), (200, json!(1)));
    server.terminate().await?;
    assert!(sandbox.cwd_is_empty()?);
    Ok(())
}

#[test]
fn the_build_context_holds_the_sources_and_nothing_built() -> Result<()> {
    let ignore = Ignore::parse(&read(".dockerignore")?)?;
    // The build stage copies the whole context: .dockerignore alone decides.
    let image = Image::load()?;
    let copies_context = image.stages.iter().flat_map(|s| s.all("COPY")).any(|i| {
        let w: Vec<&str> = i
            .args
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        w.first() == Some(&".")
    });
    ensure!(
        copies_context,
        "no `COPY . <dir>`: this test assumes the whole context is copied"
    );

    for built in [
        "target/dist/roost",
        "target/debug/build/x/out/lib.rs",
        "fuzz/target/x",
        "node_modules/x/index.js",
        "client-ts/node_modules/yjs/package.json",
        "demos/web/node_modules/esbuild/bin/esbuild",
        "tests/browser/node_modules/playwright-core/index.js",
        "roost-data/catalog.sqlite",
        ".git/HEAD",
    ] {
        ensure!(ignore.excludes(built), "{built} would be sent to the build");
    }

    // Every tracked file the binary is built from is in the context.
    let out = std::process::Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(repo())
        .output();
    let tracked = match out {
        Ok(out) if out.status.success() => String::from_utf8(out.stdout)?,
        _ => {
            eprintln!("skipping the tracked-file half: `git ls-files` is not available here");
            return Ok(());
        }
    };
    let tracked: Vec<&str> = tracked.split('\0').filter(|p| !p.is_empty()).collect();
    let manifest = read("Cargo.toml")?;
    let members = manifest
        .split("members = [")
        .nth(1)
        .and_then(|m| m.split(']').next())
        .context("no workspace members")?;
    let mut needed: Vec<String> = vec!["Cargo.toml".into(), "Cargo.lock".into()];
    for member in members
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
    {
        needed.push(format!("{member}/Cargo.toml"));
    }
    for prefix in ["server/", "protocol/", "demos/web/dist/", "demos/lobby/"] {
        let files: Vec<&&str> = tracked.iter().filter(|p| p.starts_with(prefix)).collect();
        ensure!(!files.is_empty(), "no tracked file under {prefix}");
        needed.extend(files.into_iter().map(|p| (*p).to_owned()));
    }
    for path in &needed {
        ensure!(tracked.contains(&path.as_str()), "{path} is not tracked");
        ensure!(
            !ignore.excludes(path),
            "{path} is left out of the build context"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_runs_the_image_as_the_dockerfile_describes() -> Result<()> {
    let image = Image::load()?;
    let help = serve_help()?;
    let drain =
        parse_duration(&help_default(&help, "--drain-timeout")?).map_err(anyhow::Error::msg)?;
    let text = read("deploy/compose.yaml")?;
    let yaml = Yaml::parse(&text)?;
    let services = yaml.block(&["services"])?;
    let [service] = services.as_slice() else {
        bail!("expected one service, found {services:?}");
    };
    let name = service.strip_suffix(':').context("service")?;
    let at = |key: &str| -> Result<Vec<&str>> { yaml.block(&["services", name, key]) };
    let scalar = |path: &[&str], key: &str| -> Result<&str> {
        let mut full = vec!["services", name];
        full.extend_from_slice(path);
        yaml.scalar(&full, key).map(unquote)
    };

    // Built from the repository's Dockerfile.
    let context = repo().join("deploy").join(scalar(&["build"], "context")?);
    ensure!(
        context.canonicalize()? == repo().canonicalize()?,
        "the build context {} is not the repository",
        context.display()
    );
    let dockerfile = scalar(&["build"], "dockerfile").unwrap_or("Dockerfile");
    ensure!(
        context.join(dockerfile).is_file(),
        "no {dockerfile} in the build context"
    );

    let restart = scalar(&[], "restart")?;
    ensure!(
        matches!(restart, "always" | "unless-stopped" | "on-failure"),
        "restart: {restart}"
    );

    // The published port is the exposed one.
    let mut published = Vec::new();
    for port in at("ports")? {
        let port = unquote(port.strip_prefix("- ").context("ports entry")?);
        let parts: Vec<&str> = port.split(':').collect();
        let container: u16 = parts
            .last()
            .map(|p| p.trim_end_matches("/tcp"))
            .context("port")?
            .parse()
            .with_context(|| format!("port {port}"))?;
        ensure!(
            container == image.port,
            "{port} does not publish port {}",
            image.port
        );
        let host_ip = if parts.len() == 3 {
            parts[0]
        } else {
            "0.0.0.0"
        };
        published.push(host_ip.to_owned());
    }
    ensure!(!published.is_empty(), "no port published");

    // A named volume, declared, mounted where the data goes.
    let mut mounted = false;
    for volume in at("volumes")? {
        let volume = unquote(volume.strip_prefix("- ").context("volumes entry")?);
        let (source, target) = volume.split_once(':').context("volume source:target")?;
        if target.split(':').next() == Some(image.data.as_str()) {
            ensure!(
                yaml.block(&["volumes"])?
                    .contains(&format!("{source}:").as_str()),
                "volume {source} is not declared"
            );
            mounted = true;
        }
    }
    ensure!(mounted, "nothing mounted at {}", image.data);

    // The Dockerfile's health check, word for word.
    let test: Vec<String> = serde_json::from_str(scalar(&["healthcheck"], "test")?)
        .context("healthcheck test is not a flow sequence of quoted strings")?;
    ensure!(
        test.first().map(String::as_str) == Some("CMD")
            && test[1..] == image.healthcheck.command[..],
        "compose's health check differs from the Dockerfile's: {test:?}"
    );
    for key in ["interval", "timeout", "start_period"] {
        scalar(&["healthcheck"], key)?;
    }

    // Enough time to drain before SIGKILL.
    let grace = parse_duration(scalar(&[], "stop_grace_period")?).map_err(anyhow::Error::msg)?;
    ensure!(
        grace > drain,
        "stop_grace_period {grace:?} is not longer than the drain ({drain:?})"
    );
    if let Ok(signal) = scalar(&[], "stop_signal") {
        ensure!(signal == "SIGTERM", "stop_signal {signal}");
    }

    // Environment: real variables, and the commented examples too.
    let known = help_envs(&help);
    let mut env = Vec::new();
    for line in at("environment")? {
        let (key, value) = line
            .split_once(':')
            .context("environment entry is not KEY: value")?;
        ensure!(
            known.iter().any(|k| k == key),
            "{key} is not a variable of roost serve"
        );
        env.push((key.to_owned(), unquote(value.trim()).to_owned()));
    }
    for example in ["ROOST_AUTH_SECRET", "ROOST_ADMIN_TOKEN"] {
        ensure!(
            text.contains(&format!("# {example}:")),
            "no commented {example} example"
        );
        ensure!(
            known.iter().any(|k| k == example),
            "{example} is not a variable of roost serve"
        );
    }
    let secret = env.iter().any(|(k, _)| k == "ROOST_AUTH_SECRET");
    let anonymous = env
        .iter()
        .any(|(k, v)| k == "ROOST_ALLOW_ANONYMOUS" && v == "true");
    ensure!(
        secret || anonymous,
        "Roost refuses 0.0.0.0 with neither a secret nor anonymous access"
    );
    if anonymous && !secret {
        ensure!(
            published
                .iter()
                .all(|ip| ip == "127.0.0.1" || ip == "[::1]"),
            "anonymous access on a port published beyond loopback: {published:?}"
        );
    }

    // With that environment the container's non-loopback address passes
    // Roost's check; without it, it does not. Run on a documentation address
    // no interface has (192.0.2.1): it gets as far as binding, which fails,
    // and nothing ever listens.
    let sandbox = Sandbox::new()?;
    let mut args = sandbox.adapt(&image.argv)?;
    replace_flag(&mut args, "--listen", &format!("192.0.2.1:{}", image.port))?;
    let mut with_compose = image.env.clone();
    with_compose.extend(env);
    let stderr = exits_early(&sandbox, &args, &with_compose).await?;
    ensure!(
        stderr.contains("cannot listen on 192.0.2.1") && !stderr.contains("refusing"),
        "with compose's environment: {stderr}"
    );
    let stderr = exits_early(&sandbox, &args, &image.env).await?;
    ensure!(
        stderr.contains("refusing to listen"),
        "without it: {stderr}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_systemd_unit_is_hardened_and_its_command_serves() -> Result<()> {
    let text = read("deploy/roost.service")?;
    let unit = Unit::parse(&text)?;
    let service = |key: &str| unit.value("Service", key);
    let help = serve_help()?;

    // Its own user and state directory, which is the data directory.
    ensure!(
        unit_bool(service("DynamicUser"))
            || service("User").is_some_and(|u| !matches!(u, "root" | "0")),
        "the unit runs as root"
    );
    let state = service("StateDirectory").context("no StateDirectory")?;
    let exec = service("ExecStart").context("no ExecStart")?;
    ensure!(
        !exec.contains(['"', '\'', '$', '%']),
        "ExecStart with quotes, variables or specifiers is not read here: {exec}"
    );
    let argv: Vec<String> = exec.split_whitespace().map(str::to_owned).collect();
    ensure!(
        argv[0].starts_with('/'),
        "ExecStart's binary is not an absolute path"
    );
    ensure!(
        argv.get(1).map(String::as_str) == Some("serve"),
        "ExecStart is not `roost serve`"
    );
    let data = flag_value(&argv, "--data").context("ExecStart has no explicit --data")?;
    ensure!(
        data == format!("/var/lib/{state}"),
        "--data {data} is not the StateDirectory /var/lib/{state}"
    );
    let listen = flag_value(&argv, "--listen").unwrap_or("127.0.0.1:8787");
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
    ensure!(
        matches!(host, "127.0.0.1" | "[::1]" | "localhost"),
        "the unit sets no secret, so it must listen on loopback, not {listen}"
    );

    ensure!(
        matches!(
            service("Restart"),
            Some("on-failure" | "always" | "on-abnormal")
        ),
        "Restart={:?}",
        service("Restart")
    );
    // SIGTERM drains; systemd must wait longer than the drain.
    ensure!(service("KillSignal").unwrap_or("SIGTERM") == "SIGTERM");
    let drain = match flag_value(&argv, "--drain-timeout") {
        Some(d) => d.to_owned(),
        None => help_default(&help, "--drain-timeout")?,
    };
    let drain = parse_duration(&drain).map_err(anyhow::Error::msg)?;
    let stop = service("TimeoutStopSec").context("no TimeoutStopSec")?;
    let stop = parse_duration(stop).map_err(anyhow::Error::msg)?;
    ensure!(
        stop > drain,
        "TimeoutStopSec {stop:?} is not longer than the drain ({drain:?})"
    );
    let nofile = service("LimitNOFILE").context("no LimitNOFILE")?;
    ensure!(
        nofile == "infinity"
            || nofile
                .split(':')
                .all(|n| n.parse::<u64>().is_ok_and(|n| n >= 65_536)),
        "LimitNOFILE={nofile} is too low for many sockets"
    );

    // The sandbox.
    for key in [
        "NoNewPrivileges",
        "PrivateTmp",
        "PrivateDevices",
        "MemoryDenyWriteExecute",
        "ProtectKernelTunables",
        "ProtectControlGroups",
        "RestrictSUIDSGID",
    ] {
        ensure!(unit_bool(service(key)), "{key} is not on");
    }
    ensure!(
        service("ProtectSystem") == Some("strict"),
        "ProtectSystem is not strict"
    );
    ensure!(
        matches!(
            service("ProtectHome"),
            Some("yes" | "true" | "read-only" | "tmpfs")
        ),
        "ProtectHome is off"
    );
    let mut families: Vec<&str> = unit
        .values("Service", "RestrictAddressFamilies")
        .into_iter()
        .flat_map(str::split_whitespace)
        .collect();
    families.sort_unstable();
    ensure!(
        families == ["AF_INET", "AF_INET6", "AF_UNIX"],
        "RestrictAddressFamilies={families:?}"
    );
    let filters = unit.values("Service", "SystemCallFilter");
    ensure!(
        filters
            .iter()
            .any(|f| f.split_whitespace().any(|s| s == "@system-service")),
        "SystemCallFilter does not allow @system-service only"
    );
    // Roost raises its open-file limit itself (setrlimit, in @resources).
    ensure!(
        !filters
            .iter()
            .filter(|f| f.starts_with('~'))
            .any(|f| f.contains("@resources") || f.contains("setrlimit")),
        "SystemCallFilter denies setrlimit"
    );

    // Its command serves, from an empty working directory, with the data
    // where it says.
    let sandbox = Sandbox::new()?;
    let args = sandbox.adapt(&argv)?;
    let server = start(&sandbox, &args, &[]).await?;
    assert_eq!(roost_tests::status_of(&server, "/readyz").await?, 200);
    let (status, _) = call(
        &http(),
        &server,
        "counter",
        "unit",
        "increment",
        json!({"by": 1}),
    )
    .await?;
    assert_eq!(status, 200);
    assert!(
        sandbox.cwd_is_empty()?,
        "the command wrote to its working directory"
    );
    assert!(!walk(&sandbox.map(data)?).is_empty(), "nothing in {data}");
    assert_eq!(server.terminate().await?, Some(0));

    // systemd's own reading, where systemd-analyze exists: the unit with
    // this build's binary (verify wants an executable there).
    let analyze = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output();
    if !analyze.is_ok_and(|o| o.status.success()) {
        eprintln!("skipping systemd-analyze: not installed");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let copy = dir.path().join("roost.service");
    let bin = roost_bin();
    std::fs::write(
        &copy,
        text.replace(
            &format!("ExecStart={}", argv[0]),
            &format!("ExecStart={}", bin.display()),
        ),
    )?;
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()?;
    let stderr = String::from_utf8_lossy(&verify.stderr);
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("roost.service"))
        .collect();
    ensure!(
        verify.status.success() && about_unit.is_empty(),
        "systemd-analyze verify: {stderr}"
    );
    // Overall exposure at most 2.0 of 10 (the threshold is in tenths).
    let security = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&copy)
        .output()?;
    let stderr = String::from_utf8_lossy(&security.stderr);
    if stderr.contains("unrecognized option") || stderr.contains("Unknown option") {
        eprintln!("skipping systemd-analyze security: this systemd has no --offline");
        return Ok(());
    }
    let report = String::from_utf8_lossy(&security.stdout);
    let overall = report
        .lines()
        .find(|l| l.contains("Overall exposure"))
        .unwrap_or("");
    ensure!(
        security.status.success(),
        "exposure above 2.0: {overall}\n{stderr}"
    );
    Ok(())
}
