import type { IncomingMessage, ServerResponse } from 'node:http';
import type { QueueList } from '../../../agent/queue-ops.js';
import { MxError, type ErrorCode } from '../../../shared/errors.js';
import { routeToWire } from '../../../shared/wire.js';
import type { QueueState } from '../../../shared/queue-selection.js';
import { checkAgentId, checkMatch, checkPositiveInt, QUEUE_STATES } from '../../cli/args.js';
import { fleetProblems } from '../../cli/commands/fleet-status.js';
import type { FleetHistory } from '../../core/history.js';
import type { AgentCommander, RecipientStoreApi } from '../../core/ports.js';
import { STEPS } from '../../orchestrator/steps.js';
import { fleetStatus, operationMsg, progressMsg } from '../grpc/admin-service.js';
import { serveEvents, type EventSources } from './events.js';

export interface ApiDeps extends EventSources {
  recipients: RecipientStoreApi | undefined;
  commands: AgentCommander;
  history: FleetHistory;
  commandTimeoutMs: number;
}

/** A queue listing asks for at most this many messages unless `limit` says otherwise (a page, not a dump). */
export const DEFAULT_QUEUE_LIMIT = 500;
/** Operations /api/v1/operations lists (running and recent), as `status` does. */
const OPERATIONS = 20;

const HTTP_STATUS: Partial<Record<ErrorCode, number>> = {
  USAGE: 400,
  INVALID_ARGUMENT: 400,
  NOT_FOUND: 404,
  UNAVAILABLE: 503,
  DEADLINE_EXCEEDED: 504,
};

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' }).end(`${JSON.stringify(body)}\n`);
}

/** An error as an HTTP answer: {error: CODE, message}; an untyped error is a 500 without its details. */
export function sendError(res: ServerResponse, err: unknown): void {
  if (err instanceof MxError) return sendJson(res, HTTP_STATUS[err.code] ?? 500, { error: err.code, message: err.message });
  sendJson(res, 500, { error: 'INTERNAL', message: 'internal error (see the controller log)' });
}

/** `agents/ID/queue?match=&state=&limit=`: the agent's queue listing (as `mxswitch queue ls --agent ID --json`). */
async function agentQueue(d: ApiDeps, idPart: string, query: URLSearchParams): Promise<unknown> {
  let idText: string;
  try {
    idText = decodeURIComponent(idPart);
  } catch {
    throw new MxError('USAGE', 'agent ID: not a valid URL component');
  }
  const id = checkAgentId(idText, 'agent ID');
  if (!d.registry.get(id)) throw new MxError('NOT_FOUND', `no agent ${id}`);
  const matchText = query.get('match');
  const match = matchText ? checkMatch(matchText, 'match') : '';
  const state = query.get('state') ?? '';
  if (state && !QUEUE_STATES.some((s) => s === state)) throw new MxError('USAGE', `state ${JSON.stringify(state)}: expected one of ${QUEUE_STATES.join(', ')}`);
  const limit = checkPositiveInt('limit', query.get('limit') ?? undefined) ?? DEFAULT_QUEUE_LIMIT;
  const r = await d.commands.command(id, { kind: 'queueList', select: { ...(match ? { match } : {}), ...(state ? { state: state as QueueState } : {}) }, limit }, 0, d.commandTimeoutMs);
  if (!r.ok) throw new MxError('UNAVAILABLE', `agent ${id}: ${r.error || 'no answer'}`);
  const list = JSON.parse(r.json || '{"entries":[],"more":0}') as QueueList;
  return { agent: id, limit, entries: list.entries, more: list.more };
}

/** Running and recent operations, newest first: each with its steps (which one it is at) and its last progress. */
function operations(d: ApiDeps): unknown {
  return {
    operations: d.orchestrator.list(OPERATIONS).map((op) => {
      const p = d.orchestrator.progress(op.id);
      return { ...operationMsg(op), steps: STEPS[op.kind](op.waitDrained), stepIndex: op.stepIndex, progress: p ? progressMsg(p) : undefined };
    }),
  };
}

/**
 * The read-only JSON API under /api/v1/ (the caller's token was checked before): status, routes, operations,
 * agents/ID/queue, history (the dashboard's chart points) and events (Server-Sent Events). Only GET.
 */
export function serveApi(d: ApiDeps, req: IncomingMessage, res: ServerResponse, url: URL): void {
  const path = url.pathname.slice('/api/v1/'.length);
  if (req.method !== 'GET') return sendJson(res, 405, { error: 'METHOD_NOT_ALLOWED', message: 'the API is read-only: GET only' });
  const queue = /^agents\/([^/]+)\/queue$/.exec(path);
  const answer = (fn: () => unknown) =>
    Promise.resolve()
      .then(fn)
      .then(
        (body) => sendJson(res, 200, body),
        (err: unknown) => sendError(res, err),
      );
  if (queue) return void answer(() => agentQueue(d, queue[1]!, url.searchParams));
  switch (path) {
    case 'status':
      return void answer(() => {
        const s = fleetStatus(d);
        const problems = fleetProblems(s);
        return { ...s, converged: problems.length === 0, problems };
      });
    case 'routes':
      return void answer(() => {
        const s = d.store.snapshot();
        return { version: s.version, routes: s.routes.map(routeToWire) };
      });
    case 'operations':
      return void answer(() => operations(d));
    case 'history':
      return void answer(() => ({ agents: d.history.snapshot() }));
    case 'events':
      return serveEvents(d, req, res);
    default:
      return sendJson(res, 404, { error: 'NOT_FOUND', message: `no API endpoint /api/v1/${path}` });
  }
}
