import assert from 'node:assert/strict';
import { test } from 'node:test';
import { smtpClient, startAgent, testMessage, waitFor } from '../helpers/agent.js';
import { RawSmtp } from '../helpers/raw-smtp.js';
import { Sink } from '../helpers/sink.js';

type Started = Awaited<ReturnType<typeof startAgent>>;

async function get(a: Started, path: string): Promise<{ status: number; type: string; body: string }> {
  const res = await fetch(`http://127.0.0.1:${a.agent.httpPort}${path}`);
  return { status: res.status, type: res.headers.get('content-type') ?? '', body: await res.text() };
}

/** Every sample of a Prometheus text exposition, keyed by `name` or `name{labels}`. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    assert.ok(m, `not a Prometheus sample line: ${line}`);
    out.set(m[1]!, Number(m[2]));
  }
  return out;
}

/** waitFor, and on a timeout the agent's queue (states, attempts, last replies) in the error. */
async function waitForQueue(a: Started, what: string, cond: () => boolean, timeoutMs?: number): Promise<void> {
  await waitFor(what, cond, timeoutMs).catch((err: Error) => {
    const rows = a.agent.queue.allRecipients().map((r) => `${r.rcpt} ${r.state} attempts=${r.attempts} ${r.lastReply ?? ''}`);
    throw new Error(`${err.message}; queue: ${JSON.stringify(a.agent.queue.stats().byState)} ${rows.join('; ')}`);
  });
}

const COUNTERS = {
  accepted: 'mxswitch_agent_messages_accepted_total',
  rejected: 'mxswitch_agent_smtp_rejected_total',
  delivered: 'mxswitch_agent_delivered_total',
  deferred: 'mxswitch_agent_deferred_total',
  bounced: 'mxswitch_agent_bounced_total',
} as const;

function counters(s: Map<string, number>): Record<keyof typeof COUNTERS, number | undefined> {
  return Object.fromEntries(Object.entries(COUNTERS).map(([k, name]) => [k, s.get(name)])) as Record<keyof typeof COUNTERS, number | undefined>;
}

function queueGauge(s: Map<string, number>): Record<string, number | undefined> {
  return Object.fromEntries(['queued', 'deferred', 'inflight', 'held'].map((st) => [st, s.get(`mxswitch_agent_queue_recipients{state="${st}"}`)]));
}

/**
 * Scrapes until the counters read `expected` (the registry caches its snapshot for 250 ms) and returns that
 * scrape; when they never do, fails with the difference of the last scrape.
 */
async function scrapeCounters(a: Started, expected: Record<keyof typeof COUNTERS, number>): Promise<Map<string, number>> {
  let last = new Map<string, number>();
  const same = () => JSON.stringify(counters(last)) === JSON.stringify(expected);
  await waitFor('the expected counters', async () => same() || ((last = samples((await get(a, '/metrics')).body)), same()), 5_000).catch(() => undefined);
  assert.deepEqual(counters(last), expected);
  return last;
}

