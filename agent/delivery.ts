import type { Readable } from 'node:stream';
import nodemailer, { type Transporter } from 'nodemailer';
// Outgoing DATA without nodemailer's per-byte loop when nothing needs dot-stuffing (see the module).
import type { AgentConfig } from '../shared/config.js';
import type { Logger } from '../shared/logger.js';
import type { Target } from '../shared/routes.js';
import { applyVendorPatches, type SentInfoExtras } from '../shared/vendor-patches.js';
import type { Outbound } from './delivery-client.js';
import { MxResolver, nextHops } from './mx-resolver.js';

/** What happened to one recipient at the next hop. */
export type RecipientResult = { rcpt: string; status: 'delivered' | 'temporary' | 'permanent'; reply: string };

/** One transaction's outcome: every recipient's result, the next hop that decided it, and the session's TLS. */
export interface DeliveryAttempt {
  results: RecipientResult[];
  /** "mx1.example.net[192.0.2.1]:25", "[192.0.2.1]:25", or what was tried when no host answered. */
  relay: string;
  /** "TLSv1.3" when the message went over TLS; absent over plaintext or when nothing was sent. */
  tlsVersion?: string;
}

export interface DeliveryOptions {
  /** Recursive resolvers for MX targets, "IP[:PORT]", tried in order; default the system's (/etc/resolv.conf). */
  resolvers?: readonly string[];
}

export interface Envelope {
  from: string;
  to: readonly string[];
}

interface SmtpError extends Error {
  code?: string;
  responseCode?: number;
  response?: string;
  recipient?: string;
  command?: string;
  /** nodemailer: CONNECT_TIMEOUT, GREETING_TIMEOUT or SOCKET_TIMEOUT. */
  timeoutType?: string;
  rejectedErrors?: SmtpError[];
}

/** Timeouts, for reply texts that say how long we waited. */
export type DeliveryTimeouts = Pick<AgentConfig['delivery'], 'connectTimeout' | 'greetingTimeout' | 'socketTimeout'>;

function classify(code: number | undefined): RecipientResult['status'] {
  if (code !== undefined && code >= 200 && code < 300) return 'delivered';
  return code !== undefined && code >= 500 && code < 600 ? 'permanent' : 'temporary';
}

const oneLine = (text: string) => text.replace(/\s+/g, ' ').trim().slice(0, 500);

/**
 * The code of a well-formed SMTP reply: every line starts with the same 2xx-5xx code, "NNN-" on all lines but
 * the last, "NNN " or "NNN" on the last (RFC 5321 4.2.1). Anything else is garbage we must not act on: found by
 * the fault suite, nodemailer takes the first line's code, so "550-x / 250 y" bounced and "250-x / junk" counted
 * as delivered.
 */
export function wellFormedCode(reply: string): number | undefined {
  const lines = reply.split(/\r?\n/).filter((l) => l.length > 0);
  const code = lines.length ? /^([2-5]\d\d)(?:[ -]|$)/.exec(lines[0]!)?.[1] : undefined;
  if (!code) return undefined;
  const ok = lines.every((line, i) => (i === lines.length - 1 ? line === code || line.startsWith(`${code} `) : line.startsWith(`${code}-`)));
  return ok ? Number(code) : undefined;
}

/**
 * A reply text for the queue's last_reply that says what happened where. nodemailer's own texts ("ETIMEDOUT:
 * Timeout", "Reached maximum number of retries after connection was closed") left an operator guessing
 * (fault suite); a failure with no reply gets our own enhanced code, the next hop and the system error code.
 */
