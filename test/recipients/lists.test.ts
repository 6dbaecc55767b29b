// Recipient lists end to end: the real CLI against a real controller (SQLite, gRPC) with real agents and sinks.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startAgent, tempDir, waitFor } from '../helpers/agent.js';
import { ADMIN_TOKEN } from '../helpers/controller.js';
import { fleet } from '../helpers/fleet.js';
import { RawSmtp } from '../helpers/raw-smtp.js';
import { NatsServer } from '../helpers/nats-server.js';
import { grpcTransport, natsTransport, type Transport } from '../helpers/transport.js';
import { runCli } from '../cli/run-cli.js';

/** RCPT replies for `rcpts` in one transaction (RSET after), and the 250 count of a DATA when any was accepted. */
async function rcptReplies(port: number, rcpts: readonly string[]): Promise<string[]> {
  const c = await RawSmtp.open(port);
  try {
    await c.command('EHLO sender.test');
    await c.command('MAIL FROM:<someone@sender.test>');
    const replies: string[] = [];
    for (const r of rcpts) replies.push(await c.command(`RCPT TO:<${r}>`));
    await c.command('RSET');
    return replies;
  } finally {
    c.close();
  }
}

let nats: NatsServer;
before(async () => {
  nats = await NatsServer.start();
});
after(() => nats.stop());
const transports = (): Transport[] => [grpcTransport, natsTransport(nats)];

const queued = (a: { agent: { queue: { inspect: { counts(): { recipients: number } } } } }) => a.agent.queue.inspect.counts().recipients;

for (const mode of ['grpc', 'nats'] as const) {
  test(`${mode}: recipient lists: import through the CLI reaches every agent (acked version); unknown users get 550 5.1.1 at RCPT, nothing queued, no DSN; edits travel as deltas; the list survives a restart without the controller`, { timeout: 120_000 }, async (t) => {
    const { ctl, api, agents, sinks } = await fleet(t, transports().find((x) => x.name === mode)!, { agents: ['r1', 'r2'], sinks: 1, routes: ([s]) => ({ 'example.com': s!.target, 'open.test': s!.target }) });
    const cli = (...args: string[]) => runCli(args, { MXSWITCH_CONTROLLER: ctl.address, MXSWITCH_TOKEN: ADMIN_TOKEN });
    const dir = tempDir('mxs-lists-');
    t.after(() => rmSync(dir, { recursive: true, force: true }));

    // Bad files change nothing: one line naming the line, exit 2.
    const bad = join(dir, 'bad.txt');
    writeFileSync(bad, '# staff\nalice@example.com\nbob@example.org\n');
    const refusedOther = await cli('recipients', 'import', 'example.com', bad);
    assert.equal(refusedOther.code, 2);
    assert.equal(refusedOther.stderr.trim(), `mxswitch: ${bad}: line 3: "bob@example.org" is not in example.com; nothing was imported`);
    writeFileSync(bad, Buffer.concat([Buffer.from('alice@example.com\n'), randomBytes(64), Buffer.from([0])]));
    assert.match((await cli('recipients', 'import', 'example.com', bad)).stderr, /line \d+: not a text file \(NUL byte\); nothing was imported/);
    writeFileSync(bad, `alice@example.com\n${'x'.repeat(300)}@example.com\n`);
    assert.match((await cli('recipients', 'import', 'example.com', bad)).stderr, /line 2: longer than 254 characters/);
    assert.equal(ctl.controller.recipients!.version, 0, 'nothing was stored');

    // A list of 5,000 plus the two real users.
    const file = join(dir, 'example.com.txt');
    const users = Array.from({ length: 5000 }, (_, i) => `user${i}@example.com`);
    writeFileSync(file, `# imported from the old server\nAlice@Example.com\n\nbob@example.com   # sales\n${users.join('\n')}\n`);
    const imported = await cli('recipients', 'import', 'example.com', file, '--json');
    assert.equal(imported.code, 0, imported.stderr);
    assert.deepEqual(JSON.parse(imported.stdout), { domain: 'example.com', addresses: 5002, replace: false, version: 1, added: 5002, removed: 0 });
    await waitFor('both agents at list version 1', async () => (await api.status()).agents.every((a) => a.recipientsVersion === 1));

    for (const a of agents) {
      const replies = await rcptReplies(a.port, ['alice@example.com', 'BOB@example.com', 'user4999@example.com', 'mallory@example.com', 'anyone@open.test']);
      assert.match(replies[0]!, /^250 /);
      assert.match(replies[1]!, /^250 /, 'lookups ignore case, as Postfix maps do');
      assert.match(replies[2]!, /^250 /);
      assert.equal(replies[3], '550 5.1.1 <mallory@example.com>: Recipient address rejected: User unknown');
      assert.match(replies[4]!, /^250 /, 'a domain without a list accepts any local part');
    }

    // A dictionary attack: 1,000 random local parts. Every one refused at RCPT; nothing queued, so no bounce ever.
    const guesses = Array.from({ length: 1000 }, () => `${randomBytes(6).toString('hex')}@example.com`);
    const replies = await rcptReplies(agents[0]!.port, guesses);
    assert.equal(replies.filter((r) => r.startsWith('550 5.1.1 ')).length, 1000);
    assert.equal(queued(agents[0]!), 0);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(sinks[0]!.messages.length, 0, 'no message (and no DSN) left the agent');

    // Small edits travel as deltas: the agents' journals grow by a line, no snapshot is rewritten.
    const journal = (i: number) => readFileSync(join(agents[i]!.config.dataDir, 'recipients.journal'), 'utf8');
    const before = journal(0).length;
    assert.equal((await cli('recipients', 'rm', 'bob@example.com')).code, 0);
    const added = await cli('recipients', 'add', 'carol@example.com', 'dave@example.com');
    assert.equal(added.code, 0, added.stderr);
    assert.equal(added.stdout.trim(), '2 added, 0 removed: list version 3');
    await waitFor('both agents at list version 3', async () => (await api.status()).agents.every((a) => a.recipientsVersion === 3));
    const grown = journal(0).slice(before);
    assert.equal(grown.trim().split('\n').length, 2, 'two deltas appended');
    assert.ok(grown.length < 400, `the deltas are small (${grown.length} bytes)`);
    assert.deepEqual(JSON.parse(grown.trim().split('\n')[1]!), { version: 3, baseVersion: 2, snapshot: false, changes: [{ domain: 'example.com', address: 'carol@example.com', present: true }, { domain: 'example.com', address: 'dave@example.com', present: true }] });
    const after = await rcptReplies(agents[1]!.port, ['bob@example.com', 'carol@example.com']);
    assert.match(after[0]!, /^550 5\.1\.1 /);
    assert.match(after[1]!, /^250 /);

    const counted = await cli('recipients', 'count', '--json');
    assert.deepEqual(JSON.parse(counted.stdout), { version: 3, domains: [{ domain: 'example.com', count: 5003 }] });
    const listed = await cli('recipients', 'ls', 'example.com', '--limit', '2');
    assert.equal(listed.stdout, 'alice@example.com\ncarol@example.com\n5003 addresses in example.com (list version 3); 5001 more not shown (--limit)\n');

    // --replace: the list becomes exactly the file.
    writeFileSync(file, 'alice@example.com\n');
    const replaced = await cli('recipients', 'import', 'example.com', file, '--replace');
    assert.equal(replaced.stdout.trim(), 'example.com: 1 addresses read, 0 added, 5002 removed: list version 4');
    await waitFor('both agents at list version 4', async () => (await api.status()).agents.every((a) => a.recipientsVersion === 4));
    assert.match((await rcptReplies(agents[0]!.port, ['carol@example.com']))[0]!, /^550 5\.1\.1 /);

    // The controller goes away; an agent restarts on its data dir: it keeps its list (static stability).
    const dataDir = agents[1]!.config.dataDir;
    await agents[1]!.cleanup(true);
    await ctl.cleanup();
    const alone = await startAgent({ id: 'r2', dataDir, routes: [{ match: 'example.com', target: sinks[0]!.target }] });
    t.after(() => alone.cleanup());
    assert.equal(alone.agent.recipients.version, 4);
    const kept = await rcptReplies(alone.port, ['alice@example.com', 'carol@example.com']);
    assert.match(kept[0]!, /^250 /);
    assert.match(kept[1]!, /^550 5\.1\.1 /);
  });
}

