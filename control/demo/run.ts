import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { formatDuration } from '../../shared/units.js';
import { AdminConnection, type OperationProgress, type StatusResponse } from '../cli/admin-client.js';
import { CaptureServer } from './capture-server.js';
import { freePort, MxProcess } from './processes.js';
import { TrafficGenerator } from './traffic.js';

export interface DemoOptions {
  agents: number;
  rate: number;
  durationMs: number;
  keep: boolean;
  json: boolean;
}

export interface DemoReport {
  ok: boolean;
  sent: number;
  accepted: number;
  refused: number;
  deliveredOld: number;
  deliveredNew: number;
  lost: number;
  duplicated: number;
  deliveredToOldAfterHold: number;
  longestWaitMs: number;
  phases: { name: string; ms: number }[];
}

const DOMAIN = 'example.com';
const TOKENS = { agent: 'demo-agent-token', admin: 'demo-admin-token', viewer: 'demo-viewer-token' };

/** Announces phases and shows live fleet state: one redrawn line on a TTY, plain lines otherwise, nothing with --json. */
class DemoDisplay {
  private line = '';
  private lastPlain = 0;
  private readonly tty = process.stdout.isTTY === true && process.env.TERM !== 'dumb';

  constructor(private readonly quiet: boolean) {}

  phase(title: string, meaning: string): void {
    if (this.quiet) return;
    this.clear();
    process.stdout.write(`\n== ${title}\n   ${meaning}\n`);
  }

  note(text: string): void {
    if (this.quiet) return;
    this.clear();
    process.stdout.write(`   ${text}\n`);
  }

  live(text: string): void {
    if (this.quiet) return;
    if (this.tty) {
      this.line = text;
      process.stdout.write(`\r\x1b[2K${text.slice(0, (process.stdout.columns || 120) - 1)}`);
    } else if (Date.now() - this.lastPlain >= 2000) {
      this.lastPlain = Date.now();
      process.stdout.write(`   ${text}\n`);
    }
  }

  clear(): void {
    if (this.tty && this.line) process.stdout.write('\r\x1b[2K');
    this.line = '';
  }
}

/**
 * `mxswitch demo`: the whole migration on loopback with real processes — a controller, N agents, an "old" and a
 * "new" mail server and steady traffic — then proves that nothing was lost and nothing reached "old" after the hold.
 */
