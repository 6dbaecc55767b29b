// What the Grafana dashboard and the alert rules in examples/ read: per-route queue gauges, the delivery latency
// histogram and disk free on the agent; per-agent connection, queue by route, oldest age, disk free and outcome
// counters on the controller (from health reports). Both pages pass `promtool check metrics` where it is installed.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { smtpClient, testMessage, waitFor } from '../helpers/agent.js';
import { adminApi, agentsAt, deferrer, startController, startFleetAgent } from '../helpers/controller.js';
import { Sink } from '../helpers/sink.js';

const PROMTOOL = spawnSync('promtool', ['--version']).status === 0;

async function scrape(port: number): Promise<string> {
  return (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
}

function sample(text: string, name: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

/** promtool's lint of an exposition: '' when clean (or promtool is absent: then the test says so). */
function promtoolProblems(text: string): string {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  return r.status === 0 ? '' : `${r.stdout}${r.stderr}`;
}

test('metrics for dashboards and alerts: route queues, delivery latency, disk free, per-agent state on the controller', async (t) => {
  const defer = deferrer(t);
  const sink = await new Sink().start();
  defer(() => sink.stop());
  const ctl = await startController({ http: { listen: '127.0.0.1:0' } });
  defer(() => ctl.cleanup());
  const api = adminApi(ctl.address);
  defer(() => api.close());
  await api.setRoute('example.com', sink.target);
  await api.setRoute('held.test', sink.target, { hold: true });
  const a = await startFleetAgent(ctl.address, 'm1', { http: { listen: '127.0.0.1:0' } });
  defer(() => a.cleanup());
  await waitFor('m1 on the table', () => agentsAt(api, 2, 1));
  const client = smtpClient(a.port);
  for (const [n, to] of [[1, 'a@example.com'], [2, 'b@example.com'], [3, 'kept@held.test']] as const) {
    await client.sendMail({ envelope: { from: 'sender@sender.test', to: [to] }, raw: testMessage(n, to) });
  }
  client.close();
  await waitFor('2 delivered', () => sink.messages.length === 2);

  let agentText = '';
  await waitFor('the agent metrics', async () => {
    agentText = await scrape(a.agent.httpPort);
    return sample(agentText, 'mxswitch_agent_delivery_latency_seconds_count') === 2 && sample(agentText, 'mxswitch_agent_route_queue_recipients{route="held.test",state="held"}') === 1;
  });
  assert.equal(sample(agentText, 'mxswitch_agent_delivery_latency_seconds_bucket{le="+Inf"}'), 2);
  const sum = sample(agentText, 'mxswitch_agent_delivery_latency_seconds_sum')!;
  assert.ok(sum > 0 && sum < 30, `latency sum ${sum}s`);
  assert.ok(sample(agentText, 'mxswitch_agent_disk_free_bytes')! > 0);

  let ctlText = '';
  await waitFor('the controller metrics', async () => {
    ctlText = await scrape(ctl.controller.httpPort);
    return sample(ctlText, 'mxswitch_controller_agent_delivered_total{agent="m1"}') === 2 && sample(ctlText, 'mxswitch_controller_agent_route_queue_recipients{agent="m1",route="held.test",state="held"}') === 1;
  });
  assert.equal(sample(ctlText, 'mxswitch_controller_agent_connected{agent="m1"}'), 1);
  assert.equal(sample(ctlText, 'mxswitch_controller_agent_deferred_total{agent="m1"}'), 0);
  assert.ok(sample(ctlText, 'mxswitch_controller_agent_disk_free_bytes{agent="m1"}')! > 0);
  assert.ok(sample(ctlText, 'mxswitch_controller_agent_queue_oldest_seconds{agent="m1"}')! > 0, 'the held message ages');

  if (PROMTOOL) {
    assert.equal(promtoolProblems(agentText), '', 'agent /metrics');
    assert.equal(promtoolProblems(ctlText), '', 'controller /metrics');
  } else {
    t.diagnostic('promtool not installed (Debian package prometheus): metrics lint skipped');
  }

  await a.cleanup();
  await waitFor('m1 disconnected', async () => sample(await scrape(ctl.controller.httpPort), 'mxswitch_controller_agent_connected{agent="m1"}') === 0);
});
