/** The benchmark runner: `npm run bench -- --help`. */
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { controlScale, type ControlScaleResult } from './control-scale.js';
import { convergence, type ConvergenceResult } from './convergence.js';
import { recipientLists, type RecipientsResult } from './recipients.js';
import { ensurePostfix, useCompiledAgent, type PeerName } from './peers.js';
import {
  drain,
  ingestRounds,
  large,
  queueScale,
  GENERATORS,
  type DrainResult,
  type EndToEndResult,
  type GeneratorName,
  type IngestResult,
  type LargeResult,
  type LoadSpec,
  type QueueScaleResult,
  type Shape,
} from './scenarios.js';
import { shadowCost, type ShadowCostResult } from './shadow.js';
import { sinkKind } from './sink.js';
import { SMTP_SOURCE, smtpSourceInstalled } from './smtp-source.js';

/** What `npm run bench -- --help` prints; timing targets live here, never in tests. */
const USAGE = `\`npm run bench [-- --quick] [-- --json] [-- --scenario a,b] [-- --peer postfix] [-- --generator both] [-- --reps 3] [-- --compiled]\`

Scenarios (each bounded in time, each printed as a table and included in --json):
  ingest       S sessions x M messages x size into a real agent process, durable; msgs/s, 250 latency p50/p99
  e2e          the same runs: first message sent -> last one received at the sink (its own process)
  drain        Q messages queued while the next hop is down, then next hop up + flush: msgs/s until empty
  queue-scale  claimDue cost, agent start, health scrape and RSS with 10k / 100k / 1M 4 KB messages queued
  large        a 50 MB message accepted and relayed; the agent's peak RSS rise against the message size
  convergence  switchover step: admin call -> last agent ack, 1 / 10 / 50 agents
  recipients   a 200,000-address recipient list imported and acked by 3 agents; then one small edit (gRPC and NATS)
  shadow       ingest with shadow redundancy on vs off at 20 sessions (route held: the 250 path only); the on/off ratio
  control-scale SetRoute at 100 vs 100k routes, bytes and agent apply+persist of one change, import of 100k routes
               acked by 2 agents, convergence of one change across --sessions simulated agents (500; real control
               session code, 4 child processes)
--peer postfix runs ingest, e2e and drain against a private Postfix instance too, interleaved with mxswitch
(installs Debian's postfix when missing), and prints mxswitch/Postfix per scenario.
--generator builtin|smtp-source|both drives ingest and e2e with the bench's own pipelined generator, with
Postfix's smtp-source (new connection per message, and -d: connections reused), or both (the default when
/usr/sbin/smtp-source exists). Each ingest shape runs --reps times (3; 1 with --quick) per peer, interleaved;
medians are printed. --connections new|reused|both picks smtp-source's connection modes (both by default).
Profiling: MXSWITCH_BENCH_PROFILE=DIR runs each agent under \`node --cpu-prof\` (one file per thread: the event
loop, the spool's writer thread, and from source tsx's loader threads); \`tsx test/bench/profile-top.ts FILE\`
lists the top self-time functions of one.
--compiled runs every mxswitch agent from dist/ (built first with \`npm run build\`), as a release runs, instead of
the sources through tsx (whose loader thread adds ~40 MB of RSS and some CPU at start).
Overrides for one-off runs: --shape SxMxBYTES (one ingest shape), --queued N (drain and queue-scale), --size BYTES
(large), --sessions N (control-scale's simulated agents). --json prints every result as one JSON document.
Timing targets live here, never in tests. --quick is the small variant CI runs so the suite can't rot.
`;

