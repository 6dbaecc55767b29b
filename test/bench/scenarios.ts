import { rmSync, statSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import { Queue } from '../../agent/queue.js';
import { tempDir } from '../helpers/agent.js';
import { freePort } from '../helpers/process.js';
import { benchBody, LoadSession, percentile } from './load.js';
import { memoryOf, resetPeak, startMxswitch, startPeer, type PeerInstance, type PeerName } from './peers.js';
import { SinkProcess } from './sink.js';

export interface Shape {
  sessions: number;
  messages: number;
  size: number;
}

export const GENERATOR = 'built-in (pipelined envelope, one socket per session, in the bench process)';

export interface IngestResult {
  scenario: 'ingest+relay';
  peer: PeerName;
  shape: Shape;
  generator: string;
  sink: string;
  accepted: number;
  failed: number;
  seconds: number;
  msgsPerSec: number;
  p50ms: number;
  p99ms: number;
  /** First message sent -> last message received at the sink (a separate process). */
  endToEndSeconds: number;
}

export interface EndToEndResult {
  scenario: 'e2e';
  peer: PeerName;
  shape: Shape;
  sink: string;
  messages: number;
  received: number;
  seconds: number;
  msgsPerSec: number;
}

/** Sends `total` messages over `sessions` pipelined sessions; 250 latencies (ms) of accepted ones. */
async function load(port: number, shape: Shape, deadline: number, idBase = 0): Promise<{ latencies: number[]; failed: number; seconds: number; firstError?: string }> {
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

/** Scenario 1 + 2: S sessions x M messages into the relay; then until the last one is at the sink. */
export async function ingest(peer: PeerName, shape: Shape, budgetMs: number): Promise<[IngestResult, EndToEndResult]> {
  const sink = await new SinkProcess(await freePort()).start();
  const relay = await startPeer(peer, { nextHop: sink.port }).catch(async (err: unknown) => {
    await sink.stop();
    throw err;
  });
  const deadline = Date.now() + budgetMs;
  try {
    const start = Date.now();
    const { latencies, failed, seconds, firstError } = await load(relay.port, shape, deadline);
    if (firstError) console.error(`${peer}: first refusal: ${firstError}`);
    await sink.waitFor(latencies.length, deadline + 60_000);
    const endToEndSeconds = (sink.lastAt - start) / 1000;
    latencies.sort((a, b) => a - b);
    const total = shape.sessions * shape.messages;
    return [
      {
        scenario: 'ingest+relay',
        peer,
        shape,
        generator: GENERATOR,
        sink: sink.kind,
        accepted: latencies.length,
        failed: failed + (total - latencies.length - failed),
        seconds,
        msgsPerSec: latencies.length / seconds,
        p50ms: percentile(latencies, 50),
        p99ms: percentile(latencies, 99),
        endToEndSeconds,
      },
      { scenario: 'e2e', peer, shape, sink: sink.kind, messages: total, received: sink.count, seconds: endToEndSeconds, msgsPerSec: sink.count / endToEndSeconds },
    ];
  } finally {
    await relay.stop();
    await sink.stop();
  }
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
      const s = relay.queued();
      if (s.waiting === 0 && s.deferred >= queued) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const fillSeconds = (Date.now() - t0) / 1000;
    await sink.start();
    const flushAt = Date.now();
    relay.flush();
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
  /** Queue.claimDue(now, 200) with every row eligible, 20 batches in a row. */
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
 * Scenario 4: N 4 KB messages (distinct recipients) written straight into a queue.db with the Queue class,
 * all deferred to the next hour (a next hop that is down); then the cost of taking the next due batch, and a
 * real agent started on it: time to listen, one health scrape, RSS.
 */
export async function queueScale(n: number, budgetMs: number): Promise<QueueScaleResult> {
  const dir = tempDir('mxs-bench-scale-');
  const dataDir = join(dir, 'data');
  const deadline = Date.now() + budgetMs;
  try {
    const queue = new Queue(dataDir);
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
    // Spread over the next hour in an order unrelated to insertion, as retries of a dead next hop would be.
    queue.db.prepare("UPDATE recipients SET state = 'deferred', attempts = 1, due_at = ? + ((id * 7919) % 3600000), last_reply = 'connection refused'").run(now + 3_600_000);
    queue.db.pragma('wal_checkpoint(TRUNCATE)');
    const fillSeconds = (performance.now() - t0) / 1000;
    const times: number[] = [];
    for (let i = 0; i < 20; i++) {
      const c0 = performance.now();
      queue.claimDue(now + 3 * 3_600_000, 200);
      times.push(performance.now() - c0);
    }
    queue.close();
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
  /** (peak - before) / message size; the target is <= 2. */
  riseRatio: number;
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
    const relayed = r.reply.startsWith('250') && (await sink.waitFor(1, deadline));
    const relaySeconds = (performance.now() - t0) / 1000;
    await new Promise((res) => setTimeout(res, 200));
    clearInterval(sampler);
    peak = Math.max(peak, memoryOf(pid).hwm);
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
    };
  } finally {
    await relay.stop();
    await sink.stop();
  }
}
