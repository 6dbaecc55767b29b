import type { Command } from 'commander';
import { formatDuration } from '../../../shared/units.js';
import { ControllerError, withAdmin, type AgentStatus, type StatusResponse, type WatchResponse } from '../admin-client.js';
import { checkAgentId } from '../args.js';
import { action, emit, table } from '../output.js';
import { exitHelp, operator, type CommonOptions } from './common.js';
import { ago, operationLine } from './operations.js';

/** The fleet's state: `status` (a snapshot), `watch` (a live stream) and `agent rm` (forget an agent). */

/** Adds `status` and `watch` to the program and `rm` to the `agent` command. */
export function registerFleetStatus(program: Command, agent: Command): void {
  operator(
    agent,
    'rm',
    'Forget an agent on the controller: operations stop waiting for it (it is no longer expected). Use after decommissioning an MX host.',
    exitHelp('the controller to record the removal (one call).', 'the agent was removed', 'unknown agent, or the controller refused or could not be reached'),
  )
    .argument('<id>', 'agent id (as shown by `mxswitch status`)')
    .action(action(agentRm));

  operator(
    program,
    'status',
    'The fleet: each agent\'s region, connection, applied table version, queue (total, held, deferred, oldest), delivered/deferred/bounced counters and last error; the table version and running operations.',
    exitHelp(
      'one answer from the controller (a snapshot).',
      'every expected agent is connected and has applied the current table version',
      'an expected agent is disconnected/lost or behind (named), or the controller could not be reached',
    ),
  ).action(action(status));

  operator(
    program,
    'watch',
    'Live health stream until Ctrl-C: a line when an agent changes (state, version, queue, counts; an unchanged agent again every 30 s), per operation step and per table change. --json: every event (NDJSON).',
    exitHelp('events until Ctrl-C.', 'stopped with Ctrl-C', 'the controller could not be reached or closed the stream'),
  ).action(action(watch));
}

/** `status`: exit 0 when every expected agent is connected and on the current version, else 1 naming them. */
async function status(opts: CommonOptions): Promise<void> {
  const s = await withAdmin(opts, (a) => a.status());
  const problems = fleetProblems(s);
  emit(opts, { ...s, converged: problems.length === 0, problems }, () => renderStatus(s));
  if (problems.length) throw new ControllerError(`fleet not converged on v${s.version}: ${problems.join(', ')}`);
}

/** `watch`: one line (or NDJSON object) per event until Ctrl-C (exit 0) or the stream breaks (exit 1). */
async function watch(opts: CommonOptions): Promise<void> {
  await withAdmin(opts, async (a) => {
    const stream = a.watch();
    const printer = new WatchPrinter();
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
        } else {
          const line = printer.line(ev);
          if (line) process.stdout.write(`${line}\n`);
        }
      }
      if (!stopped) throw new ControllerError(`controller at ${a.address} closed the watch stream`);
    } catch (err) {
      if (!stopped) throw err;
    } finally {
      process.off('SIGINT', onSigint);
    }
  });
}

async function agentRm(idText: string, opts: CommonOptions): Promise<void> {
  const id = checkAgentId(idText, 'ID');
  await withAdmin(opts, (a) => a.removeAgent(id));
  emit(opts, { removed: id }, () => `agent ${id} removed: operations no longer wait for it (it is expected again if it registers again, unless expectedAgents is configured)`);
}

function sumQueues(agent: AgentStatus, key: 'held' | 'deferred'): number {
  return (agent.health?.queues ?? []).reduce((n, q) => n + q[key], 0);
}

/** An agent's connection as the operator reads it: an expected agent never heard from is "never connected". */
export function agentState(a: AgentStatus): string {
  if (a.state !== 'connected' && !a.lastSeenMs) return 'never connected';
  return a.state || 'unknown';
}

