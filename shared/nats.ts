import { readFileSync } from 'node:fs';
import { connect, credsAuthenticator, type NatsConnection, type NodeConnectionOptions } from '@nats-io/transport-node';
import { jetstream, JetStreamApiError } from '@nats-io/jetstream';
import { Kvm, type KV, type KvEntry, type KvWatchEntry } from '@nats-io/kv';
import { z } from 'zod';
import { errorMessage } from './errors.js';
import type { Logger } from './logger.js';

/**
 * NATS control plane: names, wire formats and the connection/watch plumbing shared by agents and controllers.
 *
 * Layout for fleet F (every name starts with the fleet, so several fleets can share one NATS account):
 * - KV bucket `F-routes`: one key per route plus a `version` key (shared/route-keys.ts), so no value nears the max
 *   payload at any table size; readers apply whole versions only. The version agents ack is the controller's
 *   `version` in the version key, never a KV revision (mirrors/sources renumber revisions).
 * - KV bucket `F-agents`, key `<agentId>`: the agent's last state (acked version, last nack, health); each agent may
 *   write only its own key.
 * - KV bucket `F-ops`: `op.<id>` operations (state, step, last progress, owning controller), `lock.<hex match>`
 *   one running operation per route across replicas, `audit.<version>` one audit record per table version.
 * - KV bucket `F-recipients`: the recipient lists, sharded, with a `version` key (shared/recipient-shards.ts).
 * - KV bucket `F-shadow`, key `<agentId>`: the agent's shadow assignment (proto ShadowAssignment in its JSON form:
 *   peer, clients with their credentials, takeovers), written by the controller; each agent may read only its own
 *   key. The agent acks it as over gRPC, with the version in its shadow report (in its `F-agents` value).
 * - Subject `F.cmd.<agentId>`: commands by request/reply; payloads are the protobuf Command / CommandResult
 *   messages of proto/mxswitch/v1/agent.proto (the same encoding as the gRPC session).
 */

export interface NatsSettings {
  servers: string[];
  token?: string | undefined;
  user?: string | undefined;
  password?: string | undefined;
  credentials?: string | undefined;
  tls?: { ca?: string | undefined; cert?: string | undefined; key?: string | undefined } | undefined;
  fleet: string;
}

export const TABLE_KEY = 'table';

export function bucketNames(fleet: string): { routes: string; agents: string; ops: string; recipients: string; shadow: string } {
  return { routes: `${fleet}-routes`, agents: `${fleet}-agents`, ops: `${fleet}-ops`, recipients: `${fleet}-recipients`, shadow: `${fleet}-shadow` };
}

/** Key of the controller's shadow plan (pairing, credential secret, takeovers) in `F-ops`, out of the agents' reach. */
export const SHADOW_PLAN_KEY = 'shadow.plan';

/**
 * An agent's shadow redundancy as its `F-agents` value carries it: what a gRPC agent's Hello announces (address,
 * takeoverAfter, queue identity) and its latest ShadowReport (the applied assignment version is the ack).
 */
export interface AgentShadowValue {
  address: string;
  takeoverAfterMs: number;
  queueId: string;
  report: { appliedVersion: number; unreachableClients: string[]; unshadowed: number; shadowCopies: number; peer: string } | null;
}

export function commandSubject(fleet: string, agentId: string): string {
  return `${fleet}.cmd.${agentId}`;
}

/** Agents use their own inbox prefix so a NATS account can let each one subscribe only to its own replies. */
export function agentInboxPrefix(fleet: string, agentId: string): string {
  return `_INBOX.${fleet}.${agentId}`;
}

