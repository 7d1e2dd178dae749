# syntax=docker/dockerfile:1
#
# Roost in a container.
#
#   docker build -t roost .
#   docker run -d --name roost -p 127.0.0.1:8787:8787 -v roost-data:/var/lib/roost \
#     -e ROOST_AUTH_SECRET=change-me -e ROOST_ADMIN_TOKEN=change-me-too roost
#
# Inside the container Roost listens on 0.0.0.0:8787, which it refuses to do
# without an auth secret: set ROOST_AUTH_SECRET, or ROOST_ALLOW_ANONYMOUS=true
# when the published port is reachable only by you (deploy/compose.yaml).
# Every flag is also a ROOST_* variable (`roost serve --help`). On
# `docker stop` Roost drains for up to --drain-timeout (10 s): give it
# longer than that (`docker stop -t 30`, compose's stop_grace_period).
# tests/tests/dist.rs checks this file and runs its command.

# Builder and runtime share a Debian release, so the binary finds the glibc
# it was linked against.
FROM rust:1-slim-bookworm AS build
# A C compiler for the bundled SQLite, libclang for its generated bindings.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libclang-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The `dist` profile (workspace Cargo.toml): release, stripped. The caches
# keep crates and build output between builds; the binary leaves them.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --profile dist -p roost --bin roost \
    && install -D -m 0755 target/dist/roost /out/roost

FROM debian:bookworm-slim
# A fixed, unprivileged uid, so a bind-mounted data directory can be chowned to it.
RUN groupadd --system --gid 10001 roost \
    && useradd --system --uid 10001 --gid roost --no-create-home \
       --home-dir /var/lib/roost --shell /usr/sbin/nologin roost \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/roost
COPY --from=build /out/roost /usr/local/bin/roost
USER 10001:10001
WORKDIR /var/lib/roost
# One SQLite file per object, the commit log and the catalog: keep it.
VOLUME ["/var/lib/roost"]
EXPOSE 8787
# /readyz answers 200 once recovery is done, 503 while draining or after a
# commit log write failed. The image
# has no curl: bash opens the connection itself.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8787 && printf 'GET /readyz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q '^HTTP/1\\.[01] 200 '"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/roost"]
CMD ["serve", "--listen", "0.0.0.0:8787", "--data", "/var/lib/roost"]
