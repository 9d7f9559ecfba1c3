# georep as a container: `docker build -t georep .`, then
#   docker run -v $PWD/georep.yaml:/etc/georep/georep.yaml:ro -p 9090:9090 georep
# (docker-compose.yml runs it next to a primary and two replicas).

# Build stage: the release binary, dependencies cached in their own layer.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && for b in $(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | tail -n +2); do echo 'fn main() {}' > benches/$b.rs; done \
    && cargo build --release --locked && rm -rf src benches
COPY src src
COPY benches benches
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin georep

# Runtime stage: the binary, CA certificates for https registries, a
# non-root user, and a state directory it owns.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/georep --shell /usr/sbin/nologin georep \
    && mkdir -p /var/lib/georep /etc/georep && chown georep:georep /var/lib/georep
COPY --from=build /src/target/release/georep /usr/local/bin/georep
USER georep
VOLUME ["/var/lib/georep"]
EXPOSE 9090
# `georep health` asks the daemon's /healthz at the config's listen address.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["georep", "health", "--config", "/etc/georep/georep.yaml"]
ENTRYPOINT ["georep"]
CMD ["run", "--config", "/etc/georep/georep.yaml"]
