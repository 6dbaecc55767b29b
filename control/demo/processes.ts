import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';

export const REPO_ROOT = join(import.meta.dirname, '..', '..');
export const CLI_ENTRY = join(REPO_ROOT, 'control', 'cli', 'main.ts');

/** A loopback port that was free a moment ago. */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const addr = srv.address();
  await new Promise<void>((r) => srv.close(() => r()));
  return typeof addr === 'object' && addr ? addr.port : 0;
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

/** A child `mxswitch` process (agent or controller), ready once `readyPort` accepts connections. */
export class MxProcess {
  child: ChildProcess | undefined;
  output = '';

  constructor(
    readonly args: readonly string[],
    readonly readyPort: number,
    private readonly opts: { env?: NodeJS.ProcessEnv; logFile?: string } = {},
  ) {}

  async start(timeoutMs = 20_000): Promise<this> {
    const child = spawn(process.execPath, ['--import', 'tsx', CLI_ENTRY, ...this.args], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...this.opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    const log = this.opts.logFile ? createWriteStream(this.opts.logFile, { flags: 'a' }) : undefined;
    const keep = (d: Buffer) => {
      log?.write(d);
      // Keep only the tail for error messages.
      this.output = (this.output + d.toString()).slice(-20_000);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const deadline = Date.now() + timeoutMs;
    while (!(await portOpen(this.readyPort))) {
      if (child.exitCode !== null) throw new Error(`mxswitch ${this.args[0]} exited with ${child.exitCode}: ${this.output.trim().split('\n').at(-1)}`);
      if (Date.now() > deadline) throw new Error(`mxswitch ${this.args[0]} not ready on port ${this.readyPort}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    return this;
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
