/**
 * `tsx test/bench/phases.ts [N]`: where one sender's time goes. N messages (default 300), a new connection each,
 * one command at a time (what smtp-source does), against mxswitch and Postfix side by side (interleaved per
 * message), timing each phase from the client: connect -> greeting, EHLO, MAIL, RCPT, DATA (354), body + dot ->
 * 250, QUIT -> 221. Prints the median and p90 of each phase per relay, in milliseconds.
 */
import { connect, type Socket } from 'node:net';
import { freePort } from '../helpers/process.js';
import { benchBody, percentile } from './load.js';
import { ensurePostfix, startPeer, type PeerInstance, type PeerName } from './peers.js';
import { SinkProcess } from './sink.js';

const PHASES = ['greeting', 'ehlo', 'mail', 'rcpt', 'data', 'dot', 'quit'] as const;
type Phase = (typeof PHASES)[number];

/** Reads replies off one socket: resolves each wait at the last line of a (multi-line) reply. */
class Replies {
  private buf = '';
  private waiting: ((line: string) => void) | undefined;
  constructor(socket: Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      this.buf += d;
      for (let i; (i = this.buf.indexOf('\r\n')) >= 0; ) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 2);
        if (line[3] !== '-') this.waiting?.(line);
      }
    });
  }
  next(): Promise<string> {
    return new Promise((resolve) => (this.waiting = resolve));
  }
}

async function oneMessage(port: number, body: Buffer, n: number): Promise<Record<Phase, number>> {
  const t: Partial<Record<Phase, number>> = {};
  let mark = performance.now();
  const socket = connect(port, '127.0.0.1');
  socket.setNoDelay(true);
  const replies = new Replies(socket);
  const step = async (phase: Phase, send?: string | Buffer) => {
    const reply = replies.next();
    if (send !== undefined) socket.write(send);
    const line = await reply;
    const now = performance.now();
    t[phase] = now - mark;
    mark = now;
    if (!/^[23]/.test(line)) throw new Error(`${phase}: ${line}`);
  };
  await step('greeting');
  await step('ehlo', 'EHLO probe.test\r\n');
  await step('mail', 'MAIL FROM:<s@sender.test>\r\n');
  await step('rcpt', `RCPT TO:<u${n}@example.com>\r\n`);
  await step('data', 'DATA\r\n');
  await step('dot', body);
  await step('quit', 'QUIT\r\n');
  socket.destroy();
  return t as Record<Phase, number>;
}

const n = Number(process.argv[2] ?? 300);
const peers: PeerName[] = ['mxswitch', 'postfix'];
ensurePostfix((s) => console.error(s));
const running: { name: PeerName; sink: SinkProcess; relay: PeerInstance; samples: Record<Phase, number>[] }[] = [];
try {
  for (const name of peers) {
    const sink = await new SinkProcess(await freePort()).start();
    running.push({ name, sink, relay: await startPeer(name, { nextHop: sink.port }), samples: [] });
  }
  const body = benchBody(0, 4096);
  for (let i = 0; i < n; i++) for (const r of running) r.samples.push(await oneMessage(r.relay.port, body, i));
  console.log(`${n} messages, new connection each, one command at a time; ms, median / p90`);
  console.log(['relay'.padEnd(10), ...PHASES.map((p) => p.padStart(13)), 'total'.padStart(13)].join(''));
  for (const r of running) {
    const cell = (xs: number[]) => {
      const s = [...xs].sort((a, b) => a - b);
      return `${percentile(s, 50).toFixed(2)}/${percentile(s, 90).toFixed(2)}`.padStart(13);
    };
    const totals = r.samples.map((s) => PHASES.reduce((a, p) => a + s[p], 0));
    console.log([r.name.padEnd(10), ...PHASES.map((p) => cell(r.samples.map((s) => s[p]))), cell(totals)].join(''));
  }
} finally {
  for (const r of running) {
    await r.relay.stop();
    await r.sink.stop();
  }
}
