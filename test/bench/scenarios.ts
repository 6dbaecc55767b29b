import { rmSync, statSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import { Spool } from '../../agent/spool/spool.js';
import { tempDir } from '../helpers/agent.js';
import { freePort } from '../helpers/process.js';
import { benchBody, LoadSession, percentile } from './load.js';
import { memoryOf, resetPeak, startMxswitch, startPeer, type PeerInstance, type PeerName } from './peers.js';
import { SinkProcess } from './sink.js';
import { runSmtpSource } from './smtp-source.js';

export interface Shape {
  sessions: number;
  messages: number;
  size: number;
}

/** The load generators the ingest and e2e scenarios can be driven by. */
export type GeneratorName = 'builtin' | 'smtp-source';

export const GENERATORS: Record<GeneratorName, string> = {
  builtin: 'built-in (pipelined envelope, one socket per session kept for all its messages, in the bench process)',
  'smtp-source': "Postfix's smtp-source (C, its own process, no pipelining; new connection per message unless -d)",
};
/** Kept for callers of the single-generator era. */
export const GENERATOR = GENERATORS.builtin;

/** What drives one ingest run: a generator, a shape, and whether each session keeps its connection. */
export interface LoadSpec {
  generator: GeneratorName;
  shape: Shape;
  /** builtin: always reused (and pipelined); smtp-source: -d (reused) or its default, a new one per message. */
  connections: 'reused' | 'new';
}

export interface IngestResult {
  scenario: 'ingest+relay' | 'ingest-smtp-source';
  peer: PeerName;
  shape: Shape;
  generator: GeneratorName;
  connections: 'reused' | 'new';
  /** The generator's description (builtin) or command line (smtp-source). */
  generatorText: string;
  sink: string;
  /** Of all repetitions: the fewest accepted in one, and the failures added up. */
  accepted: number;
  failed: number;
  /** The median repetition (by msgs/s). */
  seconds: number;
  msgsPerSec: number;
  /** Every repetition's msgs/s, in run order. */
  repsMsgsPerSec: number[];
  /** 250-after-DATA latency of the median repetition (builtin only; smtp-source does not report it: 0). */
  p50ms: number;
  p99ms: number;
  /** First message sent -> last message received at the sink (a separate process), median repetition. */
  endToEndSeconds: number;
}

export interface EndToEndResult {
  scenario: 'e2e' | 'e2e-smtp-source';
  peer: PeerName;
  shape: Shape;
  generator: GeneratorName;
  connections: 'reused' | 'new';
  sink: string;
  /** Per repetition; received is the fewest any repetition saw at the sink. */
  messages: number;
  received: number;
  /** The median repetition (by msgs/s). */
  seconds: number;
  msgsPerSec: number;
  repsMsgsPerSec: number[];
}

interface RunResult {
  accepted: number;
  failed: number;
  seconds: number;
  latencies: number[];
  firstError?: string;
  text: string;
}

/** Sends `total` messages over `sessions` pipelined sessions; 250 latencies (ms) of accepted ones. */
export async function load(port: number, shape: Shape, deadline: number, idBase = 0): Promise<{ latencies: number[]; failed: number; seconds: number; firstError?: string }> {
  const latencies: number[] = [];
  let failed = 0;
  let firstError: string | undefined;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: shape.sessions }, async (_, s) => {
      const session = await LoadSession.open(port);
      for (let i = 0; i < shape.messages && Date.now() < deadline; i++) {
        const r = await session.message('load@sender.test', 'user@example.com', benchBody(idBase + s * shape.messages + i, shape.size));
        if (r.reply.startsWith('250')) latencies.push(r.ms);
        else {
          failed++;
          firstError ??= r.reply;
        }
      }
      session.close();
    }),
  );
  return { latencies, failed, seconds: (performance.now() - t0) / 1000, ...(firstError ? { firstError } : {}) };
}

/** Total messages one run of `spec` sends. builtin: sessions x messages; smtp-source: the same total over -s sessions. */
export function totalOf(spec: LoadSpec): number {
  return spec.shape.sessions * spec.shape.messages;
}

