// The controller's read-only HTTP API and the dashboard's login, against a real controller with real agents
// (gRPC sessions): who may read (viewer and admin tokens, Bearer or the login cookie), what each endpoint answers,
// and the Server-Sent Events stream. Also: the viewer token on the admin gRPC service reads but changes nothing.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { smtpClient, testMessage, waitFor } from '../helpers/agent.js';
import { ADMIN_TOKEN, AGENT_TOKEN, adminApi, isStatus, last } from '../helpers/controller.js';
import { fleet } from '../helpers/fleet.js';
import { NatsServer } from '../helpers/nats-server.js';
import { grpcTransport, natsTransport } from '../helpers/transport.js';
import { controllerConfigSchema, parseConfig } from '../../shared/config.js';

const VIEWER_TOKEN = 'viewer-token-0123456789';
const ENDPOINTS = ['status', 'routes', 'operations', 'history', 'agents/web-1/queue', 'events'];

function webFleet(t: import('node:test').TestContext) {
  return fleet(t, grpcTransport, {
    agents: ['web-1', 'web-2'],
    sinks: 1,
    // queued.test: a next hop that refuses connections, so mail stays queued (deferred) for the listing.
    routes: ([sink]) => ({ 'example.com': `smtp:[127.0.0.1]:${sink!.port}`, 'queued.test': 'smtp:[127.0.0.1]:9' }),
    controller: { http: { listen: '127.0.0.1:0' }, tokens: { agent: AGENT_TOKEN, admin: ADMIN_TOKEN, viewer: VIEWER_TOKEN } },
  });
}

function get(port: number, path: string, headers: Record<string, string> = {}) {
  return fetch(`http://127.0.0.1:${port}${path}`, { headers, redirect: 'manual' });
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** Reads Server-Sent Events from `res` until `done(events)` is true (or the time runs out). */
async function readEvents(res: Response, done: (events: { event: string; data: any }[]) => boolean, timeoutMs = 15_000) {
  const events: { event: string; data: any }[] = [];
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  const timer = setTimeout(() => void reader.cancel(), timeoutMs);
  try {
    while (!done(events)) {
      const { value, done: ended } = await reader.read();
      if (ended) break;
      buf += decoder.decode(value, { stream: true });
      let i: number;
      while ((i = buf.indexOf('\n\n')) !== -1) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (event && data) events.push({ event, data: JSON.parse(data) });
      }
    }
  } finally {
    clearTimeout(timer);
    await reader.cancel().catch(() => undefined);
  }
  return events;
}

test('no token, a wrong one or the agent token: 401 and no data from every endpoint; the page is the login form', async (t) => {
  const { ctl } = await webFleet(t);
  const port = ctl.controller.httpPort;
  const refused: Record<string, string>[] = [{}, bearer('not-a-token-at-all'), bearer(AGENT_TOKEN), { authorization: ADMIN_TOKEN }, { cookie: 'mxswitch_session=forged' }];
  for (const headers of refused) {
    for (const path of ENDPOINTS) {
      const res = await get(port, `/api/v1/${path}`, headers);
      const body = await res.text();
      assert.equal(res.status, 401, `${path} with ${JSON.stringify(headers)}`);
      assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="mxswitch"');
      assert.deepEqual(Object.keys(JSON.parse(body)), ['error', 'message']);
      assert.doesNotMatch(body, /web-1|web-2|queued\.test/, 'no data in a refusal');
    }
    for (const path of ['/', '/app.js', '/vendor/uPlot.js']) {
      const res = await get(port, path, headers);
      const body = await res.text();
      assert.equal(res.status, 401, path);
      assert.match(body, /<form method="post" action="\/login">/, `${path}: the login form`);
    }
  }
  // The login form's style is public (it has no data); /metrics and /healthz stay as they were.
  assert.equal((await get(port, '/style.css')).status, 200);
  assert.equal((await get(port, '/healthz')).status, 200);
});

test('the login form: a wrong token gets the form again (401); the viewer token an HttpOnly SameSite=Strict session cookie that reads the API; logout ends it', async (t) => {
  const { ctl } = await webFleet(t);
  const port = ctl.controller.httpPort;
  const login = (token: string) => fetch(`http://127.0.0.1:${port}/login`, { method: 'POST', body: new URLSearchParams({ token }), redirect: 'manual' });
  const wrong = await login(AGENT_TOKEN);
  assert.equal(wrong.status, 401);
  assert.equal(wrong.headers.get('set-cookie'), null);
  assert.match(await wrong.text(), /not the viewer or admin token/);

  const ok = await login(VIEWER_TOKEN);
  assert.equal(ok.status, 303);
  assert.equal(ok.headers.get('location'), '/');
  const setCookie = ok.headers.get('set-cookie') ?? '';
  assert.match(setCookie, /^mxswitch_session=[A-Za-z0-9_-]{43}; HttpOnly; SameSite=Strict; Path=\//);
  assert.doesNotMatch(setCookie, new RegExp(VIEWER_TOKEN), 'the cookie is a session id, not the token');
  const cookie = { cookie: setCookie.split(';')[0]! };
  const s = await get(port, '/api/v1/status', cookie);
  assert.equal(s.status, 200);
  assert.deepEqual(((await s.json()) as { agents: { id: string }[] }).agents.map((a) => a.id), ['web-1', 'web-2']);
  const page = await get(port, '/', cookie);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'self'/);
  assert.match(await page.text(), /<table id="fleet">/);

  const out = await fetch(`http://127.0.0.1:${port}/logout`, { method: 'POST', headers: cookie, redirect: 'manual' });
  assert.equal(out.status, 303);
  assert.match(out.headers.get('set-cookie') ?? '', /Max-Age=0/);
  assert.equal((await get(port, '/api/v1/status', cookie)).status, 401, 'the session is gone');
});

