import { getServers } from 'node:dns';
import { connect, isIP } from 'node:net';
import dns2 from 'dns2';

/**
 * One DNS question to one server, through the dns2 library (wire format, UDP client): UDP with retries and
 * a per-try timeout, TCP when the UDP answer is truncated, and an outcome that keeps NXDOMAIN, NODATA,
 * SERVFAIL, timeout and other failures apart. No caching: every call asks the server.
 */

const { Packet, UDPClient } = dns2;
export type DnsRecord = dns2.Packet.Resource;

export interface DnsServer {
  address: string;
  port: number;
}

/** A server to ask, with the label operators see ("system", "google 8.8.8.8", "127.0.0.1:5353"). */
export interface Resolver extends DnsServer {
  name: string;
}

export type QueryType = 'MX' | 'A' | 'AAAA' | 'NS' | 'SOA';
export type QueryStatus = 'ok' | 'nodata' | 'nxdomain' | 'servfail' | 'timeout' | 'error';

export interface QueryOptions {
  /** Whole budget for this question, split evenly across `tries` (default 3s). */
  timeoutMs?: number;
  /** UDP attempts before giving up as a timeout (default 2). */
  tries?: number;
  /** Set RD (ask a recursive resolver); false for questions to authoritative servers. Default true. */
  recursive?: boolean;
}

export interface QueryResult {
  status: QueryStatus;
  /** The records of the asked type in the answer section (CNAMEs leading to them are left out). */
  records: DnsRecord[];
  answers: DnsRecord[];
  authorities: DnsRecord[];
  additionals: DnsRecord[];
  /** The AA bit of the response. */
  authoritative: boolean;
  transport: 'udp' | 'tcp' | 'none';
  /** Why: the rcode name, the network error, or how long we waited. */
  detail?: string;
  elapsedMs: number;
}

/** The resolvers this machine is configured with (/etc/resolv.conf), as node:dns reads them. */
export function systemResolvers(): Resolver[] {
  const out: Resolver[] = [];
  for (const s of getServers()) {
    try {
      const { address, port } = parseServer(s);
      out.push({ name: 'system', address, port });
    } catch {
      // an unparsable entry is not ours to report
    }
  }
  return out;
}

/** Well-known public recursive resolvers: the default "rest of the world" view. */
export const PUBLIC_RESOLVERS: readonly Resolver[] = [
  { name: 'cloudflare', address: '1.1.1.1', port: 53 },
  { name: 'google', address: '8.8.8.8', port: 53 },
  { name: 'quad9', address: '9.9.9.9', port: 53 },
  { name: 'opendns', address: '208.67.222.222', port: 53 },
];

/** "IP", "IP:PORT", "IPv6" or "[IPv6]:PORT" -> server; throws with the reason otherwise. */
export function parseServer(text: string): DnsServer {
  const t = text.trim();
  let address: string;
  let port = 53;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(t);
  if (bracketed) {
    address = bracketed[1]!;
    if (bracketed[2] !== undefined) port = Number(bracketed[2]);
  } else if (isIP(t) === 6) {
    address = t;
  } else {
    const m = /^([^:]+)(?::(\d+))?$/.exec(t);
    if (!m) throw new Error(`"${text}" is not IP[:PORT]`);
    address = m[1]!;
    if (m[2] !== undefined) port = Number(m[2]);
  }
  if (!isIP(address)) throw new Error(`"${text}" is not IP[:PORT] (a resolver is given by address, not by name)`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`"${text}" has port ${port} outside 1-65535`);
  return { address, port };
}

export function formatServer(s: DnsServer): string {
  const host = isIP(s.address) === 6 ? `[${s.address}]` : s.address;
  return s.port === 53 ? host : `${host}:${s.port}`;
}

/** Lower case, no trailing dot; the root (a null MX's exchange) stays ".". */
export function normalizeName(name: string): string {
  const n = name.trim().toLowerCase().replace(/\.$/, '');
  return n === '' ? '.' : n;
}

const RCODE_NAMES: Record<number, string> = Object.fromEntries(Object.entries(Packet.RCODE).map(([k, v]) => [v, k]));

