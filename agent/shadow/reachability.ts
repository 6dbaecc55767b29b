import { Metadata } from '@grpc/grpc-js';
import { ShadowServiceClient, type ReplicateResponse } from '../../proto/gen/mxswitch/v1/shadow.js';
import type { PeerRef } from './assignment.js';
import type { ShadowTransport } from './tls.js';

/**
 * Whether a client answers on its shadow address: an empty batch on a Replicate stream, authenticated with the
 * pair's credential (the client's service accepts that from its own peer, for this probe only), answered within
 * `timeoutMs`. What a peer tells the controller before a takeover: "I cannot reach it either". A TCP connect
 * alone would say yes through a network that swallows everything after the handshake.
 */
export function reachable(client: PeerRef, selfId: string, transport: ShadowTransport, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = new ShadowServiceClient(client.address, transport.client(client.agentId));
    const md = new Metadata();
    md.set('authorization', `Bearer ${client.credential}`);
    md.set('x-mxswitch-agent', selfId);
    let settled = false;
    const call = c.replicate(md, { deadline: Date.now() + timeoutMs });
    const done = (ok: boolean) => {
      if (settled) return;
      settled = true;
      call.cancel();
      c.close();
      resolve(ok);
    };
    call.on('data', (r: ReplicateResponse) => done(!r.error));
    call.on('error', () => done(false));
    call.on('end', () => done(false));
    call.write({ batchId: 1, copies: [], discards: [], holds: [], parts: [] });
  });
}