export async function runDemo(opts: DemoOptions): Promise<DemoReport> {
  const dir = mkdtempSync(join(tmpdir(), 'mxswitch-demo-'));
  const display = new DemoDisplay(opts.json);
  const oldServer = await new CaptureServer('old-mail.example').start();
  const newServer = await new CaptureServer('new-mail.example').start();
  const processes: MxProcess[] = [];
  let traffic: TrafficGenerator | undefined;
  let admin: AdminConnection | undefined;
  let status: StatusResponse | undefined;
  let poller: NodeJS.Timeout | undefined;
  const phases: { name: string; ms: number }[] = [];
  let phaseStart = Date.now();
  const endPhase = (name: string) => {
    phases.push({ name, ms: Date.now() - phaseStart });
    phaseStart = Date.now();
  };
  const stopAll = async () => {
    clearInterval(poller);
    await traffic?.stop();
    admin?.close();
    await Promise.all(processes.map((p) => p.stop()));
    await oldServer.stop();
    await newServer.stop();
  };
  const onSigint = () => {
    display.note('interrupted: stopping every process');
    void stopAll().then(() => process.exit(130));
  };
  process.once('SIGINT', onSigint);

  try {
    display.phase('Setting up', `controller, ${opts.agents} agents ("regions"), old and new mail servers on loopback in ${dir}`);
    const [grpcPort, httpPort] = [await freePort(), await freePort()];
    const controllerConfig = join(dir, 'controller.yaml');
    writeFileSync(
      controllerConfig,
      stringify({ dataDir: join(dir, 'controller'), grpc: { listen: `127.0.0.1:${grpcPort}` }, http: { listen: `127.0.0.1:${httpPort}` }, tokens: TOKENS, stepTimeout: '20s', log: { level: 'warn' } }),
    );
    processes.push(await new MxProcess(['controller', '--config', controllerConfig], grpcPort, { logFile: join(dir, 'controller.log') }).start());
    display.note(dashboardLine(httpPort));
    const tokenFile = join(dir, 'admin.token');
    writeFileSync(tokenFile, TOKENS.admin, { mode: 0o600 });
    admin = new AdminConnection({ controller: `127.0.0.1:${grpcPort}`, tokenFile }, { deadlineMs: 20_000 });
    await admin.setRoute({ match: DOMAIN, target: oldServer.target, actor: 'demo' });

    const agentPorts: number[] = [];
    for (let i = 1; i <= opts.agents; i++) {
      const port = await freePort();
      agentPorts.push(port);
      const file = join(dir, `agent-${i}.yaml`);
      writeFileSync(
        file,
        stringify({
          id: `mx-${i}`,
          region: ['eu', 'us', 'ap', 'sa', 'af'][(i - 1) % 5],
          dataDir: join(dir, `agent-${i}`),
          smtp: { listen: `127.0.0.1:${port}`, hostname: `mx-${i}.demo` },
          controller: { grpc: { address: `127.0.0.1:${grpcPort}`, token: TOKENS.agent }, healthInterval: '500ms' },
          retry: { intervals: ['2s'] },
          delivery: { pollInterval: '200ms' },
          log: { level: 'warn' },
        }),
      );
      processes.push(new MxProcess(['agent', '--config', file], port, { logFile: join(dir, `agent-${i}.log`) }));
    }
    await Promise.all(processes.slice(1).map((p) => p.start()));
    const refresh = async () => {
      status = await admin!.status();
    };
    await waitUntil(async () => {
      await refresh();
      return status!.agents.filter((a) => a.state === 'connected' && a.appliedVersion >= status!.version).length === opts.agents;
    }, 20_000, 'every agent connected and on the current table');
    poller = setInterval(() => {
      refresh().then(
        () => display.live(liveLine(status!, oldServer, newServer, traffic)),
        () => undefined,
      );
    }, 250);
    endPhase('setup');

    const quarter = opts.durationMs / 4;
    display.phase('Phase 1: agents forward to the old server', `MX points at the agents; route ${DOMAIN} -> ${oldServer.target} (the old server). Mail flows through.`);
    traffic = new TrafficGenerator(agentPorts, opts.rate, DOMAIN);
    traffic.start();
    await sleep(quarter);
    endPhase('forward to old');

    display.phase('Phase 2: hold', 'The old server is frozen for the mailbox copy: every agent keeps mail for the domain and delivers none.');
    await runOperation(admin.startOperation('hold', { match: DOMAIN, actor: 'demo' }), display);
    const holdAckAt = Date.now();
    display.note(`hold acknowledged by every agent; old server has ${oldServer.messages.length} messages and must not get one more`);
    await sleep(quarter);
    endPhase('hold (mailbox copy)');

    display.phase('Phase 3: switchover to the new server', `hold everywhere -> re-point to ${newServer.target} everywhere -> release -> flush, each step acknowledged by every agent`);
    await runOperation(
      admin.startOperation('switchover', { match: DOMAIN, target: newServer.target, actor: 'demo' }),
      display,
    );
    await sleep(quarter);
    endPhase('switchover');

    display.phase('Phase 4: drain', 'Traffic stops (MX now points at the new server); the agents empty their queues.');
    await traffic.stop();
    // Health reports lag by up to one interval, so "queues empty" alone could be stale: also wait until every
    // accepted message has arrived somewhere (bounded; whatever is missing then is reported as lost).
    const accepted = traffic.accepted;
    const arrived = () => new Set([...oldServer.messages, ...newServer.messages].map((m) => messageId(m.data)));
    await waitUntil(async () => {
      await refresh();
      const seen = arrived();
      return status!.agents.every((a) => (a.health?.totalQueued ?? 1) === 0) && accepted.every((s) => seen.has(s.id));
    }, 60_000, 'every agent queue empty').catch((err: Error) => display.note(err.message));
    endPhase('drain');

    display.phase('Verification', 'Every accepted message must be at exactly one server; none at the old one after the hold.');
    const report = verify(traffic, oldServer, newServer, holdAckAt, phases);
    if (opts.keep) {
      display.note(keepInstructions(grpcPort, httpPort, agentPorts, oldServer, newServer, dir));
      process.off('SIGINT', onSigint);
      clearInterval(poller);
      admin.close();
      await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
    }
    return report;
  } finally {
    process.off('SIGINT', onSigint);
    display.clear();
    await stopAll();
    if (!opts.keep) rmSync(dir, { recursive: true, force: true });
  }
}

function liveLine(s: StatusResponse, oldServer: CaptureServer, newServer: CaptureServer, traffic: TrafficGenerator | undefined): string {
  const queues = s.agents.map((a) => `${a.id}:${a.health?.totalQueued ?? '?'}`).join(' ');
  const accepted = traffic?.accepted.length ?? 0;
  return `v${s.version} queues ${queues} | accepted ${accepted} | delivered old ${oldServer.messages.length} new ${newServer.messages.length}`;
}