function classify(response: dns2.Packet, type: QueryType, transport: 'udp' | 'tcp', started: number): QueryResult {
  const rcode = response.header.rcode;
  const answers = response.answers ?? [];
  const records = answers.filter((r) => r.type === Packet.TYPE[type]);
  const base = {
    records,
    answers,
    authorities: response.authorities ?? [],
    additionals: response.additionals ?? [],
    authoritative: response.header.aa === 1,
    transport,
    elapsedMs: Date.now() - started,
  };
  if (rcode === Packet.RCODE.NOERROR) return { ...base, status: records.length ? 'ok' : 'nodata' };
  if (rcode === Packet.RCODE.NXDOMAIN) return { ...base, status: 'nxdomain', detail: 'NXDOMAIN' };
  if (rcode === Packet.RCODE.SERVFAIL) return { ...base, status: 'servfail', detail: 'SERVFAIL' };
  return { ...base, status: 'error', detail: RCODE_NAMES[rcode] ?? `rcode ${rcode}` };
}

function failed(status: 'timeout' | 'error', detail: string, started: number): QueryResult {
  return { status, records: [], answers: [], authorities: [], additionals: [], authoritative: false, transport: 'none', detail, elapsedMs: Date.now() - started };
}

/** One question over TCP (RFC 1035 4.2.2 framing, dns2's Packet for the message); the socket is destroyed on timeout. */
function overTcp(server: DnsServer, name: string, type: QueryType, recursive: boolean, timeoutMs: number): Promise<dns2.Packet> {
  return new Promise((resolve, reject) => {
    const query = new Packet();
    query.header.id = Packet.uuid();
    query.header.rd = recursive ? 1 : 0;
    query.questions.push(new Packet.Question(name, Packet.TYPE[type], Packet.CLASS.IN));
    const message = query.toBuffer();
    const length = Buffer.alloc(2);
    length.writeUInt16BE(message.length);
    const socket = connect({ host: server.address, port: server.port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(Object.assign(new Error(`no TCP answer within ${timeoutMs}ms`), { code: 'ETIMEDOUT' }));
    }, Math.max(1, timeoutMs));
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.write(Buffer.concat([length, message]));
    Packet.readStream(socket).then(
      (data) => {
        clearTimeout(timer);
        socket.destroy();
        try {
          const response = Packet.parse(data);
          if (response.header.id !== query.header.id) throw new Error(`TCP answer id ${response.header.id} does not match the query`);
          resolve(response);
        } catch (err) {
          reject(err);
        }
      },
      (err: unknown) => {
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      },
    );
  });
}

/** Asks `server` one question; never throws. */
export async function query(server: DnsServer, name: string, type: QueryType, opts: QueryOptions = {}): Promise<QueryResult> {
  const timeoutMs = opts.timeoutMs ?? 3000;
  const tries = Math.max(1, opts.tries ?? 2);
  const recursive = opts.recursive ?? true;
  const started = Date.now();
  const deadline = started + timeoutMs;
  const perTry = Math.max(50, Math.floor(timeoutMs / tries));
  const ask = UDPClient({ dns: server.address, port: server.port, timeout: perTry, retryOverTCP: false, socketType: isIP(server.address) === 6 ? 'udp6' : 'udp4' });
  let lastError = '';
  for (let attempt = 0; attempt < tries; attempt++) {
    let response: dns2.Packet;
    try {
      response = await ask(name, type, Packet.CLASS.IN, { recursive });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      lastError = e.code === 'ETIMEDOUT' ? '' : `${e.code ?? 'error'}: ${e.message}`;
      continue;
    }
    if (response.header.tc === 1) {
      // Truncated: the full answer only comes over TCP (RFC 7766), within what is left of the budget.
      try {
        return classify(await overTcp(server, name, type, recursive, Math.max(perTry, deadline - Date.now())), type, 'tcp', started);
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        return e.code === 'ETIMEDOUT' ? failed('timeout', `truncated UDP answer; ${e.message}`, started) : failed('error', `truncated UDP answer; TCP: ${e.code ?? ''} ${e.message}`.trim(), started);
      }
    }
    return classify(response, type, 'udp', started);
  }
  return lastError ? failed('error', lastError, started) : failed('timeout', `no answer after ${tries} ${tries === 1 ? 'try' : 'tries'} in ${Date.now() - started}ms`, started);
}

/** The negative-caching TTL of a NODATA/NXDOMAIN answer (RFC 2308: min of the SOA's TTL and MINIMUM), if it has a SOA. */
export function negativeTtl(result: QueryResult): number | null {
  const soa = result.authorities.find((r) => r.type === Packet.TYPE.SOA);
  if (!soa) return null;
  return Math.min(soa.ttl, soa.minimum ?? soa.ttl);
}

/** The owner name of the SOA in the authority section (the zone apex), if any. */
export function soaZone(result: QueryResult): string | null {
  const soa = result.authorities.find((r) => r.type === Packet.TYPE.SOA);
  return soa ? normalizeName(soa.name) : null;
}