/** Expected agents that are not connected or have not applied the current version. */
export function fleetProblems(s: StatusResponse): string[] {
  const out: string[] = [];
  for (const a of s.agents) {
    if (!a.expected) continue;
    if (a.state !== 'connected') out.push(`${a.id} ${agentState(a)}${a.lastSeenMs ? ` (last seen ${ago(a.lastSeenMs)})` : ''}`);
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
    const state = `${agentState(a)}${a.state !== 'connected' && a.lastSeenMs ? ` ${ago(a.lastSeenMs, now)}` : ''}${waiting ? ', not delivering' : ''}${a.expected ? '' : ' (not expected)'}`;
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
      a.softwareVersion || '-',
      (a.lastError || waiting || h?.lastDeliveryError || '').replace(/\s+/g, ' ').slice(0, 70),
    ];
  });
  const shadowed = s.agents.filter((a) => a.shadow);
  const running = s.operations.filter((o) => o.state === 'running');
  const recent = s.operations.filter((o) => o.state !== 'running').slice(0, 5);
  return [
    `route table version ${s.version}`,
    rows.length
      ? table(['AGENT', 'REGION', 'STATE', 'APPLIED', 'QUEUE', 'HELD', 'DEFERRED', 'OLDEST', 'DELIV/DEFER/BOUNCE', 'VERSION', 'LAST ERROR'], rows)
      : 'no agents registered',
    ...(shadowed.length ? [`shadow redundancy:\n${shadowed.map((a) => `  ${shadowLine(a)}`).join('\n')}`] : []),
    running.length ? `running operations:\n${running.map((o) => `  ${operationLine(o, now)}`).join('\n')}` : 'no operation running',
    ...(recent.length ? [`recent operations:\n${recent.map((o) => `  ${operationLine(o, now)}`).join('\n')}`] : []),
  ].join('\n');
}

/** One agent's shadow redundancy: its peer, what is without a copy, what it keeps for others, takeovers. */
function shadowLine(a: AgentStatus): string {
  const s = a.shadow!;
  if (s.takenOverBy) return `${a.id}: taken over by ${s.takenOverBy} (its mail is delivered from there)`;
  const parts = [`peer ${s.peer || 'none'}`, `${s.unshadowed} unshadowed`, `${s.shadowCopies} copies kept for others`];
  if (s.tookOver.length) parts.push(`took over ${s.tookOver.join(', ')}`);
  return `${a.id}: ${parts.join(', ')}`;
}

/** How often an unchanged agent is shown again, so that a quiet watch still shows it alive. */
const WATCH_HEARTBEAT_MS = 30_000;

/**
 * `watch` on a terminal: an agent's line when it says something new (its state, version, queue or counts
 * moved), else again after 30 s as a heartbeat; operations and table changes always. Health arrives every few
 * seconds per agent, and repeating the same line buried what changed.
 */
export class WatchPrinter {
  private readonly last = new Map<string, { text: string; at: number }>();

  line(ev: WatchResponse, now = Date.now()): string | undefined {
    const line = watchLine(ev);
    if (ev.event?.$case !== 'agent') return line;
    const text = line.slice(line.indexOf(' ') + 1);
    const prev = this.last.get(ev.event.value.id);
    if (prev && prev.text === text && now - prev.at < WATCH_HEARTBEAT_MS) return undefined;
    this.last.set(ev.event.value.id, { text, at: now });
    return line;
  }
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
      const c = h?.counters;
      const counts = c ? ` accepted ${c.accepted} delivered ${c.delivered} deferred ${c.deferred} bounced ${c.bounced}` : '';
      return `${at} agent ${a.id}${a.region ? ` [${a.region}]` : ''} ${a.state} v${a.appliedVersion}${queue}${counts}${a.lastError ? ` error: ${a.lastError}` : ''}`;
    }
    case 'operation':
      return `${at} operation ${operationLine(e.value, ev.atMs || Date.now())}`;
    case 'routesChanged':
      return `${at} routes now at version ${e.value.version}`;
  }
}
