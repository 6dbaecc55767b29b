import assert from 'node:assert/strict';
import { within } from '../helpers/agent.js';
import { after, before, describe, test } from 'node:test';
import { renderCheck } from '../../control/cli/commands/dns.js';
import { checkMx, parseExpect } from '../../shared/dns/check.js';
import { parseServer, query, type Resolver } from '../../shared/dns/query.js';
import { ZoneServer } from './zone-server.js';

// Every server here listens on 127.0.0.1: several "resolvers" with different views of example.test, and one
// authoritative server the NS records point at (asked on its own port through `authoritativePort`).

const NEW: [number, string][] = [
  [10, 'mx1.new.test'],
  [20, 'mx2.new.test'],
];
const EXPECT = ['mx1.new.test', 'mx2.new.test'];

function common(z: ZoneServer): ZoneServer {
  return z
    .zone('example.test')
    .set('example.test', 'NS', [{ ns: 'ns1.example.test' }], 3600)
    .a('ns1.example.test', ['127.0.0.1'])
    .a('mx1.new.test', ['127.0.0.21'])
    .a('mx2.new.test', ['127.0.0.22'])
    .a('mx.old.test', ['127.0.0.20'])
    .a('www.example.test', ['127.0.0.30']);
}

const asResolver = (z: ZoneServer, name: string): Resolver => ({ name, ...parseServer(z.resolver) });

