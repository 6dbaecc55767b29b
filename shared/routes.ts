import { isIP } from 'node:net';
import { quoteInput } from './errors.js';
import { normalizeDomain, parseRecipient } from './address.js';

/** One routing-table entry as operators write it (DESIGN.md section 2). */
export interface Route {
  match: string;
  target: string;
  hold?: boolean;
  /** "required": never deliver in plaintext (defer instead); default opportunistic STARTTLS. */
  tls?: 'may' | 'required';
  /** "probe": RCPT asks the next hop whether the address exists before accepting it (no list needed); default none. */
  verify?: 'probe' | 'none';
}

/** A parsed Postfix-style transport: smtp:[host]:port (no MX lookup) or smtp:host:port (MX lookup). */
export interface Target {
  host: string;
  port: number;
  mx: boolean;
}

export type MatchKind = 'address' | 'domain' | 'parent';

export class RouteError extends Error {
  readonly code = 'ROUTE';
}

const HOSTNAME = /^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$/i;

export function parseTarget(text: string): Target {
  const m = /^smtp:(?:\[(?:ipv6:)?([^\]]+)\]|([^:[\]\s]+))(?::(\d{1,5}))?$/i.exec(text.trim());
  if (!m) throw new RouteError(`target ${quoteInput(text)} is not smtp:[host]:port or smtp:host:port`);
  const port = m[3] === undefined ? 25 : Number(m[3]);
  if (port < 1 || port > 65535) throw new RouteError(`target ${quoteInput(text)} has port ${port} outside 1-65535`);
  const bracketed = m[1] !== undefined;
  const host = (m[1] ?? m[2])!;
  if (!isIP(host) && !HOSTNAME.test(host)) throw new RouteError(`target ${quoteInput(text)} has an invalid host ${quoteInput(host)}`);
  if (!bracketed && isIP(host)) throw new RouteError(`target ${quoteInput(text)}: an IP address needs brackets, smtp:[${host}]:${port}`);
  return { host: host.toLowerCase(), port, mx: !bracketed };
}

export function formatTarget(t: Target): string {
  const host = t.mx ? t.host : `[${t.host}]`;
  return `smtp:${host}:${t.port}`;
}

/** Canonical form of a MATCH key and its kind; throws RouteError on anything else. */
export function normalizeMatch(text: string): { key: string; kind: MatchKind } {
  const raw = text.trim();
  if (raw.includes('@')) {
    const parsed = parseRecipient(raw);
    if (!parsed.ok) throw new RouteError(`match ${quoteInput(text)}: ${parsed.reason}`);
    return { key: parsed.value.address, kind: 'address' };
  }
  const parent = raw.startsWith('.');
  const domain = normalizeDomain(parent ? raw.slice(1) : raw);
  if (!domain) throw new RouteError(`match ${quoteInput(text)} is not an address, a domain or .parent-domain`);
  return parent ? { key: `.${domain}`, kind: 'parent' } : { key: domain, kind: 'domain' };
}

/** Validates and canonicalises a whole table; duplicate matches are an error, not a silent override. */
export function normalizeRoutes(routes: readonly Route[]): Route[] {
  const seen = new Set<string>();
  return routes.map((r) => {
    const { key } = normalizeMatch(r.match);
    if (seen.has(key)) throw new RouteError(`match ${quoteInput(r.match)} appears twice`);
    seen.add(key);
    const target = formatTarget(parseTarget(r.target));
    const out: Route = { match: key, target };
    if (r.hold) out.hold = true;
    if (r.tls === 'required') out.tls = 'required';
    else if (r.tls !== undefined && r.tls !== 'may') throw new RouteError(`match ${quoteInput(r.match)}: tls must be "may" or "required"`);
    if (r.verify === 'probe') out.verify = 'probe';
    else if (r.verify !== undefined && r.verify !== 'none') throw new RouteError(`match ${quoteInput(r.match)}: verify must be "probe" or "none"`);
    return out;
  });
}

/** An immutable, indexed routing table: lookups are O(labels), swaps are a reference assignment. */
export class RouteTable {
  private readonly byKey: ReadonlyMap<string, Route>;
  readonly routes: readonly Route[];

  constructor(
    routes: readonly Route[],
    readonly version = 0,
  ) {
    this.routes = normalizeRoutes(routes);
    this.byKey = new Map(this.routes.map((r) => [r.match, r]));
  }

  /** The most specific route for a normalised address: address > domain > nearest parent. */
  lookup(address: string): Route | undefined {
    const exact = this.byKey.get(address);
    if (exact) return exact;
    const domain = address.slice(address.lastIndexOf('@') + 1);
    const direct = this.byKey.get(domain);
    if (direct) return direct;
    for (let i = domain.indexOf('.'); i !== -1; i = domain.indexOf('.', i + 1)) {
      const parent = this.byKey.get(domain.slice(i));
      if (parent) return parent;
    }
    return undefined;
  }

  get(match: string): Route | undefined {
    return this.byKey.get(normalizeMatch(match).key);
  }

  /** True when `address` (normalised) falls under `match` (normalised key), whatever more specific routes exist. */
  static covers(match: string, address: string): boolean {
    if (match.includes('@')) return match === address;
    const domain = address.slice(address.lastIndexOf('@') + 1);
    return match.startsWith('.') ? domain.endsWith(match) : domain === match;
  }
}
