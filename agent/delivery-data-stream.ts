import DataStream from 'nodemailer/lib/smtp-connection/data-stream.js';

/**
 * Part of delivery (the only user of nodemailer). nodemailer dot-stuffs outgoing DATA in a JavaScript loop
 * over every byte, which the CPU profile showed at about a fifth of the agent's time with 100 KB messages.
 * What we send was normalised at ingress (CRLF line ends only), so nearly every chunk needs no insert at
 * all: that is checked here at memchr speed with indexOf, and the chunk passes through unchanged. A chunk
 * that does need one (a dot at the start of a line, a bare CR or LF) takes nodemailer's own code, so the
 * bytes on the wire are exactly what they were.
 */
type Transform = (this: State, chunk: unknown, encoding: BufferEncoding, done: (err?: Error | null) => void) => void;
interface State {
  lastByte: number | false;
  inByteCount: number;
  outByteCount: number;
  push(chunk: Buffer): boolean;
}

const proto = DataStream.prototype as unknown as { _transform: Transform; __mxFast?: boolean };

/** True when nodemailer's DataStream would insert nothing into `chunk`, given the byte before it. */
export function needsNoStuffing(chunk: Buffer, prev: number | false): boolean {
  const n = chunk.length;
  const first = chunk[0];
  if (prev === 0x0d && first !== 0x0a) return false; // bare CR at the end of the last chunk
  if (first === 0x0a && prev !== 0x0d) return false; // bare LF
  if (first === 0x2e && (prev === 0x0a || prev === false)) return false; // dot at the start of a line
  for (let i = chunk.indexOf(0x0d); i !== -1 && i < n - 1; i = chunk.indexOf(0x0d, i + 1)) {
    if (chunk[i + 1] !== 0x0a) return false;
  }
  for (let i = chunk.indexOf(0x0a); i !== -1; i = chunk.indexOf(0x0a, i + 1)) {
    if (i > 0 && chunk[i - 1] !== 0x0d) return false; // bare LF (at 0: checked against prev above)
    if (chunk[i + 1] === 0x2e) return false; // dot at the start of a line
  }
  return true;
}

if (!proto.__mxFast) {
  const original = proto._transform;
  proto._transform = function (chunk, encoding, done) {
    if (Buffer.isBuffer(chunk) && chunk.length > 0 && needsNoStuffing(chunk, this.lastByte)) {
      this.inByteCount += chunk.length;
      this.outByteCount += chunk.length;
      this.lastByte = chunk[chunk.length - 1]!;
      this.push(chunk);
      return done();
    }
    original.call(this, chunk, encoding, done);
  };
  proto.__mxFast = true;
}
