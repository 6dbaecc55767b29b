import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { MxError } from '../../shared/errors.js';
import type { RecipientDelta } from '../../shared/recipient-list.js';

/** Lists as persisted: version and, per domain with a list, its addresses. */
export interface ListState {
  version: number;
  lists: Map<string, Set<string>>;
}

/**
 * The agent's recipient lists on disk (static stability: a restart without the controller keeps them): a
 * snapshot file and a journal of the deltas applied since, each appended with one fsync, so one small change
 * costs O(change) on disk, not a rewrite of 200,000 addresses. The journal is folded into a new snapshot
 * (written aside, fsynced, renamed) when it outgrows it. A torn last line (a crash mid-append: never acked) is
 * ignored at load.
 */
export class ListJournal {
  private readonly snapshotFile: string;
  private readonly journalFile: string;
  private journalBytes = 0;
  private snapshotBytes = 0;

  constructor(dataDir: string) {
    this.snapshotFile = join(dataDir, 'recipients.json');
    this.journalFile = join(dataDir, 'recipients.journal');
  }

  load(): ListState {
    const state: ListState = { version: 0, lists: new Map() };
    try {
      if (existsSync(this.snapshotFile)) {
        const text = readFileSync(this.snapshotFile, 'utf8');
        this.snapshotBytes = text.length;
        const snap = JSON.parse(text) as { version: number; lists: Record<string, string[]> };
        state.version = snap.version;
        for (const [domain, addresses] of Object.entries(snap.lists)) state.lists.set(domain, new Set(addresses));
      }
      if (existsSync(this.journalFile)) {
        const text = readFileSync(this.journalFile, 'utf8');
        this.journalBytes = text.length;
        for (const line of text.split('\n')) {
          let delta: RecipientDelta;
          try {
            delta = JSON.parse(line) as RecipientDelta;
          } catch {
            continue; // the torn tail of a crash, or the empty last line
          }
          if (delta.version > state.version && (delta.snapshot || delta.baseVersion === state.version)) applyDelta(state, delta);
        }
      }
    } catch (err) {
      throw new MxError('CONFIG', `cannot read the recipient lists in ${this.snapshotFile} / ${this.journalFile}: ${(err as Error).message}; move them aside to start without lists (the controller sends them again)`);
    }
    return state;
  }

  /** Makes a delta durable (one fsync) before it is applied. */
  appendDelta(delta: RecipientDelta): void {
    const line = `${JSON.stringify(delta)}\n`;
    const fd = openSync(this.journalFile, 'a', 0o600);
    try {
      writeSync(fd, line);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    this.journalBytes += line.length;
  }

  /** The journal has outgrown the snapshot (and 4 MiB): time to fold it in. */
  get wantsSnapshot(): boolean {
    return this.journalBytes > Math.max(4 * 1024 * 1024, this.snapshotBytes);
  }

  /** Writes `state` as the snapshot (aside, fsynced, renamed) and empties the journal. */
  writeSnapshot(state: ListState): void {
    const lists: Record<string, string[]> = {};
    for (const [domain, addresses] of state.lists) lists[domain] = [...addresses];
    const text = JSON.stringify({ version: state.version, lists });
    const tmp = `${this.snapshotFile}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.snapshotFile);
    const dir = openSync(dirname(this.snapshotFile), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
    // The journal's deltas are all in the snapshot now; emptying it after the rename keeps one or the other whole.
    closeSync(openSync(this.journalFile, 'w', 0o600));
    this.snapshotBytes = text.length;
    this.journalBytes = 0;
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
