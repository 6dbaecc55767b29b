import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Server, ServerCredentials, type ServerDuplexStream } from '@grpc/grpc-js';
import { ShadowServiceService, type ReplicateRequest, type ReplicateResponse } from '../../proto/gen/mxswitch/v1/shadow.js';
import { smtpClient, testMessage, waitFor, within } from '../helpers/agent.js';
import { adminApi, deferrer, type startFleetAgent } from '../helpers/controller.js';
import { Sink } from '../helpers/sink.js';
import { grpcTransport, type Transport } from '../helpers/transport.js';

export type FleetAgent = Awaited<ReturnType<typeof startFleetAgent>>;

export const shadowOf = (a: FleetAgent) => a.agent.health().shadow!;

/** The hold state of `origin`'s copied recipients as the peer keeps them in `dataDir`'s queue file (read-only look). */
export function copiedHolds(dataDir: string, origin: string): { msgId: string; rcpt: string; heldMs: number; holdSince: number | null; holdKind: string | null }[] {
  const db = new Database(join(dataDir, 'queue.db'), { readonly: true, fileMustExist: true });
  try {
    return db.prepare('SELECT msg_id AS msgId, rcpt, held_ms AS heldMs, hold_since AS holdSince, hold_kind AS holdKind FROM shadow_rcpts WHERE origin = ? ORDER BY msg_id, rcpt').all(origin) as ReturnType<typeof copiedHolds>;
  } finally {
    db.close();
  }
}

/** What the last refused `send` was told. */
export const lastRefusal = { text: '' };

/** Sends message n to `port`; resolves with the reply code: 250, or the refusal's code. */
export async function send(port: number, n: number): Promise<number> {
  const client = smtpClient(port);
  try {
    await within(`message ${n}`, client.sendMail({ envelope: { from: 's@sender.test', to: ['u@example.com'] }, raw: testMessage(n) }));
    return 250;
  } catch (err) {
    const code = (err as { responseCode?: number }).responseCode;
    if (!code) throw err;
    lastRefusal.text = (err as { response?: string }).response ?? '';
    return code;
  } finally {
    client.close();
  }
}

export interface ShadowFleetOptions {
  /** Agent ids, each in a region of its own (region-0, region-1, ...). */
  ids: readonly string[];
  onPeerDown?: 'accept' | 'tempfail';
  takeoverAfter?: string;
  /** Per agent: the address its peers dial (a proxy in front of its shadow port, say). */
  advertise?: (id: string) => string | undefined;
  /** Fixed shadow listen port per agent (default: any free one). */
  listenPort?: (id: string) => number;
  /** More `shadow:` keys per agent (tls, say). */
  shadowExtra?: (id: string) => Record<string, unknown>;
  /** How agents reach the controller (default gRPC). */
  transport?: Transport;
}

/** A sink and an in-process controller whose table holds example.com to it; all stopped after the test. */
export async function heldController(t: { after: (fn: () => Promise<void>) => void }, transport: Transport = grpcTransport) {
  const defer = deferrer(t);
  const sink = await new Sink().start();
  defer(() => sink.stop());
  const ctl = await transport.startController();
  defer(() => ctl.cleanup());
  const api = adminApi(ctl.address);
  defer(() => api.close());
  await api.setRoute('example.com', sink.target, { hold: true });
  return { defer, sink, ctl, api };
}

/**
 * In-process controller and agents with shadow redundancy (control over gRPC, or NATS), the route example.com held to a sink; resolves
 * once every agent has its peer and delivers. `start` (re)starts one agent (on `dataDir`, for a return).
 */
export async function shadowFleet(t: { after: (fn: () => Promise<void>) => void }, opts: ShadowFleetOptions) {
  const transport = opts.transport ?? grpcTransport;
  const { defer, sink, ctl, api } = await heldController(t, transport);
  const start = (id: string, dataDir?: string) => {
    const advertise = opts.advertise?.(id);
    const shadow = { listen: `127.0.0.1:${opts.listenPort?.(id) ?? 0}`, onPeerDown: opts.onPeerDown ?? 'accept', timeout: '1s', takeoverAfter: opts.takeoverAfter ?? '1h', ...(advertise ? { advertise } : {}), ...opts.shadowExtra?.(id) };
    return transport.startAgent(ctl, id, { region: `region-${opts.ids.indexOf(id)}`, shadow, controller: { ...transport.agentController(ctl), healthInterval: '200ms', startupGrace: '30s' }, ...(dataDir ? { dataDir } : {}) });
  };
  const agents: FleetAgent[] = [];
  defer(() => Promise.all(agents.map((a) => a.cleanup())));
  for (const id of opts.ids) agents.push(await start(id));
  await waitFor('every agent paired', () => agents.every((a) => shadowOf(a).peer !== ''));
  await waitFor('every agent delivering', () => agents.every((a) => a.agent.deliveryState.open));
  return { sink, ctl, api, agents, start, defer };
}

/**
 * A stand-in for a peer's shadow port on loopback (plaintext, or mutual TLS with `tls.cert` of the CA `tls.ca`)
 * that acks every batch as stored and keeps the batches, in order. `calls` counts the streams that got through.
 * `port`: a fixed one (a peer that comes back where it was), else any free one.
 */
export async function standInPeer(tls?: { ca: string; cert: string; key: string }, port = 0) {
  const batches: ReplicateRequest[] = [];
  let calls = 0;
  // Batches of up to 8 MiB of bodies, as ShadowServer takes them.
  const server = new Server({ 'grpc.max_receive_message_length': 128 * 1024 * 1024 });
  server.addService(ShadowServiceService, {
    replicate: (call: ServerDuplexStream<ReplicateRequest, ReplicateResponse>) => {
      calls++;
      call.on('data', (req: ReplicateRequest) => {
        batches.push(req);
        call.write({ batchId: req.batchId, error: '' });
      });
      call.on('end', () => call.end());
    },
  });
  const creds = tls ? ServerCredentials.createSsl(readFileSync(tls.ca), [{ cert_chain: readFileSync(tls.cert), private_key: readFileSync(tls.key) }], true) : ServerCredentials.createInsecure();
  const bound = await new Promise<number>((resolve, reject) => server.bindAsync(`127.0.0.1:${port}`, creds, (err, p) => (err ? reject(err) : resolve(p))));
  return { address: `127.0.0.1:${bound}`, port: bound, batches, calls: () => calls, stop: () => server.forceShutdown() };
}
