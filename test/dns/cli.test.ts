import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { resolversFrom } from '../../control/cli/commands/dns.js';
import { collect, spawnCli, type CliResult } from '../helpers/process.js';
import { ZoneServer } from './zone-server.js';

/** Runs the real `mxswitch dns ...` as a child process (asynchronously, so the DNS servers in this process keep answering). */
function dnsCli(args: string[], onStdout?: (text: string) => void): Promise<CliResult> {
  const child = spawnCli(['dns', ...args]);
  let stdout = '';
  child.stdout!.on('data', (d: Buffer) => {
    stdout += d.toString();
    onStdout?.(stdout);
  });
  return collect(child, 30_000);
}

function zone(z: ZoneServer): ZoneServer {
  return z
    .zone('example.test')
    .set('example.test', 'NS', [{ ns: 'ns1.example.test' }], 3600)
    .a('ns1.example.test', ['127.0.0.1'])
    .a('mx1.new.test', ['127.0.0.21'])
    .a('mx.old.test', ['127.0.0.20']);
}

describe('mxswitch dns check (CLI)', () => {
  const fresh = zone(new ZoneServer()).mx('example.test', [[10, 'mx1.new.test']], 300);
  const stale = zone(new ZoneServer()).mx('example.test', [[10, 'mx.old.test']], 90);
  const dead = zone(new ZoneServer());
  const auth = zone(new ZoneServer()).mx('example.test', [[10, 'mx1.new.test']], 3600);
  const all = [fresh, stale, dead, auth];
  const base = () => ['check', 'example.test', '--expect', 'mx1.new.test', '--timeout', '400ms', '--authoritative-port', String(auth.port)];

  before(async () => {
    for (const s of all) await s.start();
    dead.silent = true;
    auth.authoritative = true;
  });
  after(async () => {
    for (const s of all) await s.stop();
  });

  test('propagated: exit 0, JSON with the per-resolver view', async () => {
    const r = await dnsCli([...base(), '--resolver', fresh.resolver, '--resolver', dead.resolver, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { verdict: string; resolvers: { status: string; matches: boolean }[]; authoritative: { zone: string }; safeInSeconds: number };
    assert.equal(out.verdict, 'propagated');
    assert.deepEqual(
      out.resolvers.map((x) => [x.status, x.matches]),
      [
        ['ok', true],
        ['timeout', false],
      ],
    );
    assert.equal(out.authoritative.zone, 'example.test');
    assert.equal(out.safeInSeconds, 3600);
    assert.equal(r.stderr, '');
  });

  test('partial: exit 1 with a one-line reason; the human table shows who is stale', async () => {
    const r = await dnsCli([...base(), '--resolver', `${fresh.resolver},${stale.resolver}`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^mxswitch: MX of example\.test not propagated \(partial: 2 of 3 answering servers have the expected MX set\); safe after \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ\n$/);
    assert.match(r.stdout, /^RESOLVER\s+STATUS\s+TTL\s+MATCH\s+MX$/m);
    assert.match(r.stdout, new RegExp(`^${stale.resolver.replace(/\./g, '\\.')}\\s+ok\\s+90s\\s+NO\\s+10 mx\\.old\\.test \\(127\\.0\\.0\\.20\\)$`, 'm'));
    assert.match(r.stdout, /^ns1\.example\.test 127\.0\.0\.1:\d+\s+ok\s+3600s\s+yes/m);
    assert.match(r.stdout, /^safe after .* \(in 90s\): .* may serve its current MX set for 90s more$/m);
  });

  test('bad arguments: exit 2 naming the argument', async () => {
    const noExpect = await dnsCli(['check', 'example.test', '--resolver', fresh.resolver]);
    assert.equal(noExpect.code, 2);
    assert.match(noExpect.stderr, /^mxswitch: --expect: /);
    const badResolver = await dnsCli([...base(), '--resolver', 'dns.google']);
    assert.equal(badResolver.code, 2);
    assert.match(badResolver.stderr, /^mxswitch: --resolver: "dns\.google" is not IP\[:PORT\]/);
    const badTimeout = await dnsCli([...base(), '--resolver', fresh.resolver, '--timeout', 'soon']);
    assert.equal(badTimeout.code, 2);
    assert.match(badTimeout.stderr, /^mxswitch: --timeout: "soon" is not a duration/);
    const badDomain = await dnsCli(['check', 'not a domain', '--expect', 'mx1.new.test', '--resolver', fresh.resolver]);
    assert.equal(badDomain.code, 2);
    assert.match(badDomain.stderr, /^mxswitch: DOMAIN: /);
    const unknownOption = await dnsCli([...base(), '--resolver', fresh.resolver, '--bogus']);
    assert.equal(unknownOption.code, 2);
  });

  test('--watch re-checks until propagated (NDJSON progress, then the result)', async () => {
    let flipped = false;
    const r = await dnsCli([...base(), '--resolver', fresh.resolver, '--resolver', stale.resolver, '--watch', '--interval', '1s', '--json'], (out) => {
      // After the first progress report the stale resolver's cache "expires" and it serves the new set.
      if (!flipped && out.includes('"type":"progress"')) {
        flipped = true;
        stale.mx('example.test', [[10, 'mx1.new.test']], 300);
      }
    });
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string; verdict: string; check?: number; checks?: number });
    assert.ok(lines.length >= 2);
    assert.deepEqual([lines[0]!.type, lines[0]!.verdict], ['progress', 'partial']);
    const last = lines.at(-1)!;
    assert.deepEqual([last.type, last.verdict], ['result', 'propagated']);
    assert.equal(last.checks, lines.length);
    stale.mx('example.test', [[10, 'mx.old.test']], 90);
  });

  test('--watch without a terminal prints one plain progress line per check', async () => {
    let flipped = false;
    const r = await dnsCli([...base(), '--resolver', stale.resolver, '--no-authoritative', '--watch', '--interval', '1s'], (out) => {
      if (!flipped && out.includes('check 1')) {
        flipped = true;
        stale.mx('example.test', [[10, 'mx1.new.test']], 300);
      }
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^\d\d:\d\d:\d\d check 1: not-propagated, 0\/1 match; safe after \d\d:\d\d:\d\dZ \(in 90s\); old: 127\.0\.0\.1:\d+ \(TTL 90s\)$/m);
    assert.doesNotMatch(r.stdout, /\x1b/, 'no escape codes');
    assert.match(r.stdout, /^propagated: 1 of 1 answering servers have the expected MX set$/m);
    stale.mx('example.test', [[10, 'mx.old.test']], 90);
  });

  test('resolver list: --resolver, else env MXSWITCH_DNS_RESOLVERS, else the system resolver plus public ones (no query is sent here)', () => {
    assert.deepEqual(resolversFrom(['127.0.0.1:5353', '[::1]:5300', '127.0.0.1:5353', '127.0.0.9'], {}), [
      { name: '127.0.0.1:5353', address: '127.0.0.1', port: 5353 },
      { name: '[::1]:5300', address: '::1', port: 5300 },
      { name: '127.0.0.9', address: '127.0.0.9', port: 53 },
    ]);
    assert.deepEqual(resolversFrom(undefined, { MXSWITCH_DNS_RESOLVERS: '127.0.0.1:5353, 127.0.0.2' }).map((r) => r.name), ['127.0.0.1:5353', '127.0.0.2']);
    const defaults = resolversFrom(undefined, {});
    assert.deepEqual(
      defaults.filter((r) => r.name !== 'system').map((r) => r.address),
      ['1.1.1.1', '8.8.8.8', '9.9.9.9', '208.67.222.222'],
    );
    assert.throws(() => resolversFrom(['127.0.0.1:99999'], {}), /--resolver: "127\.0\.0\.1:99999" has port 99999 outside 1-65535/);
  });
});
