// The CLI as a child process against a scripted AdminService (test/cli/fake-admin.ts): token handling, request
// shapes, output (human, --json, NDJSON progress), exit codes of failed operations, watch and Ctrl-C.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FAKE_TOKEN, startFakeAdmin, type FakeAdmin } from './fake-admin.js';
import { collect, ndjson, runCli, spawnCli } from './run-cli.js';

let fake: FakeAdmin;
const env = () => ({ MXSWITCH_CONTROLLER: fake.address, MXSWITCH_TOKEN: FAKE_TOKEN });
const cli = (...args: string[]) => runCli(args, env());
const lastRequest = (method: string) => [...fake.requests].reverse().find((r) => r.method === method);

before(async () => {
  fake = await startFakeAdmin();
});
after(async () => {
  await fake.stop();
});

describe('token', () => {
  test('no token: exit 1, "controller refused the token"', async () => {
    const r = await runCli(['route', 'ls'], { MXSWITCH_CONTROLLER: fake.address });
    assert.equal(r.code, 1);
    assert.match(r.stderr.trim(), /^mxswitch: controller refused the token \(set MXSWITCH_TOKEN/);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  });

  test('wrong token: exit 1; --token-file is read and sent as a bearer token', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'mxs-cli-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const wrong = await runCli(['route', 'ls'], { MXSWITCH_CONTROLLER: fake.address, MXSWITCH_TOKEN: 'nope-nope' });
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /controller refused the token/);
    const file = join(dir, 'token');
    writeFileSync(file, `${FAKE_TOKEN}\n`);
    const ok = await runCli(['route', 'ls', '--token-file', file], { MXSWITCH_CONTROLLER: fake.address, MXSWITCH_TOKEN: 'ignored-when-file-given' });
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(lastRequest('ListRoutes')!.token, FAKE_TOKEN);
  });
});

describe('routes', () => {
  test('route set / ls / rm: canonical arguments sent, --json shapes, compare-and-set refusal', async () => {
    const set = await cli('route', 'set', 'Example.COM', 'smtp:[192.0.2.10]', '--tls', 'required', '--json');
    assert.equal(set.code, 0, set.stderr);
    const setDoc = JSON.parse(set.stdout) as Record<string, unknown>;
    assert.deepEqual(setDoc, { match: 'example.com', target: 'smtp:[192.0.2.10]:25', hold: false, tls: 'required', verify: 'none', version: fake.version });
    const req = lastRequest('SetRoute')!.request as Record<string, unknown>;
    assert.equal(req.match, 'example.com');
    assert.equal(req.target, 'smtp:[192.0.2.10]:25');
    assert.equal(req.tls, 'required');
    assert.match(String(req.actor), /@/);

    const held = await cli('route', 'set', '.example.org', 'smtp:mx.example.net:2525', '--hold');
    assert.equal(held.code, 0, held.stderr);
    assert.match(held.stdout, /route \.example\.org -> smtp:mx\.example\.net:2525 \(held\) set: table version \d+/);
    assert.equal((lastRequest('SetRoute')!.request as { tls: string }).tls, '', '--tls may (default) is sent as ""');

    const ls = await cli('route', 'ls', '--json');
    assert.equal(ls.code, 0, ls.stderr);
    const doc = JSON.parse(ls.stdout) as { version: number; routes: unknown[] };
    assert.equal(doc.version, fake.version);
    assert.deepEqual(doc.routes, [
      { match: 'example.com', target: 'smtp:[192.0.2.10]:25', hold: false, tls: 'required', verify: 'none' },
      { match: '.example.org', target: 'smtp:mx.example.net:2525', hold: true, tls: 'may', verify: 'none' },
    ]);
    const human = await cli('route', 'ls');
    assert.match(human.stdout, /^route table version \d+\nMATCH\s+TARGET\s+HOLD\s+TLS\s+VERIFY\n/);
    assert.match(human.stdout, /\.example\.org\s+smtp:mx\.example\.net:2525\s+held\s+may/);

    const stale = await cli('route', 'rm', 'example.com', '--expect-version', '1');
    assert.equal(stale.code, 1);
    assert.match(stale.stderr.trim(), /^mxswitch: route table is at version \d+, not 1$/);

    const rm = await cli('route', 'rm', 'example.com', '--expect-version', String(fake.version), '--json');
    assert.equal(rm.code, 0, rm.stderr);
    assert.deepEqual(JSON.parse(rm.stdout), { match: 'example.com', removed: true, version: fake.version });

    const gone = await cli('route', 'rm', 'example.com');
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /no route for example\.com/);
  });
});

