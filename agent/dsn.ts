import { randomBytes } from 'node:crypto';
import type { Logger } from '../shared/logger.js';
import { newQueueId, type ClaimedRecipient, type Outcome, type Spool } from './spool/spool.js';

export interface FailedRecipient {
  rcpt: string;
  reply: string;
  remoteMta?: string;
}

function rfc5322Date(ms: number): string {
  return new Date(ms).toUTCString().replace('GMT', '+0000');
}

/** The enhanced status code of a reply ("550 5.1.1 ..." -> 5.1.1), or a generic permanent failure. */
function statusOf(reply: string): string {
  return /\b([45])\.(\d{1,3})\.(\d{1,3})\b/.exec(reply)?.slice(1).join('.').replace(/^4/, '5') ?? '5.0.0';
}

function headerSection(original: Buffer): string {
  const end = original.indexOf('\r\n\r\n');
  return original.subarray(0, end === -1 ? original.length : end + 2).toString('latin1');
}

/**
 * An RFC 3464 delivery status notification for recipients that failed permanently: multipart/report with a
 * human part, message/delivery-status, and the original message's headers (text/rfc822-headers).
 */
export function buildDsn(opts: {
  reportingMta: string;
  queueId: string;
  sender: string;
  arrivedAt: number;
  failed: readonly FailedRecipient[];
  original: Buffer;
  now?: number;
}): Buffer {
  const now = opts.now ?? Date.now();
  const boundary = `${opts.queueId}.${randomBytes(6).toString('hex')}/${opts.reportingMta}`;
  const human = opts.failed.map((f) => `<${f.rcpt}>: ${f.reply}`).join('\r\n');
  const perRecipient = opts.failed
    .map((f) =>
      [
        `Final-Recipient: rfc822; ${f.rcpt}`,
        `Original-Recipient: rfc822; ${f.rcpt}`,
        'Action: failed',
        `Status: ${statusOf(f.reply)}`,
        ...(f.remoteMta ? [`Remote-MTA: dns; ${f.remoteMta}`] : []),
        `Diagnostic-Code: smtp; ${f.reply.replace(/[\r\n]+/g, ' ')}`,
        `Last-Attempt-Date: ${rfc5322Date(now)}`,
      ].join('\r\n'),
    )
    .join('\r\n\r\n');
  const lines = [
    `From: MAILER-DAEMON@${opts.reportingMta} (Mail Delivery System)`,
    `To: <${opts.sender}>`,
    'Subject: Undelivered Mail Returned to Sender',
    `Date: ${rfc5322Date(now)}`,
    `Message-ID: <${opts.queueId}.dsn.${now}@${opts.reportingMta}>`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`,
    '',
    'This is a MIME-encapsulated message.',
    '',
    `--${boundary}`,
    'Content-Description: Notification',
    'Content-Type: text/plain; charset=us-ascii',
    '',
    `This is the mail system at host ${opts.reportingMta}.`,
    '',
    "I'm sorry to have to inform you that your message could not",
    'be delivered to one or more recipients.',
    '',
    human,
    '',
    `--${boundary}`,
    'Content-Description: Delivery report',
    'Content-Type: message/delivery-status',
    '',
    `Reporting-MTA: dns; ${opts.reportingMta}`,
    `X-Mxswitch-Queue-ID: ${opts.queueId}`,
    `Arrival-Date: ${rfc5322Date(opts.arrivedAt)}`,
    '',
    perRecipient,
    '',
    `--${boundary}`,
    'Content-Description: Undelivered Message Headers',
    'Content-Type: text/rfc822-headers',
    '',
    headerSection(opts.original).replace(/\r\n$/, ''),
    '',
    `--${boundary}--`,
    '',
  ];
  return Buffer.from(lines.join('\r\n'), 'latin1');
}

/** A claimed recipient with the outcome decided for it; a bounce may become a deferral here. */
export interface Decided {
  row: ClaimedRecipient;
  outcome: Outcome;
}

/**
 * Bounce notifications: the DSN for the bounced recipients of one message, queued to its envelope sender (none
 * for mail from <> or for a DSN). Without a committed DSN the recipients may not leave the queue (their mail
 * would be lost silently): their outcomes become deferrals, for another try after `retryMs`.
 */
export class BounceNotices {
  constructor(
    private readonly queue: Spool,
    private readonly hostname: string,
    private readonly log: Logger,
    private readonly retryMs: number,
  ) {}

  /**
   * `records` are of one message; `sent` is what a delivery attempt had (the message's head, the next hop),
   * otherwise the head is read from the queue.
   */
  async notify(records: readonly Decided[], now: number, sent?: { head: Buffer; remoteMta: string }): Promise<void> {
    const bounced = records.filter((r) => r.outcome.kind === 'bounced');
    const first = bounced[0]?.row;
    if (!first?.sender || first.dsn) return;
    const defer = () => {
      for (const r of bounced) r.outcome = { kind: 'deferred', reply: r.outcome.reply, dueAt: now + this.retryMs };
    };
    const head = sent?.head ?? (await this.queue.forDelivery(first.msgId).then((b) => b?.head, () => undefined));
    if (!head) return defer();
    try {
      const dsn = buildDsn({
        reportingMta: this.hostname,
        queueId: first.msgId,
        sender: first.sender,
        arrivedAt: first.arrivedAt,
        failed: bounced.map((r) => ({ rcpt: r.row.rcpt, reply: r.outcome.reply, ...(sent?.remoteMta ? { remoteMta: sent.remoteMta } : {}) })),
        original: head,
      });
      const id = await this.queue.commit({ id: newQueueId(), sender: '', recipients: [first.sender], body: dsn, dsn: true });
      this.log.info({ queueId: first.msgId, dsn: id, to: first.sender }, 'bounce notification queued');
    } catch (err) {
      this.log.error({ err, queueId: first.msgId }, 'cannot queue bounce notification; deferring instead');
      defer();
    }
  }
}
