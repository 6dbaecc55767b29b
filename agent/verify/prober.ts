import type { Logger } from '../../shared/logger.js';
import type { Target } from '../../shared/routes.js';
import { nextHops, type MxResolver } from '../mx-resolver.js';
import { ProbeSession, type ProbeAnswer } from './smtp-probe.js';

export interface ProberOptions {
  helo: string;
  /** Per connection attempt and per reply. */
  timeoutMs: number;
  /** Probes per second per next hop; more are answered "busy" at once. */
  probesPerSecond: number;
  mx: MxResolver;
  log: Logger;
}

/** Per next hop: one reused probe session, questions asked one after another, and a token bucket. */
interface Hop {
  session: Promise<ProbeSession> | undefined;
  tail: Promise<unknown>;
  tokens: number;
  refilledAt: number;
}

/**
 * Asks next hops about recipients, sharing one connection per hop across all SMTP sessions and rate-limited per
 * hop, so a dictionary attack on us does not become one on the server we protect. Never throws: a failure is
 * an "unsure" answer with the reason.
 */
export class Prober {
  private readonly hops = new Map<string, Hop>();

  constructor(private readonly opts: ProberOptions) {}

  async probe(target: Target, rcpt: string): Promise<ProbeAnswer> {
    const resolved = await nextHops(this.opts.mx, target);
    if (!Array.isArray(resolved)) return { kind: 'unsure', reply: resolved.reply };
    // Only the first host: a probe that cannot tell falls back to the unreachable policy rather than walking MX hosts.
    const first = resolved[0];
    if (!first) return { kind: 'unsure', reply: `no address for ${target.host}` };
    const key = `${first.address}:${target.port}`;
    const hop = this.hop(key);
    if (!this.take(hop)) return { kind: 'busy', reply: `verification rate limit for ${key} (${this.opts.probesPerSecond}/s); try again later` };
    const run = hop.tail.then(() => this.ask(hop, first.address, target.port, rcpt));
    hop.tail = run.catch(() => undefined);
    return run;
  }

  close(): void {
    for (const hop of this.hops.values()) void hop.session?.then((s) => s.close(), () => undefined);
    this.hops.clear();
  }

  private hop(key: string): Hop {
    let hop = this.hops.get(key);
    if (!hop) {
      hop = { session: undefined, tail: Promise.resolve(), tokens: this.opts.probesPerSecond, refilledAt: Date.now() };
      this.hops.set(key, hop);
    }
    return hop;
  }

  private take(hop: Hop): boolean {
    const now = Date.now();
    const rate = this.opts.probesPerSecond;
    hop.tokens = Math.min(rate, hop.tokens + ((now - hop.refilledAt) / 1000) * rate);
    hop.refilledAt = now;
    if (hop.tokens < 1) return false;
    hop.tokens -= 1;
    return true;
  }

  private async ask(hop: Hop, address: string, port: number, rcpt: string): Promise<ProbeAnswer> {
    // A pooled session may have been closed by the next hop while idle: one fresh try before giving up.
    for (let attempt = 0; ; attempt++) {
      let session: ProbeSession;
      try {
        session = await this.session(hop, address, port);
      } catch (err) {
        hop.session = undefined;
        return { kind: 'unsure', reply: (err as Error).message };
      }
      try {
        return await session.check(rcpt);
      } catch (err) {
        hop.session = undefined;
        if (attempt === 1) return { kind: 'unsure', reply: (err as Error).message };
        this.opts.log.debug({ err, hop: session.hop }, 'probe session failed; reconnecting');
      }
    }
  }

  private async session(hop: Hop, address: string, port: number): Promise<ProbeSession> {
    const current = hop.session && (await hop.session);
    if (current?.usable) return current;
    hop.session = ProbeSession.open(address, port, this.opts.helo, this.opts.timeoutMs);
    return hop.session;
  }
}
