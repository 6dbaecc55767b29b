import { connect, createServer, type Server, type Socket } from 'node:net';

/**
 * A loopback TCP proxy that can partition the network between its clients and its upstream: while
 * partitioned nothing is forwarded in either direction and no close is passed on (packets are dropped, TCP
 * retransmits), and new connections are accepted but get no upstream (a black hole). `heal()` lets the held
 * bytes and closes through, as a network that comes back would.
 */
export class TcpProxy {
  port = 0;
  /** Bytes forwarded from the upstream to the clients (what a controller sent its agents, in the bench). */
  bytesDown = 0;
  private partitioned = false;
  private readonly server: Server;
  private readonly pairs = new Set<{ down: Socket; up: Socket | undefined }>();

  constructor(
    private readonly upstreamPort: number,
    private readonly upstreamHost = '127.0.0.1',
  ) {
    this.server = createServer((down) => this.accept(down));
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', () => resolve()));
    const addr = this.server.address();
    this.port = typeof addr === 'object' && addr ? addr.port : 0;
    return this;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Connections currently held or forwarded. */
  get connections(): number {
    return this.pairs.size;
  }

  partition(): void {
    this.partitioned = true;
    for (const p of this.pairs) {
      p.down.pause();
      p.up?.pause();
    }
  }

  heal(): void {
    this.partitioned = false;
    for (const p of this.pairs) {
      if (!p.up) this.link(p);
      else {
        p.down.resume();
        p.up.resume();
      }
    }
  }

  async stop(): Promise<void> {
    for (const p of this.pairs) {
      p.down.destroy();
      p.up?.destroy();
    }
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(down: Socket): void {
    const pair: { down: Socket; up: Socket | undefined } = { down, up: undefined };
    this.pairs.add(pair);
    down.on('error', () => undefined);
    down.on('close', () => {
      this.pairs.delete(pair);
      pair.up?.destroy();
    });
    if (this.partitioned) down.pause();
    else this.link(pair);
  }

  private link(pair: { down: Socket; up: Socket | undefined }): void {
    const { down } = pair;
    const up = connect(this.upstreamPort, this.upstreamHost);
    pair.up = up;
    up.on('error', () => undefined);
    up.on('close', () => down.destroy());
    up.on('data', (d: Buffer) => {
      this.bytesDown += d.length;
      down.write(d);
    });
    down.on('data', (d: Buffer) => up.write(d));
    down.on('end', () => up.end());
    up.on('end', () => down.end());
    down.resume();
  }
}