function failureText(err: SmtpError, hop: string, t: DeliveryTimeouts | undefined): string {
  const code = err.code ?? 'error';
  const secs = (ms: number | undefined) => (ms === undefined ? '' : ` within ${ms / 1000}s`);
  if (err.response !== undefined) {
    if (wellFormedCode(err.response) === undefined) return oneLine(`4.5.0 malformed reply from ${hop}, treated as temporary: ${err.response}`);
    return oneLine(err.response);
  }
  switch (err.timeoutType) {
    case 'CONNECT_TIMEOUT':
      return `4.4.1 connection to ${hop} timed out${secs(t?.connectTimeout)} (${code})`;
    case 'GREETING_TIMEOUT':
      return `4.4.2 ${hop} accepted the connection but sent no greeting${secs(t?.greetingTimeout)} (${code})`;
    case 'SOCKET_TIMEOUT':
      return `4.4.2 ${hop} stopped answering mid-session: no reply${secs(t?.socketTimeout)}; if it had the data, a retry may duplicate it (${code})`;
  }
  if (/maximum number of retries after connection was closed/i.test(err.message)) {
    return `4.4.2 ${hop} closed the connection before the transaction started (${code})`;
  }
  if (/connection closed unexpectedly/i.test(err.message)) {
    return `4.4.2 ${hop} closed the connection mid-session without a reply; if it had the data, a retry may duplicate it (${code})`;
  }
  // No connection at all (refused, unreachable) is "no answer from host"; anything later is a bad connection.
  if (/ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|EADDRNOTAVAIL|ENOTFOUND|EAI_AGAIN/.test(err.message)) return oneLine(`4.4.1 ${hop}: ${err.message} (${code})`);
  return oneLine(`4.4.2 ${hop}: ${err.message}; if it had the data, a retry may duplicate it (${code})`);
}

/** Per-recipient results from one SMTP transaction's outcome (success with some RCPT refusals, or an error). */
export function resultsOf(
  to: readonly string[],
  outcome: { ok: true; response: string; rejected: SmtpError[] } | { ok: false; err: SmtpError },
  hop = 'the next hop',
  timeouts?: DeliveryTimeouts,
): RecipientResult[] {
  const rejected = outcome.ok ? outcome.rejected : (outcome.err.rejectedErrors ?? []);
  const byRcpt = new Map(rejected.filter((e) => e.recipient).map((e) => [e.recipient!.toLowerCase(), e]));
  // A reply that is not well formed is garbage: temporary, whatever digits it starts with.
  const statusOf = (e: SmtpError) => (e.response !== undefined && wellFormedCode(e.response) === undefined ? 'temporary' : classify(e.responseCode));
  return to.map((rcpt) => {
    const refusal = byRcpt.get(rcpt.toLowerCase());
    if (refusal) return { rcpt, status: statusOf(refusal), reply: failureText(refusal, hop, timeouts) };
    if (outcome.ok) {
      // A 250 we cannot parse is no proof of delivery: retry (maybe a duplicate), never drop the message.
      const code = wellFormedCode(outcome.response);
      if (code !== undefined && code >= 200 && code < 300) return { rcpt, status: 'delivered', reply: outcome.response.slice(0, 500) };
      return { rcpt, status: 'temporary', reply: oneLine(`4.5.0 malformed reply to the end of data from ${hop}, treated as temporary: ${outcome.response}`) };
    }
    const err = outcome.err;
    // A failed STARTTLS is the next hop's temporary state (or our tls: required), never a reason to bounce.
    if (err.code === 'ETLS') return { rcpt, status: 'temporary', reply: `4.7.5 TLS required but STARTTLS failed: ${failureText(err, hop, timeouts)}` };
    // A 5xx greeting (or a 5xx the server sent as it hung up) says nothing about this message: like Postfix
    // (smtp_skip_5xx_greeting = yes) it is temporary, and an MX target tries its next host.
    if (refusedSession(err)) return { rcpt, status: 'temporary', reply: `4.4.2 ${hop} refused the session: ${failureText(err, hop, timeouts)}` };
    // Connection failures, timeouts and protocol garbage carry no reply code: always temporary.
    return { rcpt, status: statusOf(err), reply: failureText(err, hop, timeouts) };
  });
}

/**
 * The message goes out as stored (raw), headers and all; without a Message-ID of its own nodemailer makes one
 * per message that it never sends (five randomBytes calls: ~3% of the agent's event loop in a profile).
 */
const RAW_MESSAGE_ID = '<raw@mxswitch.invalid>';

/** "mx1.example.net[192.0.2.1]:25" or "[192.0.2.1]:25": the next hop as a reply text names it. */
function where(hop: { address: string; name?: string; port?: number }): string {
  return `${hop.name ?? ''}[${hop.address}]${hop.port ? `:${hop.port}` : ''}`;
}

/** A 5xx that came at connection level (greeting, or unsolicited before a close), not as the answer to a command. */
function refusedSession(err: SmtpError): boolean {
  return err.command === 'CONN' && err.responseCode !== undefined && err.responseCode >= 500;
}

