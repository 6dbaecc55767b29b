import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Logger } from '../shared/logger.js';
import { MxError, errorMessage } from '../shared/errors.js';
import { formatTarget, normalizeMatch, parseTarget } from '../shared/routes.js';
import type { Db } from './db.js';
import type { AgentInfo, Registry } from './registry.js';
import type { RouteStore } from './route-store.js';
import type { Sessions } from './sessions.js';

export type OpKind = 'hold' | 'release' | 'switchover' | 'flush';
export type OpState = 'running' | 'done' | 'failed';
type StepName = 'hold' | 'retarget' | 'release' | 'flush' | 'drain';

export interface OperationRecord {
  id: string;
  kind: OpKind;
  /** Normalised route match ('' = every route, flush only). */
  match: string;
  target: string;
  state: OpState;
  /** Human-readable current step, e.g. "2/4 retarget". */
  step: string;
  stepIndex: number;
  error: string;
  startedAt: number;
  finishedAt: number;
  excluded: string[];
  timeoutMs: number;
  waitDrained: boolean;
  actor: string;
  /** Table version the last table step produced (flush commands require it). */
  version: number;
  /** When the release step completed (drain baseline), 0 before. */
  releasedAt: number;
}

export interface AgentDrainInfo {
  agentId: string;
  queued: number;
  delivered: number;
  drained: boolean;
}

export interface Progress {
  operation: OperationRecord;
  message: string;
  waitingVersion: number;
  acked: string[];
  pending: string[];
  failed: string[];
  drain: AgentDrainInfo[];
}

export interface StartRequest {
  kind: OpKind;
  match: string;
  target?: string;
  exclude?: readonly string[];
  /** Per step; 0/undefined = config.stepTimeout. */
  timeoutMs?: number;
  waitDrained?: boolean;
  actor?: string;
}

export interface OrchestratorOptions {
  db: Db;
  store: RouteStore;
  registry: Registry;
  sessions: Sessions;
  stepTimeoutMs: number;
  log: Logger;
}

const STEPS: Record<OpKind, (waitDrained: boolean) => StepName[]> = {
  hold: () => ['hold'],
  release: () => ['release'],
  flush: () => ['flush'],
  switchover: (w) => (w ? ['hold', 'retarget', 'release', 'flush', 'drain'] : ['hold', 'retarget', 'release', 'flush']),
};

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
  released_at INTEGER NOT NULL DEFAULT 0
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
});

/** Thrown inside a running step when the controller stops: the operation stays "running" and resumes at start. */
class Stopping extends Error {}

/** A step failed: the message is the operator's report; `agents` lists each failed agent as "id: reason". */
class StepFailed extends Error {
  constructor(
    message: string,
    readonly agents: string[] = [],
  ) {
    super(message);
  }
}

/** Allowance for the transit time of a health report when deciding that mail is newer than the release. */
const HEALTH_SLACK_MS = 250;

/**
 * hold / release / switchover / flush as persisted step machines. A table step writes one route change and is
 * done when every expected, non-excluded agent has applied that version (or a later one) and none refused it;
 * a nack or the step timeout fails the operation with a report and leaves the route as the last step left it
 * (held, for a switchover that had not released yet). A running operation survives a controller restart: it
 * resumes at its current step (steps are idempotent).
 */
export class Orchestrator extends EventEmitter<{ progress: [Progress]; operation: [OperationRecord]; stopping: [] }> {
  private readonly last = new Map<string, Progress>();
  private readonly running = new Map<string, Promise<void>>();
  private readonly wakers = new Set<() => void>();
  private stopping = false;
  private readonly onAgent = () => this.wake();

  constructor(private readonly o: OrchestratorOptions) {
    super();
    this.setMaxListeners(0);
    o.db.exec(SCHEMA);
    o.registry.on('agent', this.onAgent);
    o.registry.on('removed', this.onAgent);
  }

  /** Resumes operations a previous controller process left running. */
  resume(): void {
    for (const op of this.runningOps()) {
      this.o.log.info({ op: op.id, kind: op.kind, match: op.match, step: op.step }, 'resuming operation after restart');
      this.launch(op);
    }
  }

