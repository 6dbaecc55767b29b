import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, killHard, reapOnExit } from '../../control/demo/processes.js';
import { tempDir } from './agent.js';

/** Debian's binary, or whatever `nats-server` is on PATH (.ci/run installs the Debian package when missing). */
export const NATS_SERVER = existsSync('/usr/sbin/nats-server') ? '/usr/sbin/nats-server' : 'nats-server';

/**
 * A real nats-server with JetStream for one test file: loopback, a free port, its own store directory. Never the
 * system server on 4222. `kill()` is a crash (SIGKILL); `restart()` starts it again on the same port and store.
 */
export class NatsServer {
  private proc: ChildProcess | undefined;
  private output = '';

  private constructor(
    readonly port: number,
    readonly storeDir: string,
    private readonly configFile: string | undefined,
  ) {}

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  /** `config`: nats-server config text (accounts, users, permissions); `listen` and the store dir are added. */
  static async start(opts: { config?: string } = {}): Promise<NatsServer> {
    const port = await freePort();
    const dir = tempDir('mxs-nats-');
    const storeDir = join(dir, 'jetstream');
    let configFile: string | undefined;
    if (opts.config !== undefined) {
      configFile = join(dir, 'nats.conf');
      writeFileSync(configFile, `listen: 127.0.0.1:${port}\njetstream { store_dir: "${storeDir}" }\n${opts.config}\n`);
    }
    const server = new NatsServer(port, storeDir, configFile);
    await server.spawn();
    return server;
  }

  private args(): string[] {
    return this.configFile ? ['-c', this.configFile] : ['-a', '127.0.0.1', '-p', String(this.port), '-js', '-sd', this.storeDir];
  }

  private spawn(): Promise<void> {
    this.output = '';
    const proc = reapOnExit(spawn(NATS_SERVER, this.args(), { stdio: ['ignore', 'pipe', 'pipe'] }));
    this.proc = proc;
    return new Promise<void>((resolve, reject) => {
      // Not ready in time: killed before the rejection, so no server outlives the test that gave up on it.
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        void killHard(proc).then(() => reject(new Error(`nats-server not ready in 10 s (killed):\n${this.output}`)));
      }, 10_000);
      const onData = (d: Buffer) => {
        this.output = (this.output + d.toString()).slice(-20_000);
        if (this.output.includes('Server is ready')) {
          clearTimeout(timer);
          resolve();
        }
      };
      proc.stdout!.on('data', onData);
      proc.stderr!.on('data', onData);
      proc.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      proc.once('exit', (code) => {
        clearTimeout(timer);
        if (!timedOut) reject(new Error(`nats-server exited (${code}):\n${this.output}`));
      });
    });
  }

  /** Stops the process by its PID (SIGKILL = crash) and waits for it to exit. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    process.kill(proc.pid!, signal);
    await exited;
  }

  async restart(): Promise<void> {
    await this.kill('SIGKILL');
    await this.spawn();
  }

  /** Stops the server and removes its store. */
  async stop(): Promise<void> {
    await this.kill('SIGKILL');
    rmSync(join(this.storeDir, '..'), { recursive: true, force: true });
  }
}
