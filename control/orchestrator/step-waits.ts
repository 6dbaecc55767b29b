import type { OperationRecord } from '../core/model.js';
import type { AgentCommander } from '../core/ports.js';
import type { Registry } from '../core/registry.js';
import { classifyAcks, describeAgent, drainState } from './acks.js';
import type { ProgressLists } from './progress.js';
import { StepFailed, Stopping, subject } from './steps.js';

/** What the waits of one operation's step see: the fleet, how to report, and how to wait (see wait.ts). */
export interface StepContext {
  op: OperationRecord;
  registry: Registry;
  commands: AgentCommander;
  /** The agents the step waits for now (expected and not excluded). */
  targets(): string[];
  report(message: string, lists?: ProgressLists): void;
  /** True once the controller stops or another replica owns the operation. */
  cancelled(): boolean;
  /** Re-checks on every registry change until `check` holds, throws, the step times out or it is cancelled. */
  waitUntil(check: () => boolean, timeoutReport: () => StepFailed): Promise<void>;
}

/** Done when every target applied the operation's version (or a later one); a refusal fails the step. */
export async function waitAcks(ctx: StepContext, what: string): Promise<void> {
  const { op, registry } = ctx;
  const v = op.version;
  let lastKey = '';
  const classify = () => classifyAcks(ctx.targets(), (id) => registry.get(id), v);
  await ctx.waitUntil(
    () => {
      const c = classify();
      const key = JSON.stringify(c);
      if (key !== lastKey) {
        lastKey = key;
        ctx.report(c.pending.length || c.failed.length ? `${what}: waiting for version ${v}` : `${what}: every agent applied version ${v}`, { ...c, waitingVersion: v });
      }
      if (c.failed.length) throw new StepFailed(`agents refused version ${v}: ${c.failed.join('; ')}`, c.failed);
      return c.pending.length === 0;
    },
    () => {
      const agents = classify().pending.map((id) => describeAgent(registry.get(id), id));
      return new StepFailed(`timed out after ${op.timeoutMs} ms waiting for version ${v} from ${agents.join(', ')}`, agents);
    },
  );
}

/** Asks every target to deliver what is due under the operation's match once it has `minVersion`. */
export async function flushAgents(ctx: StepContext, minVersion: number): Promise<void> {
  const { op } = ctx;
  const ids = ctx.targets();
  ctx.report(`flush ${op.match || '(all routes)'} on ${ids.length} agents (requires version ${minVersion})`, { waitingVersion: minVersion, pending: ids });
  const results = await Promise.all(
    ids.map(async (id) => ({ id, r: await ctx.commands.command(id, { kind: 'flush', match: op.match }, minVersion, op.timeoutMs) })),
  );
  if (ctx.cancelled()) throw new Stopping();
  const failed = results.filter((x) => !x.r.ok).map((x) => `${x.id}: ${x.r.error}`);
  const acked = results.filter((x) => x.r.ok).map((x) => x.id);
  ctx.report(failed.length ? 'flush failed on some agents' : 'flush done on every agent', { failed, waitingVersion: minVersion, acked });
  if (failed.length) throw new StepFailed(`flush failed: ${failed.join('; ')}`, failed);
}

/**
 * Done when no agent has mail under MATCH that arrived before the release: its queue for the route is empty,
 * or its oldest message is younger than the release (with continuous traffic the queue is never empty, but
 * what remains is new mail that went straight to the new target).
 */
export async function waitDrained(ctx: StepContext, baseline: ReadonlyMap<string, number>): Promise<void> {
  const { op, registry } = ctx;
  const releasedAt = op.releasedAt || Date.now();
  let lastKey = '';
  const matches = new Set(op.recipients?.length ? op.recipients : [op.match]);
  const compute = () => drainState(ctx.targets(), (id) => registry.get(id), matches, releasedAt, baseline);
  await ctx.waitUntil(
    () => {
      const drain = compute();
      const key = JSON.stringify(drain);
      if (key !== lastKey) {
        lastKey = key;
        const left = drain.filter((d) => !d.drained);
        ctx.report(left.length ? `waiting for ${subject(op)} to drain on ${left.map((d) => d.agentId).join(', ')}` : `${subject(op)} drained on every agent`, {
          acked: drain.filter((d) => d.drained).map((d) => d.agentId),
          pending: left.map((d) => d.agentId),
          drain,
        });
      }
      return drain.every((d) => d.drained);
    },
    () => {
      const agents = compute()
        .filter((d) => !d.drained)
        .map((d) => `${d.agentId}: ${d.queued} recipients still queued`);
      return new StepFailed(`timed out after ${op.timeoutMs} ms waiting for ${subject(op)} to drain: ${agents.join('; ')}`, agents);
    },
  );
}