  /** Stops waiting (operations stay "running" in the database and resume at the next start). */
  async stop(): Promise<void> {
    this.stopping = true;
    this.emit('stopping');
    this.o.registry.off('agent', this.onAgent);
    this.o.registry.off('removed', this.onAgent);
    this.wake();
    await Promise.allSettled([...this.running.values()]);
  }

  get(id: string): OperationRecord | undefined {
    const row = this.o.db.prepare('SELECT * FROM operations WHERE id = ?').get(id) as OpRow | undefined;
    return row ? fromRow(row) : undefined;
  }

  /** Newest first. */
  list(limit = 20): OperationRecord[] {
    return (this.o.db.prepare('SELECT * FROM operations ORDER BY started_at DESC, id DESC LIMIT ?').all(limit) as OpRow[]).map(fromRow);
  }

  runningOps(): OperationRecord[] {
    return (this.o.db.prepare("SELECT * FROM operations WHERE state = 'running' ORDER BY started_at").all() as OpRow[]).map(fromRow);
  }

  countByState(): Record<OpState, number> {
    const out: Record<OpState, number> = { running: 0, done: 0, failed: 0 };
    for (const r of this.o.db.prepare('SELECT state, count(*) AS n FROM operations GROUP BY state').all() as { state: OpState; n: number }[]) out[r.state] = r.n;
    return out;
  }

  /** The latest progress of an operation (for Follow); synthesised from the record when none is in memory. */
  progress(id: string): Progress | undefined {
    const op = this.get(id);
    if (!op) return undefined;
    const p = this.last.get(id);
    if (p && p.operation.state === op.state && p.operation.stepIndex === op.stepIndex) return { ...p, operation: op };
    return { operation: op, message: op.error || (op.state === 'done' ? 'done' : op.step), waitingVersion: 0, acked: [], pending: [], failed: [], drain: [] };
  }

  isRunning(id: string): boolean {
    return this.running.has(id);
  }

  /** Validates and starts an operation; refusals throw typed errors before anything changes. */
  start(req: StartRequest): OperationRecord {
    if (this.stopping) throw new MxError('UNAVAILABLE', 'the controller is shutting down');
    let match = '';
    if (req.match || req.kind !== 'flush') {
      try {
        match = normalizeMatch(req.match).key;
      } catch (err) {
        throw new MxError('INVALID_ARGUMENT', errorMessage(err));
      }
    }
    let target = '';
    if (req.kind === 'switchover') {
      if (!req.target) throw new MxError('INVALID_ARGUMENT', 'switchover needs a target (--to smtp:[host]:port)');
      try {
        target = formatTarget(parseTarget(req.target));
      } catch (err) {
        throw new MxError('INVALID_ARGUMENT', errorMessage(err));
      }
    }
    if (req.kind !== 'flush' && !this.o.store.get(match)) throw new MxError('NOT_FOUND', `no route for "${match}"; create it with \`mxswitch route set ${match} TARGET\` first`);
    const exclude = [...new Set(req.exclude ?? [])].sort();
    const unknown = exclude.filter((id) => !this.o.registry.get(id));
    if (unknown.length) throw new MxError('INVALID_ARGUMENT', `--exclude names unknown agents: ${unknown.join(', ')}`);
    if (req.kind !== 'flush') {
      const clash = this.runningOps().find((op) => op.kind !== 'flush' && op.match === match);
      if (clash) throw new MxError('OPERATION_RUNNING', `operation ${clash.id} (${clash.kind}) is still running on ${match}; follow it or wait`);
    }
    const missing = this.targets(exclude)
      .map((id) => this.o.registry.get(id)!)
      .filter((a) => a.state !== 'connected');
    if (missing.length) {
      throw new MxError(
        'AGENTS_DISCONNECTED',
        `expected agents not connected: ${missing.map((a) => `${a.id} (${a.state})`).join(', ')}; bring them back or pass --exclude ${missing.map((a) => a.id).join(' --exclude ')}`,
      );
    }
    const steps = STEPS[req.kind](Boolean(req.waitDrained));
    const op: OperationRecord = {
      id: `op-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`,
      kind: req.kind,
      match,
      target,
      state: 'running',
      step: this.stepLabel(steps, 0),
      stepIndex: 0,
      error: '',
      startedAt: Date.now(),
      finishedAt: 0,
      excluded: exclude,
      timeoutMs: req.timeoutMs || this.o.stepTimeoutMs,
      waitDrained: Boolean(req.waitDrained),
      actor: req.actor || 'unknown',
      version: 0,
      releasedAt: 0,
    };
    this.o.db
      .prepare(
        `INSERT INTO operations (id, kind, match, target, state, step, step_index, error, started_at, finished_at, excluded, timeout_ms, wait_drained, actor, version, released_at)
         VALUES (@id, @kind, @match, @target, @state, @step, @stepIndex, @error, @startedAt, @finishedAt, @excluded, @timeoutMs, @waitDrained, @actor, @version, @releasedAt)`,
      )
      .run({ ...op, excluded: JSON.stringify(op.excluded), waitDrained: op.waitDrained ? 1 : 0 });
    this.o.log.info({ op: op.id, kind: op.kind, match, target, excluded: exclude, actor: op.actor }, 'operation started');
    this.emit('operation', op);
    this.report(op, `${op.kind} ${match || '(all routes)'} started`);
    this.launch(op);
    return op;
  }

