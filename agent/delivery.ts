import { resolveMx } from 'node:dns/promises';
import nodemailer, { type Transporter } from 'nodemailer';
import type { AgentConfig } from '../shared/config.js';
import type { Logger } from '../shared/logger.js';
import type { Target } from '../shared/routes.js';

/** What happened to one recipient at the next hop. */
export type RecipientResult = { rcpt: string; status: 'delivered' | 'temporary' | 'permanent'; reply: string };

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

  constructor(
    private readonly config: AgentConfig['delivery'],
    private readonly heloName: string,
    private readonly log: Logger,
  ) {}

  /** Sends one message to the recipients that share a next hop; never throws, every recipient gets a result. */
  async send(target: Target, tlsRequired: boolean, envelope: Envelope, body: Buffer): Promise<RecipientResult[]> {
    let host: string;
    try {
      host = target.mx ? await this.mxHost(target.host) : target.host;
    } catch (err) {
      return resultsOf(envelope.to, { ok: false, err: err as SmtpError });
    }
    const pool = this.pool(host, target.port, tlsRequired);
    try {
      const info = await pool.sendMail({ envelope: { from: envelope.from, to: [...envelope.to] }, raw: body });
      return resultsOf(envelope.to, { ok: true, response: String(info.response ?? '250'), rejected: (info as unknown as { rejectedErrors?: SmtpError[] }).rejectedErrors ?? [] });
    } catch (err) {
      return resultsOf(envelope.to, { ok: false, err: err as SmtpError });
    }
  }

  /** Until the DNS issue lands: the lowest-preference MX host, or the host itself when it has no MX. */
  private async mxHost(host: string): Promise<string> {
    try {
      const mx = await resolveMx(host);
      mx.sort((a, b) => a.priority - b.priority);
      return mx[0]?.exchange || host;
    } catch (err) {
      if ((err as { code?: string }).code === 'ENODATA') return host;
      throw err;
    }
  }

  private pool(host: string, port: number, tlsRequired: boolean): Transporter {
    const key = `${host}|${port}|${tlsRequired ? 'tls' : 'may'}`;
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
        tls: { rejectUnauthorized: false },
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
