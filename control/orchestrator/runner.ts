import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Logger } from '../../shared/logger.js';
import { MxError, errorMessage } from '../../shared/errors.js';
import type { Registry } from '../core/registry.js';
import type { OpState, OperationRecord, Progress } from '../core/model.js';
import { OwnershipLost, type AgentCommander, type OperationStore, type RouteStoreApi } from '../core/ports.js';
import { progressOf, type ProgressLists } from './progress.js';
import { holdAddresses, releaseAddresses, retargetAddresses } from './staged.js';
import { safetyNote, stepLabel, StepFailed, STEPS, Stopping, subject, type StepName } from './steps.js';
import { flushAgents, waitAcks, waitDrained, type StepContext } from './step-waits.js';
import { waitUntil } from './wait.js';
import { validateStart, type StartRequest } from './validate.js';

export interface OrchestratorOptions {
  ops: OperationStore;
  store: RouteStoreApi;
  registry: Registry;
  commands: AgentCommander;
  stepTimeoutMs: number;
  log: Logger;
}

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
  /** Operations another process took over while this one was running them: their local run stops. */
  private readonly abandoned = new Set<string>();
  private claimTimer: NodeJS.Timeout | undefined;
  private readonly onAgent = () => this.wake();
  private readonly onRemote = (op: OperationRecord, p: Progress | undefined) => {
    if (this.running.has(op.id)) return;
    if (p) {
      this.last.set(op.id, p);
      this.emit('progress', p);
    }
    this.emit('operation', op);
  };
  private readonly onLost = (id: string) => {
    if (!this.running.has(id)) return;
    this.o.log.warn({ op: id }, 'another controller took over this operation; stopping here');
    this.abandoned.add(id);
    this.wake();
  };

  constructor(private readonly o: OrchestratorOptions) {
    super();
    this.setMaxListeners(0);
    o.registry.on('agent', this.onAgent);
    o.registry.on('removed', this.onAgent);
    o.ops.on('remote', this.onRemote);
    o.ops.on('lost', this.onLost);
  }

  /**
   * Resumes operations a previous controller process left running; with a shared store (NATS), keeps looking for
   * operations whose controller went away and resumes them here.
   */
  async resume(): Promise<void> {
    await this.claim();
    if (this.o.ops.claimIntervalMs > 0 && !this.stopping) {
      this.claimTimer = setInterval(() => void this.claim(), this.o.ops.claimIntervalMs);
      this.claimTimer.unref();
    }
  }

  private async claim(): Promise<void> {
    let ops: OperationRecord[];
    try {
      ops = await this.o.ops.claim();
    } catch (err) {
      this.o.log.warn({ error: errorMessage(err) }, 'cannot look for operations to resume');
      return;
    }
    for (const op of ops) {
      if (this.stopping || this.running.has(op.id)) continue;
      this.o.log.info({ op: op.id, kind: op.kind, match: op.match, step: op.step }, 'resuming operation');
      this.launch(op);
    }
  }

  /** Stops waiting (operations stay "running" in the store and resume at the next start, or on another replica). */
  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.claimTimer);
    this.emit('stopping');
    this.o.registry.off('agent', this.onAgent);
    this.o.registry.off('removed', this.onAgent);
    this.o.ops.off('remote', this.onRemote);
    this.o.ops.off('lost', this.onLost);
    this.wake();
    await Promise.allSettled([...this.running.values()]);
  }

  get(id: string): OperationRecord | undefined {
    return this.o.ops.get(id);
  }

  /** Newest first. */
  list(limit = 20): OperationRecord[] {
    return this.o.ops.list(limit);
  }

  runningOps(): OperationRecord[] {
    return this.o.ops.running();
  }

  countByState(): Record<OpState, number> {
    return this.o.ops.countByState();
  }

  /** The latest progress of an operation (for Follow); synthesised from the record when none is in memory. */
  progress(id: string): Progress | undefined {
    const op = this.get(id);
    if (!op) return undefined;
    const p = this.last.get(id);
    if (p && p.operation.state === op.state && p.operation.stepIndex === op.stepIndex) return { ...p, operation: op };
    return { operation: op, message: op.error || (op.state === 'done' ? 'done' : op.step), waitingVersion: 0, acked: [], pending: [], failed: [], drain: [] };
  }

  /** Running here, or (shared store) on another controller that reports its progress through the store. */
  isRunning(id: string): boolean {
    return this.running.has(id) || this.o.ops.runningElsewhere(id);
  }

  /** Validates and starts an operation; refusals throw typed errors before anything changes. */
  async start(req: StartRequest): Promise<OperationRecord> {
    if (this.stopping) throw new MxError('UNAVAILABLE', 'the controller is shutting down');
    const { match, target, exclude, recipients } = validateStart(req, { store: this.o.store, registry: this.o.registry, running: this.runningOps(), targets: (ex: readonly string[]) => this.targets(ex) });
    const steps = STEPS[req.kind](Boolean(req.waitDrained));
    const op: OperationRecord = {
      id: `op-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`,
      kind: req.kind,
      match,
      target,
      state: 'running',
      step: stepLabel(steps, 0),
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
      ...(recipients.length ? { recipients } : {}),
    };
    await this.o.ops.insert(op);
    this.o.log.info({ op: op.id, kind: op.kind, match, target, excluded: exclude, actor: op.actor }, 'operation started');
    this.emit('operation', op);
    this.report(op, `${op.kind} ${subject(op)} started`);
    this.launch(op);
    return op;
  }

  /** Resolves when the operation is no longer running in this process. */
  async settled(id: string): Promise<void> {
    await this.running.get(id);
  }

  private launch(op: OperationRecord): void {
    let crashed = false;
    const run = this.run(op)
      .catch((err: unknown) => {
        crashed = true;
        this.o.log.error({ err, op: op.id }, 'operation crashed');
      })
      .finally(async () => {
        this.running.delete(op.id);
        const lost = this.abandoned.delete(op.id);
        // Still running (controller stopping, store unreachable): another replica may resume it — at once after a
        // clean stop, after the lease otherwise.
        if (!lost && op.state === 'running') await this.o.ops.release(op.id, !crashed).catch(() => undefined);
      });
    this.running.set(op.id, run);
  }

  private targets(excluded: readonly string[]): string[] {
    return this.o.registry.expectedIds().filter((id) => !excluded.includes(id));
  }

  /** Persists the operation (with its final progress when it ends, so followers elsewhere see both at once). */
  private async save(op: OperationRecord, final?: Progress): Promise<void> {
    if (this.abandoned.has(op.id)) throw new Stopping();
    try {
      await this.o.ops.save(op, final);
    } catch (err) {
      if (err instanceof OwnershipLost) throw new Stopping();
      throw err;
    }
    this.emit('operation', { ...op });
  }

  private async run(op: OperationRecord): Promise<void> {
    const steps = STEPS[op.kind](op.waitDrained);
    try {
      for (let i = op.stepIndex; i < steps.length; i++) {
        if (i !== op.stepIndex || op.step !== stepLabel(steps, i)) {
          op.stepIndex = i;
          op.step = stepLabel(steps, i);
          await this.save(op);
        }
        await this.runStep(op, steps[i]!);
      }
      op.state = 'done';
      op.finishedAt = Date.now();
      op.step = 'done';
      op.stepIndex = steps.length;
      // The final report keeps the last step's lists (who acked, per-agent drain) for the operator's summary.
      const prev = this.last.get(op.id);
      const final = progressOf(op, `${op.kind} ${subject(op)} done`, { waitingVersion: prev?.waitingVersion ?? 0, acked: prev?.acked ?? [], drain: prev?.drain ?? [] });
      await this.save(op, final);
      this.o.log.info({ op: op.id, kind: op.kind, match: op.match, ms: op.finishedAt - op.startedAt }, 'operation done');
      this.publish(final);
    } catch (err) {
      if (err instanceof Stopping) return;
      op.state = 'failed';
      op.finishedAt = Date.now();
      op.error = `${op.kind} failed at step ${op.step}: ${errorMessage(err)}${safetyNote(op, steps[op.stepIndex])}`;
      const final = progressOf(op, op.error, { failed: err instanceof StepFailed ? err.agents : [] });
      try {
        await this.save(op, final);
      } catch (saveErr) {
        if (saveErr instanceof Stopping) return;
        throw saveErr;
      }
      this.o.log.error({ op: op.id, kind: op.kind, match: op.match, error: op.error }, 'operation failed');
      this.publish(final);
    }
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
    const moved = op.recipients ?? [];
    if (moved.length && (step === 'hold' || step === 'retarget' || step === 'release')) {
      if (step === 'release') this.drainBaseline.set(op.id, this.deliveredCounters());
      if (step === 'hold') op.version = await holdAddresses(store, moved, actor);
      else if (step === 'retarget') op.version = await retargetAddresses(store, moved, op.target, actor);
      else op.version = await releaseAddresses(store, moved, op.target, actor);
      await waitAcks(this.stepContext(op), `${step} ${subject(op)}${step === 'retarget' ? ` -> ${op.target} (still held)` : ''}`);
      if (step === 'release') {
        op.releasedAt = Date.now();
        await this.save(op);
      }
      return;
    }
    switch (step) {
      case 'hold': {
        const r = route();
        op.version = r.hold ? store.version : await store.setHold(op.match, true, { actor });
        await waitAcks(this.stepContext(op), `hold ${op.match}`);
        return;
      }
      case 'retarget': {
        const r = route();
        if (!r.hold) throw new StepFailed(`${op.match} was released by someone else during the switchover`);
        op.version = r.target === op.target ? store.version : await store.set({ ...r, target: op.target, hold: true }, { actor });
        await waitAcks(this.stepContext(op), `point ${op.match} to ${op.target} (still held)`);
        return;
      }
      case 'release': {
        const r = route();
        if (op.kind === 'switchover' && r.target !== op.target) throw new StepFailed(`${op.match} was re-pointed to ${r.target} by someone else during the switchover`);
        this.drainBaseline.set(op.id, this.deliveredCounters());
        op.version = r.hold ? await store.setHold(op.match, false, { actor }) : store.version;
        await waitAcks(this.stepContext(op), `release ${op.match}`);
        op.releasedAt = Date.now();
        await this.save(op);
        return;
      }
      case 'flush':
        await flushAgents(this.stepContext(op), op.kind === 'flush' ? store.version : op.version);
        return;
      case 'drain':
        await waitDrained(this.stepContext(op), this.drainBaseline.get(op.id) ?? new Map<string, number>());
        this.drainBaseline.delete(op.id);
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

  /** What a step's wait needs; it ends (Stopping) when the controller stops or another replica takes over. */
  private stepContext(op: OperationRecord): StepContext {
    const cancelled = () => this.stopping || this.abandoned.has(op.id);
    return {
      op,
      registry: this.o.registry,
      commands: this.o.commands,
      targets: () => this.targets(op.excluded),
      report: (message, lists) => this.report(op, message, lists),
      cancelled,
      waitUntil: (check, timeoutReport) => waitUntil(this.wakers, op.timeoutMs, cancelled, check, timeoutReport),
    };
  }

  private report(op: OperationRecord, message: string, lists: ProgressLists = {}): void {
    this.publish(progressOf(op, message, lists));
  }

  private publish(p: Progress): void {
    this.last.set(p.operation.id, p);
    if (this.last.size > 200) this.last.delete(this.last.keys().next().value!);
    this.emit('progress', p);
    this.o.ops.progress(p);
  }
}
