import { isIP } from 'node:net';
import { quoteInput } from './errors.js';
import { normalizeDomain, parseRecipient } from './address.js';
import type { RouteDelta } from './route-delta.js';

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

/**
 * Past this many changed entries a derived table folds them into a new index: each change copies at most this many
 * entries, and the O(table) fold comes once per this many changes.
 */
const OVERLAY_MIN = 1024;

/**
 * An immutable, indexed routing table: lookups are O(labels), swaps are a reference assignment. A table derived
 * with `withDelta` shares its parent's index and keeps only the changed entries beside it (folded into a new
 * index once there are OVERLAY_MIN of them), so applying one change to 100,000 routes costs O(change),
 * not a rebuild; `routes` is materialised on first use.
 */
export class RouteTable {
  private readonly base: ReadonlyMap<string, Route>;
  /** Entries changed since `base` was built; null = removed. */
  private readonly overlay: ReadonlyMap<string, Route | null>;
  private list: readonly Route[] | undefined;
  /** Number of routes. */
  readonly size: number;
  /** Number of held routes (the scheduler skips its hold pass over the queue when there are none). */
  readonly heldCount: number;

  constructor(routes: readonly Route[], version?: number);
  constructor(routes: readonly Route[], version: number, derived: { base: ReadonlyMap<string, Route>; overlay: ReadonlyMap<string, Route | null>; size: number; heldCount: number });
  constructor(
    routes: readonly Route[],
    readonly version = 0,
    derived?: { base: ReadonlyMap<string, Route>; overlay: ReadonlyMap<string, Route | null>; size: number; heldCount: number },
  ) {
    if (derived) {
      this.base = derived.base;
      this.overlay = derived.overlay;
      this.size = derived.size;
      this.heldCount = derived.heldCount;
      return;
    }
    const list = normalizeRoutes(routes);
    this.list = list;
    this.base = new Map(list.map((r) => [r.match, r]));
    this.overlay = new Map();
    this.size = list.length;
    this.heldCount = list.reduce((n, r) => n + (r.hold ? 1 : 0), 0);
  }

  /** Every route (the base index's order, then the changed entries). */
  get routes(): readonly Route[] {
    if (!this.list) {
      const out: Route[] = [];
      for (const [key, r] of this.base) {
        const o = this.overlay.get(key);
        if (o === undefined) out.push(r);
        else if (o) out.push(o);
      }
      for (const [key, o] of this.overlay) if (o && !this.base.has(key)) out.push(o);
      this.list = out;
    }
    return this.list;
  }

  /** The route stored under a normalised match key. */
  private entry(key: string): Route | undefined {
    const o = this.overlay.get(key);
    if (o !== undefined) return o ?? undefined;
    return this.base.get(key);
  }

  /**
   * This table with `delta` applied, at the delta's version: upserts are validated like any route (a bad one
   * throws RouteError and nothing changes), removals of matches the table lacks are no-ops. A snapshot delta
   * builds a new table.
   */
  withDelta(delta: RouteDelta): RouteTable {
    if (delta.snapshot) return new RouteTable(delta.upserts, delta.version);
    const upserts = normalizeRoutes(delta.upserts);
    const overlay = new Map(this.overlay);
    let size = this.size;
    let held = this.heldCount;
    const put = (key: string, next: Route | null) => {
      const old = overlay.has(key) ? (overlay.get(key) ?? undefined) : this.base.get(key);
      if (old) {
        size--;
        if (old.hold) held--;
      }
      if (next) {
        size++;
        if (next.hold) held++;
      }
      // An entry back to what the index has needs no overlay entry; a removal of what the index lacks neither.
      if (next ? this.base.get(key) === next : !this.base.has(key)) overlay.delete(key);
      else overlay.set(key, next);
    };
    for (const key of delta.removals) put(normalizeMatch(key).key, null);
    for (const r of upserts) put(r.match, r);
    const derived = new RouteTable([], delta.version, { base: this.base, overlay, size, heldCount: held });
    if (overlay.size <= OVERLAY_MIN) return derived;
    const base = new Map<string, Route>();
    for (const r of derived.routes) base.set(r.match, r);
    return new RouteTable([], delta.version, { base, overlay: new Map(), size, heldCount: held });
  }

  /** The most specific route for a normalised address: address > domain > nearest parent. */
  lookup(address: string): Route | undefined {
    const exact = this.entry(address);
    if (exact) return exact;
    const domain = address.slice(address.lastIndexOf('@') + 1);
    const direct = this.entry(domain);
    if (direct) return direct;
    for (let i = domain.indexOf('.'); i !== -1; i = domain.indexOf('.', i + 1)) {
      const parent = this.entry(domain.slice(i));
      if (parent) return parent;
    }
    return undefined;
  }

  get(match: string): Route | undefined {
    return this.entry(normalizeMatch(match).key);
  }

  /** True when `address` (normalised) falls under `match` (normalised key), whatever more specific routes exist. */
  static covers(match: string, address: string): boolean {
    if (match.includes('@')) return match === address;
    const domain = address.slice(address.lastIndexOf('@') + 1);
    return match.startsWith('.') ? domain.endsWith(match) : domain === match;
  }
}
