import { Option, type Command } from 'commander';
import type { Route } from '../../../shared/routes.js';
import { commandToWire } from '../../../shared/wire.js';
import { actor, withAdmin, type AdminConnection } from '../admin-client.js';
import { checkMatch, checkTarget } from '../args.js';
import { action, emit, table } from '../output.js';
import { exitHelp, GROUP_HELP, operator, type CommonOptions } from './common.js';
import { agentState } from './fleet-status.js';
import { askAgents } from './queue-fleet.js';
import { appliedText, changeOptions, changeParams, type ChangeOptions } from './route-change.js';
import { routeDryRun } from './route-dry-run.js';
import { registerRouteImport } from './route-import.js';

/** `route ls|set|rm`: the routing table on the controller. Arguments are checked before connecting. */

type RouteSetOptions = ChangeOptions & { hold?: boolean; tls?: 'required' | 'may'; verify?: 'probe' | 'none' };

/** Adds the `route` group. */
export function registerRoutes(program: Command): void {
  const route = program.command('route').description('Read and change the routing table on the controller (every agent applies it).').addHelpText('after', GROUP_HELP);

  operator(
    route,
    'ls',
    'List the routing table: MATCH, TARGET, hold flag, TLS policy, recipient verification, and the table version. Address routes (a staged migration makes many) are shown as one line per domain with their count and targets unless --addresses; --json always has every route.',
    exitHelp('one answer from the controller.', 'listed', 'the controller refused or could not be reached'),
  )
    .option('--addresses', 'list every address route on its own line')
    .action(action(routeLs));

  const SET_DRY_RUN = 'change nothing: print the table lines it would remove (-) and add (+), and per agent how many queued recipients would change next hop (from -> to)';
  const waits = 'the controller to store the new table version; with --wait also until every expected agent has applied it; with --dry-run one answer per expected agent (what it would do to its queue), nothing stored.';
  changeOptions(
    operator(
      route,
      'set',
      'Create or replace the route for MATCH: deliver its mail to TARGET (smtp:[host]:port = no MX lookup, smtp:host:port = MX lookup).',
      exitHelp(
        waits,
        'stored (and with --wait applied by every expected agent)',
        'the version did not match --expect-version, or (--wait) an agent did not apply it in time, or the controller refused or could not be reached',
      ),
    )
      .argument('<match>', 'address (alice@example.com), domain (example.com) or domain with subdomains (.example.com)')
      .argument('<target>', 'smtp:[host]:port or smtp:host:port')
      .option('--hold', 'accept and keep mail for MATCH, do not deliver it')
      .addOption(new Option('--tls <policy>', 'delivery TLS: required (never plaintext) or may (opportunistic STARTTLS)').choices(['required', 'may']).default('may'))
      .addOption(
        new Option('--verify <mode>', 'recipient check at RCPT: probe (ask the next hop whether the address exists, cached; unknown users get 550 5.1.1) or none')
          .choices(['probe', 'none'])
          .default('none'),
      ),
    SET_DRY_RUN,
  ).action(action(routeSet));

  changeOptions(
    operator(
      route,
      'rm',
      'Remove the route for MATCH: its recipients are then refused (550 5.7.1) unless a less specific route covers them.',
      exitHelp(
        waits,
        'removed (and with --wait applied by every expected agent)',
        'no such route, version mismatch, (--wait) an agent did not apply it in time, or the controller refused or could not be reached',
      ),
    ).argument('<match>', 'the route\'s MATCH'),
    SET_DRY_RUN,
  ).action(action(routeRm));

  registerRouteImport(route);
}

type ListedRoute = { match: string; target: string; hold: boolean; tls: string; verify: string };

/** Table rows: every route, or the address routes of each domain folded into one row after the domain's own. */
function routeRows(routes: readonly ListedRoute[], addresses: boolean): string[][] {
  const row = (r: ListedRoute) => [r.match, r.target, r.hold ? 'held' : '-', r.tls, r.verify];
  if (addresses) return routes.map(row);
  const byDomain = new Map<string, ListedRoute[]>();
  for (const r of routes) {
    if (!r.match.includes('@')) continue;
    const domain = r.match.slice(r.match.lastIndexOf('@') + 1);
    byDomain.set(domain, [...(byDomain.get(domain) ?? []), r]);
  }
  const folded = (domain: string, list: readonly ListedRoute[]) => {
    const targets = [...new Set(list.map((r) => r.target))];
    const held = list.filter((r) => r.hold).length;
    return [`  *@${domain} (${list.length} address${list.length === 1 ? '' : 'es'})`, targets.length === 1 ? targets[0]! : `${targets.length} targets`, held ? `${held} held` : '-', '', ''];
  };
  const out: string[][] = [];
  for (const r of routes) {
    if (r.match.includes('@')) continue;
    out.push(row(r));
    const list = byDomain.get(r.match);
    if (list) out.push(folded(r.match, list));
    byDomain.delete(r.match);
  }
  for (const [domain, list] of byDomain) out.push(folded(domain, list));
  return out;
}

