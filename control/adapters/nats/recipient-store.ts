import { EventEmitter } from 'node:events';
import type { NatsConnection } from '@nats-io/transport-node';
import type { KV, KvEntry } from '@nats-io/kv';
import { errorMessage, MxError, quoteInput } from '../../../shared/errors.js';
import type { Logger } from '../../../shared/logger.js';
import { ClaimLost, commitVersion } from '../../../shared/kv-versions.js';
import { encodeJson, KvFollower } from '../../../shared/nats.js';
import { listAddressIn, listDomain, parseListEdit } from '../../../shared/recipient-list.js';
import { decodeListVersion, encodeShard, shardKey, shardOf, ShardAssembler, VERSION_KEY, type ListVersionValue } from '../../../shared/recipient-shards.js';
import type { RecipientCount, RecipientEdit, RecipientListing, RecipientStoreApi, RecipientStoreEvents, RecipientsChanged } from '../../core/ports.js';
import { CatchUp } from './catch-up.js';
import { unavailable } from './unavailable.js';

const auditKey = (version: number) => `recipients-audit.${String(version).padStart(12, '0')}`;

/** The shards one write changes, copied on first touch so the cache stays as it was until the write is whole. */
class Draft {
  readonly touched = new Map<string, Set<string>>();
  readonly domains: Set<string>;
  added = 0;
  removed = 0;

  constructor(private readonly assembler: ShardAssembler) {
    this.domains = new Set(assembler.state.domains);
  }

  shard(domain: string, address: string): Set<string> {
    const key = shardKey(domain, shardOf(address));
    let s = this.touched.get(key);
    if (!s) this.touched.set(key, (s = new Set(this.assembler.state.shards.get(key))));
    return s;
  }

  add(domain: string, address: string): void {
    this.domains.add(domain);
    const s = this.shard(domain, address);
    if (!s.has(address)) {
      s.add(address);
      this.added++;
    }
  }

  remove(domain: string, address: string): void {
    if (this.shard(domain, address).delete(address)) this.removed++;
  }

  /** Every address of a domain (the cache's, not this draft's). */
  addresses(domain: string): string[] {
    const out: string[] = [];
    for (const [key, set] of this.assembler.state.shards) if (key.startsWith(`s.${domain}.`) && key.lastIndexOf('.') === domain.length + 2) out.push(...set);
    return out;
  }

  get changed(): boolean {
    const s = this.assembler.state.domains;
    return this.added > 0 || this.removed > 0 || this.domains.size !== s.size || [...this.domains].some((d) => !s.has(d));
  }
}

/**
 * The recipient lists of a NATS-mode controller, in the `<fleet>-recipients` bucket (layout: shared/recipient-shards.ts).
 * Reads come from a cache assembled by a watch, as agents assemble theirs; a write claims the next version with
 * compare-and-set (a concurrent write by another replica is refused and retried from a fresh read), writes only
 * the shards it changed, then marks the version done and waits for its own watch to see it.
 */
