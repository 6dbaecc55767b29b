import type { RecipientDelta } from '../../shared/recipient-list.js';
import { applyDelta, ListJournal, type ListState } from './journal.js';

/** One chunk of an update as the controller sends it; the update is whole at `last`. */
export type ListChunk = RecipientDelta & { last: boolean };

/**
 * The recipient lists in force on this agent (Postfix's relay_recipient_maps, pushed by the controller): an
 * O(1) lookup at RCPT, updates applied whole (every chunk of one version, persisted, then swapped in) and
 * refused when they do not follow the version in force.
 */
export class RecipientLists {
  private state: ListState;
  private pending: ListChunk | undefined;
  private readonly journal: ListJournal;

  constructor(dataDir: string) {
    this.journal = new ListJournal(dataDir);
    this.state = this.journal.load();
  }

  get version(): number {
    return this.state.version;
  }

  /** false: the domain has a list without this address; undefined: the domain has no list (any local part). */
  accepts(domain: string, address: string): boolean | undefined {
    return this.state.lists.get(domain)?.has(address);
  }

  /** Domains with a list and their sizes. */
  counts(): { domain: string; count: number }[] {
    return [...this.state.lists].map(([domain, set]) => ({ domain, count: set.size })).sort((a, b) => a.domain.localeCompare(b.domain));
  }

  /**
   * Takes one chunk; at the last one of an update, applies and persists it. Returns undefined while an update
   * is incomplete, else the version in force and, for a refused update, why (the lists stay as they were).
   */
  receive(chunk: ListChunk): { version: number; error?: string } | undefined {
    const p = this.pending;
    if (p && (p.version !== chunk.version || p.baseVersion !== chunk.baseVersion || p.snapshot !== chunk.snapshot)) {
      this.pending = undefined;
      return { version: this.version, error: `recipient update ${chunk.version} interrupted update ${p.version}` };
    }
    this.pending = p ? { ...p, changes: p.changes.concat(chunk.changes) } : chunk;
    if (!chunk.last) return undefined;
    const { last: _last, ...update } = this.pending;
    this.pending = undefined;
    if (!update.snapshot && update.baseVersion !== this.version) {
      return { version: this.version, error: `recipient update from version ${update.baseVersion} does not follow version ${this.version}` };
    }
    try {
      if (update.snapshot) {
        const next: ListState = { version: 0, lists: new Map() };
        applyDelta(next, update);
        this.journal.writeSnapshot(next);
        this.state = next;
      } else {
        // Durable first; then applied in place, synchronously, so no lookup sees half of it.
        this.journal.appendDelta(update);
        applyDelta(this.state, update);
      }
    } catch (err) {
      return { version: this.version, error: `cannot persist recipient lists: ${(err as Error).message}` };
    }
    if (this.journal.wantsSnapshot) this.compact();
    return { version: this.version };
  }

  private compact(): void {
    try {
      this.journal.writeSnapshot(this.state);
    } catch {
      // The journal still holds every delta: the next update tries again.
    }
  }
}