describe('coordinated operations', () => {
  test('hold: plain progress lines naming acked and pending agents, exit 0 when done', async () => {
    const r = await cli('hold', 'Example.com', '--timeout', '30s', '--exclude', 'mx-c,mx-d', '--exclude', 'mx-e');
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, /\x1b|\r/, 'no escape codes when stdout is not a TTY');
    const lines = r.stdout.trim().split('\n');
    assert.match(lines[0]!, /hold .*acked 1\/2 \(mx-a\).*pending: mx-b/);
    assert.match(lines[1]!, /acked 2\/2 \(mx-a, mx-b\)/);
    assert.match(lines.at(-1)!, /^hold example\.com: done, verified on 2 agent\(s\): mx-a, mx-b/);
    const req = lastRequest('Hold')!.request as { match: string; timeoutMs: number; exclude: string[] };
    assert.equal(req.match, 'example.com');
    assert.equal(req.timeoutMs, 30_000);
    assert.deepEqual(req.exclude, ['mx-c', 'mx-d', 'mx-e']);
  });

  test('a failed operation: exit 1, one line on stderr naming the agent', async () => {
    const r = await cli('release', 'fail.example');
    assert.equal(r.code, 1);
    const line = r.stderr.trim();
    assert.equal(line.split('\n').length, 1, r.stderr);
    assert.match(line, /^mxswitch: release failed at step hold: timed out waiting for mx-b/);
  });

  test('refused by the controller (FAILED_PRECONDITION): exit 1 with the server message', async () => {
    const r = await cli('switchover', 'busy.example', '--to', 'smtp:[192.0.2.20]:25');
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim(), 'mxswitch: expected agent mx-b is disconnected; use --exclude mx-b to proceed without it');
  });

  test('stream ends while the operation still runs: exit 1 with a re-attach hint', async () => {
    const r = await cli('hold', 'cut.example');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /still running; re-attach with: mxswitch operation follow op-1/);
  });

  test('switchover --wait-drained --json: NDJSON progress then a result with per-agent drain', async () => {
    const r = await cli('switchover', 'example.com', '--to', 'smtp:[192.0.2.20]', '--wait-drained', '--json');
    assert.equal(r.code, 0, r.stderr);
    const docs = ndjson(r.stdout);
    const progress = docs.filter((d) => d.type === 'progress');
    const results = docs.filter((d) => d.type === 'result');
    assert.ok(progress.length >= 8, `${progress.length} progress objects`);
    assert.equal(results.length, 1);
    assert.equal(docs.at(-1)!.type, 'result');
    const p0 = progress[0] as { operation: { kind: string; step: string }; acked: string[]; pending: string[]; waitingVersion: number };
    assert.equal(p0.operation.kind, 'switchover');
    assert.deepEqual(p0.pending, ['mx-b']);
    const result = results[0] as { ok: boolean; operation: { state: string }; drain: { agentId: string; delivered: number }[] };
    assert.equal(result.ok, true);
    assert.equal(result.operation.state, 'done');
    assert.deepEqual(
      result.drain.map((d) => [d.agentId, d.delivered]),
      [
        ['mx-a', 12],
        ['mx-b', 3],
      ],
    );
    const req = lastRequest('Switchover')!.request as { target: string; waitDrained: boolean };
    assert.equal(req.target, 'smtp:[192.0.2.20]:25');
    assert.equal(req.waitDrained, true);
  });

  test('failed operation with --json: the result object says ok:false, exit 1', async () => {
    const r = await cli('hold', 'fail.example', '--json');
    assert.equal(r.code, 1);
    const result = ndjson(r.stdout).at(-1) as { type: string; ok: boolean; error: string; failed: string[] };
    assert.equal(result.type, 'result');
    assert.equal(result.ok, false);
    assert.match(result.error, /mx-b/);
    assert.deepEqual(result.failed, ['mx-b: timed out']);
  });

  test('flush without MATCH flushes all routes; operation follow / show', async () => {
    const f = await cli('flush');
    assert.equal(f.code, 0, f.stderr);
    assert.equal((lastRequest('Flush')!.request as { match: string }).match, '');
    const follow = await cli('operation', 'follow', 'op-1');
    assert.equal(follow.code, 0, follow.stderr);
    assert.match(follow.stdout, /hold example\.com: done, verified on 2 agent\(s\)/);
    const unknown = await cli('operation', 'follow', 'op-404');
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no operation op-404/);
    const show = await cli('operation', 'show', 'op-1', '--json');
    assert.equal(show.code, 0, show.stderr);
    assert.equal((JSON.parse(show.stdout) as { state: string }).state, 'done');
  });
});

