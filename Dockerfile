# handover: a job worker whose shutdown is safe, fast and visible.
#
#   docker build -t handover:0.1.0 .
#   docker run --rm -p 8080:8080 handover:0.1.0                      # sqlite store in /var/lib/handover
#   docker run --rm -p 8080:8080 -e HANDOVER_STORE=postgres://... handover:0.1.0
#
# Stopping: `docker stop -t 50` (the default 10 s is shorter than the default --grace of 30 s).
# See docs/operations.md for sizing --grace, --drain-delay and --final-scrape-wait.

# ---- build: the locked dependency set, the same command as CI --------------------------------
FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
# Only what `cargo build` reads: the manifest declares the [[bench]] target, so benches/ is
# needed too. Migrations, templates and static files are compiled into the binary.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
COPY benches ./benches
RUN cargo build --release --locked

# ---- runtime: libc and the binary, nothing else ------------------------------------------------
FROM debian:bookworm-slim
# A fixed numeric uid so that Kubernetes' runAsNonRoot can verify it. /var/lib/handover is the
# working directory: the default store sqlite://handover.db lands there (mount a volume on it to
# keep it). With a PostgreSQL store nothing is written to disk.
RUN groupadd --gid 10001 handover \
 && useradd --uid 10001 --gid 10001 --no-log-init --no-create-home \
      --home-dir /var/lib/handover --shell /usr/sbin/nologin handover \
 && mkdir -p /var/lib/handover \
 && chown 10001:10001 /var/lib/handover
COPY --from=builder /src/target/release/handover /usr/local/bin/handover
WORKDIR /var/lib/handover
# The worker's default is 127.0.0.1:8080, unreachable from outside a container.
ENV HANDOVER_LISTEN=0.0.0.0:8080
EXPOSE 8080
# SIGTERM starts the drain; a second SIGTERM (or SIGINT) forces it.
STOPSIGNAL SIGTERM
USER 10001:10001
# No shell and no init: handover installs its signal handlers at start and runs as PID 1.
ENTRYPOINT ["/usr/local/bin/handover"]
CMD ["worker"]
