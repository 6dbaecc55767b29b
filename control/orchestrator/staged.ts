import { MxError } from '../../shared/errors.js';
import { RouteTable, type Route } from '../../shared/routes.js';
import { VERSION_CONFLICT, type RouteStoreApi } from '../core/ports.js';
import { StepFailed } from './steps.js';

/**
 * The table steps of a staged switchover: the listed addresses get address routes of their own, which are held,
 * re-pointed and released while the rest of their domains stays where it is. Each step is ONE table version for
 * all its addresses (the store's import path), checked and written with compare-and-set on the version the check
 * read, so a concurrent change makes the step look again rather than overwrite it. Each step is idempotent (a
 * resumed step finds its changes made) and returns the table version the agents must ack.
 */

/** Concurrent changes a step re-plans after before it gives up. */
const ATTEMPTS = 5;

/** Hold: an address without a route of its own gets a held copy of the route that covers it now. */
export function holdAddresses(store: RouteStoreApi, addresses: readonly string[], actor: string): Promise<number> {
  return writeStep(store, actor, () => {
    let table: RouteTable | undefined;
    const out: Route[] = [];
    for (const address of addresses) {
      const own = store.get(address);
      if (own) {
        if (!own.hold) out.push({ ...own, hold: true });
        continue;
      }
      table ??= new RouteTable(store.snapshot().routes);
      const covering = table.lookup(address);
      if (!covering) throw new StepFailed(`no route covers ${address} any more`);
      out.push({ ...covering, match: address, hold: true });
    }
    return out;
  });
}

/** Re-point every address route to the new target, still held. */
export function retargetAddresses(store: RouteStoreApi, addresses: readonly string[], target: string, actor: string): Promise<number> {
  return writeStep(store, actor, () =>
    eachRoute(store, addresses, (r) => {
      if (!r.hold) throw new StepFailed(`${r.match} was released by someone else during the switchover`);
      return r.target === target ? undefined : { ...r, target, hold: true };
    }),
  );
}

/** Release every address route (only where it points to the new target: anything else is someone else's change). */
export function releaseAddresses(store: RouteStoreApi, addresses: readonly string[], target: string, actor: string): Promise<number> {
  return writeStep(store, actor, () =>
    eachRoute(store, addresses, (r) => {
      if (r.target !== target) throw new StepFailed(`${r.match} was re-pointed to ${r.target} by someone else during the switchover`);
      if (!r.hold) return undefined;
      const { hold: _hold, ...released } = r;
      return released;
    }),
  );
}

/** Every address's route, planned (a refusal throws: nothing is written); the routes to write. */
function eachRoute(store: RouteStoreApi, addresses: readonly string[], plan: (r: Route) => Route | undefined): Route[] {
  const out: Route[] = [];
  for (const address of addresses) {
    const r = store.get(address);
    if (!r) throw new StepFailed(`the route for ${address} was removed during the switchover`);
    const next = plan(r);
    if (next) out.push(next);
  }
  return out;
}

/** Plans against the table in force and writes the plan as one version, on that version only. */
async function writeStep(store: RouteStoreApi, actor: string, plan: () => Route[]): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    const seen = store.version;
    const routes = plan();
    if (!routes.length) return store.version;
    try {
      return (await store.importRoutes(routes, { replace: false, setHolds: true, expectedVersion: seen, actor })).version;
    } catch (err) {
      if (!(err instanceof MxError && err.code === VERSION_CONFLICT) || attempt >= ATTEMPTS) throw err;
    }
  }
}