describe('fleet state', () => {
  test('status: table of agents, exit 1 naming the agents that are not converged', async () => {
    const r = await cli('status');
    assert.equal(r.code, 1);
    assert.match(r.stdout, /^route table version \d+/);
    assert.match(r.stdout, /AGENT\s+REGION\s+STATE\s+APPLIED\s+QUEUE\s+HELD\s+DEFERRED\s+OLDEST\s+DELIV\/DEFER\/BOUNCE\s+VERSION\s+LAST ERROR/);
    assert.match(r.stdout, /mx-a\s+eu\s+connected\s+v\d+\s+3\s+1\s+2\s+90s\s+7\/2\/1/);
    assert.match(r.stdout, /mx-b\s+us\s+lost .*\(behind\).*heartbeat timeout/);
    assert.match(r.stdout, /running operations:\n\s+op-9\s+hold example\.com\s+running/);
    assert.match(r.stderr.trim(), /^mxswitch: fleet not converged on v\d+: mx-b lost/);
    const j = await cli('status', '--json');
    assert.equal(j.code, 1);
    const doc = JSON.parse(j.stdout) as { converged: boolean; problems: string[]; agents: { id: string }[]; operations: unknown[] };
    assert.equal(doc.converged, false);
    assert.deepEqual(
      doc.agents.map((a) => a.id),
      ['mx-a', 'mx-b'],
    );
    assert.equal(doc.problems.length, 1);
  });

  test('watch: one line per event; Ctrl-C exits 0', async () => {
    for (const json of [false, true]) {
      const child = spawnCli(['watch', ...(json ? ['--json'] : [])], env());
      let seen = '';
      await new Promise<void>((resolve, reject) => {
        child.stdout!.on('data', (d: Buffer) => {
          seen += d.toString();
          if (seen.split('\n').length > 3) resolve();
        });
        child.on('exit', () => reject(new Error(`watch exited early: ${seen}`)));
      });
      const done = collect(child);
      child.kill('SIGINT');
      const r = await done;
      assert.equal(r.code, 0, r.stderr);
      const lines = seen.trim().split('\n');
      if (json) {
        assert.deepEqual(
          ndjson(seen).map((d) => d.type),
          ['routesChanged', 'agent', 'operation'],
        );
      } else {
        assert.match(lines[0]!, /^\d{4}-\d\d-\d\dT.* routes now at version \d+$/);
        assert.match(lines[1]!, / agent mx-a connected v\d+/);
        assert.match(lines[2]!, / operation op-1\s+hold example\.com\s+running/);
      }
    }
  });

  test('agent rm ID: RemoveAgent; unknown agent exit 1', async () => {
    const ok = await cli('agent', 'rm', 'mx-b', '--json');
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(JSON.parse(ok.stdout), { removed: 'mx-b' });
    assert.equal((lastRequest('RemoveAgent')!.request as { id: string }).id, 'mx-b');
    const bad = await cli('agent', 'rm', 'mx-zz');
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /no agent mx-zz/);
  });

  test('fleet-wide queue ls: results per agent, exit 1 naming the agent that failed', async () => {
    const r = await cli('queue', 'ls', '--match', 'Example.com', '--json');
    assert.equal(r.code, 1);
    const doc = JSON.parse(r.stdout) as { results: { agent: string; ok: boolean; error?: string; result?: { entries: { id: string }[] } }[] };
    assert.deepEqual(
      doc.results.map((x) => [x.agent, x.ok]),
      [
        ['mx-a', true],
        ['mx-b', false],
      ],
    );
    assert.equal(doc.results[0]!.result!.entries[0]!.id, 'Q1');
    assert.match(r.stderr.trim(), /^mxswitch: queue ls failed on mx-b: agent did not answer/);
    const req = lastRequest('QueueCommand')!.request as { agentId: string; kind: { $case: string; value: { match: string } } };
    assert.equal(req.agentId, '');
    assert.equal(req.kind.$case, 'queueList');
    assert.equal(req.kind.value.match, 'example.com');

    const one = await cli('queue', 'retry', 'Q1', '--agent', 'mx-a');
    assert.equal(one.code, 0, one.stderr);
    assert.equal(one.stdout, 'mx-a: 1 recipient of 1 message made due now\n');
    const human = await cli('queue', 'ls', '--agent', 'mx-a');
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /^== mx-a\nID\s+AGE.*\n.*\n-- 1 KB in 1 message, 1 recipient; 2 more not shown \(--limit\)\n$/);
  });
});
