import { networkInterfaces } from 'node:os';
import type { Target } from '../shared/routes.js';
import { normalizeName, parseServer, query, systemResolvers, negativeTtl, type DnsServer, type QueryResult } from '../shared/dns/query.js';

/**
 * Next-hop selection for `smtp:host:port` targets (RFC 5321 section 5.1): host's MX records in preference
 * order (equal preferences shuffled), or host itself when it has no MX; the addresses of each. Null MX
 * (RFC 7505) and NXDOMAIN are permanent, SERVFAIL and timeouts temporary. Loop protection: when this agent
 * is one of the MX hosts (by address or by its own hostname), it and every MX host at the same or a worse
 * preference are dropped, so a fleet listed at equal preference never forwards mail around among itself.
 */

export interface MxCandidate {
  /** The MX host name (or the target host itself for the implicit MX). */
  host: string;
  address: string;
  preference: number;
}

export type MxResolution =
  | { ok: true; candidates: MxCandidate[]; implicit: boolean }
  | { ok: false; status: 'permanent' | 'temporary'; reply: string };

export interface MxResolverOptions {
  /** Recursive resolvers as "IP[:PORT]", asked in order (the next one when one fails); default the system's. */
  resolvers?: readonly string[];
  /** This agent's own name (its HELO name): an MX host of that name is us. */
  hostname: string;
  /** Per DNS question, across tries; default 5s. */
  timeoutMs?: number;
  tries?: number;
  /** This machine's addresses; default from os.networkInterfaces(). */
  localAddresses?: () => ReadonlySet<string>;
  /** For the shuffle of equal preferences. */
  random?: () => number;
  /** Upper bound on addresses tried per delivery (Postfix smtp_mx_address_limit is 5). Default 10. */
  maxCandidates?: number;
  /** Longest a positive answer is reused, seconds (its TTL rules below that). Default 3600. */
  maxCacheSeconds?: number;
}

interface Host {
  host: string;
  preference: number;
  addresses: string[];
}

type Looked = { ok: true; hosts: Host[]; implicit: boolean; ttl: number } | { ok: false; status: 'permanent' | 'temporary'; reply: string; ttl: number };

function ownAddresses(): ReadonlySet<string> {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.add(a.address.toLowerCase());
  return out;
}

export class MxResolver {
  private readonly servers: DnsServer[];
  private readonly cache = new Map<string, { expires: number; value: Promise<Looked> }>();
  private locals: { at: number; set: ReadonlySet<string> } | undefined;

  constructor(private readonly opts: MxResolverOptions) {
    this.servers = opts.resolvers?.length ? opts.resolvers.map((s) => parseServer(s)) : systemResolvers();
    if (this.servers.length === 0) this.servers = [{ address: '127.0.0.1', port: 53 }];
  }

  /** Where mail for `domain` goes now: candidates in the order to try, or why not. Never throws. */
  async resolve(domainText: string): Promise<MxResolution> {
    const domain = normalizeName(domainText);
    let looked: Looked;
    try {
      looked = await this.lookup(domain);
    } catch (err) {
      return { ok: false, status: 'temporary', reply: `4.4.3 MX lookup for ${domain} failed: ${err instanceof Error ? err.message : String(err)}` };
    }
    if (!looked.ok) return { ok: false, status: looked.status, reply: looked.reply };

    const self = this.selfCheck();
    const isSelf = (h: Host) => normalizeName(h.host) === normalizeName(this.opts.hostname) || h.addresses.some((a) => self.has(a.toLowerCase()));
    const ours = looked.hosts.filter(isSelf);
    // RFC 5321 5.1: we are an MX host: only hosts with a strictly better (lower) preference may be used.
    const limit = ours.length ? Math.min(...ours.map((h) => h.preference)) : Infinity;
    const usable = looked.hosts.filter((h) => h.preference < limit && !isSelf(h));
    if (usable.length === 0 && ours.length) return { ok: false, status: 'temporary', reply: `4.4.6 mail for ${domain} loops back to myself (MX ${ours.map((h) => h.host).join(', ')} is this agent)` };
    const withAddresses = usable.filter((h) => h.addresses.length);
    if (withAddresses.length === 0) return { ok: false, status: 'temporary', reply: `4.4.4 no MX host of ${domain} has an address (${usable.map((h) => h.host).join(', ')})` };

    const candidates: MxCandidate[] = [];
    for (const h of this.order(withAddresses)) for (const address of h.addresses) candidates.push({ host: h.host, address, preference: h.preference });
    return { ok: true, candidates: candidates.slice(0, this.opts.maxCandidates ?? 10), implicit: looked.implicit };
  }

  /** Preference order; hosts with the same preference in random order (RFC 5321 5.1 load spreading). */
  private order(hosts: Host[]): Host[] {
    const random = this.opts.random ?? Math.random;
    const keyed = hosts.map((h) => ({ h, k: random() }));
    keyed.sort((a, b) => a.h.preference - b.h.preference || a.k - b.k);
    return keyed.map((x) => x.h);
  }

  private selfCheck(): ReadonlySet<string> {
    if (this.opts.localAddresses) return this.opts.localAddresses();
    if (!this.locals || Date.now() - this.locals.at > 60_000) this.locals = { at: Date.now(), set: ownAddresses() };
    return this.locals.set;
  }

