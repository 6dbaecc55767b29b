import { connect, type Socket } from 'node:net';
import { wellFormedCode } from '../delivery.js';

/**
 * One SMTP session used only to ask a next hop whether a recipient exists: EHLO once, then per question
 * `MAIL FROM:<>`, `RCPT TO:<addr>`, `RSET` (pipelined when the server offers PIPELINING). Never DATA, so
 * nothing is ever delivered. nodemailer has no RCPT-without-DATA transaction (its send() always goes on to
 * DATA once a recipient is accepted), hence this small client of our own.
 */

/**
 * What the next hop said about one recipient: it exists, it does not (5xx), we could not tell (unreachable,
 * 4xx), or we did not ask because the hop's probe rate was used up.
 */
export type ProbeAnswer = { kind: 'exists' | 'unknown' | 'unsure' | 'busy'; reply: string };

export class ProbeError extends Error {
  readonly code = 'PROBE';
}

interface Reply {
  code: number;
  text: string;
}

const oneLine = (text: string) => text.replace(/\s+/g, ' ').trim().slice(0, 300);

export class ProbeSession {
  private buffered = '';
  private lines: string[] = [];
  private readonly waiting: { resolve: (r: Reply) => void; reject: (e: Error) => void }[] = [];
  private failure: Error | undefined;
  private pipelining = false;

  private constructor(
    private readonly socket: Socket,
    readonly hop: string,
  ) {
    socket.setEncoding('latin1');
    socket.setNoDelay(true);
    socket.on('data', (chunk: string) => this.read(chunk));
    socket.on('error', (err) => this.fail(new ProbeError(`${hop}: ${err.message}`)));
    socket.on('close', () => this.fail(new ProbeError(`${hop} closed the connection`)));
  }

  /** Connects, reads the greeting, says EHLO; rejects with ProbeError on anything but 2xx replies. */
  static async open(host: string, port: number, helo: string, timeoutMs: number): Promise<ProbeSession> {
    const hop = `[${host}]:${port}`;
    const socket = connect({ host, port });
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no answer within ${timeoutMs / 1000}s`)));
    const session = new ProbeSession(socket, hop);
    await session.expect(2, 'greeting');
    socket.write(`EHLO ${helo}\r\n`);
    const ehlo = await session.expect(2, 'EHLO');
    session.pipelining = /^250[ -]PIPELINING\b/im.test(ehlo.text);
    return session;
  }

  get usable(): boolean {
    return this.failure === undefined;
  }

  /** Asks about one recipient; the session stays usable for the next question unless it failed. */
  async check(rcpt: string): Promise<ProbeAnswer> {
    const commands = ['MAIL FROM:<>', `RCPT TO:<${rcpt}>`, 'RSET'];
    const replies: Promise<Reply>[] = [];
    if (this.pipelining) {
      for (let i = 0; i < commands.length; i++) replies.push(this.next());
      this.socket.write(commands.map((c) => `${c}\r\n`).join(''));
    }
    const reply = async (i: number): Promise<Reply> => {
      if (this.pipelining) return replies[i]!;
      this.socket.write(`${commands[i]}\r\n`);
      return this.next();
    };
    const mail = await reply(0);
    if (mail.code >= 300) {
      if (!this.pipelining) await reply(2);
      else await Promise.all(replies);
      return { kind: 'unsure', reply: `${this.hop} refused MAIL FROM:<>: ${oneLine(mail.text)}` };
    }
    const answer = await reply(1);
    const reset = await reply(2);
    if (reset.code >= 300) this.fail(new ProbeError(`${this.hop} refused RSET: ${oneLine(reset.text)}`));
    const said = `${this.hop} said: ${oneLine(answer.text)}`;
    if (answer.code < 300) return { kind: 'exists', reply: said };
    return { kind: answer.code >= 500 ? 'unknown' : 'unsure', reply: said };
  }

  close(): void {
    if (!this.usable) return;
    this.failure = new ProbeError(`${this.hop}: session closed`);
    for (const w of this.waiting.splice(0)) w.reject(this.failure);
    this.socket.end('QUIT\r\n');
  }

  private async expect(klass: number, what: string): Promise<Reply> {
    const r = await this.next();
    if (Math.floor(r.code / 100) !== klass) throw new ProbeError(`${this.hop} answered ${what} with ${oneLine(r.text)}`);
    return r;
  }

  private next(): Promise<Reply> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  private read(chunk: string): void {
    this.buffered += chunk;
    if (this.buffered.length > 64 * 1024) return this.fail(new ProbeError(`${this.hop} sent a reply over 64 KiB`));
    let nl: number;
    while ((nl = this.buffered.indexOf('\n')) !== -1) {
      const line = this.buffered.slice(0, nl).replace(/\r$/, '');
      this.buffered = this.buffered.slice(nl + 1);
      this.lines.push(line);
      if (line.length > 3 && line[3] === '-') continue;
      const text = this.lines.join('\r\n');
      this.lines = [];
      const code = wellFormedCode(text);
      if (code === undefined) return this.fail(new ProbeError(`${this.hop} sent a malformed reply: ${oneLine(text)}`));
      const waiter = this.waiting.shift();
      if (!waiter) return this.fail(new ProbeError(`${this.hop} sent a reply nobody asked for: ${oneLine(text)}`));
      waiter.resolve({ code, text });
    }
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const w of this.waiting.splice(0)) w.reject(this.failure);
    if (!this.socket.destroyed) this.socket.destroy();
  }
}
