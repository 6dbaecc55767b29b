import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { SMTPServer } from 'smtp-server';
import { Spool } from '../../agent/spool/spool.js';
import { tempDir } from '../helpers/agent.js';
import { CliProcess, freePort, writeYaml } from '../helpers/process.js';

/**
 * Crash cycles against a real `mxswitch agent` child process: SMTP senders keep sending, the agent keeps
 * delivering to a sink, and SIGKILL strikes at random moments (also while the agent is still starting up,
 * recovering its in-flight rows). Shared by test/faults/crash.test.ts (CI) and test/faults/soak.ts (long run).
 *
 * Accounting is per (Message-ID, recipient): every pair an SMTP client got a 250 for is "acknowledged" and
 * must reach the sink ("lost" otherwise); a pair that reaches the sink more than once is "duplicated"
 * (allowed: a crash between the next hop's 250 and our commit re-sends, RFC 5321 6.1 at-least-once).
 */

export interface CrashOptions {
  /** Stop after this many kill cycles... */
  cycles?: number;
  /** ...or when this much time has been spent on cycles (whichever comes first). */
  durationMs?: number;
  /** Concurrent SMTP sessions sending into the agent (>= 10). */
  sessions?: number;
  /** Up-time before the SIGKILL, drawn uniformly from [minUpMs, maxUpMs] after the agent is ready. */
  minUpMs?: number;
  maxUpMs?: number;
  /**
   * Share of cycles whose SIGKILL is meant to strike during start-up (before the SMTP port is open), spread evenly
   * over the run (0.2: cycles 5, 10, 15, ...). An attempt that finds the agent already up counts as an ordinary
   * kill and the next cycle tries again, so a run long enough has earlyKills > 0 for sure.
   */
  earlyKillShare?: number;
  /** Share of final-dot replies the sink answers with 451 (so deferred rows and retries are crashed too). */
  sinkTempFailShare?: number;
  /** Upper bound for the sink's delay before its final 250 (widens the "delivered but not recorded" window). */
  sinkMaxDelayMs?: number;
  /** Senders pause while this many acknowledged pairs wait for delivery (keeps a long soak's drain bounded). */
  maxBacklog?: number;
  /** How long the final, uncrashed run may take to deliver everything. */
  drainTimeoutMs?: number;
  /** Progress lines (one per cycle). */
  log?: (line: string) => void;
  /** Stop early (soak: the overall time bound). */
  signal?: AbortSignal;
}

export interface CrashReport {
  cycles: number;
  /** SIGKILLs that struck during start-up: start() saw the child die before its SMTP port opened. */
  earlyKills: number;
  /** Attempts at an early kill that came too late (the agent was already up): ordinary kills. */
  earlyMisses: number;
  /** (message, recipient) pairs a client got a 250 for. */
  acknowledged: number;
  /** Acknowledged pairs found at the sink. */
  delivered: number;
  lost: number;
  /** Extra deliveries of pairs already delivered once. */
  duplicated: number;
  /** Pairs that reached the sink although their client saw no 250 (the crash cut the reply): fine. */
  deliveredUnacknowledged: number;
  /** SMTP transactions refused or cut off (not owed). */
  unacknowledgedAttempts: number;
  /** Sink replies 451 (each one is a deferral the agent had to retry). */
  sinkDeferrals: number;
  /** Recipients still in the queue after the drain (must be 0). */
  leftInQueue: number;
  /** PRAGMA integrity_check of the queue database at the end. */
  integrity: string;
  elapsedMs: number;
  drainMs: number;
  lostSamples: string[];
}

const ID_RE = /^Message-ID: <([^>]+)>/im;

/** A next hop that records (Message-ID, rcpt) pairs only, delays its 250 a little and sometimes answers 451. */
class CountingSink {
  readonly seen = new Map<string, number>();
  /** Called the first time a pair arrives. */
  onFirst: (key: string) => void = () => undefined;
  deferrals = 0;
  port = 0;
  private readonly server: SMTPServer;

