import { join } from 'node:path';
import { DeltaJournal, replay } from '../delta-journal.js';
import { MxError } from '../../shared/errors.js';
import type { RecipientDelta } from '../../shared/recipient-list.js';

/** Lists as persisted: version and, per domain with a list, its addresses. */
export interface ListState {
  version: number;
  lists: Map<string, Set<string>>;
}

/**
 * The agent's recipient lists on disk (static stability: a restart without the controller keeps them):
 * `recipients.json` and the deltas applied since in `recipients.journal` (see DeltaJournal), so one small change
 * costs O(change) on disk, not a rewrite of 200,000 addresses.
 */
export class ListJournal {
  private readonly files: DeltaJournal<RecipientDelta>;

  constructor(dataDir: string) {
    this.files = new DeltaJournal(join(dataDir, 'recipients.json'), join(dataDir, 'recipients.journal'));
  }

  load(): ListState {
    const state: ListState = { version: 0, lists: new Map() };
    try {
      const { snapshot, entries } = this.files.read();
      if (snapshot !== undefined) {
        const snap = JSON.parse(snapshot) as { version: number; lists: Record<string, string[]> };
        state.version = snap.version;
        for (const [domain, addresses] of Object.entries(snap.lists)) state.lists.set(domain, new Set(addresses));
      }
      replay(state.version, entries, (delta) => applyDelta(state, delta));
    } catch (err) {
      throw new MxError('CONFIG', `cannot read the recipient lists in ${this.files.snapshotFile} / ${this.files.journalFile}: ${(err as Error).message}; move them aside to start without lists (the controller sends them again)`);
    }
    return state;
  }

  /** Makes a delta durable (one fsync) before it is applied. */
  appendDelta(delta: RecipientDelta): void {
    this.files.append(delta);
  }

  get wantsSnapshot(): boolean {
    return this.files.wantsSnapshot;
  }

  /** Writes `state` as the snapshot and empties the journal. */
  writeSnapshot(state: ListState): void {
    const lists: Record<string, string[]> = {};
    for (const [domain, addresses] of state.lists) lists[domain] = [...addresses];
    this.files.writeSnapshot(JSON.stringify({ version: state.version, lists }));
  }
}

/** Applies a delta (its version, its changes) to `state` in place. */
export function applyDelta(state: ListState, delta: RecipientDelta): void {
  if (delta.snapshot) state.lists = new Map();
  for (const c of delta.changes) {
    if (!c.address) {
      if (c.present) state.lists.set(c.domain, state.lists.get(c.domain) ?? new Set());
      else state.lists.delete(c.domain);
      continue;
    }
    const list = state.lists.get(c.domain);
    if (c.present) (list ?? state.lists.set(c.domain, new Set()).get(c.domain)!).add(c.address);
    else list?.delete(c.address);
  }
  state.version = delta.version;
}
