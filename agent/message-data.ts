import { Transform, type TransformCallback } from 'node:stream';

export class BareNewlineError extends Error {
  readonly code = 'BARE_NEWLINE';
}

/**
 * SMTP smuggling defence on message data. smtp-server already ends DATA only at CRLF.CRLF; this makes
 * sure nothing we store can act as a line end downstream: a bare LF or bare CR becomes CRLF
 * ("normalize", Postfix 3.9 smtpd_forbid_bare_newline = normalize) or fails the message ("reject").
 * Lines are otherwise passed through byte for byte, however long.
 */
export class LineEndingGuard extends Transform {
  private pendingCR = false;
  sawBareNewline = false;

  constructor(private readonly mode: 'normalize' | 'reject') {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (this.onlyCrlf(chunk)) return done(null, chunk);
    this.slowTransform(chunk, done);
  }

  /**
   * The common case, checked with memchr-speed indexOf instead of a JS loop over every byte: every CR is
   * followed by LF and every LF preceded by CR. Updates pendingCR for a CR that ends the chunk.
   */
  private onlyCrlf(chunk: Buffer): boolean {
    const n = chunk.length;
    if (n === 0) return true;
    if (this.pendingCR && chunk[0] !== 0x0a) return false;
    for (let i = chunk.indexOf(0x0d); i !== -1; i = chunk.indexOf(0x0d, i + 1)) {
      if (i === n - 1) break; // a CR at the end: its LF comes with the next chunk
      if (chunk[i + 1] !== 0x0a) return false;
    }
    for (let i = chunk.indexOf(0x0a, this.pendingCR ? 1 : 0); i !== -1; i = chunk.indexOf(0x0a, i + 1)) {
      if (i === 0 || chunk[i - 1] !== 0x0d) return false;
    }
    this.pendingCR = chunk[n - 1] === 0x0d;
    return true;
  }

  private slowTransform(chunk: Buffer, done: TransformCallback): void {
    let out: Buffer[] | undefined;
    let start = 0;
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i];
      if (this.pendingCR) {
        this.pendingCR = false;
        if (b === 0x0a) continue; // CRLF, the CR was held back at the previous chunk's end or just before
        if (!this.bare(done)) return;
        (out ??= []).push(chunk.subarray(start, i), Buffer.from('\n')); // bare CR -> CRLF (the CR was already emitted)
        start = i;
      }
      if (b === 0x0d) {
        this.pendingCR = true;
      } else if (b === 0x0a) {
        if (!this.bare(done)) return;
        (out ??= []).push(chunk.subarray(start, i), Buffer.from('\r\n'));
        start = i + 1;
      }
    }
    if (!out) return done(null, chunk);
    out.push(chunk.subarray(start));
    done(null, Buffer.concat(out));
  }

  override _flush(done: TransformCallback): void {
    if (this.pendingCR) {
      if (!this.bare(done)) return;
      return done(null, Buffer.from('\n'));
    }
    done();
  }

  private bare(done: TransformCallback): boolean {
    this.sawBareNewline = true;
    if (this.mode === 'normalize') return true;
    done(new BareNewlineError('bare CR or LF in message data'));
    return false;
  }
}

/** NUL anywhere, or control characters before a dot at the start of a line, in `reject` mode. */
export class ControlCharError extends Error {
  readonly code = 'CONTROL_CHAR';
}

/**
 * C0 controls (but TAB, CR, LF) and DEL: bytes some next hops drop. A line that starts with them and then a dot
 * reads, once they are dropped, as a dot line; if it is "." alone, as the end of DATA (SMTP smuggling through the
 * next hop). NUL has no place in a message at all (RFC 5322 text, RFC 6152 8BITMIME).
 */
const droppable = (b: number) => (b < 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d) || b === 0x7f;

/**
 * The second smuggling defence, after LineEndingGuard (so lines end in CRLF): in `normalize` mode NUL bytes are
 * removed and control characters in front of a line's first dot are dropped, so the line starts with the dot and
 * is dot-stuffed on the way out like any other; in `reject` mode either fails the message. Other bytes pass
 * unchanged; a chunk with neither (nearly all of them) is checked at memchr speed and passed as it is.
 */
export class ControlCharGuard extends Transform {
  private atLineStart = true;
  /** Controls at the start of the current line, held back until the next byte shows whether a dot follows. */
  private run: number[] = [];

