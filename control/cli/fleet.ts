import type { QueueEntry, MessageDetail } from '../../agent/queue-ops.js';
import {
  FlushRequest,
  HoldRequest,
  ReleaseRequest,
  SwitchoverRequest,
  type AgentCommandResult,
  type AgentStatus,
  type Operation,
  type QueueCommandRequest,
  type StatusResponse,
  type WatchResponse,
} from '../../proto/gen/mxswitch/v1/admin.js';
import { UsageError } from '../../shared/errors.js';
import { formatDuration } from '../../shared/units.js';
import { actor, ControllerError, withAdmin, type AdminConnection, type ConnectionOptions } from './admin-client.js';
import { checkAgentId, checkDuration, checkExclude, checkMatch, checkPositiveInt, checkTarget, checkVersion } from './args.js';
import { emit, table, type OutputOptions } from './output.js';
import { describeOperation, followOperation } from './progress.js';
import { renderEntries } from './queue-render.js';

/** Operator commands that talk to the controller's AdminService. Arguments are checked before connecting. */

export type CommonOptions = ConnectionOptions & OutputOptions;

/** Extra time the client gives a stream beyond the operation's own --timeout before it gives up itself. */
const STREAM_GRACE_MS = 30_000;
const DEFAULT_WAIT_MS = 30_000;

const ago = (ms: number, now = Date.now()) => (ms > 0 ? `${formatDuration(Math.max(0, now - ms))} ago` : 'never');

// ---------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------

export async function routeLs(opts: CommonOptions): Promise<void> {
  const res = await withAdmin(opts, (a) => a.listRoutes());
  const routes = res.routes.map((r) => ({ match: r.match, target: r.target, hold: r.hold, tls: r.tls || 'may' }));
  emit(opts, { version: res.version, routes }, (v) =>
    [
      `route table version ${v.version}`,
      v.routes.length ? table(['MATCH', 'TARGET', 'HOLD', 'TLS'], v.routes.map((r) => [r.match, r.target, r.hold ? 'held' : '-', r.tls])) : 'no routes: every recipient is refused (550 5.7.1)',
    ].join('\n'),
  );
}

export type RouteSetOptions = CommonOptions & { hold?: boolean; tls?: 'required' | 'may'; expectVersion?: string; wait?: boolean; timeout?: string };

export async function routeSet(matchText: string, targetText: string, opts: RouteSetOptions): Promise<void> {
  const match = checkMatch(matchText);
  const target = checkTarget(targetText);
  const expectedVersion = checkVersion('--expect-version', opts.expectVersion);
  const waitMs = checkDuration('--timeout', opts.timeout) ?? DEFAULT_WAIT_MS;
  const tls = opts.tls === 'required' ? 'required' : '';
  await withAdmin(opts, async (a) => {
    const res = await a.setRoute({ match, target, hold: opts.hold ?? false, tls, expectedVersion, actor: actor() });
    const applied = opts.wait ? await waitApplied(a, res.version, waitMs) : undefined;
    emit(opts, { match, target, hold: opts.hold ?? false, tls: tls || 'may', version: res.version, ...(applied ? { appliedBy: applied } : {}) }, (v) =>
      `route ${v.match} -> ${v.target}${v.hold ? ' (held)' : ''}${v.tls === 'required' ? ' (TLS required)' : ''} set: table version ${v.version}` +
      (applied ? `, applied by ${applied.length ? applied.join(', ') : 'no agents (none expected)'}` : ' (agents apply it within seconds; `mxswitch status` shows their versions)'),
    );
  });
}

export type RouteRmOptions = CommonOptions & { expectVersion?: string; wait?: boolean; timeout?: string };

export async function routeRm(matchText: string, opts: RouteRmOptions): Promise<void> {
  const match = checkMatch(matchText);
  const expectedVersion = checkVersion('--expect-version', opts.expectVersion);
  const waitMs = checkDuration('--timeout', opts.timeout) ?? DEFAULT_WAIT_MS;
  await withAdmin(opts, async (a) => {
    const res = await a.removeRoute({ match, expectedVersion, actor: actor() });
    const applied = opts.wait ? await waitApplied(a, res.version, waitMs) : undefined;
    emit(opts, { match, removed: true, version: res.version, ...(applied ? { appliedBy: applied } : {}) }, (v) =>
      `route ${v.match} removed: table version ${v.version}${applied ? `, applied by ${applied.length ? applied.join(', ') : 'no agents (none expected)'}` : ''}`,
    );
  });
}