describe('dns check', () => {
  const fresh = common(new ZoneServer()).mx('example.test', NEW, 300);
  const fresh2 = common(new ZoneServer()).mx('example.test', NEW, 250);
  const stale = common(new ZoneServer()).mx('example.test', [[10, 'mx.old.test']], 120);
  const down = common(new ZoneServer());
  const auth = common(new ZoneServer()).mx('example.test', NEW, 3600);
  const servers = [fresh, fresh2, stale, down, auth];
  // Every server here answers at once except `down`: a generous budget costs nothing where they answer (the
  // answer ends the wait) and keeps a loaded machine's slow answer from counting as a timeout.
  const opts = () => ({ timeoutMs: 10_000, authoritativePort: auth.port });
  // With `down` in the set, its budget is what the check waits for: short, yet twice 500 ms for the others.
  const withDown = () => ({ ...opts(), timeoutMs: 1000 });

  before(async () => {
    for (const s of servers) await s.start();
    down.silent = true;
    auth.authoritative = true;
  });
  after(async () => {
    for (const s of servers) await s.stop();
  });

  test('every resolver and the authoritative server have the new set: propagated, safe now', async () => {
    const c = await checkMx('Example.Test.', EXPECT, [asResolver(fresh, 'a'), asResolver(fresh2, 'b')], opts());
    assert.equal(c.verdict, 'propagated');
    assert.equal(c.domain, 'example.test');
    assert.deepEqual(
      c.resolvers.map((r) => [r.resolver.name, r.status, r.ttlSeconds, r.matches]),
      [
        ['a', 'ok', 300, true],
        ['b', 'ok', 250, true],
      ],
    );
    assert.deepEqual(c.resolvers[0]!.mx, [
      { preference: 10, host: 'mx1.new.test', addresses: ['127.0.0.21'] },
      { preference: 20, host: 'mx2.new.test', addresses: ['127.0.0.22'] },
    ]);
    assert.equal(c.authoritative.status, 'ok');
    assert.equal(c.authoritative.zone, 'example.test');
    assert.equal(c.authoritative.ttlSeconds, 3600);
    assert.deepEqual(
      c.authoritative.servers.map((s) => [s.nameserver, s.resolver.address, s.status, s.matches]),
      [['ns1.example.test', '127.0.0.1', 'ok', true]],
    );
    assert.ok(auth.queries.some((q) => q.name === 'example.test' && q.type === 'MX' && q.rd === 0), 'authoritative server asked without recursion');
    assert.equal(c.matching, 3);
    assert.equal(c.answering, 3);
    assert.equal(c.safeInSeconds, 0);
    assert.equal(c.safeAfter, c.checkedAt);
  });

  test('a resolver with the old set: partial, safe after its remaining TTL', async () => {
    const c = await checkMx('example.test', EXPECT, [asResolver(fresh, 'a'), asResolver(stale, 'old')], opts());
    assert.equal(c.verdict, 'partial');
    const old = c.resolvers[1]!;
    assert.deepEqual([old.status, old.matches, old.ttlSeconds], ['ok', false, 120]);
    assert.deepEqual(old.mx, [{ preference: 10, host: 'mx.old.test', addresses: ['127.0.0.20'] }]);
    assert.equal(c.safeInSeconds, 120);
    assert.equal(Date.parse(c.safeAfter) - Date.parse(c.checkedAt), 120_000);
    assert.match(c.safeReason, /old .*120s/);
  });

  test('only old answers: not-propagated', async () => {
    const c = await checkMx('example.test', EXPECT, [asResolver(stale, 'old')], { ...opts(), authoritative: false });
    assert.equal(c.verdict, 'not-propagated');
    assert.equal(c.authoritative.status, 'skipped');
    assert.equal(c.safeInSeconds, 120);
  });

  test('a resolver that never answers is a timeout, not a mismatch; it waits a full authoritative TTL', async () => {
    // Behaviour: the check gives up on a silent resolver by itself, after its tries (asserted below), and never
    // hangs: a generous bound. How close to its budget it ends is a timing target, not asserted here.
    const c = await within('the check to give up on the silent resolver', checkMx('example.test', EXPECT, [asResolver(fresh, 'a'), asResolver(down, 'dead')], withDown()), 30_000);
    const dead = c.resolvers[1]!;
    assert.equal(dead.status, 'timeout');
    assert.equal(dead.matches, false);
    assert.equal(dead.ttlSeconds, null);
    assert.match(dead.detail ?? '', /no answer after 2 tries/);
    assert.equal(c.verdict, 'propagated', 'every answering server matches');
    assert.equal(c.unanswered, 1);
    assert.equal(c.answering, 2);
    assert.equal(c.safeInSeconds, 3600, 'its cache may hold the old set for the authoritative TTL');
    assert.ok(down.queries.filter((q) => q.type === 'MX').length >= 2, 'retried');

    const noAuth = await checkMx('example.test', EXPECT, [asResolver(fresh, 'a'), asResolver(down, 'dead')], { ...withDown(), authoritative: false });
    assert.equal(noAuth.safeInSeconds, 300, 'without the authoritative TTL, the largest TTL seen stands in');

    const allDown = await checkMx('example.test', EXPECT, [asResolver(down, 'dead')], { ...withDown(), authoritative: false });
    assert.equal(allDown.verdict, 'not-propagated', 'no answer at all is not propagation');
    assert.equal(allDown.safeKnown, false, 'nothing answered: no "safe now"');
    assert.equal(allDown.safeReason, 'no resolver or authoritative server answered');
    assert.match(renderCheck(allDown), /\nno answer: cannot tell when it is safe \(no resolver or authoritative server answered\)$/);
    assert.equal(c.safeKnown, true);
  });

  test('authoritative server not updated yet: partial even when every resolver matches', async () => {
    auth.mx('example.test', [[10, 'mx.old.test']], 3600);
    try {
      const c = await checkMx('example.test', EXPECT, [asResolver(fresh, 'a')], opts());
      assert.equal(c.verdict, 'partial');
      assert.equal(c.authoritative.servers[0]!.matches, false);
    } finally {
      auth.mx('example.test', NEW, 3600);
    }
  });

  test('NXDOMAIN, NODATA and SERVFAIL are told apart', async () => {
    const r = asResolver(fresh, 'a');
    const nx = await checkMx('nope.example.test', ['mx1.new.test'], [r], { ...opts(), authoritative: false });
    assert.equal(nx.resolvers[0]!.status, 'nxdomain');
    assert.equal(nx.resolvers[0]!.ttlSeconds, 60, 'negative TTL from the SOA');
    assert.equal(nx.verdict, 'not-propagated');

    const nodata = await checkMx('www.example.test', ['mx1.new.test'], [r], { ...opts(), authoritative: false });
    assert.equal(nodata.resolvers[0]!.status, 'nodata');

    fresh.servfail.add('broken.example.test');
    const sf = await checkMx('broken.example.test', ['mx1.new.test'], [r], { ...opts(), authoritative: false });
    assert.equal(sf.resolvers[0]!.status, 'servfail');
    assert.equal(sf.unanswered, 1);
    assert.equal(sf.verdict, 'not-propagated');
  });

  test('a subdomain finds its zone through the SOA of the NODATA answer', async () => {
    fresh.mx('sub.example.test', NEW, 300);
    auth.mx('sub.example.test', NEW, 900);
    const c = await checkMx('sub.example.test', EXPECT, [asResolver(fresh, 'a')], opts());
    assert.equal(c.authoritative.zone, 'example.test');
    assert.equal(c.authoritative.ttlSeconds, 900);
    assert.equal(c.verdict, 'propagated');
  });

  test('a large MX set is truncated over UDP and fetched over TCP', async () => {
    const many: [number, string][] = Array.from({ length: 40 }, (_, i) => [i, `mx${i}.many-hosts-for-truncation.test`]);
    fresh.mx('big.example.test', many, 300);
    const raw = await query(parseServer(fresh.resolver), 'big.example.test', 'MX', { timeoutMs: 1000 });
    assert.equal(raw.transport, 'tcp');
    assert.equal(raw.records.length, 40);
    const c = await checkMx('big.example.test', many.map(([, h]) => h), [asResolver(fresh, 'a')], { ...opts(), authoritative: false });
    assert.equal(c.verdict, 'propagated');
    assert.equal(c.resolvers[0]!.transport, 'tcp');
  });

  test('--expect items: HOST or PREFERENCE:HOST', async () => {
    assert.deepEqual(parseExpect('MX1.New.Test.'), { host: 'mx1.new.test' });
    assert.deepEqual(parseExpect('10:mx1.new.test'), { host: 'mx1.new.test', preference: 10 });
    assert.throws(() => parseExpect('not a host'));
    const r = [asResolver(fresh, 'a')];
    const good = await checkMx('example.test', ['10:mx1.new.test', '20:mx2.new.test'], r, { ...opts(), authoritative: false });
    assert.equal(good.verdict, 'propagated');
    const wrongPref = await checkMx('example.test', ['20:mx1.new.test', 'mx2.new.test'], r, { ...opts(), authoritative: false });
    assert.equal(wrongPref.verdict, 'not-propagated');
    const subset = await checkMx('example.test', ['mx1.new.test'], r, { ...opts(), authoritative: false });
    assert.equal(subset.verdict, 'not-propagated', 'the set must be exactly the expected one');
  });
});
