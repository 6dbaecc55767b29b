import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import nodemailer from 'nodemailer';
import { startAgent, tempDir, testMessage, waitFor } from '../helpers/agent.js';
import { makePki, type TestPki } from '../helpers/certs.js';
import { RawSmtp } from '../helpers/raw-smtp.js';
import { Sink } from '../helpers/sink.js';

describe('TLS: inbound STARTTLS, outbound opportunistic and required', () => {
  let pki: TestPki;
  let plainSink: Sink;
  let tlsSink: Sink;
  before(async () => {
    pki = makePki(tempDir('mxs-pki-'));
    plainSink = await new Sink().start();
    tlsSink = await new Sink({ key: readFileSync(pki.serverKey), cert: readFileSync(pki.serverCert) }).start();
  });
  after(async () => {
    await plainSink.stop();
    await tlsSink.stop();
    rmSync(pki.dir, { recursive: true, force: true });
  });

  test('inbound STARTTLS is advertised and works; mail relayed over TLS when the next hop offers it', async () => {
    const a = await startAgent({ smtp: { tls: { cert: pki.serverCert, key: pki.serverKey } }, routes: [{ match: 'example.com', target: tlsSink.target }] });
    try {
      const c = await RawSmtp.open(a.port);
      assert.match(await c.command('EHLO client.test'), /^250[- ]STARTTLS$/m);
      c.close();
      const client = nodemailer.createTransport({ host: '127.0.0.1', port: a.port, secure: false, requireTLS: true, tls: { ca: readFileSync(pki.ca), servername: 'localhost' } });
      const info = await client.sendMail({ envelope: { from: 's@sender.test', to: ['u@example.com'] }, raw: testMessage(1) });
      assert.match(info.response, /^250 /);
      await waitFor('delivered over TLS', () => tlsSink.messages.length === 1);
      assert.equal(tlsSink.messages[0]!.tls, true, 'outbound STARTTLS was not used');
      assert.match(tlsSink.messages[0]!.data.toString(), /with ESMTPS id /, 'Received header should record ESMTPS');
    } finally {
      await a.cleanup();
    }
  });

  test('plaintext commands pipelined behind STARTTLS are discarded (CVE-2011-0411 class)', async () => {
    const a = await startAgent({ smtp: { tls: { cert: pki.serverCert, key: pki.serverKey } }, routes: [{ match: 'example.com', target: plainSink.target }] });
    try {
      const c = await RawSmtp.open(a.port);
      await c.command('EHLO client.test');
      // The injected MAIL FROM must not survive the TLS upgrade.
      c.write('STARTTLS\r\nMAIL FROM:<injected@attacker.test>\r\n');
      assert.match(await c.reply(), /^220 /);
      const { say, close } = await c.upgrade(readFileSync(pki.ca));
      assert.match(await say('EHLO client.test'), /^250/m);
      const rcpt = await say('RCPT TO:<u@example.com>');
      assert.match(rcpt, /^503 /m, `injected MAIL FROM survived STARTTLS: ${rcpt}`);
      close();
    } finally {
      await a.cleanup();
    }
  });

  test('a route with tls: required defers rather than sending in plaintext', async () => {
    const a = await startAgent({ routes: [{ match: 'example.com', target: plainSink.target, tls: 'required' }, { match: 'secure.test', target: tlsSink.target, tls: 'required' }] });
    try {
      const client = nodemailer.createTransport({ host: '127.0.0.1', port: a.port, secure: false, ignoreTLS: true });
      await client.sendMail({ envelope: { from: 's@sender.test', to: ['u@example.com'] }, raw: testMessage(2) });
      await client.sendMail({ envelope: { from: 's@sender.test', to: ['u@secure.test'] }, raw: testMessage(3) });
      await waitFor('deferred for missing TLS', () => a.agent.queue.stats().byState.deferred === 1);
      await waitFor('TLS hop delivered', () => tlsSink.messages.some((m) => m.to[0] === 'u@secure.test'));
      assert.equal(plainSink.messages.filter((m) => m.to[0] === 'u@example.com').length, 0, 'sent in plaintext despite tls: required');
      assert.match(a.agent.queue.allRecipients()[0]!.lastReply ?? '', /STARTTLS|TLS/i);
    } finally {
      await a.cleanup();
    }
  });
});

describe('relay control after STARTTLS', () => {
  test('relay tricks are refused the same way inside TLS', async () => {
    const pki = makePki(tempDir('mxs-pki-'));
    const a = await startAgent({ smtp: { tls: { cert: pki.serverCert, key: pki.serverKey } }, routes: [{ match: 'example.com', target: 'smtp:[127.0.0.1]:9', hold: true }] });
    try {
      const c = await RawSmtp.open(a.port);
      await c.command('EHLO client.test');
      assert.match(await c.command('STARTTLS'), /^220 /);
      const { say, close } = await c.upgrade(readFileSync(pki.ca));
      await say('EHLO client.test');
      assert.match(await say('MAIL FROM:<s@sender.test>'), /^250/m);
      for (const rcpt of ['victim@elsewhere.test', 'victim%elsewhere.test@example.com', '@example.com:victim@elsewhere.test', 'elsewhere.test!victim@example.com', 'victim@[127.0.0.1]', 'victim@example.com.']) {
        assert.match(await say(`RCPT TO:<${rcpt}>`), /^5\d\d 5\.\d\.\d/m, rcpt);
      }
      assert.match(await say('RCPT TO:<user@example.com>'), /^250/m);
      close();
    } finally {
      await a.cleanup();
      rmSync(pki.dir, { recursive: true, force: true });
    }
  });
});
