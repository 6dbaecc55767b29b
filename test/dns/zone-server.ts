import { createSocket, type Socket } from 'node:dgram';
import { createServer, type Server } from 'node:net';
import dns2 from 'dns2';

const { Packet, UDPServer, TCPServer } = dns2;
type Packet = dns2.Packet;
type Resource = dns2.Packet.Resource;

export type RecordData = { priority: number; exchange: string } | { address: string } | { ns: string } | { domain: string };
export type Rtype = 'MX' | 'A' | 'AAAA' | 'NS' | 'CNAME';

/**
 * A real DNS server on loopback (dns2's UDP and TCP servers on one port) that serves a small in-memory zone
 * set: a "resolver" for tests. Modes: answer (default), silent (never answers = timeout) and per-name
 * SERVFAIL. Unknown names are NXDOMAIN, known names without the asked type NODATA, both with the SOA of
 * the closest zone. Oversized UDP answers come back truncated (dns2's server sets TC), so clients must
 * retry over TCP.
 */
export class ZoneServer {
  readonly records = new Map<string, { ttl: number; data: RecordData[] }>();
  readonly zones = new Map<string, { ttl: number; minimum: number }>();
  readonly servfail = new Set<string>();
  readonly queries: { name: string; type: string; rd: number; tcp: boolean }[] = [];
  silent = false;
  /** Set the AA bit (an authoritative server). */
  authoritative = false;
  port = 0;
  address = '127.0.0.1';
  private udp: InstanceType<typeof UDPServer> | Socket | undefined;
  private tcp: InstanceType<typeof TCPServer> | Server | undefined;

  static key(name: string, type: Rtype): string {
    return `${name.toLowerCase().replace(/\.$/, '')}|${type}`;
  }

  /** Replaces the record set for name/type. */
  set(name: string, type: Rtype, data: RecordData[], ttl = 300): this {
    this.records.set(ZoneServer.key(name, type), { ttl, data });
    return this;
  }

  mx(name: string, hosts: [number, string][], ttl = 300): this {
    return this.set(name, 'MX', hosts.map(([priority, exchange]) => ({ priority, exchange })), ttl);
  }

  a(name: string, addresses: string[], ttl = 300): this {
    return this.set(name, 'A', addresses.map((address) => ({ address })), ttl);
  }

  zone(name: string, ttl = 3600, minimum = 60): this {
    this.zones.set(name.toLowerCase(), { ttl, minimum });
    return this;
  }

  get resolver(): string {
    return `${this.address}:${this.port}`;
  }

  private zoneOf(name: string): string | undefined {
    for (let n = name; n; n = n.includes('.') ? n.slice(n.indexOf('.') + 1) : '') if (this.zones.has(n)) return n;
    return undefined;
  }

  private handle(request: Packet, send: (p: Packet) => Promise<Buffer>, tcp: boolean): void {
    const q = request.questions[0];
    if (!q) return;
    const name = q.name.toLowerCase().replace(/\.$/, '');
    const type = Packet.TYPE_NAME[q.type] ?? String(q.type);
    this.queries.push({ name, type, rd: request.header.rd, tcp });
    if (this.silent) return;
    const response = Packet.createResponseFromRequest(request);
    response.header.aa = this.authoritative ? 1 : 0;
    response.header.ra = this.authoritative ? 0 : 1;
    if (this.servfail.has(name)) {
      response.header.rcode = Packet.RCODE.SERVFAIL;
      void send(response);
      return;
    }
    const set = this.records.get(`${name}|${type}`);
    if (set) {
      for (const data of set.data) response.answers.push(Object.assign({ name: q.name, type: q.type, class: Packet.CLASS.IN, ttl: set.ttl }, data) as Resource);
    } else {
      const known = [...this.records.keys()].some((k) => k.startsWith(`${name}|`)) || this.zones.has(name);
      if (!known) response.header.rcode = Packet.RCODE.NXDOMAIN;
      const zone = this.zoneOf(name);
      const soa = zone ? this.zones.get(zone) : undefined;
      if (zone && soa) {
        response.authorities.push({
          name: zone,
          type: Packet.TYPE.SOA,
          class: Packet.CLASS.IN,
          ttl: soa.ttl,
          primary: `ns1.${zone}`,
          admin: `hostmaster.${zone}`,
          serial: 1,
          refresh: 3600,
          retry: 600,
          expiration: 86400,
          minimum: soa.minimum,
        } as Resource);
      }
    }
    void send(response);
  }

  /** Listens on `address`, UDP and TCP on the same port (`port` 0 = any free one). */
  async start(port = 0, address = this.address): Promise<this> {
    this.address = address;
    const tcp = new TCPServer((req, send) => this.handle(req, send as (p: Packet) => Promise<Buffer>, true));
    tcp.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', reject);
      tcp.listen(port, address, () => resolve());
    });
    this.tcp = tcp;
    this.port = (tcp.address() as { port: number }).port;
    const udp = new UDPServer((req, send) => this.handle(req, send as (p: Packet) => Promise<Buffer>, false));
    udp.on('error', () => undefined);
    await udp.listen(this.port, address);
    this.udp = udp;
    return this;
  }

  async stop(): Promise<void> {
    const udp = this.udp;
    const tcp = this.tcp;
    this.udp = undefined;
    this.tcp = undefined;
    if (udp) await new Promise<void>((resolve) => udp.close(() => resolve()));
    if (tcp) {
      (tcp as Server & { closeAllConnections?: () => void }).closeAllConnections?.();
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
    }
  }
}

/** A UDP port that swallows every query: a resolver that never answers. */
export async function blackhole(address = '127.0.0.1'): Promise<{ resolver: string; port: number; stop: () => Promise<void> }> {
  const socket = createSocket('udp4');
  socket.on('message', () => undefined);
  await new Promise<void>((resolve) => socket.bind(0, address, () => resolve()));
  const port = socket.address().port;
  return { resolver: `${address}:${port}`, port, stop: () => new Promise<void>((resolve) => socket.close(() => resolve())) };
}

/** A TCP port on `address` nothing listens on (bound, then closed). */
export async function freeTcpPort(address = '127.0.0.1'): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, address, resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
