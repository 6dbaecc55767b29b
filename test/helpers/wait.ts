// Waiting for events instead of for time: what a test needs to see a refusal, an acknowledgement or a child
// process's end as it happens, so that pass/fail never depends on how fast a loaded machine is.
import { spawn } from 'node:child_process';
import { pino, type Logger } from 'pino';
import type { ControlChannelFactory, ControlHandler } from '../../agent/agent.js';
import type { Router } from '../../agent/router.js';
import { grpcControlChannelWith } from '../../agent/control/grpc.js';
import { natsControlChannelWith } from '../../agent/control/nats.js';
import type { Route } from '../../shared/routes.js';
import { startAgent, waitFor } from './agent.js';
import { AGENT_TOKEN } from './controller.js';
import type { NatsServer } from './nats-server.js';

/** One pino log record as written (JSON): `msg`, `level` (30 info, 40 warn, 50 error) and the logged fields. */
export interface LogRecord {
  level: number;
  msg: string;
  [field: string]: unknown;
}

/** What a component logged, kept in memory (the tests' loggers are silent otherwise). */
export class LogCapture {
  readonly records: LogRecord[] = [];
  readonly logger: Logger;

  constructor(level = 'info') {
    this.logger = pino({ level }, { write: (line: string) => void this.records.push(JSON.parse(line) as LogRecord) });
  }

  /** The records `pred` accepts. */
  find(pred: (r: LogRecord) => boolean): LogRecord[] {
    return this.records.filter(pred);
  }

  /** Waits until at least `n` records satisfy `pred` (generous bound: a refusal on a loaded machine is still a refusal). */
  async waitFor(what: string, pred: (r: LogRecord) => boolean, n = 1, timeoutMs = 30_000): Promise<LogRecord[]> {
    await waitFor(what, () => this.find(pred).length >= n, timeoutMs).catch((err: Error) => {
      throw new Error(`${err.message}; logged: ${this.records.map((r) => JSON.stringify(r)).join('\n') || 'nothing'}`);
    });
    return this.find(pred);
  }
}

/** `factory`, with the control channel logging into `capture` (the rest of the agent keeps the test's logger). */
export function loggingTo(capture: LogCapture, factory: ControlChannelFactory): ControlChannelFactory {
  return (handler, config) => factory(handler, config, capture.logger);
}

/**
 * An in-process agent on the gRPC control channel, tuned as test/helpers/controller.ts startFleetAgent, whose
 * control channel logs into `log`: a test sees the controller's refusal (the status code the channel logs).
 */
export async function startLoggedFleetAgent(address: string, id: string, extra: Record<string, unknown> = {}, token = AGENT_TOKEN) {
  const log = new LogCapture();
  const a = await startAgent(
    { id, region: 'test', controller: { grpc: { address, token }, healthInterval: '200ms' }, ...extra },
    loggingTo(log, grpcControlChannelWith({ heartbeatMs: 500, silenceMs: 5000, backoffBaseMs: 50, backoffCapMs: 500 })),
  );
  return { ...a, log };
}

/** An in-process agent on the NATS control channel, tuned as test/helpers/transport.ts startNatsAgent, logging into `log`. */
export async function startLoggedNatsAgent(server: NatsServer, fleet: string, id: string, extra: Record<string, unknown> = {}, nats: Record<string, unknown> = {}) {
  const log = new LogCapture();
  const a = await startAgent(
    { id, region: 'test', controller: { nats: { servers: [server.url], fleet, ...nats }, healthInterval: '200ms' }, ...extra },
    loggingTo(log, natsControlChannelWith({ reconnectTimeWaitMs: 100, pingIntervalMs: 2000, connectTimeoutMs: 1000 })),
  );
  return { ...a, log };
}

/** When an agent acknowledged (or refused) a table (`routes`: its table in force then): `at` is Date.now() when its applyTable resolved. */
export interface Applied {
  version: number;
  routes: Route[];
  at: number;
  error: string | undefined;
}

/**
 * Records, for an in-process agent, when each table it was given had been applied: applyTable resolves only
 * after the agent settled what was in flight, and the control channel sends the ack (or nack) right after, so
 * `at` is the moment of the ack: a delivery the agent made before acking got its 250 at or before `at`.
 * `onApplied` runs at that moment, synchronously (to sample other state, e.g. a sink's connection count).
 */
export function recordAcks(agent: Pick<ControlHandler, 'applyTable'> & { router: Router }, onApplied?: (a: Applied) => void): Applied[] {
  const applied: Applied[] = [];
  const apply = agent.applyTable.bind(agent);
  agent.applyTable = async (update) => {
    const error = await apply(update);
    const a = { version: update.version, routes: [...agent.router.table.routes], at: Date.now(), error };
    applied.push(a);
    onApplied?.(a);
    return error;
  };
  return applied;
}

export interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `node ...args` in `cwd` without blocking the event loop (unlike spawnSync, so the test runner and any
 * in-process servers keep running); rejects when it has not exited in `timeoutMs`. The child leads its own
 * process group, and that group (the child and whatever it started: a benchmark's agents and sinks) is
 * SIGKILLed by its id at the timeout or when this process exits first.
 */
export function runNode(args: readonly string[], cwd: string, timeoutMs: number): Promise<ChildResult> {
  const child = spawn(process.execPath, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let exited = false;
  const reap = () => {
    if (exited || child.pid === undefined) return;
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // ESRCH: the group is gone already
    }
  };
  process.once('exit', reap);
  return new Promise<ChildResult>((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      timedOut = true;
      reap();
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      // The child is gone; what it started may not be (it died without stopping them): the group goes too.
      reap();
      exited = true;
      if (timedOut) reject(new Error(`node ${args.join(' ')} did not exit within ${timeoutMs} ms (killed); stderr: ${stderr.slice(-4000)}`));
      else resolve({ code, signal, stdout, stderr });
    });
  }).finally(() => process.off('exit', reap));
}
