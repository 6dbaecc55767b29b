// The CLI as a child process, without a controller: argument checks (exit 2, one line naming the argument,
// nothing sent), an unreachable controller (exit 1) and every command's --help.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { freePort, runCli, type CliResult } from '../helpers/process.js';

/** Runs `jobs` at most `n` at a time (spawning tsx is CPU-heavy). */
async function pool<T, R>(items: readonly T[], n: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!);
      }
    }),
  );
  return out;
}

function oneLine(r: CliResult): string {
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, `expected one line on stderr, got: ${JSON.stringify(r.stderr)}`);
  return lines[0]!;
}

describe('argument checks (exit 2 before contacting the controller)', () => {
  const cases: { args: string[]; names: RegExp; raw?: true }[] = [
    { args: ['route', 'set', 'bad..dom', 'smtp:[192.0.2.1]:25'], names: /^mxswitch: MATCH "bad\.\.dom"/ },
    { args: ['route', 'set', 'alice@', 'smtp:[192.0.2.1]:25'], names: /^mxswitch: MATCH "alice@"/ },
    { args: ['route', 'set', 'example.com', 'smtp:192.0.2.1'], names: /^mxswitch: TARGET "smtp:192\.0\.2\.1".*brackets/ },
    { args: ['route', 'set', 'example.com', 'mx.example.net'], names: /^mxswitch: TARGET "mx\.example\.net"/ },
    { args: ['route', 'set', 'example.com', 'smtp:[192.0.2.1]:99999'], names: /^mxswitch: TARGET .*port 99999/ },
    { args: ['route', 'set', 'example.com', 'smtp:[192.0.2.1]:25', '--expect-version', 'x'], names: /^mxswitch: --expect-version x:/ },
    { args: ['route', 'set', 'example.com', 'smtp:[192.0.2.1]:25', '--tls', 'maybe'], names: /--tls/ },
    { args: ['route', 'rm', 'not a domain'], names: /^mxswitch: MATCH "not a domain"/ },
    { args: ['hold', 'example.com', '--timeout', '5x'], names: /^mxswitch: --timeout 5x: not a duration/ },
    { args: ['hold', '-bad-.com'], names: /^mxswitch hold: unknown option '-bad-\.com'; see `mxswitch hold --help`/ },
    { args: ['release', 'example..com'], names: /^mxswitch: MATCH "example\.\.com"/ },
    { args: ['release', 'example.com', '--timeout', '0s'], names: /^mxswitch: --timeout 0s: must be more than 0/ },
    { args: ['switchover', 'example.com', '--to', 'nope'], names: /^mxswitch: --to "nope"/ },
    { args: ['switchover', 'example.com'], names: /--to/ },
    { args: ['switchover', 'example.com', '--to', 'smtp:[192.0.2.9]:25', '--timeout', '1 fortnight'], names: /^mxswitch: --timeout 1 fortnight: not a duration/ },
    { args: ['switchover', 'example.com', '--to', 'smtp:[192.0.2.9]:25', '--exclude', 'bad id'], names: /^mxswitch: --exclude "bad id"/ },
    { args: ['flush', 'x..y'], names: /^mxswitch: MATCH "x\.\.y"/ },
    { args: ['queue', 'ls', '--match', 'a..b'], names: /^mxswitch: --match "a\.\.b"/ },
    { args: ['queue', 'ls', '--limit', '0'], names: /^mxswitch: --limit 0:/ },
    { args: ['queue', 'ls', '--agent', 'mx-a', '--data-dir', '/tmp'], names: /--data-dir and --agent/ },
    { args: ['agent', 'rm', 'bad id'], names: /^mxswitch: ID "bad id"/ },
    { args: ['agent'], names: /--config FILE is required/, raw: true },
    { args: ['route', 'ls', '--controller', 'no-port-here:x'], names: /--controller no-port-here:x/ },
  ];

  test('a usage error is one line naming the command and its --help, exit 2 (not the whole help)', async () => {
    const cases: [string[], string][] = [
      [['route', 'sett'], "mxswitch route: unknown command 'sett' (Did you mean set?); see `mxswitch route --help`"],
      [['route', 'set'], "mxswitch route set: missing required argument 'match'; see `mxswitch route set --help`"],
      [['queue', 'ls', '--bogus'], "mxswitch queue ls: unknown option '--bogus'; see `mxswitch queue ls --help`"],
      [['frobnicate'], "mxswitch: unknown command 'frobnicate'; see `mxswitch --help`"],
    ];
    for (const [args, line] of cases) {
      const r = await runCli(args);
      assert.equal(r.code, 2, args.join(' '));
      assert.equal(r.stderr, `${line}\n`);
      assert.equal(r.stdout, '');
    }
  });

  test('bad MATCH / TARGET / durations / ids: exit 2 with one line naming the argument', async () => {
    const port = await freePort();
    const results = await pool(cases, 2, (c) => runCli(c.raw || c.args.includes('--controller') ? c.args : [...c.args, '--controller', `127.0.0.1:${port}`]));
    for (const [i, c] of cases.entries()) {
      const r = results[i]!;
      assert.equal(r.code, 2, `${c.args.join(' ')}: exit ${r.code}, stderr ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /cannot reach/, `${c.args.join(' ')} contacted the controller`);
      assert.match(r.stderr, c.names, c.args.join(' '));
      if (r.stderr.startsWith('mxswitch:')) oneLine(r);
    }
  });
});

describe('unreachable controller', () => {
  test('exit 1 with "cannot reach controller at HOST:PORT" on one line', async () => {
    const port = await freePort();
    const address = `127.0.0.1:${port}`;
    const commands = [['route', 'ls'], ['status', '--json'], ['hold', 'example.com'], ['queue', 'ls']];
    const results = await pool(commands, 2, (args) => runCli([...args, '--controller', address], { MXSWITCH_TOKEN: 'some-token' }));
    for (const [i, r] of results.entries()) {
      assert.equal(r.code, 1, `${commands[i]!.join(' ')}: ${r.stderr}`);
      assert.match(oneLine(r), new RegExp(`^mxswitch: cannot reach controller at ${address}: .*ECONNREFUSED`));
    }
  });

  test('MXSWITCH_CONTROLLER is the default address', async () => {
    const port = await freePort();
    const r = await runCli(['route', 'ls'], { MXSWITCH_CONTROLLER: `127.0.0.1:${port}` });
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`cannot reach controller at 127\\.0\\.0\\.1:${port}`));
  });

  test('--token-file that does not exist is a bad argument', async () => {
    const r = await runCli(['route', 'ls', '--token-file', '/nonexistent/token', '--controller', '127.0.0.1:1']);
    assert.equal(r.code, 2);
    assert.match(oneLine(r), /^mxswitch: --token-file \/nonexistent\/token: no such file/);
  });

  test('--cert without --key is a bad argument', async () => {
    const r = await runCli(['status', '--cert', '/tmp/c.pem', '--ca', '/tmp/ca.pem', '--controller', '127.0.0.1:1']);
    assert.equal(r.code, 2);
    assert.match(oneLine(r), /--cert and --key go together/);
  });
});

describe('--help', () => {
  const commands: { path: string[]; purpose: RegExp }[] = [
    { path: [], purpose: /Move a domain's mail/ },
    { path: ['agent'], purpose: /Run a relay agent/ },
    { path: ['agent', 'rm'], purpose: /Forget an agent/ },
    { path: ['controller'], purpose: /Run the controller/ },
    { path: ['route'], purpose: /routing table/ },
    { path: ['route', 'ls'], purpose: /List the routing table/ },
    { path: ['route', 'set'], purpose: /Create or replace the route/ },
    { path: ['route', 'rm'], purpose: /Remove the route/ },
    { path: ['hold'], purpose: /Coordinated hold/ },
    { path: ['release'], purpose: /Coordinated release/ },
    { path: ['switchover'], purpose: /Coordinated re-route/ },
    { path: ['flush'], purpose: /Deliver now/ },
    { path: ['operation'], purpose: /Coordinated operations/ },
    { path: ['operation', 'follow'], purpose: /Re-attach to an operation/ },
    { path: ['operation', 'show'], purpose: /Show one operation/ },
    { path: ['status'], purpose: /The fleet/ },
    { path: ['watch'], purpose: /Live health stream/ },
    { path: ['queue'], purpose: /Inspect and repair queues/ },
    { path: ['queue', 'ls'], purpose: /List queued messages/ },
    { path: ['queue', 'show'], purpose: /Show one message/ },
    { path: ['queue', 'shape'], purpose: /qshape for the fleet/ },
    { path: ['queue', 'rm'], purpose: /Delete a message/ },
    { path: ['queue', 'retry'], purpose: /due now/ },
    { path: ['queue', 'hold'], purpose: /Operator hold/ },
    { path: ['queue', 'release'], purpose: /Release operator holds/ },
  ];

  test('every command explains its purpose and exit status', async () => {
    const results = await pool(commands, 2, (c) => runCli([...c.path, '--help']));
    for (const [i, c] of commands.entries()) {
      const r = results[i]!;
      const name = `mxswitch ${c.path.join(' ')} --help`;
      assert.equal(r.code, 0, `${name}: ${r.stderr}`);
      assert.match(r.stdout, c.purpose, name);
      assert.match(r.stdout, /Exit status/, `${name} does not explain its exit status`);
    }
    // Waiting commands say what they wait for and how progress looks.
    for (const path of [['hold'], ['release'], ['switchover'], ['flush'], ['operation', 'follow']]) {
      const r = results[commands.findIndex((c) => c.path.join(' ') === path.join(' '))]!;
      assert.match(r.stdout, /Waits for:/, path.join(' '));
      assert.match(r.stdout, /Progress:.*acked/s, path.join(' '));
      assert.match(r.stdout, /--json/, path.join(' '));
      assert.match(r.stdout, /--controller/, path.join(' '));
    }
  });
});