/** Polls Status until every expected agent has applied `version`; throws naming the laggards. */
async function waitApplied(a: AdminConnection, version: number, timeoutMs: number): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await a.status();
    const expected = s.agents.filter((x) => x.expected);
    const behind = expected.filter((x) => x.appliedVersion < version);
    if (behind.length === 0) return expected.map((x) => x.id);
    if (Date.now() > deadline) {
      throw new ControllerError(
        `table version ${version} is stored but not applied within ${formatDuration(timeoutMs)} by ${behind.map((x) => `${x.id} (${x.state}, at v${x.appliedVersion})`).join(', ')}`,
      );
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

// ---------------------------------------------------------------------------
// Coordinated operations
// ---------------------------------------------------------------------------

export type OpOptions = CommonOptions & { timeout?: string; exclude?: string[] };

function opParams(opts: OpOptions) {
  const timeoutMs = checkDuration('--timeout', opts.timeout);
  return { timeoutMs: timeoutMs ?? 0, exclude: checkExclude(opts.exclude), streamDeadline: timeoutMs === undefined ? undefined : timeoutMs + STREAM_GRACE_MS };
}

export async function hold(matchText: string, opts: OpOptions): Promise<void> {
  const match = checkMatch(matchText);
  const p = opParams(opts);
  await withAdmin(opts, async (a) => {
    const stream = a.openStream((md, o) => a.client.hold(HoldRequest.fromPartial({ match, exclude: p.exclude, timeoutMs: p.timeoutMs, actor: actor() }), md, o), p.streamDeadline);
    await followOperation(a, `hold ${match}`, stream, opts);
  });
}

export async function release(matchText: string, opts: OpOptions): Promise<void> {
  const match = checkMatch(matchText);
  const p = opParams(opts);
  await withAdmin(opts, async (a) => {
    const stream = a.openStream((md, o) => a.client.release(ReleaseRequest.fromPartial({ match, exclude: p.exclude, timeoutMs: p.timeoutMs, actor: actor() }), md, o), p.streamDeadline);
    await followOperation(a, `release ${match}`, stream, opts);
  });
}

export type SwitchoverOptions = OpOptions & { to: string; waitDrained?: boolean };

export async function switchover(matchText: string, opts: SwitchoverOptions): Promise<void> {
  const match = checkMatch(matchText);
  const target = checkTarget(opts.to, '--to');
  const p = opParams(opts);
  await withAdmin(opts, async (a) => {
    const req = SwitchoverRequest.fromPartial({ match, target, exclude: p.exclude, timeoutMs: p.timeoutMs, waitDrained: opts.waitDrained ?? false, actor: actor() });
    // With --wait-drained the timeout covers every step plus the drain, so the client only bounds it when told to.
    const stream = a.openStream((md, o) => a.client.switchover(req, md, o), p.streamDeadline === undefined ? undefined : p.streamDeadline * 4);
    await followOperation(a, `switchover ${match} -> ${target}`, stream, opts);
  });
}

export async function flush(matchText: string | undefined, opts: OpOptions): Promise<void> {
  const match = matchText === undefined || matchText === '' ? '' : checkMatch(matchText);
  const p = opParams(opts);
  await withAdmin(opts, async (a) => {
    const stream = a.openStream((md, o) => a.client.flush(FlushRequest.fromPartial({ match, exclude: p.exclude, timeoutMs: p.timeoutMs, actor: actor() }), md, o), p.streamDeadline);
    await followOperation(a, `flush ${match || '(all routes)'}`, stream, opts);
  });
}

export async function operationFollow(id: string, opts: CommonOptions): Promise<void> {
  if (!id.trim()) throw new UsageError('operation ID is empty');
  await withAdmin(opts, async (a) => {
    await followOperation(a, `operation ${id}`, a.follow(id), opts);
  });
}

function operationLine(op: Operation, now = Date.now()): string {
  const when = op.finishedAtMs ? `finished ${ago(op.finishedAtMs, now)}` : `started ${ago(op.startedAtMs, now)}`;
  const excluded = op.excluded.length ? ` excluding ${op.excluded.join(', ')}` : '';
  const step = op.step && op.state !== 'done' ? ` (step ${op.step})` : '';
  return `${op.id}  ${describeOperation(op)}  ${op.state}${step}${excluded}, ${when}${op.error ? `: ${op.error}` : ''}`;
}

/** `operation show ID`: exit 0 when done, 1 when failed or still running. */
export async function operationShow(id: string, opts: CommonOptions): Promise<void> {
  if (!id.trim()) throw new UsageError('operation ID is empty');
  const res = await withAdmin(opts, (a) => a.getOperation(id));
  const op = res.operation;
  if (!op) throw new ControllerError(`controller has no operation ${id}`);
  emit(opts, op, (o) => operationLine(o));
  if (op.state === 'failed') throw new ControllerError(`operation ${id} failed${op.step ? ` at step "${op.step}"` : ''}: ${op.error || 'no reason given'}`);
  if (op.state !== 'done') throw new ControllerError(`operation ${id} is still ${op.state || 'running'}; follow it with: mxswitch operation follow ${id}`);
}

// ---------------------------------------------------------------------------
// Fleet status, watch, agent removal
// ---------------------------------------------------------------------------

function sumQueues(agent: AgentStatus, key: 'held' | 'deferred'): number {
  return (agent.health?.queues ?? []).reduce((n, q) => n + q[key], 0);
}

/** Expected agents that are not connected or have not applied the current version. */
export function fleetProblems(s: StatusResponse): string[] {
  const out: string[] = [];
  for (const a of s.agents) {
    if (!a.expected) continue;
    if (a.state !== 'connected') out.push(`${a.id} ${a.state || 'unknown'}${a.lastSeenMs ? ` (last seen ${ago(a.lastSeenMs)})` : ''}`);
    else if (a.appliedVersion < s.version) out.push(`${a.id} at v${a.appliedVersion}${a.lastError ? ` (${a.lastError})` : ''}`);
    else if (a.health?.delivery && !a.health.delivery.open) out.push(`${a.id} not delivering (${a.health.delivery.reason})`);
  }
  return out;
}

export function renderStatus(s: StatusResponse, now = Date.now()): string {
  const rows = s.agents.map((a) => {
    const h = a.health;
    const c = h?.counters;
    const waiting = h?.delivery && !h.delivery.open ? h.delivery.reason : '';
    const state = `${a.state || 'unknown'}${a.state !== 'connected' && a.lastSeenMs ? ` ${ago(a.lastSeenMs, now)}` : ''}${waiting ? ', not delivering' : ''}${a.expected ? '' : ' (not expected)'}`;
    return [
      a.id,
      a.region || '-',
      state,
      `v${a.appliedVersion}${a.appliedVersion < s.version ? ' (behind)' : ''}`,
      h ? String(h.totalQueued) : '-',
      h ? String(sumQueues(a, 'held')) : '-',
      h ? String(sumQueues(a, 'deferred')) : '-',
      h && h.totalQueued > 0 ? formatDuration(h.oldestAgeSeconds * 1000) : '-',
      c ? `${c.delivered}/${c.deferred}/${c.bounced}` : '-',
      (a.lastError || waiting || h?.lastDeliveryError || '').replace(/\s+/g, ' ').slice(0, 70),
    ];
  });
  const running = s.operations.filter((o) => o.state === 'running');
  const recent = s.operations.filter((o) => o.state !== 'running').slice(0, 5);
  return [
    `route table version ${s.version}`,
    rows.length
      ? table(['AGENT', 'REGION', 'STATE', 'APPLIED', 'QUEUE', 'HELD', 'DEFERRED', 'OLDEST', 'DELIV/DEFER/BOUNCE', 'LAST ERROR'], rows)
      : 'no agents registered',
    running.length ? `running operations:\n${running.map((o) => `  ${operationLine(o, now)}`).join('\n')}` : 'no operation running',
    ...(recent.length ? [`recent operations:\n${recent.map((o) => `  ${operationLine(o, now)}`).join('\n')}`] : []),
  ].join('\n');
}

/** `status`: exit 0 when every expected agent is connected and on the current version, else 1 naming them. */
export async function status(opts: CommonOptions): Promise<void> {
  const s = await withAdmin(opts, (a) => a.status());
  const problems = fleetProblems(s);
  emit(opts, { ...s, converged: problems.length === 0, problems }, () => renderStatus(s));
  if (problems.length) throw new ControllerError(`fleet not converged on v${s.version}: ${problems.join(', ')}`);
}

export function watchLine(ev: WatchResponse): string {
  const at = new Date(ev.atMs || Date.now()).toISOString();
  const e = ev.event;
  if (!e) return `${at} (empty event)`;
  switch (e.$case) {
    case 'agent': {
      const a = e.value;
      const h = a.health;
      const queue = h ? ` queue ${h.totalQueued} (held ${sumQueues(a, 'held')}, deferred ${sumQueues(a, 'deferred')})` : '';
      return `${at} agent ${a.id}${a.region ? ` [${a.region}]` : ''} ${a.state} v${a.appliedVersion}${queue}${a.lastError ? ` error: ${a.lastError}` : ''}`;
    }
    case 'operation':
      return `${at} operation ${operationLine(e.value, ev.atMs || Date.now())}`;
    case 'routesChanged':
      return `${at} routes now at version ${e.value.version}`;
  }
}

/** `watch`: one line (or NDJSON object) per event until Ctrl-C (exit 0) or the stream breaks (exit 1). */
export async function watch(opts: CommonOptions): Promise<void> {
  await withAdmin(opts, async (a) => {
    const stream = a.watch();
    let stopped = false;
    const onSigint = () => {
      stopped = true;
      stream.cancel();
    };
    process.on('SIGINT', onSigint);
    try {
      for await (const ev of a.iterate(stream)) {
        if (opts.json) {
          const e = ev.event;
          process.stdout.write(`${JSON.stringify(e ? { type: e.$case, atMs: ev.atMs, [e.$case]: e.value } : { type: 'empty', atMs: ev.atMs })}\n`);
        } else process.stdout.write(`${watchLine(ev)}\n`);
      }
      if (!stopped) throw new ControllerError(`controller at ${a.address} closed the watch stream`);
    } catch (err) {
      if (!stopped) throw err;
    } finally {
      process.off('SIGINT', onSigint);
    }
  });
}

export async function agentRm(idText: string, opts: CommonOptions): Promise<void> {
  const id = checkAgentId(idText, 'ID');
  await withAdmin(opts, (a) => a.removeAgent(id));
  emit(opts, { removed: id }, () => `agent ${id} removed: operations no longer wait for it (it is expected again if it registers again, unless expectedAgents is configured)`);
}

// ---------------------------------------------------------------------------
// Fleet-wide queue commands (QueueCommand): one result per agent
// ---------------------------------------------------------------------------

export type FleetQueueOptions = CommonOptions & { agent?: string; match?: string; state?: string; limit?: string; all?: boolean; timeout?: string };

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

async function runQueueCommand<T>(
  what: string,
  kind: NonNullable<QueueCommandRequest['kind']>,
  opts: FleetQueueOptions,
  render: (r: AgentResult<T>) => string,
): Promise<void> {
  const agentId = opts.agent === undefined ? '' : checkAgentId(opts.agent, '--agent');
  const timeoutMs = checkDuration('--timeout', opts.timeout) ?? 0;
  const res = await withAdmin(opts, (a) => a.queueCommand({ agentId, kind, timeoutMs }, timeoutMs || DEFAULT_WAIT_MS));
  const results = parseResults<T>(res.results);
  if (results.length === 0 && agentId) throw new ControllerError(`${what}: agent ${agentId} did not answer`);
  emit(opts, { results }, ({ results: rs }) =>
    rs.length === 0 ? 'no expected agents to ask' : rs.map((r) => (r.ok ? render(r) : `== ${r.agent}: FAILED: ${r.error}`)).join('\n'),
  );
  const failed = results.filter((r) => !r.ok);
  if (failed.length) throw new ControllerError(`${what} failed on ${failed.map((r) => `${r.agent}: ${r.error}`).join('; ')}`);
}

function needAgent(opts: FleetQueueOptions, cmd: string): void {
  if (opts.agent === undefined) throw new UsageError(`queue ${cmd}: give --agent ID (queue ids are per agent) or --data-dir DIR for the local queue`);
}

export const fleetQueue = {
  async ls(opts: FleetQueueOptions): Promise<void> {
    const match = opts.match === undefined ? '' : checkMatch(opts.match, '--match');
    const limit = checkPositiveInt('--limit', opts.limit) ?? 0;
    await runQueueCommand<QueueEntry[]>('queue ls', { $case: 'queueList', value: { match, state: opts.state ?? '', limit } }, opts, (r) => {
      const entries = r.result ?? [];
      return `== ${r.agent}: ${entries.length} message(s)\n${renderEntries(entries)}`;
    });
  },
  async show(id: string, opts: FleetQueueOptions): Promise<void> {
    needAgent(opts, 'show');
    await runQueueCommand<MessageDetail>('queue show', { $case: 'queueShow', value: { id } }, opts, (r) =>
      r.result ? `== ${r.agent}\n${renderEntries([r.result])}\n\n${r.result.headers}` : `== ${r.agent}: no details`,
    );
  },
  async rm(id: string, opts: FleetQueueOptions): Promise<void> {
    needAgent(opts, 'rm');
    await runQueueCommand<{ removed: string }>('queue rm', { $case: 'queueRemove', value: { id } }, opts, (r) => `${r.agent}: removed ${id}`);
  },
  async retry(id: string | undefined, opts: FleetQueueOptions): Promise<void> {
    if (!id && !opts.all) throw new UsageError('queue retry: give a queue ID or --all');
    if (id && opts.all) throw new UsageError('queue retry: give a queue ID or --all, not both');
    if (id) needAgent(opts, 'retry ID');
    await runQueueCommand<{ due: number }>('queue retry', { $case: 'queueRetry', value: { id: id ?? '', all: !id } }, opts, (r) => `${r.agent}: ${r.result?.due ?? 0} recipient(s) due now`);
  },
};