const { values } = parseArgs({
  options: {
    help: { type: 'boolean', short: 'h' },
    quick: { type: 'boolean' },
    compiled: { type: 'boolean' },
    json: { type: 'boolean' },
    scenario: { type: 'string' },
    peer: { type: 'string' },
    generator: { type: 'string' },
    // smtp-source only: new (a connection per message), reused (-d) or both (the default).
    connections: { type: 'string' },
    reps: { type: 'string' },
    // Overrides for one-off runs (profiling): --shape 20x1000x4096, --queued 10000 (drain and queue-scale), --size BYTES (large).
    shape: { type: 'string' },
    queued: { type: 'string' },
    size: { type: 'string' },
    // control-scale: simulated agents (default 500; 50 with --quick).
    sessions: { type: 'string' },
  },
});
if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const SCENARIOS = ['ingest', 'e2e', 'drain', 'queue-scale', 'large', 'convergence', 'recipients', 'shadow', 'control-scale'];
const chosen = values.scenario ? values.scenario.split(',') : SCENARIOS;
for (const s of chosen) if (!SCENARIOS.includes(s)) throw new Error(`--scenario ${s}: one of ${SCENARIOS.join(', ')}`);
if (values.peer && values.peer !== 'postfix') throw new Error(`--peer ${values.peer}: only postfix`);
const wanted = (name: string) => chosen.includes(name);
const quick = Boolean(values.quick);
const peers: PeerName[] = values.peer ? ['mxswitch', 'postfix'] : ['mxswitch'];
const progress = (s: string) => process.stderr.write(`bench: ${s}\n`);
if (values.peer) ensurePostfix(progress);
if (values.compiled) useCompiledAgent(progress);
const generatorArg = values.generator ?? (smtpSourceInstalled() ? 'both' : 'builtin');
if (!['builtin', 'smtp-source', 'both'].includes(generatorArg)) throw new Error(`--generator ${generatorArg}: one of builtin, smtp-source, both`);
if (generatorArg !== 'builtin' && !smtpSourceInstalled()) throw new Error(`--generator ${generatorArg}: ${SMTP_SOURCE} is not installed (Debian's postfix package; --peer postfix installs it)`);
const generators: GeneratorName[] = generatorArg === 'both' ? ['builtin', 'smtp-source'] : [generatorArg as GeneratorName];
const connectionsArg = values.connections ?? 'both';
if (!['new', 'reused', 'both'].includes(connectionsArg)) throw new Error(`--connections ${connectionsArg}: one of new, reused, both`);
const connectionModes = (['new', 'reused'] as const).filter((c) => connectionsArg === 'both' || connectionsArg === c);
const reps = values.reps ? Number(values.reps) : quick ? 1 : 3;
if (!(Number.isInteger(reps) && reps >= 1)) throw new Error(`--reps ${values.reps}: a whole number >= 1`);

// Shapes are sessions x messages per session x size; sized so that reps x peers x shapes stays within minutes.
const shapeArg = values.shape?.split('x').map(Number);
const builtinShapes: Shape[] = shapeArg
  ? [{ sessions: shapeArg[0]!, messages: shapeArg[1]!, size: shapeArg[2]! }]
  : quick
  ? [{ sessions: 4, messages: 50, size: 4096 }]
  : [
      { sessions: 20, messages: 500, size: 4096 },
      { sessions: 1, messages: 1000, size: 4096 },
      { sessions: 20, messages: 100, size: 100 * 1024 },
    ];
// smtp-source: the same message total is spread over -s sessions (its -m counts all of them).
const sourceShapes: { shape: Shape; connections: 'new' | 'reused' }[] = shapeArg
  ? connectionModes.map((connections) => ({ shape: builtinShapes[0]!, connections }))
  : quick
  ? connectionModes.slice(0, 1).map((connections) => ({ shape: { sessions: 4, messages: 25, size: 4096 }, connections }))
  : connectionModes.flatMap((connections) => [
      { shape: { sessions: 20, messages: connections === 'new' ? 150 : 250, size: 4096 }, connections },
      { shape: { sessions: 1, messages: 1000, size: 4096 }, connections },
      { shape: { sessions: 20, messages: 50, size: 100 * 1024 }, connections },
      { shape: { sessions: 1, messages: 500, size: 100 * 1024 }, connections },
    ]);
const specs: LoadSpec[] = [
  ...(generators.includes('builtin') ? builtinShapes.map((shape): LoadSpec => ({ generator: 'builtin', shape, connections: 'reused' })) : []),
  ...(generators.includes('smtp-source') ? sourceShapes.map(({ shape, connections }): LoadSpec => ({ generator: 'smtp-source', shape, connections })) : []),
];
const drains = values.queued ? [Number(values.queued)] : quick ? [300] : [10_000, 100_000];
const scales = values.queued ? [Number(values.queued)] : quick ? [2000] : [10_000, 100_000, 1_000_000];
const largeSize = values.size ? Number(values.size) : quick ? 2 * 1024 * 1024 : 50 * 1024 * 1024;

const loadBefore = loadavg()[0]!;
const ingested: IngestResult[] = [];
const endToEnd: EndToEndResult[] = [];
const drained: DrainResult[] = [];
const scaled: QueueScaleResult[] = [];
const larges: LargeResult[] = [];
const converged: ConvergenceResult[] = [];

