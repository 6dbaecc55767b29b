import type { Command } from 'commander';
import { parseRouteFile } from '../../../shared/route-file.js';
import { actor, withAdmin, type Operation } from '../admin-client.js';
import { parseInputFile } from '../args.js';
import { action } from '../output.js';
import { OperationView } from '../progress.js';
import { exitHelp, operator, wrap } from './common.js';
import { appliedText, changeOptions, changeParams, type AppliedPoll, type ChangeOptions } from './route-change.js';

/**
 * `route import FILE`: a Postfix transport map as many routes in ONE table version (a staged migration's 20,000
 * address routes, a hosting move's thousands of domains). The whole file is checked before anything is sent (a bad
 * line: exit 2, one line naming it, nothing sent); the controller checks it again and applies all or nothing.
 */

type ImportOptions = ChangeOptions & { replace?: boolean };

const FORMAT_HELP = `
FILE format (Postfix transport_maps syntax, '-' reads stdin): one route per line, "MATCH TARGET [hold] [tls=required|may] [verify=probe|none]"; '#' starts a comment, blank lines are skipped. MATCH and TARGET as for \`route set\`: alice@example.com, example.com or .example.com; smtp:[host]:port (no MX lookup) or smtp:host:port. A MATCH on two lines is an error. An import never releases a hold: a route held now stays held (release it with \`mxswitch release\`).
Example:
  # mailboxes already moved
  alice@example.com  smtp:[new.example.com]:25
  example.com        smtp:[old.example.com]:25  tls=required
Progress: one plain line per step (read, stored, applied by each agent) or, on a terminal, one redrawn status line; with --json one JSON object per step (NDJSON, "type":"progress") and a final {"type":"result","ok":...} object with the counts.`;

/** Adds `route import` to the `route` group. */
export function registerRouteImport(route: Command): void {
  changeOptions(
    operator(
      route,
      'import',
      'Set many routes from a transport-map FILE in one table version: added, changed or (with --replace) removed together, or nothing at all when any line is bad.',
      exitHelp(
        'the controller to store the new table version; with --wait also until every expected agent has applied it.',
        'imported (and with --wait applied by every expected agent), or with --dry-run counted',
        'the version did not match --expect-version, or (--wait) an agent did not apply it in time, or the controller refused or could not be reached',
      ) + wrap(FORMAT_HELP),
    )
      .argument('<file>', 'the transport map (a bad line fails the whole import with its line number; nothing changes)')
      .option('--replace', 'routes not in FILE are removed: the table becomes exactly FILE'),
    'change nothing: count the routes the import would add, change, remove and leave unchanged',
  ).action(action(routeImport));
}

/** Progress of the import's steps, drawn by the operations' progress view. */
function stepProgress(view: OperationView, file: string, step: string, message: string, poll?: AppliedPoll): void {
  const operation: Operation = { id: '', kind: 'route import', match: file, target: '', state: 'running', step, error: '', startedAtMs: 0, finishedAtMs: 0, excluded: [], recipients: [] };
  view.update({ operation, message, waitingVersion: poll?.version ?? 0, acked: poll?.acked ?? [], pending: poll?.pending ?? [], failed: [], drain: [] });
}

async function routeImport(file: string, opts: ImportOptions): Promise<void> {
  const change = changeParams(opts);
  const routes = parseInputFile(file, parseRouteFile, 'nothing was imported');
  const replace = opts.replace ?? false;
  const dryRun = opts.dryRun ?? false;
  const view = new OperationView('route import', { json: opts.json ?? false });
  const steps = async () => {
    stepProgress(view, file, 'read', `${routes.length} routes read`);
    return withAdmin(opts, async (a) => {
      const res = await a.importRoutes(routes, { replace, dryRun, expectedVersion: change.expectedVersion, actor: actor() });
      const counts = `${res.added} added, ${res.changed} changed, ${res.removed} removed, ${res.unchanged} unchanged`;
      if (dryRun) return { res, counts, applied: undefined };
      stepProgress(view, file, 'store', `table version ${res.version}: ${counts}`);
      const applied = await change.applied(a, res.version, (p) => stepProgress(view, file, 'apply', `table version ${res.version}`, p));
      return { res, counts, applied };
    });
  };
  const { res, counts, applied } = await steps().catch((err: Error) => {
    view.finish(false);
    if (opts.json) process.stdout.write(`${JSON.stringify({ type: 'result', ok: false, error: err.message })}\n`);
    throw err;
  });
  view.finish(true);
  const result = { routes: routes.length, replace, dryRun, version: res.version, added: res.added, changed: res.changed, removed: res.removed, unchanged: res.unchanged, ...(applied ? { appliedBy: applied } : {}) };
  const nothing = !res.added && !res.changed && !res.removed;
  process.stdout.write(
    opts.json
      ? `${JSON.stringify({ type: 'result', ok: true, ...result })}\n`
      : dryRun
        ? `dry run: nothing changed (the table stays at version ${res.version}); the import would make: ${counts}\n`
        : `${routes.length} routes imported: ${counts}: ${nothing ? `nothing changed (table version ${res.version})` : `table version ${res.version}`}${applied ? appliedText(applied) : ' (agents apply it within seconds; `mxswitch status` shows their versions)'}\n`,
  );
}
