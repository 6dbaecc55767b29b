import type { Server as NetServer } from 'node:net';
import { SMTPServer, type SMTPServerSession } from 'smtp-server';

export interface CapturedMessage {
  from: string;
  to: string[];
  data: Buffer;
  /** Date.now() when the final 250 was sent. */
  at: number;
  /** The session was upgraded with STARTTLS. */
  tls: boolean;
}

export interface Reply {
  code: number;
  message: string;
}

/**
 * A real SMTP server that keeps what it receives in memory: the demo's "old" and "new" mail servers and the
 * tests' sinks. Replies to RCPT and to the final dot can be scripted to simulate a refusing or failing server.
 */
export class CaptureServer {
  readonly messages: CapturedMessage[] = [];
  /** SMTP connections accepted so far (a held destination must see none, not only no message). */
  connections = 0;
  /** TCP connections open right now. */
  activeConnections = 0;
  /** The most TCP connections that were open at the same time (a per-hop connection limit must bound it). */
  maxConcurrentConnections = 0;
  /** Milliseconds to wait before answering the final dot: a slow next hop. */
  dataDelayMs = 0;
  port = 0;
  rcptPolicy: ((rcpt: string) => Reply | undefined) | undefined;
  dataReply: (() => Reply | undefined) | undefined;
  private readonly server: SMTPServer;

  constructor(
    readonly name = 'capture',
    tls?: { key: Buffer; cert: Buffer },
  ) {
    this.server = new SMTPServer({
      name,
      authOptional: true,
      disabledCommands: tls ? ['AUTH'] : ['AUTH', 'STARTTLS'],
      ...(tls ?? {}),
      logger: false,
      disableReverseLookup: true,
      size: 200 * 1024 * 1024,
      onConnect: (_s, cb) => {
        this.connections++;
        cb();
      },
      onRcptTo: (addr, _s, cb) => {
        const r = this.rcptPolicy?.(addr.address);
        cb(r ? Object.assign(new Error(r.message), { responseCode: r.code }) : undefined);
      },
      onData: (stream, session: SMTPServerSession, cb) => {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          const finish = () => {
            const r = this.dataReply?.();
            if (r) return cb(Object.assign(new Error(r.message), { responseCode: r.code }));
            this.messages.push({
              from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
              to: session.envelope.rcptTo.map((x) => x.address),
              data: Buffer.concat(chunks),
              at: Date.now(),
              tls: session.secure,
            });
            cb();
          };
          if (this.dataDelayMs > 0) setTimeout(finish, this.dataDelayMs);
          else finish();
        });
      },
    });
    this.server.on('error', () => undefined);
    // Counted at TCP level, so a connection that never gets as far as an SMTP session counts too.
    (this.server as unknown as { server: NetServer }).server.on('connection', (socket) => {
      this.activeConnections++;
      this.maxConcurrentConnections = Math.max(this.maxConcurrentConnections, this.activeConnections);
      socket.once('close', () => this.activeConnections--);
    });
  }

  async start(port = 0, host = '127.0.0.1'): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => resolve());
    });
    const addr = (this.server as unknown as { server: NetServer }).server.address();
    this.port = typeof addr === 'object' && addr ? addr.port : port;
    return this;
  }

  stop(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  /** The route target that delivers here without an MX lookup. */
  get target(): string {
    return `smtp:[127.0.0.1]:${this.port}`;
  }
}