// Interleaved: each shape runs on mxswitch then on Postfix, `reps` times, before the next shape.
if (wanted('ingest') || wanted('e2e')) {
  for (const spec of specs) {
    progress(`ingest ${spec.generator}${spec.generator === 'smtp-source' ? ` (${spec.connections} connections)` : ''} ${spec.shape.sessions}x${spec.shape.messages}x${spec.shape.size} on ${peers.join(', ')}, ${reps} reps`);
    const { ingest, e2e } = await ingestRounds(peers, spec, reps, quick ? 60_000 : 120_000, progress);
    ingested.push(...ingest);
    endToEnd.push(...e2e);
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
const lists: RecipientsResult[] = [];
if (wanted('recipients')) {
  progress('recipients');
  for (const mode of ['grpc', 'nats'] as const) lists.push(await recipientLists(quick ? 20_000 : 200_000, quick ? 2 : 3, mode));
}

const shadowed: ShadowCostResult[] = [];
if (wanted('shadow')) shadowed.push(await shadowCost(quick ? { sessions: 4, messages: 50, size: 4096 } : { sessions: 20, messages: 250, size: 4096 }, quick ? 1 : reps, quick ? 30_000 : 120_000));

const controlScales: ControlScaleResult[] = [];
if (wanted('control-scale')) {
  progress('control-scale');
  controlScales.push(await controlScale(quick ? 10_000 : 100_000, values.sessions ? Number(values.sessions) : quick ? 50 : 500, quick ? 2 : 4, quick ? 5 : 20));
}

const results = [...(wanted('ingest') ? ingested : []), ...(wanted('e2e') ? endToEnd : []), ...drained, ...scaled, ...larges, ...converged, ...lists, ...shadowed, ...controlScales];
const num = (v: number, d = 0, w = 8) => v.toFixed(d).padStart(w);
const mb = (b: number) => (b / 1024 / 1024).toFixed(0);
const shapeText = (s: Shape) => `${s.sessions} x ${s.messages} x ${Math.round(s.size / 1024)}KB`;
const genText = (r: { generator: GeneratorName; connections: string }) => (r.generator === 'builtin' ? 'builtin' : `smtp-source ${r.connections === 'new' ? 'new-conn' : 'reuse -d'}`);
const rowKey = (r: { generator: GeneratorName; connections: string; shape: Shape }) => `${genText(r)} ${shapeText(r.shape)}`;
const repsText = (v: number[]) => v.map((x) => x.toFixed(0)).join('/');

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
  console.log(`\nmachine: ${cpus().length} cores, 1-min load average ${loadBefore.toFixed(1)} at the start, ${loadavg()[0]!.toFixed(1)} at the end (other work shares it: absolute rates vary, the interleaved ratios less)`);
  const sink = `${sinkKind() === 'smtp-sink' ? "Postfix's smtp-sink" : 'own counting sink (smtp-server)'} in its own process`;
  const summary = (rows: (IngestResult | EndToEndResult)[]) => {
    console.log('generator             sessions x msgs/session x size   mxswitch msg/s  Postfix msg/s  mxswitch/Postfix');
    for (const mx of rows.filter((r) => r.peer === 'mxswitch')) {
      const pf = rows.find((r) => r.peer === 'postfix' && rowKey(r) === rowKey(mx));
      console.log(`${genText(mx).padEnd(21)} ${shapeText(mx.shape).padEnd(32)} ${num(mx.msgsPerSec, 0, 14)} ${pf ? num(pf.msgsPerSec, 0, 14) : '             -'} ${pf ? `${(mx.msgsPerSec / pf.msgsPerSec).toFixed(2)}x`.padStart(17) : ''}`);
    }
  };
  if (wanted('ingest') && ingested.length) {
    console.log(`\ningest (durable: fsync before every 250; relaying to the sink meanwhile); median of ${reps}, interleaved`);
    console.log('generator             peer      sessions x msgs x size   accepted  failed   msgs/s   p50 ms   p99 ms  (msgs/s of each rep)');
    for (const r of ingested) {
      const lat = r.generator === 'builtin' ? `${num(r.p50ms, 1)} ${num(r.p99ms, 1)}` : `${'-'.padStart(8)} ${'-'.padStart(8)}`;
      console.log(`${genText(r).padEnd(21)} ${r.peer.padEnd(9)} ${shapeText(r.shape).padEnd(24)} ${num(r.accepted, 0, 8)}  ${num(r.failed, 0, 6)} ${num(r.msgsPerSec)} ${lat}  (${repsText(r.repsMsgsPerSec)})`);
    }
    console.log('(smtp-source reports no per-message latency)');
    for (const g of generators) console.log(`generator ${g}: ${GENERATORS[g]}`);
    const cmd = ingested.find((r) => r.generator === 'smtp-source')?.generatorText;
    if (cmd) console.log(`  e.g. ${cmd.replace(/127\.0\.0\.1:\d+$/, '127.0.0.1:PORT')}`);
    console.log(`sink: ${sink}`);
    if (peers.length > 1) {
      console.log('\ningest, mxswitch vs Postfix (medians)');
      summary(ingested);
    }
  }
  if (wanted('e2e') && endToEnd.length) {
    console.log(`\nend-to-end relay (first message sent -> last one received at the sink, a separate process); median of ${reps}`);
    console.log('generator             peer      sessions x msgs x size   received   seconds   msgs/s (each rep)');
    for (const r of endToEnd) console.log(`${genText(r).padEnd(21)} ${r.peer.padEnd(9)} ${shapeText(r.shape).padEnd(24)} ${num(r.received, 0, 8)}  ${num(r.seconds, 2)} ${num(r.msgsPerSec)} (${repsText(r.repsMsgsPerSec)})`);
    if (peers.length > 1) {
      console.log('\nend-to-end, mxswitch vs Postfix (medians)');
      summary(endToEnd);
    }
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
    console.log('  size MB  accepted  relayed  accept s  relay s  RSS before MB  peak MB  rise/size  in: accept     relay');
    for (const r of larges) {
      console.log(`${mb(r.bytes).padStart(9)} ${String(r.accepted).padStart(9)} ${String(r.relayed).padStart(8)} ${num(r.acceptSeconds, 2, 9)} ${num(r.relaySeconds, 2)} ${mb(r.rssBeforeBytes).padStart(14)} ${mb(r.peakRssBytes).padStart(8)} ${num(r.riseRatio, 2, 10)} ${num(r.acceptRiseRatio, 2, 10)} ${num(r.relayRiseRatio, 2, 10)}`);
    }
  }
  if (converged.length) {
    console.log('\nconvergence (admin call -> last agent ack, one hold/release step)');
    console.log('agents  steps  p50 ms  p99 ms');
    for (const c of converged) console.log(`${String(c.agents).padStart(6)}  ${String(c.steps).padStart(5)}  ${c.p50ms.toFixed(1).padStart(6)}  ${c.p99ms.toFixed(1).padStart(6)}`);
  }
  for (const s of shadowed) {
    console.log('\nshadow redundancy: ingest with a copy at the peer before each 250 vs without (route held; median of the reps, interleaved)');
    console.log('shadow   sessions x msgs x size   accepted  failed   msgs/s   p50 ms   p99 ms  (msgs/s of each rep)');
    for (const r of s.rows) console.log(`${r.mode.padEnd(8)} ${shapeText(r.shape).padEnd(24)} ${num(r.accepted, 0, 8)} ${num(r.failed, 0, 7)} ${num(r.msgsPerSec)} ${num(r.p50ms, 1)} ${num(r.p99ms, 1)}  (${repsText(r.repsMsgsPerSec)})`);
    console.log(`  on/off = ${s.ratio.toFixed(2)}x (the issue's target: at least 0.75x at 20 sessions)`);
  }
  for (const c of controlScales) {
    const k = (n: number) => `${(n / 1000).toFixed(0)}k`;
    console.log(`\ncontrol plane at scale (SQLite controller; targets from issue 17)`);
    console.log(`  SetRoute median: ${c.setRouteSmallMs.toFixed(2)} ms at 100 routes, ${c.setRouteLargeMs.toFixed(2)} ms at ${k(c.routes)}: ${c.setRouteRatio.toFixed(2)}x (target <= 1.5x)`);
    console.log(`  one change to one agent: ${c.changeBytes} bytes on the wire (target < 10 KB)`);
    console.log(`  agent apply + durable persist of one change at ${k(c.routes)}: median ${c.applyMs.toFixed(2)} ms, p99 ${c.applyP99Ms.toFixed(2)} ms (target < 5 ms)`);
    console.log(`  route import of ${k(c.routes)} routes, one version, until both agents acked: ${(c.importMs / 1000).toFixed(2)} s (target < 10 s)`);
    console.log(`  convergence of one change at ${k(c.routes)} across ${c.sessions} simulated agents (${c.processes} processes, ${c.changes} changes): p50 ${c.convergenceP50Ms.toFixed(0)} ms, p99 ${c.convergenceP99Ms.toFixed(0)} ms, max ${c.convergenceMaxMs.toFixed(0)} ms (target p99 < 1 s)`);
  }
  for (const l of lists) {
    console.log(`\nrecipient lists (${l.transport}): ${l.addresses} addresses imported in ${l.importMs.toFixed(0)} ms, on all ${l.agents} agents ${l.appliedMs.toFixed(0)} ms later; one add afterwards reached them in ${l.editMs.toFixed(0)} ms`);
  }
}
const ok =
  ingested.every((r) => r.failed === 0) &&
  endToEnd.every((r) => r.received >= r.messages) &&
  drained.every((r) => r.delivered >= r.queued) &&
  larges.every((r) => r.accepted && r.relayed) &&
  shadowed.every((s) => s.rows.every((r) => r.failed === 0));
process.exit(ok ? 0 : 1);
