import type { Readable } from 'node:stream';
import type { ReadableStream } from 'node:stream/web';
import { Readable as NodeReadable } from 'node:stream';
import type { Worker } from 'node:worker_threads';
import type { AgentConfig } from '../shared/config.js';
import type { Logger } from '../shared/logger.js';
import { startModuleWorker } from '../shared/module-worker.js';
import type { Target } from '../shared/routes.js';
import type { DeliveryAttempt, DeliveryOptions, Envelope } from './delivery.js';

/** What the scheduler sends with: a Delivery here, or one in the delivery thread. */
export interface Outbound {
  /** Never rejects: every recipient gets a result. `body`: the message, or a new stream of it per attempt. */
  send(target: Target, tlsRequired: boolean, envelope: Envelope, body: Buffer | (() => Readable)): Promise<DeliveryAttempt>;
  close(): Promise<void>;
}

/** The delivery thread's workerData. */
export interface DeliveryThreadInit {
  config: AgentConfig['delivery'];
  heloName: string;
  options: DeliveryOptions;
  logLevel: string;
}

export type ToDeliveryThread =
  | { op: 'send'; id: number; target: Target; tlsRequired: boolean; envelope: Envelope; body?: Uint8Array }
  | { op: 'stream'; streamId: number; stream: ReadableStream<Uint8Array> }
  | { op: 'close' };

export type FromDeliveryThread = { id: number; attempt: DeliveryAttempt } | { wantStream: number; streamId: number } | { log: string } | { closed: true };

type Pending = { resolve: (a: DeliveryAttempt) => void; target: Target; envelope: Envelope; stream?: () => Readable; made?: Readable[] };

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;
const levelName = (n: unknown) => LEVELS[Math.max(0, Math.min(5, Math.round(Number(n) / 10) - 1))] ?? 'info';

/**
 * The agent's side of the delivery thread (delivery-thread.ts). A small message goes over as a copy of its bytes
 * (the queue may still hold the original); a large one as a stream of its stored parts, made on this side for
 * each attempt the thread starts, with the thread's reads as back-pressure. The thread starts with the agent and,
 * should it die, every send under way gets a temporary result (the queue retries it: maybe a duplicate, never a
 * loss) and the next send starts a new one.
 */
export class DeliveryClient implements Outbound {
  private worker: Worker | undefined;
  private readonly pending = new Map<number, Pending>();
  private lastId = 0;
  private closing: Promise<void> | undefined;
  private onClosed: (() => void) | undefined;

  constructor(
    private readonly init: DeliveryThreadInit,
    private readonly log: Logger,
    /** The thread's module (tests: one that dies); relative to this file or a file: URL. */
    private readonly entry = './delivery-thread',
  ) {
    this.worker = this.start();
  }

  send(target: Target, tlsRequired: boolean, envelope: Envelope, body: Buffer | (() => Readable)): Promise<DeliveryAttempt> {
    if (this.closing) return Promise.resolve(failed(target, envelope, 'the agent is stopping'));
    const worker = (this.worker ??= this.start());
    const id = ++this.lastId;
    return new Promise((resolve) => {
      if (this.pending.size === 0) worker.ref();
      if (typeof body === 'function') {
        this.pending.set(id, { resolve, target, envelope, stream: body });
        this.post(worker, { op: 'send', id, target, tlsRequired, envelope });
      } else {
        this.pending.set(id, { resolve, target, envelope });
        const copy = new Uint8Array(body.byteLength);
        copy.set(body);
        this.post(worker, { op: 'send', id, target, tlsRequired, envelope, body: copy }, [copy.buffer]);
      }
    });
  }

  /** Callers first let the sends they started finish (the scheduler's stop). */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const worker = this.worker;
      if (!worker) return;
      await new Promise<void>((resolve) => {
        this.onClosed = resolve;
        worker.ref();
        this.post(worker, { op: 'close' });
      });
      this.worker = undefined;
      await worker.terminate();
      // Sends the scheduler's stop did not wait for (its bound): temporary, the queue has them in flight anyway.
      this.failPending('the agent stopped during the attempt');
    })();
    return this.closing;
  }

  private post(worker: Worker, m: ToDeliveryThread, transfer: (ArrayBuffer | ReadableStream)[] = []): void {
    worker.postMessage(m, transfer as never[]);
  }

  private start(): Worker {
    const worker = startModuleWorker(import.meta.url, this.entry, this.init);
    worker.unref();
    worker.on('message', (m: FromDeliveryThread) => this.received(worker, m));
    worker.on('error', (err) => this.lost(worker, err.message));
    worker.on('exit', (code) => this.lost(worker, `exited with code ${code}`));
    return worker;
  }

  private received(worker: Worker, m: FromDeliveryThread): void {
    if ('log' in m) return this.relayLog(m.log);
    if ('closed' in m) return this.onClosed?.();
    if ('wantStream' in m) {
      const p = this.pending.get(m.wantStream);
      if (!p?.stream) return;
      const source = p.stream();
      (p.made ??= []).push(source);
      const stream = NodeReadable.toWeb(source) as ReadableStream<Uint8Array>;
      return this.post(worker, { op: 'stream', streamId: m.streamId, stream }, [stream]);
    }
    const p = this.pending.get(m.id);
    this.pending.delete(m.id);
    if (this.pending.size === 0 && !this.closing) worker.unref();
    if (p) settle(p, m.attempt);
  }

  private relayLog(line: string): void {
    try {
      const { level, msg, ...fields } = JSON.parse(line) as { level: number; msg?: string };
      this.log[levelName(level)]({ ...fields, thread: 'delivery' }, msg ?? '');
    } catch {
      this.log.warn({ line, thread: 'delivery' }, 'unreadable log line from the delivery thread');
    }
  }

  private lost(worker: Worker, why: string): void {
    if (this.worker !== worker) return;
    this.worker = undefined;
    if (!this.closing) this.log.error({ reason: why }, 'delivery thread stopped; sends under way are retried');
    this.failPending(`delivery thread stopped: ${why}`);
    this.onClosed?.();
  }

  private failPending(why: string): void {
    for (const p of this.pending.values()) settle(p, failed(p.target, p.envelope, why));
    this.pending.clear();
  }
}

/** Resolves a send; the streams made for its attempts are done with, whatever the thread did with them. */
function settle(p: Pending, attempt: DeliveryAttempt): void {
  for (const s of p.made ?? []) s.destroy();
  p.resolve(attempt);
}

/** Every recipient temporary: nothing reached the next hop that we know of, so the queue retries. */
function failed(target: Target, envelope: Envelope, why: string): DeliveryAttempt {
  const reply = `4.3.0 ${why}; if the next hop had the data, a retry may duplicate it`;
  return { results: envelope.to.map((rcpt) => ({ rcpt, status: 'temporary' as const, reply })), relay: `[${target.host}]:${target.port}` };
}
