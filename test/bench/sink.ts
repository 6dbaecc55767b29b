import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { portOpen } from '../../control/demo/processes.js';
import { REPO } from '../helpers/process.js';

const SMTP_SINK = '/usr/sbin/smtp-sink';

/** Which sink `SinkProcess` runs: Postfix's smtp-sink (C, event-driven) when installed, else the bench's own. */
export function sinkKind(): 'smtp-sink' | 'own' {
  return process.env.MXSWITCH_BENCH_SINK !== 'own' && existsSync(SMTP_SINK) ? 'smtp-sink' : 'own';
}

/**
 * The next hop of every bench scenario, in its own process so it does not share the relay's or the load
 * generator's CPU time slice. Counts messages received (each final 250) and notes when the count last rose.
 * `stop()` + `start()` on the same port simulate a next hop that is down and comes back.
 */
export class SinkProcess {
  readonly kind = sinkKind();
  count = 0;
  firstAt = 0;
  lastAt = 0;
  private child: ChildProcess | undefined;
  private base = 0;

  constructor(readonly port: number) {}

  async start(): Promise<this> {
    const child =
      this.kind === 'smtp-sink'
        ? spawn(SMTP_SINK, ['-c', ...(process.getuid?.() === 0 ? ['-u', 'nobody'] : []), `127.0.0.1:${this.port}`, '1024'], { stdio: ['ignore', 'pipe', 'pipe'] })
        : spawn(process.execPath, ['--import', 'tsx', join(REPO, 'test', 'bench', 'sink-child.ts'), String(this.port)], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    // A restarted sink counts from zero again: keep counting on from what the previous one received.
    this.base = this.count;
    let tail = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => {
      tail += d.toString('latin1');
      const m = /.*mesg=(\d+)/s.exec(tail);
      if (m) {
        const n = this.base + Number(m[1]);
        if (n > this.count) {
          const now = Date.now();
          if (this.count === 0) this.firstAt = now;
          this.count = n;
          this.lastAt = now;
        }
        tail = tail.slice(tail.lastIndexOf('\r') + 1);
      }
    });
    child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    const deadline = Date.now() + 20_000;
    while (!(await portOpen(this.port))) {
      if (child.exitCode !== null) throw new Error(`sink (${this.kind}) exited: ${stderr.trim()}`);
      if (Date.now() > deadline) throw new Error(`sink (${this.kind}) not listening on ${this.port}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return this;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Resolves once `n` messages have been received in all, or at `deadline` (ms since epoch). */
  async waitFor(n: number, deadline: number): Promise<boolean> {
    while (this.count < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    return this.count >= n;
  }

  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      child.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
      child.kill('SIGTERM');
    });
  }
}

/** Whether a program is installed (in PATH or /usr/sbin). */
export function installed(program: string): boolean {
  return existsSync(join('/usr/sbin', program)) || spawnSync('sh', ['-c', `command -v ${program}`]).status === 0;
}
