import { commandName, type BulkAction, type BulkResult, type MessageDetail, type QueueList } from '../../../agent/queue-ops.js';
import { mergeShapes, type QueueShape } from '../../../agent/queue-shape.js';
import { commandToWire } from '../../../shared/wire.js';
import { ControllerError, withAdmin, type AdminConnection, type AgentCommandResult, type QueueCommandKind } from '../admin-client.js';
import { checkAgentId, checkChangeFlags, checkDuration, checkLimit, checkSelection } from '../args.js';
import { emit } from '../output.js';
import type { QueueBackend, QueueOptions } from './queue-backend.js';
import { bulkTotal, queueSummary, renderBulk, renderDetail, renderList, renderShadowList, renderShape, shapeSummary } from './queue-render.js';
import type { ShadowList } from '../../../agent/shadow/listing.js';

/** The queue subcommands through the controller (QueueCommand): one result per agent, or only --agent's. */

const NO_LIST: QueueList = { entries: [], more: 0 };

/** The wire form of each change. */
const CHANGE_KIND: Record<BulkAction, 'queueRemove' | 'queueRetry' | 'queueHold' | 'queueRelease'> = { remove: 'queueRemove', retry: 'queueRetry', hold: 'queueHold', release: 'queueRelease' };

const DEFAULT_WAIT_MS = 30_000;

export interface AgentResult<T> {
  agent: string;
  ok: boolean;
  error?: string;
  result?: T;
}

function parseResults<T>(results: readonly AgentCommandResult[]): AgentResult<T>[] {
  return results.map((r) => {
    if (!r.ok) return { agent: r.agentId, ok: false, error: r.error || 'failed' };
    try {
      return { agent: r.agentId, ok: true, result: (r.json ? JSON.parse(r.json) : null) as T };
    } catch {
      return { agent: r.agentId, ok: false, error: 'agent answered with invalid JSON' };
    }
  });
}

/** Sends a command to `agentId` (or every expected agent: '') through the controller; one parsed result each. */
export async function askAgents<T>(a: AdminConnection, kind: QueueCommandKind, agentId = '', timeoutMs = 0): Promise<AgentResult<T>[]> {
  const res = await a.queueCommand({ agentId, kind, timeoutMs }, timeoutMs || DEFAULT_WAIT_MS);
  return parseResults<T>(res.results);
}

/**
 * Runs a queue command on --agent or every expected agent. With `id` and no --agent, the message is looked for
 * on every agent (queue ids are per agent): the agents that do not have it are left out of the answer, and
 * none having it is an error.
 */
async function runQueueCommand<T>(
  what: string,
  kind: QueueCommandKind,
  opts: QueueOptions,
  render: (r: AgentResult<T>) => string,
  id?: string,
  /** The fleet's line(s) under the agents' own, from those that answered ('' = none). */
  total?: (rs: AgentResult<T>[]) => string,
): Promise<void> {
  const agentId = opts.agent === undefined ? '' : checkAgentId(opts.agent, '--agent');
  const timeoutMs = checkDuration('--timeout', opts.timeout) ?? 0;
  let results = await withAdmin(opts, (a) => askAgents<T>(a, kind, agentId, timeoutMs));
  if (id !== undefined && !agentId) {
    const holders = results.filter((r) => r.ok || !r.error?.startsWith('NOT_FOUND: '));
    if (!holders.length) throw new ControllerError(`${what}: no message ${id} on any agent (asked ${results.map((r) => r.agent).join(', ') || 'none: no expected agents'})`);
    results = holders;
  }
  if (results.length === 0 && agentId) throw new ControllerError(`${what}: agent ${agentId} did not answer`);
  emit(opts, { results }, ({ results: rs }) => {
    if (rs.length === 0) return 'no expected agents to ask';
    const lines = rs.map((r) => (r.ok ? render(r) : `== ${r.agent}: FAILED: ${r.error}`));
    const fleetLine = total?.(rs.filter((r) => r.ok));
    if (fleetLine) lines.push(fleetLine);
    return lines.join('\n');
  });
  const failed = results.filter((r) => !r.ok);
  if (failed.length) throw new ControllerError(`${what} failed on ${failed.map((r) => `${r.agent}: ${r.error}`).join('; ')}`);
}

export const fleetQueue: QueueBackend = {
  async ls(opts) {
    const { limit = 0 } = checkLimit(opts);
    if (opts.shadow) {
      await runQueueCommand<ShadowList>('queue ls --shadow', commandToWire({ kind: 'shadowList', limit }), opts, (r) => `== ${r.agent}\n${renderShadowList(r.result ?? { copies: [], more: 0 })}`);
      return;
    }
    const select = checkSelection(opts);
    await runQueueCommand<QueueList>(
      'queue ls',
      commandToWire({ kind: 'queueList', select, limit }),
      opts,
      (r) => `== ${r.agent}\n${renderList(r.result ?? NO_LIST)}`,
      undefined,
      (rs) => (rs.length > 1 ? `== every agent that answered\n${queueSummary(rs.map((r) => r.result ?? NO_LIST))}` : ''),
    );
  },
  async shape(opts) {
    const select = checkSelection(opts);
    await runQueueCommand<QueueShape>(
      'queue shape',
      commandToWire({ kind: 'queueShape', select }),
      opts,
      (r) => `${r.agent}: ${shapeSummary(r.result ?? mergeShapes([]))}`,
      undefined,
      (rs) => `\n${renderShape(mergeShapes(rs.flatMap((r) => (r.result ? [r.result] : []))))}`,
    );
  },
  async show(id, opts) {
    await runQueueCommand<MessageDetail>(
      'queue show',
      { $case: 'queueShow', value: { id, body: opts.body ?? false } },
      opts,
      (r) => (r.result ? `== ${r.agent}\n${renderDetail(r.result)}` : `== ${r.agent}: no details`),
      id,
    );
  },
  async change(action, id, opts) {
    const what = commandName(action);
    const select = checkChangeFlags(what, opts, id);
    await runQueueCommand<BulkResult>(
      what,
      commandToWire({ kind: CHANGE_KIND[action], select, dryRun: opts.dryRun ?? false }),
      opts,
      (r) => `${r.agent}: ${r.result ? renderBulk(r.result) : 'no result'}`,
      id,
      (rs) => (rs.length > 1 ? `every agent that answered: ${bulkTotal(rs.flatMap((r) => (r.result ? [r.result] : [])))}` : ''),
    );
  },
};