  constructor(tempFailShare: number, maxDelayMs: number) {
    this.server = new SMTPServer({
      authOptional: true,
      disabledCommands: ['AUTH', 'STARTTLS'],
      logger: false,
      disableReverseLookup: true,
      onData: (stream, session, cb) => {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          if (Math.random() < tempFailShare) {
            this.deferrals++;
            return cb(Object.assign(new Error('4.3.0 sink says try again later'), { responseCode: 451 }));
          }
          const head = Buffer.concat(chunks).subarray(0, 4096).toString('latin1');
          const id = ID_RE.exec(head)?.[1] ?? '?';
          setTimeout(() => {
            // Counted when the 250 goes out: from here on the next hop owns the message.
            for (const r of session.envelope.rcptTo) {
              const key = `${id} ${r.address.toLowerCase()}`;
              const n = this.seen.get(key) ?? 0;
              this.seen.set(key, n + 1);
              if (n === 0) this.onFirst(key);
            }
            cb();
          }, Math.random() * maxDelayMs);
        });
      },
    });
    this.server.on('error', () => undefined);
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', () => resolve()));
    const addr = (this.server as unknown as { server: import('node:net').Server }).server.address();
    this.port = typeof addr === 'object' && addr ? addr.port : 0;
    return this;
  }

  stop(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Recipients still queued, read from the database file (the agent may be running: WAL allows a reader). */
function queueDepth(dataDir: string): number {
  if (!existsSync(join(dataDir, 'queue.db'))) return 0;
  return Spool.readFile(dataDir, (f) => f.inspect.counts().recipients);
}

export async function runCrashCycles(opts: CrashOptions = {}): Promise<CrashReport> {
  const sessions = opts.sessions ?? 12;
  const minUp = opts.minUpMs ?? 150;
  const maxUp = opts.maxUpMs ?? 1200;
  const earlyShare = opts.earlyKillShare ?? 0.2;
  const log = opts.log ?? (() => undefined);
  const started = Date.now();
  const sink = await new CountingSink(opts.sinkTempFailShare ?? 0.05, opts.sinkMaxDelayMs ?? 30).start();
  const dir = tempDir('mxs-crash-');
  const dataDir = join(dir, 'data');
  mkdirSync(dataDir);
  const port = await freePort();
  const config = writeYaml(dir, 'agent.yaml', {
    id: 'crash-agent',
    dataDir,
    smtp: { listen: `127.0.0.1:${port}`, hostname: 'mx.test' },
    routes: [
      { match: 'example.com', target: `smtp:[127.0.0.1]:${sink.port}` },
      { match: 'example.org', target: `smtp:[127.0.0.1]:${sink.port}` },
    ],
    retry: { intervals: ['200ms', '400ms'], jitter: 0.2, maxAge: '1d' },
    delivery: { pollInterval: '50ms', connectionsPerHop: 8, connectTimeout: '2s', greetingTimeout: '2s', socketTimeout: '5s' },
    log: { level: 'error' },
  });

  const acked = new Set<string>();
  let unacked = 0;
  let seq = 0;
  let cycles = 0;
  let earlyKills = 0;
  let earlyMisses = 0;
  let earlyDue = false;
  let lastStartupMs = 1500;
  let agent: CliProcess | undefined;
  const owed = () => [...acked].filter((k) => !sink.seen.has(k));
  // Acknowledged pairs not at the sink yet, kept as a running count (the senders check it before every message).
  let backlog = 0;
  const maxBacklog = opts.maxBacklog ?? 4000;
  sink.onFirst = (key) => {
    if (acked.has(key)) backlog--;
  };
  // Whatever ends this process (a time bound's process.exit included), the agent child goes with it.
  const killChild = () => agent?.child?.kill('SIGKILL');
  process.on('exit', killChild);

  // Senders run for the whole test; while the agent is down their sends fail fast (not acknowledged).
  let sending = true;
  const senders = Array.from({ length: sessions }, async (_, s) => {
    // A pooled client: sessions carry several messages each, so kills cut reused sessions too.
    const client = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true, pool: true, maxConnections: 1, maxMessages: 25, maxRequeues: 0 });
    while (sending) {
      if (backlog > maxBacklog) {
        await sleep(50);
        continue;
      }
      const n = seq++;
      const id = `crash-${n}-${s}@sender.test`;
      // One, two or three recipients, over two routes to the same next hop (several transactions per message).
      const to = ['a@example.com', 'b@example.org', 'c@example.com'].slice(0, 1 + (n % 3));
      const raw = `From: s@sender.test\r\nTo: ${to.join(', ')}\r\nSubject: crash ${n}\r\nMessage-ID: <${id}>\r\n\r\n${'body line\r\n'.repeat(1 + (n % 40))}`;
      try {
        await client.sendMail({ envelope: { from: 's@sender.test', to }, raw });
        for (const r of to) {
          const key = `${id} ${r}`;
          acked.add(key);
          if (!sink.seen.has(key)) backlog++;
        }
      } catch {
        unacked++;
        await sleep(200); // the agent is down: do not steal its start-up CPU
      }
    }
    client.close();
  });

  const report = (): CrashReport => {
    let delivered = 0;
    let duplicated = 0;
    let deliveredUnacked = 0;
    for (const [key, n] of sink.seen) {
      duplicated += n - 1;
      if (acked.has(key)) delivered++;
      else deliveredUnacked++;
    }
    const lostKeys = owed();
    return {
      cycles,
      earlyKills,
      earlyMisses,
      acknowledged: acked.size,
      delivered,
      lost: lostKeys.length,
      duplicated,
      deliveredUnacknowledged: deliveredUnacked,
      unacknowledgedAttempts: unacked,
      sinkDeferrals: sink.deferrals,
      leftInQueue: -1,
      integrity: 'not checked',
      elapsedMs: Date.now() - started,
      drainMs: 0,
      lostSamples: lostKeys.slice(0, 10),
    };
  };

  try {
    const cycleStart = Date.now();
    while (
      (opts.cycles === undefined || cycles < opts.cycles) &&
      (opts.durationMs === undefined || Date.now() - cycleStart < opts.durationMs) &&
      !opts.signal?.aborted
    ) {
      // Evenly spread: due whenever cycles * share passes a whole number (never the first cycle), and again
      // after an attempt that came too late.
      earlyDue ||= cycles > 0 && Math.floor((cycles + 1) * earlyShare) > Math.floor(cycles * earlyShare);
      const proc = new CliProcess(['agent', '--config', config], port);
      agent = proc;
      const t0 = Date.now();
      if (earlyDue) {
        // Kill in the later part of a typical start-up: opening the queue, recovering in-flight rows.
        const at = lastStartupMs * (0.4 + Math.random() * 0.5);
        // start() rejects once the child dies before its port opens ("killed by SIGKILL during start-up").
        let readyAt = 0;
        const outcome = proc.start(60_000).then(
          () => ((readyAt = Date.now()), 'up' as const),
          (err: Error) => (/killed by SIGKILL during start-up/.test(err.message) ? ('killed during start-up' as const) : err),
        );
        await sleep(at);
        await proc.kill('SIGKILL');
        const result = await outcome;
        if (result instanceof Error) throw result;
        cycles++;
        if (result === 'up') {
          // This start-up was quicker than the last one: aim by it next time.
          lastStartupMs = readyAt - t0;
          earlyMisses++;
          log(`cycle ${cycles}: SIGKILL ${Math.round(at)} ms after spawn came too late (already up); an early kill is still due`);
          continue;
        }
        earlyDue = false;
        earlyKills++;
        log(`cycle ${cycles}: SIGKILL ${Math.round(at)} ms after spawn, during start-up (~${lastStartupMs} ms); acknowledged ${acked.size}, at sink ${sink.seen.size}`);
        continue;
      }
      await proc.start(60_000);
      lastStartupMs = Date.now() - t0;
      const up = minUp + Math.random() * (maxUp - minUp);
      await sleep(up);
      await proc.kill('SIGKILL');
      cycles++;
      log(`cycle ${cycles}: ready after ${lastStartupMs} ms, SIGKILL after ${Math.round(up)} ms up; acknowledged ${acked.size}, at sink ${sink.seen.size}, owed ${backlog}`);
    }
    sending = false;
    await Promise.all(senders);

    // The last run is not crashed: everything acknowledged must come out.
    const drainStart = Date.now();
    agent = await new CliProcess(['agent', '--config', config], port).start(60_000);
    const drainTimeout = opts.drainTimeoutMs ?? 60_000;
    while (Date.now() - drainStart < drainTimeout && (owed().length > 0 || queueDepth(dataDir) > 0) && !opts.signal?.aborted) await sleep(100);
    const drainMs = Date.now() - drainStart;
    await agent.kill('SIGTERM');
    const r = report();
    r.drainMs = drainMs;
    r.leftInQueue = queueDepth(dataDir);
    r.integrity = Spool.readFile(dataDir, (f) => f.inspect.integrityCheck());
    r.elapsedMs = Date.now() - started;
    return r;
  } finally {
    sending = false;
    await Promise.all(senders);
    if (agent?.running) await agent.kill('SIGKILL');
    process.off('exit', killChild);
    await sink.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The report as one line of key=value pairs (the test prints it as a `# ` diagnostic). */
export function formatReport(r: CrashReport): string {
  return (
    `cycles=${r.cycles} (early=${r.earlyKills}, early_too_late=${r.earlyMisses}) acknowledged=${r.acknowledged} delivered=${r.delivered} lost=${r.lost} duplicated=${r.duplicated} ` +
    `delivered_unacknowledged=${r.deliveredUnacknowledged} refused_or_cut=${r.unacknowledgedAttempts} sink_451=${r.sinkDeferrals} ` +
    `left_in_queue=${r.leftInQueue} integrity=${r.integrity} drain=${(r.drainMs / 1000).toFixed(1)}s elapsed=${(r.elapsedMs / 1000).toFixed(1)}s`
  );
}
