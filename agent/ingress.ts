import { readFileSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import type { Readable } from 'node:stream';
import { SMTPServer, type SMTPServerAddress, type SMTPServerDataStream, type SMTPServerSession } from 'smtp-server';
import type { AgentConfig } from '../shared/config.js';
import { hasRoutingInLocalPart, parseRecipient } from '../shared/address.js';
import type { Logger } from '../shared/logger.js';
import { formatDuration, parseHostPort } from '../shared/units.js';
import { applyVendorPatches, type PatchedServerOptions } from '../shared/vendor-patches.js';
import { GreetPassCache } from './greet-pass.js';
import { BareNewlineError, ControlCharError, ControlCharGuard, HeaderScan, LineEndingGuard } from './message-data.js';
import { IncomingData, type StoredData } from './incoming-data.js';
import { newQueueId, QueueStorageError, type Spool } from './spool/spool.js';
import type { RecipientLists } from './recipients/lists.js';
import type { Router } from './router.js';
import type { RecipientVerifier } from './verify/verifier.js';
import type { Shadowing } from './shadow/shadowing.js';

/** An SMTP reply for smtp-server: its text starts with our own enhanced status code. */
class SmtpReply extends Error {
  constructor(
    readonly responseCode: number,
    enhanced: string,
    text: string,
  ) {
    super(`${enhanced} ${text}`);
  }
}

export interface IngressCounters {
  accepted: number;
  rejected: number;
}

export interface IngressDeps {
  config: AgentConfig;
  queue: Spool;
  router: Router;
  /** Where a domain has a list, RCPT accepts only its addresses. */
  recipients: Pick<RecipientLists, 'accepts'>;
  /** For routes with `verify: probe` and no list: asks the next hop (cached). */
  verifier: Pick<RecipientVerifier, 'check'>;
  log: Logger;
  /** Called after a message is committed so delivery can start at once. */
  onQueued: (id: string) => void;
  /** Shadow redundancy: the copy at the peer before the 250 (absent when `shadow` is not configured). */
  shadow?: Pick<Shadowing, 'copy' | 'markUnshadowed' | 'forget' | 'onPeerDown'> | undefined;
}

/** The SMTP ingress: the only importer of smtp-server. Accepts mail for routed recipients only. */
export class Ingress {
  private readonly server: SMTPServer;
  private readonly hostname: string;
  readonly counters: IngressCounters = { accepted: 0, rejected: 0 };
  private readonly connectTimes = new Map<string, number[]>();
  /** Open sessions per client IP (by session id: onClose also comes for sessions onConnect never admitted). */
  private readonly openByClient = new Map<string, Set<string>>();

  constructor(private readonly deps: IngressDeps) {
    applyVendorPatches();
    const smtp = deps.config.smtp;
    this.hostname = smtp.hostname ?? osHostname();
    const greetPasses = new GreetPassCache(smtp.greetPause);
    const patched: PatchedServerOptions = { greetPause: (ip) => greetPasses.pauseFor(ip), commandTimeout: smtp.commandTimeout, minDataRate: smtp.minDataRate, dataTimeout: smtp.dataTimeout };
    this.server = new SMTPServer({
      ...patched,
      name: this.hostname,
      banner: 'mxswitch ESMTP',
      size: smtp.maxMessageSize,
      rejectOversized: true,
      disabledCommands: smtp.tls ? ['AUTH'] : ['AUTH', 'STARTTLS'],
      hideDSN: true,
      hideENHANCEDSTATUSCODES: false,
      hideREQUIRETLS: true,
      authOptional: true,
      disableReverseLookup: true,
      maxClients: smtp.maxConnections,
      maxRecipients: smtp.maxRecipients,
      // RFC 5321 4.5.3.1.4: 512 octets with CRLF; a longer line is refused with 421 and the connection closed.
      maxCommandLength: 510,
      socketTimeout: smtp.idleTimeout,
      closeTimeout: smtp.shutdownTimeout,
      logger: false,
      ...(smtp.tls ? { key: readFileSync(smtp.tls.key), cert: readFileSync(smtp.tls.cert) } : {}),
      onConnect: (session, cb) => {
        // Reached only by a client that did not talk before the greeting (an early talker got 421 already).
        greetPasses.passed(session.remoteAddress);
        cb(this.overRate(session.remoteAddress) ?? this.overClientLimit(session));
      },
      onClose: (session) => this.closed(session),
      onMailFrom: (address, session, cb) => this.onMailFrom(address, session, cb),
      onRcptTo: (address, session, cb) => this.onRcptTo(address, session, cb),
      onData: (stream, session, cb) => this.onData(stream, session, cb),
    });
    this.server.on('error', (err) => deps.log.warn({ err }, 'smtp server error'));
    // Nagle + delayed ACK cost ~45 ms per reply on a reused connection.
    (this.server as unknown as { server: import('node:net').Server }).server.on('connection', (s) => s.setNoDelay(true));
  }

  async listen(): Promise<{ host: string; port: number }> {
    const { host, port } = parseHostPort(this.deps.config.smtp.listen);
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const addr = (this.server as unknown as { server: import('node:net').Server }).server.address();
    return typeof addr === 'object' && addr ? { host: addr.address, port: addr.port } : { host, port };
  }

  /** Stops accepting, lets sessions finish within shutdownTimeout, then answers 421 to the rest. */
  close(): Promise<void> {
    const open = [...this.openByClient].map(([client, sessions]) => ({ client, sessions: sessions.size }));
    const waitMs = this.deps.config.smtp.shutdownTimeout;
    const started = Date.now();
    // An operator whose stop seems to hang should read why, and for how long at most.
    if (open.length) {
      const count = open.reduce((n, o) => n + o.sessions, 0);
      this.deps.log.info({ sessions: count, clients: open.map((o) => o.client), waitMs }, `waiting up to ${formatDuration(waitMs)} for ${count} open SMTP session${count === 1 ? '' : 's'} to finish`);
    }
    return new Promise((resolve) =>
      this.server.close(() => {
        if (open.length) {
          const tookMs = Date.now() - started;
          const cut = tookMs >= waitMs;
          this.deps.log[cut ? 'warn' : 'info']({ tookMs }, cut ? `SMTP sessions still open after ${formatDuration(waitMs)} were closed with 421` : `open SMTP sessions finished after ${formatDuration(tookMs)}`);
        }
        resolve();
      }),
    );
  }

  /** A client over smtp.connectionRateLimit new connections in the last minute gets 421 (a sliding window per IP). */
  private overRate(ip: string): SmtpReply | undefined {
    const limit = this.deps.config.smtp.connectionRateLimit;
    if (!limit) return undefined;
    const now = Date.now();
    const recent = (this.connectTimes.get(ip) ?? []).filter((t) => now - t < 60_000);
    recent.push(now);
    // Only whether the count is over the limit matters: keep at most limit + 1 times, so a flood costs O(limit).
    this.connectTimes.set(ip, recent.slice(-(limit + 1)));
    if (this.connectTimes.size > 10_000) for (const [k, v] of this.connectTimes) if (now - v.at(-1)! >= 60_000) this.connectTimes.delete(k);
    if (recent.length <= limit) return undefined;
    this.counters.rejected++;
    this.deps.log.info({ client: ip, perMinute: recent.length }, 'connection rate limit');
    return new SmtpReply(421, '4.7.0', `Error: too many connections from ${ip}; try again later`);
  }

  /** A client over smtp.maxConnectionsPerClient open sessions gets 421 (Postfix smtpd_client_connection_count_limit). */
  private overClientLimit(session: SMTPServerSession): SmtpReply | undefined {
    const ip = session.remoteAddress;
    const open = this.openByClient.get(ip) ?? new Set<string>();
    if (open.size >= this.deps.config.smtp.maxConnectionsPerClient) {
      this.counters.rejected++;
      this.deps.log.info({ client: ip, open: open.size }, 'connection count limit');
      return new SmtpReply(421, '4.7.0', `Error: too many connections from ${ip}`);
    }
    open.add(session.id);
    this.openByClient.set(ip, open);
    return undefined;
  }

  private closed(session: SMTPServerSession): void {
    const open = this.openByClient.get(session.remoteAddress);
    if (!open?.delete(session.id)) return;
    if (open.size === 0) this.openByClient.delete(session.remoteAddress);
  }

  private onMailFrom(address: SMTPServerAddress, _session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const declared = Number(address.args && (address.args as Record<string, string>).SIZE);
    if (declared > this.deps.config.smtp.maxMessageSize) {
      return cb(new SmtpReply(552, '5.3.4', `Message size exceeds fixed limit of ${this.deps.config.smtp.maxMessageSize} bytes`));
    }
    // Low on storage: refuse before the data is sent (Postfix: 452 4.3.1 at MAIL FROM), see SpaceAccount.
    if (!this.deps.queue.hasRoomFor(declared || 0)) return cb(this.insufficientStorage());
    cb();
  }

  private lowStorageLoggedAt = 0;

  /** 452 4.3.1, logged at most once a minute (a full disk would otherwise log every refused message). */
  private insufficientStorage(): SmtpReply {
    const now = Date.now();
    if (now - this.lowStorageLoggedAt > 60_000) {
      this.lowStorageLoggedAt = now;
      this.deps.log.warn({ availableBytes: this.deps.queue.availableBytes() }, 'low on storage: refusing new mail with 452 4.3.1 until space returns');
    }
    return new SmtpReply(452, '4.3.1', 'Insufficient system storage');
  }

  /** Who a refusal line names: the client's address and the envelope sender ("" = the null sender). */
  private who(session: SMTPServerSession): { client: string; from: string } {
    return { client: session.remoteAddress, from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '' };
  }

  private onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const deny = (why: string) => {
      this.counters.rejected++;
      this.deps.log.info({ ...this.who(session), rcpt: address.address, why }, 'recipient refused');
      cb(new SmtpReply(550, '5.7.1', `<${address.address}>: Relay access denied`));
    };
    const parsed = parseRecipient(address.address);
    if (!parsed.ok) return deny(parsed.reason);
    const table = this.deps.router.table;
    const route = table.lookup(parsed.value.address);
    if (!route) return deny('no route');
    // user%host@routed.example asks the next hop to relay on: only an exact address route may carry that.
    if (hasRoutingInLocalPart(parsed.value.local) && route.match !== parsed.value.address) return deny('routing characters in local part');
    const listed = this.deps.recipients.accepts(parsed.value.domain, parsed.value.address);
    if (listed === false) {
      // Refused now, never queued: a 5xx later at the final server would become a bounce to a forged sender.
      this.counters.rejected++;
      this.deps.log.info({ ...this.who(session), rcpt: address.address }, 'recipient refused: not on its domain\'s list');
      return cb(new SmtpReply(550, '5.1.1', `<${address.address}>: Recipient address rejected: User unknown`));
    }
    // A list, where there is one, is the authority: no probe for a listed address.
    if (listed === true || route.verify !== 'probe') return cb();
    void this.deps.verifier.check(address.address, parsed.value.address, route).then((verdict) => {
      if (verdict.ok) return cb();
      this.counters.rejected++;
      this.deps.log.info({ ...this.who(session), rcpt: address.address, reply: verdict.text }, 'recipient refused by verification');
      cb(new SmtpReply(verdict.code, verdict.enhanced, verdict.text));
    });
  }

  private onData(stream: SMTPServerDataStream, session: SMTPServerSession, cb: (err?: Error | null, message?: string) => void): void {
    const mode = this.deps.config.smtp.bareNewline;
    const lines = new LineEndingGuard(mode);
    const controls = new ControlCharGuard(mode);
    const headers = new HeaderScan();
    const incoming = new IncomingData(this.deps.queue, newQueueId());
    let failed: Error | undefined;
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      this.finishData(session, failed, headers, incoming, cb);
    };
    controls.on('data', (c: Buffer) => {
      headers.push(c);
      incoming.add(c);
      // Backpressure down to the socket: a sender never gets more than a few parts ahead of the disk.
      if (incoming.backlogged) {
        controls.pause();
        void incoming.drained().then(() => controls.resume());
      }
    });
    controls.on('end', finish);
    // A session that ends inside DATA (timeout, disconnect) leaves no parts behind.
    stream.on('close', () => {
      if (!stream.readableEnded) incoming.drop();
    });
    const fail = (err: Error) => {
      failed ??= err;
      // keep reading so smtp-server sees the end of DATA and can reply
      (stream as Readable).unpipe(lines);
      stream.resume();
      if (stream.readableEnded) finish();
    };
    lines.on('error', fail);
    controls.on('error', fail);
    stream.on('end', () => {
      if (failed) return finish();
      lines.end();
    });
    lines.pipe(controls);
    stream.pipe(lines, { end: false });
  }

  private finishData(
    session: SMTPServerSession,
    failed: Error | undefined,
    headers: HeaderScan,
    incoming: IncomingData,
    cb: (err?: Error | null, message?: string) => void,
  ): void {
    const reject = (reply: SmtpReply) => {
      incoming.drop();
      this.counters.rejected++;
      this.deps.log.info({ ...this.who(session), reply: reply.message }, 'message refused');
      cb(reply);
    };
    // smtp-server answers 552 itself when the raw data is over the limit; normalising bare LFs can still grow it.
    const size = incoming.size;
    if (size > this.deps.config.smtp.maxMessageSize) {
      return reject(new SmtpReply(552, '5.3.4', 'Message size exceeds fixed maximum message size'));
    }
    if (failed instanceof BareNewlineError) return reject(new SmtpReply(550, '5.5.2', 'Error: bare <CR> or <LF> received in message data'));
    if (failed instanceof ControlCharError) return reject(new SmtpReply(550, '5.6.0', `Error: ${failed.message}`));
    if (failed) return reject(new SmtpReply(451, '4.3.0', 'Error: local error in processing'));
    void incoming.finish().then((stored) => this.store(session, stored, headers, incoming, reject, cb));
  }

  /** Commits a message whose data is all in (in memory, or staged in parts); the 250 only once it is on disk. */
  private store(
    session: SMTPServerSession,
    stored: StoredData,
    headers: HeaderScan,
    incoming: IncomingData,
    reject: (reply: SmtpReply) => void,
    cb: (err?: Error | null, message?: string) => void,
  ): void {
    if (stored instanceof Error) {
      incoming.drop();
      this.deps.log.error({ err: stored }, 'cannot store message data');
      return cb(stored instanceof QueueStorageError && stored.full ? this.insufficientStorage() : new SmtpReply(451, '4.3.0', 'Local error in processing'));
    }
    const id = incoming.id;
    const received = Buffer.from(this.receivedHeader(session, id));
    const total = received.length + incoming.size;
    // A small message: our Received header and the data in one buffer. A large one was written to the queue in
    // parts as it arrived (see IncomingData): only the header is left to commit.
    const body = 'staged' in stored ? received : Buffer.concat([received, ...stored.chunks], total);
    if (headers.received >= this.deps.config.smtp.maxReceivedHeaders) {
      return reject(new SmtpReply(554, '5.4.6', 'Too many "Received" headers - apparent mail loop'));
    }
    // Space may have run out since MAIL FROM (other sessions, other processes): check with the real size.
    if (!this.deps.queue.hasRoomFor(total)) {
      incoming.drop();
      return cb(this.insufficientStorage());
    }
    const recipients = session.envelope.rcptTo.map((r) => r.address);
    const sender = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
    const staged = 'staged' in stored;
    const shadow = this.deps.shadow;
    const arrivedAt = Date.now();
    // The copy goes to the peer while our own commit syncs (a large, staged body: after it, read back from the
    // queue); the 250 waits for both. With onPeerDown tempfail the copy comes first, so a refused message was
    // never in our queue.
    const copyNow = shadow && !staged ? () => shadow.copy({ id, sender, recipients, body, arrivedAt }) : undefined;
    const parallel = shadow?.onPeerDown === 'accept';
    const early = copyNow && parallel ? copyNow() : undefined;
    const first = copyNow && !parallel ? copyNow() : undefined;
    void (async () => {
      if (first && (await first) === 'refuse') return cb(this.peerDown());
      try {
        await this.deps.queue.commit({ id, sender, recipients, body, ...(staged ? { staged: stored.staged } : {}) });
      } catch (err) {
        const full = err instanceof QueueStorageError && err.full;
        incoming.drop();
        if (shadow && (first || early)) void (first ?? early)!.then((v) => v === 'copied' && shadow.forget(id));
        this.deps.log.error({ err }, 'queue commit failed');
        return cb(full ? new SmtpReply(452, '4.3.1', 'Insufficient system storage') : new SmtpReply(451, '4.3.0', 'Local error in processing'));
      }
      if (shadow) {
        const verdict = await (first ?? early ?? this.copyStaged(shadow, id, sender, recipients, arrivedAt));
        const unmarked = verdict === 'unshadowed' ? await shadow.markUnshadowed(id).then(() => false, (err: unknown) => (this.deps.log.error({ err, queueId: id }, 'could not mark a message without a shadow copy'), true)) : false;
        if (verdict === 'refuse' || unmarked) {
          // Only a staged message (or an unmarked one) gets here: it leaves the queue again before the 451.
          await this.deps.queue.bulk({ kind: 'remove' }, () => true, { msgId: id }).catch((err: unknown) => this.deps.log.error({ err, queueId: id }, 'refused message could not be removed'));
          return cb(unmarked ? new SmtpReply(451, '4.3.0', 'Local error in processing') : this.peerDown());
        }
      }
      this.counters.accepted++;
      this.deps.log.info({ queueId: id, client: session.remoteAddress, from: sender, messageId: headers.messageId, size: total, rcpts: recipients.length }, 'queued');
      cb(null, `2.0.0 Ok: queued as ${id}`);
      this.deps.onQueued(id);
    })();
  }

  /** A large message's copy, its parts read back one at a time from the queue it was just committed to. */
  private copyStaged(shadow: NonNullable<IngressDeps['shadow']>, id: string, sender: string, recipients: string[], arrivedAt: number) {
    const body = this.deps.queue.bodyForCopy(id)?.raw;
    return body ? shadow.copy({ id, sender, recipients, body, arrivedAt }) : Promise.resolve('unshadowed' as const);
  }

  /** onPeerDown tempfail: no second copy, so no 250 (and nothing kept). */
  private peerDown(): SmtpReply {
    this.counters.rejected++;
    return new SmtpReply(451, '4.4.3', 'Shadow copy not confirmed by the peer; try again later');
  }

  private receivedHeader(session: SMTPServerSession, queueId: string): string {
    const helo = session.hostNameAppearsAs || 'unknown';
    const proto = `${session.transmissionType}`;
    const date = new Date().toUTCString().replace('GMT', '+0000');
    return `Received: from ${helo} ([${session.remoteAddress}])\r\n\tby ${this.hostname} (mxswitch) with ${proto} id ${queueId};\r\n\t${date}\r\n`;
  }
}

/** A message's data once all in: in memory (a small message), staged in parts (a large one), or the write's error. */