async function runLoad(spec: LoadSpec, port: number, deadline: number, idBase: number): Promise<RunResult> {
  const total = totalOf(spec);
  if (spec.generator === 'smtp-source') {
    const r = await runSmtpSource(port, { sessions: spec.shape.sessions, messages: total, size: spec.shape.size, reuse: spec.connections === 'reused' }, deadline);
    return { accepted: r.accepted, failed: r.failed, seconds: r.seconds, latencies: [], text: r.command, ...(r.firstError ? { firstError: r.firstError } : {}) };
  }
  const r = await load(port, spec.shape, deadline, idBase);
  return { accepted: r.latencies.length, failed: total - r.latencies.length, seconds: r.seconds, latencies: r.latencies, text: GENERATORS.builtin, ...(r.firstError ? { firstError: r.firstError } : {}) };
}

function medianBy<T>(rows: T[], value: (r: T) => number): T {
  const sorted = [...rows].sort((a, b) => value(a) - value(b));
  return sorted[Math.floor((sorted.length - 1) / 2)]!;
}

/**
 * Scenario 1 + 2 for one load spec on every peer: each peer (and its own sink process) is started once, then
 * `reps` repetitions run interleaved (mxswitch, Postfix, mxswitch, Postfix, ...) so that whatever else loads the
 * machine meanwhile falls on both alike. Each repetition waits until the sink has every accepted message before
 * the next starts, so a relay's outbound tail never overlaps the other peer's run. Medians are reported.
 */
export async function ingestRounds(peers: PeerName[], spec: LoadSpec, reps: number, budgetMs: number, progress: (s: string) => void = () => undefined): Promise<{ ingest: IngestResult[]; e2e: EndToEndResult[] }> {
  const total = totalOf(spec);
  const running: { peer: PeerName; sink: SinkProcess; relay: PeerInstance; runs: (RunResult & { e2eSeconds: number; received: number })[] }[] = [];
  try {
    for (const peer of peers) {
      const sink = await new SinkProcess(await freePort()).start();
      const relay = await startPeer(peer, { nextHop: sink.port }).catch(async (err: unknown) => {
        await sink.stop();
        throw err;
      });
      running.push({ peer, sink, relay, runs: [] });
    }
    for (let rep = 0; rep < reps; rep++) {
      for (const r of running) {
        const deadline = Date.now() + budgetMs;
        const before = r.sink.count;
        const start = Date.now();
        const run = await runLoad(spec, r.relay.port, deadline, rep * total);
        if (run.firstError) console.error(`${r.peer} (${spec.generator}): first refusal: ${run.firstError}`);
        await r.sink.waitFor(before + run.accepted, deadline + 60_000);
        const received = r.sink.count - before;
        const e2eSeconds = (r.sink.lastAt - start) / 1000;
        r.runs.push({ ...run, e2eSeconds, received });
        progress(`  ${r.peer} rep ${rep + 1}/${reps}: ${(run.accepted / run.seconds).toFixed(0)} msg/s in, ${(received / e2eSeconds).toFixed(0)} msg/s end-to-end`);
      }
    }
  } finally {
    for (const r of running) {
      await r.relay.stop();
      await r.sink.stop();
    }
  }
  const ingest: IngestResult[] = [];
  const e2e: EndToEndResult[] = [];
  const smtpSource = spec.generator === 'smtp-source';
  for (const r of running) {
    const mid = medianBy(r.runs, (x) => x.accepted / x.seconds);
    const latencies = [...mid.latencies].sort((a, b) => a - b);
    ingest.push({
      scenario: smtpSource ? 'ingest-smtp-source' : 'ingest+relay',
      peer: r.peer,
      shape: spec.shape,
      generator: spec.generator,
      connections: spec.connections,
      generatorText: mid.text,
      sink: r.sink.kind,
      accepted: Math.min(...r.runs.map((x) => x.accepted)),
      failed: r.runs.reduce((n, x) => n + x.failed, 0),
      seconds: mid.seconds,
      msgsPerSec: mid.accepted / mid.seconds,
      repsMsgsPerSec: r.runs.map((x) => x.accepted / x.seconds),
      p50ms: percentile(latencies, 50),
      p99ms: percentile(latencies, 99),
      endToEndSeconds: mid.e2eSeconds,
    });
    const midE = medianBy(r.runs, (x) => x.received / x.e2eSeconds);
    e2e.push({
      scenario: smtpSource ? 'e2e-smtp-source' : 'e2e',
      peer: r.peer,
      shape: spec.shape,
      generator: spec.generator,
      connections: spec.connections,
      sink: r.sink.kind,
      messages: total,
      received: Math.min(...r.runs.map((x) => x.received)),
      seconds: midE.e2eSeconds,
      msgsPerSec: midE.received / midE.e2eSeconds,
      repsMsgsPerSec: r.runs.map((x) => x.received / x.e2eSeconds),
    });
  }
  return { ingest, e2e };
}

