import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError, errorMessage, quoteInput } from './errors.js';
import { parseServer } from './dns/query.js';
import { normalizeRoutes } from './routes.js';
import { parseDuration, parseHostPort, parseSize } from './units.js';

const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  try {
    return parseDuration(v);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: errorMessage(err) });
    return z.NEVER;
  }
});
const size = z.union([z.string(), z.number()]).transform((v, ctx) => {
  try {
    return parseSize(v);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: errorMessage(err) });
    return z.NEVER;
  }
});
const hostPort = z.string().refine(
  (v) => {
    try {
      parseHostPort(v);
      return true;
    } catch {
      return false;
    }
  },
  { message: 'expected host:port' },
);
const readableFile = z.string().refine(
  (p) => {
    try {
      readFileSync(p);
      return true;
    } catch {
      return false;
    }
  },
  { message: 'file cannot be read' },
);
const tlsFiles = z.strictObject({ cert: readableFile, key: readableFile, ca: readableFile.optional() });

/** A NATS connection: servers, one way to authenticate, optional TLS, and the fleet name (bucket/subject prefix). */
const natsConnectionShape = {
  servers: z.array(z.string().min(1)).min(1),
  token: z.string().min(1).optional(),
  user: z.string().min(1).optional(),
  password: z.string().optional(),
  // A .creds file (JWT + NKey seed) for decentralized (operator/account) auth.
  credentials: readableFile.optional(),
  tls: z.strictObject({ ca: readableFile.optional(), cert: readableFile.optional(), key: readableFile.optional() }).optional(),
  // Prefix of every bucket (<fleet>-routes, <fleet>-agents, <fleet>-ops) and subject (<fleet>.cmd.<agent>).
  fleet: z.string().regex(/^[A-Za-z0-9_-]{1,48}$/, 'letters, digits, _ and - (it is part of bucket names and subjects)').default('mxswitch'),
};
type NatsConnectionInput = { token?: string | undefined; user?: string | undefined; password?: string | undefined; credentials?: string | undefined; tls?: { cert?: string | undefined; key?: string | undefined } | undefined };
function checkNatsAuth(n: NatsConnectionInput, ctx: z.core.$RefinementCtx<unknown>): void {
  const ways = [n.token !== undefined, n.user !== undefined, n.credentials !== undefined].filter(Boolean).length;
  if (ways > 1) ctx.addIssue({ code: 'custom', path: [n.token !== undefined ? 'token' : 'user'], message: 'choose one of token, user/password or credentials' });
  if (n.password !== undefined && n.user === undefined) ctx.addIssue({ code: 'custom', path: ['user'], message: 'password needs user' });
  if (n.tls && (n.tls.cert === undefined) !== (n.tls.key === undefined)) ctx.addIssue({ code: 'custom', path: ['tls', n.tls.cert === undefined ? 'cert' : 'key'], message: 'cert and key go together (client certificate)' });
}
const natsConnection = z.strictObject(natsConnectionShape).superRefine(checkNatsAuth);

/** `log`, alike for agent and controller; format unset = pretty on a terminal, else json (shared/logger.ts). */
const logSchema = z
  .strictObject({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    format: z.enum(['json', 'pretty']).optional(),
  })
  .prefault({});

const routeSchema = z.strictObject({
  match: z.string(),
  target: z.string(),
  hold: z.boolean().optional(),
  tls: z.enum(['may', 'required']).optional(),
  verify: z.enum(['probe', 'none']).optional(),
});
const routeList = z.array(routeSchema).superRefine((routes, ctx) => {
  // Validate one route at a time so the error names its index (routes.3: ...), then the table as a whole.
  for (const [i, route] of routes.entries()) {
    try {
      normalizeRoutes([route]);
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: [i], message: errorMessage(err) });
      return;
    }
  }
  try {
    normalizeRoutes(routes);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: errorMessage(err) });
  }
});

