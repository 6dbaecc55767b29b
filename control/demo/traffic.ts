import nodemailer, { type Transporter } from 'nodemailer';

export interface SentMessage {
  id: string;
  agent: number;
  sentAt: number;
  acceptedAt?: number;
  error?: string;
}

/**
 * Sends a steady stream of distinct messages to the agents in turn, like the Internet would to an MX set.
 * Each message is identified by its Message-ID so the verification can find it at either server.
 */
export class TrafficGenerator {
  readonly sent: SentMessage[] = [];
  private readonly clients: Transporter[];
  private timer: NodeJS.Timeout | undefined;
  private inflight = new Set<Promise<void>>();
  private seq = 0;

  constructor(
    agentPorts: readonly number[],
    private readonly rate: number,
    private readonly domain: string,
  ) {
    this.clients = agentPorts.map((port) =>
      nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true, pool: true, maxConnections: 4, maxMessages: Infinity }),
    );
  }

  start(): void {
    const interval = 1000 / this.rate;
    let next = performance.now();
    const tick = () => {
      // Catch up after event-loop stalls so the average rate holds; never more than 50 at once.
      for (let i = 0; i < 50 && performance.now() >= next; i++, next += interval) this.sendOne();
      this.timer = setTimeout(tick, Math.max(1, next - performance.now()));
    };
    tick();
  }

  private sendOne(): void {
    const n = this.seq++;
    const agent = n % this.clients.length;
    const id = `demo-${n}@sender.example`;
    const record: SentMessage = { id, agent, sentAt: Date.now() };
    this.sent.push(record);
    const raw = Buffer.from(
      `From: customer-${n % 97}@sender.example\r\nTo: user${n % 13}@${this.domain}\r\nSubject: demo message ${n}\r\n` +
        `Message-ID: <${id}>\r\nDate: ${new Date().toUTCString()}\r\n\r\nHello, this is message ${n}.\r\n`,
    );
    const p = this.clients[agent]!.sendMail({ envelope: { from: `customer-${n % 97}@sender.example`, to: [`user${n % 13}@${this.domain}`] }, raw }).then(
      () => {
        record.acceptedAt = Date.now();
      },
      (err: Error) => {
        record.error = err.message;
      },
    );
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  /** Stops sending and waits for the answers to what was already sent. */
  async stop(): Promise<void> {
    clearTimeout(this.timer);
    await Promise.all(this.inflight);
    for (const c of this.clients) c.close();
  }

  get accepted(): SentMessage[] {
    return this.sent.filter((s) => s.acceptedAt !== undefined);
  }
}
