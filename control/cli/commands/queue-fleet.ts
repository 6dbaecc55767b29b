import type { MessageDetail, QueueEntry } from '../../../agent/queue-ops.js';
import { UsageError } from '../../../shared/errors.js';
import { ControllerError, withAdmin, type AgentCommandResult, type QueueCommandKind } from '../admin-client.js';
import { checkAgentId, checkDuration, checkListFilter, checkMatch } from '../args.js';
import { emit } from '../output.js';
import type { QueueBackend, QueueOptions } from './queue-backend.js';
import { queueSummary, renderDetail, renderEntries } from './queue-render.js';

/** The queue subcommands through the controller (QueueCommand): one result per agent, or only --agent's. */

const DEFAULT_WAIT_MS = 30_000;

interface AgentResult<T> {
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
  total?: (rs: AgentResult<T>[]) => string,
): Promise<void> {
  const agentId = opts.agent === undefined ? '' : checkAgentId(opts.agent, '--agent');
  const timeoutMs = checkDuration('--timeout', opts.timeout) ?? 0;
  const res = await withAdmin(opts, (a) => a.queueCommand({ agentId, kind, timeoutMs }, timeoutMs || DEFAULT_WAIT_MS));
  let results = parseResults<T>(res.results);
  if (id !== undefined && !agentId) {
    const holders = results.filter((r) => r.ok || !r.error?.startsWith('NOT_FOUND: '));
    if (!holders.length) throw new ControllerError(`${what}: no message ${id} on any agent (asked ${results.map((r) => r.agent).join(', ') || 'none: no expected agents'})`);
    results = holders;
  }
  if (results.length === 0 && agentId) throw new ControllerError(`${what}: agent ${agentId} did not answer`);
  emit(opts, { results }, ({ results: rs }) => {
    if (rs.length === 0) return 'no expected agents to ask';
    const lines = rs.map((r) => (r.ok ? render(r) : `== ${r.agent}: FAILED: ${r.error}`));
    // A fleet total under the agents' own lines when more than one answered.
    if (total && rs.filter((r) => r.ok).length > 1) lines.push(total(rs.filter((r) => r.ok)));
    return lines.join('\n');
  });
  const failed = results.filter((r) => !r.ok);
  if (failed.length) throw new ControllerError(`${what} failed on ${failed.map((r) => `${r.agent}: ${r.error}`).join('; ')}`);
}

export const fleetQueue: QueueBackend = {
  async ls(opts) {
    const match = opts.match === undefined ? '' : checkMatch(opts.match, '--match');
    const { state = '', limit = 0 } = checkListFilter(opts);
    await runQueueCommand<QueueEntry[]>(
      'queue ls',
      { $case: 'queueList', value: { match, state, limit } },
      opts,
      (r) => `== ${r.agent}\n${renderEntries(r.result ?? [])}\n${queueSummary(r.result ?? [])}`,
      undefined,
      (rs) => `== every agent that answered\n${queueSummary(rs.flatMap((r) => r.result ?? []))}`,
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
  async rm(id, opts) {
    await runQueueCommand<{ removed: string }>('queue rm', { $case: 'queueRemove', value: { id } }, opts, (r) => `${r.agent}: removed ${id}`, id);
  },
  async retry(id, opts) {
    if (!id && !opts.all) throw new UsageError('queue retry: give a queue ID or --all');
    if (id && opts.all) throw new UsageError('queue retry: give a queue ID or --all, not both');
    await runQueueCommand<{ due: number }>('queue retry', { $case: 'queueRetry', value: { id: id ?? '', all: !id } }, opts, (r) => `${r.agent}: ${r.result?.due ?? 0} recipient(s) due now`, id);
  },
};
