// The library patches in shared/vendor-patches.ts, pinned to the versions they were written for and checked on
// bare library objects (not through the agent), so an upgrade shows which patch to look at again.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { test } from 'node:test';
import { SMTPServer } from 'smtp-server';
import { applyVendorPatches, installedVersion, PATCHED_VERSIONS } from '../shared/vendor-patches.js';

applyVendorPatches();

test('vendor patches: installed smtp-server and nodemailer are the versions the patches were written for', () => {
  for (const name of Object.keys(PATCHED_VERSIONS) as (keyof typeof PATCHED_VERSIONS)[]) {
    assert.equal(installedVersion(name), PATCHED_VERSIONS[name], `${name} changed: re-check its patch in shared/vendor-patches.ts, then update PATCHED_VERSIONS`);
  }
});

/** Runs a bare smtp-server with `options`, writes `input` at connect, resolves with what it answered before close. */
async function converse(options: Record<string, unknown>, input: string): Promise<string> {
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    logger: false,
    disableReverseLookup: true,
    // Synchronous hooks are what the pipelining bug needs.
    onMailFrom: (_a, _s, cb) => cb(),
    onRcptTo: (address, _s, cb) => cb(address.address.startsWith('deny') ? Object.assign(new Error('5.7.1 denied here'), { responseCode: 550 }) : undefined),
    onData: (stream, _s, cb) => {
      stream.resume();
      stream.on('end', () => setTimeout(() => cb(null, 'queued'), 5));
    },
    ...options,
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.server.address() as { port: number }).port;
  try {
    return await new Promise<string>((resolve) => {
      const s = connect(port, '127.0.0.1');
      let out = '';
      const timer = setTimeout(() => s.destroy(), 10_000);
      s.on('connect', () => s.write(input));
      s.on('data', (d: Buffer) => (out += d.toString('latin1')));
      s.on('close', () => {
        clearTimeout(timer);
        resolve(out);
      });
      s.on('error', () => undefined);
    });
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

const codes = (text: string) => text.split('\r\n').filter((l) => /^\d{3} /.test(l)).map((l) => l.slice(0, 3));

test('smtp-server patch: two pipelined transactions then NOOP and QUIT are all answered (continue() no longer clears the next continuation)', async () => {
  const tx = (n: number) => `MAIL FROM:<s@x.test>\r\nRCPT TO:<u@y.test>\r\nDATA\r\nSubject: ${n}\r\n\r\nbody\r\n.\r\n`;
  const out = await converse({ greetPause: 0 }, `EHLO me\r\n${tx(1)}${tx(2)}NOOP\r\nQUIT\r\n`);
  assert.deepEqual(codes(out), ['220', '250', '250', '250', '354', '250', '250', '250', '354', '250', '250', '221']);
});

test('smtp-server patch: greetPause 0 greets at once; without the option the library keeps its early-talker pause', async () => {
  assert.deepEqual(codes(await converse({ greetPause: 0 }, 'EHLO me\r\nQUIT\r\n')), ['220', '250', '221']);
  assert.match(await converse({}, 'EHLO me\r\nQUIT\r\n'), /^421 .*talk too soon/);
});

test('smtp-server patch: a reply text that starts with an enhanced status code is sent as it is', async () => {
  const out = await converse({ greetPause: 0 }, 'EHLO me\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<deny@y.test>\r\nQUIT\r\n');
  assert.match(out, /\r\n550 5\.7\.1 denied here\r\n/);
});
