import type { Logger } from '../../shared/logger.js';
import { parseTarget, type Route } from '../../shared/routes.js';
import type { VerifyCache } from './cache.js';
import type { Prober } from './prober.js';
import type { ProbeAnswer } from './smtp-probe.js';

/** The RCPT answer for a probed route: accept, or refuse with a reply (550 unknown user, 450 could not tell). */
export type Verdict = { ok: true } | { ok: false; code: 550 | 450; enhanced: '5.1.1' | '4.1.1'; text: string };

export interface VerifierPolicy {
  /** When the next hop cannot tell (held, unreachable, 4xx): accept the recipient, or 450 4.1.1. */
  unreachable: 'accept' | 'tempfail';
}

/**
 * Postfix's reject_unverified_recipient for routes with `verify: probe`: an address the next hop refuses with
 * 5xx is refused at RCPT (no queue, so no bounce to a forged sender: no backscatter). A held route is never
 * probed: it gets no connection at all while held (its server is frozen for the mailbox copy), so only the cache
 * speaks for it, and an unknown address follows `verify.unreachable` (default accept, so a hold never turns
 * real mail away).
 */
export class RecipientVerifier {
  private readonly inFlight = new Map<string, Promise<ProbeAnswer>>();

  constructor(
    private readonly cache: VerifyCache,
    private readonly prober: Prober,
    private readonly policy: VerifierPolicy,
    private readonly log: Logger,
  ) {}

  /** `address` as the sender wrote it (the probe asks with it, as delivery will); `key` its normalised form. */
  async check(address: string, key: string, route: Route): Promise<Verdict> {
    const cached = this.cache.get(key);
    if (cached) return cached.exists ? { ok: true } : refused(address, cached.reply);
    if (route.hold) return this.unsure(address, `route ${route.match} is held: its next hop is not asked`);
    const answer = await this.ask(address, key, route);
    if (answer.kind === 'unsure') return this.unsure(address, answer.reply);
    // Whatever the policy: accepting what we could not check at the rate limit would let a dictionary attack
    // through (queued, refused by the next hop, bounced to a forged sender). A sender that is real retries.
    if (answer.kind === 'busy') return deferred(address, answer.reply);
    this.cache.put(key, { exists: answer.kind === 'exists', reply: answer.reply });
    this.log.debug({ rcpt: address, answer: answer.kind, reply: answer.reply }, 'recipient probed');
    return answer.kind === 'exists' ? { ok: true } : refused(address, answer.reply);
  }

  /** Concurrent RCPTs of one address (parallel sessions of one sender) share one probe. */
  private ask(address: string, key: string, route: Route): Promise<ProbeAnswer> {
    let pending = this.inFlight.get(key);
    if (!pending) {
      pending = this.prober.probe(parseTarget(route.target), address).finally(() => this.inFlight.delete(key));
      this.inFlight.set(key, pending);
    }
    return pending;
  }

  private unsure(address: string, why: string): Verdict {
    if (this.policy.unreachable === 'accept') return { ok: true };
    this.log.info({ rcpt: address, why }, 'recipient not verified: answering 450');
    return deferred(address, why);
  }
}

function deferred(address: string, why: string): Verdict {
  return { ok: false, code: 450, enhanced: '4.1.1', text: `<${address}>: Recipient address rejected: unverified address: ${why}` };
}

function refused(address: string, reply: string): Verdict {
  return { ok: false, code: 550, enhanced: '5.1.1', text: `<${address}>: Recipient address rejected: undeliverable address: ${reply}` };
}