export const agentConfigSchema = z.strictObject({
  id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'letters, digits, . _ - (max 63)'),
  region: z.string().default(''),
  dataDir: z.string().min(1),
  smtp: z
    .strictObject({
      listen: hostPort.default('0.0.0.0:25'),
      hostname: z.string().min(1).optional(),
      maxMessageSize: size.default(50 * 1024 * 1024),
      bareNewline: z.enum(['normalize', 'reject']).default('normalize'),
      maxConnections: z.number().int().positive().default(200),
      // Concurrent connections from one client IP (Postfix smtpd_client_connection_count_limit).
      maxConnectionsPerClient: z.number().int().positive().default(50),
      // Delay before the greeting; a client that talks before it is refused (early talker). 0 = greet at once.
      greetPause: duration.default(0),
      // New connections per client IP per minute (Postfix smtpd_client_connection_rate_limit); 0 = no limit.
      connectionRateLimit: z.number().int().min(0).default(0),
      maxRecipients: z.number().int().min(100).default(1000),
      idleTimeout: duration.default(300_000),
      // A command line must be complete this long after the server starts waiting for it, however slowly its bytes
      // trickle in (Postfix smtpd_timeout with smtpd_per_record_deadline); in DATA the time grows with minDataRate.
      commandTimeout: duration.default(300_000),
      // Bytes per second a client must keep up in DATA (Postfix smtpd_min_data_rate).
      minDataRate: z.number().int().min(1).default(500),
      dataTimeout: duration.default(600_000),
      maxReceivedHeaders: z.number().int().positive().default(50),
      shutdownTimeout: duration.default(30_000),
      tls: tlsFiles.optional(),
    })
    .prefault({}),
  routes: routeList.default([]),
  controller: z
    .strictObject({
      grpc: z
        .strictObject({
          address: hostPort,
          token: z.string().min(1),
          tls: z.strictObject({ ca: readableFile.optional(), cert: readableFile.optional(), key: readableFile.optional() }).optional(),
        })
        .optional(),
      nats: natsConnection.optional(),
      healthInterval: duration.default(5000),
      // After start-up, deliver nothing until the controller's current table is applied, or until the controller has
      // been unreachable this long (then deliver with the persisted table): a returning agent must not deliver to a
      // destination held while it was away (invariant 5), and a controller down for hours must not stop delivery.
      startupGrace: duration.default(30_000),
    })
    .refine((c) => !(c.grpc && c.nats), { message: 'choose one of grpc or nats' })
    .optional(),
  http: z.strictObject({ listen: hostPort }).optional(),
  retry: z
    .strictObject({
      intervals: z.array(duration).min(1).default([60_000, 300_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 14_400_000]),
      maxAge: duration.default(5 * 86_400_000),
      jitter: z.number().min(0).max(1).default(0.2),
    })
    .prefault({}),
  delivery: z
    .strictObject({
      connectionsPerHop: z.number().int().positive().default(20),
      connectTimeout: duration.default(30_000),
      greetingTimeout: duration.default(60_000),
      socketTimeout: duration.default(300_000),
      batchSize: z.number().int().positive().default(200),
      pollInterval: duration.default(1000),
      // Recursive resolvers for MX lookups of smtp:host:port targets, "IP[:PORT]"; default /etc/resolv.conf.
      resolvers: z
        .array(z.string().refine((v) => { try { parseServer(v); return true; } catch { return false; } }, { message: 'expected IP[:PORT]' }))
        .optional(),
    })
    .prefault({}),
  // Recipient verification by probe, for routes with `verify: probe` (Postfix reject_unverified_recipient).
  verify: z
    .strictObject({
      unreachable: z.enum(['accept', 'tempfail']).default('accept'),
      positiveTtl: duration.default(30 * 86_400_000),
      negativeTtl: duration.default(3_600_000),
      timeout: duration.default(10_000),
      probesPerSecond: z.number().int().positive().default(20),
    })
    .prefault({}),
  // Shadow redundancy: a copy of every accepted message on a peer agent (assigned by the controller) before 250.
  shadow: z
    .strictObject({
      listen: hostPort,
      // host:port peers dial; default: smtp.hostname (or the listen host when it is not a wildcard) with the bound port.
      advertise: hostPort.optional(),
      takeoverAfter: duration.default(600_000),
      onPeerDown: z.enum(['accept', 'tempfail']).default('accept'),
      timeout: duration.default(5000),
      // Mutual TLS on the peer port: certificates of one CA, each naming its agent id (CN or a DNS SAN).
      tls: z.strictObject({ cert: readableFile, key: readableFile, ca: readableFile }).optional(),
    })
    .optional(),
  log: logSchema,
});
export type AgentConfig = z.output<typeof agentConfigSchema>;

