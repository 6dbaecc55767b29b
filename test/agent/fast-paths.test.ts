import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import fc from 'fast-check';
import DataStream from 'nodemailer/lib/smtp-connection/data-stream.js';
import { applyVendorPatches, needsNoStuffing } from '../../shared/vendor-patches.js';
import { LineEndingGuard } from '../../agent/message-data.js';

// The performance fast paths must not change a single byte: both are checked against a byte-by-byte reference.
applyVendorPatches();

const pieces = fc.array(fc.array(fc.constantFrom('\r', '\n', '.', 'a', '\r\n', '\r\n.', 'xy'), { minLength: 1, maxLength: 8 }).map((a) => Buffer.from(a.join(''), 'latin1')), {
  minLength: 1,
  maxLength: 5,
});

/** nodemailer's rule, one byte at a time: would DataStream insert anything into `chunk` after `prev`? */
function referenceNeedsNothing(chunk: Buffer, prev: number | false): boolean {
  for (let i = 0; i < chunk.length; i++) {
    const byte = chunk[i];
    const p = i ? chunk[i - 1] : prev;
    if ((p === 0x0d && byte !== 0x0a) || (byte === 0x0a && p !== 0x0d) || (byte === 0x2e && (p === 0x0a || p === false))) return false;
  }
  return true;
}

test('delivery: the indexOf check agrees with nodemailer\'s per-byte dot-stuffing rule', () => {
  fc.assert(
    fc.property(pieces, fc.constantFrom<number | false>(false, 0x0d, 0x0a, 0x2e, 0x61), (chunks, prev) => {
      for (const c of chunks) assert.equal(needsNoStuffing(c, prev), referenceNeedsNothing(c, prev), JSON.stringify([c.toString('latin1'), prev]));
    }),
    { numRuns: 2000 },
  );
});

test('delivery: DataStream output with the fast path is what nodemailer would send', async () => {
  const encode = async (chunks: Buffer[]) => {
    const out: Buffer[] = [];
    const ds = new (DataStream as unknown as new () => NodeJS.ReadWriteStream)();
    ds.on('data', (d: Buffer) => out.push(d));
    await new Promise((resolve) => {
      ds.on('end', resolve);
      Readable.from(chunks).pipe(ds);
    });
    return Buffer.concat(out).toString('latin1');
  };
  assert.equal(await encode([Buffer.from('a\r\n.b\r\n')]), 'a\r\n..b\r\n.\r\n');
  assert.equal(await encode([Buffer.from('a\r'), Buffer.from('\n.')]), 'a\r\n..\r\n.\r\n');
  assert.equal(await encode([Buffer.from('line\r\n'), Buffer.from('line\r\n')]), 'line\r\nline\r\n.\r\n');
  assert.equal(await encode([Buffer.from('bare\nlf')]), 'bare\r\nlf\r\n.\r\n');
});

/** The guard's rule, one byte at a time (normalize mode): bare CR or LF becomes CRLF. */
function referenceNormalize(data: Buffer): string {
  let out = '';
  const s = data.toString('latin1');
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '\r') out += s[i + 1] === '\n' ? '\r\n' : '\r\n';
    else if (s[i] === '\n') out += s[i - 1] === '\r' ? '' : '\r\n';
    else out += s[i];
    if (s[i] === '\r' && s[i + 1] === '\n') i++;
  }
  return out;
}

async function guard(mode: 'normalize' | 'reject', chunks: Buffer[]): Promise<string> {
  const g = new LineEndingGuard(mode);
  const out: Buffer[] = [];
  g.on('data', (c: Buffer) => out.push(c));
  return new Promise((resolve) => {
    g.on('error', () => resolve('ERROR'));
    g.on('finish', () => setImmediate(() => resolve(Buffer.concat(out).toString('latin1'))));
    for (const c of chunks) g.write(c);
    g.end();
  });
}

test('ingress: LineEndingGuard normalises or refuses exactly the bare CRs and LFs, across chunk borders', async () => {
  await fc.assert(
    fc.asyncProperty(pieces, async (chunks) => {
      const whole = Buffer.concat(chunks);
      const expected = referenceNormalize(whole);
      assert.equal(await guard('normalize', chunks), expected);
      const clean = expected === whole.toString('latin1');
      assert.equal(await guard('reject', chunks), clean ? expected : 'ERROR');
    }),
    { numRuns: 1000 },
  );
});
