import { Command, Option } from 'commander';
import { checkMx, parseExpect, type MxCheck, type ResolverAnswer } from '../../../shared/dns/check.js';
import { formatServer, parseServer, PUBLIC_RESOLVERS, systemResolvers, type Resolver } from '../../../shared/dns/query.js';
import { errorMessage, UsageError } from '../../../shared/errors.js';
import { formatDuration, parseDuration } from '../../../shared/units.js';
import { action, emit, table } from '../output.js';

/**
 * `mxswitch dns check DOMAIN --expect HOST...`: has an MX change reached the world, and from when on can no
 * resolver still serve the old set? Exit 0 only when propagated.
 */

interface DnsCheckOptions {
  expect?: string[];
  resolver?: string[];
  authoritative: boolean;
  authoritativePort?: string;
  watch?: boolean;
  interval: string;
  timeout: string;
  json?: boolean;
}

const RESOLVERS_ENV = 'MXSWITCH_DNS_RESOLVERS';

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), ...value.split(',').map((s) => s.trim()).filter(Boolean)];
}

function label(r: Resolver): string {
  const addr = formatServer(r);
  return r.name === addr ? addr : `${r.name} ${addr}`;
}

/** --resolver values (or env MXSWITCH_DNS_RESOLVERS), else the system resolver plus the public ones. */
export function resolversFrom(values: readonly string[] | undefined, env: NodeJS.ProcessEnv = process.env): Resolver[] {
  const given = values?.length ? values : env[RESOLVERS_ENV] ? collect(env[RESOLVERS_ENV]!, []) : undefined;
  const source = values?.length ? '--resolver' : RESOLVERS_ENV;
  if (!given) return [...systemResolvers(), ...PUBLIC_RESOLVERS];
  const seen = new Set<string>();
  const out: Resolver[] = [];
  for (const text of given) {
    let server;
    try {
      server = parseServer(text);
    } catch (err) {
      throw new UsageError(`${source}: ${errorMessage(err)}`);
    }
    const name = formatServer(server);
    if (!seen.has(name)) out.push({ name, ...server });
    seen.add(name);
  }
  return out;
}

