import { SMTPServer, type SMTPServerSession } from 'smtp-server';

export interface Received {
  from: string;
  to: string[];
  data: Buffer;
}

export type RcptPolicy = (rcpt: string) => { code: number; message: string } | undefined;

/** A real SMTP server on loopback that stores what it receives; its replies are scriptable per test. */
export class Sink {
  readonly messages: Received[] = [];
  private server: SMTPServer;
  port = 0;
  /** Reply to the final dot: undefined = 250. */
  dataReply: (() => { code: number; message: string } | undefined) | undefined;
  rcptPolicy: RcptPolicy | undefined;

  constructor() {
    this.server = new SMTPServer({
      authOptional: true,
      disabledCommands: ['AUTH', 'STARTTLS'],
      logger: false,
      disableReverseLookup: true,
      size: 200 * 1024 * 1024,
      onRcptTo: (addr, _s, cb) => {
        const r = this.rcptPolicy?.(addr.address);
        if (!r) return cb();
        const err = Object.assign(new Error(r.message), { responseCode: r.code });
        cb(err);
      },
      onData: (stream, session: SMTPServerSession, cb) => {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          const r = this.dataReply?.();
          if (r) return cb(Object.assign(new Error(r.message), { responseCode: r.code }));
          this.messages.push({
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
            to: session.envelope.rcptTo.map((x) => x.address),
            data: Buffer.concat(chunks),
          });
          cb();
        });
      },
    });
    this.server.on('error', () => undefined);
  }

  async start(port = 0): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => resolve());
    });
    const addr = (this.server as unknown as { server: import('node:net').Server }).server.address();
    this.port = typeof addr === 'object' && addr ? addr.port : port;
    return this;
  }

  stop(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  get target(): string {
    return `smtp:[127.0.0.1]:${this.port}`;
  }
}
