import type { AgentDrainInfo, OperationRecord, Progress } from '../core/model.js';

/** The per-agent lists a progress report carries; each defaults to empty. */
export interface ProgressLists {
  failed?: string[];
  waitingVersion?: number;
  acked?: string[];
  pending?: string[];
  drain?: AgentDrainInfo[];
}

export function progressOf(op: OperationRecord, message: string, l: ProgressLists = {}): Progress {
  return {
    operation: { ...op, excluded: [...op.excluded] },
    message,
    waitingVersion: l.waitingVersion ?? 0,
    acked: l.acked ?? [],
    pending: l.pending ?? [],
    failed: l.failed ?? [],
    drain: l.drain ?? [],
  };
}
