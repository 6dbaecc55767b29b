import type { z } from 'zod';
import { agentConfigSchema, controllerConfigSchema, envName, parseConfig, schemaKeyPaths } from './config.js';

/** What each config key means; a test fails when a schema key has no entry here, so the README can't drift. */
export const KEY_DOCS: Record<'agent' | 'controller', Record<string, string>> = {
  agent: {
    id: 'Unique agent id in the fleet (letters, digits, `.`, `_`, `-`)',
    region: 'Free-form region label shown in `status`',
    dataDir: 'Directory of `queue.db` (SQLite queue) and `routes.json` + `routes.journal` (last applied table)',
    'smtp.listen': 'SMTP listen address',
    'smtp.hostname': 'Name in the banner, EHLO and Received headers (default: the host name)',
    'smtp.maxMessageSize': 'Largest message accepted (`552 5.3.4` above it); advertised in EHLO SIZE',
    'smtp.bareNewline': '`normalize` bare CR/LF in data to CRLF (and remove NUL bytes and control characters in front of a line\'s first dot), or `reject` the message: `550 5.5.2` for bare CR/LF, `550 5.6.0` for NUL or controls before a dot',
    'smtp.maxConnections': 'Concurrent SMTP sessions; more get `421`',
    'smtp.connectionRateLimit': 'New connections per client IP per minute (`421 4.7.0` above it); 0 = no limit',
    'smtp.maxRecipients': 'Recipients per message (at least 100); more get `452 4.5.3`',
    'smtp.idleTimeout': 'Idle session timeout (`421` and close)',
    'smtp.dataTimeout': 'Longest time to receive one message\'s data, however fast it comes (`421 4.4.2` and close)',
    'smtp.maxReceivedHeaders': 'Received headers that mean a loop (`554 5.4.6`)',
    'smtp.shutdownTimeout': 'On SIGTERM, how long open sessions may finish before `421`',
    'smtp.maxConnectionsPerClient': 'Concurrent connections from one client IP; above it `421 4.7.0` (Postfix `smtpd_client_connection_count_limit`)',
    'smtp.greetPause': 'Delay before the 220 greeting; a client that talks before it gets `421` (early talker); a client that waited once is greeted at once for a day (like postscreen\'s cache). 0 greets at once',
    'smtp.commandTimeout': 'A command line must be complete within this time of the server starting to wait for it, however its bytes trickle in; else `421 4.4.2` and close (Postfix `smtpd_per_record_deadline`)',
    'smtp.minDataRate': 'Bytes per second a client must keep up during DATA: the command deadline grows by the time the bytes so far take at this rate (Postfix `smtpd_min_data_rate`)',
    'smtp.tls.cert': 'Certificate (PEM) for STARTTLS; setting `smtp.tls` turns STARTTLS on',
    'smtp.tls.key': 'Private key (PEM) for STARTTLS',
    'smtp.tls.ca': 'Optional CA bundle sent with the certificate',
    routes: 'Bootstrap routing table (`match`, `target`, `hold`, `tls`, `verify`) used until a controller table is applied',
    'controller.grpc.address': 'Controller address for the gRPC control channel',
    'controller.grpc.token': 'Agent bearer token (the controller\'s `tokens.agent`)',
    'controller.grpc.tls.ca': 'CA that signed the controller\'s certificate (turns TLS on)',
    'controller.grpc.tls.cert': 'Client certificate for mutual TLS',
    'controller.grpc.tls.key': 'Client key for mutual TLS',
    'controller.nats.servers': 'NATS servers (`nats://host:4222`, `tls://…`) for the NATS control channel (instead of gRPC)',
    'controller.nats.token': 'NATS token (one of token, user/password, credentials)',
    'controller.nats.user': 'NATS user (with `password`); give each agent its own user, see the account layout',
    'controller.nats.password': 'Password of `user`',
    'controller.nats.credentials': 'NATS `.creds` file (JWT + NKey seed) for operator/account (decentralized) auth',
    'controller.nats.tls.ca': 'CA that signed the NATS servers\' certificates (turns TLS on)',
    'controller.nats.tls.cert': 'Client certificate when the NATS servers verify clients (with `key`)',
    'controller.nats.tls.key': 'Client key',
    'controller.nats.fleet': 'Fleet name: prefix of every NATS bucket (`<fleet>-routes`, `-agents`, `-ops`) and subject (`<fleet>.cmd.<id>`); same on controller and agents',
    'controller.healthInterval': 'How often health is reported to the controller',
    'controller.startupGrace': 'After start-up nothing is delivered until the controller\'s current table is applied, or until the controller has been unreachable this long in all (then the persisted table is used): a returning agent never delivers to a destination held while it was away',
    'http.listen': 'Address of `/metrics` (Prometheus) and `/healthz`; off when unset',
    'retry.intervals': 'Back-off after each temporary failure; the last one repeats',
    'retry.maxAge': 'Time in the queue (hold time excluded) after which mail bounces (`5.4.7`)',
    'retry.jitter': 'Random spread of each retry interval (0.2 = ±20%)',
    'delivery.connectionsPerHop': 'Concurrent connections per next hop (also when a whole queue becomes due)',
    'delivery.connectTimeout': 'TCP connect timeout to a next hop',
    'delivery.greetingTimeout': 'Wait for the next hop\'s greeting',
    'delivery.socketTimeout': 'Idle timeout of an outbound SMTP session',
    'delivery.batchSize': 'Due recipients taken from the queue per scheduling round',
    'delivery.pollInterval': 'How often the queue is checked for due mail (new mail starts at once)',
    'delivery.resolvers': 'DNS resolvers (`IP[:PORT]`) for MX targets; default `/etc/resolv.conf`',
    'verify.unreachable': 'For routes with `verify: probe`, when the next hop cannot tell (held route, unreachable, 4xx): `accept` the recipient, or `tempfail` (450 4.1.1)',
    'verify.positiveTtl': 'How long an address the next hop accepted is remembered (in `verify.db`)',
    'verify.negativeTtl': 'How long an address the next hop refused with 5xx is remembered',
    'verify.timeout': 'Connect and reply timeout of a probe',
    'verify.probesPerSecond': 'Probes per second per next hop (one shared connection each); over it a new address gets 450 4.1.1 whatever `unreachable` says, so a dictionary attack neither queues nor reaches the next hop',
    'shadow.listen': 'Shadow redundancy on: address of the peer service (gRPC) where other agents store their shadow copies; the controller assigns each agent a peer (another region first)',
    'shadow.advertise': 'Address peers dial (`host:port`); default the listen host (`smtp.hostname` when it listens on a wildcard address) with the bound port',
    'shadow.takeoverAfter': 'An agent disconnected from the controller this long, and unreachable from its peer too, is taken over: the peer delivers its shadow copies',
    'shadow.onPeerDown': 'When the peer does not confirm a copy within `shadow.timeout`: `accept` (250 with one copy, counted in `mxswitch_unshadowed_messages`, copied once a peer is back) or `tempfail` (`451 4.4.3`, nothing kept)',
    'shadow.timeout': 'How long the 250 waits for the peer\'s durable commit of the copy (a large message: all its parts too)',
    'shadow.tls.cert': 'Mutual TLS on the peer port (setting `shadow.tls` turns it on): this agent\'s certificate (PEM), naming its agent id (CN or a DNS SAN); a peer or client whose certificate names another id is refused, beside the pair credential',
    'shadow.tls.key': 'Private key (PEM) of `shadow.tls.cert`',
    'shadow.tls.ca': 'CA (PEM) that signed every agent\'s peer certificate; certificates of any other CA are refused',
    'log.level': 'pino log level',
    'log.format': '`json` (one JSON object per line: ISO time, level name, fields) or `pretty` (one readable line per record); default pretty when stderr is a terminal, else json',
  },
  controller: {
    dataDir: 'Directory of `controller.db` (routes, versions, audit, agents, operations); required unless `nats` is set (NATS mode keeps no local state)',
    'grpc.listen': 'Agent and admin gRPC address',
    'grpc.tls.cert': 'Server certificate (PEM); setting `grpc.tls` turns TLS on',
    'grpc.tls.key': 'Server key (PEM)',
    'grpc.tls.ca': 'CA for client certificates',
    'grpc.tls.requireClientCert': 'Mutual TLS: agents and operators must present a certificate signed by `ca`',
    'grpc.allowInsecureRemote': 'Allow plaintext gRPC on a non-loopback address',
    'grpc.heartbeatInterval': 'Application heartbeat to agents',
    'grpc.sessionTimeout': 'A session silent this long is closed (the agent reconnects)',
    'tokens.agent': 'Bearer token gRPC agents present (at least 8 characters), shared by every agent: whoever holds it may claim any agent id; required unless `nats` or `tokens.agents` is set',
    'tokens.agents': 'Per-agent tokens, `{ID: TOKEN}`: an agent presenting one may only be the agent `ID` (`PERMISSION_DENIED` otherwise), identity without mTLS',
    'tokens.admin': 'Bearer token operators and the CLI present (at least 8 characters), or a list of named tokens `[{name: alice, token: ...}]`, one per person or system: `audit ls` names the token that made each change (a single token is recorded as `admin`)',
    'tokens.viewer': 'Read-only bearer token (at least 8 characters): the HTTP API and dashboard on `http.listen`, and the admin service\'s read calls (status, watch, route ls, operation, audit ls, queue ls/show/shape and --dry-run); every change is refused with `PERMISSION_DENIED`; must differ from every other token; a string or a list of named tokens like `tokens.admin`',
    'nats.servers': 'NATS mode: NATS servers; routes, agent acks/health and operations live in JetStream KV, agents use `controller.nats`',
    'nats.token': 'NATS token (one of token, user/password, credentials)',
    'nats.user': 'NATS user (with `password`)',
    'nats.password': 'Password of `user`',
    'nats.credentials': 'NATS `.creds` file (JWT + NKey seed) for operator/account (decentralized) auth',
    'nats.tls.ca': 'CA that signed the NATS servers\' certificates (turns TLS on)',
    'nats.tls.cert': 'Client certificate when the NATS servers verify clients (with `key`)',
    'nats.tls.key': 'Client key',
    'nats.fleet': 'Fleet name: prefix of the buckets and subjects; the agents\' `controller.nats.fleet`',
    'nats.replicas': 'JetStream replicas of the buckets the controller creates (1, 3 or 5; at most the cluster size)',
    'nats.operationLease': 'A running operation whose controller stopped renewing it this long is resumed by another replica',
    expectedAgents: 'Agents every step waits for; default every agent that ever registered until `agent rm`',
    'http.listen': 'Address of `/metrics`, `/healthz`, the dashboard (`/`) and the read-only JSON API (`/api/v1/...`, viewer or admin token); off when unset',
    lostAfter: 'An agent silent this long is `lost` (not only disconnected)',
    stepTimeout: 'Default wait for every agent\'s ack in hold/release/switchover',
    commandTimeout: 'Default wait for an agent\'s answer to a queue command or flush',
    'log.level': 'pino log level',
    'log.format': '`json` (one JSON object per line: ISO time, level name, fields) or `pretty` (one readable line per record); default pretty when stderr is a terminal, else json',
  },
};

