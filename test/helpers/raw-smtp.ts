import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

/** A byte-exact SMTP client for protocol tests: writes what it is told and reads whole replies. */
export class RawSmtp {
  private buffer = '';
  private waiters: (() => void)[] = [];
  private closed = false;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.buffer += d.toString('latin1');
      for (const w of this.waiters.splice(0)) w();
    });
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.waiters.splice(0)) w();
    });
    socket.on('error', () => undefined);
  }

  static async open(port: number): Promise<RawSmtp> {
    const socket = connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const c = new RawSmtp(socket);
    await c.reply();
    return c;
  }

  /** The next complete (possibly multi-line) reply, e.g. "250-...\r\n250 ...". */
  async reply(timeoutMs = 5000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = /^(?:\d{3}-[^\r\n]*\r\n)*\d{3}(?: [^\r\n]*)?\r\n/.exec(this.buffer);
      if (m) {
        this.buffer = this.buffer.slice(m[0].length);
        return m[0].trimEnd();
      }
      if (this.closed) return '(closed)';
      if (Date.now() > deadline) return '(timeout)';
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  write(data: string | Buffer): void {
    this.socket.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data);
  }

  async command(line: string): Promise<string> {
    this.write(`${line}\r\n`);
    return this.reply();
  }

  close(): void {
    this.socket.destroy();
  }

  /**
   * After a 220 to STARTTLS: upgrades this socket (bytes already buffered in plaintext are dropped) and returns
   * a `say(line)` that sends one command over TLS and resolves with the reply.
   */
  async upgrade(ca: Buffer): Promise<{ say: (line: string) => Promise<string>; close: () => void }> {
    this.socket.removeAllListeners('data');
    const secure = tlsConnect({ socket: this.socket, ca, servername: 'localhost' });
    await new Promise<void>((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject));
    let buf = '';
    secure.on('data', (d: Buffer) => (buf += d.toString()));
    const say = async (line: string) => {
      buf = '';
      secure.write(`${line}\r\n`);
      const deadline = Date.now() + 5000;
      while (!/^\d{3} .*\r\n/m.test(buf)) {
        if (Date.now() > deadline) return '(timeout)';
        await new Promise((r) => setTimeout(r, 10));
      }
      return buf;
    };
    return { say, close: () => secure.destroy() };
  }
}
