import { join } from 'node:path';
import { MxError, errorMessage } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import type { RouteDelta } from '../shared/route-delta.js';
import { RouteTable, type Route } from '../shared/routes.js';
import { DeltaJournal, replay } from './delta-journal.js';

/** routes.json as written since the first release (so an older agent's file loads, and a newer one's too). */
interface Persisted {
  version: number;
  routes: Route[];
  appliedAt: number;
}

/**
 * The last applied route table, so an agent restarts with it before (or without) reaching its controller:
 * `routes.json` (the table at some version) and `routes.journal` (each delta applied since, one fsynced line).
 * A delta costs one small append, whatever the table's size; a snapshot from the controller, or a journal grown
 * past the table, rewrites routes.json (temp file + fsync + rename). A crash at any point leaves routes.json and
 * the journal lines that follow its version: the last table persisted, whole.
 */
export class RouteJournal {
  private readonly files: DeltaJournal<RouteDelta>;

  constructor(
    dataDir: string,
    private readonly log?: Logger,
  ) {
    this.files = new DeltaJournal(join(dataDir, 'routes.json'), join(dataDir, 'routes.journal'));
  }

  /** The persisted table, undefined when there is none. */
  load(): RouteTable | undefined {
    try {
      const { snapshot, entries } = this.files.read();
      if (snapshot === undefined) return undefined;
      const doc = JSON.parse(snapshot) as Persisted;
      let table = new RouteTable(doc.routes, doc.version);
      replay(table.version, entries, (delta) => (table = table.withDelta(delta)));
      return table;
    } catch (err) {
      throw new MxError('CONFIG', `cannot read the last applied route table in ${this.files.snapshotFile} / ${this.files.journalFile}: ${errorMessage(err)}; move them aside to start from the config's routes (the controller sends its table again)`);
    }
  }

  /**
   * Makes `next` (the table after `delta`) durable before it is swapped in: the delta appended, or, for a
   * snapshot or a journal due for folding, the whole table written.
   */
  persist(delta: RouteDelta, next: RouteTable): void {
    if (delta.snapshot || this.files.wantsSnapshot) this.writeSnapshot(next);
    else this.files.append(delta);
  }

  private writeSnapshot(table: RouteTable): void {
    const doc: Persisted = { version: table.version, routes: [...table.routes], appliedAt: Date.now() };
    this.files.writeSnapshot(JSON.stringify(doc), (err) => this.log?.warn({ err, file: this.files.journalFile }, 'route journal not emptied after a snapshot (harmless: its lines are older than the snapshot)'));
  }
}