const MINIMAL: Record<'agent' | 'controller', unknown> = {
  agent: { id: 'example', dataDir: '/var/lib/mxswitch' },
  controller: { dataDir: '/var/lib/mxswitch', tokens: { agent: 'xxxxxxxx', admin: 'xxxxxxxx' } },
};

/** Minimal configs with the optional sections present, for the defaults of keys inside them. */
const WITH_SECTIONS: Record<'agent' | 'controller', unknown> = {
  agent: { id: 'example', dataDir: '/var/lib/mxswitch', controller: { nats: { servers: ['nats://127.0.0.1:4222'] } } },
  controller: { tokens: { admin: 'xxxxxxxx' }, nats: { servers: ['nats://127.0.0.1:4222'] } },
};

/** Keys required in one mode only. */
const CONDITIONAL: Record<'agent' | 'controller', Record<string, string>> = {
  agent: {},
  controller: { dataDir: 'required without `nats`', 'tokens.agent': 'required without `nats` or `tokens.agents`' },
};

function valueAt(doc: unknown, path: readonly string[]): unknown {
  return path.reduce<unknown>((node, key) => (node && typeof node === 'object' ? (node as Record<string, unknown>)[key] : undefined), doc);
}

function formatDefault(path: readonly string[], value: unknown, required: boolean): string {
  if (required) return 'required';
  if (value === undefined) return '—';
  const key = path.at(-1)!;
  // Durations are stored in ms; show them the way they are written.
  if (/(Timeout|Interval|interval|intervals|maxAge|lostAfter|Lease)$/.test(key) && typeof value === 'number') return `${value}ms`;
  if (Array.isArray(value) && key === 'intervals') return `[${value.map((v) => `${v}ms`).join(', ')}]`;
  return `\`${JSON.stringify(value)}\``;
}

