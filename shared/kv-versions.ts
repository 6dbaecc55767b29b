import type { KV, KvEntry } from '@nats-io/kv';
import { decodeJson, isWrongLastSequence } from './nats.js';

/**
 * Versioned writes of many keys in one NATS KV bucket, so that no value nears the server's max payload and readers
 * still see whole versions only (the route table and the recipient lists use it):
 * - the data lives in many small keys (one per route, or shards of a list);
 * - key `version` holds {version, state, ...}: a writer claims the next version with compare-and-set (state
 *   "writing"), puts its keys, then marks it "done" with compare-and-set on its own claim (a writer that lost its
 *   claim to another never marks someone else's version done);
 * - readers watch the whole bucket and apply what they have seen only at "done": the watch delivers in write order,
 *   so by then every key of that version has arrived, and nobody ever applies half a version.
 */
export const VERSION_KEY = 'version';

export interface VersionValue {
  version: number;
  state: 'writing' | 'done';
  actor: string;
  at: number;
}

/** The version value, validated (anyone with write access could put nonsense there); throws on a bad one. */
export function decodeVersion<T extends VersionValue>(e: KvEntry, what: string, valid: (v: Partial<T>) => boolean = () => true): T {
  const v = decodeJson<Partial<T>>(e);
  if (!Number.isSafeInteger(v.version) || (v.version ?? -1) < 0 || (v.state !== 'writing' && v.state !== 'done') || !valid(v)) throw new Error(`not a ${what} version value`);
  return v as T;
}

/** One key of a version: a value, or a deletion. */
export interface KeyWrite {
  key: string;
  data: Uint8Array | null;
}

/** Puts in flight at once: a 100k-route import must not open 100k requests together. */
const CONCURRENT_PUTS = 256;

/** Thrown when the claim was lost: another writer took the version key in between (re-read and retry). */
export class ClaimLost extends Error {}

/**
 * Writes one version: claims it on top of `entry` (the version key as read; null: none yet), writes `writes`, marks
 * it done. A claim refused because the key moved on throws ClaimLost (nothing was written); any other failure
 * leaves the version claimed and not done: readers keep the version before, and the next writer takes over.
 */
export async function commitVersion(kv: KV, entry: KvEntry | null, value: (state: VersionValue['state']) => Uint8Array, writes: readonly KeyWrite[]): Promise<void> {
  let claim: number;
  try {
    claim = entry ? await kv.update(VERSION_KEY, value('writing'), entry.revision) : await kv.create(VERSION_KEY, value('writing'));
  } catch (err) {
    if (isWrongLastSequence(err)) throw new ClaimLost();
    throw err;
  }
  let next = 0;
  const worker = async () => {
    while (next < writes.length) {
      const w = writes[next++]!;
      await (w.data ? kv.put(w.key, w.data) : kv.delete(w.key));
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENT_PUTS, writes.length) }, worker));
  try {
    await kv.update(VERSION_KEY, value('done'), claim);
  } catch (err) {
    if (isWrongLastSequence(err)) throw new Error('another writer took over this version before it was done (this write was too slow); nothing of it applies');
    throw err;
  }
}
