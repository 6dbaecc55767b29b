import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Spool } from '../../agent/spool/spool.js';
import { portOpen, REPO_ROOT } from '../../control/demo/processes.js';
import { tempDir } from '../helpers/agent.js';
import { freePort, spawnCli, writeYaml } from '../helpers/process.js';

export type PeerName = 'mxswitch' | 'postfix';

export interface QueueCounts {
  waiting: number;
  deferred: number;
}

export interface PeerOptions {
  /** Loopback port of the next hop (the sink); it may be down. */
  nextHop: number;
  /** Deferred mail waits an hour (drain scenario: only the flush makes it due again). */
  longRetry?: boolean;
  /** Extra agent config keys (mxswitch only), merged at top level. */
  agent?: Record<string, unknown>;
  /** An existing data directory to start on (mxswitch only; queue scale). */
  dataDir?: string;
}

/** A relay under test, listening on loopback `port`, relaying example.com to the sink. */
export interface PeerInstance {
  readonly name: PeerName;
  readonly port: number;
  /** The process whose RSS is the relay's (mxswitch: the agent). */
  readonly pid: number | undefined;
  /** Recipients still queued: waiting = not yet attempted or in flight, deferred = waiting for a retry. */
  queued(): QueueCounts | Promise<QueueCounts>;
  /** "Deliver now" (mxswitch: `queue retry --all` on the agent's queue; Postfix: `postqueue -f`). */
  flush(): void | Promise<void>;
  stop(): Promise<void>;
}

/** CPU profiles of each agent under test go here when set (`node --cpu-prof`). */
const profileDir = process.env.MXSWITCH_BENCH_PROFILE;

/** The compiled agent (`npm run bench -- --compiled`) instead of the sources through tsx, whose loader thread adds memory. */
let compiledEntry: string | undefined;

/** Builds dist/ (`npm run build`) and runs every mxswitch agent from it from now on. */
export function useCompiledAgent(log: (s: string) => void): void {
  log('building dist/ (npm run build) to run the compiled agent');
  const r = spawnSync('npm', ['run', 'build'], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`npm run build failed: ${(r.stderr || r.stdout).trim().split('\n').at(-1)}`);
  compiledEntry = join(REPO_ROOT, 'dist', 'control', 'cli', 'main.js');
}