/**
 * Outbound SMTP: the only importer of nodemailer. One pooled transport per next hop bounds connections
 * per hop (also when a whole queue becomes due at once) and reuses them across messages.
 */
export class Delivery implements Outbound {
  private readonly pools = new Map<string, Transporter>();
  private readonly mx: MxResolver;

  constructor(
    private readonly config: AgentConfig['delivery'],
    private readonly heloName: string,
    private readonly log: Logger,
    options: DeliveryOptions = {},
  ) {
    applyVendorPatches();
    this.mx = new MxResolver({ hostname: heloName, ...(options.resolvers ? { resolvers: options.resolvers } : {}) });
  }

  /**
   * Sends one message to the recipients that share a next hop; never throws, every recipient gets a result.
   * An MX target tries its hosts in order while connections fail (no SMTP reply); the first host that
   * answers at SMTP level decides.
   */
  /** `body`: the message, or a function that makes a new stream of it for each attempt (a large message). */
  async send(target: Target, tlsRequired: boolean, envelope: Envelope, body: Buffer | (() => Readable)): Promise<DeliveryAttempt> {
    const hops = await nextHops(this.mx, target);
    if ('reply' in hops) return { results: envelope.to.map((rcpt) => ({ rcpt, status: hops.status, reply: hops.reply })), relay: `${target.host}:${target.port}` };
    const failures: string[] = [];
    let last: SmtpError | undefined;
    for (const hop of hops) {
      const pool = this.pool(hop.address, target.port, tlsRequired, hop.name);
      try {
        const info = await pool.sendMail({ envelope: { from: envelope.from, to: [...envelope.to] }, raw: typeof body === 'function' ? body() : body, messageId: RAW_MESSAGE_ID });
        const extra = info as unknown as { rejectedErrors?: SmtpError[] } & SentInfoExtras;
        const relay = where({ ...hop, port: target.port });
        const results = resultsOf(envelope.to, { ok: true, response: String(info.response ?? '250'), rejected: extra.rejectedErrors ?? [] }, relay, this.config);
        return { results, relay, ...(extra.tlsVersion ? { tlsVersion: extra.tlsVersion } : {}) };
      } catch (err) {
        last = err as SmtpError;
        // The first host that answers at SMTP level decides; a refused session lets the next MX host try.
        if ((last.responseCode !== undefined && !refusedSession(last)) || hops.length === 1) {
          const relay = where({ ...hop, port: target.port });
          return { results: resultsOf(envelope.to, { ok: false, err: last }, relay, this.config), relay };
        }
        failures.push(`${hop.name ?? hop.address}[${hop.address}]: ${oneLine(last.response ?? `${last.code ?? 'error'}: ${last.message}`)}`);
      }
    }
    const err: SmtpError = Object.assign(new Error(`no MX host of ${target.host} answered: ${failures.join('; ')}`), { code: last?.code ?? 'ECONNECTION' });
    const relay = `MX hosts of ${target.host}`;
    return { results: resultsOf(envelope.to, { ok: false, err }, relay, this.config), relay };
  }

  /** `servername`: the MX host name for TLS SNI when `host` is its resolved address. */
  private pool(host: string, port: number, tlsRequired: boolean, servername?: string): Transporter {
    const key = `${host}|${port}|${tlsRequired ? 'tls' : 'may'}|${servername ?? ''}`;
    let pool = this.pools.get(key);
    if (!pool) {
      pool = nodemailer.createTransport({
        pool: true,
        host,
        port,
        secure: false,
        name: this.heloName,
        maxConnections: this.config.connectionsPerHop,
        maxMessages: Infinity,
        // A dropped connection is our scheduler's to retry (with backoff and hold checks), not the pool's.
        maxRequeues: 0,
        connectionTimeout: this.config.connectTimeout,
        greetingTimeout: this.config.greetingTimeout,
        socketTimeout: this.config.socketTimeout,
        requireTLS: tlsRequired,
        // MX-to-MX TLS is opportunistic (Postfix smtp_tls_security_level = may): unverified beats plaintext.
        tls: { rejectUnauthorized: false, ...(servername ? { servername } : {}) },
      });
      pool.on('error', (err) => this.log.warn({ err, host, port }, 'delivery pool error'));
      this.pools.set(key, pool);
    }
    return pool;
  }

  close(): Promise<void> {
    for (const pool of this.pools.values()) pool.close();
    this.pools.clear();
    return Promise.resolve();
  }
}
