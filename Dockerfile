# mxswitch: one image for agents and the controller (the command picks which: see docker-compose.yml).
# Build: docker build --build-arg MXSWITCH_COMMIT=$(git rev-parse --short HEAD) -t mxswitch .
# (the build context has no .git, so the commit `mxswitch --version` and mxswitch_build_info report comes from here)

# Build stage: dev dependencies (TypeScript) and a C++ toolchain for better-sqlite3's native module.
FROM node:20-bookworm-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY agent agent
COPY control control
COPY shared shared
COPY proto/gen proto/gen
COPY scripts scripts
ARG MXSWITCH_COMMIT
RUN npm run build && npm prune --omit=dev

# Final stage: production dependencies (better-sqlite3 already compiled) and the compiled JavaScript; no
# sources, no tests, no compiler, no TypeScript loader.
FROM node:20-bookworm-slim
WORKDIR /opt/mxswitch
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules node_modules
COPY --from=build /src/dist dist
RUN ln -s /opt/mxswitch/dist/control/cli/main.js /usr/local/bin/mxswitch \
 && useradd --system --user-group --home-dir /var/lib/mxswitch --shell /usr/sbin/nologin mxswitch \
 && mkdir -p /var/lib/mxswitch && chown mxswitch:mxswitch /var/lib/mxswitch
# Port 25 as a non-root user: Docker (20.10+) sets net.ipv4.ip_unprivileged_port_start=0 in a container's own
# network namespace, so no capability is needed.
USER mxswitch
VOLUME /var/lib/mxswitch
# SMTP (agent), gRPC (controller), /metrics and /healthz (agent 9464, controller 9465: http.listen in examples/).
EXPOSE 25 7070 9464 9465
# Healthy when this container's agent or controller answers /healthz with 200 on its usual port, so a config
# needs http.listen on 9464 or 9465 (slim images have no curl; node has fetch).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "Promise.any([9464, 9465].map((p) => fetch(`http://127.0.0.1:${p}/healthz`, { signal: AbortSignal.timeout(4000) }).then((r) => { if (!r.ok) throw new Error(String(r.status)); }))).then(() => process.exit(0), () => process.exit(1))"]
ENTRYPOINT ["mxswitch"]
CMD ["--help"]