/** The value under `F-agents` / `<agentId>`, rewritten by the agent on every ack/nack and every health interval. */
export interface AgentValue {
  agentId: string;
  region: string;
  hostname: string;
  bootId: string;
  /** The newest version the agent has acked (applied with nothing in flight that it forbids). */
  appliedVersion: number;
  /** The recipient-list version it has applied (absent from agents older than the lists in NATS). */
  recipientsVersion?: number | undefined;
  /** The newest version it refused, while no later version has been acked. */
  nack: { version: number; error: string } | null;
  /** "stopped" is written on a graceful shutdown, so the controller need not wait for the report to go stale. */
  state: 'up' | 'stopped';
  healthIntervalMs: number;
  /** proto Health in its JSON form. */
  health: unknown;
  at: number;
  /** Its software version ("0.1.0 (abc1234)") and SMTP listener, as a gRPC agent sends them in its Hello; absent from older agents. */
  software?: { version: string; smtpListen: string };
  /** With `shadow:` configured only. */
  shadow?: AgentShadowValue;
}

const agentValueSchema = z.object({
  agentId: z.string(),
  region: z.string(),
  hostname: z.string(),
  bootId: z.string(),
  appliedVersion: z.number().int().nonnegative(),
  recipientsVersion: z.number().int().nonnegative().optional(),
  nack: z.object({ version: z.number().int().nonnegative(), error: z.string() }).nullable(),
  state: z.enum(['up', 'stopped']),
  healthIntervalMs: z.number().positive(),
  health: z.unknown(),
  at: z.number(),
  software: z.object({ version: z.string().max(200), smtpListen: z.string().max(300) }).optional(),
  shadow: z
    .object({
      address: z.string().min(1).max(300),
      takeoverAfterMs: z.number().int().positive(),
      queueId: z.string().max(200),
      report: z
        .object({
          appliedVersion: z.number().int().nonnegative(),
          unreachableClients: z.array(z.string().max(200)).max(10_000),
          unshadowed: z.number().int().nonnegative(),
          shadowCopies: z.number().int().nonnegative(),
          peer: z.string().max(200),
        })
        .nullable(),
    })
    .optional(),
});

/**
 * An agent's value as the controller reads it. Agents may write anything to their own key, so it is validated:
 * a malformed value is refused (throws), it never reaches `status`.
 */
export function parseAgentValue(e: KvEntry): AgentValue {
  const r = agentValueSchema.safeParse(decodeJson<unknown>(e));
  if (!r.success) throw new Error(`not an agent state: ${r.error.issues[0]?.path.join('.') || '(value)'}: ${r.error.issues[0]?.message}`);
  return r.data as AgentValue;
}

/**
 * Connection options for our processes: reconnect forever, wait on the first connect, auth and TLS from config.
 * `aborted`: nats.js cannot cancel a connect that waits for its first server; when this returns true the next
 * attempt throws instead, so a process that stops while NATS is unreachable does not keep retrying in the
 * background.
 */
export function natsOptions(s: NatsSettings, name: string, extra: Partial<NodeConnectionOptions> = {}, aborted?: () => boolean): NodeConnectionOptions {
  const o: NodeConnectionOptions = {
    servers: s.servers,
    name,
    maxReconnectAttempts: -1,
    waitOnFirstConnect: true,
    reconnectTimeWait: 500,
    reconnectJitter: 250,
    pingInterval: 10_000,
    maxPingOut: 2,
    // One connection attempt (TCP + TLS + CONNECT/PONG); nats.js waits 20 s by default, also on a TLS failure.
    timeout: 5000,
    ...extra,
  };
  const wait = o.reconnectTimeWait ?? 500;
  const jitter = o.reconnectJitter ?? 0;
  o.reconnectDelayHandler = () => {
    if (aborted?.()) throw new Error('connection attempt abandoned (stopping)');
    return wait + Math.random() * jitter;
  };
  if (s.token) o.token = s.token;
  if (s.user) {
    o.user = s.user;
    o.pass = s.password ?? '';
  }
  if (s.credentials) o.authenticator = credsAuthenticator(readFileSync(s.credentials));
  if (s.tls) {
    o.tls = {
      ...(s.tls.ca ? { caFile: s.tls.ca } : {}),
      ...(s.tls.cert ? { certFile: s.tls.cert } : {}),
      ...(s.tls.key ? { keyFile: s.tls.key } : {}),
    };
  }
  return o;
}

export { connect as natsConnect };

/** A KV manager whose JetStream requests give up quickly (the callers retry; a stuck request only delays them). */
export function kvManager(nc: NatsConnection, timeoutMs = 2000): Kvm {
  return new Kvm(jetstream(nc, { timeout: timeoutMs }));
}

