import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';

export const REPO_ROOT = join(import.meta.dirname, '..', '..');

/**
 * The CLI as this module runs it: from the sources, main.ts through tsx; from the compiled build (dist/), main.js
 * with no loader, so an installed copy (where tsx is not installed) can start its own agents and controller.
 */
const COMPILED = import.meta.url.endsWith('.js');
export const CLI_ENTRY = join(REPO_ROOT, 'control', 'cli', COMPILED ? 'main.js' : 'main.ts');
/** node's arguments in front of the CLI's own to run it. */
export const CLI_NODE_ARGS: readonly string[] = COMPILED ? [CLI_ENTRY] : ['--import', 'tsx', CLI_ENTRY];

/** Whether nothing listens on `port` of `address` right now (bound, then closed again). */
function bindable(port: number, address: string): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, address, () => srv.close(() => resolve(true)));
  });
}

/**
 * The ports freePort hands out: below the kernel's ephemeral range, from which every outgoing connection takes its
 * local port. A port found by binding port 0 comes from that range, and another process's outgoing connection
 * could take it before the child it was meant for bound it (a CI run: an agent's shadow port, EADDRINUSE).
 */
function handOutRange(): { low: number; high: number } | undefined {
  let ephemeralLow = 32_768;
  try {
    ephemeralLow = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
  } catch {
    // not Linux: its default range
  }
  return ephemeralLow > 11_000 ? { low: 10_000, high: ephemeralLow - 1 } : undefined;
}
const RANGE = handOutRange();
// A random start per process, then one after another: two processes (test files run side by side) only meet
// where one's sequence runs into the other's latest ports.
let nextPort = RANGE ? RANGE.low + Math.floor(Math.random() * (RANGE.high - RANGE.low + 1)) : 0;

/**
 * A TCP port on `address` (default 127.0.0.1) that was free a moment ago, for a child process to listen on: from
 * below the ephemeral range where the system has one that leaves room (see handOutRange), else what binding port
 * 0 gives.
 */
export async function freePort(address = '127.0.0.1'): Promise<number> {
  if (!RANGE) {
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, address, () => r()));
    const addr = srv.address();
    await new Promise<void>((r) => srv.close(() => r()));
    return typeof addr === 'object' && addr ? addr.port : 0;
  }
  for (let tried = 0; tried < 500; tried++) {
    const port = nextPort;
    nextPort = nextPort >= RANGE.high ? RANGE.low : nextPort + 1;
    if (await bindable(port, address)) return port;
  }
  throw new Error(`no free TCP port on ${address} between ${RANGE.low} and ${RANGE.high} after 500 tries`);
}

export function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Children that are still running: SIGKILLed when this process exits (see reapOnExit). */
const live = new Set<ChildProcess>();

function reapAll(): void {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // gone already
    }
  }
}

/**
 * A SIGTERM's default action ends this process without 'exit' (node --test SIGTERMs a test file that runs over
 * --test-timeout): while children are registered and nobody else handles SIGTERM, exit through process.exit.
 */
function exitOnSigterm(): void {
  if (process.listenerCount('SIGTERM') === 1) process.exit(128 + 15);
}

/**
 * Registers `child` to be SIGKILLed if it is still running when this process exits (normally, by process.exit or
 * by SIGTERM): a failed or timed-out test, or an interrupted demo, leaves no orphan behind. Returns `child`.
 */
export function reapOnExit<T extends ChildProcess>(child: T): T {
  if (live.size === 0) {
    process.on('exit', reapAll);
    process.on('SIGTERM', exitOnSigterm);
  }
  live.add(child);
  let forgotten = false;
  const forget = () => {
    if (forgotten) return;
    forgotten = true;
    live.delete(child);
    if (live.size > 0) return;
    process.off('exit', reapAll);
    process.off('SIGTERM', exitOnSigterm);
  };
  child.once('exit', forget);
  child.once('error', forget);
  return child;
}

/** SIGKILLs `child` (by PID) and resolves once it is gone; a child that already exited resolves at once. */
export function killHard(child: ChildProcess, timeoutMs = 5_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    try {
      process.kill(child.pid!, 'SIGKILL');
    } catch {
      // ESRCH: it died on its own in the meantime
    }
  });
}

/** A child `mxswitch` process (agent or controller), ready once `readyPort` accepts connections. */
export class MxProcess {
  child: ChildProcess | undefined;
  output = '';

  constructor(
    readonly args: readonly string[],
    readonly readyPort: number,
    /** `env` is merged over this process's environment, or is the whole environment with `inheritEnv: false`. */
    private readonly opts: { env?: NodeJS.ProcessEnv; logFile?: string; inheritEnv?: boolean } = {},
  ) {}

  /**
   * Spawns the process and resolves once `readyPort` accepts connections. Rejects when the process exits (or
   * dies of a signal) first or is not ready within `timeoutMs`; it is SIGKILLed and gone before the rejection.
   */
  async start(timeoutMs = 20_000): Promise<this> {
    const child = spawn(process.execPath, [...CLI_NODE_ARGS, ...this.args], {
      cwd: REPO_ROOT,
      env: this.opts.inheritEnv === false ? { ...this.opts.env } : { ...process.env, ...this.opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = reapOnExit(child);
    let spawnError: Error | undefined;
    child.once('error', (err) => (spawnError = err));
    const log = this.opts.logFile ? createWriteStream(this.opts.logFile, { flags: 'a' }) : undefined;
    const keep = (d: Buffer) => {
      log?.write(d);
      // Keep only the tail for error messages.
      this.output = (this.output + d.toString()).slice(-20_000);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const name = `mxswitch ${this.args[0]}`;
    const lastLine = () => this.output.trim().split('\n').at(-1) ?? '';
    const deadline = Date.now() + timeoutMs;
    let failure: string | undefined;
    while (!(await portOpen(this.readyPort))) {
      if (spawnError) failure = `${name} could not be started: ${spawnError.message}`;
      else if (child.exitCode !== null) failure = `${name} exited with ${child.exitCode}: ${lastLine()}`;
      else if (child.signalCode !== null) failure = `${name} was killed by ${child.signalCode} during start-up: ${lastLine()}`;
      else if (Date.now() > deadline) failure = `${name} not ready on port ${this.readyPort} within ${timeoutMs} ms (killed): ${lastLine()}`;
      if (failure) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    if (failure === undefined) return this;
    // Never leave a half-started child behind: it would hold its ports and data dir after the test gave up.
    await killHard(child);
    throw new Error(failure);
  }

  get running(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** SIGTERM (graceful) or SIGKILL (crash); resolves when the process is gone. SIGTERM escalates after 15 s. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    await new Promise<void>((resolve) => {
      const escalate = setTimeout(() => child.kill('SIGKILL'), 15_000);
      child.once('exit', () => {
        clearTimeout(escalate);
        resolve();
      });
      child.kill(signal);
    });
  }
}
