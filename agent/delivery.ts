import nodemailer, { type Transporter } from 'nodemailer';
import type { AgentConfig } from '../shared/config.js';
import type { Logger } from '../shared/logger.js';
import type { Target } from '../shared/routes.js';
import { MxResolver } from './mx-resolver.js';

/** What happened to one recipient at the next hop. */
export type RecipientResult = { rcpt: string; status: 'delivered' | 'temporary' | 'permanent'; reply: string };

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
  rejectedErrors?: SmtpError[];
}

function classify(code: number | undefined): RecipientResult['status'] {
  if (code !== undefined && code >= 200 && code < 300) return 'delivered';
  return code !== undefined && code >= 500 && code < 600 ? 'permanent' : 'temporary';
}

function replyText(err: SmtpError): string {
  return (err.response ?? `${err.code ?? 'error'}: ${err.message}`).replace(/\s+/g, ' ').slice(0, 500);
}

/** Per-recipient results from one SMTP transaction's outcome (success with some RCPT refusals, or an error). */
export function resultsOf(to: readonly string[], outcome: { ok: true; response: string; rejected: SmtpError[] } | { ok: false; err: SmtpError }): RecipientResult[] {
  const rejected = outcome.ok ? outcome.rejected : (outcome.err.rejectedErrors ?? []);
  const byRcpt = new Map(rejected.filter((e) => e.recipient).map((e) => [e.recipient!.toLowerCase(), e]));
  return to.map((rcpt) => {
    const refusal = byRcpt.get(rcpt.toLowerCase());
    if (refusal) return { rcpt, status: classify(refusal.responseCode), reply: replyText(refusal) };
    if (outcome.ok) return { rcpt, status: 'delivered', reply: outcome.response.slice(0, 500) };
    // A failed STARTTLS is the next hop's temporary state (or our tls: required), never a reason to bounce.
    if (outcome.err.code === 'ETLS') return { rcpt, status: 'temporary', reply: `4.7.5 TLS required but STARTTLS failed: ${replyText(outcome.err)}` };
    // Connection failures, timeouts and protocol garbage carry no reply code: always temporary.
    return { rcpt, status: classify(outcome.err.responseCode), reply: replyText(outcome.err) };
  });
}

/**
 * Outbound SMTP: the only importer of nodemailer. One pooled transport per next hop bounds connections
 * per hop (also when a whole queue becomes due at once) and reuses them across messages.
 */
export class Delivery {
  private readonly pools = new Map<string, Transporter>();
  private readonly mx: MxResolver;

  constructor(
    private readonly config: AgentConfig['delivery'],
    private readonly heloName: string,
    private readonly log: Logger,
    options: DeliveryOptions = {},
  ) {
    this.mx = new MxResolver({ hostname: heloName, ...(options.resolvers ? { resolvers: options.resolvers } : {}) });
  }

  /**
   * Sends one message to the recipients that share a next hop; never throws, every recipient gets a result.
   * An MX target tries its hosts in order while connections fail (no SMTP reply); the first host that
   * answers at SMTP level decides.
   */
  async send(target: Target, tlsRequired: boolean, envelope: Envelope, body: Buffer): Promise<RecipientResult[]> {
    const hops = await this.hops(target);
    if ('reply' in hops) return envelope.to.map((rcpt) => ({ rcpt, status: hops.status, reply: hops.reply }));
    const failures: string[] = [];
    let last: SmtpError | undefined;
    for (const hop of hops) {
      const pool = this.pool(hop.address, target.port, tlsRequired, hop.name);
      try {
        const info = await pool.sendMail({ envelope: { from: envelope.from, to: [...envelope.to] }, raw: body });
        return resultsOf(envelope.to, { ok: true, response: String(info.response ?? '250'), rejected: (info as unknown as { rejectedErrors?: SmtpError[] }).rejectedErrors ?? [] });
      } catch (err) {
        last = err as SmtpError;
        if (last.responseCode !== undefined || hops.length === 1) return resultsOf(envelope.to, { ok: false, err: last });
        failures.push(`${hop.name ?? hop.address}[${hop.address}]: ${replyText(last)}`);
      }
    }
    const err: SmtpError = Object.assign(new Error(`no MX host of ${target.host} answered: ${failures.join('; ')}`), { code: last?.code ?? 'ECONNECTION' });
    return resultsOf(envelope.to, { ok: false, err });
  }

  /** Where to connect, in order: the bracketed host itself, or the MX candidates (see MxResolver). */
  private async hops(target: Target): Promise<{ address: string; name?: string }[] | { status: 'permanent' | 'temporary'; reply: string }> {
    if (!target.mx) return [{ address: target.host }];
    const r = await this.mx.resolve(target.host);
    if (!r.ok) return { status: r.status, reply: r.reply };
    return r.candidates.map((c) => ({ address: c.address, name: c.host }));
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

  close(): void {
    for (const pool of this.pools.values()) pool.close();
    this.pools.clear();
  }
}