test('recipient lists: an agent that was away gets what it missed as one delta; a fresh one gets a snapshot; drop accepts any local part again', { timeout: 120_000 }, async (t) => {
  const { ctl, api, agents } = await fleet(t, grpcTransport, { agents: ['w1'], sinks: 1, routes: ([s]) => ({ 'example.com': s!.target }) });
  const dataDir = agents[0]!.config.dataDir;
  ctl.controller.recipients!.import('example.com', ['a@example.com', 'b@example.com'], { replace: false, actor: 'test' });
  await waitFor('w1 at list version 1', async () => (await api.status()).agents[0]?.recipientsVersion === 1);
  await agents[0]!.cleanup(true);
  ctl.controller.recipients!.edit({ add: ['c@example.com'], remove: ['a@example.com'], dropDomains: [], actor: 'test' });
  ctl.controller.recipients!.edit({ add: ['d@example.com'], remove: [], dropDomains: [], actor: 'test' });
  const back = await grpcTransport.startAgent(ctl, 'w1', { dataDir });
  t.after(() => back.cleanup());
  await waitFor('w1 back at list version 3', async () => (await api.status()).agents.find((a) => a.id === 'w1')?.recipientsVersion === 3);
  const lines = readFileSync(join(dataDir, 'recipients.journal'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { baseVersion: number; snapshot: boolean; changes: unknown[] });
  assert.deepEqual(lines.map((l) => [l.baseVersion, l.snapshot, l.changes.length]), [[1, false, 3]], 'one delta 1 -> 3: a gone, c and d added (the first list came as a snapshot file)');
  const replies = await rcptReplies(back.port, ['a@example.com', 'b@example.com', 'c@example.com', 'd@example.com']);
  assert.deepEqual(replies.map((r) => r.slice(0, 3)), ['550', '250', '250', '250']);

  const fresh = await grpcTransport.startAgent(ctl, 'w2');
  t.after(() => fresh.cleanup());
  await waitFor('w2 at list version 3', async () => (await api.status()).agents.find((a) => a.id === 'w2')?.recipientsVersion === 3);
  assert.deepEqual(fresh.agent.recipients.counts(), [{ domain: 'example.com', count: 3 }]);

  ctl.controller.recipients!.edit({ add: [], remove: [], dropDomains: ['example.com'], actor: 'test' });
  await waitFor('both at list version 4', async () => (await api.status()).agents.every((a) => a.recipientsVersion === 4));
  assert.match((await rcptReplies(fresh.port, ['zed@example.com']))[0]!, /^250 /);
  // Both agents have every removal: the controller may forget them (a, then b c d and the list itself).
  assert.equal(ctl.controller.sessions!.collectTombstones(), 5);
});
