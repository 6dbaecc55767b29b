import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { agentConfigSchema, controllerConfigSchema, parseConfig } from '../shared/config.js';
import { REPO } from './helpers/process.js';

/** Drops `tls` blocks (their files exist only on a real host) so the rest of an example is validated as is. */
function withoutTlsFiles(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(withoutTlsFiles);
  if (node && typeof node === 'object') {
    return Object.fromEntries(Object.entries(node).filter(([k]) => k !== 'tls').map(([k, v]) => [k, withoutTlsFiles(v)]));
  }
  return node;
}

for (const dir of ['examples', 'examples/compose']) {
  for (const file of readdirSync(join(REPO, dir)).filter((f) => f.endsWith('.yaml'))) {
    test(`${dir}/${file} is a valid config`, () => {
      const doc = withoutTlsFiles(parse(readFileSync(join(REPO, dir, file), 'utf8')));
      const schema = file.startsWith('controller') ? controllerConfigSchema : agentConfigSchema;
      assert.doesNotThrow(() => parseConfig(schema, doc));
    });
  }
}

const compose = spawnSync('docker-compose', ['version'], { encoding: 'utf8' });
test('docker-compose.yml is valid (docker-compose config)', { skip: compose.error ? 'docker-compose not installed (.ci/run installs it)' : false }, () => {
  const r = spawnSync('docker-compose', ['-f', join(REPO, 'docker-compose.yml'), 'config', '-q'], { encoding: 'utf8', cwd: REPO });
  assert.equal(r.status, 0, r.stderr);
});

// systemd 250+ rates a unit file that is not installed (--offline); older ones or a machine without systemd skip.
const analyze = spawnSync('systemd-analyze', ['security', '--offline=yes', '--help'], { encoding: 'utf8' });
for (const unit of readdirSync(join(REPO, 'examples')).filter((f) => f.endsWith('.service'))) {
  test(`examples/${unit}: systemd-analyze security exposure under 5`, { skip: analyze.status !== 0 ? 'systemd-analyze security --offline not available' : false }, () => {
    const r = spawnSync('systemd-analyze', ['security', '--offline=yes', '--no-pager', join(REPO, 'examples', unit)], { encoding: 'utf8' });
    const exposure = /Overall exposure level for \S+: ([\d.]+)/.exec(r.stdout)?.[1];
    assert.ok(exposure !== undefined, `no exposure level in: ${r.stdout}${r.stderr}`);
    assert.ok(Number(exposure) < 5, `exposure ${exposure}`);
  });
}