/**
 * tokens.admin / tokens.viewer: one token (its holder is named after the role in the audit trail), or a list of
 * named tokens, one per person or system, so the audit trail says who made a change (the controller takes the
 * name from the token, never from what the client says).
 */
const operatorTokens = z.union([
  z.string().min(8),
  z
    .array(z.strictObject({ name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$/, 'letters, digits, . _ @ + - (max 64)'), token: z.string().min(8) }))
    .min(1),
]);

/** One operator token: who holds it (for the audit trail), the secret, and what it may do. */
export interface OperatorToken {
  name: string;
  token: string;
  role: 'admin' | 'viewer';
}

/** Every operator token of `tokens`, the single-string form named after its role ("admin", "viewer"). */
export function operatorTokenList(tokens: { admin: z.output<typeof operatorTokens>; viewer?: z.output<typeof operatorTokens> | undefined }): OperatorToken[] {
  const list = (role: OperatorToken['role'], v: z.output<typeof operatorTokens> | undefined): OperatorToken[] =>
    v === undefined ? [] : typeof v === 'string' ? [{ name: role, token: v, role }] : v.map((t) => ({ ...t, role }));
  return [...list('admin', tokens.admin), ...list('viewer', tokens.viewer)];
}

export const controllerConfigSchema = z.strictObject({
  // Required with gRPC agents (controller.db); unused in NATS mode, where all state lives in JetStream.
  dataDir: z.string().min(1).optional(),
  grpc: z
    .strictObject({
      listen: hostPort.default('127.0.0.1:7070'),
      // requireClientCert = mutual TLS: agents and operators must present a certificate signed by `ca`.
      tls: tlsFiles
        .extend({ requireClientCert: z.boolean().default(false) })
        .refine((t) => !t.requireClientCert || t.ca !== undefined, { message: 'requireClientCert needs ca (the CA that signs client certificates)' })
        .optional(),
      allowInsecureRemote: z.boolean().default(false),
      // Application heartbeat on agent sessions (controller -> agent); gRPC keepalive runs underneath.
      heartbeatInterval: duration.default(5000),
      // A session with no message from its agent for this long is closed; the agent reconnects.
      sessionTimeout: duration.default(20_000),
    })
    .prefault({}),
  // tokens.agent (shared) and/or tokens.agents (one per agent id): required with gRPC agents; NATS agents
  // authenticate to NATS instead.
  tokens: z.strictObject({
    agent: z.string().min(8).optional(),
    agents: z.record(z.string().min(1), z.string().min(8)).optional(),
    admin: operatorTokens,
    // Read-only: the HTTP API and dashboard, and the admin service's read calls.
    viewer: operatorTokens.optional(),
  }),
  // NATS mode: routes, agent acks/health and operations live in JetStream KV; agents use controller.nats.
  nats: z
    .strictObject({
      ...natsConnectionShape,
      // JetStream replicas of the buckets the controller creates (1, 3 or 5; at most the cluster size).
      replicas: z.union([z.literal(1), z.literal(3), z.literal(5)]).default(1),
      // A running operation whose controller stopped renewing it for this long is resumed by another replica.
      operationLease: duration.default(15_000),
    })
    .superRefine(checkNatsAuth)
    .optional(),
  expectedAgents: z.array(z.string()).optional(),
  http: z.strictObject({ listen: hostPort }).optional(),
  lostAfter: duration.default(60_000),
  stepTimeout: duration.default(30_000),
  // Default wait for an agent's answer to a queue command or flush.
  commandTimeout: duration.default(30_000),
  log: logSchema,
}).superRefine((c, ctx) => {
  // A token has one role and one holder: a viewer token equal to another would read as that one (or make it
  // read-only), and two holders of one token could not be told apart in the audit trail.
  const operators = operatorTokenList(c.tokens);
  const agentTokens = [c.tokens.agent, ...Object.values(c.tokens.agents ?? {})];
  const admins = operators.filter((o) => o.role === 'admin').map((o) => o.token);
  // An admin token equal to the agent token is not refused here: configs had that before tokens had names.
  for (const [i, o] of operators.entries()) {
    const path = ['tokens', o.role, ...(typeof c.tokens[o.role] === 'string' ? [] : [operators.filter((x, j) => x.role === o.role && j < i).length])];
    if (o.role === 'viewer' && [...admins, ...agentTokens].includes(o.token)) {
      ctx.addIssue({ code: 'custom', path, message: 'must differ from tokens.admin, tokens.agent and every tokens.agents entry' });
    } else if (operators.some((x, j) => j < i && x.token === o.token)) {
      ctx.addIssue({ code: 'custom', path, message: `the same token as ${operators.find((x) => x.token === o.token)!.name}'s: each holder needs a token of their own` });
    } else if (operators.some((x, j) => j < i && x.name === o.name)) {
      ctx.addIssue({ code: 'custom', path: [...path, 'name'], message: `name ${JSON.stringify(o.name)} is taken by another token` });
    }
  }
  if (c.nats) return;
  if (c.dataDir === undefined) ctx.addIssue({ code: 'invalid_type', expected: 'string', input: undefined, path: ['dataDir'], message: 'required key is missing' });
  if (c.tokens.agent === undefined && c.tokens.agents === undefined) {
    ctx.addIssue({ code: 'invalid_type', expected: 'string', input: undefined, path: ['tokens', 'agent'], message: 'required key is missing (agents need it, or tokens.agents, unless nats is configured)' });
  }
});
export type ControllerConfig = z.output<typeof controllerConfigSchema>;