function parseOpts(domain: string, opts: DnsCheckOptions) {
  if (!/^(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*\.?$/i.test(domain)) throw new UsageError(`DOMAIN: "${domain}" is not a domain name`);
  const expect = (opts.expect ?? []).flatMap((e) => e.split(',')).map((e) => e.trim()).filter(Boolean);
  if (expect.length === 0) throw new UsageError('--expect: give the MX host(s) the domain should have, e.g. --expect mx1.new.example mx2.new.example');
  for (const e of expect) {
    try {
      parseExpect(e);
    } catch (err) {
      throw new UsageError(`--expect: ${errorMessage(err)}`);
    }
  }
  const duration = (name: string, text: string, min: number) => {
    let ms: number;
    try {
      ms = parseDuration(text);
    } catch (err) {
      throw new UsageError(`${name}: ${errorMessage(err)}`);
    }
    if (ms < min) throw new UsageError(`${name}: ${text} is too short (at least ${formatDuration(min)})`);
    return ms;
  };
  const intervalMs = duration('--interval', opts.interval, 1000);
  const timeoutMs = duration('--timeout', opts.timeout, 100);
  let authoritativePort = 53;
  if (opts.authoritativePort !== undefined) {
    authoritativePort = Number(opts.authoritativePort);
    if (!Number.isInteger(authoritativePort) || authoritativePort < 1 || authoritativePort > 65535) throw new UsageError(`--authoritative-port: "${opts.authoritativePort}" is not a port (1-65535)`);
  }
  return { expect, resolvers: resolversFrom(opts.resolver), intervalMs, timeoutMs, authoritativePort };
}

const when = (iso: string) => iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z');

function mxText(a: ResolverAnswer): string {
  if (a.status === 'ok') return a.mx.map((m) => `${m.preference} ${m.host}${m.addresses.length ? ` (${m.addresses.join(' ')})` : ''}`).join(', ');
  if (a.status === 'nodata') return 'no MX records (NODATA)';
  if (a.status === 'nxdomain') return 'domain does not exist (NXDOMAIN)';
  return a.detail ?? a.status;
}

function rows(answers: readonly ResolverAnswer[], name: (a: ResolverAnswer) => string): string[][] {
  return answers.map((a) => {
    const answered = a.status === 'ok' || a.status === 'nodata' || a.status === 'nxdomain';
    return [name(a), a.status, a.ttlSeconds === null ? '-' : `${a.ttlSeconds}s`, answered ? (a.matches ? 'yes' : 'NO') : '-', mxText(a)];
  });
}

function verdictLine(c: MxCheck): string {
  const total = c.resolvers.length + c.authoritative.servers.length;
  const parts = [`${c.matching} of ${c.answering} answering servers have the expected MX set`];
  if (c.unanswered) parts.push(`${c.unanswered} of ${total} did not answer (not counted)`);
  return `${c.verdict}: ${parts.join('; ')}`;
}

function safeLine(c: MxCheck): string {
  if (!c.safeKnown) return `no answer: cannot tell when it is safe (${c.safeReason})`;
  if (c.safeInSeconds === 0) return `safe now: ${c.safeReason}`;
  return `safe after ${when(c.safeAfter)} (in ${formatDuration(c.safeInSeconds * 1000)}): ${c.safeReason}`;
}

export function renderCheck(c: MxCheck): string {
  const headers = ['RESOLVER', 'STATUS', 'TTL', 'MATCH', 'MX'];
  const out = [`MX of ${c.domain} at ${when(c.checkedAt)}; expected: ${c.expect.join(', ')}`, '', table(headers, rows(c.resolvers, (a) => label(a.resolver)))];
  const auth = c.authoritative;
  if (auth.status === 'skipped') out.push('', 'authoritative servers: not asked (--no-authoritative)');
  else {
    out.push('', `AUTHORITATIVE${auth.zone ? ` (zone ${auth.zone}${auth.ttlSeconds !== null ? `, MX TTL ${auth.ttlSeconds}s` : ''})` : ''}${auth.detail ? `: ${auth.detail}` : ''}`);
    if (auth.servers.length) out.push(table(['NAMESERVER', 'STATUS', 'TTL', 'MATCH', 'MX'], rows(auth.servers, (a) => `${a.resolver.name} ${formatServer(a.resolver)}`)));
  }
  out.push('', verdictLine(c), safeLine(c));
  return out.join('\n');
}

/** One progress line for --watch: verdict and safe-after first (a terminal line may be cut), then who is behind. */
export function progressLine(c: MxCheck, n: number): string {
  const isAnswer = (a: ResolverAnswer) => a.status === 'ok' || a.status === 'nodata' || a.status === 'nxdomain';
  const stale = c.resolvers.filter((a) => isAnswer(a) && !a.matches);
  const silent = c.resolvers.filter((a) => !isAnswer(a));
  const authOld = c.authoritative.servers.filter((a) => isAnswer(a) && !a.matches);
  const at = c.safeInSeconds < 86_400 ? `${c.safeAfter.slice(11, 19)}Z` : when(c.safeAfter);
  const parts = [`${c.checkedAt.slice(11, 19)} check ${n}: ${c.verdict}, ${c.matching}/${c.answering} match`];
  parts.push(!c.safeKnown ? 'safe: unknown (no answer)' : c.safeInSeconds ? `safe after ${at} (in ${formatDuration(c.safeInSeconds * 1000)})` : 'safe now');
  if (stale.length) parts.push(`old: ${stale.map((a) => `${label(a.resolver)}${a.ttlSeconds !== null ? ` (TTL ${a.ttlSeconds}s)` : ''}`).join(', ')}`);
  if (authOld.length) parts.push(`authoritative not updated: ${authOld.map((a) => a.resolver.name).join(', ')}`);
  if (silent.length) parts.push(`no answer: ${silent.map((a) => `${label(a.resolver)} (${a.status})`).join(', ')}`);
  return parts.join('; ');
}

function failureLine(c: MxCheck): string {
  return `MX of ${c.domain} not propagated (${verdictLine(c)}); ${!c.safeKnown ? 'no answer to tell when it is safe' : c.safeInSeconds ? `safe after ${when(c.safeAfter)}` : 'no TTL left to wait for'}`;
}

async function run(domain: string, opts: DnsCheckOptions): Promise<void> {
  const p = parseOpts(domain, opts);
  const check = () =>
    checkMx(domain, p.expect, p.resolvers, { timeoutMs: p.timeoutMs, authoritative: opts.authoritative, authoritativePort: p.authoritativePort });
  const finish = (c: MxCheck) => {
    if (c.verdict === 'propagated') return;
    process.stderr.write(`mxswitch: ${failureLine(c)}\n`);
    process.exitCode = 1;
  };

  if (!opts.watch) {
    const c = await check();
    emit(opts, c, renderCheck);
    return finish(c);
  }

  const tty = !opts.json && process.stdout.isTTY === true && process.env.TERM !== 'dumb';
  const CLEAR = '\r\x1b[2K';
  for (let n = 1; ; n++) {
    const c = await check();
    if (c.verdict === 'propagated') {
      if (opts.json) process.stdout.write(`${JSON.stringify({ type: 'result', ok: true, checks: n, ...c })}\n`);
      else process.stdout.write(`${tty ? CLEAR : ''}${renderCheck(c)}\n`);
      return;
    }
    if (opts.json) process.stdout.write(`${JSON.stringify({ type: 'progress', check: n, ...c })}\n`);
    else {
      const line = progressLine(c, n);
      const width = Math.max(20, (process.stdout.columns || 100) - 1);
      process.stdout.write(tty ? `${CLEAR}${line.length > width ? `${line.slice(0, width - 1)}…` : line}` : `${line}\n`);
    }
    // Re-check after the interval, or as soon as the last stale TTL has run out if that is sooner.
    const wait = Math.min(p.intervalMs, Math.max(1000, c.safeInSeconds * 1000 + 1000));
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
}

const HELP = `
Asks every resolver for DOMAIN's MX (UDP, TCP when truncated; retries within --timeout), resolves the MX hosts'
addresses through the same resolver, and (unless --no-authoritative) looks up DOMAIN's NS and asks each
authoritative server directly. A resolver that times out or fails is shown as such: it is neither a match
nor a mismatch.

Verdict: propagated = every server that answered has exactly the --expect hosts (and preferences, for
PREF:HOST items); not-propagated = none has; partial otherwise.
Safe after: now + the largest remaining TTL of a resolver that still serves another answer, and the
authoritative TTL for a resolver that did not answer (its cache could hold the old set that long). Resolvers
not checked may hold the old set for up to the old record's TTL after the change.

Resolvers: default the system resolver (/etc/resolv.conf) plus 1.1.1.1, 8.8.8.8, 9.9.9.9 and
208.67.222.222; --resolver (repeatable, or comma-separated) or env ${RESOLVERS_ENV} replaces that list.

--watch re-checks every --interval (sooner when the last stale TTL runs out) until propagated: one progress
line per check (redrawn in place on a terminal; with --json one {"type":"progress"} object per check and a
final {"type":"result"} object).

Exit status: 0 = propagated; 1 = not (yet) propagated (one line on stderr with the verdict and safe-after
time); 2 = bad arguments.

Examples:
  mxswitch dns check example.com --expect mx1.new.example mx2.new.example
  mxswitch dns check example.com --expect 10:mx1.new.example --resolver 10.0.0.53 --watch --interval 1m`;

/** Adds `mxswitch dns check`. */
export function registerDnsCommand(program: Command): Command {
  const dns = program.command('dns').description('DNS checks for an MX migration: has the MX change reached the world, and when is it safe to go on?');
  dns
    .command('check')
    .description('Check DOMAIN\'s MX on several resolvers and its authoritative servers against --expect; TTL-aware "safe after" time.')
    .argument('<domain>', 'the mail domain (example.com)')
    .option('--expect <host...>', 'the MX hosts DOMAIN should have (HOST or PREFERENCE:HOST; several, repeatable or comma-separated)')
    .option('--resolver <ip[:port]>', `resolver to ask instead of the default list (repeatable; env ${RESOLVERS_ENV})`, collect)
    .option('--no-authoritative', 'do not look up NS and ask the authoritative servers')
    .addOption(new Option('--authoritative-port <port>', 'port the authoritative servers are asked on (lab setups; default 53)').hideHelp())
    .option('--watch', 're-check until propagated, with progress')
    .option('--interval <duration>', 'with --watch: time between checks', '30s')
    .option('--timeout <duration>', 'per question and resolver, across 2 tries', '3s')
    .option('--json', 'machine-readable output')
    .addHelpText('after', HELP)
    .action(action(run));
  return dns;
}
