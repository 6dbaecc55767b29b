import type { ShadowPlanState, ShadowStateStore } from '../../core/shadow-plan.js';
import type { Db } from './db.js';

const SCHEMA = `CREATE TABLE IF NOT EXISTS shadow_plan (id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL);`;

/** The shadow pairing, its credential secret and the takeovers, as one document in controller.db. */
export class SqliteShadowStore implements ShadowStateStore {
  constructor(private readonly db: Db) {
    db.exec(SCHEMA);
  }

  load(): ShadowPlanState | undefined {
    const text = this.db.prepare('SELECT state FROM shadow_plan WHERE id = 1').pluck().get() as string | undefined;
    return text ? (JSON.parse(text) as ShadowPlanState) : undefined;
  }

  save(state: ShadowPlanState): void {
    this.db.prepare('INSERT INTO shadow_plan (id, state) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET state = excluded.state').run(JSON.stringify(state));
  }
}