test('status, routes, operations and agents/ID/queue answer with the viewer and the admin token, as the CLI sees it', async (t) => {
  const { ctl, api, agents } = await webFleet(t);
  const port = ctl.controller.httpPort;
  const json = async (path: string, token = VIEWER_TOKEN) => {
    const res = await get(port, `/api/v1/${path}`, bearer(token));
    return { status: res.status, body: (await res.json()) as any };
  };
  const web1 = agents.find((a) => a.agent.agentId === 'web-1')!;
  await smtpClient(web1.port).sendMail({ envelope: { from: 'sender@sender.test', to: ['rcpt@queued.test'] }, raw: testMessage(1, 'rcpt@queued.test') });
  const held = last(await api.hold('example.com'));
  assert.equal(held.operation!.state, 'done');

  for (const token of [VIEWER_TOKEN, ADMIN_TOKEN]) {
    const s = await json('status', token);
    assert.equal(s.status, 200);
    const grpc = await api.status();
    assert.equal(s.body.version, grpc.version);
    assert.deepEqual(s.body.agents.map((a: { id: string; state: string }) => [a.id, a.state]), grpc.agents.map((a) => [a.id, a.state]));
    assert.equal(s.body.converged, true);
    assert.deepEqual(s.body.problems, []);
  }

  const routes = await json('routes');
  assert.equal(routes.body.version, ctl.controller.store.version);
  assert.deepEqual(
    routes.body.routes.map((r: { match: string; hold: boolean }) => [r.match, r.hold]),
    [['example.com', true], ['queued.test', false]],
  );

  const ops = await json('operations');
  const hold = ops.body.operations[0];
  assert.deepEqual([hold.kind, hold.match, hold.state, hold.steps], ['hold', 'example.com', 'done', ['hold']]);
  assert.deepEqual([...hold.progress.acked].sort(), ['web-1', 'web-2'], 'per-agent acks');

  await waitFor('the message queued on web-1', async () => (await json('agents/web-1/queue')).body.entries?.length === 1);
  const q = await json('agents/web-1/queue?match=queued.test&limit=10');
  assert.equal(q.status, 200);
  assert.equal(q.body.agent, 'web-1');
  assert.deepEqual(q.body.entries[0].recipients.map((r: { rcpt: string }) => r.rcpt), ['rcpt@queued.test']);
  assert.deepEqual((await json('agents/web-2/queue')).body.entries, []);
  assert.equal((await json('agents/nobody/queue')).status, 404);
  assert.equal((await json('agents/%E0%A4%A/queue')).status, 400, 'a broken URL escape');
  const bad = await json('agents/web-1/queue?state=lost');
  assert.deepEqual([bad.status, bad.body.error], [400, 'USAGE']);
  assert.match(bad.body.message, /state "lost": expected one of queued, deferred, inflight, held/);
  assert.equal((await json('nothing')).status, 404);
  assert.equal((await fetch(`http://127.0.0.1:${port}/api/v1/status`, { method: 'POST', headers: bearer(ADMIN_TOKEN) })).status, 405, 'read-only');
});

test('events: the current state first, then agent reports, the table change and the operation progress of a hold', async (t) => {
  const { ctl, api } = await webFleet(t);
  const res = await get(ctl.controller.httpPort, '/api/v1/events', bearer(VIEWER_TOKEN));
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'text/event-stream');
  const version = ctl.controller.store.version;
  const holding = api.hold('queued.test');
  const events = await readEvents(res, (es) => es.some((e) => e.event === 'progress' && e.data.operation.state === 'done'));
  await holding;
  assert.deepEqual(events[0], { event: 'routes', data: { version } }, 'the table version first');
  const agentIds = new Set(events.filter((e) => e.event === 'agent').map((e) => e.data.id));
  assert.deepEqual([...agentIds].sort(), ['web-1', 'web-2']);
  assert.ok(events.some((e) => e.event === 'routes' && e.data.version === version + 1), 'the hold\'s table change');
  assert.ok(events.some((e) => e.event === 'operation' && e.data.kind === 'hold' && e.data.match === 'queued.test'));
  const done = events.find((e) => e.event === 'progress' && e.data.operation.state === 'done')!;
  assert.deepEqual([...done.data.acked].sort(), ['web-1', 'web-2']);
});

