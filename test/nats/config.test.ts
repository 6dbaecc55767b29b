import assert from 'node:assert/strict';
import { test } from 'node:test';
import { agentConfigSchema, controllerConfigSchema, parseConfig } from '../../shared/config.js';

const agent = (nats: Record<string, unknown>) => ({ id: 'a1', dataDir: '/tmp/x', controller: { nats: { servers: ['nats://127.0.0.1:4222'], ...nats } } });
const controller = (extra: Record<string, unknown>) => ({ tokens: { admin: 'admin-token-123' }, ...extra });

test('NATS config: one way to authenticate, password needs user, cert needs key, fleet is one subject token', () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ token: 'abc', user: 'u', password: 'p' }, /controller\.nats\.token: choose one of token, user\/password or credentials/],
    [{ password: 'p' }, /controller\.nats\.user: password needs user/],
    [{ tls: { cert: '/etc/hostname' } }, /controller\.nats\.tls\.key: cert and key go together/],
    [{ fleet: 'eu.prod' }, /controller\.nats\.fleet: letters, digits, _ and -/],
    [{ servers: [] }, /controller\.nats\.servers/],
    [{ credentials: '/nonexistent.creds' }, /controller\.nats\.credentials: file cannot be read/],
  ];
  for (const [nats, expected] of cases) assert.throws(() => parseConfig(agentConfigSchema, agent(nats)), expected);
  const ok = parseConfig(agentConfigSchema, agent({ user: 'mx-eu-1', password: 'secret' }));
  assert.deepEqual(ok.controller?.nats, { servers: ['nats://127.0.0.1:4222'], user: 'mx-eu-1', password: 'secret', fleet: 'mxswitch' });
  assert.throws(() => parseConfig(agentConfigSchema, { id: 'a1', dataDir: '/tmp/x', controller: { nats: { servers: ['nats://x'] }, grpc: { address: 'h:1', token: 't' } } }), /choose one of grpc or nats/);
});

test('NATS controller config: no dataDir or agent token needed; defaults; every key from the environment', () => {
  assert.throws(() => parseConfig(controllerConfigSchema, controller({})), /dataDir: required key is missing/);
  assert.throws(() => parseConfig(controllerConfigSchema, controller({ dataDir: '/tmp/c' })), /tokens\.agent: required key is missing/);
  const c = parseConfig(controllerConfigSchema, controller({ nats: { servers: ['nats://127.0.0.1:4222'] } }));
  assert.equal(c.dataDir, undefined);
  assert.deepEqual(c.nats, { servers: ['nats://127.0.0.1:4222'], fleet: 'mxswitch', replicas: 1, operationLease: 15_000 });
  assert.throws(() => parseConfig(controllerConfigSchema, controller({ nats: { servers: ['nats://x'], replicas: 2 } })), /nats\.replicas/);
  const env = parseConfig(controllerConfigSchema, controller({}), {
    MXSWITCH_NATS_SERVERS: '[nats://n1:4222, nats://n2:4222]',
    MXSWITCH_NATS_USER: 'mxswitch-controller',
    MXSWITCH_NATS_PASSWORD: 'pw',
    MXSWITCH_NATS_FLEET: 'prod',
    MXSWITCH_NATS_OPERATION_LEASE: '30s',
  });
  assert.deepEqual(env.nats, { servers: ['nats://n1:4222', 'nats://n2:4222'], user: 'mxswitch-controller', password: 'pw', fleet: 'prod', replicas: 1, operationLease: 30_000 });
});
