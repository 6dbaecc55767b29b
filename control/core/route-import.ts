import { MxError, errorMessage } from '../../shared/errors.js';
import { normalizeRoutes, type Route } from '../../shared/routes.js';
import type { AuditRecord } from './ports.js';

/** One route's change inside a write: the new route, or null for a removal (with the old one, for the audit). */
export interface RouteChange {
  key: string;
  old: Route | undefined;
  next: Route | null;
  action: AuditRecord['action'];
}

export const sameRoute = (a: Route | undefined, b: Route | undefined): boolean =>
  a === b || (!!a && !!b && a.match === b.match && a.target === b.target && !a.hold === !b.hold && (a.tls ?? 'may') === (b.tls ?? 'may') && (a.verify ?? 'none') === (b.verify ?? 'none'));

export interface ImportPlan {
  changes: RouteChange[];
  added: number;
  changed: number;
  removed: number;
  unchanged: number;
}

/**
 * What importing `routes` into `table` changes: every route validated like `route set` (a bad one, or a match
 * twice, throws INVALID_ARGUMENT and nothing is planned), routes equal to the ones in force left alone, and with
 * `replace` every route the import does not list removed. An import never releases a hold: a held route stays
 * held (release it with `mxswitch release`), so re-importing a transport map during a migration is safe; only
 * `setHolds` (the orchestrator's steps) takes the hold flags as they are.
 */
export function diffImport(table: ReadonlyMap<string, Route>, routes: readonly Route[], replace: boolean, setHolds = false): ImportPlan {
  let wanted: Route[];
  try {
    wanted = normalizeRoutes(routes);
  } catch (err) {
    throw new MxError('INVALID_ARGUMENT', errorMessage(err));
  }
  const plan: ImportPlan = { changes: [], added: 0, changed: 0, removed: 0, unchanged: 0 };
  const listed = replace ? new Set<string>() : undefined;
  for (const r of wanted) {
    listed?.add(r.match);
    const old = table.get(r.match);
    const next: Route = old?.hold && !r.hold && !setHolds ? { ...r, hold: true } : r;
    if (sameRoute(old, next)) {
      plan.unchanged++;
      continue;
    }
    if (old) plan.changed++;
    else plan.added++;
    // A change of the hold flag alone is audited as the hold or release it is.
    const holdOnly = old && !old.hold !== !next.hold && sameRoute({ ...old, hold: false }, { ...next, hold: false });
    plan.changes.push({ key: r.match, old, next, action: holdOnly ? (next.hold ? 'hold' : 'release') : 'set' });
  }
  if (listed) {
    for (const [key, old] of table) {
      if (listed.has(key)) continue;
      plan.removed++;
      plan.changes.push({ key, old, next: null, action: 'remove' });
    }
  }
  return plan;
}
