# Workledger: one binary, `workledger serve` by default.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p workledger && strip target/release/workledger

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 workledger
COPY --from=build /src/target/release/workledger /usr/local/bin/workledger
USER workledger
ENV WORKLEDGER_LISTEN=0.0.0.0:8080 WORKLEDGER_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD ["/bin/sh", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080"]
ENTRYPOINT ["workledger"]
CMD ["serve"]
