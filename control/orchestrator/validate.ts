import { errorMessage, MxError, quoteInput } from '../../shared/errors.js';
import { formatTarget, normalizeMatch, parseTarget } from '../../shared/routes.js';
import type { OpKind, OperationRecord } from '../core/model.js';
import type { RouteStoreApi } from '../core/ports.js';
import type { Registry } from '../core/registry.js';

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

export interface StartContext {
  store: RouteStoreApi;
  registry: Registry;
  /** Operations running now (a second table operation on the same route is refused). */
  running: readonly OperationRecord[];
  /** The expected agents an operation excluding `excluded` waits for. */
  targets: (excluded: readonly string[]) => string[];
}

/** Checks a request before anything changes; refusals are typed errors an operator can act on. */
export function validateStart(req: StartRequest, d: StartContext): { match: string; target: string; exclude: string[] } {
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
  if (req.kind !== 'flush' && !d.store.get(match)) throw new MxError('NOT_FOUND', `no route for ${quoteInput(match)}; create it with \`mxswitch route set ${match} TARGET\` first`);
  const exclude = [...new Set(req.exclude ?? [])].sort();
  const unknown = exclude.filter((id) => !d.registry.get(id));
  if (unknown.length) throw new MxError('INVALID_ARGUMENT', `--exclude names unknown agents: ${unknown.join(', ')}`);
  if (req.kind !== 'flush') {
    const clash = d.running.find((op) => op.kind !== 'flush' && op.match === match);
    if (clash) throw new MxError('OPERATION_RUNNING', `operation ${clash.id} (${clash.kind}) is still running on ${match}; follow it or wait`);
  }
  const missing = d.targets(exclude)
    .map((id) => d.registry.get(id)!)
    .filter((a) => a.state !== 'connected');
  if (missing.length) {
    throw new MxError(
      'AGENTS_DISCONNECTED',
      `expected agents not connected: ${missing.map((a) => `${a.id} (${a.state})`).join(', ')}; bring them back or pass --exclude ${missing.map((a) => a.id).join(' --exclude ')}`,
    );
  }
  return { match, target, exclude };
}