  /** Cached by the answers' TTL; failures (temporary) are not kept beyond the lookup in flight. */
  private lookup(domain: string): Promise<Looked> {
    const now = Date.now();
    const hit = this.cache.get(domain);
    if (hit && hit.expires > now) return hit.value;
    const entry = { expires: Infinity, value: this.lookupUncached(domain) };
    this.cache.set(domain, entry);
    entry.value.then(
      (looked) => {
        if (looked.ok || looked.status === 'permanent') entry.expires = Date.now() + Math.min(looked.ttl, this.opts.maxCacheSeconds ?? 3600) * 1000;
        else this.cache.delete(domain);
        if (this.cache.size > 10_000) for (const [k, v] of this.cache) if (v.expires <= Date.now()) this.cache.delete(k);
      },
      () => this.cache.delete(domain),
    );
    return entry.value;
  }

  /** The first definitive answer (records, NODATA, NXDOMAIN) from the resolvers in order. */
  private async ask(name: string, type: 'MX' | 'A' | 'AAAA'): Promise<QueryResult & { server: DnsServer }> {
    let last: (QueryResult & { server: DnsServer }) | undefined;
    for (const server of this.servers) {
      const result = await query(server, name, type, { timeoutMs: this.opts.timeoutMs ?? 5000, tries: this.opts.tries ?? 2 });
      last = { ...result, server };
      if (result.status === 'ok' || result.status === 'nodata' || result.status === 'nxdomain') return last;
    }
    return last!;
  }

  private async addresses(host: string): Promise<{ addresses: string[]; ttl: number; failure?: string }> {
    const [a, aaaa] = await Promise.all([this.ask(host, 'A'), this.ask(host, 'AAAA')]);
    const records = [...a.records, ...aaaa.records];
    const failed = [a, aaaa].find((r) => r.status === 'servfail' || r.status === 'timeout' || r.status === 'error');
    const out: { addresses: string[]; ttl: number; failure?: string } = {
      addresses: records.map((r) => r.address ?? '').filter(Boolean),
      ttl: records.length ? Math.min(...records.map((r) => r.ttl)) : 60,
    };
    if (failed && records.length === 0) out.failure = `${host}: ${failed.detail ?? failed.status}`;
    return out;
  }

  private async lookupUncached(domain: string): Promise<Looked> {
    const mx = await this.ask(domain, 'MX');
    const where = `${mx.server.address}:${mx.server.port}`;
    if (mx.status === 'nxdomain') return { ok: false, status: 'permanent', reply: `5.1.2 domain ${domain} does not exist (NXDOMAIN from ${where})`, ttl: negativeTtl(mx) ?? 60 };
    if (mx.status !== 'ok' && mx.status !== 'nodata') return { ok: false, status: 'temporary', reply: `4.4.3 DNS lookup of MX for ${domain} failed: ${mx.detail ?? mx.status} (resolver ${where})`, ttl: 0 };

    let hosts: { host: string; preference: number }[];
    let implicit = false;
    let ttl: number;
    if (mx.status === 'nodata') {
      // RFC 5321 5.1: no MX records -> the domain itself is the implicit MX (preference 0).
      hosts = [{ host: domain, preference: 0 }];
      implicit = true;
      ttl = negativeTtl(mx) ?? 60;
    } else {
      const records = mx.records.map((r) => ({ host: normalizeName(r.exchange ?? ''), preference: r.priority ?? 0 }));
      ttl = Math.min(...mx.records.map((r) => r.ttl));
      hosts = records.filter((r) => r.host !== '.');
      // RFC 7505: "MX 0 ." alone says the domain accepts no mail at all.
      if (hosts.length === 0) return { ok: false, status: 'permanent', reply: `5.1.10 ${domain} accepts no mail (null MX, RFC 7505)`, ttl };
    }

    const resolved = await Promise.all(hosts.map(async (h) => ({ ...h, ...(await this.addresses(h.host)) })));
    const withAddresses = resolved.filter((h) => h.addresses.length);
    if (withAddresses.length === 0) {
      const failures = resolved.map((h) => h.failure).filter(Boolean);
      if (implicit && failures.length === 0) return { ok: false, status: 'temporary', reply: `4.4.4 ${domain} has neither MX nor address records`, ttl: 0 };
      if (failures.length) return { ok: false, status: 'temporary', reply: `4.4.3 DNS lookup of the MX hosts of ${domain} failed: ${failures.join('; ')}`, ttl: 0 };
    }
    // An MX host whose lookup failed is retried after a minute, not after the others' TTL.
    const cap = resolved.some((h) => h.failure) ? 60 : Infinity;
    return { ok: true, hosts: resolved.map(({ host, preference, addresses }) => ({ host, preference, addresses })), implicit, ttl: Math.min(ttl, cap, ...withAddresses.map((h) => h.ttl)) };
  }
}

/** Where to connect for a target, in order: the bracketed host itself, or its MX candidates. */
export async function nextHops(mx: MxResolver, target: Target): Promise<{ address: string; name?: string }[] | { status: 'permanent' | 'temporary'; reply: string }> {
  if (!target.mx) return [{ address: target.host }];
  const r = await mx.resolve(target.host);
  if (!r.ok) return { status: r.status, reply: r.reply };
  return r.candidates.map((c) => ({ address: c.address, name: c.host }));
}
