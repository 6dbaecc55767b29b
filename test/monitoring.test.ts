// examples/monitoring: the Prometheus alert rules are valid and fire as meant (promtool's own rule tests), and
// every metric the rules and the Grafana dashboard read exists on a real controller's or agent's /metrics.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { startAgent } from './helpers/agent.js';
import { startController } from './helpers/controller.js';
import { REPO } from './helpers/process.js';

const DIR = join(REPO, 'examples', 'monitoring');
const promtool = spawnSync('promtool', ['--version']).status === 0 ? false : 'promtool not installed (Debian package prometheus; .ci/run installs it)';

function promtoolRun(args: string[]): { status: number | null; out: string } {
  const r = spawnSync('promtool', args, { cwd: DIR, encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

test('alerts.yaml: promtool check rules, and its unit tests (alerts.test.yaml) pass', { skip: promtool }, () => {
  const check = promtoolRun(['check', 'rules', 'alerts.yaml']);
  assert.equal(check.status, 0, check.out);
  const unit = promtoolRun(['test', 'rules', 'alerts.test.yaml']);
  assert.equal(unit.status, 0, unit.out);
});

/** Metric names in PromQL expressions (a histogram's _bucket/_sum/_count series by their family's name). */
function metricNames(exprs: readonly string[]): Set<string> {
  return new Set(exprs.flatMap((e) => [...e.matchAll(/\bmxswitch_[a-z_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, ''))));
}

test('every metric the alert rules and the Grafana dashboard use is exported by the controller or the agent', async (t) => {
  const rules = parse(readFileSync(join(DIR, 'alerts.yaml'), 'utf8')) as { groups: { rules: { alert: string; expr: string }[] }[] };
  const dashboard = JSON.parse(readFileSync(join(DIR, 'grafana-dashboard.json'), 'utf8')) as { uid: string; panels: { id: number; title: string; targets: { expr: string }[] }[] };
  const alertExprs = rules.groups.flatMap((g) => g.rules.map((r) => r.expr));
  const panelExprs = dashboard.panels.flatMap((p) => p.targets.map((x) => x.expr));
  assert.equal(new Set(dashboard.panels.map((p) => p.id)).size, dashboard.panels.length, 'panel ids are unique');
  assert.ok(dashboard.panels.every((p) => p.targets.length > 0), 'every panel has a query');
  assert.deepEqual(
    rules.groups.flatMap((g) => g.rules.map((r) => r.alert)).filter((a) => /Disconnected|OldestAge|DeferredRate|DiskFree/.test(a)).length,
    4,
    'the alerts the issue asks for: agent disconnected, queue oldest age, deferred rate, disk free',
  );

  const ctl = await startController({ http: { listen: '127.0.0.1:0' } });
  t.after(() => ctl.cleanup());
  const agent = await startAgent({ http: { listen: '127.0.0.1:0' } });
  t.after(() => agent.cleanup());
  const pages = await Promise.all([ctl.controller.httpPort, agent.agent.httpPort].map(async (port) => (await fetch(`http://127.0.0.1:${port}/metrics`)).text()));
  const exported = new Set(pages.flatMap((p) => [...p.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!)));
  const missing = [...metricNames([...alertExprs, ...panelExprs])].filter((n) => !exported.has(n));
  assert.deepEqual(missing, [], 'metrics used in examples/monitoring but not exported');
});