  /** Resolves when the operation is no longer running in this process. */
  async settled(id: string): Promise<void> {
    await this.running.get(id);
  }

  private launch(op: OperationRecord): void {
    const run = this.run(op)
      .catch((err: unknown) => this.o.log.error({ err, op: op.id }, 'operation crashed'))
      .finally(() => this.running.delete(op.id));
    this.running.set(op.id, run);
  }

  private targets(excluded: readonly string[]): string[] {
    return this.o.registry.expectedIds().filter((id) => !excluded.includes(id));
  }

  private stepLabel(steps: StepName[], i: number): string {
    return steps.length > 1 ? `${i + 1}/${steps.length} ${steps[i]}` : steps[i]!;
  }

  private save(op: OperationRecord): void {
    this.o.db
      .prepare('UPDATE operations SET state = ?, step = ?, step_index = ?, error = ?, finished_at = ?, version = ?, released_at = ? WHERE id = ?')
      .run(op.state, op.step, op.stepIndex, op.error, op.finishedAt, op.version, op.releasedAt, op.id);
    this.emit('operation', { ...op });
  }

  private async run(op: OperationRecord): Promise<void> {
    const steps = STEPS[op.kind](op.waitDrained);
    try {
      for (let i = op.stepIndex; i < steps.length; i++) {
        if (i !== op.stepIndex || op.step !== this.stepLabel(steps, i)) {
          op.stepIndex = i;
          op.step = this.stepLabel(steps, i);
          this.save(op);
        }
        await this.runStep(op, steps[i]!);
      }
      op.state = 'done';
      op.finishedAt = Date.now();
      op.step = 'done';
      op.stepIndex = steps.length;
      this.save(op);
      this.o.log.info({ op: op.id, kind: op.kind, match: op.match, ms: op.finishedAt - op.startedAt }, 'operation done');
      // The final report keeps the last step's lists (who acked, per-agent drain) for the operator's summary.
      const prev = this.last.get(op.id);
      this.report(op, `${op.kind} ${op.match || '(all routes)'} done`, [], prev?.waitingVersion ?? 0, prev?.acked ?? [], [], prev?.drain ?? []);
    } catch (err) {
      if (err instanceof Stopping) return;
      op.state = 'failed';
      op.finishedAt = Date.now();
      op.error = `${op.kind} failed at step ${op.step}: ${errorMessage(err)}${this.safetyNote(op, steps[op.stepIndex])}`;
      this.save(op);
      this.o.log.error({ op: op.id, kind: op.kind, match: op.match, error: op.error }, 'operation failed');
      this.report(op, op.error, err instanceof StepFailed ? err.agents : []);
    }
  }

  /** What a failure leaves behind, in words an operator can act on. */
  private safetyNote(op: OperationRecord, step: StepName | undefined): string {
    if (op.kind === 'switchover' && (step === 'hold' || step === 'retarget')) {
      return `. ${op.match} stays held (mail is accepted and kept, nothing is delivered); retry the switchover or run \`mxswitch release ${op.match}\``;
    }
    if (op.kind === 'switchover') return `. ${op.match} is released and routed to ${op.target}`;
    if (op.kind === 'hold') return `. ${op.match} is held in the table; agents that acked hold its mail`;
    return '';
  }