/** The README's config reference table for one schema: key, environment variable, default, meaning. */
export function configReference(kind: 'agent' | 'controller'): string {
  const schema: z.ZodType = kind === 'agent' ? agentConfigSchema : controllerConfigSchema;
  const defaults = parseConfig(schema, MINIMAL[kind]);
  const sectionDefaults = parseConfig(schema, WITH_SECTIONS[kind]);
  const required = new Set(kind === 'agent' ? ['id', 'dataDir'] : ['tokens.admin']);
  const rows = schemaKeyPaths(schema).map((path) => {
    const key = path.join('.');
    const doc = KEY_DOCS[kind][key];
    if (!doc) throw new Error(`${kind} config key ${key} has no description in shared/config-docs.ts`);
    const conditional = CONDITIONAL[kind][key];
    const value = valueAt(defaults, path) ?? valueAt(sectionDefaults, path);
    return `| \`${key}\` | \`${envName(path)}\` | ${conditional ?? formatDefault(path, value, required.has(key))} | ${doc} |`;
  });
  return ['| key | environment | default | meaning |', '|---|---|---|---|', ...rows].join('\n');
}

/** Replaces the text between `<!-- NAME:start -->` and `<!-- NAME:end -->`. */
export function replaceSection(text: string, name: string, body: string): string {
  const start = `<!-- ${name}:start -->`;
  const end = `<!-- ${name}:end -->`;
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  if (i === -1 || j < i) throw new Error(`README has no ${start} ... ${end} section`);
  return `${text.slice(0, i + start.length)}\n${body}\n${text.slice(j)}`;
}

export function renderReadme(readme: string): string {
  return replaceSection(replaceSection(readme, 'agent-config', configReference('agent')), 'controller-config', configReference('controller'));
}