type Json = unknown;

/** Leaf key paths of a schema ("smtp.listen"), for env overrides and the README reference. */
export function schemaKeyPaths(schema: z.ZodType, prefix: string[] = []): string[][] {
  const def = (schema as unknown as { def: { type: string; innerType?: z.ZodType; in?: z.ZodType; shape?: Record<string, z.ZodType> } }).def;
  if (def.type === 'optional' || def.type === 'default' || def.type === 'prefault' || def.type === 'nullable') {
    return schemaKeyPaths(def.innerType!, prefix);
  }
  if (def.type === 'pipe') return schemaKeyPaths(def.in!, prefix);
  if (def.type === 'object') {
    const shape = (schema as unknown as { shape: Record<string, z.ZodType> }).shape;
    return Object.entries(shape).flatMap(([k, s]) => schemaKeyPaths(s, [...prefix, k]));
  }
  return [prefix];
}

/** smtp.maxMessageSize -> MXSWITCH_SMTP_MAX_MESSAGE_SIZE */
export function envName(path: readonly string[]): string {
  return `MXSWITCH_${path.map((p) => p.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('_')}`;
}

/** Sets the keys given in MXSWITCH_* variables; returns which keys came from which variable. */
function applyEnv(doc: Record<string, Json>, schema: z.ZodType, env: NodeJS.ProcessEnv): Map<string, string> {
  const fromEnv = new Map<string, string>();
  for (const path of schemaKeyPaths(schema)) {
    const name = envName(path);
    const value = env[name];
    if (value === undefined) continue;
    fromEnv.set(path.join('.'), name);
    let node = doc;
    for (const seg of path.slice(0, -1)) {
      const next = node[seg];
      node = (typeof next === 'object' && next !== null ? next : (node[seg] = {})) as Record<string, Json>;
    }
    try {
      node[path.at(-1)!] = parseYaml(value) as Json;
    } catch (err) {
      throw new ConfigError(name, `not a value (${errorMessage(err).split('\n')[0]})`);
    }
  }
  return fromEnv;
}