test('the viewer token on the admin gRPC service: status, route ls, queue ls read; set, hold, flush and queue rm are refused and change nothing', async (t) => {
  const { ctl, api } = await webFleet(t);
  const viewer = adminApi(ctl.address, VIEWER_TOKEN);
  t.after(() => viewer.close());
  const version = ctl.controller.store.version;
  assert.equal((await viewer.status()).agents.length, 2);
  assert.equal((await viewer.listRoutes()).version, version);
  const list = await viewer.queueCommand({ agentId: 'web-1', kind: { $case: 'queueList', value: { match: '', state: '', limit: 10 } } });
  assert.deepEqual(list.results.map((r) => r.ok), [true]);
  const denied = isStatus(GrpcStatus.PERMISSION_DENIED, /viewer token is read-only/);
  await assert.rejects(viewer.setRoute('other.test', 'smtp:[127.0.0.1]:9'), denied);
  await assert.rejects(viewer.removeRoute('example.com'), denied);
  await assert.rejects(viewer.hold('example.com'), denied);
  await assert.rejects(viewer.flush(''), denied);
  await assert.rejects(viewer.removeAgent('web-1'), denied);
  await assert.rejects(viewer.queueCommand({ agentId: 'web-1', kind: { $case: 'queueRemove', value: { id: 'x' } } }), isStatus(GrpcStatus.PERMISSION_DENIED, /QueueCommand queueRemove needs the admin token/));
  await assert.rejects(viewer.queueCommand({ kind: { $case: 'flush', value: { match: '' } } }), denied);
  assert.equal(ctl.controller.store.version, version, 'no table change');
  assert.equal((await api.status()).agents.length, 2, 'no agent removed');
  assert.deepEqual(ctl.controller.orchestrator.list(), [], 'no operation started');
  // And the agent token is no operator token at all.
  const agentAsAdmin = adminApi(ctl.address, AGENT_TOKEN);
  t.after(() => agentAsAdmin.close());
  await assert.rejects(agentAsAdmin.status(), isStatus(GrpcStatus.UNAUTHENTICATED));
});

test('a dozen dashboards at once: every event stream gets the state, no listener-leak warning; closing them detaches', async (t) => {
  const { ctl } = await webFleet(t);
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
  process.on('warning', onWarning);
  t.after(() => void process.off('warning', onWarning));
  const before = ctl.controller.registry.listenerCount('agent');
  const streams = await Promise.all(Array.from({ length: 12 }, () => get(ctl.controller.httpPort, '/api/v1/events', bearer(VIEWER_TOKEN))));
  for (const res of streams) {
    const ids = (es: { event: string; data: { id: string } }[]) => [...new Set(es.filter((e) => e.event === 'agent').map((e) => e.data.id))].sort();
    assert.deepEqual(ids(await readEvents(res, (es) => ids(es).length >= 2)), ['web-1', 'web-2']);
  }
  // readEvents cancelled each stream: the controller lets go of their listeners.
  await waitFor('listeners detached', () => ctl.controller.registry.listenerCount('agent') === before);
  assert.deepEqual(warnings.filter((w) => /MaxListeners/.test(w)), []);
});

test('tokens.viewer must be a token of its own: equal to the admin, agent or a per-agent token is a config error naming the key', () => {
  const config = (tokens: Record<string, unknown>) => parseConfig(controllerConfigSchema, { dataDir: '/tmp/x', tokens: { agent: AGENT_TOKEN, admin: ADMIN_TOKEN, ...tokens } });
  for (const viewer of [ADMIN_TOKEN, AGENT_TOKEN, 'per-agent-token-1']) {
    assert.throws(() => config({ viewer, agents: { 'mx-1': 'per-agent-token-1' } }), /^ConfigError: tokens\.viewer: must differ from tokens\.admin, tokens\.agent and every tokens\.agents entry/);
  }
  assert.throws(() => config({ viewer: 'short' }), /tokens\.viewer/);
  assert.equal(config({ viewer: VIEWER_TOKEN }).tokens.viewer, VIEWER_TOKEN);
});

test('over NATS too: the API reads the same registry and the event stream carries the agents', async (t) => {
  const nats = await NatsServer.start();
  t.after(() => nats.stop());
  const { ctl } = await fleet(t, natsTransport(nats), {
    agents: ['nats-1'],
    routes: () => ({ 'example.com': 'smtp:[127.0.0.1]:9' }),
    controller: { http: { listen: '127.0.0.1:0' }, tokens: { admin: ADMIN_TOKEN, viewer: VIEWER_TOKEN } },
  });
  const s = (await (await get(ctl.controller.httpPort, '/api/v1/status', bearer(VIEWER_TOKEN))).json()) as { agents: { id: string; state: string }[]; converged: boolean };
  assert.deepEqual(s.agents.map((a) => [a.id, a.state]), [['nats-1', 'connected']]);
  assert.equal(s.converged, true);
  const events = await readEvents(await get(ctl.controller.httpPort, '/api/v1/events', bearer(VIEWER_TOKEN)), (es) => es.some((e) => e.event === 'agent'));
  assert.equal(events.find((e) => e.event === 'agent')?.data.id, 'nats-1');
});
