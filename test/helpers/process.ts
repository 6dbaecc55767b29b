import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { join } from 'node:path';
import { stringify } from 'yaml';

export const REPO = join(import.meta.dirname, '..', '..');
const CLI = join(REPO, 'control', 'cli', 'main.ts');

/** A port that was free a moment ago (the kernel hands out a fresh one to the next bind on 0). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const addr = srv.address();
  await new Promise<void>((r) => srv.close(() => r()));
  return typeof addr === 'object' && addr ? addr.port : 0;
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the real `mxswitch` CLI to completion. */
export function runCli(args: readonly string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: REPO, env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export function writeYaml(dir: string, name: string, doc: unknown): string {
  const file = join(dir, name);
  writeFileSync(file, typeof doc === 'string' ? doc : stringify(doc));
  return file;
}

async function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** A long-running `mxswitch` child (agent or controller), started and ready when `port` accepts connections. */
export class CliProcess {
  child: ChildProcess | undefined;
  log = '';

  constructor(
    private readonly args: readonly string[],
    private readonly readyPort: number,
    private readonly env: NodeJS.ProcessEnv = {},
  ) {}

  async start(timeoutMs = 20_000): Promise<this> {
    this.child = spawn(process.execPath, ['--import', 'tsx', CLI, ...this.args], { cwd: REPO, env: { ...process.env, ...this.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (d: Buffer) => (this.log += d.toString()));
    this.child.stderr!.on('data', (d: Buffer) => (this.log += d.toString()));
    const deadline = Date.now() + timeoutMs;
    while (!(await portOpen(this.readyPort))) {
      if (this.child.exitCode !== null) throw new Error(`process exited with ${this.child.exitCode}: ${this.log}`);
      if (Date.now() > deadline) throw new Error(`process not ready on ${this.readyPort}: ${this.log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    return this;
  }

  /** kill -9: no shutdown code runs. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill(signal);
    });
  }
}
