# mxswitch: one image for agents and the controller.
FROM node:20-bookworm-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/mxswitch
COPY package.json package-lock.json ./
RUN npm ci --omit=dev
COPY . .

FROM node:20-bookworm-slim
WORKDIR /opt/mxswitch
COPY --from=build /opt/mxswitch /opt/mxswitch
RUN useradd --system --home /var/lib/mxswitch mxswitch && mkdir -p /var/lib/mxswitch && chown mxswitch /var/lib/mxswitch
USER mxswitch
VOLUME /var/lib/mxswitch
ENTRYPOINT ["node", "/opt/mxswitch/bin/mxswitch.js"]
CMD ["--help"]
