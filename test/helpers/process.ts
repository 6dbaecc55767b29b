import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { CLI_ENTRY, MxProcess, REPO_ROOT } from '../../control/demo/processes.js';

export { freePort } from '../../control/demo/processes.js';
export const REPO = REPO_ROOT;

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the real `mxswitch` CLI to completion. */
export function runCli(args: readonly string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CLI_ENTRY, ...args], { cwd: REPO_ROOT, env: { ...process.env, ...env } });
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

/** A long-running `mxswitch` child for tests; `kill()` defaults to SIGKILL (a crash). */
export class CliProcess extends MxProcess {
  constructor(args: readonly string[], readyPort: number, env: NodeJS.ProcessEnv = {}) {
    super(args, readyPort, { env });
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    return this.stop(signal);
  }
}
