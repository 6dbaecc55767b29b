/**
 * `npm run bench [-- --quick] [-- --json] [-- --scenario a,b] [-- --peer postfix]`
 *
 * Scenarios (each bounded in time, each printed as a table and included in --json):
 *   ingest       S sessions x M messages x size into a real agent process, durable; msgs/s, 250 latency p50/p99
 *   e2e          the same runs: first message sent -> last one received at the sink (its own process)
 *   drain        Q messages queued while the next hop is down, then next hop up + flush: msgs/s until empty
 *   queue-scale  claimDue cost, agent start, health scrape and RSS with 10k / 100k / 1M 4 KB messages queued
 *   large        a 50 MB message accepted and relayed; the agent's peak RSS rise against the message size
 *   convergence  switchover step: admin call -> last agent ack, 1 / 10 / 50 agents
 * --peer postfix runs ingest, e2e and drain against a private Postfix instance too, interleaved with mxswitch
 * (installs Debian's postfix when missing), and prints mxswitch/Postfix per scenario.
 * Timing targets live here, never in tests. --quick is the small variant CI runs so the suite can't rot.
 */
import { parseArgs } from 'node:util';
import { convergence, type ConvergenceResult } from './convergence.js';
import { ensurePostfix, type PeerName } from './peers.js';
import {
  drain,
  ingest,
  large,
  queueScale,
  GENERATOR,
  type DrainResult,
  type EndToEndResult,
  type IngestResult,
  type LargeResult,
  type QueueScaleResult,
  type Shape,
} from './scenarios.js';
import { sinkKind } from './sink.js';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean' },
    json: { type: 'boolean' },
    scenario: { type: 'string' },
    peer: { type: 'string' },
    // Overrides for one-off runs (profiling): --shape 20x1000x4096, --queued 10000 (drain and queue-scale), --size BYTES (large).
    shape: { type: 'string' },
    queued: { type: 'string' },
    size: { type: 'string' },
  },
});
const SCENARIOS = ['ingest', 'e2e', 'drain', 'queue-scale', 'large', 'convergence'];
const chosen = values.scenario ? values.scenario.split(',') : SCENARIOS;
for (const s of chosen) if (!SCENARIOS.includes(s)) throw new Error(`--scenario ${s}: one of ${SCENARIOS.join(', ')}`);
if (values.peer && values.peer !== 'postfix') throw new Error(`--peer ${values.peer}: only postfix`);
const wanted = (name: string) => chosen.includes(name);
const quick = Boolean(values.quick);
const peers: PeerName[] = values.peer ? ['mxswitch', 'postfix'] : ['mxswitch'];
const progress = (s: string) => process.stderr.write(`bench: ${s}\n`);
if (values.peer) ensurePostfix(progress);

const shapeArg = values.shape?.split('x').map(Number);
const shapes: Shape[] = shapeArg
  ? [{ sessions: shapeArg[0]!, messages: shapeArg[1]!, size: shapeArg[2]! }]
  : quick
  ? [{ sessions: 4, messages: 50, size: 4096 }]
  : [
      { sessions: 20, messages: 5000, size: 4096 },
      { sessions: 1, messages: 1000, size: 4096 },
      { sessions: 20, messages: 1000, size: 100 * 1024 },
    ];
const drains = values.queued ? [Number(values.queued)] : quick ? [300] : [10_000, 100_000];
const scales = values.queued ? [Number(values.queued)] : quick ? [2000] : [10_000, 100_000, 1_000_000];
const largeSize = values.size ? Number(values.size) : quick ? 2 * 1024 * 1024 : 50 * 1024 * 1024;

const ingested: IngestResult[] = [];
const endToEnd: EndToEndResult[] = [];
const drained: DrainResult[] = [];
const scaled: QueueScaleResult[] = [];
const larges: LargeResult[] = [];
const converged: ConvergenceResult[] = [];

// Interleaved: each shape runs on mxswitch then on Postfix before the next shape.
if (wanted('ingest') || wanted('e2e')) {
  for (const shape of shapes) {
    for (const peer of peers) {
      progress(`ingest ${peer} ${shape.sessions}x${shape.messages}x${shape.size}`);
      const [i, e] = await ingest(peer, shape, quick ? 60_000 : 300_000);
      ingested.push(i);
      endToEnd.push(e);
    }
  }
}
if (wanted('drain')) {
  for (const q of drains) {
    for (const peer of peers) {
      progress(`drain ${peer} ${q}`);
      drained.push(await drain(peer, q, quick ? 60_000 : 600_000));
    }
  }
}
if (wanted('queue-scale')) {
  for (const n of scales) {
    progress(`queue-scale ${n}`);
    scaled.push(await queueScale(n, quick ? 60_000 : 900_000));
  }
}
if (wanted('large')) {
  progress(`large ${largeSize}`);
  larges.push(await large(largeSize, quick ? 60_000 : 300_000));
}
if (wanted('convergence')) for (const n of quick ? [1, 3] : [1, 10, 50]) converged.push(await convergence(n, quick ? 4 : 40));

const results = [...(wanted('ingest') ? ingested : []), ...(wanted('e2e') ? endToEnd : []), ...drained, ...scaled, ...larges, ...converged];
const num = (v: number, d = 0, w = 8) => v.toFixed(d).padStart(w);
const mb = (b: number) => (b / 1024 / 1024).toFixed(0);
const shapeText = (s: Shape) => `${s.sessions} x ${s.messages} x ${Math.round(s.size / 1024)}KB`;