  /**
   * One step. Steps are idempotent (a resumed step finds its change already made and just waits), so the
   * version a step produced need not be persisted before waiting: one fsync less per step.
   */
  private async runStep(op: OperationRecord, step: StepName): Promise<void> {
    const { store } = this.o;
    const actor = `${op.actor} (${op.kind} ${op.id})`;
    const route = () => {
      const r = store.get(op.match);
      if (!r) throw new StepFailed(`the route for ${op.match} was removed during the operation`);
      return r;
    };
    switch (step) {
      case 'hold': {
        const r = route();
        op.version = r.hold ? store.version : store.setHold(op.match, true, { actor });
        await this.waitAcks(op, `hold ${op.match}`);
        return;
      }
      case 'retarget': {
        const r = route();
        if (!r.hold) throw new StepFailed(`${op.match} was released by someone else during the switchover`);
        op.version = r.target === op.target ? store.version : store.set({ ...r, target: op.target, hold: true }, { actor });
        await this.waitAcks(op, `point ${op.match} to ${op.target} (still held)`);
        return;
      }
      case 'release': {
        const r = route();
        if (op.kind === 'switchover' && r.target !== op.target) throw new StepFailed(`${op.match} was re-pointed to ${r.target} by someone else during the switchover`);
        this.drainBaseline.set(op.id, this.deliveredCounters());
        op.version = r.hold ? store.setHold(op.match, false, { actor }) : store.version;
        await this.waitAcks(op, `release ${op.match}`);
        op.releasedAt = Date.now();
        this.save(op);
        return;
      }
      case 'flush':
        await this.flush(op);
        return;
      case 'drain':
        await this.waitDrained(op);
        return;
    }
  }

  private readonly drainBaseline = new Map<string, Map<string, number>>();

  private deliveredCounters(): Map<string, number> {
    return new Map(this.o.registry.list().map((a) => [a.id, a.health?.counters?.delivered ?? 0]));
  }

  private wake(): void {
    for (const w of [...this.wakers]) w();
  }

