import { EventEmitter } from 'node:events';
import type { KV, KvEntry } from '@nats-io/kv';
import { errorMessage, MxError } from '../../../shared/errors.js';
import type { Logger } from '../../../shared/logger.js';
import { decodeJson, encodeJson, isWrongLastSequence, KvFollower, readAll } from '../../../shared/nats.js';
import { unavailable } from './unavailable.js';
import type { OpState, OperationRecord, Progress } from '../../core/model.js';
import { OwnershipLost, type OperationStore, type OperationStoreEvents } from '../../core/ports.js';

/** The value under `<fleet>-ops` / `op.<id>`. */
export interface OpValue {
  op: OperationRecord;
  /** The latest progress report of the controller running it (what `follow` shows on every replica). */
  progress: Progress | null;
  /** Instance id of the controller running it; '' = handed over (any replica may resume it at once). */
  owner: string;
}

interface Owned {
  revision: number;
  op: OperationRecord;
  progress: Progress | null;
  lastWrite: number;
  dirty: boolean;
  loop: Promise<void> | undefined;
}

const opKey = (id: string) => `op.${id}`;
const lockKey = (match: string) => `lock.${Buffer.from(match).toString('hex')}`;

/**
 * Operations in the `<fleet>-ops` bucket, shared by controller replicas. Every replica watches `op.>` (reads come
 * from that cache, and changes written by another replica are re-emitted as 'remote' so `follow` and `watch` work
 * on any replica). An operation is run by one replica, its owner, which writes every change with compare-and-set
 * on its last revision and renews the record every lease/3; a running operation whose record is older than the
 * lease (its controller died) or that was handed over (clean stop) is claimed by compare-and-set and resumed where
 * it was (steps are idempotent). `lock.<hex match>` keeps two replicas from running two operations on one route.
 */
export class NatsOperationStore extends EventEmitter<OperationStoreEvents> implements OperationStore {
  private readonly cache = new Map<string, { value: OpValue; revision: number; seenAt: number }>();
  private readonly owned = new Map<string, Owned>();
  private readonly follower: KvFollower;
  private renewer: NodeJS.Timeout | undefined;
  private loading = true;
  readonly claimIntervalMs: number;

  constructor(
    private readonly kv: KV,
    private readonly instanceId: string,
    private readonly leaseMs: number,
    private readonly log: Logger,
  ) {
    super();
    this.setMaxListeners(0);
    this.claimIntervalMs = Math.max(100, Math.floor(leaseMs / 3));
    this.follower = new KvFollower('ops', async () => kv, 'op.>', (e) => this.accept(e), log);
  }

  async start(): Promise<void> {
    for (const e of await readAll(this.kv, 'op.>')) this.accept(e);
    this.loading = false;
    this.follower.start();
    this.renewer = setInterval(() => this.renew(), this.claimIntervalMs);
    this.renewer.unref();
  }

  restart(): void {
    this.follower.restart();
  }

  async close(): Promise<void> {
    clearInterval(this.renewer);
    await this.follower.stop();
  }

  private accept(e: KvEntry): void {
    const id = e.key.slice('op.'.length);
    const prev = this.cache.get(id);
    if (prev && e.revision <= prev.revision) return;
    if (e.operation !== 'PUT') {
      this.cache.delete(id);
      return;
    }
    let value: OpValue;
    try {
      value = decodeJson<OpValue>(e);
    } catch (err) {
      this.log.warn({ key: e.key, error: errorMessage(err) }, 'unreadable operation in NATS; ignored');
      return;
    }
    this.cache.set(id, { value, revision: e.revision, seenAt: e.created.getTime() });
    const mine = this.owned.get(id);
    if (mine) {
      if (value.owner !== this.instanceId) {
        this.owned.delete(id);
        this.emit('lost', id);
      }
      return;
    }
    // Someone else's write: replay it for followers here (old finished operations stay quiet).
    if (!this.loading && (prev || value.op.state === 'running')) this.emit('remote', value.op, value.progress ?? undefined);
  }

