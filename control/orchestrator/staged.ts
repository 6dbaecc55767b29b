import { RouteTable, type Route } from '../../shared/routes.js';
import type { RouteStoreApi } from '../core/ports.js';
import { StepFailed } from './steps.js';

/**
 * The table steps of a staged switchover: the listed addresses get address routes of their own, which are held,
 * re-pointed and released while the rest of their domains stays where it is. Each step is idempotent (a resumed
 * step finds its changes made) and returns the table version the agents must ack.
 */

type Write = (route: Route) => number | Promise<number>;

/** Hold: an address without a route of its own gets a held copy of the route that covers it now. */
export async function holdAddresses(store: RouteStoreApi, addresses: readonly string[], actor: string): Promise<number> {
  let table: RouteTable | undefined;
  for (const address of addresses) {
    const own = store.get(address);
    if (own) {
      if (!own.hold) await store.setHold(address, true, { actor });
      continue;
    }
    table ??= new RouteTable(store.snapshot().routes);
    const covering = table.lookup(address);
    if (!covering) throw new StepFailed(`no route covers ${address} any more`);
    await store.set({ ...covering, match: address, hold: true }, { actor });
  }
  return store.version;
}

/** Re-point every address route to the new target, still held. */
export async function retargetAddresses(store: RouteStoreApi, addresses: readonly string[], target: string, actor: string): Promise<number> {
  await eachRoute(store, addresses, (r) => {
    if (!r.hold) throw new StepFailed(`${r.match} was released by someone else during the switchover`);
    return r.target === target ? undefined : (route) => store.set({ ...route, target, hold: true }, { actor });
  });
  return store.version;
}

/** Release every address route (only where it points to the new target: anything else is someone else's change). */
export async function releaseAddresses(store: RouteStoreApi, addresses: readonly string[], target: string, actor: string): Promise<number> {
  await eachRoute(store, addresses, (r) => {
    if (r.target !== target) throw new StepFailed(`${r.match} was re-pointed to ${r.target} by someone else during the switchover`);
    return r.hold ? () => store.setHold(r.match, false, { actor }) : undefined;
  });
  return store.version;
}

/** Checks every route first (a refusal changes nothing), then writes the ones that need it. */
async function eachRoute(store: RouteStoreApi, addresses: readonly string[], plan: (r: Route) => Write | undefined): Promise<void> {
  const writes: [Write, Route][] = [];
  for (const address of addresses) {
    const r = store.get(address);
    if (!r) throw new StepFailed(`the route for ${address} was removed during the switchover`);
    const write = plan(r);
    if (write) writes.push([write, r]);
  }
  for (const [write, r] of writes) await write(r);
}
