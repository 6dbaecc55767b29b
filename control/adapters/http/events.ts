import type { IncomingMessage, ServerResponse } from 'node:http';
import { Outbox } from '../../../shared/outbox.js';
import type { FleetHistory, HistoryPoint } from '../../core/history.js';
import type { OperationRecord, Progress } from '../../core/model.js';
import type { AgentInfo, Registry } from '../../core/registry.js';
import type { RouteStoreApi } from '../../core/ports.js';
import type { Orchestrator } from '../../orchestrator/runner.js';
import { agentStatus, operationMsg, progressMsg } from '../grpc/admin-service.js';

export interface EventSources {
  store: RouteStoreApi;
  registry: Registry;
  orchestrator: Orchestrator;
  history: FleetHistory;
}

/** One Server-Sent Event: its type and JSON data; `key` coalesces unsent events of the same thing. */
interface SseEvent {
  event: string;
  data: unknown;
  key?: string;
}

const KEEPALIVE_MS = 15_000;

function encode(e: SseEvent): string {
  return `event: ${e.event}\ndata: ${JSON.stringify(e.data)}\n\n`;
}

/**
 * GET /api/v1/events: the events `mxswitch watch` shows, as Server-Sent Events — `agent` (an AgentStatus, as in
 * /api/v1/status; state "removed" when forgotten), `operation`, `progress` (steps and per-agent acks), `routes`
 * ({version}) and `point` ({agent, point}: a new chart point). It starts with the current state of each. A slow
 * reader gets the latest state of each agent, operation and the table, not every report in between (Outbox).
 */
export function serveEvents(src: EventSources, req: IncomingMessage, res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
  const out = new Outbox<SseEvent>(res, (e) => e.key, encode);
  const send = (event: string, data: unknown, key?: string) => out.send({ event, data, ...(key ? { key } : {}) });
  const onAgent = (a: AgentInfo) => send('agent', agentStatus(a), `agent:${a.id}`);
  const onRemoved = (id: string) => send('agent', { id, state: 'removed', expected: false }, `agent:${id}`);
  const onOperation = (op: OperationRecord) => send('operation', operationMsg(op), `operation:${op.id}`);
  const onProgress = (p: Progress) => send('progress', progressMsg(p), `progress:${p.operation.id}`);
  const onRoutes = (s: { version: number }) => send('routes', { version: s.version }, 'routes');
  const onPoint = (agent: string, point: HistoryPoint) => send('point', { agent, point });
  send('routes', { version: src.store.version }, 'routes');
  for (const a of src.registry.list()) onAgent(a);
  for (const op of src.orchestrator.runningOps()) onOperation(op);
  src.registry.on('agent', onAgent);
  src.registry.on('removed', onRemoved);
  src.orchestrator.on('operation', onOperation);
  src.orchestrator.on('progress', onProgress);
  src.store.on('change', onRoutes);
  src.history.on('point', onPoint);
  // A comment line now and then: proxies and browsers keep an idle stream open, and a gone client is noticed.
  const keepalive = setInterval(() => res.write(': keepalive\n\n'), KEEPALIVE_MS);
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    clearInterval(keepalive);
    src.registry.off('agent', onAgent);
    src.registry.off('removed', onRemoved);
    src.orchestrator.off('operation', onOperation);
    src.orchestrator.off('progress', onProgress);
    src.orchestrator.off('stopping', onStopping);
    src.store.off('change', onRoutes);
    src.history.off('point', onPoint);
    out.close();
  };
  const onStopping = () => {
    stop();
    res.end();
  };
  src.orchestrator.on('stopping', onStopping);
  req.on('close', stop);
  res.on('close', stop);
  res.on('error', stop);
}