  /** Our own successful write, into the cache at once (the watch echo is then ignored). */
  private cacheOwn(id: string, value: OpValue, revision: number): void {
    const prev = this.cache.get(id);
    if (!prev || revision > prev.revision) this.cache.set(id, { value, revision, seenAt: Date.now() });
  }

  get(id: string): OperationRecord | undefined {
    const o = this.owned.get(id);
    if (o) return { ...o.op, excluded: [...o.op.excluded] };
    return this.cache.get(id)?.value.op;
  }

  private all(): OperationRecord[] {
    return [...this.cache.keys()].map((id) => this.get(id)!);
  }

  list(limit: number): OperationRecord[] {
    return this.all()
      .sort((a, b) => b.startedAt - a.startedAt || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0))
      .slice(0, limit);
  }

  running(): OperationRecord[] {
    return this.all()
      .filter((op) => op.state === 'running')
      .sort((a, b) => a.startedAt - b.startedAt);
  }

  countByState(): Record<OpState, number> {
    const out: Record<OpState, number> = { running: 0, done: 0, failed: 0 };
    for (const op of this.all()) out[op.state]++;
    return out;
  }

  runningElsewhere(id: string): boolean {
    return !this.owned.has(id) && this.cache.get(id)?.value.op.state === 'running';
  }

  async insert(op: OperationRecord): Promise<void> {
    if (op.kind !== 'flush') await this.lock(op);
    const value: OpValue = { op, progress: null, owner: this.instanceId };
    let revision: number;
    try {
      revision = await this.kv.create(opKey(op.id), encodeJson(value));
    } catch (err) {
      if (op.kind !== 'flush') await this.unlock(op);
      throw unavailable(err);
    }
    this.owned.set(op.id, { revision, op: { ...op }, progress: null, lastWrite: Date.now(), dirty: false, loop: undefined });
    this.cacheOwn(op.id, value, revision);
  }

  /** One running operation per route across replicas: `lock.<hex match>` names it. */
  private async lock(op: OperationRecord): Promise<void> {
    const key = lockKey(op.match);
    const data = encodeJson({ op: op.id });
    try {
      for (let attempt = 0; attempt < 5; attempt++) {
        try {
          await this.kv.create(key, data);
          return;
        } catch (err) {
          if (!isWrongLastSequence(err)) throw err;
        }
        const e = await this.kv.get(key);
        if (!e || e.operation !== 'PUT') continue;
        const holder = decodeJson<{ op: string }>(e).op;
        let held = this.cache.get(holder)?.value.op;
        if (!held) {
          const he = await this.kv.get(opKey(holder));
          held = he && he.operation === 'PUT' ? decodeJson<OpValue>(he).op : undefined;
        }
        if (held?.state === 'running') throw new MxError('OPERATION_RUNNING', `operation ${holder} (${held.kind}) is still running on ${op.match}; follow it or wait`);
        // A lock left by an operation that has ended: take it over.
        try {
          await this.kv.update(key, data, e.revision);
          return;
        } catch (err) {
          if (!isWrongLastSequence(err)) throw err;
        }
      }
    } catch (err) {
      throw unavailable(err);
    }
    throw new MxError('OPERATION_RUNNING', `another operation is starting on ${op.match}; follow it or wait`);
  }

  private async unlock(op: OperationRecord): Promise<void> {
    const key = lockKey(op.match);
    try {
      const e = await this.kv.get(key);
      if (e && e.operation === 'PUT' && decodeJson<{ op: string }>(e).op === op.id) await this.kv.delete(key, { previousSeq: e.revision });
    } catch (err) {
      // A stale lock is taken over by the next operation on this route (its holder has ended).
      this.log.debug({ op: op.id, error: errorMessage(err) }, 'operation lock not removed');
    }
  }

  async save(op: OperationRecord, final?: Progress): Promise<void> {
    const o = this.owned.get(op.id);
    if (!o) throw new OwnershipLost(op.id);
    o.op = { ...op, excluded: [...op.excluded] };
    if (final) o.progress = final;
    await this.flush(op.id, o);
    if (op.state !== 'running') {
      this.owned.delete(op.id);
      if (op.kind !== 'flush') await this.unlock(op);
    }
  }

  progress(p: Progress): void {
    const o = this.owned.get(p.operation.id);
    if (!o) return;
    o.progress = p;
    this.flush(p.operation.id, o).catch((err: unknown) => {
      if (!(err instanceof OwnershipLost)) this.log.debug({ op: p.operation.id, error: errorMessage(err) }, 'operation progress not written to NATS');
    });
  }

  /** Writes the owned operation's latest state; one write in flight, later changes coalesce into the next one. */
  private flush(id: string, o: Owned): Promise<void> {
    o.dirty = true;
    o.loop ??= (async () => {
      try {
        while (o.dirty) {
          o.dirty = false;
          const value: OpValue = { op: o.op, progress: o.progress, owner: this.instanceId };
          try {
            o.revision = await this.kv.update(opKey(id), encodeJson(value), o.revision);
            o.lastWrite = Date.now();
            this.cacheOwn(id, value, o.revision);
          } catch (err) {
            if (!isWrongLastSequence(err)) throw unavailable(err);
            // Our revision is stale: a write of ours that timed out may have landed after all, or another
            // replica took the operation over.
            const e = await this.kv.get(opKey(id));
            const current = e && e.operation === 'PUT' ? decodeJson<OpValue>(e) : undefined;
            if (!e || current?.owner !== this.instanceId) {
              if (this.owned.get(id) === o) {
                this.owned.delete(id);
                this.emit('lost', id);
              }
              throw new OwnershipLost(id);
            }
            o.revision = e.revision;
            o.dirty = true;
          }
        }
      } finally {
        o.loop = undefined;
      }
    })();
    return o.loop;
  }

  /** Keeps the lease of every owned operation: a record untouched for leaseMs can be claimed by another replica. */
  private renew(): void {
    const now = Date.now();
    for (const [id, o] of this.owned) {
      if (now - o.lastWrite >= this.claimIntervalMs && !o.loop) {
        this.flush(id, o).catch((err: unknown) => this.log.debug({ op: id, error: errorMessage(err) }, 'operation lease not renewed'));
      }
    }
  }

  async claim(): Promise<OperationRecord[]> {
    const out: OperationRecord[] = [];
    const now = Date.now();
    for (const [id, c] of [...this.cache]) {
      const v = c.value;
      if (v.op.state !== 'running' || this.owned.has(id)) continue;
      if (v.owner !== '' && now - c.seenAt <= this.leaseMs) continue;
      const value: OpValue = { ...v, owner: this.instanceId };
      try {
        const revision = await this.kv.update(opKey(id), encodeJson(value), c.revision);
        this.owned.set(id, { revision, op: { ...v.op }, progress: v.progress, lastWrite: Date.now(), dirty: false, loop: undefined });
        this.cacheOwn(id, value, revision);
        this.log.info({ op: id, previousOwner: v.owner || '(handed over)' }, 'operation claimed');
        out.push({ ...v.op, excluded: [...v.op.excluded] });
      } catch (err) {
        if (!isWrongLastSequence(err)) throw err;
        // Another replica was quicker (or the record moved on): its watch update arrives shortly.
      }
    }
    return out;
  }

  async release(id: string, handOver: boolean): Promise<void> {
    const o = this.owned.get(id);
    if (!o) return;
    await o.loop?.catch(() => undefined);
    this.owned.delete(id);
    if (!handOver) return;
    const value: OpValue = { op: o.op, progress: o.progress, owner: '' };
    try {
      const revision = await this.kv.update(opKey(id), encodeJson(value), o.revision);
      this.cacheOwn(id, value, revision);
      this.log.info({ op: id }, 'operation handed over (another controller may resume it)');
    } catch (err) {
      this.log.debug({ op: id, error: errorMessage(err) }, 'operation not handed over; it is resumed after the lease');
    }
  }
}
