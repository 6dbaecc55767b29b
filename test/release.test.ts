// The release: `mxswitch --version`, the build_info metric, and the packed tarball installed the way an operator
// installs it (npm install -g into a temporary prefix), then run from there without the checkout.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { killHard, portOpen, reapOnExit } from '../control/demo/processes.js';
import { gitCommit } from '../shared/version.js';
import { tempDir, waitFor } from './helpers/agent.js';
import { ADMIN_TOKEN, AGENT_TOKEN } from './helpers/controller.js';
import { CliProcess, collect, freePort, REPO, runCli, testEnv, writeYaml } from './helpers/process.js';

const { version } = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };

/** The checkout's commit as git itself reports it (null where git cannot answer: then mxswitch reports none either). */
function checkoutCommit(): string | null {
  const r = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO, encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

test('mxswitch --version and -V print the package version and the checkout commit; --json adds the Node.js version', async () => {
  const commit = checkoutCommit();
  const line = `mxswitch ${version}${commit ? ` (${commit})` : ''}\n`;
  for (const flag of ['--version', '-V']) {
    const r = await runCli([flag]);
    assert.deepEqual({ code: r.code, stdout: r.stdout, stderr: r.stderr }, { code: 0, stdout: line, stderr: '' }, flag);
  }
  const r = await runCli(['--version', '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { version, commit, node: process.version });
});

test('the commit lookup stays quiet without an answer: no .git, a .git git rejects, no git on PATH', (t) => {
  const dir = tempDir('mxs-nogit-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  assert.equal(gitCommit(dir), undefined);
  mkdirSync(join(dir, '.git'));
  assert.equal(gitCommit(dir), undefined);
  const path = process.env.PATH;
  t.after(() => (process.env.PATH = path));
  process.env.PATH = dir;
  assert.equal(gitCommit(REPO), undefined);
});

/** The `mxswitch_build_info` sample of a /metrics page. */
async function buildInfoSample(httpPort: number): Promise<string | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  return text.split('\n').find((l) => l.startsWith('mxswitch_build_info{'));
}

test('agent and controller /metrics carry mxswitch_build_info{version,commit,node} 1', async (t) => {
  const dir = tempDir('mxs-build-info-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const [grpcPort, ctlHttp, smtpPort, agentHttp] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const controller = new CliProcess(
    [
      'controller',
      '--config',
      writeYaml(dir, 'controller.yaml', {
        dataDir: join(dir, 'controller'),
        grpc: { listen: `127.0.0.1:${grpcPort}` },
        tokens: { agent: AGENT_TOKEN, admin: ADMIN_TOKEN },
        http: { listen: `127.0.0.1:${ctlHttp}` },
        log: { level: 'warn' },
      }),
    ],
    grpcPort,
  );
  const agent = new CliProcess(
    [
      'agent',
      '--config',
      writeYaml(dir, 'agent.yaml', {
        id: 'build-info',
        dataDir: join(dir, 'agent'),
        smtp: { listen: `127.0.0.1:${smtpPort}` },
        routes: [{ match: 'example.com', target: 'smtp:[127.0.0.1]:9' }],
        http: { listen: `127.0.0.1:${agentHttp}` },
        log: { level: 'warn' },
      }),
    ],
    smtpPort,
  );
  t.after(() => Promise.all([controller.kill('SIGTERM'), agent.kill('SIGTERM')]));
  await Promise.all([controller.start(), agent.start()]);
  const expected = `mxswitch_build_info{version="${version}",commit="${checkoutCommit() ?? 'unknown'}",node="${process.version}"} 1`;
  assert.equal(await buildInfoSample(agentHttp), expected, 'agent');
  assert.equal(await buildInfoSample(ctlHttp), expected, 'controller');
});

/** npm, in `cwd`, without the npm_* variables of an `npm test` around this process (they would steer its config). */
function npm(args: readonly string[], cwd: string): SpawnSyncReturns<string> {
  const env = Object.fromEntries(Object.entries(testEnv()).filter(([k]) => !k.toLowerCase().startsWith('npm_')));
  return spawnSync('npm', ['--no-audit', '--no-fund', ...args], { cwd, env, encoding: 'utf8', timeout: 240_000 });
}

test('npm pack, npm install -g of the tarball into a temporary prefix: --version, agent --help and a running agent from there', { timeout: 300_000 }, async (t) => {
  const dir = tempDir('mxs-release-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // prepack builds dist/ first, as for a release.
  const pack = npm(['pack', '--pack-destination', dir], REPO);
  assert.equal(pack.status, 0, `npm pack: ${pack.stderr}`);
  const tarball = join(dir, `mxswitch-${version}.tgz`);
  const prefix = join(dir, 'prefix');
  // --offline: the dependencies come from npm's cache, so the test neither needs nor loads the registry.
  const install = npm(['install', '-g', '--offline', '--prefix', prefix, tarball], dir);
  if (install.status !== 0 && /ENOTCACHED/.test(install.stderr)) {
    t.skip(`npm cannot install offline here: the dependencies' metadata is not in npm's cache (${install.stderr.split('\n').find((l) => /ENOTCACHED/.test(l) || /request to/.test(l))?.trim()})`);
    return;
  }
  assert.equal(install.status, 0, `npm install -g: ${install.stderr}`);
  const home = join(prefix, 'lib', 'node_modules', 'mxswitch');
  assert.equal(existsSync(join(home, 'node_modules', 'tsx')), false, 'no TypeScript loader installed: the bin runs compiled JavaScript');
  assert.equal(existsSync(join(home, 'test')), false, 'no tests in the package');

  const bin = join(prefix, 'bin', 'mxswitch');
  const run = (args: readonly string[]) => collect(reapOnExit(spawn(bin, args, { cwd: dir, env: testEnv(), stdio: ['ignore', 'pipe', 'pipe'] })));
  const commit = checkoutCommit();
  const v = await run(['--version']);
  assert.deepEqual({ code: v.code, stdout: v.stdout }, { code: 0, stdout: `mxswitch ${version}${commit ? ` (${commit})` : ''}\n` }, v.stderr);
  const help = await run(['agent', '--help']);
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /^Usage: mxswitch agent/);

  // An agent from the installed copy: it opens its SQLite queue (better-sqlite3's native module, built by the
  // install) before it listens, and serves the build_info metric.
  const [smtpPort, httpPort] = [await freePort(), await freePort()];
  const config = writeYaml(dir, 'agent.yaml', {
    id: 'installed',
    dataDir: join(dir, 'data'),
    smtp: { listen: `127.0.0.1:${smtpPort}` },
    routes: [{ match: 'example.com', target: 'smtp:[127.0.0.1]:9' }],
    http: { listen: `127.0.0.1:${httpPort}` },
    log: { level: 'warn' },
  });
  const agent = reapOnExit(spawn(bin, ['agent', '--config', config], { cwd: dir, env: testEnv(), stdio: ['ignore', 'ignore', 'pipe'] }));
  t.after(() => killHard(agent));
  let stderr = '';
  agent.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const listening = () => {
    if (agent.exitCode !== null) throw new Error(`the installed agent exited with ${agent.exitCode}: ${stderr}`);
    return portOpen(smtpPort);
  };
  await waitFor('the installed agent listening', listening, 20_000);
  assert.equal(existsSync(join(dir, 'data', 'queue.db')), true, 'queue.db created');
  assert.match((await buildInfoSample(httpPort)) ?? '', new RegExp(`^mxswitch_build_info\\{version="${version}",commit="${commit ?? 'unknown'}",`));
});
