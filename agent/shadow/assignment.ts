import { MxError } from '../../shared/errors.js';
import type { ShadowAssignment } from '../../proto/gen/mxswitch/v1/shadow.js';

/** The controller's pairing as one agent applies it (the wire's ShadowAssignment, decoded). */
export interface Pairing {
  version: number;
  /** Whom this agent copies its mail to; undefined when it has no peer. */
  peer: PeerRef | undefined;
  /** The agents that copy their mail to this one, with the credential each presents. */
  clients: PeerRef[];
  takeovers: Takeover[];
}

export interface PeerRef {
  agentId: string;
  address: string;
  credential: string;
}

export interface Takeover {
  agentId: string;
  byAgentId: string;
  version: number;
  atMs: number;
}

export function pairingFromWire(a: ShadowAssignment): Pairing {
  return {
    version: a.version,
    peer: a.peer && a.peer.agentId ? { ...a.peer } : undefined,
    clients: a.clients.map((c) => ({ ...c })),
    takeovers: a.takeovers.map((t) => ({ ...t })),
  };
}

/** The peer did not confirm a copy: unreachable, refused it, or slower than shadow.timeout. */
export class ShadowPeerError extends MxError {
  constructor(
    readonly reason: 'none' | 'down' | 'timeout' | 'refused',
    message: string,
  ) {
    super('UNAVAILABLE', message);
    this.name = 'ShadowPeerError';
  }
}

/** What the 250 waits for: copied, accepted with one copy (onPeerDown: accept), or refused (onPeerDown: tempfail). */
export type CopyVerdict = 'copied' | 'unshadowed' | 'refuse';