const listed = (r: { match: string; target: string; hold?: boolean | undefined; tls?: string | undefined; verify?: string | undefined }): ListedRoute => ({
  match: r.match,
  target: r.target,
  hold: r.hold ?? false,
  tls: r.tls || 'may',
  verify: r.verify || 'none',
});

/** What one expected agent relays with while the controller has no table: its table in force, or why not known. */
interface BootstrapTable {
  agent: string;
  state: string;
  version?: number;
  routes?: ListedRoute[];
  error?: string;
}

async function routeLs(opts: CommonOptions & { addresses?: boolean }): Promise<void> {
  const { res, bootstrap } = await withAdmin(opts, async (a) => {
    const res = await a.listRoutes();
    // Version 0: nothing was ever set here, so each agent relays with its own (bootstrap) table: ask them.
    return { res, bootstrap: res.version === 0 && !res.routes.length ? await bootstrapTables(a) : undefined };
  });
  const routes = res.routes.map(listed);
  const rows = (rs: readonly ListedRoute[]) => table(['MATCH', 'TARGET', 'HOLD', 'TLS', 'VERIFY'], routeRows(rs, opts.addresses ?? false));
  emit(opts, { version: res.version, routes, ...(bootstrap ? { bootstrap } : {}) }, (v) =>
    [
      `route table version ${v.version}`,
      v.routes.length
        ? rows(v.routes)
        : bootstrap
          ? [
              `no table set on the controller yet: the agents relay with the bootstrap routes of their config files${bootstrap.length ? '' : ' (no expected agents)'}`,
              ...bootstrap.map((b) =>
                b.routes
                  ? `${b.agent} (table version ${b.version}):\n${b.routes.length ? rows(b.routes).replace(/^/gm, '  ') : '  no routes: every recipient is refused (550 5.7.1)'}`
                  : `${b.agent}: ${b.state === 'connected' ? `no answer (${b.error})` : b.state}`,
              ),
            ].join('\n')
          : 'no routes: every recipient is refused (550 5.7.1)',
    ].join('\n'),
  );
}

async function bootstrapTables(a: AdminConnection): Promise<BootstrapTable[]> {
  const status = await a.status();
  const expected = status.agents.filter((x) => x.expected);
  const connected = expected.filter((x) => x.state === 'connected');
  const answers = await Promise.all(connected.map((x) => askAgents<{ version: number; routes: Route[] }>(a, commandToWire({ kind: 'routeTable' }), x.id).then((r) => r[0])));
  const byId = new Map(connected.map((x, i) => [x.id, answers[i]]));
  return expected.map((x) => {
    const r = byId.get(x.id);
    if (!r) return { agent: x.id, state: agentState(x) };
    if (!r.ok || !Array.isArray(r.result?.routes)) return { agent: x.id, state: x.state, error: r.error ?? 'no table in its answer' };
    return { agent: x.id, state: x.state, version: r.result!.version, routes: r.result!.routes.map(listed) };
  });
}

async function routeSet(matchText: string, targetText: string, opts: RouteSetOptions): Promise<void> {
  const match = checkMatch(matchText);
  const target = checkTarget(targetText);
  const change = changeParams(opts);
  const tls = opts.tls === 'required' ? 'required' : '';
  const verify = opts.verify === 'probe' ? 'probe' : '';
  if (opts.dryRun) {
    const route: Route = { match, target, ...(opts.hold ? { hold: true } : {}), ...(tls ? { tls } : {}), ...(verify ? { verify } : {}) };
    return routeDryRun({ set: route }, change.expectedVersion, opts);
  }
  await withAdmin(opts, async (a) => {
    const res = await a.setRoute({ match, target, hold: opts.hold ?? false, tls, verify, expectedVersion: change.expectedVersion, actor: actor() });
    const applied = await change.applied(a, res.version);
    emit(opts, { match, target, hold: opts.hold ?? false, tls: tls || 'may', verify: verify || 'none', version: res.version, ...(applied ? { appliedBy: applied } : {}) }, (v) =>
      `route ${v.match} -> ${v.target}${v.hold ? ' (held)' : ''}${v.tls === 'required' ? ' (TLS required)' : ''}${v.verify === 'probe' ? ' (recipients verified by probe)' : ''} set: table version ${v.version}` +
      (applied ? appliedText(applied) : ' (agents apply it within seconds; `mxswitch status` shows their versions)'),
    );
  });
}

async function routeRm(matchText: string, opts: ChangeOptions): Promise<void> {
  const match = checkMatch(matchText);
  const change = changeParams(opts);
  if (opts.dryRun) return routeDryRun({ remove: match }, change.expectedVersion, opts);
  await withAdmin(opts, async (a) => {
    const res = await a.removeRoute({ match, expectedVersion: change.expectedVersion, actor: actor() });
    const applied = await change.applied(a, res.version);
    emit(opts, { match, removed: true, version: res.version, ...(applied ? { appliedBy: applied } : {}) }, (v) =>
      `route ${v.match} removed: table version ${v.version}${applied ? appliedText(applied) : ''}`,
    );
  });
}