test('/metrics: counters and queue gauges after accepting, refusing, deferring, bouncing and delivering mail; /healthz', async () => {
  const sink = await new Sink().start();
  let slowRefusals = 0;
  sink.rcptPolicy = (rcpt) => {
    if (rcpt === 'gone@example.com') return { code: 550, message: '5.1.1 no such user' };
    // Two temporary refusals for slow@, then accepted: exactly two deferrals.
    if (rcpt === 'slow@example.com' && slowRefusals < 2) return (slowRefusals++, { code: 451, message: '4.2.0 greylisted' });
    if (rcpt === 'later@other.test') return { code: 451, message: '4.2.0 try later' };
    return undefined;
  };
  const a = await startAgent({
    http: { listen: '127.0.0.1:0' },
    // Three quick tries, then an hour: later@other.test ends up deferred and stays so while the test reads the gauges.
    retry: { intervals: ['100ms', '100ms', '1h'], maxAge: '1h', jitter: 0 },
    routes: [
      { match: 'example.com', target: sink.target },
      { match: 'other.test', target: sink.target },
      { match: 'sender.test', target: sink.target },
    ],
  });
  try {
    assert.ok(a.agent.httpPort > 0);
    const first = await get(a, '/metrics');
    assert.equal(first.status, 200);
    assert.match(first.type, /^text\/plain; version=0\.0\.4/);
    for (const name of Object.values(COUNTERS)) assert.match(first.body, new RegExp(`^# TYPE ${name} counter$`, 'm'));
    for (const name of ['mxswitch_agent_queue_recipients', 'mxswitch_agent_queue_oldest_seconds', 'mxswitch_agent_route_table_version', 'mxswitch_agent_controller_connected', 'mxswitch_agent_delivering']) {
      assert.match(first.body, new RegExp(`^# TYPE ${name} gauge$`, 'm'));
    }
    const s0 = samples(first.body);
    assert.deepEqual(counters(s0), { accepted: 0, rejected: 0, delivered: 0, deferred: 0, bounced: 0 });
    assert.deepEqual(queueGauge(s0), { queued: 0, deferred: 0, inflight: 0, held: 0 });
    assert.equal(s0.get('mxswitch_agent_queue_oldest_seconds'), 0);
    assert.equal(s0.get('mxswitch_agent_route_table_version'), 0);
    assert.equal(s0.get('mxswitch_agent_controller_connected'), 0);
    assert.equal(s0.get('mxswitch_agent_delivering'), 1);

    // Phase 1: 6 messages accepted (7 recipients), 2 recipients refused at RCPT.
    const c = await RawSmtp.open(a.port);
    assert.match(await c.command('EHLO client.test'), /^250/);
    assert.match(await c.command('MAIL FROM:<sender@sender.test>'), /^250 /);
    assert.match(await c.command('RCPT TO:<victim@elsewhere.test>'), /^550 5\.7\.1 /);
    assert.match(await c.command('RCPT TO:<a%b@example.com>'), /^550 5\.7\.1 /);
    assert.match(await c.command('RSET'), /^250 /);
    c.close();
    const client = smtpClient(a.port);
    const send = (n: number, to: string[]) => client.sendMail({ envelope: { from: 'sender@sender.test', to }, raw: testMessage(n, to[0]) });
    await send(1, ['a@example.com', 'b@example.com']);
    for (let n = 2; n <= 4; n++) await send(n, [`u${n}@example.com`]);
    await send(5, ['slow@example.com']);
    await send(6, ['gone@example.com']); // bounces: its DSN to sender@sender.test is delivered too
    client.close();
    await waitForQueue(a, 'phase 1 delivered', () => a.agent.queue.stats().total === 0 && a.agent.scheduler.counters.delivered === 7);
    // delivered: a, b, u2-u4, slow, and the DSN; deferred: slow twice; bounced: gone.
    const s1 = await scrapeCounters(a, { accepted: 6, rejected: 2, delivered: 7, deferred: 2, bounced: 1 });
    assert.deepEqual(queueGauge(s1), { queued: 0, deferred: 0, inflight: 0, held: 0 });
    assert.equal(s1.get('mxswitch_agent_queue_oldest_seconds'), 0);

    // Phase 2: example.com on hold, 2 messages kept; 1 message deferred until its third try, then for an hour.
    a.agent.reloadStaticRoutes([
      { match: 'example.com', target: sink.target, hold: true },
      { match: 'other.test', target: sink.target },
      { match: 'sender.test', target: sink.target },
    ]);
    const t0 = Date.now();
    const client2 = smtpClient(a.port);
    await client2.sendMail({ envelope: { from: 'sender@sender.test', to: ['h1@example.com'] }, raw: testMessage(7) });
    await client2.sendMail({ envelope: { from: 'sender@sender.test', to: ['h2@example.com'] }, raw: testMessage(8) });
    await client2.sendMail({ envelope: { from: 'sender@sender.test', to: ['later@other.test'] }, raw: testMessage(9, 'later@other.test') });
    client2.close();
    await waitForQueue(a, '2 held, 1 deferred after 3 tries', () => {
      const st = a.agent.queue.stats().byState;
      return st.held === 2 && st.deferred === 1 && a.agent.queue.allRecipients().some((r) => r.rcpt === 'later@other.test' && r.attempts === 3);
    });
    const s2 = await scrapeCounters(a, { accepted: 9, rejected: 2, delivered: 7, deferred: 5, bounced: 1 });
    assert.deepEqual(queueGauge(s2), { queued: 0, deferred: 1, inflight: 0, held: 2 });
    const oldest = s2.get('mxswitch_agent_queue_oldest_seconds')!;
    assert.ok(oldest > 0 && oldest <= (Date.now() - t0) / 1000 + 1, `oldest age ${oldest}s`);
    assert.equal(s2.get('mxswitch_agent_delivering'), 1);

    const health = await get(a, '/healthz');
    assert.equal(health.status, 200);
    assert.match(health.type, /^application\/json/);
    const h = JSON.parse(health.body) as { ok: boolean; detail: { id: string; version: number; controllerConnected: boolean; delivery: { open: boolean } } };
    assert.equal(h.ok, true);
    assert.equal(h.detail.id, 'test-agent');
    assert.equal(h.detail.version, 0);
    assert.equal(h.detail.controllerConnected, false);
    assert.equal(h.detail.delivery.open, true);
    assert.equal((await get(a, '/nothing')).status, 404);
  } finally {
    await a.cleanup();
    await sink.stop();
  }
});