async function runOperation(stream: AsyncIterable<{ progress?: OperationProgress | undefined }>, display: DemoDisplay): Promise<void> {
  let last: OperationProgress | undefined;
  for await (const msg of stream) {
    if (!msg.progress) continue;
    if (msg.progress.operation?.step !== last?.operation?.step && msg.progress.operation?.step) display.note(`step: ${msg.progress.operation.step}`);
    last = msg.progress;
  }
  if (last?.operation?.state !== 'done') throw new Error(`${last?.operation?.kind ?? 'operation'} did not complete: ${last?.operation?.error || last?.message || 'no progress'}`);
  display.note(`acknowledged by ${last.acked.join(', ') || 'every agent'}`);
}

function verify(traffic: TrafficGenerator, oldServer: CaptureServer, newServer: CaptureServer, holdAckAt: number, phases: DemoReport['phases']): DemoReport {
  const arrivals = new Map<string, number[]>();
  for (const m of [...oldServer.messages, ...newServer.messages]) {
    const id = messageId(m.data);
    arrivals.set(id, [...(arrivals.get(id) ?? []), m.at]);
  }
  const accepted = traffic.accepted;
  const lost = accepted.filter((s) => !arrivals.has(s.id)).length;
  const duplicated = [...arrivals.values()].filter((a) => a.length > 1).length;
  const longestWaitMs = Math.max(0, ...accepted.map((s) => Math.min(...(arrivals.get(s.id) ?? [s.acceptedAt!])) - s.acceptedAt!));
  const afterHold = oldServer.messages.filter((m) => m.at > holdAckAt).length;
  return {
    ok: lost === 0 && afterHold === 0 && accepted.length > 0,
    sent: traffic.sent.length,
    accepted: accepted.length,
    refused: traffic.sent.length - accepted.length,
    deliveredOld: oldServer.messages.length,
    deliveredNew: newServer.messages.length,
    lost,
    duplicated,
    deliveredToOldAfterHold: afterHold,
    longestWaitMs,
    phases,
  };
}

/** Where to watch the demo in a browser (the screenshot script reads this line). */
export function dashboardLine(httpPort: number): string {
  return `dashboard: http://127.0.0.1:${httpPort}/ (log in with the viewer token ${TOKENS.viewer})`;
}

function keepInstructions(grpcPort: number, httpPort: number, agentPorts: number[], oldServer: CaptureServer, newServer: CaptureServer, dir: string): string {
  return [
    'The processes keep running (Ctrl-C stops them all). Try:',
    `  ${dashboardLine(httpPort)}`,
    `  swaks --server 127.0.0.1:${agentPorts[0]} --to someone@${DOMAIN} --from you@sender.example`,
    `  export MXSWITCH_CONTROLLER=127.0.0.1:${grpcPort} MXSWITCH_TOKEN=${TOKENS.admin}`,
    '  npx mxswitch status',
    `  npx mxswitch switchover ${DOMAIN} --to ${oldServer.target} --wait-drained   # and back again`,
    `  npx mxswitch queue ls --data-dir ${dir}/agent-1`,
    `old server: ${oldServer.target}  new server: ${newServer.target}  logs: ${dir}/*.log`,
  ].join('\n   ');
}

function messageId(data: Buffer): string {
  return /^Message-ID: <([^>]+)>/im.exec(data.toString('latin1'))?.[1] ?? '';
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitUntil(cond: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

export function renderReport(r: DemoReport): string {
  return [
    '',
    `messages sent         ${r.sent}`,
    `accepted (250)        ${r.accepted}`,
    `refused               ${r.refused}`,
    `delivered to old      ${r.deliveredOld} (all before the hold was acknowledged: ${r.deliveredToOldAfterHold === 0 ? 'yes' : `NO, ${r.deliveredToOldAfterHold} after`})`,
    `delivered to new      ${r.deliveredNew}`,
    `lost                  ${r.lost}`,
    `duplicated            ${r.duplicated}`,
    `longest wait          ${formatDuration(r.longestWaitMs)}`,
    ...r.phases.map((p) => `phase ${p.name.padEnd(22)} ${formatDuration(p.ms)}`),
    '',
    r.ok ? 'RESULT: zero loss, nothing reached the old server after the hold.' : 'RESULT: FAILED (see above)',
  ].join('\n');
}
