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

/** Number of Received: header fields in the header section of `message` (for loop detection). */
export function countReceivedHeaders(message: Buffer): number {
  let end = message.indexOf('\r\n\r\n');
  if (end === -1) end = message.length;
  const header = message.subarray(0, end).toString('latin1');
  return (header.match(/(?:^|\r\n)received:/gi) ?? []).length;
}
