import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, truncateSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * A versioned change as a journal line. Changes list the latest state of whatever changed after their base (as
 * the controller's deltas do), so one applies on top of any state from its base version up to its own.
 */
export interface JournalEntry {
  version: number;
  baseVersion: number;
  snapshot: boolean;
}

/**
 * A state kept on disk as a snapshot file plus an append-only journal of the changes applied since (the agent's
 * route table, its recipient lists): one small change costs one fsynced append, O(change), not a rewrite of the
 * whole state. The journal is folded into a new snapshot (written aside, fsynced, renamed, directory fsynced)
 * when it outgrows it; only then is it emptied, so after a crash at any point the snapshot and the journal lines
 * that follow its version give the last state made durable. A torn last line (a crash mid-append, never acked)
 * is ignored at load, and so is any line that does not follow the state loaded so far.
 */
export class DeltaJournal<E extends JournalEntry> {
  private journalBytes = 0;
  private snapshotBytes = 0;

  constructor(
    readonly snapshotFile: string,
    readonly journalFile: string,
  ) {}

  /** The snapshot's text (undefined: none yet), and the journal's entries in order (the caller applies those that follow). */
  read(): { snapshot: string | undefined; entries: E[] } {
    let snapshot: string | undefined;
    if (existsSync(this.snapshotFile)) {
      snapshot = readFileSync(this.snapshotFile, 'utf8');
      this.snapshotBytes = snapshot.length;
    }
    const entries: E[] = [];
    if (existsSync(this.journalFile)) {
      let text = readFileSync(this.journalFile, 'utf8');
      if (text && !text.endsWith('\n')) {
        // A torn last line: cut it off, or the next append would continue it and be unreadable too.
        text = text.slice(0, text.lastIndexOf('\n') + 1);
        truncateSync(this.journalFile, Buffer.byteLength(text));
      }
      this.journalBytes = text.length;
      for (const line of text.split('\n')) {
        try {
          entries.push(JSON.parse(line) as E);
        } catch {
          // the torn tail of a crash, or the empty last line
        }
      }
    }
    return { snapshot, entries };
  }

  /** Makes a change durable (one write, one fsync) before it is applied. */
  append(entry: E): void {
    const line = `${JSON.stringify(entry)}\n`;
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

  /**
   * Writes `text` as the snapshot (aside, fsynced, renamed) and then empties the journal. A journal that cannot be
   * emptied is no harm (its lines are at or below the snapshot's version, skipped at load): `onJournalError` hears
   * of it and the snapshot stands.
   */
  writeSnapshot(text: string, onJournalError: (err: unknown) => void = () => undefined): void {
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
    this.snapshotBytes = text.length;
    try {
      closeSync(openSync(this.journalFile, 'w', 0o600));
      this.journalBytes = 0;
    } catch (err) {
      onJournalError(err);
    }
  }
}

/** Folds a journal's entries into a state at `version`: each newer one that follows it (or is a snapshot) in turn. */
export function replay<E extends JournalEntry>(version: number, entries: readonly E[], apply: (entry: E) => void): number {
  let v = version;
  for (const e of entries) {
    if (e.version > v && (e.snapshot || (e.baseVersion >= 1 && e.baseVersion <= v))) {
      apply(e);
      v = e.version;
    }
  }
  return v;
}
