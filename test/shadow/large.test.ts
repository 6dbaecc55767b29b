import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { credentials, Metadata } from '@grpc/grpc-js';
import { ShadowServiceClient, type ReplicateRequest, type ReplicateResponse, type ShadowPart } from '../../proto/gen/mxswitch/v1/shadow.js';
import { smtpClient, testMessage, waitFor, within } from '../helpers/agent.js';
import { freePort } from '../helpers/process.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { send, shadowFleet, shadowOf, type FleetAgent } from './helpers.js';

const MB = 1024 * 1024;

/** About `bytes` of distinct lines (no line starts with a dot), so a part out of place would show. */
function bigText(bytes: number): string {
  const lines: string[] = [];
  for (let i = 0, n = 0; n < bytes; i++) {
    const line = `line ${i} ${createHash('sha1').update(String(i)).digest('hex')}\r\n`;
    lines.push(line);
    n += line.length;
  }
  return lines.join('');
}

/** Staged parts kept in an agent's queue file for `origin` (read-only look), per message with their bytes. */
function stagedParts(a: FleetAgent, origin: string, withBytes = false): { id: string; parts: number; bytes?: number }[] {
  const db = new Database(join(a.config.dataDir, 'queue.db'), { readonly: true, fileMustExist: true });
  try {
    const rows = db.prepare('SELECT id, COUNT(*) AS parts, SUM(length(data)) AS bytes FROM shadow_parts WHERE origin = ? GROUP BY id ORDER BY id').all(origin) as { id: string; parts: number; bytes: number }[];
    return rows.map(({ bytes, ...r }) => (withBytes ? { ...r, bytes } : r));
  } finally {
    db.close();
  }
}

/** Sends `raw` to `port` from s@sender.test to u@example.com. */
async function sendRaw(port: number, raw: Buffer): Promise<void> {
  const client = smtpClient(port);
  try {
    await within('the large message', client.sendMail({ envelope: { from: 's@sender.test', to: ['u@example.com'] }, raw }), 60_000);
  } finally {
    client.close();
  }
}

test('shadow: a 5 MB message goes to the peer in parts and arrives byte for byte; taken over, the peer delivers exactly those bytes', async (t) => {
  // A 5 MB copy on a loaded machine: the limit is for the peer's confirmation, not what this test is about.
  const { sink, api, agents } = await shadowFleet(t, { ids: ['lg-a', 'lg-b'], shadowExtra: () => ({ timeout: '60s' }) });
  const [a, b] = agents as [FleetAgent, FleetAgent];
  await sendRaw(a.port, testMessage(1, 'u@example.com', bigText(5 * MB)));
  const [queued] = a.agent.queue.allRecipients();
  assert.ok(queued);
  const original = a.agent.queue.body(queued.msgId)!;
  assert.ok(original.length > 5 * MB);

  // The 250 came after the peer's commit: the copy is there, whole, its body in parts.
  assert.equal(a.agent.health().shadow!.unshadowed, 0);
  const listed = b.agent.queue.shadowViews.list(10);
  assert.deepEqual(listed.map((c) => [c.origin, c.id, c.size]), [['lg-a', queued.msgId, original.length]]);
  const [staged] = stagedParts(b, 'lg-a');
  assert.ok(staged && staged.parts >= 5, `in parts at the peer: ${JSON.stringify(staged)}`);

  // Taken over (the copies join b's queue), then delivered by b (a is stopped first: only b's copy arrives).
  await a.cleanup();
  assert.deepEqual(await b.agent.queue.shadowAdopt('lg-a'), { messages: 1, recipients: 1 });
  assert.equal(b.agent.queue.body(queued.msgId)!.equals(original), true, 'the adopted message, byte for byte');
  await api.setRoute('example.com', sink.target);
  await waitFor('the message delivered by the peer', () => sink.messages.length === 1, 60_000);
  const arrived = sink.messages[0]!.data;
  assert.equal(arrived.length, original.length);
  assert.equal(arrived.equals(original), true, 'the bytes at the destination are those the origin accepted');
});

