// The one way tests start the real `mxswitch` CLI as a child process: runCli (to completion), spawnCli + collect
// (while the test talks to it), CliProcess (a daemon, ready once its port is open). All of them run the real
// control/cli/main.ts with the developer's MXSWITCH_* variables removed from the environment, and each child is
// SIGKILLed if it is still running when the test file's process ends (reapOnExit: a failed or timed-out test).
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { CLI_NODE_ARGS, killHard, MxProcess, REPO_ROOT, reapOnExit } from '../../control/demo/processes.js';

export { freePort } from '../../control/demo/processes.js';
export const REPO = REPO_ROOT;

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** process.env without any MXSWITCH_* the developer may have set (they change what the CLI does), plus `env`. */
export function testEnv(env: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('MXSWITCH_')) out[k] = v;
  for (const [k, v] of Object.entries(env)) if (v !== undefined) out[k] = v;
  return out;
}

export interface SpawnCliOptions {
  /** Run as this user and group. */
  uid?: number;
  gid?: number;
  /** A command (and its arguments) that runs node, e.g. ['setpriv', ...flags]. */
  via?: readonly string[];
  /** node's own flags in front of the CLI (e.g. --cpu-prof). */
  nodeArgs?: readonly string[];
  /** The CLI's entry point instead of the sources through tsx (the bench's compiled `dist/control/cli/main.js`). */
  entry?: string;
}

/** Spawns the real CLI (`node --import tsx control/cli/main.ts ...`); asynchronous, so in-process servers keep running. */
export function spawnCli(args: readonly string[], env: Record<string, string | undefined> = {}, opts: SpawnCliOptions = {}): ChildProcess {
  const node = [process.execPath, ...(opts.nodeArgs ?? []), ...(opts.entry ? [opts.entry] : CLI_NODE_ARGS), ...args];
  const [command, ...rest] = opts.via?.length ? [...opts.via, ...node] : node;
  return reapOnExit(
    spawn(command!, rest, {
      cwd: REPO_ROOT,
      env: testEnv(env),
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
      ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
    }),
  );
}

/** The child's exit status and output; rejects (after SIGKILLing it) when it has not exited within `timeoutMs`. */
export function collect(child: ChildProcess, timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      void killHard(child).then(() => reject(new Error(`mxswitch did not exit within ${timeoutMs} ms (killed); stdout: ${stdout}; stderr: ${stderr}`)));
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (!timedOut) resolve({ code, stdout, stderr });
    });
  });
}

/** Runs the real `mxswitch` CLI to completion (at most `timeoutMs`, then it is killed and this rejects). */
export function runCli(args: readonly string[], env: Record<string, string | undefined> = {}, timeoutMs = 60_000): Promise<CliResult> {
  return collect(spawnCli(args, env), timeoutMs);
}

export function writeYaml(dir: string, name: string, doc: unknown): string {
  const file = join(dir, name);
  writeFileSync(file, typeof doc === 'string' ? doc : stringify(doc));
  return file;
}

/** A long-running `mxswitch` child for tests (environment as runCli's); `kill()` defaults to SIGKILL (a crash). */
export class CliProcess extends MxProcess {
  constructor(args: readonly string[], readyPort: number, env: Record<string, string | undefined> = {}) {
    super(args, readyPort, { env: testEnv(env), inheritEnv: false });
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    return this.stop(signal);
  }
}
