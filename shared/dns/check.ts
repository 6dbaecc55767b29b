import { normalizeName, negativeTtl, query, soaZone, formatServer, type DnsRecord, type QueryOptions, type QueryResult, type QueryStatus, type Resolver } from './query.js';

/**
 * MX propagation check: what several recursive resolvers and the domain's authoritative servers answer for
 * DOMAIN's MX right now, whether that is the expected set, and from when on no resolver can still serve the
 * old set (TTL arithmetic, see `safeAfter`).
 */

export interface MxHost {
  preference: number;
  host: string;
  addresses: string[];
}

export interface ResolverAnswer {
  resolver: Resolver;
  status: QueryStatus;
  mx: MxHost[];
  /** Remaining TTL the resolver reports (for NODATA/NXDOMAIN its negative-caching TTL, when it sent a SOA). */
  ttlSeconds: number | null;
  /** The MX set equals --expect. Never true for a resolver that did not answer. */
  matches: boolean;
  transport: 'udp' | 'tcp' | 'none';
  detail?: string;
  elapsedMs: number;
}

export interface AuthoritativeAnswer extends ResolverAnswer {
  /** The NS host name this address belongs to. */
  nameserver: string;
}

export type Verdict = 'propagated' | 'partial' | 'not-propagated';

export interface MxCheck {
  domain: string;
  expect: string[];
  checkedAt: string;
  resolvers: ResolverAnswer[];
  authoritative: {
    status: 'ok' | 'failed' | 'skipped';
    zone: string | null;
    /** The TTL the zone publishes for DOMAIN's MX (the largest among the authoritative answers). */
    ttlSeconds: number | null;
    servers: AuthoritativeAnswer[];
    detail?: string;
  };
  verdict: Verdict;
  /** Resolvers and authoritative servers with a definitive answer (records, NODATA or NXDOMAIN). */
  answering: number;
  matching: number;
  /** Resolvers that timed out, failed or returned SERVFAIL: neither matching nor mismatching. */
  unanswered: number;
  /** The latest moment a checked resolver may still serve an MX set other than the expected one. */
  safeAfter: string;
  safeInSeconds: number;
  /**
   * False when the check cannot tell when it is safe: nothing answered, or a resolver was silent and no TTL was
   * seen anywhere to bound its cache (safeInSeconds is then 0 and means nothing).
   */
  safeKnown: boolean;
  /** How safeInSeconds was found (or why it is unknown), for humans. */
  safeReason: string;
}

export interface CheckMxOptions {
  /** Per question (split across tries); default 3s. */
  timeoutMs?: number;
  tries?: number;
  /** Ask the domain's authoritative servers directly (default true). */
  authoritative?: boolean;
  /** Port authoritative servers are asked on (default 53; lab setups run them elsewhere). */
  authoritativePort?: number;
  /** At most this many authoritative addresses are asked (default 8). */
  maxAuthoritative?: number;
  now?: () => number;
}

/** One --expect item: "HOST" or "PREF:HOST" (then the preference must match too). */
export interface Expectation {
  host: string;
  preference?: number;
}

