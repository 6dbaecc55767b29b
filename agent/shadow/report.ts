import type { ShadowReport } from '../../proto/gen/mxswitch/v1/shadow.js';
import type { ShadowStatus } from './shadowing.js';

/** The agent's shadow status as the controller hears it (gRPC message; the same fields as JSON over NATS). */
export function shadowReportToWire(s: ShadowStatus): ShadowReport {
  return { appliedVersion: s.appliedVersion, unreachableClients: s.unreachableClients, unshadowed: s.unshadowed, shadowCopies: s.shadowCopies, peer: s.peer };
}
