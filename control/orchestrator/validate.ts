import { errorMessage, MxError, quoteInput } from '../../shared/errors.js';
import { formatTarget, normalizeMatch, parseTarget, RouteTable } from '../../shared/routes.js';
import { subject } from './steps.js';
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
  /** A staged switchover of these addresses (then `match` is empty). */
  recipients?: readonly string[];
}

/** One staged switchover moves at most this many addresses (each is a route in every agent's table). */
export const MAX_STAGED_ADDRESSES = 10_000;

export interface StartContext {
  store: RouteStoreApi;
  registry: Registry;
  /** Operations running now (a second table operation on the same route is refused). */
  running: readonly OperationRecord[];
  /** The expected agents an operation excluding `excluded` waits for. */
  targets: (excluded: readonly string[]) => string[];
}

/** Checks a request before anything changes; refusals are typed errors an operator can act on. */
export function validateStart(req: StartRequest, d: StartContext): { match: string; target: string; exclude: string[]; recipients: string[] } {
  const recipients = stagedAddresses(req, d);
  let match = '';
  if (!recipients.length && (req.match || req.kind !== 'flush')) {
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
  if (req.kind !== 'flush' && !recipients.length && !d.store.get(match)) throw new MxError('NOT_FOUND', `no route for ${quoteInput(match)}; create it with \`mxswitch route set ${match} TARGET\` first`);
  const exclude = [...new Set(req.exclude ?? [])].sort();
  const unknown = exclude.filter((id) => !d.registry.get(id));
  if (unknown.length) throw new MxError('INVALID_ARGUMENT', `--exclude names unknown agents: ${unknown.join(', ')}`);
  if (req.kind !== 'flush') {
    const clash = d.running.find((op) => op.kind !== 'flush' && overlaps(op, match, recipients));
    if (clash) throw new MxError('OPERATION_RUNNING', `operation ${clash.id} (${clash.kind}) is still running on ${subject(clash)}; follow it or wait`);
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
  return { match, target, exclude, recipients };
}

/** The addresses of a staged switchover, normalised, each covered by a route now; [] for a route operation. */
function stagedAddresses(req: StartRequest, d: StartContext): string[] {
  if (!req.recipients?.length) return [];
  if (req.kind !== 'switchover') throw new MxError('INVALID_ARGUMENT', `${req.kind} does not take recipients; only switchover moves a list of addresses`);
  if (req.match) throw new MxError('INVALID_ARGUMENT', 'give either MATCH or recipients, not both');
  if (req.recipients.length > MAX_STAGED_ADDRESSES) throw new MxError('INVALID_ARGUMENT', `${req.recipients.length} addresses: at most ${MAX_STAGED_ADDRESSES} per switchover; move them in batches`);
  const table = new RouteTable(d.store.snapshot().routes);
  const out = new Set<string>();
  for (const raw of req.recipients) {
    let key: string;
    try {
      const m = normalizeMatch(raw);
      if (m.kind !== 'address') throw new Error(`${quoteInput(raw)} is not an address`);
      key = m.key;
    } catch (err) {
      throw new MxError('INVALID_ARGUMENT', `recipients: ${errorMessage(err)}`);
    }
    if (!table.lookup(key)) throw new MxError('NOT_FOUND', `recipients: no route covers ${key}; route its domain first`);
    out.add(key);
  }
  return [...out].sort();
}

/** Whether a running operation works on any of the routes this one would change. */
function overlaps(op: OperationRecord, match: string, recipients: readonly string[]): boolean {
  const theirs = op.recipients?.length ? op.recipients : [op.match];
  if (!recipients.length) return theirs.includes(match) || (op.recipients?.length ? theirs.some((a) => RouteTable.covers(match, a)) : false);
  return recipients.some((a) => theirs.includes(a) || (!op.recipients?.length && RouteTable.covers(op.match, a)));
}
