import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';

/**
 * Postfix's `smtp-source` (Debian's postfix package) as a second, independent load generator: C, its own
 * process, no PIPELINING, and by default a new connection (greeting, HELO, MAIL, RCPT, DATA, QUIT) for every
 * message, which is what most senders do. `-d` keeps each session's connection for its next message.
 */
export const SMTP_SOURCE = '/usr/sbin/smtp-source';

export function smtpSourceInstalled(): boolean {
  return existsSync(SMTP_SOURCE);
}

export interface SmtpSourceRun {
  /** Messages whose final reply was a 2xx (smtp-source -c counts each completed DATA; it aborts on anything else). */
  accepted: number;
  failed: number;
  /** Spawn -> exit. */
  seconds: number;
  firstError?: string;
  /** The command line, for the report. */
  command: string;
}

export interface SmtpSourceLoad {
  sessions: number;
  /** Messages in all, spread over the sessions (smtp-source's -m is a total, not per session). */
  messages: number;
  /** Payload bytes (-l), headers not included (smtp-source adds From/To/Date/Message-Id, about 150 bytes). */
  size: number;
  /** true: -d, one connection per session for all its messages; false: a new connection per message. */
  reuse: boolean;
}

export function smtpSourceArgs(port: number, load: SmtpSourceLoad): string[] {
  return [
    '-c',
    ...(load.reuse ? ['-d'] : []),
    '-s', String(load.sessions),
    '-m', String(load.messages),
    '-l', String(load.size),
    '-M', 'load.test',
    '-f', 's@sender.test',
    '-t', 'u@example.com',
    '-S', 'bench',
    `127.0.0.1:${port}`,
  ];
}

/**
 * Runs smtp-source against loopback `port` until it exits, or kills it (by its PID) at `deadline` (ms since
 * epoch): bounded in count (-m) and in time.
 */
export function runSmtpSource(port: number, load: SmtpSourceLoad, deadline: number): Promise<SmtpSourceRun> {
  const args = smtpSourceArgs(port, load);
  const command = `smtp-source ${args.join(' ')}`;
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(SMTP_SOURCE, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let counted = 0;
    let tail = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => {
      tail += d.toString('latin1');
      const m = /(\d+)\r[^\r]*$/.exec(tail);
      if (m) {
        counted = Number(m[1]);
        tail = tail.slice(tail.lastIndexOf('\r') + 1);
      }
    });
    child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
    }, Math.max(0, deadline - Date.now()));
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const seconds = (performance.now() - t0) / 1000;
      const accepted = code === 0 ? load.messages : counted;
      const problem = timedOut ? `killed at the deadline after ${counted} messages` : code !== 0 ? `exit ${code ?? signal}: ${stderr.trim().split('\n').at(-1) ?? ''}` : undefined;
      resolve({ accepted, failed: load.messages - accepted, seconds, command, ...(problem ? { firstError: problem } : {}) });
    });
  });
}