export interface DrainResult {
  scenario: 'drain';
  peer: PeerName;
  queued: number;
  fillSeconds: number;
  delivered: number;
  /** Flush -> last message received at the sink. */
  seconds: number;
  msgsPerSec: number;
}

/** Scenario 3: Q messages queued while the next hop is down; next hop up + flush; until the queue is empty. */
export async function drain(peer: PeerName, q: number, budgetMs: number): Promise<DrainResult> {
  const sink = new SinkProcess(await freePort());
  const relay = await startPeer(peer, { nextHop: sink.port, longRetry: true });
  const deadline = Date.now() + budgetMs;
  try {
    const sessions = 20;
    const t0 = Date.now();
    const { latencies, firstError } = await load(relay.port, { sessions, messages: Math.ceil(q / sessions), size: 4096 }, deadline);
    if (firstError) console.error(`${peer}: first refusal: ${firstError}`);
    const queued = latencies.length;
    // Every message has had its first (failed) attempt and waits for a retry an hour away.
    while (Date.now() < deadline) {
      const s = await relay.queued();
      if (s.waiting === 0 && s.deferred >= queued) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const fillSeconds = (Date.now() - t0) / 1000;
    await sink.start();
    const flushAt = Date.now();
    await relay.flush();
    await sink.waitFor(queued, Math.max(deadline, Date.now() + 60_000));
    const seconds = (sink.lastAt - flushAt) / 1000;
    return { scenario: 'drain', peer, queued, fillSeconds, delivered: sink.count, seconds, msgsPerSec: sink.count / seconds };
  } finally {
    await relay.stop();
    await sink.stop();
  }
}

export interface QueueScaleResult {
  scenario: 'queue-scale';
  peer: 'mxswitch';
  queued: number;
  dbBytes: number;
  fillSeconds: number;
  /** Spool.claimDue(now, 200) with every row eligible, 20 batches in a row. */
  claimP50ms: number;
  claimMaxMs: number;
  /** Agent start on this queue until SMTP listens. */
  startSeconds: number;
  /** One /metrics scrape (a full health snapshot). */
  scrapeMs: number;
  rssBytes: number;
  peakRssBytes: number;
}

function httpGet(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
}

/**
 * Scenario 4: N 4 KB messages (distinct recipients) written straight into a queue.db with the Spool class,
 * all claimed and deferred to the next hour (a next hop that is down); then the cost of taking the next due batch, and a
 * real agent started on it: time to listen, one health scrape, RSS.
 */
export async function queueScale(n: number, budgetMs: number): Promise<QueueScaleResult> {
  const dir = tempDir('mxs-bench-scale-');
  const dataDir = join(dir, 'data');
  const deadline = Date.now() + budgetMs;
  try {
    const queue = new Spool(dataDir);
    const body = benchBody(0, 4096);
    const t0 = performance.now();
    let made = 0;
    const batch = 5000;
    while (made < n && Date.now() < deadline) {
      const commits: Promise<string>[] = [];
      for (let i = 0; i < batch && made < n; i++, made++) {
        commits.push(queue.commit({ id: `S${made.toString(36).padStart(8, '0').toUpperCase()}`, sender: 'load@sender.test', recipients: [`user${made}@example.com`], body }));
      }
      await Promise.all(commits);
    }
    const now = Date.now();
    // Each first attempt failed, recorded as the scheduler does: due again in the hour after the next, spread in an
    // order unrelated to insertion, as retries of a dead next hop would be.
    const dueAt = (id: number) => now + 3_600_000 + ((id * 7919) % 3_600_000);
    for (let rows = await queue.claimDue(now, batch); rows.length; rows = await queue.claimDue(now, batch)) {
      await queue.record(rows.map((row) => ({ row, route: null, outcome: { kind: 'deferred' as const, reply: 'connection refused', dueAt: dueAt(row.id) } })));
    }
    const fillSeconds = (performance.now() - t0) / 1000;
    const times: number[] = [];
    for (let i = 0; i < 20; i++) {
      const c0 = performance.now();
      await queue.claimDue(now + 3 * 3_600_000, 200);
      times.push(performance.now() - c0);
    }
    await queue.close();
    times.sort((a, b) => a - b);
    const dbBytes = statSync(join(dataDir, 'queue.db')).size;
    const httpPort = await freePort();
    const s0 = performance.now();
    const agent = await startMxswitch({ nextHop: await freePort(), longRetry: true, dataDir, agent: { http: { listen: `127.0.0.1:${httpPort}` } } });
    try {
      const startSeconds = (performance.now() - s0) / 1000;
      await new Promise((r) => setTimeout(r, 2000));
      const h0 = performance.now();
      await httpGet(httpPort, '/metrics');
      const scrapeMs = performance.now() - h0;
      await new Promise((r) => setTimeout(r, 1000));
      const mem = memoryOf(agent.pid!);
      return {
        scenario: 'queue-scale',
        peer: 'mxswitch',
        queued: made,
        dbBytes,
        fillSeconds,
        claimP50ms: percentile(times, 50),
        claimMaxMs: times.at(-1)!,
        startSeconds,
        scrapeMs,
        rssBytes: mem.rss,
        peakRssBytes: mem.hwm,
      };
    } finally {
      await agent.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface LargeResult {
  scenario: 'large';
  peer: 'mxswitch';
  bytes: number;
  accepted: boolean;
  relayed: boolean;
  acceptSeconds: number;
  relaySeconds: number;
  rssBeforeBytes: number;
  peakRssBytes: number;
  /** (peak - before) / message size, over accept and relay; the target is < 1.5. */
  riseRatio: number;
  /** The same while the message was received only (up to its 250), and while it was relayed only. */
  acceptRiseRatio: number;
  relayRiseRatio: number;
}

/** Scenario 5: one large message accepted and relayed; the agent's RSS sampled every 10 ms meanwhile. */
export async function large(bytes: number, budgetMs: number): Promise<LargeResult> {
  const sink = await new SinkProcess(await freePort()).start();
  const relay: PeerInstance = await startMxswitch({ nextHop: sink.port }).catch(async (err: unknown) => {
    await sink.stop();
    throw err;
  });
  const deadline = Date.now() + budgetMs;
  try {
    const pid = relay.pid!;
    await new Promise((r) => setTimeout(r, 500));
    const before = memoryOf(pid).rss;
    // Resets VmHWM to the current RSS (Linux >= 4.0), so the peak read afterwards is this transfer's.
    resetPeak(pid);
    let peak = before;
    const sampler = setInterval(() => {
      try {
        peak = Math.max(peak, memoryOf(pid).rss);
      } catch {
        // process gone
      }
    }, 10);
    const body = benchBody(0, bytes);
    const t0 = performance.now();
    const session = await LoadSession.open(relay.port);
    const r = await session.message('load@sender.test', 'user@example.com', body);
    const acceptSeconds = (performance.now() - t0) / 1000;
    session.close();
    const acceptPeak = Math.max(peak, memoryOf(pid).hwm);
    resetPeak(pid);
    let relayPeak = memoryOf(pid).rss;
    const relaySampler = setInterval(() => {
      try {
        relayPeak = Math.max(relayPeak, memoryOf(pid).rss);
      } catch {
        // process gone
      }
    }, 10);
    const relayed = r.reply.startsWith('250') && (await sink.waitFor(1, deadline));
    const relaySeconds = (performance.now() - t0) / 1000;
    await new Promise((res) => setTimeout(res, 200));
    clearInterval(sampler);
    clearInterval(relaySampler);
    relayPeak = Math.max(relayPeak, memoryOf(pid).hwm);
    peak = Math.max(peak, acceptPeak, relayPeak);
    return {
      scenario: 'large',
      peer: 'mxswitch',
      bytes: body.length,
      accepted: r.reply.startsWith('250'),
      relayed,
      acceptSeconds,
      relaySeconds,
      rssBeforeBytes: before,
      peakRssBytes: peak,
      riseRatio: (peak - before) / body.length,
      acceptRiseRatio: (acceptPeak - before) / body.length,
      relayRiseRatio: (relayPeak - before) / body.length,
    };
  } finally {
    await relay.stop();
    await sink.stop();
  }
}
