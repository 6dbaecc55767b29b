import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { test } from 'node:test';
import { Spool } from '../../agent/spool/spool.js';
import { smtpClient, tempDir, testMessage, waitFor } from '../helpers/agent.js';
import { AGENT_TOKEN, startFleetAgent } from '../helpers/controller.js';
import { CliProcess, freePort, writeYaml } from '../helpers/process.js';
import { heldController } from './helpers.js';

const ROUNDS = 5;
const SENDERS = 4;

// The peer is a real process, SIGKILLed at a random moment while four sessions send to its client (onPeerDown
// tempfail): after each kill, every message that got a 250 must be in the dead peer's file. A peer that answered
// before its commit was durable would leave a 250 without a copy.
test('kill -9 of the peer mid-commit (crash loop): no 250 precedes the peer\'s durable commit', async (t) => {
  const { defer, ctl } = await heldController(t);
  const dir = tempDir('mxs-shadow-crash-');
  defer(() => rmSync(dir, { recursive: true, force: true }));
  const a = await startFleetAgent(ctl.address, 'cr-a', { region: 'r1', shadow: { listen: '127.0.0.1:0', onPeerDown: 'tempfail', timeout: '2s' } });
  defer(() => a.cleanup());
  const smtpPort = await freePort();
  const peerConfig = writeYaml(dir, 'cr-c.yaml', {
    id: 'cr-c',
    region: 'r2',
    dataDir: `${dir}/cr-c`,
    smtp: { listen: `127.0.0.1:${smtpPort}` },
    controller: { grpc: { address: ctl.address, token: AGENT_TOKEN }, healthInterval: '300ms' },
    shadow: { listen: `127.0.0.1:${await freePort()}` },
    log: { level: 'warn' },
  });
  let peer: CliProcess | undefined;
  defer(() => peer?.kill());

  const acked = new Set<string>();
  let refused = 0;
  let n = 0;
  for (let round = 0; round < ROUNDS; round++) {
    peer = await new CliProcess(['agent', '--config', peerConfig], smtpPort).start();
    await waitFor('cr-a paired with cr-c', () => a.agent.health().shadow!.peer === 'cr-c', 15_000);
    let stop = false;
    const sender = async () => {
      while (!stop) {
        const client = smtpClient(a.port);
        try {
          const info = await client.sendMail({ envelope: { from: 's@sender.test', to: ['u@example.com'] }, raw: testMessage(n++) });
          const id = /queued as (\w+)/.exec(info.response)?.[1];
          assert.ok(id, info.response);
          acked.add(id);
        } catch (err) {
          assert.equal((err as { responseCode?: number }).responseCode, 451, String(err));
          refused++;
          // The peer is down: wait for the next round.
          if (stop) break;
          await new Promise((r) => setTimeout(r, 50));
        } finally {
          client.close();
        }
      }
    };
    const running = Array.from({ length: SENDERS }, () => sender());
    // Let the first copies through, then kill it at a random moment of the traffic.
    await waitFor('traffic under way', () => acked.size > round * 5 + 3, 15_000);
    await new Promise((r) => setTimeout(r, 100 + Math.random() * 400));
    await peer.kill('SIGKILL');
    stop = true;
    await Promise.all(running);
    const copies = Spool.readFile(`${dir}/cr-c`, ({ shadow }) => new Set(shadow.list(1_000_000).filter((c) => c.origin === 'cr-a').map((c) => c.id)));
    const missing = [...acked].filter((id) => !copies.has(id));
    assert.deepEqual(missing, [], `round ${round}: a 250 without the peer's copy`);
  }
  t.diagnostic(`${ROUNDS} kills, ${acked.size} messages acknowledged (each found in the killed peer's file), ${refused} refused with 451 while it was down`);
  assert.equal(a.agent.health().total, acked.size, 'a refused message is not queued either');
});
