import { MxError, quoteInput } from '../../shared/errors.js';
import { parseTarget } from '../../shared/routes.js';
import { parseHostPort } from '../../shared/units.js';
import type { AgentInfo } from './registry.js';

const isLoopback = (h: string) => h === 'localhost' || h === '::1' || /^127\./.test(h);
const isWildcard = (h: string) => h === '0.0.0.0' || h === '::';

/**
 * The agent whose own SMTP listener `target` names, if any: the same port and the listener's address, a
 * loopback address when it listens on loopback or every address (each agent resolves the target itself), or
 * its host name when it listens on every address. Found by an operator: such a route was accepted and the
 * message went round the fleet 50 hops before `554 5.4.6`. An MX-looked-up target (smtp:host) is judged by its
 * name only; where its MX records point is DNS's business.
 */
export function agentListeningAt(target: string, agents: readonly AgentInfo[]): AgentInfo | undefined {
  let t: { host: string; port: number };
  try {
    t = parseTarget(target);
  } catch {
    return undefined; // the route store reports a bad target
  }
  return agents.find((a) => {
    if (!a.software.smtpListen) return false;
    let listen: { host: string; port: number };
    try {
      listen = parseHostPort(a.software.smtpListen);
    } catch {
      return false;
    }
    if (listen.port !== t.port) return false;
    const host = listen.host.toLowerCase();
    if (t.host === host) return true;
    if (isLoopback(t.host) && (isLoopback(host) || isWildcard(host))) return true;
    return isWildcard(host) && t.host === a.hostname.toLowerCase();
  });
}

/** Refuses a target that is one of the fleet's own listeners (INVALID_ARGUMENT: a usage error at the CLI). */
export function refuseSelfTarget(target: string, agents: readonly AgentInfo[]): void {
  const a = agentListeningAt(target, agents);
  if (a) {
    throw new MxError('INVALID_ARGUMENT', `target ${quoteInput(target)} is agent ${a.id}'s own SMTP listener (${a.software.smtpListen}): mail would loop through the fleet; route to the mail server`);
  }
}