export async function startMxswitch(opts: PeerOptions): Promise<PeerInstance> {
  const dir = tempDir('mxs-bench-');
  const dataDir = opts.dataDir ?? join(dir, 'data');
  const port = await freePort();
  const config = writeYaml(dir, 'agent.yaml', {
    id: 'bench',
    dataDir,
    smtp: { listen: `127.0.0.1:${port}`, hostname: 'mx.bench', maxConnections: 1000, maxMessageSize: '64MB' },
    routes: [{ match: 'example.com', target: `smtp:[127.0.0.1]:${opts.nextHop}` }],
    log: { level: 'warn' },
    ...(opts.longRetry ? { retry: { intervals: ['1h'] }, delivery: { pollInterval: '100ms' } } : {}),
    ...opts.agent,
  });
  const agent = await startAgentProcess(config, port);
  const withQueue = async <T>(fn: (q: Spool) => T | Promise<T>): Promise<T> => {
    const q = new Spool(dataDir, { mustExist: true, skipCheck: true });
    try {
      return await fn(q);
    } finally {
      await q.close();
    }
  };
  return {
    name: 'mxswitch',
    port,
    pid: agent.pid,
    queued: () =>
      withQueue((q) => {
        const s = q.stats().byState;
        return { waiting: s.queued + s.inflight, deferred: s.deferred };
      }),
    // What `mxswitch queue retry --all --data-dir DIR` does; the agent takes the due mail at its next poll (100 ms).
    flush: async () => void (await withQueue((q) => q.retryWhere())),
    async stop() {
      await agent.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** `mxswitch agent --config FILE` as a child (under `node --cpu-prof` when MXSWITCH_BENCH_PROFILE is set). */
async function startAgentProcess(config: string, port: number): Promise<{ pid: number | undefined; stop(): Promise<void> }> {
  const prof = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [];
  // The one CLI starter: without the developer's MXSWITCH_* variables, and SIGKILLed if the bench dies first.
  const child = spawnCli(['agent', '--config', config], {}, { nodeArgs: prof, ...(compiledEntry ? { entry: compiledEntry } : {}) });
  child.stdout!.resume();
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  // Queue scale: a large queue.db is integrity-checked at start, which takes a while.
  const deadline = Date.now() + 600_000;
  while (!(await portOpen(port))) {
    if (child.exitCode !== null) throw new Error(`agent exited with ${child.exitCode}: ${stderr.trim().split('\n').at(-1)}`);
    if (Date.now() > deadline) throw new Error(`agent not listening on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    pid: child.pid,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        const escalate = setTimeout(() => child.kill('SIGKILL'), 30_000);
        child.once('exit', () => {
          clearTimeout(escalate);
          resolve();
        });
        child.kill('SIGTERM');
      }),
  };
}

// ---------------------------------------------------------------------------------------------------------
// Postfix: a private instance (own config_directory and queue_directory in a temp dir), loopback only.

const POSTFIX = '/usr/sbin/postfix';

/**
 * Debian's postfix when missing (root only; it brings smtp-source and smtp-sink too). The package must not leave
 * a system instance listening on port 25: the install runs under a policy-rc.d that refuses every service start
 * (unless the machine already has one, as Docker images do), and a master the package started anyway is stopped
 * by its PID.
 */
export function ensurePostfix(log: (s: string) => void): void {
  if (existsSync(POSTFIX) && existsSync('/usr/sbin/smtp-source')) return;
  if (process.getuid?.() !== 0) throw new Error('postfix is not installed and this is not root: apt-get install postfix first');
  log('installing Debian postfix (apt-get install -y --no-install-recommends postfix)');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const run = (args: string[]) => {
    const r = spawnSync('apt-get', args, { env, encoding: 'utf8', timeout: 600_000 });
    if (r.status !== 0) throw new Error(`apt-get ${args.join(' ')} failed: ${(r.stderr || r.stdout).trim().split('\n').at(-1)}`);
  };
  const policy = '/usr/sbin/policy-rc.d';
  const ownPolicy = !existsSync(policy);
  if (ownPolicy) writeFileSync(policy, '#!/bin/sh\n# mxswitch bench: no service starts while postfix installs\nexit 101\n', { mode: 0o755 });
  try {
    run(['update', '-qq']);
    run(['install', '-y', '-qq', '--no-install-recommends', 'postfix']);
  } finally {
    if (ownPolicy) rmSync(policy, { force: true });
  }
  // Belt and braces: a system master the package started anyway (port 25) is not ours to leave running.
  const systemPid = Number(readIfExists('/var/spool/postfix/pid/master.pid').trim());
  if (systemPid > 0 && pidAlive(systemPid)) {
    log(`stopping the system postfix master the package started (pid ${systemPid})`);
    process.kill(systemPid, 'SIGTERM');
  }
  spawnSync('sh', ['-c', 'systemctl disable postfix >/dev/null 2>&1 || true']);
}

function readIfExists(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function countFiles(dir: string): number {
  if (!existsSync(dir)) return 0;
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) n += e.isDirectory() ? countFiles(join(dir, e.name)) : 1;
  return n;
}

const MASTER_CF = (port: number) => `
127.0.0.1:${port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`;

/**
 * Stock Postfix as a relay for example.com to the sink: durable like mxswitch (cleanup fsyncs the queue file
 * before smtpd's 250), 20 connections per next hop like mxswitch's connectionsPerHop, no local delivery.
 */
export async function startPostfix(opts: PeerOptions): Promise<PeerInstance> {
  const dir = tempDir('mxs-bench-postfix-');
  chmodSync(dir, 0o755); // the postfix user must reach its queue directory
  const etc = join(dir, 'etc');
  const spool = join(dir, 'spool');
  const data = join(dir, 'lib');
  mkdirSync(etc);
  mkdirSync(spool);
  mkdirSync(data);
  spawnSync('chown', ['postfix', data]);
  const port = await freePort();
  const main = {
    compatibility_level: '3.6',
    queue_directory: spool,
    data_directory: data,
    mail_owner: 'postfix',
    setgid_group: 'postdrop',
    myhostname: 'postfix.bench',
    mydestination: '',
    local_recipient_maps: '',
    local_transport: 'error:5.1.1 no local delivery here',
    alias_maps: '',
    alias_database: '',
    inet_interfaces: '127.0.0.1',
    inet_protocols: 'ipv4',
    mynetworks: '127.0.0.0/8',
    relay_domains: 'example.com',
    transport_maps: `inline:{ example.com=smtp:[127.0.0.1]:${opts.nextHop} }`,
    smtpd_relay_restrictions: 'permit_mynetworks, reject_unauth_destination',
    smtpd_tls_security_level: 'none',
    smtp_tls_security_level: 'none',
    message_size_limit: String(64 * 1024 * 1024),
    default_destination_concurrency_limit: '20',
    maillog_file_prefixes: dir,
    maillog_file: join(dir, 'maillog'),
    syslog_name: 'postfix-bench',
    biff: 'no',
    ...(opts.longRetry ? { minimal_backoff_time: '3600s', maximal_backoff_time: '3600s', queue_run_delay: '3600s' } : {}),
  };
  writeFileSync(join(etc, 'main.cf'), Object.entries(main).map(([k, v]) => `${k} = ${v}`).join('\n') + '\n');
  writeFileSync(join(etc, 'master.cf'), MASTER_CF(port));
  const postfix = (...args: string[]) => spawnSync(POSTFIX, ['-c', etc, ...args], { encoding: 'utf8', timeout: 60_000 });
  const started = postfix('start');
  if (started.status !== 0) throw new Error(`postfix start failed: ${(started.stderr || started.stdout).trim()}`);
  const deadline = Date.now() + 20_000;
  while (!(await portOpen(port))) {
    if (Date.now() > deadline) throw new Error(`postfix not listening on ${port}: ${tail(join(dir, 'maillog'))}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const masterPid = Number(readFileSync(join(spool, 'pid', 'master.pid'), 'utf8').trim());
  return {
    name: 'postfix',
    port,
    pid: masterPid,
    queued: () => ({
      waiting: countFiles(join(spool, 'incoming')) + countFiles(join(spool, 'active')) + countFiles(join(spool, 'maildrop')),
      deferred: countFiles(join(spool, 'deferred')),
    }),
    flush: () => {
      const r = spawnSync('/usr/sbin/postqueue', ['-c', etc, '-f'], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`postqueue -f failed: ${r.stderr.trim()}`);
    },
    async stop() {
      postfix('stop');
      const until = Date.now() + 15_000;
      while (Date.now() < until && pidAlive(masterPid)) await new Promise((r) => setTimeout(r, 50));
      if (pidAlive(masterPid)) postfix('abort');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-3).join(' | ');
  } catch {
    return '(no log)';
  }
}

export function startPeer(name: PeerName, opts: PeerOptions): Promise<PeerInstance> {
  return name === 'postfix' ? startPostfix(opts) : startMxswitch(opts);
}

/** VmRSS and VmHWM (peak) of a process, in bytes. */
export function memoryOf(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

export function resetPeak(pid: number): void {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
  } catch {
    // not permitted: the 10 ms samples still see the peak
  }
}

export function dirBytes(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) n += e.isDirectory() ? dirBytes(join(dir, e.name)) : statSync(join(dir, e.name)).size;
  return n;
}
