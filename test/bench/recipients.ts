import { AdminConnection } from '../../control/cli/admin-client.js';
import { waitFor } from '../helpers/agent.js';
import { ADMIN_TOKEN, adminApi } from '../helpers/controller.js';
import { NatsServer } from '../helpers/nats-server.js';
import { grpcTransport, natsTransport } from '../helpers/transport.js';

export interface RecipientsResult {
  scenario: 'recipients';
  /** gRPC: deltas on each agent's session (SQLite controller); nats: the sharded JetStream KV bucket. */
  transport: 'grpc' | 'nats';
  addresses: number;
  agents: number;
  /** `recipients import` through the CLI's client until the controller stored the version. */
  importMs: number;
  /** From then until every agent acked it. */
  appliedMs: number;
  /** One `recipients add` afterwards, until every agent acked it (a delta, not the list). */
  editMs: number;
}

/** A recipient list of `addresses` imported and pushed to `agents` real agents in this process. */
export async function recipientLists(addresses: number, agents: number, mode: RecipientsResult['transport']): Promise<RecipientsResult> {
  const nats = mode === 'nats' ? await NatsServer.start() : undefined;
  const transport = nats ? natsTransport(nats) : grpcTransport;
  const ctl = await transport.startController();
  const api = adminApi(ctl.address);
  const admin = new AdminConnection({ controller: ctl.address }, { token: ADMIN_TOKEN, deadlineMs: 120_000 });
  const fleet = [];
  try {
    for (let i = 0; i < agents; i++) fleet.push(await transport.startAgent(ctl, `lists-${i}`));
    const at = (version: number) => async () => (await api.status()).agents.filter((a) => a.recipientsVersion === version).length === agents;
    const list = Array.from({ length: addresses }, (_, i) => `user.${i}@example.com`);
    const t0 = performance.now();
    const imported = await admin.importRecipients('example.com', list, false, 'bench');
    const t1 = performance.now();
    await waitFor('every agent on the list', at(imported.change!.version), 120_000);
    const t2 = performance.now();
    const edited = await admin.editRecipients({ add: ['late.joiner@example.com'], actor: 'bench' });
    await waitFor('every agent on the edit', at(edited.change!.version), 60_000);
    const t3 = performance.now();
    return { scenario: 'recipients', transport: mode, addresses, agents, importMs: t1 - t0, appliedMs: t2 - t1, editMs: t3 - t2 };
  } finally {
    admin.close();
    api.close();
    await Promise.all(fleet.map((a) => a.cleanup()));
    await ctl.cleanup();
    await nats?.stop();
  }
}
