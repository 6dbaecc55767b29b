import { Gauge, type Registry } from 'prom-client';
import { buildInfo } from './version.js';

/**
 * `mxswitch_build_info{version,commit,node} 1`, the Prometheus build_info convention: a dashboard joins on it to
 * see which release (and Node.js) each agent and controller runs, e.g. during a rolling upgrade.
 */
export function registerBuildInfo(registry: Registry): void {
  const { version, commit, node } = buildInfo();
  new Gauge({
    name: 'mxswitch_build_info',
    help: 'Always 1; the labels name the mxswitch version, the git commit it was built from and the Node.js version',
    labelNames: ['version', 'commit', 'node'],
    registers: [registry],
  }).set({ version, commit: commit ?? 'unknown', node }, 1);
}
