import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { test } from 'node:test';
import { messageIds, smtpClient, tempDir, testMessage, waitFor } from '../helpers/agent.js';
import { CliProcess, freePort, writeYaml } from '../helpers/process.js';
import { Sink } from '../helpers/sink.js';

test('kill -9 during ingest and delivery: every message that got a 250 reaches the sink', async () => {
  const sink = await new Sink().start();
  const dir = tempDir();
  const port = await freePort();
  const config = writeYaml(dir, 'agent.yaml', {
    id: 'crash-agent',
    dataDir: `${dir}/data`,
    smtp: { listen: `127.0.0.1:${port}`, hostname: 'mx.test' },
    routes: [{ match: 'example.com', target: sink.target }],
    retry: { intervals: ['200ms'], jitter: 0 },
    delivery: { pollInterval: '50ms' },
    log: { level: 'warn' },
  });
  const acked = new Set<string>();
  let seq = 0;
  try {
    for (let cycle = 0; cycle < 3; cycle++) {
      const agent = await new CliProcess(['agent', '--config', config], port).start();
      let stop = false;
      const senders = Array.from({ length: 10 }, async () => {
        const client = smtpClient(port);
        while (!stop) {
          const n = seq++;
          try {
            await client.sendMail({ envelope: { from: 's@sender.test', to: ['user@example.com'] }, raw: testMessage(n) });
            acked.add(`msg-${n}@sender.test`);
          } catch {
            // refused or cut off by the crash: not acknowledged, so not owed
          }
        }
        client.close();
      });
      await new Promise((r) => setTimeout(r, 700 + Math.random() * 500));
      await agent.kill('SIGKILL');
      stop = true;
      await Promise.all(senders);
    }
    assert.ok(acked.size > 50, `too little traffic to mean anything (${acked.size})`);
    // Restart once more and let the queue drain.
    const agent = await new CliProcess(['agent', '--config', config], port).start();
    try {
      const arrived = () => new Set(messageIds(sink.messages.map((m) => m.data)));
      await waitFor('every acknowledged message at the sink', () => [...acked].every((id) => arrived().has(id)), 30_000);
      const ids = messageIds(sink.messages.map((m) => m.data));
      const lost = [...acked].filter((id) => !ids.includes(id));
      const duplicates = ids.length - new Set(ids).size;
      console.log(`# crash: acknowledged=${acked.size} delivered=${new Set(ids).size} lost=${lost.length} duplicates=${duplicates}`);
      assert.equal(lost.length, 0);
    } finally {
      await agent.kill('SIGTERM');
    }
  } finally {
    await sink.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