  /**
   * Re-evaluates `check` on every registry change until it returns true, throws, or the step times out;
   * `timeoutReport` words the failure.
   */
  private waitUntil(op: OperationRecord, check: () => boolean, timeoutReport: () => StepFailed): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let done = false;
      const finish = (err?: Error) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.wakers.delete(evaluate);
        if (err) reject(err);
        else resolve();
      };
      const evaluate = () => {
        if (done) return;
        if (this.stopping) return finish(new Stopping());
        try {
          if (check()) finish();
        } catch (err) {
          finish(err as Error);
        }
      };
      const timer = setTimeout(() => finish(timeoutReport()), op.timeoutMs);
      timer.unref();
      this.wakers.add(evaluate);
      evaluate();
    });
  }

  private describe(a: AgentInfo | undefined, id: string): string {
    if (!a) return `${id} (removed)`;
    return `${id} (${a.state}, at version ${a.appliedVersion}${a.lastError ? `, ${a.lastError}` : ''})`;
  }

  private async waitAcks(op: OperationRecord, what: string): Promise<void> {
    const v = op.version;
    let lastKey = '';
    const classify = () => {
      const acked: string[] = [];
      const pending: string[] = [];
      const failed: string[] = [];
      for (const id of this.targets(op.excluded)) {
        const a = this.o.registry.get(id);
        if (a && a.appliedVersion >= v) acked.push(id);
        else if (a?.lastNack && a.lastNack.version >= v) failed.push(`${id}: ${a.lastNack.error}`);
        else pending.push(id);
      }
      return { acked, pending, failed };
    };
    await this.waitUntil(
      op,
      () => {
        const c = classify();
        const key = JSON.stringify(c);
        if (key !== lastKey) {
          lastKey = key;
          this.report(op, c.pending.length || c.failed.length ? `${what}: waiting for version ${v}` : `${what}: every agent applied version ${v}`, c.failed, v, c.acked, c.pending);
        }
        if (c.failed.length) throw new StepFailed(`agents refused version ${v}: ${c.failed.join('; ')}`, c.failed);
        return c.pending.length === 0;
      },
      () => {
        const agents = classify().pending.map((id) => this.describe(this.o.registry.get(id), id));
        return new StepFailed(`timed out after ${op.timeoutMs} ms waiting for version ${v} from ${agents.join(', ')}`, agents);
      },
    );
  }

  private async flush(op: OperationRecord): Promise<void> {
    const minVersion = op.kind === 'flush' ? this.o.store.version : op.version;
    const ids = this.targets(op.excluded);
    this.report(op, `flush ${op.match || '(all routes)'} on ${ids.length} agents (requires version ${minVersion})`, [], minVersion, [], ids);
    const results = await Promise.all(
      ids.map(async (id) => ({ id, r: await this.o.sessions.command(id, { $case: 'flush', value: { match: op.match } }, minVersion, op.timeoutMs) })),
    );
    if (this.stopping) throw new Stopping();
    const failed = results.filter((x) => !x.r.ok).map((x) => `${x.id}: ${x.r.error}`);
    const acked = results.filter((x) => x.r.ok).map((x) => x.id);
    this.report(op, failed.length ? 'flush failed on some agents' : 'flush done on every agent', failed, minVersion, acked, []);
    if (failed.length) throw new StepFailed(`flush failed: ${failed.join('; ')}`, failed);
  }

  /**
   * Done when no agent has mail under MATCH that arrived before the release: its queue for the route is empty,
   * or its oldest message is younger than the release (with continuous traffic the queue is never empty, but
   * what remains is new mail that went straight to the new target).
   */
  private async waitDrained(op: OperationRecord): Promise<void> {
    const releasedAt = op.releasedAt || Date.now();
    const baseline = this.drainBaseline.get(op.id) ?? new Map<string, number>();
    let lastKey = '';
    const compute = (): AgentDrainInfo[] =>
      this.targets(op.excluded).map((id) => {
        const a = this.o.registry.get(id);
        const h = a?.health;
        const q = h?.queues.filter((x) => x.match === op.match) ?? [];
        const queued = q.reduce((n, x) => n + x.queued + x.deferred + x.held + x.inFlight, 0);
        const oldestMs = Math.max(0, ...q.map((x) => x.oldestAgeSeconds * 1000));
        const fresh = Boolean(a && a.healthAt > releasedAt);
        const drained = fresh && (queued === 0 || a!.healthAt - oldestMs - HEALTH_SLACK_MS > releasedAt);
        const now = h?.counters?.delivered ?? 0;
        const base = baseline.get(id) ?? 0;
        return { agentId: id, queued, delivered: now >= base ? now - base : now, drained };
      });
    await this.waitUntil(
      op,
      () => {
        const drain = compute();
        const key = JSON.stringify(drain);
        if (key !== lastKey) {
          lastKey = key;
          const left = drain.filter((d) => !d.drained);
          this.report(
            op,
            left.length ? `waiting for ${op.match} to drain on ${left.map((d) => d.agentId).join(', ')}` : `${op.match} drained on every agent`,
            [],
            0,
            drain.filter((d) => d.drained).map((d) => d.agentId),
            left.map((d) => d.agentId),
            drain,
          );
        }
        return drain.every((d) => d.drained);
      },
      () => {
        const agents = compute()
          .filter((d) => !d.drained)
          .map((d) => `${d.agentId}: ${d.queued} recipients still queued`);
        return new StepFailed(`timed out after ${op.timeoutMs} ms waiting for ${op.match} to drain: ${agents.join('; ')}`, agents);
      },
    );
    this.drainBaseline.delete(op.id);
  }

  private report(op: OperationRecord, message: string, failed: string[] = [], waitingVersion = 0, acked: string[] = [], pending: string[] = [], drain: AgentDrainInfo[] = []): void {
    const p: Progress = { operation: { ...op, excluded: [...op.excluded] }, message, waitingVersion, acked, pending, failed, drain };
    this.last.set(op.id, p);
    if (this.last.size > 200) this.last.delete(this.last.keys().next().value!);
    this.emit('progress', p);
  }
}