export class NatsRecipientStore extends EventEmitter<RecipientStoreEvents> implements RecipientStoreApi {
  private readonly assembler = new ShardAssembler();
  private readonly follower: KvFollower;
  private readonly catchUp = new CatchUp(() => this.version);
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly nc: NatsConnection,
    private readonly connected: () => boolean,
    private readonly kv: KV,
    private readonly ops: KV,
    private readonly log: Logger,
  ) {
    super();
    this.follower = new KvFollower('recipients', async () => kv, '>', (e) => this.accept(e), log, (watching) => {
      if (watching) this.assembler.reset();
    });
  }

  start(): void {
    this.follower.start();
  }

  restart(): void {
    this.follower.restart();
  }

  stop(): Promise<void> {
    return this.follower.stop();
  }

  get version(): number {
    return this.assembler.state.version;
  }

  import(domainRaw: string, addresses: readonly string[], opts: { replace: boolean; actor: string }): Promise<RecipientsChanged> {
    const domain = listDomain(domainRaw);
    const wanted = addresses.map((raw) => listAddressIn(raw, domain));
    return this.write(opts.actor, `import ${domain}${opts.replace ? ' (replace)' : ''}`, domain, (draft) => {
      draft.domains.add(domain);
      if (opts.replace) {
        const keep = new Set(wanted);
        for (const a of draft.addresses(domain)) if (!keep.has(a)) draft.remove(domain, a);
      }
      for (const a of wanted) draft.add(domain, a);
    });
  }

  edit(req: RecipientEdit): Promise<RecipientsChanged> {
    const { add, remove, drop, what, subject } = parseListEdit(req);
    return this.write(req.actor, what, subject, (draft) => {
      for (const a of add) draft.add(a.domain, a.address);
      for (const a of remove) draft.remove(a.domain, a.address);
      for (const domain of drop) {
        if (!draft.domains.has(domain)) throw new MxError('NOT_FOUND', `${quoteInput(domain)} has no recipient list`);
        for (const a of draft.addresses(domain)) draft.remove(domain, a);
        draft.domains.delete(domain);
      }
    });
  }

  list(domainRaw: string, limit: number): RecipientListing {
    const domain = listDomain(domainRaw);
    if (!this.assembler.state.domains.has(domain)) throw new MxError('NOT_FOUND', `${quoteInput(domain)} has no recipient list`);
    const all = new Draft(this.assembler).addresses(domain).sort();
    return { domain, count: all.length, addresses: limit ? all.slice(0, limit) : all };
  }

  counts(): RecipientCount[] {
    const draft = new Draft(this.assembler);
    return [...this.assembler.state.domains].sort().map((domain) => ({ domain, count: draft.addresses(domain).length }));
  }

  private accept(e: KvEntry): void {
    let delta;
    try {
      delta = this.assembler.accept(e);
    } catch (err) {
      this.log.error({ error: errorMessage(err), key: e.key }, 'unreadable recipient-list version in NATS; ignored');
      return;
    }
    if (delta && delta.version !== delta.baseVersion) this.emit('change', delta.version);
    if (delta) this.catchUp.advanced();
  }

  private write(actor: string, action: string, subject: string, change: (draft: Draft) => void): Promise<RecipientsChanged> {
    const run = () => this.writeNow(actor || 'unknown', action, subject, change);
    // One write at a time from this process; other replicas are kept out by the compare-and-set claim.
    const result = this.chain.then(run, run);
    this.chain = result.catch(() => undefined);
    return result;
  }

  private async writeNow(actor: string, action: string, subject: string, change: (draft: Draft) => void): Promise<RecipientsChanged> {
    for (let attempt = 0; ; attempt++) {
      if (this.nc.isClosed() || !this.connected()) throw new MxError('UNAVAILABLE', 'NATS is not connected; the recipient lists cannot be changed now');
      let entry: KvEntry | null;
      try {
        entry = await this.kv.get(VERSION_KEY);
      } catch (err) {
        throw unavailable(err);
      }
      const base = entry && entry.operation === 'PUT' ? decodeListVersion(entry) : undefined;
      // The draft starts from the cache: it must hold the version in the bucket (another replica may have written).
      if (base && !(await this.catchUp.reached(base.version, 3000))) throw new MxError('UNAVAILABLE', `the recipient-list cache is behind version ${base.version} in NATS; retry`);
      const draft = new Draft(this.assembler);
      change(draft);
      if (!draft.changed) return { version: this.version, added: 0, removed: 0 };
      const max = (this.nc.info?.max_payload ?? 1024 * 1024) - 1024;
      const values = [...draft.touched].map(([key, set]) => ({ key, data: encodeShard(set) }));
      const big = values.find((v) => v.data.length > max);
      if (big) throw new MxError('INVALID_ARGUMENT', `the list would need ${big.data.length} bytes in one NATS value (${big.key}; max_payload ${max + 1024}): too many addresses for one domain`);
      const version = (base?.version ?? 0) + 1;
      const value = (state: ListVersionValue['state']): Uint8Array => encodeJson({ version, state, domains: [...draft.domains].sort(), actor, at: Date.now() } satisfies ListVersionValue);
      try {
        await commitVersion(this.kv, entry, value, values.map((v) => ({ key: v.key, data: v.data.length ? v.data : null })));
      } catch (err) {
        if (err instanceof ClaimLost && attempt < 20) {
          this.log.debug({ attempt }, 'recipient lists changed concurrently (another controller?); re-reading');
          continue;
        }
        // Claimed but not done: agents keep the version before; the next write (a retry) completes a new one.
        throw unavailable(err);
      }
      const counts = { added: draft.added, removed: draft.removed };
      await this.ops
        .put(auditKey(version), encodeJson({ id: version, actor, at: Date.now(), action: `recipients ${action}`, match: subject, old: null, new: counts, version }))
        .catch((err: unknown) => this.log.error({ error: errorMessage(err), version }, 'recipient audit record not written'));
      if (!(await this.catchUp.reached(version, 3000))) this.log.warn({ version }, 'recipient-list write not yet seen by our own watch');
      return { version, ...counts };
    }
  }
}
