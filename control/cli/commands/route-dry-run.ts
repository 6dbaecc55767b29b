import type { RoutePreview } from '../../../agent/route-preview.js';
import type { Route } from '../../../shared/routes.js';
import { commandToWire, routeFromWire, type RouteChange } from '../../../shared/wire.js';
import { ControllerError, withAdmin } from '../admin-client.js';
import { emit } from '../output.js';
import { routeText } from '../route-text.js';
import type { CommonOptions } from './common.js';
import { askAgents, type AgentResult } from './queue-fleet.js';

/**
 * `route set|rm --dry-run`: what the change would do, with nothing changed: the table lines it removes (-) and
 * adds (+), and, asked of every expected agent against its own queue and table in force, how many queued
 * recipients would go to another next hop (from -> to). Exit 1 when an agent did not answer or, with
 * --expect-version, the table has moved on.
 */

interface DryRun {
  version: number;
  diff: { removed: Route | null; added: Route | null };
  results: AgentResult<RoutePreview>[];
}

export async function routeDryRun(change: RouteChange, expectedVersion: number, opts: CommonOptions): Promise<void> {
  const match = 'set' in change ? change.set.match : change.remove;
  const run = await withAdmin(opts, async (a): Promise<DryRun> => {
    const table = await a.listRoutes();
    if (expectedVersion && table.version !== expectedVersion) {
      throw new ControllerError(`the table is at version ${table.version}, not ${expectedVersion} (--expect-version); dry run: nothing changed`);
    }
    const old = table.routes.find((r) => r.match === match);
    const removed = old ? routeFromWire(old) : null;
    if ('remove' in change && !removed) throw new ControllerError(`no route for ${match} (dry run: nothing changed)`);
    const added = 'set' in change ? change.set : null;
    const results = await askAgents<RoutePreview>(a, commandToWire({ kind: 'routePreview', change }));
    return { version: table.version, diff: { removed, added }, results };
  });
  emit(opts, run, render);
  const failed = run.results.filter((r) => !r.ok);
  if (failed.length) throw new ControllerError(`dry run: no preview from ${failed.map((r) => `${r.agent} (${r.error})`).join(', ')}`);
}

const recipients = (n: number) => `${n} queued recipient${n === 1 ? '' : 's'}`;

function previewLine(p: RoutePreview): string {
  return `${p.moved} of ${recipients(p.recipients)} would change next hop`;
}

function render(d: DryRun): string {
  const line = (sign: string, r: Route) => `${sign} ${r.match}  ${routeText(r)}`;
  const same = d.diff.removed && d.diff.added && routeText(d.diff.removed) === routeText(d.diff.added);
  const out = [`dry run: nothing changed (the table stays at version ${d.version})`];
  if (same) out.push(`no change to the table: ${d.diff.added!.match} is already ${routeText(d.diff.added!)}`);
  else {
    if (d.diff.removed) out.push(line('-', d.diff.removed));
    if (d.diff.added) out.push(line('+', d.diff.added));
  }
  if (!d.results.length) out.push('no expected agents to ask');
  const answered: RoutePreview[] = [];
  for (const r of d.results) {
    if (!r.ok || !r.result) {
      out.push(`${r.agent}: no answer: ${r.error ?? 'no result'}`);
      continue;
    }
    answered.push(r.result);
    out.push(`${r.agent}: ${previewLine(r.result)}`);
    for (const m of r.result.moves) out.push(`  ${m.recipients}  ${m.from} -> ${m.to}`);
  }
  if (answered.length > 1) {
    const sum = (f: (p: RoutePreview) => number) => answered.reduce((n, p) => n + f(p), 0);
    out.push(`every agent that answered: ${sum((p) => p.moved)} of ${recipients(sum((p) => p.recipients))} would change next hop`);
  }
  return out.join('\n');
}
