// The controller's gRPC surface against callers without the right token, with oversized input, and agents that
// claim another agent's id with a per-agent token.
import assert from 'node:assert/strict';
import { credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { test } from 'node:test';
import { AgentServiceClient, SessionRequest } from '../../proto/gen/mxswitch/v1/agent.js';
import { waitFor, within } from '../helpers/agent.js';
import { ADMIN_TOKEN, adminApi, adminClient, auth, deferrer, startController, startFleetAgent } from '../helpers/controller.js';

// A deadline on every call: a controller that stalls a caller (as it did copying a huge input into the error text)
// fails the test with DEADLINE_EXCEEDED instead of hanging it.
const setRoute = (address: string, match: string, md: Metadata) =>
  new Promise<ServiceError | null>((resolve) =>
    adminClient(address).setRoute({ match, target: 'smtp:[127.0.0.1]:25', hold: false, expectedVersion: 0, actor: 'test', tls: '', verify: '' }, md, { deadline: Date.now() + 60_000 }, (err) => resolve(err)),
  );

test('controller: a call without a valid token is refused before its message is read; oversized input is capped; errors echo at most ~100 characters', async (t) => {
  const defer = deferrer(t);
  const c = await startController();
  defer(() => c.cleanup());
  const huge = 'x'.repeat(15 * 1024 * 1024);
  // Ten 15 MB calls without a token, at once: all UNAUTHENTICATED (not RESOURCE_EXHAUSTED: the size was never looked at).
  const refused = await Promise.all(Array.from({ length: 10 }, () => setRoute(c.address, huge, new Metadata())));
  for (const err of refused) assert.equal(err?.code, status.UNAUTHENTICATED, err?.details);
  assert.equal((await setRoute(c.address, 'example.com', auth('wrong-token-0123456789')))?.code, status.UNAUTHENTICATED);
  // With the admin token: over the 4 MB cap -> RESOURCE_EXHAUSTED; a 3 MB invalid match -> a short INVALID_ARGUMENT.
  assert.equal((await setRoute(c.address, huge, auth(ADMIN_TOKEN)))?.code, status.RESOURCE_EXHAUSTED);
  const invalid = await setRoute(c.address, `${'y'.repeat(3 * 1024 * 1024)}!`, auth(ADMIN_TOKEN));
  assert.equal(invalid?.code, status.INVALID_ARGUMENT);
  assert.ok(invalid.details.length < 300, `error text of ${invalid.details.length} characters`);
  assert.match(invalid.details, /^match "y{100}\.\.\." \(3145729 characters\) is not an address, a domain or \.parent-domain$/);
  // The controller still works.
  const api = adminApi(c.address);
  defer(() => api.close());
  assert.equal((await api.setRoute('example.com', 'smtp:[127.0.0.1]:25')).version, 1);
});

test('controller: tokens.agents binds a token to one agent id; the shared token is optional then', async (t) => {
  const defer = deferrer(t);
  const tokens = { admin: ADMIN_TOKEN, agents: { 'mx-1': 'token-of-mx-1-0123', 'mx-2': 'token-of-mx-2-0123' } };
  const c = await startController({ tokens });
  defer(() => c.cleanup());
  const api = adminApi(c.address);
  defer(() => api.close());
  const a1 = await startFleetAgent(c.address, 'mx-1', {}, 'token-of-mx-1-0123');
  defer(() => a1.cleanup());
  await waitFor('mx-1 connected with its own token', async () => (await api.status()).agents.some((a) => a.id === 'mx-1' && a.state === 'connected'), 15_000);

  // mx-1's token claiming to be mx-2: PERMISSION_DENIED at Hello, and mx-2 never appears.
  const client = new AgentServiceClient(c.address, credentials.createInsecure());
  defer(() => client.close());
  const md = new Metadata();
  md.set('authorization', 'Bearer token-of-mx-1-0123');
  const call = client.session(md);
  const ended = within('the impostor session refused', new Promise<ServiceError>((resolve) => call.on('error', resolve)));
  call.on('data', () => undefined);
  call.write(SessionRequest.fromPartial({ body: { $case: 'hello', value: { agentId: 'mx-2', region: 'x', bootId: 'b', appliedVersion: 0, hostname: 'h' } } }));
  const err = await ended;
  assert.equal(err.code, status.PERMISSION_DENIED);
  assert.match(err.details, /agent id "mx-2" does not match its token/);
  assert.deepEqual((await api.status()).agents.map((a) => a.id), ['mx-1']);

  // No shared token configured: an unknown token is refused.
  const stranger = client.session(auth('not-a-token-0123456'));
  const refused = await within('the unknown token refused', new Promise<ServiceError>((resolve) => stranger.on('error', resolve)));
  assert.equal(refused.code, status.UNAUTHENTICATED);
});