/** The JetStream "wrong last sequence" refusal of a compare-and-set write. */
export function isWrongLastSequence(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === 10071;
}

export function isStreamNotFound(err: unknown): boolean {
  return err instanceof JetStreamApiError ? err.code === 10059 : /stream not found/i.test(errorMessage(err));
}

export function decodeJson<T>(e: KvEntry): T {
  return JSON.parse(new TextDecoder().decode(e.value)) as T;
}

export function encodeJson(v: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(v));
}

/** Every live value under `filter` (keys + get; fine for the few hundred keys of a fleet's buckets). */
export async function readAll(kv: KV, filter: string): Promise<KvEntry[]> {
  const keys: string[] = [];
  for await (const k of await kv.keys(filter)) keys.push(k);
  const entries = await Promise.all(keys.map((k) => kv.get(k)));
  return entries.filter((e): e is KvEntry => e !== null && e.operation === 'PUT');
}

/**
 * Watches a key (or a `prefix.>` — Debian's nats-server 2.9 watches one filter only) and keeps watching:
 * when the watch ends or cannot start (JetStream not ready, bucket missing) it is re-created with backoff, and
 * `restart()` (called on every reconnect) re-creates it at once. Each (re)start delivers the latest value of every
 * key again, so `onEntry` must be idempotent; entries are delivered one at a time, in order.
 */
export class KvFollower {
  private iter: { stop(): void } | undefined;
  private stopped = false;
  private attempt = 0;
  private wake: (() => void) | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly name: string,
    private readonly open: () => Promise<KV>,
    private readonly key: string,
    private readonly onEntry: (e: KvWatchEntry) => void,
    private readonly log: Logger,
    private readonly onWatching: (watching: boolean) => void = () => undefined,
  ) {}

  start(): void {
    this.stopped = false;
    this.running ??= this.loop();
  }

  /** Drops the current watch and starts a new one (after a reconnect the server may have lost our consumer). */
  restart(): void {
    this.attempt = 0;
    this.iter?.stop();
    this.wake?.();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.iter?.stop();
    this.wake?.();
    await this.running;
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      try {
        const kv = await this.open();
        const iter = await kv.watch({ key: this.key });
        this.iter = iter;
        if (this.stopped) {
          iter.stop();
          break;
        }
        if (this.attempt > 0) this.log.info({ watch: this.name }, 'NATS KV watch re-established');
        this.attempt = 0;
        this.onWatching(true);
        for await (const e of iter) {
          try {
            this.onEntry(e);
          } catch (err) {
            this.log.error({ err, watch: this.name, key: e.key }, 'KV entry could not be handled');
          }
        }
      } catch (err) {
        if (this.stopped) break;
        const level = this.attempt === 0 ? 'warn' : 'debug';
        this.log[level]({ watch: this.name, error: errorMessage(err) }, 'NATS KV watch failed; retrying');
      }
      this.iter = undefined;
      this.onWatching(false);
      if (this.stopped) break;
      const delay = Math.min(5000, 100 * 2 ** this.attempt) * (0.5 + Math.random() / 2);
      this.attempt = Math.min(this.attempt + 1, 10);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, delay);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }
}

/**
 * Follows a connection's status: `onDisconnect` when it drops, `onReconnect` when it is back (watches restart
 * there). Ends when the connection closes.
 */
export function watchStatus(nc: NatsConnection, log: Logger, on: { disconnect?: () => void; reconnect?: () => void }): void {
  void (async () => {
    for await (const s of nc.status()) {
      switch (s.type) {
        case 'disconnect':
          log.warn({ server: s.server }, 'NATS connection lost; reconnecting');
          on.disconnect?.();
          break;
        case 'reconnect':
          log.info({ server: s.server }, 'NATS reconnected');
          on.reconnect?.();
          break;
        case 'error':
          log.warn({ error: errorMessage(s.error) }, 'NATS error');
          break;
        default:
          break;
      }
    }
  })().catch((err: unknown) => log.debug({ err }, 'NATS status loop ended'));
}
