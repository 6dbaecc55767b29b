import { createServer, type Server, type Socket } from 'node:net';

/**
 * A scriptable, byte-level "next hop" for fault tests: a raw TCP server that speaks just enough SMTP to be
 * scripted into misbehaving at any stage (no greeting, hangs, drops, garbage, 421 mid-session).
 */

/** The moments a server replies: the greeting on connect, then one reply per command (DOT = end of data). */
export type Stage = 'connect' | 'ehlo' | 'helo' | 'mail' | 'rcpt' | 'data' | 'dot' | 'rset' | 'quit' | 'other';

export type Action =
  /** The normal reply for the stage. */
  | 'ok'
  /** Send nothing; keep the connection open until the client gives up. */
  | 'hang'
  /** Close the connection without a reply (FIN). */
  | 'drop'
  /** Abort the connection without a reply (TCP RST). */
  | 'reset'
  /** Send these exact bytes (CRLF added when missing), then `then` (default: keep the session going). */
  | { raw: string; then?: 'continue' | 'drop' | 'hang' };

export type Script = Partial<Record<Stage, Action>>;

export interface BadMessage {
  from: string;
  to: string[];
  data: Buffer;
}

const NORMAL: Record<Stage, string> = {
  connect: '220 bad.test ESMTP scripted',
  ehlo: '250-bad.test\r\n250-8BITMIME\r\n250 SIZE 104857600',
  helo: '250 bad.test',
  mail: '250 2.1.0 Ok',
  rcpt: '250 2.1.5 Ok',
  data: '354 End data with <CR><LF>.<CR><LF>',
  dot: '250 2.0.0 Ok: queued',
  rset: '250 2.0.0 Ok',
  quit: '221 2.0.0 Bye',
  other: '502 5.5.2 Error: command not recognized',
};

const STAGE_OF: Record<string, Stage> = { EHLO: 'ehlo', HELO: 'helo', LHLO: 'ehlo', MAIL: 'mail', RCPT: 'rcpt', DATA: 'data', RSET: 'rset', QUIT: 'quit' };

export class BadSmtpServer {
  /** The behaviour in force; replace or edit it at any time (new sessions and later stages follow it). */
  script: Script;
  /** Messages whose data arrived in full (final dot seen), whatever was answered to it. */
  readonly dataReceived: BadMessage[] = [];
  /** Messages answered with the normal 250 to the final dot: what a real server would have accepted. */
  readonly accepted: BadMessage[] = [];
  /** How often each stage was reached (connections = hits.connect). */
  readonly hits: Partial<Record<Stage, number>> = {};
  /** A short transcript ("C: MAIL FROM:<...>", "S: 250 ..."), for failure messages. */
  readonly transcript: string[] = [];
  port = 0;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();

  constructor(script: Script = {}) {
    this.script = script;
    this.server = createServer((socket) => this.session(socket));
  }

  async start(port = 0): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => resolve());
    });
    const addr = this.server.address();
    this.port = typeof addr === 'object' && addr ? addr.port : port;
    return this;
  }

  /** The route target that delivers here without an MX lookup. */
  get target(): string {
    return `smtp:[127.0.0.1]:${this.port}`;
  }

  /** Open (hung) sessions right now. */
  get openSessions(): number {
    return this.sockets.size;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private note(line: string): void {
    this.transcript.push(line.length > 200 ? `${line.slice(0, 200)}...` : line);
    if (this.transcript.length > 500) this.transcript.splice(0, this.transcript.length - 500);
  }

  private session(socket: Socket): void {
    this.sockets.add(socket);
    socket.setNoDelay(true);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => undefined);
    let hung = false;
    let buffer = Buffer.alloc(0);
    let inData = false;
    let from = '';
    let to: string[] = [];

    let lastSent = '';
    /** Performs the scripted action for a stage; false when the session is over (or hung). */
    const act = (stage: Stage): boolean => {
      this.hits[stage] = (this.hits[stage] ?? 0) + 1;
      const action = this.script[stage] ?? 'ok';
      const send = (text: string) => {
        const out = text.endsWith('\r\n') ? text : `${text}\r\n`;
        this.note(`S: ${out.trimEnd()}`);
        lastSent = out;
        socket.write(out, 'latin1');
      };
      if (action === 'ok') {
        send(NORMAL[stage]);
        if (stage === 'quit') socket.end();
        return stage !== 'quit';
      }
      if (action === 'hang') {
        this.note(`S: (hangs at ${stage})`);
        hung = true;
        return false;
      }
      if (action === 'drop') {
        this.note(`S: (drops at ${stage})`);
        socket.end();
        socket.destroySoon();
        return false;
      }
      if (action === 'reset') {
        this.note(`S: (resets at ${stage})`);
        socket.resetAndDestroy();
        return false;
      }
      send(action.raw);
      if (action.then === 'drop') {
        socket.end();
        return false;
      }
      if (action.then === 'hang') {
        hung = true;
        return false;
      }
      return true;
    };

    const onData = (chunk: Buffer) => {
      if (hung) return; // a hung server reads and ignores everything
      buffer = Buffer.concat([buffer, chunk]);
      for (;;) {
        if (inData) {
          // Only CRLF.CRLF ends the data (the data starts right after the 354, so a leading ".\r\n" counts too).
          const end = buffer.indexOf('\r\n.\r\n');
          const atStart = buffer.subarray(0, 3).toString('latin1') === '.\r\n';
          if (end === -1 && !atStart) return;
          const data = atStart ? Buffer.alloc(0) : buffer.subarray(0, end + 2);
          buffer = buffer.subarray(atStart ? 3 : end + 5);
          inData = false;
          const msg = { from, to, data: Buffer.from(data) };
          this.dataReceived.push(msg);
          this.note(`C: (${data.length} bytes of data and the final dot)`);
          const action = this.script.dot ?? 'ok';
          if (!act('dot')) return;
          if (action === 'ok') this.accepted.push(msg);
          continue;
        }
        const eol = buffer.indexOf('\r\n');
        if (eol === -1) return;
        const line = buffer.subarray(0, eol).toString('latin1');
        buffer = buffer.subarray(eol + 2);
        this.note(`C: ${line}`);
        const verb = line.split(/[\s:]/, 1)[0]!.toUpperCase();
        const stage = STAGE_OF[verb] ?? 'other';
        if (stage === 'mail') {
          from = /<([^>]*)>/.exec(line)?.[1] ?? '';
          to = [];
        }
        if (stage === 'rcpt') to.push(/<([^>]*)>/.exec(line)?.[1] ?? '');
        lastSent = '';
        if (!act(stage)) return;
        // Whatever the script said, a 354 to DATA starts the message data.
        if (stage === 'data' && lastSent.startsWith('354')) inData = true;
      }
    };
    socket.on('data', onData);
    act('connect');
  }
}
