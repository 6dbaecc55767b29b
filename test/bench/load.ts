import { connect, type Socket } from 'node:net';

/** A lean SMTP load generator: one socket per session, PIPELINING for the envelope, timing each 250 after DATA. */
export class LoadSession {
  private buf = '';
  private wanted: { n: number; resolve: (lines: string[]) => void } | undefined;
  private lines: string[] = [];

  private constructor(private readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => {
      this.buf += d.toString('latin1');
      let i: number;
      while ((i = this.buf.indexOf('\r\n')) !== -1) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 2);
        if (/^\d{3} /.test(line)) this.lines.push(line);
      }
      if (this.wanted && this.lines.length >= this.wanted.n) {
        const w = this.wanted;
        this.wanted = undefined;
        w.resolve(this.lines.splice(0, w.n));
      }
    });
  }

  static async open(port: number): Promise<LoadSession> {
    const socket = connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const s = new LoadSession(socket);
    await s.replies(1);
    await s.send('EHLO load.test\r\n', 1);
    return s;
  }

  private replies(n: number): Promise<string[]> {
    if (this.lines.length >= n) return Promise.resolve(this.lines.splice(0, n));
    return new Promise((resolve) => (this.wanted = { n, resolve }));
  }

  async send(data: string | Buffer, replies: number): Promise<string[]> {
    this.socket.write(data);
    return this.replies(replies);
  }

  /** Sends one message; resolves with the final reply and the time from the end of data to it. */
  async message(from: string, to: string, body: Buffer): Promise<{ reply: string; ms: number }> {
    const envelope = await this.send(`MAIL FROM:<${from}>\r\nRCPT TO:<${to}>\r\nDATA\r\n`, 3);
    if (!envelope[2]!.startsWith('354')) return { reply: envelope.join(' | '), ms: 0 };
    const t0 = performance.now();
    const [reply] = await this.send(body, 1);
    return { reply: reply!, ms: performance.now() - t0 };
  }

  close(): void {
    this.socket.end('QUIT\r\n');
  }
}

/** A message body of about `size` bytes, dot-safe, CRLF line ends, ending with CRLF.CRLF. */
export function benchBody(n: number, size: number): Buffer {
  const head = `From: load@sender.test\r\nTo: user@example.com\r\nSubject: bench ${n}\r\nMessage-ID: <bench-${n}@sender.test>\r\n\r\n`;
  const line = `${'x'.repeat(76)}\r\n`;
  const lines = Math.max(1, Math.ceil((size - head.length) / line.length));
  return Buffer.from(`${head}${line.repeat(lines)}.\r\n`);
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}
