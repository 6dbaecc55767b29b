import type { KvEntry } from '@nats-io/kv';
import { decodeVersion, VERSION_KEY, type VersionValue } from './kv-versions.js';
import type { RecipientChange, RecipientDelta } from './recipient-list.js';

/**
 * Recipient lists in NATS (bucket `<fleet>-recipients`), laid out so that no value nears the server's max payload
 * (1 MB by default) and a small edit rewrites a small value:
 * - `s.<domain>.<n>`: shard n (0..SHARDS-1) of a domain's list, its addresses one per line. An address's shard is
 *   a hash of it, so 200,000 addresses make 256 values of ~20 KB, and one added address rewrites one of them.
 * - `version`: {version, state, domains}, claimed, written and marked done as shared/kv-versions.ts describes, so an
 *   agent never applies half of an import.
 */
export const SHARDS = 256;
export { VERSION_KEY };

export interface ListVersionValue extends VersionValue {
  /** Domains that have a list (possibly empty: a list with no address refuses every local part). */
  domains: string[];
}

/** FNV-1a: stable across processes and releases (agents and controllers must agree on it forever). */
export function shardOf(address: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < address.length; i++) {
    h ^= address.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % SHARDS;
}

/** Domains are normalised LDH names, so they are valid KV key tokens as they are. */
export function shardKey(domain: string, shard: number): string {
  return `s.${domain}.${shard}`;
}

/** The domain and shard of a shard key; undefined for any other key. */
export function parseShardKey(key: string): { domain: string; shard: number } | undefined {
  if (!key.startsWith('s.')) return undefined;
  const dot = key.lastIndexOf('.');
  const shard = Number(key.slice(dot + 1));
  const domain = key.slice(2, dot);
  if (!domain || !Number.isInteger(shard) || shard < 0 || shard >= SHARDS) return undefined;
  return { domain, shard };
}

export function encodeShard(addresses: Iterable<string>): Uint8Array {
  return new TextEncoder().encode([...addresses].sort().join('\n'));
}

/** A shard's addresses; a deleted shard (or an empty value) has none. */
export function decodeShard(e: KvEntry): string[] {
  if (e.operation !== 'PUT' || !e.value.length) return [];
  return new TextDecoder().decode(e.value).split('\n').filter(Boolean);
}

/** The version value, validated (anyone with write access could put nonsense there); throws on a bad one. */
export function decodeListVersion(e: KvEntry): ListVersionValue {
  return decodeVersion<ListVersionValue>(e, 'recipient-list ({version, state, domains})', (v) => Array.isArray(v.domains));
}

/** Every list as a reader has assembled it from the bucket. */
export interface ShardState {
  version: number;
  domains: Set<string>;
  /** By shard key; an absent key is an empty shard. */
  shards: Map<string, Set<string>>;
}

/**
 * Follows the entries of the recipients bucket in watch order and turns them into whole versions: a shard is
 * staged when it arrives and takes effect with the next "done" version, so a reader never sees half an import.
 * The first version after a (re)started watch is a snapshot (the replay brings every live key); later ones are
 * deltas against the version before.
 */
export class ShardAssembler {
  readonly state: ShardState = { version: 0, domains: new Set(), shards: new Map() };
  private staged = new Map<string, string[]>();
  private replayed = false;

  /** A new watch replays the bucket: what it brings replaces everything. */
  reset(): void {
    this.staged = new Map();
    this.replayed = false;
  }

  /** The delta that makes a version whole, or undefined when the entry completes none. Throws on a bad version value. */
  accept(e: KvEntry): RecipientDelta | undefined {
    if (e.key !== VERSION_KEY) {
      if (parseShardKey(e.key)) this.staged.set(e.key, decodeShard(e));
      return undefined;
    }
    if (e.operation !== 'PUT') return undefined;
    const v = decodeListVersion(e);
    if (v.state !== 'done') return undefined;
    const staged = this.staged;
    this.staged = new Map();
    if (!this.replayed) {
      this.replayed = true;
      return this.snapshot(v, staged);
    }
    return this.advance(v, staged);
  }

  private snapshot(v: ListVersionValue, staged: Map<string, string[]>): RecipientDelta {
    const s = this.state;
    s.version = v.version;
    s.domains = new Set(v.domains);
    s.shards = new Map();
    const changes: RecipientChange[] = v.domains.map((domain) => ({ domain, address: '', present: true }));
    for (const [key, addresses] of staged) {
      const domain = parseShardKey(key)!.domain;
      if (!addresses.length || !s.domains.has(domain)) continue;
      s.shards.set(key, new Set(addresses));
      for (const address of addresses) changes.push({ domain, address, present: true });
    }
    return { version: v.version, baseVersion: 0, snapshot: true, changes };
  }

  private advance(v: ListVersionValue, staged: Map<string, string[]>): RecipientDelta {
    const s = this.state;
    const baseVersion = s.version;
    const changes: RecipientChange[] = [];
    const domains = new Set(v.domains);
    for (const domain of domains) if (!s.domains.has(domain)) changes.push({ domain, address: '', present: true });
    for (const [key, addresses] of staged) {
      const domain = parseShardKey(key)!.domain;
      const before = s.shards.get(key) ?? new Set<string>();
      const after = new Set(addresses);
      for (const a of before) if (!after.has(a)) changes.push({ domain, address: a, present: false });
      for (const a of after) if (!before.has(a)) changes.push({ domain, address: a, present: true });
      if (after.size) s.shards.set(key, after);
      else s.shards.delete(key);
    }
    for (const domain of s.domains) if (!domains.has(domain)) changes.push({ domain, address: '', present: false });
    s.version = v.version;
    s.domains = domains;
    // Shards arrive in whatever order the writer's puts landed: the delta (journalled, logged) should not.
    changes.sort((a, b) => (a.domain < b.domain ? -1 : a.domain > b.domain ? 1 : a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
    return { version: v.version, baseVersion, snapshot: false, changes };
  }
}