/** What a value is, for "expected a number, got string 'abc'". */
function describe(input: unknown): string {
  if (input === null) return 'null';
  if (Array.isArray(input)) return 'a list';
  if (typeof input === 'object') return 'a mapping';
  if (typeof input === 'string') return `string ${quoteInput(input)}`;
  return `${typeof input} ${String(input)}`;
}

/** One problem of a config document: the key and what is wrong with it. */
function issueText(issue: z.core.$ZodIssue): { key: string; problem: string } {
  const key = issue.path.join('.');
  if (issue.code === 'unrecognized_keys') {
    const keys = issue.keys.map((k) => (key ? `${key}.${k}` : k));
    return { key: keys[0]!, problem: `unknown key${keys.length > 1 ? ` (also ${keys.slice(1).join(', ')})` : ''}` };
  }
  if (issue.code === 'invalid_type') {
    if (issue.input === undefined) return { key, problem: issue.message.startsWith('required key') ? issue.message : 'required key is missing' };
    return { key, problem: `expected ${issue.expected === 'array' ? 'a list' : issue.expected === 'object' ? 'a mapping' : `a ${issue.expected}`}, got ${describe(issue.input)}` };
  }
  return { key, problem: issue.message };
}

/** Every problem of the document in one error (the first one's key), so a file is fixed in one round. */
function issuesToError(issues: readonly z.core.$ZodIssue[], fromEnv: ReadonlyMap<string, string>): ConfigError {
  // A value from the environment is named by its variable: the file does not have it.
  const named = (t: { key: string; problem: string }) => (fromEnv.has(t.key) ? { ...t, key: `${fromEnv.get(t.key)} (${t.key})` } : t);
  const [first, ...rest] = issues.map(issueText).map(named);
  if (!rest.length) return new ConfigError(first!.key, first!.problem);
  return new ConfigError(first!.key, `${first!.problem}; also ${rest.map((r) => `${r.key}: ${r.problem}`).join('; ')}`);
}

/** Parses an already-loaded document (plus MXSWITCH_* env overrides); throws ConfigError naming the first bad key. */
export function parseConfig<S extends z.ZodType>(schema: S, doc: Json, env: NodeJS.ProcessEnv = {}): z.output<S> {
  const base = doc === null || doc === undefined ? {} : doc;
  if (typeof base !== 'object' || Array.isArray(base)) throw new ConfigError('', 'the config must be a YAML mapping of keys');
  const merged = structuredClone(base) as Record<string, Json>;
  const fromEnv = applyEnv(merged, schema, env);
  // reportInput: without it zod 4 leaves `input` out of every issue, and a wrong type read as a missing key.
  const result = schema.safeParse(merged, { reportInput: true });
  if (!result.success) throw issuesToError(result.error.issues, fromEnv);
  return result.data;
}

export function loadConfigFile<S extends z.ZodType>(schema: S, file: string, env: NodeJS.ProcessEnv = process.env): z.output<S> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError('', `cannot read config file ${file}: ${errorMessage(err)}`);
  }
  let doc: Json;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new ConfigError('', `${file} is not valid YAML: ${errorMessage(err).split('\n')[0]}`);
  }
  return parseConfig(schema, doc, env);
}
