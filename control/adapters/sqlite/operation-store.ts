import { EventEmitter } from 'node:events';
import { addMissingColumn, type Db } from './db.js';
import type { OpKind, OpState, OperationRecord } from '../../core/model.js';
import type { OperationStore, OperationStoreEvents } from '../../core/ports.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS operations (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  match TEXT NOT NULL,
  target TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL,
  step TEXT NOT NULL DEFAULT '',
  step_index INTEGER NOT NULL DEFAULT 0,
  error TEXT NOT NULL DEFAULT '',
  started_at INTEGER NOT NULL,
  finished_at INTEGER NOT NULL DEFAULT 0,
  excluded TEXT NOT NULL DEFAULT '[]',
  timeout_ms INTEGER NOT NULL,
  wait_drained INTEGER NOT NULL DEFAULT 0,
  actor TEXT NOT NULL DEFAULT '',
  version INTEGER NOT NULL DEFAULT 0,
  released_at INTEGER NOT NULL DEFAULT 0,
  recipients TEXT NOT NULL DEFAULT '[]'
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS operations_started ON operations (started_at);
CREATE INDEX IF NOT EXISTS operations_state ON operations (state);
`;

interface OpRow {
  id: string;
  kind: OpKind;
  match: string;
  target: string;
  state: OpState;
  step: string;
  step_index: number;
  error: string;
  started_at: number;
  finished_at: number;
  excluded: string;
  timeout_ms: number;
  wait_drained: number;
  actor: string;
  version: number;
  released_at: number;
  recipients: string;
}

const fromRow = (r: OpRow): OperationRecord => ({
  id: r.id,
  kind: r.kind,
  match: r.match,
  target: r.target,
  state: r.state,
  step: r.step,
  stepIndex: r.step_index,
  error: r.error,
  startedAt: r.started_at,
  finishedAt: r.finished_at,
  excluded: JSON.parse(r.excluded) as string[],
  timeoutMs: r.timeout_ms,
  waitDrained: r.wait_drained === 1,
  actor: r.actor,
  version: r.version,
  releasedAt: r.released_at,
  ...(r.recipients !== '[]' ? { recipients: JSON.parse(r.recipients) as string[] } : {}),
});

/** Operations in the controller's SQLite database (one controller process: it owns every operation). */
export class SqliteOperationStore extends EventEmitter<OperationStoreEvents> implements OperationStore {
  readonly claimIntervalMs = 0;
  private claimed = false;

  constructor(private readonly db: Db) {
    super();
    db.exec(SCHEMA);
    // A controller.db from before staged switchovers.
    addMissingColumn(db, 'operations', 'recipients', "TEXT NOT NULL DEFAULT '[]'");
  }

  get(id: string): OperationRecord | undefined {
    const row = this.db.prepare('SELECT * FROM operations WHERE id = ?').get(id) as OpRow | undefined;
    return row ? fromRow(row) : undefined;
  }

  list(limit: number): OperationRecord[] {
    return (this.db.prepare('SELECT * FROM operations ORDER BY started_at DESC, id DESC LIMIT ?').all(limit) as OpRow[]).map(fromRow);
  }

  running(): OperationRecord[] {
    return (this.db.prepare("SELECT * FROM operations WHERE state = 'running' ORDER BY started_at").all() as OpRow[]).map(fromRow);
  }

  countByState(): Record<OpState, number> {
    const out: Record<OpState, number> = { running: 0, done: 0, failed: 0 };
    for (const r of this.db.prepare('SELECT state, count(*) AS n FROM operations GROUP BY state').all() as { state: OpState; n: number }[]) out[r.state] = r.n;
    return out;
  }

  async insert(op: OperationRecord): Promise<void> {
    this.db
      .prepare(
        `INSERT INTO operations (id, kind, match, target, state, step, step_index, error, started_at, finished_at, excluded, timeout_ms, wait_drained, actor, version, released_at, recipients)
         VALUES (@id, @kind, @match, @target, @state, @step, @stepIndex, @error, @startedAt, @finishedAt, @excluded, @timeoutMs, @waitDrained, @actor, @version, @releasedAt, @recipients)`,
      )
      .run({ ...op, excluded: JSON.stringify(op.excluded), waitDrained: op.waitDrained ? 1 : 0, recipients: JSON.stringify(op.recipients ?? []) });
  }

  async save(op: OperationRecord): Promise<void> {
    this.db
      .prepare('UPDATE operations SET state = ?, step = ?, step_index = ?, error = ?, finished_at = ?, version = ?, released_at = ? WHERE id = ?')
      .run(op.state, op.step, op.stepIndex, op.error, op.finishedAt, op.version, op.releasedAt, op.id);
  }

  progress(): void {
    // One process: followers are in this process and get progress from the orchestrator directly.
  }

  async claim(): Promise<OperationRecord[]> {
    if (this.claimed) return [];
    this.claimed = true;
    return this.running();
  }

  runningElsewhere(): boolean {
    return false;
  }

  async release(): Promise<void> {
    // Nothing to hand over: the next start of this controller resumes what is still running.
  }

  async close(): Promise<void> {
    // The database handle belongs to the controller.
  }
}
