// How tests start `mxswitch` children (MxProcess in control/demo/processes.ts, runCli/CliProcess in
// test/helpers/process.ts) and the runner's time limit: a child that fails to start, a CLI that does not exit or a
// test file that runs too long fails and leaves no process behind; no helper waits without a limit; the
// developer's MXSWITCH_* variables never reach the children.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { portOpen } from '../../control/demo/processes.js';
import { tempDir, waitFor, within } from '../helpers/agent.js';
import { CliProcess, collect, freePort, REPO, runCli, spawnCli, testEnv, writeYaml } from '../helpers/process.js';

/** True while `pid` runs (a zombie, dead but not yet reaped by whoever inherited it, counts as gone). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
  try {
    // /proc/PID/stat: "pid (comm) state ..."; comm may contain spaces and parentheses.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return process.platform !== 'linux';
  }
}

/** An agent config listening on its own port: as a CliProcess "ready" on another port, it never becomes ready. */
function agentSetup(t: { after: (fn: () => void) => void }) {
  const dir = tempDir('mxs-proc-');
  const pids: number[] = [];
  // Whatever the assertions say, nothing this test started survives it.
  t.after(() => {
    for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    dir,
    pids,
    config: (smtpPort: number) =>
      writeYaml(dir, 'agent.yaml', {
        id: 'never-ready',
        dataDir: join(dir, 'data'),
        smtp: { listen: `127.0.0.1:${smtpPort}` },
        routes: [{ match: 'example.com', target: 'smtp:[127.0.0.1]:9', hold: true }],
        log: { level: 'error' },
      }),
  };
}

test('start-up timeout: the child is SIGKILLed and gone before start() rejects', async (t) => {
  const s = agentSetup(t);
  const [smtpPort, neverPort] = [await freePort(), await freePort()];
  const proc = new CliProcess(['agent', '--config', s.config(smtpPort)], neverPort);
  let sawUp = false;
  const watch = setInterval(() => void portOpen(smtpPort).then((up) => (sawUp ||= up)), 100);
  t.after(() => clearInterval(watch));
  const starting = proc.start(8_000);
  s.pids.push(proc.child!.pid!);
  await assert.rejects(starting, new RegExp(`mxswitch agent not ready on port ${neverPort} within 8000 ms \\(killed\\)`));
  clearInterval(watch);
  assert.ok(sawUp, 'the agent was up (listening on its SMTP port) when start() gave up on it');
  assert.equal(alive(proc.child!.pid!), false, `pid ${proc.child!.pid} is gone when start() rejects`);
  assert.equal(proc.running, false);
  assert.equal(await portOpen(smtpPort), false, 'its SMTP port is closed');
});

test('a child that exits during start-up: start() rejects at once with its exit status and last line', async (t) => {
  const s = agentSetup(t);
  const proc = new CliProcess(['agent', '--config', join(s.dir, 'missing.yaml')], await freePort());
  const t0 = Date.now();
  const starting = proc.start(60_000);
  s.pids.push(proc.child!.pid!);
  await assert.rejects(starting, /^Error: mxswitch agent exited with 2: mxswitch: .*cannot read config file/);
  assert.ok(Date.now() - t0 < 30_000, `rejected without waiting for the deadline (${Date.now() - t0} ms)`);
});

test('a child killed by a signal during start-up: start() rejects at once, not at its deadline', async (t) => {
  const s = agentSetup(t);
  const proc = new CliProcess(['agent', '--config', s.config(await freePort())], await freePort());
  const t0 = Date.now();
  const starting = proc.start(30_000);
  const pid = proc.child!.pid!;
  s.pids.push(pid);
  await new Promise((r) => setTimeout(r, 300));
  process.kill(pid, 'SIGKILL');
  await assert.rejects(starting, /^Error: mxswitch agent was killed by SIGKILL during start-up/);
  assert.ok(Date.now() - t0 < 15_000, `rejected without waiting for the deadline (${Date.now() - t0} ms)`);
});

test('a test file over --test-timeout fails (does not hang) and its mxswitch child dies with it', async (t) => {
  const s = agentSetup(t);
  const smtpPort = await freePort();
  const pidFile = join(s.dir, 'agent.pid');
  const env = testEnv({ HANG_PID_FILE: pidFile, HANG_CONFIG: s.config(smtpPort), HANG_PORT: String(smtpPort) });
  delete env.NODE_TEST_CONTEXT; // a top-level runner of its own, not a subtest of this file
  const runner = spawn(
    process.execPath,
    ['--import', 'tsx', '--test', '--test-timeout=8000', join(REPO, 'test', 'cli', 'hang-fixture.ts')],
    { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  runner.stdout.on('data', (d: Buffer) => (out += d.toString()));
  runner.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => runner.once('close', (code) => resolve(code)));
  t.after(() => void runner.kill('SIGKILL'));
  await waitFor('the fixture wrote its agent PID', () => existsSync(pidFile) && readFileSync(pidFile, 'utf8') !== '', 30_000).catch((err: Error) => {
    throw new Error(`${err.message}; runner output:\n${out}`);
  });
  const pid = Number(readFileSync(pidFile, 'utf8'));
  s.pids.push(pid);
  assert.ok(alive(pid), 'the agent runs while the fixture hangs');
  let limit: NodeJS.Timeout | undefined;
  const code = await Promise.race([exited, new Promise<string>((r) => (limit = setTimeout(() => r('still running after 60 s'), 60_000)))]);
  clearTimeout(limit);
  assert.equal(code, 1, `the runner fails the file; output:\n${out}`);
  assert.match(out, /test timed out after 8000ms/);
  await waitFor(`agent pid ${pid} gone with its test file`, () => !alive(pid), 5_000);
});

test("the developer's MXSWITCH_* variables do not reach a CLI or agent started by a test", async (t) => {
  const s = agentSetup(t);
  const [smtpPort, elsewhere, closed] = [await freePort(), await freePort(), await freePort()];
  const saved = { ...process.env };
  t.after(() => {
    for (const k of Object.keys(process.env)) if (k.startsWith('MXSWITCH_') && !(k in saved)) delete process.env[k];
  });
  // Would turn `queue ls` into a local-queue command, and move the agent to another port.
  process.env.MXSWITCH_DATA_DIR = '/nonexistent/developer-data-dir';
  process.env.MXSWITCH_SMTP_LISTEN = `127.0.0.1:${elsewhere}`;
  const r = await runCli(['queue', 'ls', '--controller', `127.0.0.1:${closed}`]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`^mxswitch: cannot reach controller at 127\\.0\\.0\\.1:${closed}`));
  const agent = new CliProcess(['agent', '--config', s.config(smtpPort)], smtpPort);
  const starting = agent.start(20_000);
  s.pids.push(agent.child!.pid!);
  await starting;
  assert.equal(await portOpen(elsewhere), false);
  await agent.kill('SIGTERM');
});

test('test helpers never wait without a limit: a hung check, a hung promise, a CLI that does not exit', async (t) => {
  const s = agentSetup(t);
  const never = new Promise<boolean>(() => undefined);
  let t0 = Date.now();
  await assert.rejects(waitFor('a check that never returns', () => never, 300), /timed out waiting for a check that never returns/);
  assert.ok(Date.now() - t0 < 5_000, `waitFor gave up ${Date.now() - t0} ms after a 300 ms limit`);
  await assert.rejects(within('a promise that never settles', never, 200), /timed out after 200 ms: a promise that never settles/);
  // runCli's limit (collect): the child is killed and gone when the promise rejects.
  const smtpPort = await freePort();
  const child = spawnCli(['agent', '--config', s.config(smtpPort)]);
  s.pids.push(child.pid!);
  await assert.rejects(collect(child, 3_000), /mxswitch did not exit within 3000 ms \(killed\)/);
  assert.equal(alive(child.pid!), false, `pid ${child.pid} is gone when collect() rejects`);
});

test('freePort hands out ports below the ephemeral range (where no outgoing connection can take one before the child binds it), each free, one after another', async () => {
  const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
  const ports = [await freePort(), await freePort(), await freePort()];
  assert.equal(new Set(ports).size, 3, ports.join(', '));
  for (const p of ports) {
    assert.ok(p >= 10_000 && p < low!, `port ${p} is not below the ephemeral range from ${low}`);
    assert.equal(await portOpen(p), false, `nothing listens on ${p}`);
  }
});