/** mxswitch / Postfix for each row key that both peers ran. */
function ratios<T extends { peer: PeerName }>(rows: T[], key: (r: T) => string, value: (r: T) => number): string[] {
  const out: string[] = [];
  for (const mx of rows.filter((r) => r.peer === 'mxswitch')) {
    const pf = rows.find((r) => r.peer === 'postfix' && key(r) === key(mx));
    if (pf) out.push(`  ${key(mx)}: mxswitch/Postfix = ${(value(mx) / value(pf)).toFixed(2)}x`);
  }
  return out;
}

if (values.json) {
  process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
} else {
  const sink = `${sinkKind() === 'smtp-sink' ? "Postfix's smtp-sink" : 'own counting sink (smtp-server)'} in its own process`;
  if (wanted('ingest') && ingested.length) {
    console.log('\ningest (durable: fsync before every 250; relaying to the sink meanwhile)');
    console.log('peer      sessions x messages x size   accepted  failed   msgs/s   p50 ms   p99 ms');
    for (const r of ingested) {
      console.log(`${r.peer.padEnd(9)} ${shapeText(r.shape).padEnd(28)} ${num(r.accepted, 0, 8)}  ${num(r.failed, 0, 6)} ${num(r.msgsPerSec)} ${num(r.p50ms, 1)} ${num(r.p99ms, 1)}`);
    }
    console.log(`generator: ${GENERATOR}; sink: ${sink}`);
    for (const l of ratios(ingested, (r) => shapeText(r.shape), (r) => r.msgsPerSec)) console.log(l);
  }
  if (wanted('e2e') && endToEnd.length) {
    console.log('\nend-to-end relay (first message sent -> last one received at the sink, a separate process)');
    console.log('peer      sessions x messages x size   received   seconds   msgs/s');
    for (const r of endToEnd) console.log(`${r.peer.padEnd(9)} ${shapeText(r.shape).padEnd(28)} ${num(r.received, 0, 8)}  ${num(r.seconds, 2)} ${num(r.msgsPerSec)}`);
    for (const l of ratios(endToEnd, (r) => shapeText(r.shape), (r) => r.msgsPerSec)) console.log(l);
  }
  if (drained.length) {
    console.log('\ndrain (Q queued while the next hop was down; next hop up + flush -> last one received)');
    console.log('peer       queued  fill s  delivered  drain s   msgs/s');
    for (const r of drained) console.log(`${r.peer.padEnd(9)} ${num(r.queued, 0, 7)} ${num(r.fillSeconds, 1, 7)} ${num(r.delivered, 0, 10)} ${num(r.seconds, 2)} ${num(r.msgsPerSec)}`);
    console.log('flush: mxswitch `queue retry --all` on the agent\'s queue (picked up at its 100 ms poll); Postfix `postqueue -f`');
    for (const l of ratios(drained, (r) => `Q=${r.queued}`, (r) => r.msgsPerSec)) console.log(l);
  }
  if (scaled.length) {
    console.log('\nqueue scale (4 KB messages, distinct recipients, all deferred; claimDue(200) with every row eligible)');
    console.log('  queued   db MB  fill s  claim p50 ms  claim max ms  agent start s  /metrics ms  RSS MB  peak MB');
    for (const r of scaled) {
      console.log(`${num(r.queued, 0, 8)} ${mb(r.dbBytes).padStart(7)} ${num(r.fillSeconds, 1, 7)} ${num(r.claimP50ms, 2, 13)} ${num(r.claimMaxMs, 2, 13)} ${num(r.startSeconds, 1, 14)} ${num(r.scrapeMs, 0, 12)} ${mb(r.rssBytes).padStart(7)} ${mb(r.peakRssBytes).padStart(8)}`);
    }
  }
  if (larges.length) {
    console.log('\nlarge message (one message relayed; agent RSS sampled every 10 ms, VmHWM reset before)');
    console.log('  size MB  accepted  relayed  accept s  relay s  RSS before MB  peak MB  rise/size');
    for (const r of larges) {
      console.log(`${mb(r.bytes).padStart(9)} ${String(r.accepted).padStart(9)} ${String(r.relayed).padStart(8)} ${num(r.acceptSeconds, 2, 9)} ${num(r.relaySeconds, 2)} ${mb(r.rssBeforeBytes).padStart(14)} ${mb(r.peakRssBytes).padStart(8)} ${num(r.riseRatio, 2, 10)}`);
    }
  }
  if (converged.length) {
    console.log('\nconvergence (admin call -> last agent ack, one hold/release step)');
    console.log('agents  steps  p50 ms  p99 ms');
    for (const c of converged) console.log(`${String(c.agents).padStart(6)}  ${String(c.steps).padStart(5)}  ${c.p50ms.toFixed(1).padStart(6)}  ${c.p99ms.toFixed(1).padStart(6)}`);
  }
}
const ok =
  ingested.every((r) => r.failed === 0) &&
  endToEnd.every((r) => r.received >= r.messages) &&
  drained.every((r) => r.delivered >= r.queued) &&
  larges.every((r) => r.accepted && r.relayed);
process.exit(ok ? 0 : 1);