test('shadow: parts of a copy whose stream broke, that do not add up to the copy, or of a transfer started again, are never kept as a copy', async (t) => {
  const { ctl, agents } = await shadowFleet(t, { ids: ['lh-a', 'lh-b'] });
  const b = agents[1]!;
  // lh-a's side of the pair, as a raw stream: what its link would send, cut where the test says.
  const md = new Metadata();
  md.set('authorization', `Bearer ${ctl.controller.shadow!.assignmentFor('lh-a')!.peer!.credential}`);
  md.set('x-mxswitch-agent', 'lh-a');
  const client = new ShadowServiceClient(b.agent.shadowAddress, credentials.createInsecure());
  t.after(() => client.close());
  const stream = () => {
    const call = client.replicate(md);
    const answers = new Map<number, (error: string) => void>();
    call.on('data', (r: ReplicateResponse) => answers.get(r.batchId)?.(r.error));
    call.on('error', () => undefined);
    const send = (req: Partial<ReplicateRequest> & { batchId: number }) =>
      new Promise<string>((resolve) => {
        answers.set(req.batchId, resolve);
        call.write({ copies: [], discards: [], holds: [], parts: [], ...req });
      });
    return { call, send };
  };
  const part = (id: string, transfer: number, seq: number): ShadowPart => ({ transfer, id, seq, data: Buffer.alloc(MB, 0x61 + seq) });
  const closing = (id: string, transfer: number, parts: number) => ({ id, sender: 's@sender.test', recipients: ['u@example.com'], body: Buffer.alloc(0), arrivedAtMs: Date.now(), dsn: false, holds: [], transfer, parts, size: parts * MB });

  // Two of three parts staged, then the stream breaks before the copy.
  const first = stream();
  assert.equal(await first.send({ batchId: 1, parts: [part('HALF1', 1, 0)] }), '');
  assert.equal(await first.send({ batchId: 2, parts: [part('HALF1', 1, 1)] }), '');
  assert.deepEqual(stagedParts(b, 'lh-a'), [{ id: 'HALF1', parts: 2 }]);
  first.call.cancel();
  await waitFor('the staged parts of the broken transfer dropped', () => stagedParts(b, 'lh-a').length === 0);

  // On a new stream: the copy naming the old stream's transfer, and a copy with a part short, are refused.
  const second = stream();
  t.after(() => second.call.cancel());
  assert.match(await second.send({ batchId: 1, copies: [closing('HALF1', 1, 3)] }), /parts missing for HALF1/);
  assert.equal(await second.send({ batchId: 2, parts: [part('HALF2', 7, 0), part('HALF2', 7, 1)] }), '');
  assert.match(await second.send({ batchId: 3, copies: [closing('HALF2', 7, 3)] }), /parts missing for HALF2/);
  assert.match(await second.send({ batchId: 4, parts: [part('HALF3', 8, 1)] }), /does not follow/, 'a part without the one before it');
  assert.equal(b.agent.queue.shadowViews.copyCount(), 0);
  assert.deepEqual(stagedParts(b, 'lh-a'), [], 'parts of a refused copy are not left behind');

  // A takeover finds nothing to adopt; the whole transfer on the same stream is kept.
  assert.deepEqual(await b.agent.queue.shadowAdopt('lh-a'), { messages: 0, recipients: 0 });
  assert.equal(await second.send({ batchId: 5, parts: [part('WHOLE', 9, 0), part('WHOLE', 9, 1)] }), '');
  assert.equal(await second.send({ batchId: 6, copies: [closing('WHOLE', 9, 2)] }), '');
  assert.deepEqual(await b.agent.queue.shadowAdopt('lh-a'), { messages: 1, recipients: 1 });
  assert.equal(b.agent.queue.body('WHOLE')!.equals(Buffer.concat([Buffer.alloc(MB, 0x61), Buffer.alloc(MB, 0x62)])), true);

  // The message started again on the same stream (a re-shadow after a copy given up): the older transfer's parts go.
  assert.equal(await second.send({ batchId: 7, parts: [part('AGAIN', 10, 0), part('AGAIN', 10, 1)] }), '');
  assert.equal(await second.send({ batchId: 8, parts: [part('AGAIN', 11, 0)] }), '');
  assert.deepEqual(stagedParts(b, 'lh-a'), [{ id: 'AGAIN', parts: 1 }]);
});

test('shadow: a large message accepted while the peer was cut off is re-shadowed in parts once it is back, byte for byte, no parts left but the copy\'s', async (t) => {
  const port = await freePort();
  const proxy = await new TcpProxy(port).start();
  t.after(() => proxy.stop());
  // lr-b is reached only through the proxy; 3 s for a copy, then 250 with one copy (onPeerDown accept).
  const { agents } = await shadowFleet(t, { ids: ['lr-a', 'lr-b'], listenPort: (id) => (id === 'lr-b' ? port : 0), advertise: (id) => (id === 'lr-b' ? proxy.address : undefined), shadowExtra: () => ({ timeout: '3s' }) });
  const [a, b] = agents as [FleetAgent, FleetAgent];
  // A small message first opens the stream: the large one's first parts then wait in it during the partition.
  assert.equal(await send(a.port, 1), 250);
  proxy.partition();
  await sendRaw(a.port, testMessage(2, 'u@example.com', bigText(3 * MB)));
  assert.equal(shadowOf(a).unshadowed, 1, 'accepted with one copy');
  const queued = a.agent.queue.allRecipients().find((r) => (a.agent.queue.message(r.msgId)?.size ?? 0) > MB);
  const original = a.agent.queue.body(queued!.msgId)!;

  proxy.heal();
  await waitFor('re-shadowed', () => shadowOf(a).unshadowed === 0, 60_000);
  assert.deepEqual(b.agent.queue.shadowViews.list(10).find((c) => c.id === queued!.msgId)?.size, original.length);
  // Only the parts of the copy kept (none of a transfer given up during the partition).
  await waitFor('no parts but the copy\'s', () => stagedParts(b, 'lr-a', true)[0]?.bytes === original.length);
  assert.deepEqual(await b.agent.queue.shadowAdopt('lr-a'), { messages: 2, recipients: 2 });
  assert.equal(b.agent.queue.body(queued!.msgId)!.equals(original), true, 'the re-shadowed copy, byte for byte');
});