export function parseExpect(text: string): Expectation {
  const m = /^(?:(\d{1,5}):)?([^\s:]+)$/.exec(text.trim());
  if (!m) throw new Error(`"${text}" is not HOST or PREFERENCE:HOST`);
  const host = normalizeName(m[2]!);
  if (host !== '.' && !/^(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*$/.test(host)) throw new Error(`"${text}": "${m[2]}" is not a host name`);
  const preference = m[1] === undefined ? undefined : Number(m[1]);
  if (preference !== undefined && preference > 65535) throw new Error(`"${text}": preference ${preference} is outside 0-65535`);
  return preference === undefined ? { host } : { host, preference };
}

function formatExpectation(e: Expectation): string {
  return e.preference === undefined ? e.host : `${e.preference}:${e.host}`;
}

/** The MX set equals the expectation: same hosts (and preferences where given). */
export function mxMatches(mx: readonly MxHost[], expect: readonly Expectation[]): boolean {
  const hosts = new Set(mx.map((m) => m.host));
  const wanted = new Set(expect.map((e) => e.host));
  if (hosts.size !== wanted.size || [...wanted].some((h) => !hosts.has(h))) return false;
  return expect.every((e) => e.preference === undefined || mx.some((m) => m.host === e.host && m.preference === e.preference));
}

const who = (r: Resolver) => (r.name === formatServer(r) ? r.name : `${r.name} (${formatServer(r)})`);

const answered = (s: QueryStatus) => s === 'ok' || s === 'nodata' || s === 'nxdomain';

function mxOf(records: readonly DnsRecord[]): MxHost[] {
  return records
    .map((r) => ({ preference: r.priority ?? 0, host: normalizeName(r.exchange ?? ''), addresses: [] as string[] }))
    .sort((a, b) => a.preference - b.preference || a.host.localeCompare(b.host));
}

function ttlOf(result: QueryResult): number | null {
  if (result.status === 'ok') return Math.min(...result.records.map((r) => r.ttl));
  if (result.status === 'nodata' || result.status === 'nxdomain') return negativeTtl(result);
  return null;
}

/** Addresses of each MX host through the same resolver (A and AAAA), so "which IPs" is that resolver's view too. */
async function addAddresses(resolver: Resolver, mx: MxHost[], opts: QueryOptions): Promise<void> {
  await Promise.all(
    mx.map(async (m) => {
      if (m.host === '.') return;
      const [a, aaaa] = await Promise.all([query(resolver, m.host, 'A', opts), query(resolver, m.host, 'AAAA', opts)]);
      m.addresses = [...a.records, ...aaaa.records].map((r) => r.address ?? '').filter(Boolean);
    }),
  );
}

async function askResolver(resolver: Resolver, domain: string, expect: readonly Expectation[], opts: QueryOptions): Promise<ResolverAnswer> {
  const result = await query(resolver, domain, 'MX', opts);
  const mx = mxOf(result.records);
  if (result.status === 'ok') await addAddresses(resolver, mx, opts);
  const answer: ResolverAnswer = {
    resolver,
    status: result.status,
    mx,
    ttlSeconds: ttlOf(result),
    matches: result.status === 'ok' && mxMatches(mx, expect),
    transport: result.transport,
    elapsedMs: result.elapsedMs,
  };
  if (result.detail) answer.detail = result.detail;
  return answer;
}

/** NS lookup through the first resolver that answers, then MX from each authoritative address with RD off. */
async function askAuthoritative(domain: string, resolvers: readonly Resolver[], expect: readonly Expectation[], opts: QueryOptions, port: number, max: number): Promise<MxCheck['authoritative']> {
  let zone = domain;
  let ns: QueryResult | undefined;
  let via: Resolver | undefined;
  const problems: string[] = [];
  for (const resolver of resolvers) {
    let result = await query(resolver, zone, 'NS', opts);
    // DOMAIN below a zone apex: the NODATA/NXDOMAIN answer's SOA names the zone; ask for that zone's NS.
    if ((result.status === 'nodata' || result.status === 'nxdomain') && soaZone(result) && soaZone(result) !== zone) {
      zone = soaZone(result)!;
      result = await query(resolver, zone, 'NS', opts);
    }
    if (result.status === 'ok') {
      ns = result;
      via = resolver;
      break;
    }
    problems.push(`${resolver.name}: ${result.detail ?? result.status}`);
    if (result.status === 'nxdomain') break;
  }
  if (!ns || !via) return { status: 'failed', zone: null, ttlSeconds: null, servers: [], detail: `NS lookup failed (${problems.join('; ')})` };

  const names = [...new Set(ns.records.map((r) => normalizeName(r.ns ?? r.domain ?? '')))].filter((n) => n !== '.').sort();
  const targets: { nameserver: string; address: string }[] = [];
  await Promise.all(
    names.map(async (name) => {
      // Glue from the additional section, else an A lookup through the same resolver.
      let addresses = ns!.additionals.filter((r) => normalizeName(r.name) === name && r.type === 1 && r.address).map((r) => r.address!);
      if (addresses.length === 0) addresses = (await query(via!, name, 'A', opts)).records.map((r) => r.address ?? '').filter(Boolean);
      for (const address of addresses) targets.push({ nameserver: name, address });
    }),
  );
  targets.sort((a, b) => a.nameserver.localeCompare(b.nameserver) || a.address.localeCompare(b.address));
  if (targets.length === 0) return { status: 'failed', zone, ttlSeconds: null, servers: [], detail: `no address for the nameservers of ${zone} (${names.join(', ')})` };

  const servers = await Promise.all(
    targets.slice(0, max).map(async ({ nameserver, address }): Promise<AuthoritativeAnswer> => {
      const resolver: Resolver = { name: nameserver, address, port };
      const result = await query(resolver, domain, 'MX', { ...opts, recursive: false });
      const mx = mxOf(result.records);
      // Glue for the MX hosts if the server sent it; authoritative servers do not resolve for us.
      for (const m of mx) m.addresses = result.additionals.filter((r) => normalizeName(r.name) === m.host && r.address).map((r) => r.address!);
      let status = result.status;
      let detail = result.detail;
      if (answered(status) && !result.authoritative) {
        // A lame delegation: the server answers but is not authoritative for the zone.
        status = 'error';
        detail = 'answer not authoritative (lame delegation)';
      }
      const answer: AuthoritativeAnswer = {
        resolver,
        nameserver,
        status,
        mx,
        ttlSeconds: answered(status) ? ttlOf(result) : null,
        matches: status === 'ok' && mxMatches(mx, expect),
        transport: result.transport,
        elapsedMs: result.elapsedMs,
      };
      if (detail) answer.detail = detail;
      return answer;
    }),
  );
  const ttls = servers.filter((s) => s.status === 'ok' && s.ttlSeconds !== null).map((s) => s.ttlSeconds!);
  const ok = servers.some((s) => answered(s.status));
  const out: MxCheck['authoritative'] = { status: ok ? 'ok' : 'failed', zone, ttlSeconds: ttls.length ? Math.max(...ttls) : null, servers };
  if (!ok) out.detail = 'no authoritative server answered';
  return out;
}

/**
 * Checks DOMAIN's MX against `expect` on every resolver (in parallel) and, unless disabled, on the zone's
 * authoritative servers.
 *
 * Verdict: propagated when every resolver or authoritative server that answered (records, NODATA or
 * NXDOMAIN) has the expected set and at least one answered; not-propagated when none of them has it;
 * partial otherwise. A timeout, SERVFAIL or other failure is neither a match nor a mismatch.
 *
 * safeAfter = now + the largest of: the remaining TTL of each answering resolver that does not match (it
 * may serve its old answer until then, then asks again), and, for each resolver whose cache we could not
 * see (timeout/failure), the authoritative TTL (it may have cached the old set for up to a full TTL).
 * Without an authoritative TTL the largest TTL any resolver reported stands in for it.
 */
export async function checkMx(domainText: string, expectText: readonly string[], resolvers: readonly Resolver[], options: CheckMxOptions = {}): Promise<MxCheck> {
  const now = options.now ?? Date.now;
  const domain = normalizeName(domainText);
  const expect = expectText.map(parseExpect);
  if (expect.length === 0) throw new Error('at least one expected MX host is needed');
  if (resolvers.length === 0) throw new Error('at least one resolver is needed');
  const qopts: QueryOptions = { timeoutMs: options.timeoutMs ?? 3000, tries: options.tries ?? 2 };
  const [answers, authoritative] = await Promise.all([
    Promise.all(resolvers.map((r) => askResolver(r, domain, expect, qopts))),
    options.authoritative === false
      ? Promise.resolve<MxCheck['authoritative']>({ status: 'skipped', zone: null, ttlSeconds: null, servers: [] })
      : askAuthoritative(domain, resolvers, expect, qopts, options.authoritativePort ?? 53, options.maxAuthoritative ?? 8),
  ]);
  const at = now();

  const all = [...answers, ...authoritative.servers];
  const answering = all.filter((a) => answered(a.status));
  const matching = answering.filter((a) => a.matches);
  const verdict: Verdict = answering.length > 0 && matching.length === answering.length ? 'propagated' : matching.length === 0 ? 'not-propagated' : 'partial';

  const reportedTtls = answers.filter((a) => a.ttlSeconds !== null).map((a) => a.ttlSeconds!);
  const fullTtl = authoritative.ttlSeconds ?? (reportedTtls.length ? Math.max(...reportedTtls) : null);
  let safeIn = 0;
  let safeReason = 'every checked resolver already serves the expected MX set';
  let unknown = answering.length === 0 ? 'no resolver or authoritative server answered' : '';
  for (const a of answers) {
    let wait: number | null = null;
    let why = '';
    if (answered(a.status) && !a.matches) {
      wait = a.ttlSeconds ?? fullTtl;
      why = `${who(a.resolver)} may serve its current ${a.status === 'ok' ? 'MX set' : a.status.toUpperCase()} for ${wait ?? '?'}s more`;
    } else if (!answered(a.status)) {
      wait = fullTtl;
      why = `${who(a.resolver)} did not answer (${a.status}): assuming it may hold an old set for a full TTL (${fullTtl ?? '?'}s)`;
    }
    if (wait !== null && wait > safeIn) {
      safeIn = wait;
      safeReason = why;
    } else if (wait === null && why) unknown ||= `${why}; no TTL known to bound it`;
  }

  return {
    domain,
    expect: expect.map(formatExpectation),
    checkedAt: new Date(at).toISOString(),
    resolvers: answers,
    authoritative,
    verdict,
    answering: answering.length,
    matching: matching.length,
    unanswered: all.length - answering.length,
    safeAfter: new Date(at + safeIn * 1000).toISOString(),
    safeInSeconds: safeIn,
    safeKnown: !unknown,
    safeReason: unknown || safeReason,
  };
}