  constructor(private readonly mode: 'normalize' | 'reject') {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (chunk.length === 0) return done();
    if (this.run.length === 0 && this.clean(chunk)) {
      this.atLineStart = chunk[chunk.length - 1] === 0x0a;
      return done(null, chunk);
    }
    const out: number[] = [];
    for (const b of chunk) {
      if (this.atLineStart && droppable(b)) {
        this.run.push(b);
        continue;
      }
      if (this.atLineStart && this.run.length) {
        if (b === 0x2e) {
          if (this.mode === 'reject') return done(new ControlCharError('control characters before a dot at the start of a line'));
        } else if (!this.emitRun(out, done)) {
          return;
        }
        this.run = [];
      }
      this.atLineStart = b === 0x0a;
      if (b === 0) {
        if (this.mode === 'reject') return done(new ControlCharError('NUL in message data'));
        continue;
      }
      out.push(b);
    }
    done(null, Buffer.from(out));
  }

  override _flush(done: TransformCallback): void {
    const out: number[] = [];
    if (this.run.length && !this.emitRun(out, done)) return;
    done(null, out.length ? Buffer.from(out) : undefined);
  }

  /** No NUL and no line starting with a droppable control: nothing to do. */
  private clean(chunk: Buffer): boolean {
    if (chunk.indexOf(0) !== -1) return false;
    if (this.atLineStart && droppable(chunk[0]!)) return false;
    for (let i = chunk.indexOf(0x0a); i !== -1 && i < chunk.length - 1; i = chunk.indexOf(0x0a, i + 1)) {
      if (droppable(chunk[i + 1]!)) return false;
    }
    return true;
  }

  /** Held controls not followed by a dot are content: emitted, NUL removed (or the message refused). */
  private emitRun(out: number[], done: TransformCallback): boolean {
    for (const c of this.run) {
      if (c !== 0) out.push(c);
      else if (this.mode === 'reject') {
        done(new ControlCharError('NUL in message data'));
        return false;
      }
    }
    return true;
  }
}

/**
 * Reads what the agent needs from a message's header section as its data streams in: the number of Received:
 * fields, over the whole header section however long (a loop must not hide behind 300 KB of other headers), and
 * the Message-ID (for the "queued" log line). Holds no more than the first bytes of one line. Input lines end in
 * CRLF (after LineEndingGuard).
 */
export class HeaderScan {
  /** Received: header fields seen. */
  received = 0;
  /** The Message-ID field's value ("<id@host>"), at most MESSAGE_ID_MAX characters; "" when there is none. */
  messageId = '';
  private inHeader = true;
  private lineHead = '';
  private lineLength = 0;
  /** The last field was a Message-ID with its value still to come on a folded line. */
  private idFolded = false;

  push(chunk: Buffer): void {
    let pos = 0;
    while (this.inHeader && pos < chunk.length) {
      const lf = chunk.indexOf(0x0a, pos);
      const end = lf === -1 ? chunk.length : lf;
      if (this.lineHead.length < LINE_HEAD_MAX) this.lineHead += chunk.toString('latin1', pos, Math.min(end, pos + LINE_HEAD_MAX - this.lineHead.length));
      this.lineLength += end - pos;
      if (lf === -1) return;
      // The line without its CRLF is empty: the header section is over.
      if (this.lineLength <= 1) this.inHeader = false;
      else this.headerLine(this.lineHead.replace(/\r$/, ''));
      this.lineHead = '';
      this.lineLength = 0;
      pos = lf + 1;
    }
  }

  private headerLine(head: string): void {
    const lower = head.slice(0, MESSAGE_ID.length).toLowerCase();
    if (this.idFolded && /^[ \t]/.test(head)) {
      this.messageId = head.trim().slice(0, MESSAGE_ID_MAX);
      this.idFolded = false;
      return;
    }
    this.idFolded = false;
    if (lower.startsWith(RECEIVED)) this.received++;
    else if (lower === MESSAGE_ID && !this.messageId) {
      this.messageId = head.slice(MESSAGE_ID.length).trim().slice(0, MESSAGE_ID_MAX);
      this.idFolded = this.messageId === '';
    }
  }
}

const MESSAGE_ID = 'message-id:';
const MESSAGE_ID_MAX = 250;
/** Enough of a line for a field name and a Message-ID value. */
const LINE_HEAD_MAX = MESSAGE_ID.length + MESSAGE_ID_MAX + 2;
const RECEIVED = 'received:';
