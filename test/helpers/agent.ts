import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { Agent, type ControlChannelFactory } from '../../agent/agent.js';
import { agentConfigSchema, parseConfig } from '../../shared/config.js';
import { createLogger } from '../../shared/logger.js';

/**
 * Makes the agent in `dataDir` unable to persist its next route change (routes.journal becomes a directory:
 * EISDIR, even as root), so it nacks it and keeps its table.
 */
export function breakRoutePersistence(dataDir: string, opts: { snapshots?: boolean } = {}): void {
  rmSync(join(dataDir, 'routes.journal'), { force: true });
  mkdirSync(join(dataDir, 'routes.journal'));
  // Whole tables (NATS entries, gRPC snapshots) are written aside and renamed: that fails too.
  if (opts.snapshots) mkdirSync(join(dataDir, 'routes.json.tmp'), { recursive: true });
}

export function tempDir(prefix = 'mxs-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Agent config for tests: loopback, fast retries, quiet logs; `extra` is merged over it (top level keys). */
export function testAgentConfig(extra: Record<string, unknown> = {}) {
  const dataDir = (extra.dataDir as string | undefined) ?? tempDir();
  return parseConfig(agentConfigSchema, {
    id: 'test-agent',
    dataDir,
    log: { level: process.env.MXSWITCH_TEST_LOG ?? 'silent' },
    retry: { intervals: ['200ms'], maxAge: '1h', jitter: 0 },
    // No test may ask a real DNS server: a DSN to an unrouted sender looks its MX up here and fails fast.
    delivery: { pollInterval: '50ms', connectTimeout: '2s', greetingTimeout: '2s', socketTimeout: '5s', resolvers: ['127.0.0.1:9'] },
    ...extra,
    smtp: { listen: '127.0.0.1:0', hostname: 'mx.test', ...(extra.smtp as object | undefined) },
  });
}

/** A started in-process agent; `cleanup()` stops it and removes its data dir. */
export async function startAgent(extra: Record<string, unknown> = {}, control?: ControlChannelFactory) {
  const config = testAgentConfig(extra);
  const agent = new Agent(config, createLogger('test', config.log), control);
  await agent.start();
  let stopped: Promise<void> | undefined;
  return {
    agent,
    config,
    port: agent.smtpPort,
    /** Stops the agent once (later calls wait for the first); removes its data unless `keepData`. */
    cleanup(keepData = false): Promise<void> {
      return (stopped ??= (async () => {
        await agent.stop();
        if (!keepData) rmSync(config.dataDir, { recursive: true, force: true });
      })());
    },
  };
}

export function smtpClient(port: number, opts: { pool?: boolean; maxConnections?: number } = {}) {
  return nodemailer.createTransport({
    host: '127.0.0.1',
    port,
    secure: false,
    ignoreTLS: true,
    pool: opts.pool ?? false,
    maxConnections: opts.maxConnections ?? 1,
    maxMessages: Infinity,
  });
}

/** A distinct, recognisable message: the test can find each one at the sink by its Message-ID. */
export function testMessage(n: number, to = 'user@example.com', extraBody = ''): Buffer {
  return Buffer.from(
    `From: sender@sender.test\r\nTo: ${to}\r\nSubject: test ${n}\r\nMessage-ID: <msg-${n}@sender.test>\r\n\r\nbody of message ${n}\r\n${extraBody}`,
  );
}

/** `promise`, or a rejection naming `what` when it has not settled within `timeoutMs` (the promise is left to itself). */
export function within<T>(what: string, promise: Promise<T>, timeoutMs = 15_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms: ${what}`)), timeoutMs);
  });
  promise.catch(() => undefined); // a late rejection after the time limit is nobody's business
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

/** Polls `cond` every 25 ms until it is true; throws after `timeoutMs`, also when one call of `cond` itself hangs. */
export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  // A check still running at the deadline gets one more second, then counts as false (and is left to itself).
  const check = async (): Promise<boolean> => {
    const result = Promise.resolve().then(cond);
    let timer: NodeJS.Timeout | undefined;
    const hung = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), Math.max(0, deadline - Date.now()) + 1_000)));
    try {
      return await Promise.race([result, hung]);
    } finally {
      clearTimeout(timer);
      result.catch(() => undefined);
    }
  };
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Every Message-ID header value in a set of received messages. */
export function messageIds(datas: readonly Buffer[]): string[] {
  return datas.map((d) => /^Message-ID: <([^>]+)>/im.exec(d.toString('latin1'))?.[1] ?? '?');
}
